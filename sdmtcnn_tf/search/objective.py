"""What a search optimises: one key of a trial's results/metrics.json, or the multi-task gain Δm.

`--objective=NAME[:min|max]`: NAME is any key the trial's metrics.json will hold (the valid
names are computed from the config before training: every role's task metrics, primary and
`_legacy`, and every loss term, see `metric_directions`); the direction defaults to the
metric's own (a task says which of its metrics are better higher). `delta_m` (the teacher) and
`student_delta_m` compare a trial with a finished Baseline-1 run (`--baseline_dir`, its
teacher's metrics) as LibMTL does (`count_improvement`), in percent, higher is better:

    Δm = mean over tasks t of  mean over t's primary metrics m of  s_m (M_m - B_m) / B_m × 100

with s_m = +1 when higher is better, −1 when lower is better. Unlike LibMTL's 5 normal
metrics, the normals task's primary metrics here include `cos` (6).
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import os

from sdmtcnn_tf import methods
from sdmtcnn_tf.report import gain
from sdmtcnn_tf.rundir import RunPaths

DELTA_M = {"delta_m": "teacher", "student_delta_m": "student"}
BASELINE_ROLE = "teacher"  # the baseline is a vanilla (Baseline-1) run: its teacher


@dataclasses.dataclass(frozen=True)
class Objective:
  """`name` is the value reported to Keras Tuner and shown in the leaderboard; `direction`
  "min" or "max". For Δm: `role` of the trial compared and `baseline` {metric key: value}
  of the baseline run (keys `teacher_<task>_<metric>`)."""

  name: str
  direction: str
  role: str = ""
  baseline: dict = dataclasses.field(default_factory=dict)

  def value(self, metrics: dict, cfg) -> float:
    """The objective of one trial from its metrics ({key: float or None}); NaN when a needed
    value is missing or not finite (Keras Tuner then counts the trial as failed)."""
    if self.name in DELTA_M:
      return delta_m(metrics, self.baseline, cfg, self.role)
    value = metrics.get(self.name)
    return float("nan") if value is None else float(value)


def metric_directions(cfg) -> dict:
  """{every key a run of `cfg` writes to results/metrics.json: "min" or "max"}: per role of the
  method, each task's `metric_keys(role, legacy=True)` (a `_legacy` key has the direction of
  its primary metric), and each loss term (min)."""
  out = {}
  for role in methods.get(cfg.method.name).roles:
    for task in cfg.task_specs:
      prefix = f"{role}_{task.name}_"
      for key in task.metric_keys(role, legacy=True):
        metric = key[len(prefix):].removesuffix("_legacy")
        out[key] = "max" if task.higher_is_better[metric] else "min"
  for term in methods.get(cfg.method.name).loss_terms(cfg):
    out[term.name] = "min"
  return out


def default_name(cfg) -> str:
  """The headline metric (Task.headline) of the first task, for the method's first role (the
  teacher; traditional_kd: the student), e.g. `teacher_semseg_miou`."""
  role = methods.get(cfg.method.name).roles[0]
  task = cfg.task_specs[0]
  return f"{role}_{task.name}_{task.headline}"


def parse(text: str, cfg, baseline_dir: str = "") -> Objective:
  """`--objective` (empty = default_name) -> Objective; ValueError listing the valid names for
  an unknown one, or naming the baseline file at fault."""
  text = text or default_name(cfg)
  name, _, direction = text.partition(":")
  directions = metric_directions(cfg)
  roles = methods.get(cfg.method.name).roles
  gains = [g for g, role in DELTA_M.items() if role in roles]
  if direction not in ("", "min", "max"):
    raise ValueError(f"--objective={text}: the direction after ':' must be min or max")
  if name in DELTA_M:
    if name not in gains:
      raise ValueError(f"--objective={text}: --method={cfg.method.name} has no {DELTA_M[name]}; "
                       f"use {' or '.join(gains)}")
    if direction == "min":
      raise ValueError(f"--objective={text}: {name} is a gain (higher is better); write "
                       f"--objective={name}")
    if not baseline_dir:
      raise ValueError(f"--objective={name} needs --baseline_dir: a finished Baseline-1 "
                       "(vanilla) run to compare with")
    return Objective(name, "max", DELTA_M[name], read_baseline(baseline_dir, cfg))
  if name not in directions:
    valid = sorted(directions) + gains
    close = difflib.get_close_matches(name, valid, n=1)
    hint = f"did you mean {close[0]}? " if close else ""
    raise ValueError(f"--objective={text}: {name!r} is not a key of this config's "
                     f"results/metrics.json; {hint}valid names: {', '.join(valid)}")
  if baseline_dir:
    raise ValueError(f"--baseline_dir is read only with --objective={' or '.join(gains)}")
  return Objective(name, direction or directions[name])


def read_baseline(baseline_dir: str, cfg) -> dict:
  """The baseline run's teacher metrics that Δm needs, checked before any training."""
  path = RunPaths(baseline_dir).metrics_json
  if not os.path.exists(path):
    raise FileNotFoundError(f"--baseline_dir: {path} is missing; train and evaluate the "
                            "Baseline-1 run there first")
  try:
    with open(path) as f:
      metrics = json.load(f)
  except ValueError as e:
    raise ValueError(f"--baseline_dir: {path} is not valid JSON ({e})") from None
  needed = [f"{BASELINE_ROLE}_{t.name}_{m}" for t in cfg.task_specs for m in t.primary_metrics]
  missing = [k for k in needed if not isinstance(metrics.get(k), (int, float))]
  if missing:
    raise ValueError(f"--baseline_dir: {path} lacks {', '.join(missing)} (is it a vanilla run "
                     f"on --tasks={','.join(cfg.data.tasks)}?)")
  zero = [k for k in needed if metrics[k] == 0]
  if zero:
    raise ValueError(f"--baseline_dir: {path} has {', '.join(zero)} = 0, which Δm divides by")
  return {k: float(metrics[k]) for k in needed}


def delta_m(metrics: dict, baseline: dict, cfg, role: str) -> float:
  """Δm in percent (module docstring; the formula lives in report/gain.py) of `role`'s metrics
  against the baseline's teacher, over every primary metric of every task."""
  return gain.delta_m(
      (task.name, metrics.get(f"{role}_{task.name}_{metric}"),
       baseline[f"{BASELINE_ROLE}_{task.name}_{metric}"], higher)
      for task in cfg.task_specs for metric, higher in task.primary_metrics.items())
