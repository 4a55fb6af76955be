"""The teacher every method shares: encoder, decoders (one per task, or one shared) and the
task heads, as functional Keras tensors that the methods then read features from."""

from __future__ import annotations

import dataclasses

from sdmtcnn_tf.models import heads, segnet, unet

SHARED_DECODER = "shared"


@dataclasses.dataclass
class Backbone:
  """The teacher graph of one config.

  Attributes:
    image: the keras.Input [B, H, W, 3].
    filters: the encoder's 5 filter counts (after --width_multiplier).
    features: encoder features {"enc1".."enc5" (pre-pool), "pool1".."pool5" (stage outputs),
      "encoded"}, see segnet.segnet_encoder.
    decoders: {decoder name: {"dec5".."dec1"}}: one per task (named by the task) or one named
      SHARED_DECODER (--decoder=shared).
    decoder_of: {task name: the name of the decoder that task's head reads}.
    teacher: {task name: teacher output [B, H, W, channels]} (full network).
  """

  image: object
  filters: tuple
  features: dict
  decoders: dict
  decoder_of: dict
  teacher: dict

  def decoder_channels(self, level: int) -> int:
    """Channels of decoder stage `level`'s output."""
    return segnet.decoder_channels(self.filters)[level]


def encoder(image, cfg, filters):
  """(features, argmaxes) of the shared encoder (argmax pooling for SegNet, max for U-Net)."""
  pool = "argmax" if cfg.model.backbone == "segnet" else "max"
  return segnet.segnet_encoder(image, filters, cfg.model.sync_batchnorm, pool=pool)


def build_backbone(image, cfg) -> Backbone:
  """Encoder, decoders and teacher heads of `cfg` on `image`."""
  filters = segnet.scaled_filters(cfg.model.width_multiplier)
  features, argmaxes = encoder(image, cfg, filters)
  if cfg.model.backbone == "segnet":
    decode = lambda prefix: segnet.segnet_decoder(features, argmaxes, filters, prefix,
                                                  cfg.model.sync_batchnorm)
  else:
    decode = lambda prefix: unet.unet_decoder(features, filters, prefix, cfg.model.sync_batchnorm)
  tasks = cfg.task_specs
  if cfg.model.decoder == "shared":
    decoders = {SHARED_DECODER: decode("shared_dec")}
    decoder_of = {task.name: SHARED_DECODER for task in tasks}
  else:
    decoders = {task.name: decode(f"{task.name}_dec") for task in tasks}
    decoder_of = {task.name: task.name for task in tasks}
  teacher = {task.name: heads.teacher_head(decoders[decoder_of[task.name]]["dec1"], task,
                                           f"teacher_{task.name}")
             for task in tasks}
  return Backbone(image, filters, features, decoders, decoder_of, teacher)
