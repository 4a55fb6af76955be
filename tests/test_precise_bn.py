"""Precise BatchNorm re-estimates the moving statistics from training-mode batch statistics."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from sdmtcnn_tf import precise_bn
from sdmtcnn_tf.config import ExperimentConfig
from sdmtcnn_tf.models.build import build_network


def test_moving_statistics_become_the_average_batch_statistics():
  cfg = ExperimentConfig.from_flat(height=32, width=32, width_multiplier=0.125,
                                   num_classes=5).validate()
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


def test_deep_batchnorms_use_training_mode_statistics_of_their_inputs():
  """recalibrate measures every BatchNorm in ONE training-mode pass per batch: a deep layer's
  input is computed with the upstream BatchNorms normalising by their batch statistics (not
  sequentially, with the upstream layers in inference mode on their new moving statistics)."""
  cfg = ExperimentConfig.from_flat(height=32, width=32, width_multiplier=0.125,
                                   num_classes=5).validate()
  model = build_network(cfg).model
  rng = np.random.default_rng(1)
  images = [rng.random((2, 32, 32, 3)).astype(np.float32) for _ in range(3)]
  ds = tf.data.Dataset.from_tensor_slices((np.concatenate(images), np.zeros(6))).batch(2)
  assert precise_bn.recalibrate(model, ds, num_batches=3) == 3
  names = ("enc5_3_bn", "semseg_dec1_2_bn")  # last encoder BN, last decoder BN of a task
  got = {n: (model.get_layer(n).moving_mean.numpy().copy(),
             model.get_layer(n).moving_variance.numpy().copy()) for n in names}
  # (the probes below run in training mode, which moves the statistics again: read them first)
  for name in names:
    probe = keras.Model(model.inputs, model.get_layer(name).input)
    inputs = [probe(x, training=True).numpy().astype(np.float64) for x in images]
    mean = np.mean([np.mean(x, axis=(0, 1, 2)) for x in inputs], 0)
    variance = np.mean([np.var(x, axis=(0, 1, 2)) for x in inputs], 0)
    np.testing.assert_allclose(got[name][0], mean, rtol=1e-4, atol=1e-5, err_msg=name)
    np.testing.assert_allclose(got[name][1], variance, rtol=1e-4, atol=1e-5, err_msg=name)
