"""Precise BatchNorm re-estimates the moving statistics from training-mode batch statistics."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from sdmtcnn_tf import precise_bn
from sdmtcnn_tf.config import ExperimentConfig
from sdmtcnn_tf.models.build import build_network


def test_moving_statistics_become_the_average_batch_statistics():
  cfg = ExperimentConfig(height=32, width=32, width_multiplier=0.125, num_classes=5).validate()
  model = build_network(cfg).model
  rng = np.random.default_rng(0)
  images = [rng.random((2, 32, 32, 3)).astype(np.float32) for _ in range(3)]
  ds = tf.data.Dataset.from_tensor_slices((np.concatenate(images), np.zeros(6))).batch(2)
  weights_before = [w.numpy().copy() for w in model.trainable_weights]
  assert precise_bn.recalibrate(model, ds, num_batches=5) == 3
  conv = keras.Model(model.inputs, model.get_layer("enc1_1_conv").output)
  means = [np.mean(conv(x).numpy(), axis=(0, 1, 2)) for x in images]
  variances = [np.var(conv(x).numpy(), axis=(0, 1, 2)) for x in images]
  bn = model.get_layer("enc1_1_bn")
  np.testing.assert_allclose(bn.moving_mean.numpy(), np.mean(means, 0), rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(bn.moving_variance.numpy(), np.mean(variances, 0), rtol=1e-4,
                             atol=1e-6)
  for before, after in zip(weights_before, model.trainable_weights):
    np.testing.assert_array_equal(before, after.numpy())
