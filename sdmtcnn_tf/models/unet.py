"""U-Net ablation: the SegNet encoder with plain max-pooling and a decoder that upsamples and
concatenates the encoder's stage feature (skip connection) at every level.

Decoder stage l takes the deeper feature, upsamples it 2x (bilinear), concatenates `enc{l}`
and applies the same number of conv-BN-ReLU as SegNet's stage l with the same output channels,
so the two backbones differ only in pooling/unpooling and the skips (BUILD_NOTES.md has both
parameter counts).
"""

from __future__ import annotations

from keras import layers

from sdmtcnn_tf.models import layers as L
from sdmtcnn_tf.models.segnet import DECODER_EXTRA_CONVS, LEVELS, decoder_channels


def unet_decoder(features, filters, prefix: str, sync_batchnorm: bool = False):
  """Returns {"dec5".."dec1"} shaped like `segnet_decoder`'s output."""
  out_channels = decoder_channels(filters)
  x = features["encoded"]
  decoded = {}
  for l in reversed(LEVELS):
    x = layers.UpSampling2D(2, interpolation="bilinear", name=f"{prefix}{l}_up")(x)
    x = layers.Concatenate(name=f"{prefix}{l}_skip")([x, features[f"enc{l}"]])
    x = L.conv_bn_relu(x, out_channels[l], f"{prefix}{l}_1", sync_batchnorm)
    for i in range(DECODER_EXTRA_CONVS[l - 1]):
      x = L.conv_bn_relu(x, out_channels[l], f"{prefix}{l}_{i + 2}", sync_batchnorm)
    decoded[f"dec{l}"] = x
  return decoded
