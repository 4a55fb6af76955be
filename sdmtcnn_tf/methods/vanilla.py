"""Baseline-1: the multi-task network alone, trained on labels (Eq. 2). No student."""

from __future__ import annotations

from sdmtcnn_tf.methods.base import Method


class Vanilla(Method):
  """Its default search space is Method's: the learning rate alone."""

  name = "vanilla"
  distills = ("none",)
  roles = ("teacher",)
