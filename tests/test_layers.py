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


def test_layers_round_trip_get_config():
  for layer in (L.MaxPoolWithArgmax(), L.MaxUnpool(), L.ResizeBilinear(8, 16), L.L2Normalize()):
    clone = layer.__class__.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    assert layer.supports_jit is not True or not isinstance(layer, (L.MaxPoolWithArgmax,
                                                                  L.MaxUnpool))
