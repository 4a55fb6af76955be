"""The pieces the self-distillation methods share: the student heads on the encoder and the
student's supervised and output-distillation terms."""

from __future__ import annotations

from sdmtcnn_tf.methods import terms as terms_lib
from sdmtcnn_tf.models import heads


def student_heads(features: dict, cfg) -> dict:
  """{task: student head output} on the encoded map (and, with --student_levels or --full, the
  shallower encoder stages): encoder + these heads is the deployable student."""
  channels = max(1, int(round(cfg.model.student_channels * cfg.model.width_multiplier)))
  skips = [(level, features[f"enc{level}"]) for level in cfg.resolved_student_levels]
  return {task.name: heads.student_head(features["encoded"], task, channels, cfg.data.height,
                                        cfg.data.width, f"student_{task.name}",
                                        cfg.model.sync_batchnorm,
                                        skips)
          for task in cfg.task_specs}


def student_terms(cfg, path=("student",), suffix: str = "") -> tuple:
  """Eq. 3 for the predictions at `path`, and under --distill=eq5 the output distillation
  (Eq. 5) from the teacher's predictions: `student_<task><suffix>_loss` with weight
  student_gt_weight * w_t, `kd_<task><suffix>_loss` with weight alpha * w_t."""
  out = [terms_lib.Supervised(f"student_{t.name}{suffix}_loss",
                              cfg.method.resolved_student_gt_weight * cfg.task_weight(t.name),
                              t, path)
         for t in cfg.task_specs]
  if cfg.method.distill == "eq5":
    out += [terms_lib.OutputDistillation(f"kd_{t.name}{suffix}_loss",
                                         cfg.method.alpha * cfg.task_weight(t.name), t, path,
                                         cfg.method.temperature, cfg.method.two_way)
            for t in cfg.task_specs]
  return tuple(out)
