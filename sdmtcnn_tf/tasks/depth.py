"""Depth (metres) or disparity: L1 over valid pixels, abs/rel errors."""

from __future__ import annotations

import numpy as np

from sdmtcnn_tf import metrics as metrics_lib
from sdmtcnn_tf.tasks.base import ZeroMarksInvalid


class Depth(ZeroMarksInvalid):
  """Labels float32 [H, W, 1] in metres or disparity (the manifest's depth_unit), 0 = invalid
  (stored float32: depth is never quantised); Taskonomy under --taskonomy_label_units=standley
  trains on Standley's standardised values, negative too (data/taskonomy_units.py). Outputs
  linear [B, H, W, 1]."""

  name = "depth"
  storage_dtype = np.float32
  label_channels = 0
  resize_method = "nearest"  # invalid (0) pixels must stay exactly 0
  primary_metrics = {"abs": False, "rel": False}
  legacy_metrics = ("abs_legacy", "rel_legacy")
  headline = "abs"

  @classmethod
  def from_config(cls, cfg):
    return cls(channels=1, output_bias=cfg.model.depth_bias_init)

  def check_label(self, value, num_classes):
    if np.any(value < 0):
      return "depth holds negative values"
    return super().check_label(value, num_classes)

  @classmethod
  def zoom(cls, label, scale, depth_unit):
    # the scene looks `scale` times closer: depth shrinks, disparity grows (MTAN)
    return label / scale if depth_unit == "metres" else label * scale

  def random_label(self, rng, batch, height, width):
    depth = rng.uniform(0.5, 5.0, (batch, height, width, 1)).astype(np.float32)
    return np.where(rng.random(depth.shape) < 0.1, np.float32(0), depth)

  def metrics(self, role, legacy=True, legacy_batch_size=2):
    out = [metrics_lib.DepthMetric(role, self.name)]
    if legacy:
      out.append(metrics_lib.DepthLegacyMetric(role, self.name, legacy_batch_size))
    return out

  def shown_values(self, value):
    return value[np.isfinite(value) & (value != 0)].ravel()

  def colourise(self, value, value_range=None):
    out = super().colourise(value, value_range)
    return np.where((value != 0)[..., None], out, np.uint8(0))  # 0 = no depth: black
