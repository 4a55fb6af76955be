"""Task specifications: everything else loops over these.

A task is data, not code: its name, how many output channels its head has, how the head's raw
output is activated, and which of its metrics are better when higher. The loss and metric
functions themselves live in `losses.py` and `metrics.py`, keyed by `TaskSpec.kind`.

Label conventions (the TFRecord schema decodes to these, see `data/schema.py`):
  semseg     int32 [H, W], class ids 0..C-1, IGNORE_LABEL (-1) = not labelled.
  depth      float32 [H, W, 1], metres or disparity (the manifest says which), 0 = invalid.
  normals    float32 [H, W, 3], unit vectors (x right, y up, z towards the camera), 0 = invalid.
  keypoints  float32 [H, W, 1], keypoint heat map in [0, 1].
  edges      float32 [H, W, 1], edge strength in [0, 1].
"""

from __future__ import annotations

import dataclasses

IGNORE_LABEL = -1

SEMSEG = "semseg"
DEPTH = "depth"
NORMALS = "normals"
KEYPOINTS = "keypoints"
EDGES = "edges"

ALL_TASKS = (SEMSEG, DEPTH, NORMALS, KEYPOINTS, EDGES)


@dataclasses.dataclass(frozen=True)
class TaskSpec:
  """One dense prediction task.

  Attributes:
    name: one of ALL_TASKS.
    channels: output channels of the head (number of classes for semseg).
    activation: how raw head outputs become predictions: "logits" (softmax in the loss),
      "linear", or "l2_normalize" (unit vectors along the last axis).
    label_channels: channels of the decoded label map (0 = a [H, W] class-id map).
    higher_is_better: metric name -> True if larger values are better.
    headline: the metric shown in progress lines (the rest go to TensorBoard and the CSV).
  """

  name: str
  channels: int
  activation: str
  label_channels: int
  higher_is_better: dict
  headline: str = "loss"

  @property
  def is_classification(self) -> bool:
    return self.activation == "logits"


def task_spec(name: str, num_classes: int = 13) -> TaskSpec:
  """Returns the TaskSpec of task `name`; `num_classes` only matters for semseg."""
  if name == SEMSEG:
    return TaskSpec(SEMSEG, num_classes, "logits", 0,
                    {"pixacc": True, "miou": True, "loss": False}, "miou")
  if name == DEPTH:
    return TaskSpec(DEPTH, 1, "linear", 1, {"abs": False, "rel": False, "loss": False},
                    "abs")
  if name == NORMALS:
    return TaskSpec(NORMALS, 3, "l2_normalize", 3,
                    {"mean_deg": False, "median_deg": False, "within_11_25": True,
                     "within_22_5": True, "within_30": True, "cos": True, "loss": False},
                    "mean_deg")
  if name in (KEYPOINTS, EDGES):
    return TaskSpec(name, 1, "linear", 1, {"abs": False, "loss": False}, "abs")
  raise ValueError(f"unknown task {name!r}; expected one of {', '.join(ALL_TASKS)}")


def task_specs(names, num_classes: int = 13) -> tuple[TaskSpec, ...]:
  """TaskSpecs for a sequence of task names, in the canonical ALL_TASKS order."""
  names = list(names)
  unknown = [n for n in names if n not in ALL_TASKS]
  if unknown:
    raise ValueError(f"unknown task(s) {unknown}; expected names from {', '.join(ALL_TASKS)}")
  if len(set(names)) != len(names):
    raise ValueError(f"duplicate task in {names}")
  return tuple(task_spec(n, num_classes) for n in ALL_TASKS if n in names)
