"""Building blocks: conv-BN-ReLU, max-pool with switches, SegNet max-unpooling.

TensorFlow backend only. The pooling keeps each window's switch (where its maximum was) and the
unpooling puts values back there with a reshape, splits and selects: equal to
`tf.nn.max_pool_with_argmax` + `tf.scatter_nd` (kept below as the reference), ties included,
and XLA-compilable (the argmax kernel has no XLA version). `Conv2D` takes its input gradient
from a forward convolution and `FusedBatchNormalization` runs TensorFlow's fused kernel: both
are Keras' layers (same weights and config) computed faster on CPUs (BUILD_NOTES.md,
"Performance").
"""

from __future__ import annotations

import contextlib
import contextvars

import keras
import tensorflow as tf
from keras import layers

# --kernel_initializer of the network being built (build_network sets it, `kernel_initializer`
# reads it); outside a build, MTAN's
_KERNEL_INITIALIZER = contextvars.ContextVar("kernel_initializer", default="xavier_normal")


@contextlib.contextmanager
def kernel_initializer_scope(kind: str):
  """Within the block, MTAN's convolutions (`kernel_initializer`) initialise as `kind`."""
  kernel_initializer(kind)  # an unknown kind fails here, before anything is built
  token = _KERNEL_INITIALIZER.set(kind)
  try:
    yield
  finally:
    _KERNEL_INITIALIZER.reset(token)


def kernel_initializer(kind: str | None = None) -> keras.initializers.Initializer:
  """A new kernel initializer for one of MTAN's convolutions (conv-BN-ReLU and the task heads),
  of `kind` (default: the build's --kernel_initializer):
    xavier_normal  PyTorch's nn.init.xavier_normal_, MTAN's init: a normal of std
                   sqrt(2 / (fan_in + fan_out)), not truncated;
    glorot_normal  Keras' GlorotNormal: the same std from a normal truncated at 2 of its own
                   standard deviations (no value beyond 2.27 sqrt(2 / (fan_in + fan_out))).
  fan_in = k*k*Cin and fan_out = k*k*Cout, as both libraries compute them for a conv kernel."""
  kind = kind or _KERNEL_INITIALIZER.get()
  if kind == "xavier_normal":
    return keras.initializers.VarianceScaling(scale=1.0, mode="fan_avg",
                                              distribution="untruncated_normal")
  if kind == "glorot_normal":
    return keras.initializers.GlorotNormal()
  raise ValueError(f"--kernel_initializer={kind}: expected xavier_normal or glorot_normal")


def full_precision() -> str:
  """The dtype of the network's "full-precision" outputs (heads, hint features): the variable
  dtype of the global dtype policy. float32 under float32, mixed_float16 and mixed_bfloat16;
  float64 when the policy (or, before any policy is set, `keras.backend.floatx()`) is float64,
  which the numerics tests use to take float32 round-off out of exact comparisons."""
  return keras.mixed_precision.global_policy().variable_dtype


def as_full_precision(x, name: str):
  """`x` cast to `full_precision()` by an identity layer named `name` (the outputs that losses
  and serving read stay float32 under mixed precision)."""
  return layers.Activation("linear", dtype=full_precision(), name=name)(x)


@tf.custom_gradient
def conv_same_forward_input_grad(x, kernel):
  """`tf.nn.conv2d(x, kernel, 1, "SAME")` for an odd square kernel, whose input gradient is a
  forward convolution: dx = conv2d(dy, kernel rotated 180 degrees with in/out channels
  swapped, SAME), the same sum as Conv2DBackpropInput in another order.

  TensorFlow's CPU Conv2DBackpropInput (Eigen) runs 1.2-2.1x slower than the forward kernel
  on the same FLOPs (BUILD_NOTES "Conv input gradient"); the kernel gradient stays
  Conv2DBackpropFilter. x: [B, H, W, Cin]; kernel: [k, k, Cin, Cout] -> [B, H, W, Cout].
  """
  y = tf.nn.conv2d(x, kernel, 1, "SAME")

  def grad(dy):
    rotated = tf.transpose(tf.reverse(kernel, [0, 1]), [0, 1, 3, 2])
    dx = tf.nn.conv2d(dy, rotated, 1, "SAME")
    dkernel = tf.raw_ops.Conv2DBackpropFilter(input=x, filter_sizes=tf.shape(kernel),
                                              out_backprop=dy, strides=[1, 1, 1, 1],
                                              padding="SAME")
    return dx, dkernel

  return y, grad


