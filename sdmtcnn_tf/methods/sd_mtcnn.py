"""SD-MTCNN (⋆ = eq5, ⋆⋆ = eq6; --full): decoder features teach the encoder's feature space.

RECON (METHOD.md, "Revised reading"): every SD-MTCNN run has the decoder -> encoder hint path:
an adaptation layer maps enc_l into the space of the teaching decoder's stage-l feature (Eq. 6,
weight λ). Under eq5 the student heads also get the teacher's outputs (Eq. 5, weight α, their
labels 1 - α); under eq6 the feature objective is the only distillation. --full: every decoder
stage teaches its mirrored encoder stage (l = 1..5) and the student reads enc3..enc5 too.
With --decoder=shared there is one decoder, hence one hint per stage (not one per task).
"""

from __future__ import annotations

from keras import layers

from sdmtcnn_tf.methods import students
from sdmtcnn_tf.methods import terms as terms_lib
from sdmtcnn_tf.methods.base import HINT_WEIGHT, LEARNING_RATE, Method
from sdmtcnn_tf.models import backbone as backbone_lib
from sdmtcnn_tf.models import heads
from sdmtcnn_tf.models.layers import as_full_precision


def hint_target(backbone, decoder: str, level: int, source: str, name: str):
  """(the decoder feature that teaches enc_<level>, its channels). "mirrored": the decoder's
  stage-`level` output (same size as enc_<level>); "deepest": its last feature (dec1),
  average-pooled to that size."""
  decoded = backbone.decoders[decoder]
  if source == "mirrored":
    return decoded[f"dec{level}"], backbone.decoder_channels(level)
  target = decoded["dec1"]
  if level > 1:
    target = layers.AveragePooling2D(2 ** (level - 1), name=f"{name}_pool")(target)
  return target, backbone.decoder_channels(1)


def teaching_decoders(cfg) -> tuple:
  """The names of the decoders whose features teach: each --teaching_tasks task's own, or the
  one shared decoder (backbone.Backbone.decoders)."""
  if cfg.model.decoder == "shared":
    return (backbone_lib.SHARED_DECODER,)
  return tuple(cfg.resolved_teaching_tasks)


class SDMTCNN(Method):
  name = "sd_mtcnn"
  distills = ("eq5", "eq6")
  reads = frozenset({"full", "hint_source", "teaching_tasks", "hint_levels", "student_levels"})
  roles = ("teacher", "student")

  @staticmethod
  def source(cfg) -> str:
    return "mirrored" if cfg.method.hint_source == "default" else cfg.method.hint_source

  def extra_outputs(self, cfg, backbone):
    hints = {}
    for decoder in teaching_decoders(cfg):
      for level in cfg.method.resolved_hint_levels:
        key = f"{decoder}_l{level}"
        target, channels = hint_target(backbone, decoder, level, self.source(cfg), f"hint_{key}")
        hints[key] = {
            "student": heads.adaptation(backbone.features[f"enc{level}"], channels,
                                        cfg.model.adaptation, f"adapt_{key}",
                                        cfg.model.sync_batchnorm),
            "teacher": as_full_precision(target, f"hint_{key}_teacher")}
    return {"student": students.student_heads(backbone.features, cfg), "hints": hints}

  def search_space(self, cfg):
    """α and τ (Eq. 5, under eq5 only), λ (the hints, always) and the learning rate."""
    kd = self.output_kd_space(cfg) if cfg.method.distill == "eq5" else ()
    return kd + (HINT_WEIGHT, LEARNING_RATE)

  def loss_terms(self, cfg):
    hints = terms_lib.feature_hints(
        cfg, ((f"hint_{decoder}_l{level}_loss", f"{decoder}_l{level}")
              for decoder in teaching_decoders(cfg)
              for level in cfg.method.resolved_hint_levels))
    return self.teacher_terms(cfg) + students.student_terms(cfg) + hints
