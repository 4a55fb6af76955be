"""The constant predictor: the floor every trained model must beat on every metric.

It predicts, for every pixel of every image, the training split's statistics: the most
frequent class (semseg), the mean valid depth, the mean valid normal (unit-normalised) and
the mean keypoint / edge value. It is evaluated with the same metric objects as the models.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from sdmtcnn_tf import experiment
from sdmtcnn_tf import metrics as metrics_lib
from sdmtcnn_tf.config import ExperimentConfig

ROLE = "constant"


def training_statistics(cfg: ExperimentConfig, manifest) -> dict:
  """{task: constant prediction vector [C]} from one pass over the training split."""
  sums = {task: 0.0 for task in cfg.tasks}
  counts = {task: 0.0 for task in cfg.tasks}
  class_counts = np.zeros(cfg.num_classes)
  ds = experiment.dataset(cfg, manifest, experiment.TRAIN_SPLIT, training=False)
  for _, labels in ds:
    for task, label in labels.items():
      y = label.numpy()
      if task == "semseg":
        class_counts += np.bincount(y[y >= 0].ravel(), minlength=cfg.num_classes)
        continue
      valid = np.any(y != 0, -1) if task in ("depth", "normals") else np.ones(y.shape[:-1], bool)
      sums[task] = sums[task] + y[valid].sum(0)
      counts[task] += valid.sum()
  stats = {}
  for task in cfg.tasks:
    if task == "semseg":
      logits = np.full(cfg.num_classes, -10.0, np.float32)
      logits[int(np.argmax(class_counts))] = 10.0
      stats[task] = logits
    else:
      mean = np.asarray(sums[task] / max(counts[task], 1.0), np.float32).reshape(-1)
      if task == "normals":
        mean = mean / max(np.linalg.norm(mean), 1e-12)
      stats[task] = mean
  return stats


def evaluate_constant(cfg: ExperimentConfig, manifest) -> dict:
  """Primary and legacy metrics of the constant predictor on the validation split."""
  stats = training_statistics(cfg, manifest)
  metric_objects = [m for spec in cfg.task_specs
                    for m in metrics_lib.task_metrics(spec, ROLE, True, cfg.legacy_batch_size)]
  ds = experiment.dataset(cfg, manifest, experiment.EVAL_SPLIT, training=False)
  for _, labels in ds:
    for metric in metric_objects:
      task = metric.name.split("_")[1]
      label = labels[task]
      shape = tf.concat([tf.shape(label)[:3], [len(stats[task])]], 0)
      metric.update_state(label, tf.broadcast_to(stats[task], shape))
  results = {}
  for metric in metric_objects:
    results.update({k: float(v) for k, v in metric.result().items()})
  return results


def not_beaten(cfg: ExperimentConfig, model_metrics: dict, constant_metrics: dict,
               role: str) -> list:
  """Primary metrics (without the _legacy variants) on which `role` does not beat the constant
  predictor; [] means it beats it everywhere."""
  failures = []
  for spec in cfg.task_specs:
    for metric, higher in spec.higher_is_better.items():
      if metric == "loss":
        continue
      model_value = model_metrics[f"{role}_{spec.name}_{metric}"]
      constant_value = constant_metrics[f"{ROLE}_{spec.name}_{metric}"]
      better = model_value > constant_value if higher else model_value < constant_value
      if not better:
        failures.append(f"{role}_{spec.name}_{metric}: {model_value:.4f} vs constant "
                        f"{constant_value:.4f}")
  return failures
