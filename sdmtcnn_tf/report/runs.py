"""Finding, reading and grouping finished runs for a report.

A run directory is a folder with config.json (written by `train`); `--runs` names run
directories or folders holding them at any depth (e.g. a sweep's `<out_dir>/runs`). Runs whose
configs agree on every flag except `RUN_FIELDS` (the seed, and the flags that only locate a run
or set how it logs) are the seeds of one group: one row per role in the report.

Bad input stops with one line naming the path: a `--runs` entry that does not exist or holds no
run, an unreadable config.json or results/metrics.json, a run without results/metrics.json
(unless `skip_incomplete`: then a warning and the run is left out), runs of different datasets.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re

from sdmtcnn_tf import config as config_lib
from sdmtcnn_tf import methods
from sdmtcnn_tf.rundir import RunPaths

# Flags that differ between the seeds of one config without changing what is trained: where the
# run and its data live (a traditional-KD run of each seed has its own teacher run), the seed
# itself, and logging / validation frequency (the report reads the final evaluation).
RUN_FIELDS = frozenset({*config_lib.LOCATION_FIELDS, "seed", "verbose", "validation_freq",
                        "backup_every_steps", "image_summary_every"})
# Row order of the paper's tables (table 1 lists the U-Net rows after the SegNet ones).
METHOD_ORDER = ("vanilla", "sd_vanilla", "traditional_kd", "sd_mtcnn", "sd_mtcnn_full")
ROLE_LETTER = {"teacher": "T", "student": "S"}


@dataclasses.dataclass(frozen=True)
class Run:
  """One finished run: its directory, config and results/metrics.json ({key: float or None});
  `history` is the path of its results/history.csv, "" when it has none."""

  path: str
  cfg: config_lib.ExperimentConfig
  metrics: dict
  history: str = ""

  @property
  def seed(self) -> int:
    return self.cfg.run.seed


def method_label(cfg) -> str:
  """The paper's method name of a config: `sd_mtcnn_full` for sd_mtcnn --full, else --method."""
  return "sd_mtcnn_full" if cfg.method.name == "sd_mtcnn" and cfg.method.full else cfg.method.name


def paper_variant(cfg) -> str | None:
  """The paper's `variant` column: eq5/eq6 for the self-distillation methods, "" for vanilla
  (no distillation) and traditional KD (which distils by Eq. 5); None when the paper has no such
  row (e.g. traditional_kd with --distill=none)."""
  name, distill = cfg.method.name, cfg.method.distill
  if name == "vanilla":
    return "" if distill == "none" else None
  if name == "traditional_kd":
    return "" if distill == "eq5" else None
  return distill if distill != "none" else None


def is_baseline_1(cfg) -> bool:
  """Baseline-1: vanilla, no distillation."""
  return cfg.method.name == "vanilla" and cfg.method.distill == "none"


@dataclasses.dataclass
class Group:
  """The runs of one config (seeds), named `name` in the report."""

  name: str
  runs: list

  @property
  def cfg(self):
    return self.runs[0].cfg

  @property
  def roles(self) -> tuple:
    return methods.get(self.cfg.method.name).roles

  @property
  def seeds(self) -> list:
    return [r.seed for r in self.runs]

  def sort_key(self) -> tuple:
    label = method_label(self.cfg)
    order = METHOD_ORDER.index(label) if label in METHOD_ORDER else len(METHOD_ORDER)
    backbone = self.cfg.model.backbone
    return (backbone != "segnet", backbone, order, label, self.cfg.method.distill, self.name)


# ---- finding ---------------------------------------------------------------------------------
def find(dirs) -> list:
  """The run directories given in `dirs` or found under them (not inside a run directory;
  hidden folders skipped), each once, in a stable order. FileNotFoundError naming an entry that
  does not exist or holds no run."""
  found, seen = [], set()
  for d in dirs:
    if not os.path.isdir(d):
      raise FileNotFoundError(f"--runs: {d} " + ("is not a directory" if os.path.exists(d)
                                                 else "does not exist"))
    here = []
    for root, dirnames, files in os.walk(d):
      if config_lib.CONFIG_NAME in files:
        here.append(root)
        dirnames[:] = []  # a run's own folders hold no runs
      else:
        dirnames[:] = sorted(n for n in dirnames if not n.startswith("."))
    if not here:
      raise FileNotFoundError(f"--runs: no run directory (a folder with {config_lib.CONFIG_NAME}) "
                              f"in or under {d}")
    for path in sorted(here):
      real = os.path.realpath(path)
      if real not in seen:
        seen.add(real)
        found.append(path)
  return found


# ---- reading ---------------------------------------------------------------------------------
def read_config(path: str):
  """config.json of run `path`; ValueError naming the file when it cannot be read."""
  cfg_path = os.path.join(path, config_lib.CONFIG_NAME)
  try:
    return config_lib.load(path)
  except (ValueError, OSError) as e:
    raise ValueError(f"{cfg_path}: not a readable run config ({e})") from None


