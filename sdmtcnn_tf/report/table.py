"""The report's table: columns, rows of mean ± sample std over seeds, the paper's numbers, Δm.

Columns are the paper's metrics of each task the runs have (`PAPER_METRICS`; a task the paper
does not have gets its headline metric), under one of two definitions:
- `paper` (default): the MTAN-2019 legacy variant (`<metric>_legacy`, per batch of
  --legacy_batch_size) wherever the task has one, as the paper's numbers were computed;
  normals cos, keypoints and edges have no legacy variant and use the primary one.
- `primary`: our batch-size independent definitions (global confusion matrix, all valid pixels).
One row per group (a config's seeds) and role, in the paper's order; each cell the mean ± sample
std (ddof 1) of the runs' results/metrics.json values, with n where a value is missing in some
runs. Δm (report/gain.py) of each run against the mean of its Baseline-1 group's teacher, over
the columns, then mean ± std over the row's runs (Δm is affine in the values, so the mean of
the runs' Δm is the Δm of the row's means).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math

import numpy as np

from sdmtcnn_tf import tasks as tasks_lib
from sdmtcnn_tf.data import taskonomy_units
from sdmtcnn_tf.report import gain, paper_tables
from sdmtcnn_tf.report import runs as runs_lib

DEFINITIONS = ("paper", "primary")
# task -> ((column title, primary metric, the paper's CSV column or ""), ...): tables 1 and 2's
# metrics, and the normals' angle errors (fig. 1 plots the median).
PAPER_METRICS = {
    "semseg": (("pixacc", "pixacc", "seg_pixacc"), ("mIoU", "miou", "seg_miou")),
    "depth": (("depth abs", "abs", "depth_abs"), ("depth rel", "rel", "depth_rel")),
    "normals": (("normals cos", "cos", "normal_cs"), ("normals mean°", "mean_deg", ""),
                ("normals median°", "median_deg", "")),
    "keypoints": (("keypoints abs", "abs", "keypoint_abs"),),
    "edges": (("edges abs", "abs", "edge_abs"),),
}


@dataclasses.dataclass(frozen=True)
class Column:
  """One metric column. `key` is the metrics.json key without the role prefix (e.g.
  `semseg_miou_legacy`); `higher` its direction (from the task); `paper` the paper CSV's
  column or ""."""

  title: str
  task: str
  metric: str
  key: str
  higher: bool
  paper: str = ""

  @property
  def legacy(self) -> bool:
    return self.key.endswith("_legacy")


def metric_key(task, metric: str, definitions: str = "paper") -> str:
  """The metrics.json key (without the role) of a task's primary `metric` under `definitions`:
  `<task>_<metric>_legacy` for the paper's where the task has that legacy metric."""
  if definitions not in DEFINITIONS:
    raise ValueError(f"--definitions={definitions}: expected one of {', '.join(DEFINITIONS)}")
  legacy = f"{metric}_legacy"
  use_legacy = definitions == "paper" and legacy in task.legacy_metrics
  return f"{task.name}_{legacy if use_legacy else metric}"


def task_columns(task, definitions: str = "paper", unit: str = "") -> list:
  """The columns of one Task object; `unit` (e.g. "m"), where given, ends each title."""
  spec = PAPER_METRICS.get(task.name, ((f"{task.name} {task.headline}", task.headline, ""),))
  suffix = f" ({unit})" if unit else ""
  return [Column(title + suffix, task.name, metric, metric_key(task, metric, definitions),
                 task.primary_metrics[metric], paper)
          for title, metric, paper in spec if metric in task.primary_metrics]


def columns(groups, definitions: str = "paper") -> list:
  """The columns of every task of `groups` (their union, in the registry's task order), titled
  with the unit of the groups' labels where it is stated (data/taskonomy_units.py); ValueError
  when groups hold one task's labels in different units."""
  tasks, units = {}, {}
  for g in groups:
    for task in g.cfg.task_specs:
      tasks.setdefault(task.name, task)
      units.setdefault(task.name, {}).setdefault(taskonomy_units.unit(task.name, g.cfg.data),
                                                 g.name)
  mixed = {name: found for name, found in units.items() if len(found) > 1}
  if mixed:
    name, found = next(iter(mixed.items()))
    raise ValueError(f"the runs hold {name} labels in different units ("
                     + "; ".join(f"{u or 'unstated'} in {g}" for u, g in found.items())
                     + "): report them separately")
  return [c for name in tasks_lib.canonical(tasks)
          for c in task_columns(tasks[name], definitions, next(iter(units[name])))]


