"""Building blocks: conv-BN-ReLU, max-pool with argmax, SegNet max-unpooling.

TensorFlow backend only (the unpooling needs `tf.nn.max_pool_with_argmax`). Both pooling
layers set `supports_jit = False`: MaxPoolWithArgmax has no XLA kernel, and Keras would
otherwise turn XLA on by default on a GPU and fail.
"""

from __future__ import annotations

import keras
import tensorflow as tf
from keras import layers


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


def batch_norm(name: str, sync_batchnorm: bool = False) -> layers.BatchNormalization:
  """BatchNorm with PyTorch's defaults (momentum 0.1 = Keras 0.9, eps 1e-5), as MTAN trains.

  Keras' default momentum 0.99 leaves the moving statistics far from the batch statistics for
  the first few hundred steps, which wrecks evaluation of short runs.
  """
  return layers.BatchNormalization(momentum=0.9, epsilon=1e-5, synchronized=sync_batchnorm,
                                   name=name)


def conv_bn_relu(x, filters: int, name: str, sync_batchnorm: bool = False):
  """3x3 conv (with bias, Xavier-normal init, as MTAN) -> BatchNorm -> ReLU.

  Args:
    x: [B, H, W, Cin] tensor.
  Returns:
    [B, H, W, filters] tensor.
  """
  x = layers.Conv2D(filters, 3, padding="same", kernel_initializer="glorot_normal",
                    name=f"{name}_conv")(x)
  x = batch_norm(f"{name}_bn", sync_batchnorm)(x)
  return layers.ReLU(name=f"{name}_relu")(x)


@keras.saving.register_keras_serializable(package="sdmtcnn")
class MaxPoolWithArgmax(layers.Layer):
  """2x2 stride-2 max-pool that also returns the flat argmax of each window.

  Input [B, H, W, C] -> (pooled [B, ceil(H/2), ceil(W/2), C], argmax int64 of the same shape,
  indices into the flattened input including the batch dimension).
  """

  def __init__(self, **kwargs):
    super().__init__(**kwargs)
    self.supports_jit = False

  def call(self, x):
    pooled, argmax = tf.nn.max_pool_with_argmax(x, ksize=2, strides=2, padding="SAME",
                                                include_batch_in_index=True)
    return pooled, tf.stop_gradient(argmax)

  def compute_output_spec(self, x):
    half = lambda d: None if d is None else (d + 1) // 2
    shape = (x.shape[0], half(x.shape[1]), half(x.shape[2]), x.shape[3])
    return keras.KerasTensor(shape, x.dtype), keras.KerasTensor(shape, "int64")


@keras.saving.register_keras_serializable(package="sdmtcnn")
class MaxUnpool(layers.Layer):
  """SegNet unpooling: scatters pooled values back to the positions their maxima came from.

  call(pooled [B, h, w, C], argmax [B, h, w, C] from MaxPoolWithArgmax, like [B, H, W, C'])
  -> [B, H, W, C] (zeros except at argmax positions). `like` only supplies the output size and
  must have C' == C channels (the pre-pool tensor the argmax came from).
  """

  def __init__(self, **kwargs):
    super().__init__(**kwargs)
    self.supports_jit = False

  def call(self, pooled, argmax, like):
    shape = tf.shape(like, out_type=tf.int64)
    out_shape = tf.stack([shape[0], shape[1], shape[2], tf.shape(pooled, out_type=tf.int64)[3]])
    flat = tf.scatter_nd(tf.reshape(argmax, [-1, 1]), tf.reshape(pooled, [-1]),
                         tf.reshape(tf.reduce_prod(out_shape), [1]))
    return tf.reshape(flat, out_shape)

  def compute_output_spec(self, pooled, argmax, like):
    return keras.KerasTensor(tuple(like.shape[:3]) + (pooled.shape[3],), pooled.dtype)


@keras.saving.register_keras_serializable(package="sdmtcnn")
class L2Normalize(layers.Layer):
  """Unit-normalises the last axis (surface normals): [..., C] -> [..., C]."""

  def call(self, x):
    # A tiny floor: freshly initialised decoders can emit vectors far below 1e-6 in norm.
    return tf.math.l2_normalize(x, axis=-1, epsilon=1e-30)
