"""Experiment configuration: absl flag definitions -> one frozen, validated ExperimentConfig.

Flags are read exactly once, in `from_flags`; nothing below the CLIs reads flags. The run
directory gets `flags.txt` (every resolved flag, reusable as a --flagfile) and `config.json`
(this dataclass), from which `evaluate` and `export` rebuild the model.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os

from absl import flags

from sdmtcnn_tf import tasks as tasks_lib

DISTILLS = ("none", "eq5", "eq6")
BACKBONES = ("segnet", "unet")
DECODERS = ("per_task", "shared")
DATASETS = ("synthetic", "nyuv2", "cityscapes", "taskonomy", "custom")
DISTRIBUTIONS = ("default", "mirrored")
ADAPTATIONS = ("conv1x1", "bottleneck")
OPTIMIZERS = ("adam", "sgd")
HINT_REDUCTIONS = ("mean", "sum")


def option(default, help_text: str):
  """A config field with its default and the help text of its absl flag (same name)."""
  return dataclasses.field(default=default, metadata={"help": help_text})


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
  """Everything that defines a run. Units: learning rate per step, sizes in pixels."""

  model_dir: str = option("", "Run directory: checkpoints, logs, results, exports.")
  data_dir: str = option("", "Folder with the converted TFRecords and manifest.json.")
  dataset: str = option("synthetic", "Dataset the config is for; 'synthetic' is generated into "
                                     "--data_dir if absent; 'custom' = records you wrote yourself "
                                     "in the schema of data/schema.py.")
  tasks: tuple = option(("semseg", "depth", "normals"), "Comma list of tasks: semseg, depth, "
                                                        "normals, keypoints, edges (or a "
                                                        "registered task, see sdmtcnn_tf/tasks).")
  num_classes: int = option(13, "Semantic classes (NYUv2 13, CityScapes 7, synthetic 13).")
  height: int = option(288, "Input/label height in pixels (multiple of 32).")
  width: int = option(384, "Input/label width in pixels (multiple of 32).")
  # optimisation
  batch_size: int = option(2, "Global training batch size (split over replicas).")
  epochs: int = option(100, "Training epochs.")
  steps_per_epoch: int = option(0, "Steps per epoch; 0 = one pass over the training split.")
  learning_rate: float = option(1e-4, "Learning rate.")
  lr_decay_epochs: int = option(100, "Halve the learning rate every this many epochs (MTAN: "
                                     "StepLR(100, 0.5)); 0 = never decay. The schedule counts "
                                     "optimizer steps, which the backup saves, so a resumed run "
                                     "continues it.")
  task_weights: tuple = option((), "Comma list of loss weights, one per --tasks entry (default "
                                   "all 1).")
  optimizer: str = option("adam", "adam (MTAN's) | sgd (momentum 0.9).")
  seed: int = option(0, "Random seed (weights, shuffling, augmentation).")
  data_seed: int = option(0, "Seed of the generated synthetic dataset (--dataset=synthetic); a "
                             "seed sweep varies --seed only and shares one --data_dir.")
  deterministic: bool = option(False, "Deterministic input pipeline and TF ops (slower).")
  augment: bool = option(False, "Random scale-crop and horizontal flip (MTAN protocol; off in the "
                                "paper).")
  shuffle_buffer: int = option(256, "Shuffle buffer of the training pipeline (examples).")
  # model
  method: str = option("vanilla", "vanilla | sd_vanilla | traditional_kd | sd_mtcnn.")
  distill: str = option("none", "none | eq5 | eq6. sd_mtcnn: decoder->encoder hints always, eq5 "
                                "adds output KD (⋆), eq6 is the hints alone (⋆⋆); sd_vanilla: "
                                "exits taught by the outputs (eq5) or the deepest feature (eq6); "
                                "traditional_kd: eq5.")
  full: bool = option(False, "SD-MTCNN full: every decoder stage teaches its mirrored encoder "
                             "stage (hints at levels 1..5) and the student reads enc3..enc5, "
                             "under either equation.")
  backbone: str = option("segnet", "segnet | unet.")
  decoder: str = option("per_task", "per_task (one decoder per task, the paper's) | shared (MTAN "
                                    "split SegNet).")
  width_multiplier: float = option(1.0, "Scales every filter count (tests/demo use < 1).")
  student_channels: int = option(256, "Filters of the student heads' convs (scaled by "
                                      "--width_multiplier).")
  student_levels: tuple = option((), "Comma list of encoder levels (5,4,..) the student heads "
                                     "merge; empty = none, or 5,4,3 under --full.")
  student_exits: tuple = option((), "sd_vanilla: comma list of encoder stages (1..5) followed by "
                                    "an exit (BYOT bottleneck + head); empty = 3,4,5.")
  student_exit: int = option(0, "sd_vanilla: the exit reported (metrics, export) as the student; "
                                "0 = the deepest of --student_exits.")
  depth_bias_init: float = option(0.0, "Initial bias of the depth outputs (MTAN: 0; the mean "
                                       "depth helps short runs).")
  sync_batchnorm: bool = option(False, "Synchronise BatchNorm statistics across replicas.")
  # self-distillation (RECON: METHOD.md; defaults DECIDED from BYOT's code)
  alpha: float = option(0.3, "Eq. 5 weight of output distillation; the student's GT loss gets 1 - "
                             "alpha.")
  temperature: float = option(3.0, "Eq. 4-5 softmax temperature tau.")
  hint_weight: float = option(1.0, "Eq. 6 feature-hint weight lambda.")
  hint_reduction: str = option("mean", "How lambda weighs the run's hint pairs (decoder stage -> "
                                       "encoder stage, per teaching decoder): mean (lambda times "
                                       "their average, so more tasks or levels do not scale the "
                                       "feature objective) | sum (lambda per pair).")
  student_gt_weight: float = option(-1.0, "Student ground-truth loss weight; < 0 = 1-alpha (eq5) "
                                          "or 1 (eq6).")
  hint_levels: tuple = option((), "Comma list of levels 1..5 distilled by Eq. 6; empty = 5, or "
                                  "1..5 if --full.")
  teaching_tasks: tuple = option((), "Comma list of tasks whose decoders teach; empty = all tasks.")
  adaptation: str = option("conv1x1", "Adaptation layer: conv1x1 | bottleneck.")
  hint_source: str = option("default", "Which decoder feature teaches a hinted encoder feature: "
                                       "default (the method's: mirrored for sd_mtcnn, deepest for "
                                       "sd_vanilla) | mirrored (the decoder stage of the same "
                                       "size) | deepest (the last decoder feature, "
                                       "average-pooled).")
  two_way: bool = option(False, "Let distillation gradients reach the teacher (no stop-gradient).")
  teacher_dir: str = option("", "traditional_kd: run directory of a trained vanilla teacher.")
  # evaluation
  eval_batch_size: int = option(2, "Evaluation batch size (a multiple of --legacy_batch_size).")
  legacy_batch_size: int = option(2, "Batch size of the per-batch legacy (paper-comparable) "
                                     "metrics.")
  # synthetic data (used when dataset == "synthetic")
  synthetic_num_train: int = option(64, "Synthetic training images generated when absent.")
  synthetic_num_val: int = option(16, "Synthetic validation images generated when absent.")
  # execution
  distribution: str = option("default", "default (one device) | mirrored (MirroredStrategy over "
                                        "all local GPUs).")
  mixed_precision: bool = option(False, "mixed_float16 compute (GPU).")
  jit_compile: bool = option(False, "XLA-compile the train step (GPU; not with argmax unpooling).")
  precise_bn_batches: int = option(0, "After training, re-estimate BatchNorm moving statistics "
                                      "over this many training batches (0 = off, as MTAN).")
  validation_freq: int = option(1, "Validate every this many epochs during training.")
  backup_every_steps: int = option(0, "BackupAndRestore frequency in steps; 0 = every epoch.")
  max_loss: float = option(1e6, "Stop training (as on NaN) when the total loss exceeds this: the "
                                "run diverged.")
  verbose: int = option(1, "Keras fit verbosity: 0 silent, 1 progress bar, 2 one line per epoch.")

  # ---- derived values ---------------------------------------------------------------------
  @property
  def task_specs(self) -> tuple:
    """The Task objects of --tasks (tasks/), in canonical order."""
    return tasks_lib.from_config(self)

  @property
  def resolved_hint_levels(self) -> tuple:
    if self.hint_levels:
      return tuple(self.hint_levels)
    return (1, 2, 3, 4, 5) if self.full else (5,)

  @property
  def resolved_student_levels(self) -> tuple:
    """Levels (deepest first) whose encoder features the student heads merge."""
    if self.student_levels:
      return tuple(sorted(self.student_levels, reverse=True))
    return (5, 4, 3) if self.full else ()

  @property
  def resolved_teaching_tasks(self) -> tuple:
    return tuple(self.teaching_tasks) if self.teaching_tasks else tuple(self.tasks)

  @property
  def resolved_student_gt_weight(self) -> float:
    if self.student_gt_weight >= 0:
      return self.student_gt_weight
    return 1.0 - self.alpha if self.distill == "eq5" else 1.0

  def task_weight(self, task: str) -> float:
    if not self.task_weights:
      return 1.0
    return float(self.task_weights[list(self.tasks).index(task)])

  # ---- validation -------------------------------------------------------------------------
  def validate(self) -> "ExperimentConfig":
    """Raises ValueError naming the flag and what was expected."""
    def need(cond, flag, expected, got):
      if not cond:
        raise ValueError(f"--{flag}: expected {expected}, got {got!r}")
    try:
      tasks_lib.canonical(self.tasks)
    except ValueError as e:
      raise ValueError(f"--tasks: {e}") from None
    need(len(self.tasks) > 0, "tasks", "at least one task", self.tasks)
    from sdmtcnn_tf import methods  # lazily: methods build models, which read configs
    need(self.method in methods.names(), "method", f"one of {methods.names()}", self.method)
    need(self.distill in DISTILLS, "distill", f"one of {DISTILLS}", self.distill)
    need(self.backbone in BACKBONES, "backbone", f"one of {BACKBONES}", self.backbone)
    need(self.decoder in DECODERS, "decoder", f"one of {DECODERS}", self.decoder)
    need(self.dataset in DATASETS, "dataset", f"one of {DATASETS}", self.dataset)
    need(self.distribution in DISTRIBUTIONS, "distribution", f"one of {DISTRIBUTIONS}",
         self.distribution)
    need(self.adaptation in ADAPTATIONS, "adaptation", f"one of {ADAPTATIONS}", self.adaptation)
    need(self.height > 0 and self.height % 32 == 0, "height", "a positive multiple of 32",
         self.height)
    need(self.width > 0 and self.width % 32 == 0, "width", "a positive multiple of 32",
         self.width)
    need(self.num_classes >= 2, "num_classes", "at least 2", self.num_classes)
    need(self.batch_size >= 1, "batch_size", "at least 1", self.batch_size)
    need(self.eval_batch_size >= 1, "eval_batch_size", "at least 1", self.eval_batch_size)
    need(self.legacy_batch_size >= 1, "legacy_batch_size", "at least 1", self.legacy_batch_size)
    need(self.eval_batch_size % self.legacy_batch_size == 0, "eval_batch_size",
         f"a multiple of --legacy_batch_size={self.legacy_batch_size}", self.eval_batch_size)
    need(self.epochs >= 1, "epochs", "at least 1", self.epochs)
    need(self.steps_per_epoch >= 0, "steps_per_epoch", ">= 0 (0 = one pass)",
         self.steps_per_epoch)
    need(math.isfinite(self.learning_rate) and self.learning_rate > 0, "learning_rate",
         "a finite value > 0", self.learning_rate)
    need(math.isfinite(self.max_loss) and self.max_loss > 0, "max_loss", "a finite value > 0",
         self.max_loss)
    need(self.seed >= 0, "seed", ">= 0", self.seed)
    need(self.data_seed >= 0, "data_seed", ">= 0", self.data_seed)
    need(self.shuffle_buffer >= 1, "shuffle_buffer", "at least 1", self.shuffle_buffer)
    need(self.student_channels >= 1, "student_channels", "at least 1", self.student_channels)
    need(self.hint_weight >= 0, "hint_weight", ">= 0", self.hint_weight)
    need(self.hint_reduction in HINT_REDUCTIONS, "hint_reduction",
         f"one of {', '.join(HINT_REDUCTIONS)}", self.hint_reduction)
    need(self.precise_bn_batches >= 0, "precise_bn_batches", ">= 0", self.precise_bn_batches)
    need(self.backup_every_steps >= 0, "backup_every_steps", ">= 0 (0 = every epoch)",
         self.backup_every_steps)
    need(self.synthetic_num_train >= 1, "synthetic_num_train", "at least 1",
         self.synthetic_num_train)
    need(self.synthetic_num_val >= 1, "synthetic_num_val", "at least 1", self.synthetic_num_val)
    need(self.verbose in (0, 1, 2), "verbose", "0, 1 or 2", self.verbose)
    need(all(w >= 0 and math.isfinite(w) for w in self.task_weights), "task_weights",
         "finite values >= 0", self.task_weights)
    # (a repeated --tasks entry is caught by tasks.canonical above)
    for flag in ("hint_levels", "teaching_tasks", "student_levels", "student_exits"):
      values = list(getattr(self, flag))
      repeated = sorted({str(v) for v in values if values.count(v) > 1})
      need(not repeated, flag, "each entry once", f"{','.join(map(str, values))} "
           f"(repeated: {','.join(repeated)})")
    need(self.validation_freq >= 1, "validation_freq", "at least 1", self.validation_freq)
    need(self.lr_decay_epochs >= 0, "lr_decay_epochs", ">= 0 (0 = never decay)",
         self.lr_decay_epochs)
    need(self.width_multiplier > 0, "width_multiplier", "> 0", self.width_multiplier)
    need(0.0 <= self.alpha <= 1.0, "alpha", "a value in [0, 1]", self.alpha)
    need(self.temperature > 0, "temperature", "> 0", self.temperature)
    need(not self.task_weights or len(self.task_weights) == len(self.tasks), "task_weights",
         f"{len(self.tasks)} values (one per --tasks entry)", self.task_weights)
    need(all(l in (1, 2, 3, 4, 5) for l in self.hint_levels), "hint_levels",
         "levels among 1..5", self.hint_levels)
    levels = sorted(self.student_levels, reverse=True)
    need(levels == list(range(5, 5 - len(levels), -1)), "student_levels",
         "a contiguous run of levels starting at 5 (e.g. 5,4,3)", self.student_levels)
    need(self.optimizer in OPTIMIZERS, "optimizer", f"one of {OPTIMIZERS}", self.optimizer)
    need(all(t in self.tasks for t in self.teaching_tasks), "teaching_tasks",
         f"a subset of --tasks={','.join(self.tasks)}", self.teaching_tasks)
    methods.get(self.method).validate(self)  # each method checks the flags it reads
    need(self.backbone == "segnet" or self.decoder == "per_task", "decoder",
         "per_task with --backbone=unet", self.decoder)
    return self

  # ---- (de)serialisation ------------------------------------------------------------------
  def to_json(self) -> dict:
    return {k: list(v) if isinstance(v, tuple) else v
            for k, v in dataclasses.asdict(self).items()}

  @classmethod
  def from_json(cls, raw: dict) -> "ExperimentConfig":
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - names)
    if unknown:
      raise ValueError(f"config has unknown field(s) {unknown}")
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()}
    return cls(**values).validate()

  def replace(self, **changes) -> "ExperimentConfig":
    return dataclasses.replace(self, **changes).validate()


CONFIG_NAME = "config.json"


def to_flags_text(cfg: ExperimentConfig) -> str:
  """Every field as a `--name=value` line: a flagfile that reproduces `cfg`."""
  lines = []
  for key, value in cfg.to_json().items():
    if isinstance(value, bool):
      lines.append(f"--{key}" if value else f"--no{key}")
    elif isinstance(value, list):
      lines.append(f"--{key}={','.join(map(str, value))}")
    else:
      lines.append(f"--{key}={value}")
  return "\n".join(lines) + "\n"


def save(cfg: ExperimentConfig, model_dir: str) -> None:
  """Writes config.json and flags.txt (the resolved flags) into model_dir."""
  from sdmtcnn_tf import atomic  # each file atomically: a killed run never leaves half a config
  atomic.write_json(os.path.join(model_dir, CONFIG_NAME), cfg.to_json(), label="config",
                    indent=2, sort_keys=True)
  atomic.write_text(os.path.join(model_dir, "flags.txt"), to_flags_text(cfg), label="config")


def load(model_dir: str) -> ExperimentConfig:
  path = os.path.join(model_dir, CONFIG_NAME)
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path} is missing: {model_dir!r} is not a training run directory")
  with open(path) as f:
    return ExperimentConfig.from_json(json.load(f))


# ---- absl flags ------------------------------------------------------------------------------
_DEFAULTS = ExperimentConfig()
_FLOAT_LISTS = {"task_weights"}
_INT_LISTS = {"hint_levels", "student_levels", "student_exits"}
_DRY_RUN_HELP = "Build the model, print its summary and parameter counts, and exit."


def define_flags(flag_values=flags.FLAGS) -> None:
  """Defines one absl flag per ExperimentConfig field, plus --dry_run (idempotent)."""
  if "method" in flag_values:
    return
  fv = {"flag_values": flag_values}
  for field in dataclasses.fields(ExperimentConfig):
    default = getattr(_DEFAULTS, field.name)
    help_text = field.metadata["help"]
    if isinstance(default, bool):
      flags.DEFINE_bool(field.name, default, help_text, **fv)
    elif isinstance(default, int):
      flags.DEFINE_integer(field.name, default, help_text, **fv)
    elif isinstance(default, float):
      flags.DEFINE_float(field.name, default, help_text, **fv)
    elif isinstance(default, tuple):
      flags.DEFINE_list(field.name, list(map(str, default)), help_text, **fv)
    else:
      flags.DEFINE_string(field.name, default, help_text, **fv)
  flags.DEFINE_bool("dry_run", False, _DRY_RUN_HELP, **fv)


def from_flags(flag_values=flags.FLAGS) -> ExperimentConfig:
  """Maps the parsed flags into a validated ExperimentConfig (the only place flags are read)."""
  values = {}
  for field in dataclasses.fields(ExperimentConfig):
    value = flag_values[field.name].value
    if isinstance(getattr(_DEFAULTS, field.name), tuple):
      items = [v.strip() for v in value if v.strip()]
      try:
        if field.name in _FLOAT_LISTS:
          items = [float(v) for v in items]
        elif field.name in _INT_LISTS:
          items = [int(v) for v in items]
      except ValueError as e:
        raise ValueError(f"--{field.name}: expected a comma list of numbers, got {value}") from e
      value = tuple(items)
    values[field.name] = value
  return ExperimentConfig(**values).validate()


def parse_flagfile(*paths: str, **overrides) -> ExperimentConfig:
  """Reads flagfiles, later ones overriding earlier ones (relative paths inside them resolve
  from the working directory), into a validated ExperimentConfig, then applies `overrides`."""
  for path in paths:
    if not os.path.exists(path):
      raise FileNotFoundError(f"flagfile {path} does not exist")
  values = flags.FlagValues()
  define_flags(values)
  values(["parse_flagfile", *[f"--flagfile={path}" for path in paths]])
  return dataclasses.replace(from_flags(values), **overrides).validate()


# Fields that define the trained network or the data it expects: a flag given to `evaluate` or
# `export` (typically through the training flagfile) must agree with the run's config.json.
MODEL_FIELDS = ("dataset", "tasks", "num_classes", "height", "width", "method", "distill",
                "full", "backbone", "decoder", "width_multiplier", "student_channels",
                "student_levels", "student_exits", "student_exit", "hint_levels",
                "teaching_tasks", "adaptation", "hint_source", "two_way")


def run_overrides(flag_values, model_dir: str, settable: tuple) -> dict:
  """Reads the flags given to a command that works on a trained run (evaluate, export).

  A user passes the training flagfile to every command, so every ExperimentConfig flag is
  accepted: the `settable` ones that were given override the run's config (returned as a
  dict); a given MODEL_FIELDS flag that disagrees with the run's config.json is an error
  naming both values; training-only flags (epochs, learning rate, ...) are read and ignored.
  """
  saved = load(model_dir)
  given = {f.name for f in dataclasses.fields(ExperimentConfig)
           if flag_values[f.name].present and f.name != "model_dir"}
  if not given:
    return {}
  parsed = from_flags(flag_values)
  overrides = {name: getattr(parsed, name) for name in settable if name in given}
  differ = [f"--{name}={_as_flag_value(getattr(parsed, name))} but the run was trained with "
            f"{_as_flag_value(getattr(saved, name))}"
            for name in MODEL_FIELDS
            if name in given and getattr(parsed, name) != getattr(saved, name)]
  if differ:
    raise ValueError(f"the flags disagree with {os.path.join(model_dir, CONFIG_NAME)}: "
                     + "; ".join(differ) + " (is it the flagfile this run was trained with?)")
  return overrides


def _as_flag_value(value) -> str:
  return ",".join(map(str, value)) if isinstance(value, tuple) else str(value)
