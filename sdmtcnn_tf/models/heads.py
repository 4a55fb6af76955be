"""Task heads (teacher), student heads and adaptation layers."""

from __future__ import annotations

import keras
from keras import layers

from sdmtcnn_tf.models import layers as L
from sdmtcnn_tf.tasks import Task


def _activate(x, spec: Task, name: str):
  x = L.as_full_precision(x, f"{name}_f32")
  if spec.activation == "l2_normalize":
    x = L.L2Normalize(dtype=L.full_precision(), name=f"{name}_unit")(x)
  return x


def teacher_head(feature, spec: Task, name: str):
  """MTAN's prediction head: 3x3 conv (C->C) then 1x1 conv to the task's channels, no BN/ReLU
  (kernels initialised by `layers.kernel_initializer()`, as MTAN's).

  Args:
    feature: [B, H, W, C] full-resolution decoder feature.
  Returns:
    float32 [B, H, W, spec.channels]: logits (semseg), linear (depth, keypoints, edges) or unit
    vectors (normals).
  """
  channels = feature.shape[-1]
  x = L.Conv2D(channels, 3, padding="same", kernel_initializer=L.kernel_initializer(),
               name=f"{name}_conv3")(feature)
  x = layers.Conv2D(spec.channels, 1, kernel_initializer=L.kernel_initializer(),
                    bias_initializer=keras.initializers.Constant(spec.output_bias),
                    name=f"{name}_conv1")(x)
  return _activate(x, spec, name)


def student_head(encoded, spec: Task, channels: int, height: int, width: int, name: str,
                 sync_batchnorm: bool = False, skips=()):
  """Light student head on the encoder (RECON, METHOD.md "Student heads").

  Two conv-BN-ReLU with `channels` filters on `encoded` (1/32); then, for each (level, enc_l)
  in `skips` (deepest first, levels 5, 4, ... contiguous), a top-down step: upsample 2x, add a
  1x1 projection of enc_l, conv-BN-ReLU (the --full student reads the shallower encoder
  features too). Finally a 1x1 output conv and bilinear upsampling to (height, width).
  Args:
    encoded: [B, H/32, W/32, C] encoder output.
    skips: sequence of (level, [B, H/2^(level-1), W/2^(level-1), C_l]).
  Returns:
    float32 [B, height, width, spec.channels], activated like the teacher head.
  """
  x = L.conv_bn_relu(encoded, channels, f"{name}_1", sync_batchnorm)
  x = L.conv_bn_relu(x, channels, f"{name}_2", sync_batchnorm)
  for level, skip in skips:
    x = layers.UpSampling2D(2, interpolation="bilinear", name=f"{name}_up{level}")(x)
    lateral = layers.Conv2D(channels, 1, name=f"{name}_lateral{level}")(skip)
    x = layers.Add(name=f"{name}_merge{level}")([x, lateral])
    x = L.conv_bn_relu(x, channels, f"{name}_fuse{level}", sync_batchnorm)
  return _output(x, spec, height, width, name)


def _output(x, spec: Task, height: int, width: int, name: str):
  """1x1 output conv, bilinear upsampling to (height, width), activation."""
  x = layers.Conv2D(spec.channels, 1, kernel_initializer=L.kernel_initializer(),
                    bias_initializer=keras.initializers.Constant(spec.output_bias),
                    name=f"{name}_out")(x)
  x = layers.Resizing(height, width, interpolation="bilinear", name=f"{name}_resize")(x)
  return _activate(x, spec, name)


def exit_head(feature, spec: Task, height: int, width: int, name: str):
  """SD-vanilla (BYOT) exit head on an exit's bottleneck output (BYOT's classifier after the
  bottleneck): 1x1 output conv, bilinear upsampling, activation.
  [B, h, w, C] -> float32 [B, height, width, spec.channels]."""
  return _output(feature, spec, height, width, name)


def adaptation(feature, out_channels: int, kind: str, name: str, sync_batchnorm: bool = False):
  """Maps an encoder feature into a decoder feature's channel space (training only).

  kind "conv1x1" (FitNets) or "bottleneck" (BYOT: 1x1 reduce, 3x3, 1x1 expand, BN/ReLU).
  [B, h, w, Cin] -> float32 [B, h, w, out_channels].
  """
  if kind == "conv1x1":
    x = layers.Conv2D(out_channels, 1, name=f"{name}_conv")(feature)
  elif kind == "bottleneck":
    mid = max(1, out_channels // 4)
    x = layers.Conv2D(mid, 1, name=f"{name}_reduce")(feature)
    x = layers.ReLU(name=f"{name}_relu1")(L.batch_norm(f"{name}_bn1", sync_batchnorm)(x))
    x = L.Conv2D(mid, 3, padding="same", name=f"{name}_conv3")(x)
    x = layers.ReLU(name=f"{name}_relu2")(L.batch_norm(f"{name}_bn2", sync_batchnorm)(x))
    x = layers.Conv2D(out_channels, 1, name=f"{name}_expand")(x)
  else:
    raise ValueError(f"unknown adaptation kind {kind!r}; expected conv1x1 or bottleneck")
  return L.as_full_precision(x, f"{name}_f32")