def read_metrics(path: str) -> dict:
  """results/metrics.json of run `path` as {key: float or None}; FileNotFoundError when absent,
  ValueError naming the file when it cannot be read or is not a JSON object of numbers."""
  metrics_path = RunPaths(path).metrics_json
  if not os.path.exists(metrics_path):
    raise FileNotFoundError(
        f"{path}: no results/metrics.json (the run has not finished, or was not evaluated: "
        f"python -m sdmtcnn_tf.evaluate --model_dir={path})")
  try:
    with open(metrics_path) as f:
      raw = json.load(f)
  except (ValueError, OSError) as e:
    raise ValueError(f"{metrics_path}: unreadable metrics ({e}); evaluate the run again: "
                     f"python -m sdmtcnn_tf.evaluate --model_dir={path}") from None
  if not isinstance(raw, dict):
    raise ValueError(f"{metrics_path}: expected a JSON object of metric values, got "
                     f"{type(raw).__name__}")
  bad = sorted(k for k, v in raw.items()
               if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))))
  if bad:
    raise ValueError(f"{metrics_path}: {', '.join(bad[:3])} not a number")
  return {k: (float(v) if v is not None and math.isfinite(v) else None) for k, v in raw.items()}


def read(path: str, skip_incomplete: bool = False, warn=print) -> Run | None:
  """The Run of directory `path`; None (after `warn(message)`) for a run without
  results/metrics.json when `skip_incomplete`."""
  cfg = read_config(path)
  try:
    metrics = read_metrics(path)
  except FileNotFoundError as e:
    if not skip_incomplete:
      raise FileNotFoundError(f"{e}; or pass --skip_incomplete to leave it out") from None
    warn(f"skipping {e}")
    return None
  history = RunPaths(path).history_csv
  return Run(path, cfg, metrics, history if os.path.exists(history) else "")


def load(dirs, skip_incomplete: bool = False, warn=print) -> list:
  """Every run in or under `dirs` (see `find`, `read`), checked to be of one dataset."""
  runs = [r for r in (read(p, skip_incomplete, warn) for p in find(dirs)) if r is not None]
  if not runs:
    raise FileNotFoundError(f"--runs: every run in or under {', '.join(dirs)} was skipped (none "
                            "has results/metrics.json)")
  check_one_dataset(runs)
  return runs


def check_one_dataset(runs) -> None:
  """ValueError listing the datasets (with their runs) when `runs` mix datasets."""
  by_dataset: dict = {}
  for run in runs:
    by_dataset.setdefault(run.cfg.data.dataset, []).append(run.path)
  if len(by_dataset) > 1:
    parts = []
    for dataset, paths in by_dataset.items():
      more = f" and {len(paths) - 2} more" if len(paths) > 2 else ""
      parts.append(f"{dataset} ({', '.join(paths[:2])}{more})")
    raise ValueError("runs of different datasets in one report: " + "; ".join(parts)
                     + "; report one dataset at a time")


# ---- grouping --------------------------------------------------------------------------------
def config_key(cfg) -> tuple:
  """What the seeds of one config share: every flag except RUN_FIELDS."""
  return tuple(sorted((k, json.dumps(v)) for k, v in cfg.to_json().items()
                      if k not in RUN_FIELDS))


def dir_label(path: str) -> str:
  """A run directory's name without a trailing `_seed<N>` (a sweep names its runs
  `<flagfile name>_seed<N>`)."""
  return re.sub(r"_seed\d+$", "", os.path.basename(os.path.normpath(path)))


def default_name(cfg) -> str:
  """A group name from the config alone: method label, equation, backbone when not SegNet."""
  parts = [method_label(cfg)]
  if cfg.method.distill != "none":
    parts.append(cfg.method.distill)
  if cfg.model.backbone != "segnet":
    parts.append(cfg.model.backbone)
  return "_".join(parts)


def group(runs) -> list:
  """Runs -> groups of the same config (minus RUN_FIELDS), in the paper's row order. A group is
  named after its run directories when they all share one name up to `_seed<N>` (a sweep's
  flagfile name), else after its method (`default_name`); groups left with one name are told
  apart by the flags in which they differ, e.g. `sd_mtcnn_eq5 (epochs=16, height=32)`."""
  by_key: dict = {}
  for run in runs:
    by_key.setdefault(config_key(run.cfg), []).append(run)
  groups = []
  for members in by_key.values():
    members.sort(key=lambda r: (r.seed, r.path))
    labels = {dir_label(r.path) for r in members}
    name = labels.pop() if len(labels) == 1 else default_name(members[0].cfg)
    groups.append(Group(name, members))
  by_name: dict = {}
  for g in groups:
    by_name.setdefault(g.name, []).append(g)
  for same in by_name.values():
    if len(same) > 1:
      flat = [dict(config_key(g.cfg)) for g in same]
      differ = sorted(k for k in flat[0] if len({json.dumps(f.get(k)) for f in flat}) > 1)
      for g in same:
        values = g.cfg.to_json()
        g.name += " (" + ", ".join(f"{k}={_flag_text(values[k])}" for k in differ) + ")"
  return sorted(groups, key=Group.sort_key)


def _flag_text(value) -> str:
  if isinstance(value, list):
    return ",".join(map(str, value))
  return str(value)


def by_name(groups, name: str):
  """The group called `name`; ValueError listing the names otherwise."""
  for g in groups:
    if g.name == name:
      return g
  raise ValueError(f"--baseline={name}: no such group; the groups are "
                   + ", ".join(g.name for g in groups))
