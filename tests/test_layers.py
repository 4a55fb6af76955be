import numpy as np
import tensorflow as tf

from sdmtcnn_tf.models import layers as L


def test_unpool_puts_maxima_back_where_they_were():
  rng = np.random.default_rng(0)
  x = tf.constant(rng.normal(size=(2, 4, 6, 3)).astype(np.float32))
  pooled, argmax = L.MaxPoolWithArgmax()(x)
  assert pooled.shape == (2, 2, 3, 3)
  up = L.MaxUnpool()(pooled, argmax, x).numpy()
  xn = x.numpy()
  for b in range(2):
    for i in range(2):
      for j in range(3):
        for c in range(3):
          window = xn[b, 2 * i:2 * i + 2, 2 * j:2 * j + 2, c]
          got = up[b, 2 * i:2 * i + 2, 2 * j:2 * j + 2, c]
          k = np.argmax(window)
          expected = np.zeros_like(window)
          expected.flat[k] = window.flat[k]
          np.testing.assert_allclose(got, expected)


def test_unpool_gradient_flows_to_pooled_values():
  x = tf.random.normal((1, 4, 4, 2), seed=1)
  pooled, argmax = L.MaxPoolWithArgmax()(x)
  with tf.GradientTape() as tape:
    tape.watch(pooled)
    y = tf.reduce_sum(L.MaxUnpool()(pooled, argmax, x) * 2.0)
  np.testing.assert_allclose(tape.gradient(y, pooled).numpy(), 2.0)


def _round_trip_cases():
  """(layer built with non-default arguments, its call inputs) for every custom layer."""
  rng = np.random.default_rng(2)
  x = rng.normal(size=(2, 6, 10, 4))
  pooled, argmax = L.MaxPoolWithArgmax(dtype="float64")(tf.constant(x))
  return [
      (L.MaxPoolWithArgmax(name="pool_x", dtype="float64", trainable=False), (x,)),
      (L.MaxUnpool(name="unpool_x", dtype="float64", trainable=False),
       (pooled.numpy(), argmax.numpy(), x)),
      (L.L2Normalize(name="unit_x", dtype="float64", trainable=False), (x,)),
      # the only custom-configured layer with weights: BatchNorm with PyTorch's defaults
      (L.batch_norm("bn_x"), (x.astype(np.float32),)),
  ]


def test_layers_round_trip_get_config_and_outputs():
  for layer, inputs in _round_trip_cases():
    first = layer(*inputs)  # builds the layer (and its weights, if any)
    config = layer.get_config()
    clone = layer.__class__.from_config(config)
    assert clone.get_config() == config, type(layer).__name__
    clone(*inputs)
    weights = layer.get_weights()
    if weights:  # random statistics, so that equal outputs mean the weights really were used
      weights = [np.random.default_rng(3).random(w.shape).astype(w.dtype) + 0.5 for w in weights]
      layer.set_weights(weights)
      first = layer(*inputs)
    clone.set_weights(weights)
    second = clone(*inputs)
    first, second = tf.nest.flatten(first), tf.nest.flatten(second)
    assert len(first) == len(second)
    for a, b in zip(first, second):
      assert a.dtype == b.dtype and a.shape == b.shape, type(layer).__name__
      np.testing.assert_array_equal(a.numpy(), b.numpy())
  # the non-default arguments really are in the configs
  layers = {type(layer).__name__: layer for layer, _ in _round_trip_cases()}
  assert layers["L2Normalize"].get_config()["trainable"] is False
  bn = layers["BatchNormalization"].get_config()
  assert bn["momentum"] == 0.9 and bn["epsilon"] == 1e-5 and bn["name"] == "bn_x"


def test_pooling_layers_turn_off_jit():
  for layer in (L.MaxPoolWithArgmax(), L.MaxUnpool()):
    assert layer.supports_jit is False
    assert layer.__class__.from_config(layer.get_config()).supports_jit is False