# ---- statistics ------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Stat:
  """mean and sample std (None when n < 2) of n finite values; n = 0: no value."""

  n: int
  mean: float | None = None
  std: float | None = None

  @classmethod
  def of(cls, values) -> "Stat":
    values = [float(v) for v in values if v is not None and math.isfinite(v)]
    if not values:
      return cls(0)
    return cls(len(values), float(np.mean(values)),
               float(np.std(values, ddof=1)) if len(values) > 1 else None)


def cell(values, of: int | None = None) -> str:
  """Markdown cell: `mean ± std` (4 and 2 significant digits), the mean alone for one value,
  "" for none; `(n=k)` when only k of `of` runs have a value."""
  stat = values if isinstance(values, Stat) else Stat.of(values)
  if stat.n == 0:
    return ""
  text = f"{stat.mean:.4g}" + (f" ± {stat.std:.2g}" if stat.std is not None else "")
  if of is not None and stat.n < of:
    text += f" (n={stat.n})"
  return text


# ---- rows ------------------------------------------------------------------------------------
@dataclasses.dataclass
class Row:
  """One (group, role) row. `values`: column key -> per-run values (None where missing);
  `paper`: column key -> the paper's number; `delta_m`: per-run Δm (NaN where not computable),
  `baseline`: the Baseline-1 group (None: no Δm); `paper_delta_m`: Δm of the paper's row
  against the paper's Baseline-1 over the same columns."""

  group: runs_lib.Group
  role: str
  values: dict
  paper: dict = dataclasses.field(default_factory=dict)
  delta_m: list = dataclasses.field(default_factory=list)
  baseline: runs_lib.Group | None = None
  paper_delta_m: float | None = None

  @property
  def role_letter(self) -> str:
    return runs_lib.ROLE_LETTER.get(self.role, self.role)

  def stat(self, key: str) -> Stat:
    return Stat.of(self.values.get(key, []))


def baseline_role(group) -> str:
  return "teacher" if "teacher" in group.roles else group.roles[0]


def _comparable(cfg) -> dict:
  """The flags a Baseline-1 must share with a row to be its baseline: data, schedule, and the
  network's backbone, decoder and width."""
  from sdmtcnn_tf import config as config_lib
  keep = {k for k, (grp, _) in config_lib.FLAG_FIELDS.items() if grp in ("data", "optim")}
  keep |= {"backbone", "decoder", "width_multiplier"}
  return {k: v for k, v in cfg.to_json().items() if k in keep and k not in runs_lib.RUN_FIELDS}


def choose_baseline(group, baselines):
  """The Baseline-1 group of `group`'s Δm among `baselines`: the only one, or the one of the
  same data, schedule and backbone; None when there is none; ValueError when several fit."""
  if len(baselines) <= 1:
    return baselines[0] if baselines else None
  fits = [b for b in baselines if _comparable(b.cfg) == _comparable(group.cfg)]
  if len(fits) == 1:
    return fits[0]
  raise ValueError(f"{len(fits) or len(baselines)} Baseline-1 (vanilla, --distill=none) groups "
                   f"could be the baseline of {group.name}: "
                   f"{', '.join(b.name for b in (fits or baselines))}; choose one with "
                   "--baseline=NAME")


def build_rows(groups, cols, baseline: str = "") -> list:
  """One Row per group and role, with paper numbers and Δm. `baseline`: the name of the group
  every row is compared with (default: `choose_baseline` among the Baseline-1 groups)."""
  dataset = groups[0].cfg.data.dataset if groups else ""
  rows = []
  for g in groups:
    for role in g.roles:
      values = {c.key: [r.metrics.get(f"{role}_{c.key}") for r in g.runs] for c in cols}
      row = Row(g, role, values)
      variant = runs_lib.paper_variant(g.cfg)
      found = None if variant is None else paper_tables.lookup(
          dataset, runs_lib.method_label(g.cfg), g.cfg.model.backbone, variant, row.role_letter)
      if found:
        row.paper = {c.key: found.get(c.paper) for c in cols
                     if c.paper and found.get(c.paper) is not None}
      rows.append(row)
  fixed = runs_lib.by_name(groups, baseline) if baseline else None
  candidates = [g for g in groups if runs_lib.is_baseline_1(g.cfg)]
  for row in rows:
    base = fixed or choose_baseline(row.group, candidates)
    if base is None:
      continue
    row.baseline = base
    base_row = next(r for r in rows if r.group is base and r.role == baseline_role(base))
    means = {c.key: base_row.stat(c.key).mean for c in cols}
    used = [c for c in cols if means[c.key] not in (None, 0.0)]
    row.delta_m = [gain.delta_m((c.task, row.values[c.key][i], means[c.key], c.higher)
                                for c in used) for i in range(len(row.group.runs))]
    paper_base = paper_tables.lookup(dataset, "vanilla", base.cfg.model.backbone, "", "T")
    if row.paper and paper_base:
      pairs = [(c.task, row.paper.get(c.key), paper_base.get(c.paper), c.higher)
               for c in used if c.paper and paper_base.get(c.paper) is not None]
      if pairs and all(v is not None for _, v, _, _ in pairs):
        row.paper_delta_m = gain.delta_m(pairs)
  return rows


