"""Semantic segmentation: int class ids, cross-entropy, softened-logit distillation, mIoU."""

from __future__ import annotations

import numpy as np
import tensorflow as tf
from keras import ops

from sdmtcnn_tf import losses
from sdmtcnn_tf import metrics as metrics_lib
from sdmtcnn_tf.tasks.base import IGNORE_LABEL, ConstantFit, Task

# Display colours of the first 20 classes (RGB); more classes cycle through them.
PALETTE = np.array([
    [128, 64, 128], [70, 70, 70], [153, 153, 153], [107, 142, 35], [220, 20, 60],
    [0, 0, 142], [250, 170, 30], [220, 220, 0], [152, 251, 152], [70, 130, 180],
    [119, 11, 32], [0, 60, 100], [255, 127, 14], [148, 103, 189], [140, 86, 75],
    [227, 119, 194], [127, 127, 127], [188, 189, 34], [23, 190, 207], [255, 187, 120]],
    np.uint8)


class MajorityClass(ConstantFit):
  """The constant segmentation predictor: the most frequent training class (as logits)."""

  def __init__(self, task):
    super().__init__(task)
    self.counts = np.zeros(task.channels, np.int64)

  def update(self, label):
    self.counts += np.bincount(label[label >= 0].ravel(),
                               minlength=self.task.channels)[:self.task.channels]

  def prediction(self):
    logits = np.full(self.task.channels, -10.0, np.float32)
    logits[int(np.argmax(self.counts))] = 10.0
    return logits


class SemanticSegmentation(Task):
  """Labels int32 [H, W]: class ids 0..C-1, IGNORE_LABEL (-1) = not labelled (stored int16).
  Outputs logits [B, H, W, C]."""

  name = "semseg"
  activation = "logits"
  storage_dtype = np.int16
  label_channels = 0
  resize_method = "nearest"
  primary_metrics = {"pixacc": True, "miou": True}
  legacy_metrics = ("pixacc_legacy", "miou_legacy")
  headline = "miou"
  uses_classes = True

  def __init__(self, num_classes: int = 13):
    super().__init__(channels=num_classes)

  @classmethod
  def from_config(cls, cfg):
    return cls(num_classes=cfg.data.num_classes)

  @classmethod
  def decode(cls, raw):
    return tf.cast(raw[..., 0], tf.int32)

  def check_label(self, value, num_classes):
    bad = (value < IGNORE_LABEL) | (value >= num_classes)
    if np.any(bad):
      return f"semseg values {np.unique(value[bad])[:5].tolist()} outside -1..{num_classes - 1}"
    return None

  def random_label(self, rng, batch, height, width):
    return rng.integers(IGNORE_LABEL, self.channels, (batch, height, width), dtype=np.int32)

  def valid_mask(self, label, dtype="float32"):
    return ops.expand_dims(ops.cast(label >= 0, dtype), -1)

  def valid_mask_np(self, label):
    return label.reshape(label.shape[:3]) >= 0

  def loss(self, label, pred):
    return losses.semseg_cross_entropy(label, pred)

  def distillation_loss(self, label, student, teacher, temperature):
    return losses.semseg_kd(label, student, teacher, temperature)

  def metrics(self, role, legacy=True, legacy_batch_size=2):
    out = [metrics_lib.SemsegMetric(role, self.name, self.channels)]
    if legacy:
      out.append(metrics_lib.SemsegLegacyMetric(role, self.name, self.channels))
    return out

  def constant_fit(self):
    return MajorityClass(self)

  def serving_outputs(self, prediction):
    return {"semseg_logits": prediction,
            "semseg_labels": tf.argmax(prediction, axis=-1, output_type=tf.int32)}

  def prediction_map(self, prediction):
    return np.argmax(prediction, -1).astype(np.int32)

  def served_map(self, outputs):
    if "semseg_labels" in outputs:
      return np.asarray(outputs["semseg_labels"], np.int32)
    if "semseg_logits" in outputs:
      return self.prediction_map(np.asarray(outputs["semseg_logits"]))
    return None

  def label_map(self, label):
    return label.astype(np.int32)

  def colourise(self, value, value_range=None):
    """Class ids -> PALETTE colours (fixed: a class has one colour in every figure); ignore
    (-1) black."""
    value = np.asarray(value).astype(np.int64)
    rgb = PALETTE[np.maximum(value, 0) % len(PALETTE)]
    return np.where((value < 0)[..., None], np.uint8(0), rgb)

  def display_range(self, maps):
    return None

  def legend(self, class_names=()):
    names = list(class_names) or [f"class {i}" for i in range(self.channels)]
    return [(name, tuple(int(c) for c in PALETTE[i % len(PALETTE)]))
            for i, name in enumerate(names[:self.channels])]

  def valid_map(self, label):
    return np.asarray(label) >= 0

  def error_map(self, prediction, label):
    """1 where the class is wrong, 0 where right, NaN where not labelled."""
    wrong = (np.asarray(prediction) != np.asarray(label)).astype(np.float32)
    return np.where(self.valid_map(label), wrong, np.nan).astype(np.float32)
