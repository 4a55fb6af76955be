"""The Task base class: everything the library needs to know about one dense prediction task.

A task owns its label format (storage dtype and channels in the TFRecords, how a stored map
decodes, how augmentation resizes, zooms and flips it), which pixels are valid, its loss (Eq. 1)
and its output-distillation loss (Eq. 5), its metrics (primary and legacy, each with its
direction), the constant predictor every model must beat, its serving outputs, prediction maps
and a colour mapping for visualisation. The rest of the library asks the task and never
switches on its name: adding a task is a subclass plus `registry.register` (see
tests/test_toy_task.py, which adds one without touching the library).

Shapes: a decoded label is int32 [H, W] (class maps) or float32 [H, W, label_channels or 1];
batched labels add a leading B. Predictions are float [B, H, W, channels]. Loss functions
return (sum, count) so the model can form exact global-batch means (see model.py).
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import tensorflow as tf
from keras import ops

from sdmtcnn_tf import losses
from sdmtcnn_tf import metrics as metrics_lib

IGNORE_LABEL = -1


class ConstantFit:
  """Streams training labels ([B, H, W] or [B, H, W, C] numpy) into one prediction vector [C]:
  the mean of the valid label values. Subclassed where the constant is not a mean."""

  def __init__(self, task: "Task"):
    self.task = task
    self.total = 0.0
    self.count = 0.0

  def update(self, label: np.ndarray) -> None:
    label = label.reshape(label.shape[:3] + (-1,))
    valid = self.task.valid_mask_np(label)
    self.total = self.total + label[valid].sum(0, dtype=np.float64)
    self.count += float(valid.sum())

  def prediction(self) -> np.ndarray:
    return np.asarray(self.total / max(self.count, 1.0), np.float32).reshape(-1)


class Task:
  """One dense prediction task; subclasses set the class attributes and override what differs.

  Class attributes:
    name: the --tasks name and the key of its labels and outputs.
    activation: how the head's raw output becomes the prediction: "logits" (softmax in the
      loss), "linear" or "l2_normalize" (unit vectors along the last axis).
    storage_dtype, label_channels: the TFRecord label map is `storage_dtype` [H, W] when
      label_channels is 0, else [H, W, label_channels].
    resize_method: how augmentation resizes the label ("nearest" keeps invalid markers exact).
    primary_metrics: primary metric key -> True when higher is better.
    legacy_metrics: the keys of the MTAN-2019 (paper-comparable) variants, suffix "_legacy".
    headline: the metric shown in progress lines.
  Instance attributes:
    channels: output channels of the head (the class count for segmentation).
    output_bias: initial bias of the output convolutions.
  """

  name: ClassVar[str] = ""
  activation: ClassVar[str] = "linear"
  storage_dtype: ClassVar[type] = np.float16
  label_channels: ClassVar[int] = 0
  resize_method: ClassVar[str] = "bilinear"
  primary_metrics: ClassVar[dict] = {"abs": False}
  legacy_metrics: ClassVar[tuple] = ()
  headline: ClassVar[str] = "abs"
  uses_classes: ClassVar[bool] = False  # the label is a class map of --num_classes classes

  def __init__(self, channels: int = 1, output_bias: float = 0.0):
    self.channels = int(channels)
    self.output_bias = float(output_bias)

  @classmethod
  def from_config(cls, cfg) -> "Task":
    """The task as `cfg` (an ExperimentConfig: e.g. cfg.data.num_classes) configures it."""
    return cls(channels=max(cls.label_channels, 1))

  def __repr__(self):
    return f"{type(self).__name__}(name={self.name!r}, channels={self.channels})"

  def __eq__(self, other):
    return (type(self) is type(other) and self.channels == other.channels
            and self.output_bias == other.output_bias)

  def __hash__(self):
    return hash((type(self), self.channels, self.output_bias))

  @property
  def is_classification(self) -> bool:
    return self.activation == "logits"

  @property
  def higher_is_better(self) -> dict:
    """Every logged value of the task -> True when larger is better (the loss included)."""
    return {**self.primary_metrics, "loss": False}

  # ---- records and augmentation -------------------------------------------------------------
  @classmethod
  def decode(cls, raw: tf.Tensor) -> tf.Tensor:
    """raw [H, W, max(label_channels, 1)] of storage_dtype -> the decoded label."""
    return tf.cast(raw, tf.float32)

  def check_label(self, value: np.ndarray, num_classes: int) -> str | None:
    """A problem with one stored label map (numpy, as decoded), or None."""
    if not np.all(np.isfinite(value)):
      return f"{self.name} holds NaN or infinite values"
    return None

  described_as: ClassVar[str] = "value"  # what `described_values` returns, for reports

  def described_values(self, valid_values: np.ndarray) -> np.ndarray:
    """The per-pixel numbers a dataset report summarises (min/max/mean) for this task, from
    the valid pixels' label values [N, C]: the values themselves by default."""
    return valid_values.reshape(-1)

  @classmethod
  def zoom(cls, label: tf.Tensor, scale: tf.Tensor, depth_unit: str) -> tf.Tensor:
    """Augmentation zoomed the view in by `scale` (> 1: things look nearer)."""
    return label

  @classmethod
  def flip(cls, label: tf.Tensor) -> tf.Tensor:
    """Augmentation mirrored the map horizontally (already reversed): fix the values."""
    return label

  def random_label(self, rng: np.random.Generator, batch: int, height: int,
                   width: int) -> np.ndarray:
    """A random batch of labels in the decoded convention (tests and benchmarks)."""
    return rng.random((batch, height, width, max(self.label_channels, 1)), dtype=np.float32)

  # ---- losses --------------------------------------------------------------------------------
  def valid_mask(self, label, dtype="float32"):
    """[B, H, W, 1] mask (of `dtype`, the prediction's) of the pixels the loss and metrics
    use. Default: every pixel."""
    return ops.ones_like(label[..., :1], dtype=dtype)

  def valid_mask_np(self, label: np.ndarray) -> np.ndarray:
    """bool [B, H, W]: the numpy twin of `valid_mask` for labels [B, H, W, C]."""
    return np.ones(label.shape[:3], bool)

  def loss(self, label, pred):
    """Eq. 1 for this task -> (sum, count). Default: L1 over valid pixels and channels."""
    return losses.masked_l1(label, pred, self.valid_mask(label, pred.dtype))

  def distillation_loss(self, label, student, teacher, temperature: float):
    """Eq. 5 term: the student's prediction against the teacher's (which the caller has
    passed through stop_gradient, or not under --two_way) -> (sum, count).
    Default: mean |S - T| over the valid pixels."""
    return losses.masked_l1(teacher, student, self.valid_mask(label, student.dtype))

  # ---- metrics -------------------------------------------------------------------------------
  def metrics(self, role: str, legacy: bool = True, legacy_batch_size: int = 2) -> list:
    """Metric objects for (role, this task): the primary one and, if `legacy`, the legacy one
    where the task has one. Each carries `.role` and `.task`. Create them inside
    `strategy.scope()` under a tf.distribute strategy."""
    return [metrics_lib.AbsErrorMetric(role, self.name)]

  def metric_keys(self, role: str, legacy: bool = True) -> list:
    """The flat result keys of `metrics(role, legacy)`, e.g. ["teacher_depth_abs", ...]."""
    keys = list(self.primary_metrics) + (list(self.legacy_metrics) if legacy else [])
    return [f"{role}_{self.name}_{k}" for k in keys]

  def constant_fit(self) -> ConstantFit:
    """Accumulates the constant predictor's prediction from training labels."""
    return ConstantFit(self)

  # ---- outputs -------------------------------------------------------------------------------
  def serving_outputs(self, prediction) -> dict:
    """The SavedModel signature's named outputs for a prediction [B, H, W, channels]."""
    return {self.name: prediction[..., 0] if self.channels == 1 else prediction}

  def resize_prediction(self, prediction, size):
    """A prediction [B, h, w, channels] at the training size -> [B, size[0], size[1],
    channels] (the serving signatures answer at the input's size; `serving_outputs` is taken
    after this, so derived outputs such as class maps follow the resized values).

    Bilinear, the right interpolation for logits and continuous maps (`resize_method` is
    for labels, whose invalid markers must stay exact); unit vectors ("l2_normalize") are
    re-normalised afterwards. The dtype is kept."""
    resized = tf.image.resize(prediction, size, method="bilinear")
    if self.activation == "l2_normalize":
      resized = tf.math.l2_normalize(resized, axis=-1, epsilon=1e-12)
    return tf.cast(resized, prediction.dtype)

  def served_map(self, outputs: dict):
    """One image's named serving outputs (numpy, as a server returns them, without the batch
    axis) -> the map `colourise` takes, or None when `outputs` hold none of this task's."""
    if self.name not in outputs:
      return None
    return np.asarray(outputs[self.name], np.float32)

  def prediction_map(self, prediction: np.ndarray) -> np.ndarray:
    """One image's prediction [H, W, channels] -> the map saved in prediction files."""
    return (prediction[..., 0] if self.channels == 1 else prediction).astype(np.float32)

  def label_map(self, label: np.ndarray) -> np.ndarray:
    """One image's decoded label -> the map saved in prediction files."""
    return (label[..., 0] if label.ndim == 3 and label.shape[-1] == 1 else label).astype(
        np.float32)

  def colourise(self, value: np.ndarray, value_range: tuple | None = None) -> np.ndarray:
    """A map from `prediction_map`/`label_map` -> uint8 [H, W, 3] RGB for figures: a heat
    map (`heat`) over `value_range` (lo, hi), by default the map's 1st to 99th percentile
    (`display_range`); figures pass one range to every map of a row (one colour scale)."""
    lo, hi = value_range or self.display_range([value]) or (0.0, 1.0)
    return heat((value - lo) / max(hi - lo, 1e-12))

  # ---- figures (predict.py, the TensorBoard images) ------------------------------------------
  def shown_values(self, value: np.ndarray) -> np.ndarray:
    """The values of one map that its colour scale spans (flat); the valid ones."""
    return value[np.isfinite(value)].ravel()

  def display_range(self, maps) -> tuple | None:
    """One colour scale (lo, hi) for several maps of this task (a figure's row: label and
    predictions): the 1st and 99th percentile of their `shown_values`; None where the colours
    need no range (class maps, unit vectors) or no value is shown."""
    values = np.concatenate([self.shown_values(np.asarray(m, np.float32)) for m in maps] or
                            [np.zeros(0, np.float32)])
    if not values.size:
      return None
    lo, hi = np.percentile(values, (1, 99))
    return float(lo), float(max(hi, lo + 1e-6))

  def legend(self, class_names=()) -> list:
    """[(name, (r, g, b)), ...] of the colours a figure explains in a legend (class maps);
    empty when a colour scale says it (`display_range`)."""
    return []

  def error_map(self, prediction: np.ndarray, label: np.ndarray) -> np.ndarray:
    """One image's error per pixel, float32 [H, W] (NaN where the label is not valid), from
    `prediction_map` and `label_map`: the absolute difference (the norm of the difference for
    several channels)."""
    diff = np.asarray(prediction, np.float32) - np.asarray(label, np.float32)
    error = np.abs(diff) if diff.ndim == 2 else np.linalg.norm(diff, axis=-1)
    return np.where(self.valid_map(label), error, np.nan).astype(np.float32)

  def valid_map(self, label: np.ndarray) -> np.ndarray:
    """bool [H, W]: the valid pixels of one image's `label_map`."""
    return np.ones(np.shape(label)[:2], bool)