# ---- output ----------------------------------------------------------------------------------
def _num(value) -> str:
  return "" if value is None else f"{value:.4g}"


def dm_cell(values, of: int | None = None) -> str:
  """Markdown cell of Δm values (percent): `+1.23 ± 0.45`, two decimals (a baseline's own
  row is +0.00, not round-off)."""
  stat = Stat.of(values)
  if stat.n == 0:
    return ""
  text = f"{round(stat.mean, 2) + 0.0:+.2f}" + (f" ± {stat.std:.2f}" if stat.std is not None
                                                else "")
  return text + (f" (n={stat.n})" if of is not None and stat.n < of else "")


def markdown(rows, cols, references=(), with_paper: bool = False) -> str:
  """The table in markdown. `references`: (label, role, {metrics.json key: value}) rows shown
  first, e.g. the constant predictor (role `constant`; no n, no Δm)."""
  show_dm = any(r.baseline is not None for r in rows)
  show_paper_dm = with_paper and any(r.paper_delta_m is not None for r in rows)
  head = ["run", "method", "eq.", "role", "n"]
  for c in cols:
    head.append(c.title)
    if with_paper and c.paper:
      head.append(f"{c.title} (paper)")
  if show_dm:
    head.append("Δm %")
  if show_paper_dm:
    head.append("Δm % (paper)")
  lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
  for label, role, values in references:
    cells = [label, "–", "–", "–", "–"]
    for c in cols:
      cells.append(_num(values.get(f"{role}_{c.key}")))
      if with_paper and c.paper:
        cells.append("")
    cells += [""] * (show_dm + show_paper_dm)
    lines.append("| " + " | ".join(cells) + " |")
  for row in rows:
    g = row.group
    n = len(g.runs)
    cells = [g.name, runs_lib.method_label(g.cfg) + ("" if g.cfg.model.backbone == "segnet"
                                                      else f" ({g.cfg.model.backbone})"),
             g.cfg.method.distill if g.cfg.method.distill != "none" else "–", row.role_letter,
             str(n)]
    for c in cols:
      cells.append(cell(row.stat(c.key), n))
      if with_paper and c.paper:
        cells.append(_num(row.paper.get(c.key)))
    if show_dm:
      cells.append(dm_cell(row.delta_m, n) if row.baseline is not None else "")
    if show_paper_dm:
      cells.append("" if row.paper_delta_m is None else f"{round(row.paper_delta_m, 2) + 0.0:+.2f}")
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines)


def csv_text(rows, cols, with_paper: bool = False) -> str:
  """report.csv: one line per row; per column `<key>_mean`, `_std` (empty for n < 2), `_n` and,
  with the paper, `<key>_paper`; then Δm's mean, std, n, its baseline group and the paper's Δm.
  Numbers at full precision."""
  head = ["run", "method", "backbone", "distill", "role", "n", "seeds", "run_dirs"]
  for c in cols:
    head += [f"{c.key}_mean", f"{c.key}_std", f"{c.key}_n"]
    if with_paper and c.paper:
      head.append(f"{c.key}_paper")
  head += ["delta_m_mean", "delta_m_std", "delta_m_n", "delta_m_baseline"]
  if with_paper:
    head.append("delta_m_paper")
  out = io.StringIO()
  writer = csv.writer(out, lineterminator="\n")
  writer.writerow(head)

  def num(v):
    return "" if v is None else repr(float(v))

  for row in rows:
    g = row.group
    line = [g.name, runs_lib.method_label(g.cfg), g.cfg.model.backbone, g.cfg.method.distill,
            row.role_letter, len(g.runs), " ".join(map(str, g.seeds)),
            " ".join(r.path for r in g.runs)]
    for c in cols:
      stat = row.stat(c.key)
      line += [num(stat.mean), num(stat.std), stat.n]
      if with_paper and c.paper:
        line.append(num(row.paper.get(c.key)))
    dm = Stat.of(row.delta_m)
    line += [num(dm.mean), num(dm.std), dm.n if row.baseline is not None else "",
             row.baseline.name if row.baseline is not None else ""]
    if with_paper:
      line.append(num(row.paper_delta_m))
    writer.writerow(line)
  return out.getvalue()
