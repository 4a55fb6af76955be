"""Texture edges (Taskonomy edge_texture)."""

from __future__ import annotations

from sdmtcnn_tf.tasks.base import RegressionTask


class Edges(RegressionTask):
  """Labels float32 [H, W, 1]: edge strength in [0, 1] (stored float16). Outputs linear."""

  name = "edges"
