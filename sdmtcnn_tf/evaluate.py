"""Evaluate a run: `python -m sdmtcnn_tf.evaluate --model_dir=... [--save_predictions=DIR]`.

Writes `<model_dir>/results/metrics.json` (a read-only run is evaluated and printed, and one
`note:` line says the file was not written): a flat object {"<role>_<task>_<metric>": number}
(primary metrics from global statistics, `*_legacy` the paper-comparable per-image/per-batch
variants at --legacy_batch_size, and the per-term losses). With --save_predictions, one .npz per
validation image at label resolution with keys gt_<task> and <role>_<task>:
  semseg int32 [H, W] class ids (-1 = ignore in gt), depth float32 [H, W] (0 = invalid in gt),
  normals float32 [H, W, 3] unit vectors (0 = invalid in gt), keypoints/edges float32 [H, W].
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import sys

from absl import flags

from sdmtcnn_tf import atomic, cli, experiment, rundir
from sdmtcnn_tf import config as config_lib
from sdmtcnn_tf.config import ExperimentConfig


def evaluate_model(cfg: ExperimentConfig, model, manifest) -> dict:
  """Runs every validation example through `model`; returns {metric name: float}."""
  ds = experiment.dataset(cfg, manifest, experiment.EVAL_SPLIT, training=False)
  logs = model.evaluate(ds, verbose=0, return_dict=True)
  return {k: float(v) for k, v in sorted(logs.items()) if k != "loss"}


def write_metrics(metrics: dict, path: str) -> None:
  clean = {k: (v if math.isfinite(v) else None) for k, v in metrics.items()}
  atomic.write_json(path, clean, label="metrics", indent=2, sort_keys=True)


def save_predictions(cfg: ExperimentConfig, model, manifest, out_dir: str) -> int:
  """Writes one .npz per validation image; returns how many were written."""
  os.makedirs(out_dir, exist_ok=True)
  ds = experiment.dataset(cfg, manifest, experiment.EVAL_SPLIT, training=False, with_keys=True)
  count = 0
  tasks = {task.name: task for task in cfg.task_specs}
  for keys, images, labels in ds:
    outputs = model(images, training=False)
    for i, key in enumerate(keys.numpy()):
      arrays = {}
      for name, label in labels.items():
        arrays[f"gt_{name}"] = tasks[name].label_map(label[i].numpy())
        for role in model.roles:
          arrays[f"{role}_{name}"] = tasks[name].prediction_map(outputs[role][name][i].numpy())
      name = re.sub(r"[^A-Za-z0-9_.-]", "_", key.decode()) + ".npz"
      atomic.write_npz(os.path.join(out_dir, name), label="predictions", **arrays)
      count += 1
  return count


def format_table(rows: dict) -> str:
  """rows: {run label: metrics dict} -> a plain-text table of the primary metrics."""
  keys = sorted({k for m in rows.values() for k in m
                 if not k.endswith("_loss") and not k.endswith("_legacy")})
  width = max([len(k) for k in keys] + [6])
  labels = list(rows)
  cell = max([len(l) for l in labels] + [10]) + 2
  lines = ["metric".ljust(width) + "".join(l.rjust(cell) for l in labels)]
  for key in keys:
    cells = []
    for label in labels:
      v = rows[label].get(key)
      cells.append("-".rjust(cell) if v is None else f"{v:.4f}".rjust(cell))
    lines.append(key.ljust(width) + "".join(cells))
  return "\n".join(lines)


def run(model_dir: str, predictions_dir: str = "", **overrides) -> dict:
  """Evaluates the run in `model_dir`; `overrides`: see experiment.EVAL_OVERRIDES.

  Writes results/metrics.json into the run (refused while a training run holds the directory)
  and says so on stdout; a run directory this process cannot write is evaluated all the same,
  with one `note:` line on stderr saying that the file was not written.
  """
  cfg, _, model = experiment.load_trained(model_dir, **overrides)
  path = experiment.RunPaths(model_dir).metrics_json
  with contextlib.ExitStack() as stack:
    try:
      stack.enter_context(rundir.locked(model_dir, "sdmtcnn_tf.evaluate"))
      read_only = None
    except rundir.ReadOnlyRunError as e:  # the run is read already (load_trained)
      read_only = e
    manifest = experiment.prepare_data(cfg, experiment.EVAL_SPLIT)
    experiment.compile_model(model, cfg)
    metrics = evaluate_model(cfg, model, manifest)
    if read_only is None:
      write_metrics(metrics, path)
      print(f"wrote {path}")
    else:
      print(f"note: {path} not written: {read_only}", file=sys.stderr)
    if predictions_dir:
      save_predictions(cfg, model, manifest, predictions_dir)
  return metrics


def main(argv):
  cli.check_no_arguments(argv)
  FLAGS = flags.FLAGS
  if not FLAGS.model_dir:
    raise ValueError("--model_dir is required: the run directory written by sdmtcnn_tf.train")
  overrides = config_lib.run_overrides(FLAGS, FLAGS.model_dir, experiment.EVAL_OVERRIDES)
  metrics = run(FLAGS.model_dir, FLAGS.save_predictions, **overrides)
  print(format_table({"value": metrics}))


if __name__ == "__main__":
  # Every training flag is accepted (the training flagfile works here), see run_overrides.
  config_lib.define_flags()
  flags.DEFINE_string("save_predictions", "", "Folder for one .npz per validation image.")
  cli.run(main)
