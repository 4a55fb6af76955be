"""SegNet encoder and decoders of the MTAN protocol (VGG-16-BN layout, argmax unpooling).

Stage l = 1..5 of the encoder runs at 1/2^(l-1) of the input size and ends in a 2x2 max-pool;
`enc{l}` is the stage's pre-pool feature and `encoded` = pool(enc5) at 1/32. Decoder stage l
unpools with the argmax of encoder stage l, so `dec{l}` has the spatial size of `enc{l}`.
The layout constants import no TensorFlow (bench's PyTorch child builds the same network).
"""

from __future__ import annotations

BASE_FILTERS = (64, 128, 256, 512, 512)
ENCODER_CONVS = (2, 2, 3, 3, 3)  # VGG-16: convs per encoder stage
DECODER_EXTRA_CONVS = (1, 1, 2, 2, 2)  # convs after the first one, decoder stage 1..5
LEVELS = (1, 2, 3, 4, 5)


def scaled_filters(width_multiplier: float) -> tuple:
  """Encoder filters 64-128-256-512-512 scaled by `width_multiplier` (at least 1 each)."""
  return tuple(max(1, int(round(f * width_multiplier))) for f in BASE_FILTERS)


def decoder_channels(filters) -> dict:
  """Output channels of decoder stage l: dec5 = f5, dec4 = f3, ..., dec2 = dec1 = f1."""
  return {l: filters[max(l - 2, 0)] for l in LEVELS}


def segnet_encoder(image, filters, sync_batchnorm: bool = False, pool: str = "argmax"):
  """Shared encoder.

  Args:
    image: [B, H, W, 3] float, H and W divisible by 32.
    filters: 5 filter counts.
    pool: "argmax" (SegNet, keeps indices) or "max" (plain, for U-Net).
  Returns:
    (features, argmaxes): features {"enc1".."enc5": pre-pool [B, H/2^(l-1), W/2^(l-1), f_l],
    "pool1".."pool5": the stage outputs [B, H/2^l, W/2^l, f_l], "encoded" = pool5
    [B, H/32, W/32, f5]}; argmaxes {l: int64 argmax of stage l's pool} (empty for
    pool="max").
  """
  from keras import layers

  from sdmtcnn_tf.models import layers as L
  x = image
  features, argmaxes = {}, {}
  for l, (f, n) in zip(LEVELS, zip(filters, ENCODER_CONVS)):
    for i in range(n):
      x = L.conv_bn_relu(x, f, f"enc{l}_{i + 1}", sync_batchnorm)
    features[f"enc{l}"] = x
    if pool == "argmax":
      x, argmaxes[l] = L.MaxPoolWithArgmax(name=f"enc{l}_pool")(x)
    else:
      x = layers.MaxPooling2D(2, name=f"enc{l}_pool")(x)
    features[f"pool{l}"] = x
  features["encoded"] = x
  return features, argmaxes


def segnet_decoder(features, argmaxes, filters, prefix: str, sync_batchnorm: bool = False):
  """One SegNet decoder (MTAN's mirrored decoder).

  Args:
    features, argmaxes: from `segnet_encoder(pool="argmax")`.
    prefix: layer-name prefix, e.g. "semseg_dec" or "shared_dec".
  Returns:
    {"dec5".."dec1": [B, H/2^(l-1), W/2^(l-1), decoder_channels(filters)[l]]}; dec1 is the
    full-resolution feature the task heads read.
  """
  from sdmtcnn_tf.models import layers as L
  out_channels = decoder_channels(filters)
  x = features["encoded"]
  decoded = {}
  for l in reversed(LEVELS):
    x = L.MaxUnpool(name=f"{prefix}{l}_unpool")(x, argmaxes[l], features[f"enc{l}"])
    x = L.conv_bn_relu(x, out_channels[l], f"{prefix}{l}_1", sync_batchnorm)
    for i in range(DECODER_EXTRA_CONVS[l - 1]):
      x = L.conv_bn_relu(x, out_channels[l], f"{prefix}{l}_{i + 2}", sync_batchnorm)
    decoded[f"dec{l}"] = x
  return decoded
