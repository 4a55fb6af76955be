"""The keras.Model subclass that trains teacher and student together: train_step / test_step.

The config's method (methods/) lists the weighted loss terms; each term reads the training
graph's nested outputs and returns (sum, count). Every term is logged by its own tracker under
its name (e.g. `teacher_semseg_loss`, `student_depth_loss`, `kd_semseg_loss`,
`hint_semseg_l5_loss`), and `loss` is the weighted total. Every term is a global-batch mean:
the per-replica sums are divided by the element count summed over all replicas, so the
optimizer's all-reduce SUM of gradients gives exactly the single-device gradient of the same
global batch (no 1/num_replicas fix-ups needed).
"""

from __future__ import annotations

import keras
import tensorflow as tf
from keras import ops

from sdmtcnn_tf import distribute, methods
from sdmtcnn_tf.config import ExperimentConfig
from sdmtcnn_tf.models.build import Network


class UnreachedVariableError(ValueError):
  """A trainable variable gets no gradient from any loss term (a wiring defect)."""


def _sum_over_replicas(x):
  ctx = tf.distribute.get_replica_context()
  if ctx is None or ctx.num_replicas_in_sync == 1:
    return x
  return ctx.all_reduce(tf.distribute.ReduceOp.SUM, x)


def _num_replicas() -> int:
  return tf.distribute.get_strategy().num_replicas_in_sync


@keras.saving.register_keras_serializable(package="sdmtcnn")
class MultiTaskModel(distribute.MultiWorkerFit):
  """Wraps the functional training graph; `fit` / `evaluate` drive it as usual.

  call(image [B, H, W, 3] float32 in [0, 1]) -> the graph's nested outputs (models/build.py).
  Data: (image, {task: label}) in the conventions of tasks/ (the package docstring).
  """

  def __init__(self, network: Network, cfg: ExperimentConfig, **kwargs):
    super().__init__(name=kwargs.pop("name", "sdmtcnn"), **kwargs)
    self.network = network
    self.net = network.model
    self.cfg = cfg
    self.method = methods.get(cfg.method.name)
    self.terms = self.method.loss_terms(cfg)
    self.trackers = {t.name: keras.metrics.Mean(name=t.name) for t in self.terms}
    self.total_tracker = keras.metrics.Mean(name="loss")
    self.roles = self.method.roles
    self.task_metrics = [m for role in self.roles for task in cfg.task_specs
                         for m in task.metrics(role, True, cfg.data.legacy_batch_size)]
    self.built = True

  def call(self, image, training=False):
    return self.net(image, training=training)

  @property
  def metrics(self):
    return [self.total_tracker, *self.trackers.values(), *self.task_metrics]

  # ---- losses -------------------------------------------------------------------------------
  def compute_terms(self, labels, outputs) -> dict:
    """Term name -> this replica's share of the global-batch mean (sums to the mean)."""
    values = {}
    for term in self.terms:
      total, count = term(labels, outputs)
      values[term.name] = total / ops.maximum(_sum_over_replicas(count), 1.0)
    return values

  def weighted_total(self, values: dict):
    total = ops.convert_to_tensor(0.0, dtype=next((v.dtype for v in values.values()), None))
    for term in self.terms:  # a weight-0 term still counts: its layers get zero gradients
      total = total + term.weight * values[term.name]
    if self.losses:  # layer regularisers: per replica, so divide like Keras does
      total = total + ops.sum(self.losses) / _num_replicas()
    return total

  def _track(self, values: dict, total):
    # Each replica holds its share of the global mean; the trackers' SUM aggregation across
    # replicas divides by the replica count, so scale back up to log the global value.
    n = float(_num_replicas())
    for name, value in values.items():
      self.trackers[name].update_state(value * n)
    self.total_tracker.update_state(total * n)

  def _logs(self):
    return {m.name: m.result() for m in [self.total_tracker, *self.trackers.values()]}

  # ---- steps --------------------------------------------------------------------------------
  def train_step(self, data):
    image, labels, _ = keras.utils.unpack_x_y_sample_weight(data)
    with tf.GradientTape() as tape:
      outputs = self(image, training=True)
      values = self.compute_terms(labels, outputs)
      total = self.weighted_total(values)
      scaled = self.optimizer.scale_loss(total)
    variables = self.trainable_variables
    grads = tape.gradient(scaled, variables)
    self._check_reached(grads, variables)
    pairs = [(g, v) for g, v in zip(grads, variables) if g is not None]  # minus frozen ones
    self.optimizer.apply([g for g, _ in pairs], [v for _, v in pairs])
    self._track(values, total)
    return self.per_replica_logs(self._logs())

  def _check_reached(self, grads, variables) -> None:
    """Raises (while the step is traced, i.e. at the first step) when a trainable variable
    that the method does not declare frozen gets no gradient from any loss term."""
    frozen = self.method.frozen_variables(self)
    missing = [v.path for g, v in zip(grads, variables) if g is None and v.path not in frozen]
    if missing:
      raise UnreachedVariableError(
          f"--method={self.cfg.method.name}: no loss term reaches {len(missing)} trainable "
          f"variable(s), e.g. {', '.join(missing[:3])}; every layer of the training graph "
          "must feed a term (or the method must declare it frozen)")

  def test_step(self, data):
    image, labels, _ = keras.utils.unpack_x_y_sample_weight(data)
    outputs = self(image, training=False)
    values = self.compute_terms(labels, outputs)
    self._track(values, self.weighted_total(values))
    for metric in self.task_metrics:
      metric.update_state(labels[metric.task], outputs[metric.role][metric.task])
    logs = self._logs()
    for metric in self.task_metrics:
      logs.update(metric.result())
    return self.per_replica_logs(logs)

  def predict_step(self, data):
    image = data[0] if isinstance(data, (tuple, list)) else data
    return self(image, training=False)
