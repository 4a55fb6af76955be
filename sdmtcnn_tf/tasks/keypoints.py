"""2-D keypoint heat maps (Taskonomy keypoints2d)."""

from __future__ import annotations

from sdmtcnn_tf.tasks.base import RegressionTask


class Keypoints(RegressionTask):
  """Labels float32 [H, W, 1]: heat map in [0, 1] (stored float16). Outputs linear."""

  name = "keypoints"
