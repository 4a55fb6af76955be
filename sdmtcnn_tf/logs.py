"""Log noise control for the CLIs."""

from __future__ import annotations


def quiet_logs() -> None:
  """Hides TensorFlow's INFO chatter (SavedModel writing, retracing) but keeps warnings."""
  import tensorflow as tf
  from absl import logging
  logging.set_verbosity(logging.WARNING)
  tf.get_logger().setLevel("ERROR")