# a perceptually ordered dark-to-bright heat map (anchors close to matplotlib's inferno)
_HEAT_ANCHORS = np.array([[0, 0, 4], [66, 10, 104], [147, 38, 103], [221, 81, 58],
                          [252, 165, 10], [252, 255, 164]], np.float32)


def heat(unit: np.ndarray) -> np.ndarray:
  """Values in [0, 1] (clipped; NaN = not valid, black) -> uint8 [..., 3] heat-map colours."""
  unit = np.asarray(unit, np.float32)
  valid = np.isfinite(unit)
  position = np.clip(np.where(valid, unit, 0.0), 0.0, 1.0) * (len(_HEAT_ANCHORS) - 1)
  rgb = np.stack([np.interp(position, np.arange(len(_HEAT_ANCHORS)), _HEAT_ANCHORS[:, c])
                  for c in range(3)], -1)
  return np.where(valid[..., None], np.round(rgb), 0).astype(np.uint8)


class ZeroMarksInvalid(Task):
  """A task whose all-zero label vectors mark the pixels without a label (depth, normals)."""

  def valid_mask(self, label, dtype="float32"):
    return ops.cast(ops.any(ops.not_equal(label, 0), axis=-1, keepdims=True), dtype)

  def valid_mask_np(self, label):
    return np.any(label != 0, -1)

  def valid_map(self, label):
    label = np.asarray(label)
    return label != 0 if label.ndim == 2 else np.any(label != 0, -1)


class RegressionTask(Task):
  """A one-channel map regressed with L1 (keypoints, edges): every pixel is valid."""
