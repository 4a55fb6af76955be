"""Baseline-3, traditional knowledge distillation: a trained, frozen Baseline-1 teacher teaches
a separate student network (its own encoder and student heads): labels + Eq. 5. Only the
student is reported.

The teacher's architecture comes from `teacher_cfg` (the config the run recorded from
--teacher_dir, see experiment.teacher_config); its weights are loaded by the training entry
point, never by the builder.
"""

from __future__ import annotations

from sdmtcnn_tf.methods import students
from sdmtcnn_tf.methods.base import LEARNING_RATE, Method, need
from sdmtcnn_tf.models import backbone as backbone_lib
from sdmtcnn_tf.models import segnet
from sdmtcnn_tf.models.layers import as_full_precision


def default_teacher_config(cfg):
  """The vanilla teacher a dry run or test builds when no trained teacher is named."""
  return cfg.replace(method="vanilla", distill="none", full=False, student_levels=(),
                     teacher_dir="", hint_source="default")


def check_teacher(teacher_cfg, cfg, source: str = "the teacher") -> None:
  """The teacher must be a vanilla run on the same data as `cfg` (the same tasks as a set,
  classes, size and label units). Raises ValueError naming `source`."""
  if teacher_cfg.method.name != "vanilla":
    raise ValueError(f"{source} holds a {teacher_cfg.method.name} run; traditional_kd distils a "
                     "trained vanilla (Baseline-1) teacher")
  def differs(field):
    mine, theirs = cfg.flag_value(field), teacher_cfg.flag_value(field)
    return sorted(mine) != sorted(theirs) if field == "tasks" else mine != theirs
  differ = [f"{f}: teacher {teacher_cfg.flag_value(f)!r} vs this run {cfg.flag_value(f)!r}"
            for f in ("tasks", "num_classes", "height", "width") if differs(f)]
  if teacher_cfg.data.label_units != cfg.data.label_units:  # its outputs are in its units
    differ.append(f"label units: teacher {teacher_cfg.data.label_units!r} vs this run "
                  f"{cfg.data.label_units!r} (--taskonomy_label_units)")
  if differ:
    raise ValueError(f"{source} was trained on other data: " + "; ".join(differ))


class TraditionalKD(Method):
  name = "traditional_kd"
  distills = ("eq5", "none")
  reads = frozenset({"student_levels"})
  roles = ("student",)
  teacher_run = True

  def build(self, image, cfg, teacher_cfg=None):
    from sdmtcnn_tf.models.build import build_network  # the teacher is a whole network
    teacher_cfg = teacher_cfg or default_teacher_config(cfg)
    check_teacher(teacher_cfg, cfg)
    teacher_model = build_network(teacher_cfg).teacher
    teacher_model.trainable = False
    teacher = teacher_model(image, training=False)
    filters = segnet.scaled_filters(cfg.model.width_multiplier)
    features, _ = backbone_lib.encoder(image, cfg, filters)
    student = students.student_heads(features, cfg)
    # matched by task name: the teacher's --tasks order may differ
    frozen = {t: as_full_precision(teacher[t], f"frozen_teacher_{t}") for t in teacher}
    return {"teacher": frozen, "student": student}, teacher, student, teacher_model

  def search_space(self, cfg):
    """α and τ of the output KD (eq5; none: labels only) and the learning rate."""
    kd = self.output_kd_space(cfg) if cfg.method.distill == "eq5" else ()
    return kd + (LEARNING_RATE,)

  def loss_terms(self, cfg):
    return students.student_terms(cfg)

  def frozen_variables(self, model):
    return {v.path for v in model.network.teacher.weights}
