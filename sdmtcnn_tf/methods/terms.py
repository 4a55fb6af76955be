"""Loss terms: each one knows what it reads from the training graph's outputs and how to score
it, so the model only sums weighted terms.

The training graph returns nested structures (see models/build.py):
  {"teacher": {task: y}, "student": {task: y}, "exits": {"e<l>": {task: y}},
   "hints": {key: {"student": feature, "teacher": feature}}}
A term returns (sum, count) over this replica's batch; the model divides by the count summed
over replicas (exact global-batch means, see model.py).
"""

from __future__ import annotations

import dataclasses

from keras import ops

from sdmtcnn_tf import losses
from sdmtcnn_tf.tasks import Task


def lookup(outputs: dict, path: tuple):
  """outputs[path[0]][path[1]]...: e.g. ("exits", "e3") -> {task: y}."""
  for key in path:
    outputs = outputs[key]
  return outputs


def teacher_side(x, two_way: bool):
  """The teacher's side of a distillation pair: no gradient unless --two_way."""
  return x if two_way else ops.stop_gradient(x)


@dataclasses.dataclass(frozen=True)
class LossTerm:
  """A weighted loss term. `name` is its tracker's (logged, metrics.json) name."""

  name: str
  weight: float

  def __call__(self, labels: dict, outputs: dict):
    raise NotImplementedError


@dataclasses.dataclass(frozen=True)
class Supervised(LossTerm):
  """Eq. 1-3: a task's loss of the predictions at `path` against the labels."""

  task: Task = None
  path: tuple = ("teacher",)

  def __call__(self, labels, outputs):
    return self.task.loss(labels[self.task.name], lookup(outputs, self.path)[self.task.name])


@dataclasses.dataclass(frozen=True)
class OutputDistillation(LossTerm):
  """Eq. 4-5: the predictions at `student_path` against the teacher's (the task's
  distillation loss: softened KL for classes, L1 for regression)."""

  task: Task = None
  student_path: tuple = ("student",)
  temperature: float = 1.0
  two_way: bool = False

  def __call__(self, labels, outputs):
    name = self.task.name
    teacher = teacher_side(outputs["teacher"][name], self.two_way)
    return self.task.distillation_loss(labels[name], lookup(outputs, self.student_path)[name],
                                       teacher, self.temperature)


@dataclasses.dataclass(frozen=True)
class FeatureHint(LossTerm):
  """Eq. 6: squared error between the adapted student feature and the teacher feature of
  hint `key`."""

  key: str = ""
  two_way: bool = False

  def __call__(self, labels, outputs):
    pair = outputs["hints"][self.key]
    return losses.feature_hint(pair["student"], teacher_side(pair["teacher"], self.two_way))


def feature_hints(cfg, pairs) -> tuple:
  """The FeatureHint terms of `pairs` ((term name, hint key) each), weighted by λ =
  --hint_weight per pair (--hint_reduction=sum) or λ / number of pairs (mean: λ weighs the
  feature objective as a whole)."""
  pairs = tuple(pairs)
  weight = cfg.method.hint_weight
  if cfg.method.hint_reduction == "mean":
    weight /= max(len(pairs), 1)
  return tuple(FeatureHint(name, weight, key, cfg.method.two_way) for name, key in pairs)