@keras.saving.register_keras_serializable(package="sdmtcnn_tf")
class Conv2D(layers.Conv2D):
  """Keras' Conv2D whose stride-1 SAME convolutions with an odd square kernel take their input
  gradient from a forward convolution (`conv_same_forward_input_grad`). Same weights and
  config as Keras' layer; every other configuration is Keras' own computation."""

  def convolution_op(self, inputs, kernel):
    k_h, k_w = self.kernel_size
    if (k_h == k_w and k_h % 2 == 1 and tuple(self.strides) == (1, 1)
        and tuple(self.dilation_rate) == (1, 1) and self.padding == "same"
        and self.groups == 1 and self.data_format == "channels_last"):
      return conv_same_forward_input_grad(inputs, tf.cast(kernel, inputs.dtype))
    return super().convolution_op(inputs, kernel)


@keras.saving.register_keras_serializable(package="sdmtcnn_tf")
class FusedBatchNormalization(layers.BatchNormalization):
  """Keras' BatchNormalization computed by TensorFlow's fused kernel (`FusedBatchNormV3` and its
  gradient): one pass over the activations each way instead of Keras' moments + normalise
  arithmetic, and bf16/fp16 activations are read as they are (the kernel accumulates in
  float32) instead of being cast to float32 and back.

  Same weights, config and moving-statistics rule as its parent (biased batch variance,
  `moving = momentum * moving + (1 - momentum) * batch`), so checkpoints of either load in the
  other. Used for [B, H, W, C] float32/bfloat16/float16 input on the channel axis; anything
  else (masks, renorm, synchronized statistics, float64) is the parent's computation.
  """

  _FUSED_DTYPES = ("float32", "bfloat16", "float16")

  def _fused(self, inputs, mask) -> bool:
    return (mask is None and not self.renorm and not self.synchronized and self.scale
            and self.center and len(inputs.shape) == 4 and self.axis in (3, -1)
            and keras.backend.standardize_dtype(self.compute_dtype) in self._FUSED_DTYPES)

  def call(self, inputs, training=None, mask=None):
    if not self._fused(inputs, mask):
      return super().call(inputs, training=training, mask=mask)
    x = tf.cast(inputs, self.compute_dtype)
    gamma, beta = tf.cast(self.gamma, tf.float32), tf.cast(self.beta, tf.float32)
    if training and self.trainable:
      y, mean, unbiased_variance = tf.compat.v1.nn.fused_batch_norm(
          x, gamma, beta, epsilon=self.epsilon, data_format="NHWC", is_training=True)
      # the kernel returns the Bessel-corrected variance; Keras' moving statistics use the
      # biased one (what normalised the batch)
      count = tf.cast(tf.size(x) // tf.shape(x)[-1], tf.float32)
      variance = unbiased_variance * (count - 1.0) / tf.maximum(count, 2.0)
      moving_mean = tf.cast(self.moving_mean, tf.float32)
      moving_variance = tf.cast(self.moving_variance, tf.float32)
      self.moving_mean.assign(tf.cast(
          moving_mean * self.momentum + mean * (1.0 - self.momentum), self.moving_mean.dtype))
      self.moving_variance.assign(tf.cast(
          moving_variance * self.momentum + variance * (1.0 - self.momentum),
          self.moving_variance.dtype))
    else:
      y, _, _ = tf.compat.v1.nn.fused_batch_norm(
          x, gamma, beta, mean=tf.cast(self.moving_mean, tf.float32),
          variance=tf.cast(self.moving_variance, tf.float32), epsilon=self.epsilon,
          data_format="NHWC", is_training=False)
    return y


def batch_norm(name: str, sync_batchnorm: bool = False) -> layers.BatchNormalization:
  """BatchNorm with PyTorch's defaults (momentum 0.1 = Keras 0.9, eps 1e-5), as MTAN trains,
  computed by the fused kernel (`FusedBatchNormalization`).

  Keras' default momentum 0.99 leaves the moving statistics far from the batch statistics for
  the first few hundred steps, which wrecks evaluation of short runs.
  """
  return FusedBatchNormalization(momentum=0.9, epsilon=1e-5, synchronized=sync_batchnorm,
                                 name=name)


def conv_bn_relu(x, filters: int, name: str, sync_batchnorm: bool = False):
  """3x3 conv (with bias; kernel init `kernel_initializer()`, by default MTAN's untruncated
  Xavier normal; bias 0) -> BatchNorm -> ReLU.

  Args:
    x: [B, H, W, Cin] tensor.
  Returns:
    [B, H, W, filters] tensor.
  """
  x = Conv2D(filters, 3, padding="same", kernel_initializer=kernel_initializer(),
             name=f"{name}_conv")(x)
  x = batch_norm(f"{name}_bn", sync_batchnorm)(x)
  return layers.ReLU(name=f"{name}_relu")(x)


def _pad_to_even(x, fill=float("-inf")):
  """x [B, H, W, C] padded at the bottom/right with `fill` to even H and W (-inf: max-pooling's
  SAME padding of a 2x2 stride-2 window; a padded position never wins, ties go to the real
  one, which comes first in row-major order)."""
  pad_h = -x.shape[1] % 2 if x.shape[1] is not None else None
  pad_w = -x.shape[2] % 2 if x.shape[2] is not None else None
  if pad_h is None or pad_w is None:  # dynamic size: pad what the runtime shape needs
    shape = tf.shape(x)
    pad_h, pad_w = shape[1] % 2, shape[2] % 2
  elif pad_h == 0 and pad_w == 0:
    return x
  return tf.pad(x, [[0, 0], [0, pad_h], [0, pad_w], [0, 0]], constant_values=fill)


def _corners(x):
  """The 4 positions of each 2x2 window of x [B, H, W, C] (H, W even) in row-major order:
  4 tensors [B, H/2, W/2, C] (top-left, top-right, bottom-left, bottom-right).

  Reshaping to [B, H/2, 2, W/2, 2C] costs nothing (the window's row is axis 2, its column the
  half of the last axis), and the splits copy contiguous blocks: several times faster on CPU
  than strided slices or space_to_depth."""
  shape = tf.shape(x)
  rows = tf.reshape(x, [shape[0], shape[1] // 2, 2, shape[2] // 2, 2 * _dim(x, 3)])
  top, bottom = tf.unstack(rows, 2, axis=2)
  return (*tf.split(top, 2, axis=3), *tf.split(bottom, 2, axis=3))


def _select(switch, corners):
  """The corner `switch` (uint8 0..3) picks at each position: [B, h, w, C]."""
  c00, c01, c10, c11 = corners
  return tf.where(switch == 0, c00, tf.where(switch == 1, c01, tf.where(switch == 2, c10, c11)))


def _spread(values, switch):
  """values [B, h, w, C] put at their switch positions of zero 2x2 windows: [B, 2h, 2w, C]
  (the inverse of _corners' layout)."""
  zeros = tf.zeros_like(values)
  p00, p01, p10, p11 = (tf.where(switch == k, values, zeros) for k in range(4))
  rows = tf.stack([tf.concat([p00, p01], axis=3), tf.concat([p10, p11], axis=3)], axis=2)
  shape = tf.shape(values)
  return tf.reshape(rows, [shape[0], 2 * shape[1], 2 * shape[2], _dim(values, 3)])


def switch_pool(x):
  """2x2 stride-2 max-pool that also returns each window's switch, XLA-compilable.

  x [B, H, W, C] -> (pooled [B, ceil(H/2), ceil(W/2), C], switch uint8 of the same shape: the
  position of the window's maximum, 0..3 in row-major order (top-left, top-right, bottom-left,
  bottom-right)). Among equal values the first in row-major order wins, exactly as
  `tf.nn.max_pool_with_argmax` picks (its kernels scan the window row by row and keep the
  first maximum), so `switch_unpool` reproduces `scatter_unpool` bit for bit, ties included.
  The gradient of `pooled` goes to the switch position only (MaxPoolGradWithArgmax's rule).
  NaN inputs are not supported (neither version defines them).
  """
  height, width = _size(x)
  even = _pad_to_even(x)
  pooled = tf.nn.max_pool2d(even, 2, 2, "VALID")
  c00, c01, c10, c11 = _corners(even)
  # the first corner equal to the maximum: n0 * (1 + n1 * (1 + n2)) with n_k = corner k differs
  # (0 if corner 0 is it, else 1 if corner 1 is, else 2 if corner 2 is, else 3)
  n0, n1, n2 = (tf.cast(tf.not_equal(c, pooled), tf.uint8) for c in (c00, c01, c10))
  switch = n0 * (1 + n1 * (1 + n2))

  @tf.custom_gradient
  def pool(x):
    def grad(upstream):  # the pooled gradient back at the switch positions: an unpooling
      return _spread(upstream, switch)[:, :height, :width, :]
    return pooled, grad

  return pool(x), switch


def switch_unpool(values, switch, height, width):
  """SegNet unpooling from switches: values [B, h, w, C] and switch uint8 [B, h, w, C] from
  `switch_pool` -> [B, height, width, C], zero except at each window's switch position
  (height, width: the pre-pool size, 2h or 2h - 1 and 2w or 2w - 1)."""

  @tf.custom_gradient
  def unpool(values):
    def grad(upstream):  # each value's gradient is the upstream one at its switch position
      return _select(switch, _corners(_pad_to_even(upstream, 0.0)))
    return _spread(values, switch)[:, :height, :width, :], grad

  return unpool(values)


def _dim(x, axis: int):
  """x's size on `axis`: a Python int where static, else a scalar tensor."""
  return x.shape[axis] if x.shape[axis] is not None else tf.shape(x)[axis]


def _size(x):
  """(H, W) of x [B, H, W, C]: Python ints where static, else scalar tensors."""
  return _dim(x, 1), _dim(x, 2)


def argmax_pool(x):
  """Today's reference (before issue 11): `tf.nn.max_pool_with_argmax`, 2x2 stride 2, SAME.
  x [B, H, W, C] -> (pooled, argmax int64: flat indices into x including the batch). No XLA
  kernel; kept for the tests that prove switch_pool/switch_unpool equal to it."""
  return tf.nn.max_pool_with_argmax(x, ksize=2, strides=2, padding="SAME",
                                    include_batch_in_index=True)


def scatter_unpool(pooled, argmax, like):
  """Today's reference unpooling: scatters pooled [B, h, w, C] to the flat `argmax` positions of
  a zero tensor shaped like `like` [B, H, W, C] (tf.scatter_nd)."""
  shape = tf.shape(like, out_type=tf.int64)
  out_shape = tf.stack([shape[0], shape[1], shape[2], tf.shape(pooled, out_type=tf.int64)[3]])
  flat = tf.scatter_nd(tf.reshape(argmax, [-1, 1]), tf.reshape(pooled, [-1]),
                       tf.reshape(tf.reduce_prod(out_shape), [1]))
  return tf.reshape(flat, out_shape)


@keras.saving.register_keras_serializable(package="sdmtcnn")
class MaxPoolWithArgmax(layers.Layer):
  """2x2 stride-2 max-pool that also returns where each window's maximum was (`switch_pool`).

  Input [B, H, W, C] -> (pooled [B, ceil(H/2), ceil(W/2), C], switch uint8 of the same shape,
  0..3 row-major within the window; ties go to the first, as tf.nn.max_pool_with_argmax).
  XLA-compilable (issue 11: the argmax kernel had no XLA version).
  """

  def call(self, x):
    return switch_pool(x)

  def compute_output_spec(self, x):
    half = lambda d: None if d is None else (d + 1) // 2
    shape = (x.shape[0], half(x.shape[1]), half(x.shape[2]), x.shape[3])
    return keras.KerasTensor(shape, x.dtype), keras.KerasTensor(shape, "uint8")


@keras.saving.register_keras_serializable(package="sdmtcnn")
class MaxUnpool(layers.Layer):
  """SegNet unpooling: puts values back at the positions their windows' maxima came from.

  call(values [B, h, w, C], switch [B, h, w, C] from MaxPoolWithArgmax, like [B, H, W, C'])
  -> [B, H, W, C] (zeros except at the switch positions). `like` (the pre-pool tensor) only
  supplies H and W. Equal to the scatter_nd unpooling it replaced (`scatter_unpool`), ties
  included, and XLA-compilable.
  """

  def call(self, values, switch, like):
    return switch_unpool(values, switch, *_size(like))

  def compute_output_spec(self, values, switch, like):
    return keras.KerasTensor(tuple(like.shape[:3]) + (values.shape[3],), values.dtype)


@keras.saving.register_keras_serializable(package="sdmtcnn")
class L2Normalize(layers.Layer):
  """Unit-normalises the last axis (surface normals): [..., C] -> [..., C]."""

  def call(self, x):
    # A tiny floor: freshly initialised decoders can emit vectors far below 1e-6 in norm.
    return tf.math.l2_normalize(x, axis=-1, epsilon=1e-30)
