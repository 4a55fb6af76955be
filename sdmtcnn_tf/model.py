"""The keras.Model subclass that trains teacher and student together: train_step / test_step.

Loss terms (each logged by its own tracker, names `<role>_<task>_loss`):
  teacher_<task>_loss       Eq. 2, weight w_t (absent when the teacher is frozen)
  student_<task>_loss       Eq. 3, weight student_gt_weight * w_t
  kd_<task>_loss            Eq. 5 output distillation, weight alpha * w_t   (--distill=eq5/both)
  hint_<task>_l<l>_loss     Eq. 6 feature hint at level l, weight lambda      (--distill=eq6/both)
  loss                      the weighted total
Every term is a global-batch mean: the per-replica sums are divided by the element count summed
over all replicas, so the optimizer's all-reduce SUM of gradients gives exactly the
single-device gradient of the same global batch (no 1/num_replicas fix-ups needed).
"""

from __future__ import annotations

import dataclasses

import keras
import tensorflow as tf
from keras import ops

from sdmtcnn_tf import losses as losses_lib
from sdmtcnn_tf import metrics as metrics_lib
from sdmtcnn_tf.config import ExperimentConfig
from sdmtcnn_tf.models.build import Network


@dataclasses.dataclass(frozen=True)
class LossTerm:
  name: str  # tracker name, e.g. "teacher_semseg_loss"
  kind: str  # "teacher" | "student" | "kd" | "hint"
  task: str
  weight: float
  level: int = 0


def loss_terms(cfg: ExperimentConfig, network: Network) -> tuple:
  """The weighted loss terms of `cfg`'s method, in logging order."""
  terms = []
  if not network.frozen_teacher:
    terms += [LossTerm(f"teacher_{s.name}_loss", "teacher", s.name, cfg.task_weight(s.name))
              for s in cfg.task_specs]
  if cfg.has_student:
    terms += [LossTerm(f"student_{s.name}_loss", "student", s.name,
                       cfg.resolved_student_gt_weight * cfg.task_weight(s.name))
              for s in cfg.task_specs]
  if cfg.has_student and cfg.distill in ("eq5", "both"):
    terms += [LossTerm(f"kd_{s.name}_loss", "kd", s.name, cfg.alpha * cfg.task_weight(s.name))
              for s in cfg.task_specs]
  terms += [LossTerm(f"hint_{task}_l{level}_loss", "hint", task, cfg.hint_weight, level)
            for task, level in network.hint_pairs]
  return tuple(terms)


def _sum_over_replicas(x):
  ctx = tf.distribute.get_replica_context()
  if ctx is None or ctx.num_replicas_in_sync == 1:
    return x
  return ctx.all_reduce(tf.distribute.ReduceOp.SUM, x)


def _num_replicas() -> int:
  return tf.distribute.get_strategy().num_replicas_in_sync


@keras.saving.register_keras_serializable(package="sdmtcnn")
class MultiTaskModel(keras.Model):
  """Wraps the functional training graph; `fit` / `evaluate` drive it as usual.

  call(image [B, H, W, 3] float32 in [0, 1]) -> the graph's output dict (see models/build.py).
  Data: (image, {task: label}) in the conventions of tasks.py.
  """

  def __init__(self, network: Network, cfg: ExperimentConfig, **kwargs):
    super().__init__(name=kwargs.pop("name", "sdmtcnn"), **kwargs)
    self.network = network
    self.net = network.model
    self.cfg = cfg
    self.specs = {s.name: s for s in cfg.task_specs}
    self.terms = loss_terms(cfg, network)
    self.trackers = {t.name: keras.metrics.Mean(name=t.name) for t in self.terms}
    self.total_tracker = keras.metrics.Mean(name="loss")
    roles = ["student"] if network.frozen_teacher else ["teacher"]
    if cfg.has_student and not network.frozen_teacher:
      roles.append("student")
    self.roles = tuple(roles)
    self.task_metrics = [m for role in self.roles for s in cfg.task_specs
                         for m in metrics_lib.task_metrics(s, role, True, cfg.legacy_batch_size)]
    self.built = True

  def call(self, image, training=False):
    return self.net(image, training=training)

  @property
  def metrics(self):
    return [self.total_tracker, *self.trackers.values(), *self.task_metrics]

  # ---- losses -------------------------------------------------------------------------------
  def _teacher_side(self, x):
    return x if self.cfg.two_way else ops.stop_gradient(x)

  def _term_sum_count(self, term: LossTerm, labels, outputs):
    spec = self.specs[term.task]
    label = labels[term.task]
    if term.kind == "teacher":
      return losses_lib.task_loss(spec, label, outputs[f"teacher_{term.task}"])
    if term.kind == "student":
      return losses_lib.task_loss(spec, label, outputs[f"student_{term.task}"])
    if term.kind == "kd":
      return losses_lib.distillation_output_term(
          spec, label, outputs[f"student_{term.task}"],
          self._teacher_side(outputs[f"teacher_{term.task}"]), self.cfg.temperature)
    key = f"hint_{term.task}_l{term.level}"
    return losses_lib.feature_hint(outputs[f"{key}_student"],
                                   self._teacher_side(outputs[f"{key}_teacher"]))

  def compute_terms(self, labels, outputs) -> dict:
    """Term name -> this replica's share of the global-batch mean (sums to the mean)."""
    values = {}
    for term in self.terms:
      total, count = self._term_sum_count(term, labels, outputs)
      values[term.name] = total / ops.maximum(_sum_over_replicas(count), 1.0)
    return values

  def weighted_total(self, values: dict):
    total = ops.convert_to_tensor(0.0, dtype=next((v.dtype for v in values.values()), None))
    for term in self.terms:
      if term.weight:
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
    pairs = [(g, v) for g, v in zip(grads, variables) if g is not None]
    self.optimizer.apply([g for g, _ in pairs], [v for _, v in pairs])
    self._track(values, total)
    return self._logs()

  def test_step(self, data):
    image, labels, _ = keras.utils.unpack_x_y_sample_weight(data)
    outputs = self(image, training=False)
    values = self.compute_terms(labels, outputs)
    self._track(values, self.weighted_total(values))
    for metric in self.task_metrics:
      role, task = metric.name.split("_")[:2]
      metric.update_state(labels[task], outputs[f"{role}_{task}"])
    logs = self._logs()
    for metric in self.task_metrics:
      logs.update(metric.result())
    return logs

  def predict_step(self, data):
    image = data[0] if isinstance(data, (tuple, list)) else data
    return self(image, training=False)
