"""Learning curves: per-epoch validation metrics of several groups of runs, overlaid.

One panel per metric in fig. 1's layout (mIoU, depth relative error, normals median angular
error; a task outside fig. 1 gets its headline metric), one line per group and role (teacher
solid, student dashed, one colour per group): the mean over the group's seeds at each epoch, and
a band of ± one sample std where at least two seeds have a value. The values are the
`val_<role>_<task>_<metric>` columns of each run's results/history.csv (callbacks.EpochHistory;
epochs counted from 1), under the report's definitions (`_legacy` for the paper's).

Needs matplotlib (Agg, no display); `available()` says whether it is installed. The reading
(`series`) does not.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math

import numpy as np

from sdmtcnn_tf import atomic
from sdmtcnn_tf.report import table

# task -> the metric fig. 1 plots (the paper's fig. 1: mIoU, depth rel. error, normal median)
FIGURE_1 = {"semseg": ("mIoU", "miou"), "depth": ("depth rel. error", "rel"),
            "normals": ("normals median angle (°)", "median_deg")}


def available() -> bool:
  try:
    import matplotlib  # noqa: F401
  except ImportError:
    return False
  return True


@dataclasses.dataclass(frozen=True)
class Panel:
  title: str
  key: str  # metrics key without role, e.g. semseg_miou_legacy


@dataclasses.dataclass(frozen=True)
class Series:
  """One line: epochs (1-based) where some seed has a value, the mean, the sample std (NaN
  where fewer than two seeds have one) and the count per epoch."""

  label: str
  group: int
  role: str
  epochs: np.ndarray
  mean: np.ndarray
  std: np.ndarray
  count: np.ndarray


def panels(groups, definitions: str = "paper") -> list:
  """fig. 1's panels for the tasks of `groups` (registry order)."""
  from sdmtcnn_tf import tasks as tasks_lib
  specs = {}
  for g in groups:
    for task in g.cfg.task_specs:
      specs.setdefault(task.name, task)
  out = []
  for name in tasks_lib.canonical(specs):
    task = specs[name]
    title, metric = FIGURE_1.get(name, (f"{name} {task.headline}", task.headline))
    if metric not in task.primary_metrics:
      continue
    key = table.metric_key(task, metric, definitions)
    out.append(Panel(title + (" (legacy)" if key.endswith("_legacy") else ""), key))
  return out


def read_history(path: str) -> dict:
  """{column: {epoch (1-based): value}} of one history.csv (NA and non-numbers skipped)."""
  out: dict = {}
  with open(path, newline="") as f:
    for row in csv.DictReader(f):
      try:
        epoch = int(row.get("epoch", "")) + 1
      except (TypeError, ValueError):
        continue
      for key, text in row.items():
        if key in (None, "epoch"):
          continue
        try:
          value = float(text)
        except (TypeError, ValueError):
          continue
        if math.isfinite(value):
          out.setdefault(key, {})[epoch] = value
  return out


def series(groups, panel: Panel, histories: dict) -> list:
  """The lines of one panel; `histories`: run path -> read_history (runs without a history
  are absent)."""
  out = []
  for index, g in enumerate(groups):
    for role in g.roles:
      column = f"val_{role}_{panel.key}"
      per_epoch: dict = {}
      for run in g.runs:
        for epoch, value in histories.get(run.path, {}).get(column, {}).items():
          per_epoch.setdefault(epoch, []).append(value)
      if not per_epoch:
        continue
      epochs = np.array(sorted(per_epoch))
      values = [per_epoch[e] for e in epochs]
      mean = np.array([np.mean(v) for v in values])
      std = np.array([np.std(v, ddof=1) if len(v) > 1 else np.nan for v in values])
      letter = {"teacher": "T", "student": "S"}.get(role, role)
      out.append(Series(f"{g.name} {letter}", index, role, epochs, mean, std,
                        np.array([len(v) for v in values])))
  return out


def write(groups, path: str, definitions: str = "paper", warn=print) -> bool:
  """Writes the curves PNG to `path` (atomically); False (nothing written) when no run has a
  validation value in its history. Runs without results/history.csv are left out with a
  warning."""
  histories = {}
  for g in groups:
    for run in g.runs:
      if run.history:
        try:
          histories[run.path] = read_history(run.history)
        except (OSError, ValueError, csv.Error) as e:
          warn(f"curves: {run.history} is unreadable ({e}); left out of the curves")
      else:
        warn(f"curves: {run.path} has no results/history.csv; left out of the curves")
  plotted = [(p, series(groups, p, histories)) for p in panels(groups, definitions)]
  plotted = [(p, lines) for p, lines in plotted if lines]
  if not plotted:
    return False
  atomic.write_bytes(path, render(plotted, len(groups)), label="report")
  return True


def render(plotted, num_groups: int) -> bytes:
  """PNG bytes of the panels [(Panel, [Series])] side by side."""
  from matplotlib.backends.backend_agg import FigureCanvasAgg
  from matplotlib.figure import Figure
  import matplotlib as mpl
  fig = Figure(figsize=(4.5 * len(plotted), 4.0), dpi=100, layout="constrained")
  FigureCanvasAgg(fig)
  axes = fig.subplots(1, len(plotted), squeeze=False)[0]
  colours = mpl.colormaps["tab10" if num_groups <= 10 else "tab20"]
  for ax, (panel, lines) in zip(axes, plotted):
    for line in lines:
      colour = colours(line.group % colours.N)
      # markers: a run validated only at its end (--validation_freq) is one point per line
      ax.plot(line.epochs, line.mean, color=colour, linewidth=1.6, marker="o", markersize=3,
              linestyle="-" if line.role == "teacher" else "--", label=line.label)
      band = np.isfinite(line.std)
      if band.any():
        std = np.where(band, line.std, 0.0)
        ax.fill_between(line.epochs, line.mean - std, line.mean + std, where=band,
                        color=colour, alpha=0.18, linewidth=0)
    ax.set_title(panel.title)
    ax.set_xlabel("epoch")
    ax.grid(alpha=0.3)
  handles, labels = axes[0].get_legend_handles_labels()
  seen = set(labels)
  for ax in axes[1:]:
    for h, lab in zip(*ax.get_legend_handles_labels()):
      if lab not in seen:
        seen.add(lab)
        handles.append(h)
        labels.append(lab)
  fig.legend(handles, labels, loc="outside lower center", ncols=min(len(labels), 4),
             fontsize="small")
  buffer = io.BytesIO()
  fig.savefig(buffer, format="png")
  return buffer.getvalue()
