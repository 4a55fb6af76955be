"""A search's results: `<tune_dir>/leaderboard.md` and `.csv`, `best.flags`, `objective.png`.

Everything is read from the oracle's trials (Keras Tuner's trial.json files hold each trial's
values, objective and the metrics of its results/metrics.json, averaged over executions), so the
chief writes it without reading the workers' run directories. Rows: the completed trials, best
first, then the others (failed, or still running) by trial id. Columns: rank, trial, status,
the objective, each searched flag (Hyperband: also `tuner/epochs`), every validation metric of
metrics.json, and `time_s` (seconds of the trial's last run: since its restart for a resumed
trial, about 0 for one whose finished run was read back).

`best.flags` is the best trial's resolved config as a flagfile (what its flags.txt holds) with
`--model_dir=<tune_dir>/best_run`, a new folder: `python -m sdmtcnn_tf.train
--flagfile=<tune_dir>/best.flags` retrains it there (a later `--model_dir=...` on the command
line overrides it). With K executions it is execution 0's (the base --seed).
"""

from __future__ import annotations

import csv
import dataclasses
import glob
import io
import math
import os

from sdmtcnn_tf import atomic
from sdmtcnn_tf import config as config_lib
from sdmtcnn_tf.search.hypermodel import ORACLE_DIR, WALL_TIME

BEST_RUN = "best_run"


@dataclasses.dataclass(frozen=True)
class Row:
  trial_id: str
  status: str
  values: dict       # hyperparameter values as Keras Tuner holds them (lists as "4,5")
  objective: float | None
  metrics: dict      # {metric: float}, NaN where the run had none
  seconds: float | None


def load_trials(tune_dir: str) -> list:
  """The Keras Tuner trials recorded in `<tune_dir>/oracle/trial_*/trial.json`."""
  from keras_tuner.src.engine import trial as trial_module
  paths = sorted(glob.glob(os.path.join(tune_dir, ORACLE_DIR, "trial_*", "trial.json")))
  return [trial_module.Trial.load(p) for p in paths]


def rows(trials, objective) -> list:
  """Completed trials best first (by `objective.direction`), then the rest by id."""
  out = []
  for t in trials:
    names = list(t.metrics.metrics)
    metrics = {n: t.metrics.get_last_value(n) for n in names if n != WALL_TIME}
    metrics.pop(objective.name, None)
    seconds = t.metrics.get_last_value(WALL_TIME) if WALL_TIME in names else None
    score = t.score if t.status == "COMPLETED" and t.score is not None else None
    if score is not None and not math.isfinite(score):
      score = None
    out.append(Row(t.trial_id, t.status, dict(t.hyperparameters.values), score, metrics,
                   seconds))
  sign = -1.0 if objective.direction == "max" else 1.0
  done = sorted((r for r in out if r.objective is not None),
                key=lambda r: (sign * r.objective, r.trial_id))
  rest = sorted((r for r in out if r.objective is None), key=lambda r: r.trial_id)
  return done + rest


def _columns(table: list, hp_names: list) -> tuple:
  hps = list(hp_names) + (["tuner/epochs"] if any("tuner/epochs" in r.values for r in table)
                          else [])
  metrics = sorted({k for r in table for k in r.metrics})
  return hps, metrics


def _cell(value) -> str:
  if value is None:
    return ""
  if isinstance(value, float):
    return "nan" if math.isnan(value) else f"{value:.6g}"
  return str(value)


def markdown(table: list, objective, hp_names: list, title: str = "") -> str:
  hps, metrics = _columns(table, hp_names)
  header = ["rank", "trial", "status", f"{objective.name} ({objective.direction})", *hps,
            *metrics, "time_s"]
  lines = ([title, ""] if title else []) + ["| " + " | ".join(header) + " |",
                                            "|" + "---|" * len(header)]
  for rank, r in enumerate(table, 1):
    cells = [str(rank) if r.objective is not None else "-", r.trial_id, r.status,
             _cell(r.objective), *[_cell(r.values.get(h)) for h in hps],
             *[_cell(r.metrics.get(m)) for m in metrics], _cell(r.seconds)]
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n"


def csv_text(table: list, objective, hp_names: list) -> str:
  hps, metrics = _columns(table, hp_names)
  text = io.StringIO()
  writer = csv.writer(text, lineterminator="\n")
  writer.writerow(["rank", "trial", "status", "objective", *hps, *metrics, "time_s"])
  for rank, r in enumerate(table, 1):
    writer.writerow([rank if r.objective is not None else "", r.trial_id, r.status,
                     _cell(r.objective), *[_cell(r.values.get(h)) for h in hps],
                     *[_cell(r.metrics.get(m)) for m in metrics], _cell(r.seconds)])
  return text.getvalue()


def best_flags(cfg, tune_dir: str, row: Row, objective) -> str:
  """The flagfile of the best trial's config `cfg` (see the module docstring)."""
  path = os.path.join(tune_dir, "best.flags")
  return (f"# Best trial {row.trial_id} of the search in {tune_dir}: {objective.name} = "
          f"{_cell(row.objective)}.\n"
          f"# Retrain: python -m sdmtcnn_tf.train --flagfile={path} [--model_dir=DIR]\n"
          + config_lib.to_flags_text(cfg.replace(model_dir=os.path.join(tune_dir, BEST_RUN))))


def write(tune_dir: str, trials, objective, space: tuple, trial_config, title: str = "") -> list:
  """Writes leaderboard.md/.csv, best.flags (when a trial completed) and objective.png into
  `tune_dir`. `trial_config(values)` -> that trial's config. Returns the rows."""
  table = rows(trials, objective)
  names = [h.name for h in space]
  atomic.write_text(os.path.join(tune_dir, "leaderboard.md"),
                    markdown(table, objective, names, title), label="leaderboard")
  atomic.write_text(os.path.join(tune_dir, "leaderboard.csv"),
                    csv_text(table, objective, names), label="leaderboard")
  if table and table[0].objective is not None:
    cfg = trial_config(table[0].values)
    atomic.write_text(os.path.join(tune_dir, "best.flags"),
                      best_flags(cfg, tune_dir, table[0], objective), label="leaderboard")
  from sdmtcnn_tf.search import plot
  plot.save(os.path.join(tune_dir, "objective.png"), table, objective, space)
  return table
