"""The constant predictor: the floor every trained model must beat on every metric.

It predicts, for every pixel of every image, a statistic of the training split that each task
defines (Task.constant_fit): the most frequent class (semseg), the mean valid depth, the mean
valid normal (unit-normalised), the mean keypoint / edge value. It is evaluated with the same metric objects as the models.
"""

from __future__ import annotations

import tensorflow as tf

from sdmtcnn_tf import experiment
from sdmtcnn_tf.config import ExperimentConfig

ROLE = "constant"


def training_statistics(cfg: ExperimentConfig, manifest) -> dict:
  """{task: constant prediction vector [C]} from one pass over the training split (each task
  says what its constant is: Task.constant_fit)."""
  fits = {task.name: task.constant_fit() for task in cfg.task_specs}
  ds = experiment.dataset(cfg, manifest, experiment.TRAIN_SPLIT, training=False)
  for _, labels in ds:
    for name, label in labels.items():
      fits[name].update(label.numpy())
  return {name: fit.prediction() for name, fit in fits.items()}


def evaluate_constant(cfg: ExperimentConfig, manifest) -> dict:
  """Primary and legacy metrics of the constant predictor on the validation split."""
  stats = training_statistics(cfg, manifest)
  metric_objects = [m for task in cfg.task_specs
                    for m in task.metrics(ROLE, True, cfg.data.legacy_batch_size)]
  ds = experiment.dataset(cfg, manifest, experiment.EVAL_SPLIT, training=False)
  for _, labels in ds:
    for metric in metric_objects:
      label = labels[metric.task]
      shape = tf.concat([tf.shape(label)[:3], [len(stats[metric.task])]], 0)
      metric.update_state(label, tf.broadcast_to(stats[metric.task], shape))
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
