"""Distribution strategy and precision policy selection."""

from __future__ import annotations

import keras
import tensorflow as tf

from sdmtcnn_tf.config import ExperimentConfig


def make_strategy(cfg: ExperimentConfig) -> tf.distribute.Strategy:
  """default: the current (single-device) strategy; mirrored: MirroredStrategy over every
  visible GPU, or every logical CPU device when there is no GPU (how the tests run it)."""
  if cfg.run.distribution == "mirrored":
    gpus = tf.config.list_logical_devices("GPU")
    devices = [d.name for d in (gpus or tf.config.list_logical_devices("CPU"))]
    return tf.distribute.MirroredStrategy(devices)
  return tf.distribute.get_strategy()


def set_precision(cfg: ExperimentConfig) -> None:
  """Sets Keras' global dtype policy from --mixed_precision (off = float32)."""
  policy = cfg.run.mixed_precision
  keras.mixed_precision.set_global_policy("float32" if policy == "off" else policy)
