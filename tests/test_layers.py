import numpy as np
import pytest
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
      # BatchNorm with PyTorch's defaults (the fused kernel), and the Conv2D
      (L.batch_norm("bn_x"), (x.astype(np.float32),)),
      (L.Conv2D(5, 3, padding="same", name="conv_x"), (x.astype(np.float32),)),
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
  bn = layers["FusedBatchNormalization"].get_config()
  assert bn["momentum"] == 0.9 and bn["epsilon"] == 1e-5 and bn["name"] == "bn_x"


def test_pooling_layers_allow_jit():
  # issue 11: the switch pooling compiles under XLA, so Keras may jit a SegNet
  for layer in (L.MaxPoolWithArgmax(), L.MaxUnpool()):
    assert layer.supports_jit is True
    assert layer.__class__.from_config(layer.get_config()).supports_jit is True


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float16", "float64"])
@pytest.mark.parametrize("shape", [(2, 8, 12, 3), (3, 5, 7, 4), (1, 1, 3, 2)])
def test_switch_unpooling_equals_argmax_scatter_unpooling_with_ties(dtype, shape):
  """The switch pooling/unpooling the models use reproduces tf.nn.max_pool_with_argmax +
  tf.scatter_nd (issue 11) bit for bit: values, unpooled maps and gradients, on inputs drawn
  from 3 values (most windows hold ties; all-equal windows too), odd sizes included."""
  rng = np.random.default_rng(sum(shape))
  x = tf.cast(rng.integers(-1, 2, shape).astype(np.float32), dtype)
  x = tf.tensor_scatter_nd_update(x, [[0, 0, 0, 0]], tf.cast([-np.inf], dtype))
  ref_pooled, argmax = L.argmax_pool(x)
  pooled, switch = L.switch_pool(x)
  np.testing.assert_array_equal(pooled.numpy(), ref_pooled.numpy())
  values = tf.cast(rng.normal(size=pooled.shape).astype(np.float32), dtype)
  ref = L.scatter_unpool(values, argmax, x)
  got = L.MaxUnpool(dtype=dtype)(values, switch, x)
  assert got.dtype == ref.dtype and got.shape == ref.shape
  np.testing.assert_array_equal(got.numpy(), ref.numpy())
  # non-trivial: each window has one non-zero at most, and ties really occur
  assert np.sum(ref.numpy() != 0) == np.sum(values.numpy() != 0)
  assert np.any(np.asarray(switch) == 0) and np.any(np.asarray(switch) > 0)
  # gradients w.r.t. the pre-pool input (pooling) and the unpooled values
  weights = tf.cast(rng.normal(size=shape).astype(np.float32), dtype)
  grads = []
  for pool, unpool in ((L.argmax_pool, L.scatter_unpool),
                       (L.switch_pool, lambda v, s, like: L.MaxUnpool(dtype=dtype)(v, s, like))):
    with tf.GradientTape() as tape:
      tape.watch([x, values])
      p, index = pool(x)
      y = tf.reduce_sum(unpool(values * p, index, x) * weights)
    grads.append([g.numpy() for g in tape.gradient(y, [x, values])])
  for ref_grad, grad in zip(*grads):
    np.testing.assert_array_equal(grad, ref_grad)


def test_argmax_reference_does_not_compile_under_xla():
  # why the models no longer use it (keeps the other XLA test meaningful)
  compiled = tf.function(lambda x: L.argmax_pool(x), jit_compile=True)
  with pytest.raises(Exception, match="MaxPoolWithArgmax"):
    compiled.experimental_get_compiler_ir(tf.zeros((1, 4, 4, 1)))(stage="hlo")


def test_switch_pooling_compiles_under_xla_with_the_same_result():
  rng = np.random.default_rng(5)
  x = tf.constant(rng.integers(0, 3, (2, 6, 10, 4)).astype(np.float32))
  values = tf.constant(rng.normal(size=(2, 3, 5, 4)).astype(np.float32))

  def pool_unpool(x, values):
    pooled, switch = L.MaxPoolWithArgmax()(x)
    return pooled, L.MaxUnpool()(values, switch, x)

  eager = pool_unpool(x, values)
  compiled = tf.function(pool_unpool, jit_compile=True)
  # the HLO exists only if XLA compiled every op (the argmax kernel raised here)
  assert "HloModule" in compiled.experimental_get_compiler_ir(x, values)(stage="hlo")
  for a, b in zip(eager, compiled(x, values)):
    np.testing.assert_array_equal(a.numpy(), b.numpy())


