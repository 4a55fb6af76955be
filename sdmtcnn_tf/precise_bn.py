"""Precise BatchNorm: re-estimate the moving statistics after training.

During training each BatchNorm normalises with the statistics of its own batch, while the
moving averages that evaluation uses trail the weights. With small batches and a high learning
rate the two disagree (on the synthetic smoke run: depth abs 0.83 m with the moving averages,
0.57 m with batch statistics). This pass runs the trained network in training mode over
`num_batches` training batches, averages each BatchNorm's per-batch mean and variance, and
writes them into the moving statistics (PreciseBN, Wu & Johnson 2021). Weights are unchanged.
"""

from __future__ import annotations

import keras
import tensorflow as tf


def _trainable_batchnorms(model: keras.Model) -> list:
  """BatchNorm layers of `model`'s own graph (frozen sub-models such as a distilled teacher are
  skipped)."""
  found = []
  for layer in model.layers:
    if isinstance(layer, keras.layers.BatchNormalization) and layer.trainable:
      found.append(layer)
  return found


def recalibrate(model: keras.Model, dataset: tf.data.Dataset, num_batches: int) -> int:
  """Replaces the moving statistics of `model`'s BatchNorm layers by their average over
  `num_batches` batches of `dataset` ((image, labels) elements). Returns the batches used."""
  layers = _trainable_batchnorms(model)
  if not layers or num_batches <= 0:
    return 0
  probe = keras.Model(model.inputs, [layer.input for layer in layers])
  sums = [None] * len(layers)
  used = 0
  for image, _ in dataset.take(num_batches):
    inputs = probe(image, training=True)
    inputs = inputs if isinstance(inputs, (list, tuple)) else [inputs]
    for i, x in enumerate(inputs):
      x = tf.cast(x, tf.float32)
      mean, variance = tf.nn.moments(x, axes=[0, 1, 2])
      sums[i] = (mean, variance) if sums[i] is None else (sums[i][0] + mean,
                                                         sums[i][1] + variance)
    used += 1
  for layer, (mean, variance) in zip(layers, sums):
    layer.moving_mean.assign(mean / used)
    layer.moving_variance.assign(variance / used)
  return used
