"""Baseline-2, SD-vanilla (BYOT, "Be Your Own Teacher"): exits along the encoder.

RECON (METHOD.md, Baselines 2): after each encoder stage in --student_exits (default 3, 4, 5)
an exit: a BYOT bottleneck (1x1 reduce, 3x3, 1x1 expand, BN/ReLU) on the stage output, whose
output is both the hinted feature and the input of the exit's prediction head (one bottleneck
and head per exit and task). Every exit learns from the labels; the network's deepest outputs
(the teacher's predictions) teach every exit under eq5 (⋆: KD + labels), the deepest feature
(the task decoder's dec1, average-pooled to the exit's size) teaches the bottleneck outputs
under eq6 (⋆⋆: hint + labels). There is no decoder -> encoder path at the mirrored stages.
The reported student is the exit --student_exit (0 = the deepest).
"""

from __future__ import annotations

from sdmtcnn_tf.methods import students
from sdmtcnn_tf.methods import terms as terms_lib
from sdmtcnn_tf.methods.base import HINT_WEIGHT, LEARNING_RATE, Method, need
from sdmtcnn_tf.methods.sd_mtcnn import hint_target
from sdmtcnn_tf.models import heads
from sdmtcnn_tf.models.layers import as_full_precision

DEFAULT_EXITS = (3, 4, 5)


def exits(cfg) -> tuple:
  """The encoder stages with an exit, shallowest first."""
  return tuple(sorted(cfg.model.student_exits)) if cfg.model.student_exits else DEFAULT_EXITS


def reported_exit(cfg) -> int:
  return cfg.model.student_exit or max(exits(cfg))


class SDVanilla(Method):
  name = "sd_vanilla"
  distills = ("eq5", "eq6")
  reads = frozenset({"student_exits", "student_exit", "hint_source"})
  roles = ("teacher", "student")

  def validate(self, cfg):
    super().validate(cfg)
    need(cfg.method.hint_source in ("default", "deepest"), "hint_source",
         "default or deepest with --method=sd_vanilla (its exits have no mirrored stage)",
         cfg.method.hint_source)
    need(all(l in (1, 2, 3, 4, 5) for l in cfg.model.student_exits), "student_exits",
         "encoder stages among 1..5", cfg.model.student_exits)
    need(cfg.model.student_exit == 0 or cfg.model.student_exit in exits(cfg), "student_exit",
         f"0 (the deepest) or one of --student_exits={','.join(map(str, exits(cfg)))}",
         cfg.model.student_exit)

  def extra_outputs(self, cfg, backbone):
    target_channels = backbone.decoder_channels(1)
    outputs, hints = {}, {}
    for level in exits(cfg):
      outputs[f"e{level}"] = {}
      for task in cfg.task_specs:
        key = f"{task.name}_e{level}"
        bottleneck = heads.adaptation(backbone.features[f"pool{level}"], target_channels,
                                      "bottleneck", f"exit{level}_{task.name}_bottleneck",
                                      cfg.model.sync_batchnorm)
        outputs[f"e{level}"][task.name] = heads.exit_head(
            bottleneck, task, cfg.data.height, cfg.data.width, f"exit{level}_{task.name}")
        if cfg.method.distill == "eq6":
          # the exit's output is at the size of encoder stage level + 1
          target, _ = hint_target(backbone, backbone.decoder_of[task.name], level + 1,
                                  "deepest", f"hint_{key}")
          hints[key] = {"student": bottleneck,
                        "teacher": as_full_precision(target, f"hint_{key}_teacher")}
    out = {"exits": outputs, "student": outputs[f"e{reported_exit(cfg)}"]}
    if hints:
      out["hints"] = hints
    return out

  def search_space(self, cfg):
    """α and τ of the exits' output KD (eq5) or λ of their hints (eq6), and the learning
    rate."""
    distill = self.output_kd_space(cfg) if cfg.method.distill == "eq5" else (HINT_WEIGHT,)
    return distill + (LEARNING_RATE,)

  def loss_terms(self, cfg):
    out = list(self.teacher_terms(cfg))
    for level in exits(cfg):
      out += students.student_terms(cfg, ("exits", f"e{level}"), f"_e{level}")
    if cfg.method.distill == "eq6":
      out += terms_lib.feature_hints(cfg, ((f"hint_{t.name}_e{level}_loss", f"{t.name}_e{level}")
                                           for level in exits(cfg) for t in cfg.task_specs))
    return tuple(out)