def _bn_pair(dtype: str, channels: int):
  """(Keras' BatchNormalization, our FusedBatchNormalization) with the same random weights and
  moving statistics, computing in `dtype` (float32 variables)."""
  import keras
  rng = np.random.default_rng(3)
  pair = []
  for cls in (keras.layers.BatchNormalization, L.FusedBatchNormalization):
    layer = cls(momentum=0.9, epsilon=1e-5, dtype=keras.DTypePolicy(
        "float32" if dtype == "float32" else f"mixed_{dtype}"))
    layer.build((None, None, None, channels))
    pair.append(layer)
  for weights in zip(*(l.weights for l in pair)):
    value = rng.uniform(0.5, 2.0, weights[0].shape).astype(np.float32)
    for w in weights:
      w.assign(value)
  return pair


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_fused_batchnorm_equals_keras_batchnorm(dtype):
  """Training and inference outputs, moving statistics and gradients of the fused layer match
  Keras' own. float32: both compute in float32 in a different order (bound 1e-4 relative).
  bfloat16: both compute in float32 and round the output once to bfloat16, so they may differ
  by one bfloat16 step (2^-7 relative, with the float32 differences on top)."""
  keras_bn, fused_bn = _bn_pair(dtype, channels=5)
  x = tf.constant(np.random.default_rng(0).normal(2.0, 3.0, (2, 6, 8, 5)), tf.float32)
  upstream = tf.constant(np.random.default_rng(1).normal(size=(2, 6, 8, 5)), tf.float32)
  step = 2.0 ** -7 if dtype == "bfloat16" else 1e-4
  results = []
  for layer in (keras_bn, fused_bn):
    with tf.GradientTape() as tape:
      tape.watch(x)
      y = layer(x, training=True)
      loss = tf.reduce_sum(tf.cast(y, tf.float32) * upstream)
    grads = tape.gradient(loss, [x, layer.gamma, layer.beta])
    results.append((y, [v.numpy() for v in (layer.moving_mean, layer.moving_variance)], grads,
                    layer(x, training=False)))
  (y0, moving0, grads0, infer0), (y1, moving1, grads1, infer1) = results
  assert y1.dtype == y0.dtype == tf.as_dtype(dtype)
  for a, b in ((y0, y1), (infer0, infer1)):
    a, b = tf.cast(a, tf.float32).numpy(), tf.cast(b, tf.float32).numpy()
    np.testing.assert_array_less(np.abs(a - b), step * np.abs(a) + 1e-4)
  for a, b in zip(moving0, moving1):  # float32 statistics of the same float32 batch
    np.testing.assert_allclose(b, a, rtol=1e-5)
  for a, b in zip(grads0, grads1):
    a, b = tf.cast(a, tf.float32).numpy(), tf.cast(b, tf.float32).numpy()
    np.testing.assert_allclose(b, a, rtol=4 * step, atol=4 * step * np.abs(a).max())


def test_fused_batchnorm_leaves_float64_to_keras():
  keras_bn, fused_bn = (cls(dtype="float64") for cls in (
      __import__("keras").layers.BatchNormalization, L.FusedBatchNormalization))
  x = tf.constant(np.random.default_rng(1).normal(size=(2, 4, 4, 3)))
  np.testing.assert_array_equal(fused_bn(x, training=True).numpy(),
                                keras_bn(x, training=True).numpy())


@pytest.mark.parametrize("dtype,kernel_size,strides", [
    ("float32", 3, 1), ("float32", 1, 1), ("bfloat16", 3, 1), ("float32", 3, 2)])
def test_conv2d_gradients_equal_keras_conv2d(dtype, kernel_size, strides):
  """Our Conv2D (input gradient from a forward convolution) against Keras' Conv2D with the
  same weights: outputs equal, input and kernel gradients equal up to summation order (float32:
  1e-5 of the largest value; bfloat16 rounds each product and sum to 8 bits: 2^-6). Stride 2
  is Keras' own computation (exactly equal)."""
  import keras
  policy = keras.DTypePolicy("float32" if dtype == "float32" else f"mixed_{dtype}")
  rng = np.random.default_rng(0)
  x = tf.constant(rng.normal(size=(2, 9, 12, 6)), tf.float32)
  upstream = None
  results = []
  for cls in (keras.layers.Conv2D, L.Conv2D):
    layer = cls(7, kernel_size, strides=strides, padding="same", dtype=policy)
    layer.build(x.shape)
    layer.kernel.assign(rng.normal(size=layer.kernel.shape).astype(np.float32) if not results
                        else results[0][3])
    layer.bias.assign(np.arange(7, dtype=np.float32))
    with tf.GradientTape() as tape:
      tape.watch(x)
      y = layer(x)
      if upstream is None:
        upstream = tf.constant(np.random.default_rng(1).normal(size=y.shape), tf.float32)
      loss = tf.reduce_sum(tf.cast(y, tf.float32) * upstream)
    dx, dkernel = tape.gradient(loss, [x, layer.kernel])
    results.append((y, dx, dkernel, layer.kernel.numpy()))
  bound = 2.0 ** -6 if dtype == "bfloat16" else 1e-5
  for a, b in zip(results[0][:3], results[1][:3]):
    a, b = tf.cast(a, tf.float32).numpy(), tf.cast(b, tf.float32).numpy()
    if strides != 1:
      np.testing.assert_array_equal(b, a)
    np.testing.assert_allclose(b, a, rtol=0, atol=bound * np.abs(a).max())
