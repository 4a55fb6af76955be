"""The Method base class: what a training method adds to the shared teacher and how it is
trained, in the spirit of `keras.distillation.Distiller`.

A method validates its own flags, builds its graph (by default: the shared backbone of
models/backbone.py plus the extra outputs it declares: student heads, exits, adaptation layers
and hint pairs) and lists its weighted loss terms (methods/terms.py). `MultiTaskModel` asks it
for the terms and never switches on a method's name.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

from sdmtcnn_tf.methods import terms as terms_lib
from sdmtcnn_tf.models import backbone as backbone_lib


def need(cond: bool, flag: str, expected: str, got) -> None:
  """Raises ValueError naming the flag, what was expected and what was given."""
  if not cond:
    raise ValueError(f"--{flag}: expected {expected}, got {got!r}")


@dataclasses.dataclass(frozen=True)
class Hyperparameter:
  """One entry of a search space (sdmtcnn_tf/search/): a config flag and the values a search
  tries for it, either a range [min, max] (numeric flags; `log`: sampled uniformly in log
  space, so min > 0) or a list of `values`. Units are the flag's own."""

  name: str
  min: float | None = None
  max: float | None = None
  log: bool = False
  values: tuple = ()


LEARNING_RATE = Hyperparameter("learning_rate", 1e-5, 1e-3, log=True)
ALPHA = Hyperparameter("alpha", 0.1, 0.9)
TEMPERATURE = Hyperparameter("temperature", 1.0, 8.0, log=True)
HINT_WEIGHT = Hyperparameter("hint_weight", 0.01, 10.0, log=True)


# Flags that only some methods read (their value must stay the default for the others).
METHOD_FLAGS = {"full": False, "student_exits": (), "student_exit": 0, "hint_source": "default",
                "teaching_tasks": (), "hint_levels": (), "student_levels": ()}


class Method:
  """One training method (a row family of the paper's tables).

  Class attributes:
    name: the --method value.
    distills: the --distill values it accepts.
    roles: the networks it reports metrics for ("teacher", "student").
    teacher_run: True when it distils a separately trained teacher (--teacher_dir), whose
      config the run records and whose weights the training entry point loads.
  """

  name: ClassVar[str] = ""
  distills: ClassVar[tuple] = ("none",)
  reads: ClassVar[frozenset] = frozenset()  # the METHOD_FLAGS it uses
  roles: ClassVar[tuple] = ("teacher",)
  teacher_run: ClassVar[bool] = False

  def __repr__(self):
    return f"{type(self).__name__}()"

  def validate(self, cfg) -> None:
    """Raises ValueError naming the flag when `cfg` sets something this method cannot do:
    a --distill it does not know, or a METHOD_FLAGS flag it does not read. Subclasses check
    the values of the flags they read after calling this."""
    need(cfg.method.distill in self.distills, "distill",
         f"one of {', '.join(self.distills)} for --method={self.name}", cfg.method.distill)
    for flag, default in METHOD_FLAGS.items():
      need(flag in self.reads or cfg.flag_value(flag) == default, flag,
           f"its default {default!r}: --method={self.name} does not use it",
           cfg.flag_value(flag))

  # ---- graph -------------------------------------------------------------------------------
  def build(self, image, cfg, teacher_cfg=None) -> tuple:
    """Returns (outputs, teacher outputs, student outputs or None, frozen teacher model or
    None): `outputs` is the training graph's nested structure (methods/terms.py), the other
    two the {task: y} of the serving roles."""
    backbone = backbone_lib.build_backbone(image, cfg)
    outputs = {"teacher": backbone.teacher, **self.extra_outputs(cfg, backbone)}
    return outputs, backbone.teacher, outputs.get("student"), None

  def extra_outputs(self, cfg, backbone) -> dict:
    """The outputs the method adds to the teacher's: "student", "exits", "hints"."""
    return {}

  # ---- losses ------------------------------------------------------------------------------
  def loss_terms(self, cfg) -> tuple:
    """The weighted loss terms, in logging order. Default: the teacher's (Eq. 2)."""
    return self.teacher_terms(cfg)

  @staticmethod
  def teacher_terms(cfg) -> tuple:
    return tuple(terms_lib.Supervised(f"teacher_{t.name}_loss", cfg.task_weight(t.name), t,
                                      ("teacher",))
                 for t in cfg.task_specs)

  # ---- hyperparameter search ---------------------------------------------------------------
  def search_space(self, cfg) -> tuple:
    """The Hyperparameters a search (`python -m sdmtcnn_tf.tune`) tries by default for `cfg`:
    the flags this method's loss reads under cfg.method.distill. Default: the learning rate."""
    return (LEARNING_RATE,)

  @staticmethod
  def output_kd_space(cfg) -> tuple:
    """Eq. 5's weight α and, when a task's distillation loss is softened by it (a
    classification task), its temperature τ."""
    soft = any(t.is_classification for t in cfg.task_specs)
    return (ALPHA,) + ((TEMPERATURE,) if soft else ())

  def frozen_variables(self, model) -> set:
    """Paths of trainable variables that no loss term is meant to reach (none by default):
    the training step raises on any other variable that gets no gradient."""
    return set()
