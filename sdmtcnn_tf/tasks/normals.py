"""Surface normals: unit vectors, cosine loss, angle statistics."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from sdmtcnn_tf import losses
from sdmtcnn_tf import metrics as metrics_lib
from sdmtcnn_tf.tasks.base import ConstantFit, ZeroMarksInvalid


class MeanDirection(ConstantFit):
  """The constant normals predictor: the mean valid training normal, unit-normalised."""

  def prediction(self):
    mean = super().prediction()
    return mean / max(float(np.linalg.norm(mean)), 1e-12)


class SurfaceNormals(ZeroMarksInvalid):
  """Labels float32 [H, W, 3]: unit vectors (x right, y up, z towards the camera), all-zero =
  invalid (stored float16). Outputs unit vectors [B, H, W, 3]."""

  name = "normals"
  activation = "l2_normalize"
  storage_dtype = np.float16
  label_channels = 3
  resize_method = "nearest"  # interpolated normals would not be unit vectors
  primary_metrics = {"mean_deg": False, "median_deg": False, "within_11_25": True,
                     "within_22_5": True, "within_30": True, "cos": True}
  legacy_metrics = ("mean_deg_legacy", "median_deg_legacy", "within_11_25_legacy",
                    "within_22_5_legacy", "within_30_legacy")
  headline = "mean_deg"

  @classmethod
  def flip(cls, label):
    return label * tf.constant([-1.0, 1.0, 1.0], label.dtype)  # x points the other way

  described_as = "|n|"

  def described_values(self, valid_values):
    return np.linalg.norm(valid_values, axis=-1)

  def random_label(self, rng, batch, height, width):
    n = rng.normal(size=(batch, height, width, 3)).astype(np.float32)
    return n / np.linalg.norm(n, axis=-1, keepdims=True)

  def loss(self, label, pred):
    return losses.normals_cosine(label, pred, self.valid_mask(label, pred.dtype))

  def metrics(self, role, legacy=True, legacy_batch_size=2):
    out = [metrics_lib.NormalsMetric(role, self.name)]
    if legacy:
      out.append(metrics_lib.NormalsLegacyMetric(role, self.name, legacy_batch_size))
    return out

  def constant_fit(self):
    return MeanDirection(self)

  def colourise(self, value, value_range=None):
    return ((np.clip(value, -1.0, 1.0) + 1.0) * 127.5).astype(np.uint8)  # x, y, z as R, G, B

  def display_range(self, maps):
    return None

  def error_map(self, prediction, label):
    """The angle between predicted and true normal, degrees."""
    cos = np.sum(np.asarray(prediction, np.float32) * np.asarray(label, np.float32), -1)
    norms = np.linalg.norm(prediction, axis=-1) * np.linalg.norm(label, axis=-1)
    angle = np.degrees(np.arccos(np.clip(cos / np.maximum(norms, 1e-12), -1.0, 1.0)))
    return np.where(self.valid_map(label), angle, np.nan).astype(np.float32)
