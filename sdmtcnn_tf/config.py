"""Experiment configuration: absl flag definitions -> one frozen, validated ExperimentConfig.

An ExperimentConfig holds five frozen sub-configs: `data` (the records and the input pipeline),
`model` (the network), `method` (the training method and its distillation settings), `optim`
(the optimisation) and `run` (the run directory and execution). Each leaf field is declared
with `option(default, help)` and is one absl flag of the same name (the one exception:
`method.name` is the flag --method). Flag names stay flat everywhere outside the dataclasses:
`from_flat`, `replace`, `parse_flagfile(**overrides)`, `to_json` / `from_json` (config.json)
and `flags.txt` all use them, and `FLAG_FIELDS` maps each to its (group, field).

Flags are read exactly once, in `from_flags`; nothing below the CLIs reads flags. The run
directory gets `flags.txt` (every resolved flag, reusable as a --flagfile) and `config.json`
(the flat {flag: value} dict), from which `evaluate` and `export` rebuild the model.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os

from absl import flags

from sdmtcnn_tf import tasks as tasks_lib
from sdmtcnn_tf.data import taskonomy_units

DISTILLS = ("none", "eq5", "eq6")
BACKBONES = ("segnet", "unet")
DECODERS = ("per_task", "shared")
DATASETS = ("synthetic", "nyuv2", "cityscapes", "taskonomy", "custom")
DISTRIBUTIONS = ("default", "mirrored", "multi_worker")
ADAPTATIONS = ("conv1x1", "bottleneck")
OPTIMIZERS = ("adam", "sgd")
# Keras dtype policies: off = float32; bf16 is what TPUs and CPUs with AMX run fast
PRECISIONS = ("off", "mixed_float16", "mixed_bfloat16")
HINT_REDUCTIONS = ("mean", "sum")
HINT_SOURCES = ("default", "mirrored", "deepest")
# MTAN's conv init (PyTorch nn.init.xavier_normal_, untruncated) | Keras' GlorotNormal (truncated)
KERNEL_INITIALIZERS = ("xavier_normal", "glorot_normal")
# Taskonomy labels: Standley et al.'s standardised PNG values | the converter's units
TASKONOMY_LABEL_UNITS = taskonomy_units.UNITS


def option(default, help_text: str, choices: tuple | None = None, flag: str | None = None):
  """A config field with its default and the help text of its absl flag. `choices`: the
  allowed values (the flag is then a DEFINE_enum); `flag`: the flag's name when it is not the
  field's."""
  metadata = {"help": help_text}
  if choices is not None:
    metadata["choices"] = tuple(choices)
  if flag is not None:
    metadata["flag"] = flag
  return dataclasses.field(default=default, metadata=metadata)


@dataclasses.dataclass(frozen=True)
class DataConfig:
  """The records a run reads and the input pipeline. Sizes in pixels."""

  data_dir: str = option("", "Folder with the converted TFRecords and manifest.json.")
  dataset: str = option("synthetic", "Dataset the config is for; 'synthetic' is generated into "
                                     "--data_dir if absent; 'custom' = records you wrote yourself "
                                     "in the schema of data/schema.py.", choices=DATASETS)
  tasks: tuple = option(("semseg", "depth", "normals"), "Comma list of tasks: semseg, depth, "
                                                        "normals, keypoints, edges (or a "
                                                        "registered task, see sdmtcnn_tf/tasks).")
  num_classes: int = option(13, "Semantic classes (NYUv2 13, CityScapes 7, synthetic 13).")
  height: int = option(288, "Input/label height in pixels (multiple of 32).")
  width: int = option(384, "Input/label width in pixels (multiple of 32).")
  data_seed: int = option(0, "Seed of the generated synthetic dataset (--dataset=synthetic); a "
                             "seed sweep varies --seed only and shares one --data_dir.")
  augment: bool = option(False, "Random scale-crop and horizontal flip (MTAN protocol; off in the "
                                "paper).")
  shuffle_buffer: int = option(256, "Shuffle buffer of the training pipeline (examples).")
  # evaluation
  eval_batch_size: int = option(2, "Evaluation batch size (a multiple of --legacy_batch_size).")
  legacy_batch_size: int = option(2, "Batch size of the per-batch legacy (paper-comparable) "
                                     "metrics.")
  taskonomy_label_units: str = option(
      "standley", "--dataset=taskonomy: the units the depth, keypoints and edges labels train "
                  "and evaluate in: standley (Standley et al.'s taskgrouping loader, the "
                  "paper's protocol: depth (z - 1500) / 1000 with z the depth_zbuffer PNG value "
                  "(1/512 m), valid below z = 8192; keypoints (k - 50) / 100; edges "
                  "(e - 718) / 1070) | converted (as datasets.taskonomy stores them: metres, "
                  "PNG / 65535). Other datasets keep their converted units.",
      choices=TASKONOMY_LABEL_UNITS)
  # synthetic data (used when dataset == "synthetic")
  synthetic_num_train: int = option(64, "Synthetic training images generated when absent.")
  synthetic_num_val: int = option(16, "Synthetic validation images generated when absent.")

  @property
  def label_units(self) -> str:
    """The units the labels train and evaluate in: --taskonomy_label_units for Taskonomy,
    "converted" (the records' own) for every other dataset."""
    return self.taskonomy_label_units if self.dataset == "taskonomy" else "converted"


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """The network's architecture (the method adds its student heads, exits and hints)."""

  backbone: str = option("segnet", "segnet | unet.", choices=BACKBONES)
  decoder: str = option("per_task", "per_task (one decoder per task, the paper's) | shared (MTAN "
                                    "split SegNet).", choices=DECODERS)
  width_multiplier: float = option(1.0, "Scales every filter count (tests/demo use < 1).")
  student_channels: int = option(128, "Filters of the student heads' convs (scaled by "
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
  adaptation: str = option("conv1x1", "Adaptation layer: conv1x1 | bottleneck.",
                           choices=ADAPTATIONS)
  kernel_initializer: str = option(
      "xavier_normal", "Kernel initialiser of the SegNet/U-Net convolutions and task heads: "
                       "xavier_normal (MTAN's PyTorch nn.init.xavier_normal_: a normal of std "
                       "sqrt(2 / (fan_in + fan_out)), untruncated) | glorot_normal (Keras': the "
                       "same std, truncated at 2 standard deviations).",
      choices=KERNEL_INITIALIZERS)


@dataclasses.dataclass(frozen=True)
class MethodConfig:
  """The training method and its (self-)distillation settings (RECON: METHOD.md; defaults
  DECIDED from BYOT's code). `name` is the --method flag."""

  # a plain string flag, not an enum: methods.register may add methods after the flags exist
  name: str = option("vanilla", "vanilla | sd_vanilla | traditional_kd | sd_mtcnn.",
                     flag="method")
  distill: str = option("none", "none | eq5 | eq6. sd_mtcnn: decoder->encoder hints always, eq5 "
                                "adds output KD (⋆), eq6 is the hints alone (⋆⋆); sd_vanilla: "
                                "exits taught by the outputs (eq5) or the deepest feature (eq6); "
                                "traditional_kd: eq5.", choices=DISTILLS)
  full: bool = option(False, "SD-MTCNN full: every decoder stage teaches its mirrored encoder "
                             "stage (hints at levels 1..5) and the student reads enc3..enc5, "
                             "under either equation.")
  alpha: float = option(0.3, "Eq. 5 weight of output distillation; the student's GT loss gets 1 - "
                             "alpha.")
  temperature: float = option(3.0, "Eq. 4-5 softmax temperature tau.")
  hint_weight: float = option(1.0, "Eq. 6 feature-hint weight lambda.")
  hint_reduction: str = option("mean", "How lambda weighs the run's hint pairs (decoder stage -> "
                                       "encoder stage, per teaching decoder): mean (lambda times "
                                       "their average, so more tasks or levels do not scale the "
                                       "feature objective) | sum (lambda per pair).",
                               choices=HINT_REDUCTIONS)
  student_gt_weight: float = option(-1.0, "Student ground-truth loss weight; < 0 = 1-alpha (eq5) "
                                          "or 1 (eq6).")
  hint_levels: tuple = option((), "Comma list of levels 1..5 distilled by Eq. 6; empty = 5, or "
                                  "1..5 if --full.")
  teaching_tasks: tuple = option((), "Comma list of tasks whose decoders teach; empty = all tasks.")
  hint_source: str = option("default", "Which decoder feature teaches a hinted encoder feature: "
                                       "default (the method's: mirrored for sd_mtcnn, deepest for "
                                       "sd_vanilla) | mirrored (the decoder stage of the same "
                                       "size) | deepest (the last decoder feature, "
                                       "average-pooled).", choices=HINT_SOURCES)
  two_way: bool = option(False, "Let distillation gradients reach the teacher (no stop-gradient).")
  teacher_dir: str = option("", "traditional_kd: run directory of a trained vanilla teacher.")

  @property
  def resolved_hint_levels(self) -> tuple:
    if self.hint_levels:
      return tuple(self.hint_levels)
    return (1, 2, 3, 4, 5) if self.full else (5,)

  @property
  def resolved_student_gt_weight(self) -> float:
    if self.student_gt_weight >= 0:
      return self.student_gt_weight
    return 1.0 - self.alpha if self.distill == "eq5" else 1.0


@dataclasses.dataclass(frozen=True)
class OptimConfig:
  """Optimisation. Units: learning rate per step."""

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
  optimizer: str = option("adam", "adam (MTAN's) | sgd (momentum 0.9).", choices=OPTIMIZERS)
  adam_epsilon: float = option(1e-8, "Adam's epsilon (PyTorch's default 1e-8, MTAN's; Keras' "
                                     "default is 1e-7).")
  max_loss: float = option(1e6, "Stop training (as on NaN) when the total loss exceeds this: the "
                                "run diverged.")


@dataclasses.dataclass(frozen=True)
class RunConfig:
  """The run directory and how the run executes."""

  model_dir: str = option("", "Run directory: checkpoints, logs, results, exports.")
  seed: int = option(0, "Random seed (weights, shuffling, augmentation).")
  deterministic: bool = option(False, "Deterministic input pipeline: a fixed file interleave "
                                      "order (slower). TF's kernels are not made deterministic "
                                      "(tf.config.experimental.enable_op_determinism is not "
                                      "called).")
  distribution: str = option("default", "default (one device) | mirrored (MirroredStrategy over "
                                        "all local GPUs) | multi_worker "
                                        "(MultiWorkerMirroredStrategy over the cluster in the "
                                        "TF_CONFIG environment variable, as Kubeflow's TFJob, "
                                        "Vertex AI and GKE set it; python -m sdmtcnn_tf.launch "
                                        "sets it on this machine).", choices=DISTRIBUTIONS)
  mixed_precision: str = option("off", "Compute dtype policy: off (float32) | mixed_float16 "
                                       "(GPUs; loss scaling) | mixed_bfloat16 (CPUs with AMX, "
                                       "TPUs, Ampere+ GPUs). Variables, losses, metrics and "
                                       "the outputs stay float32.", choices=PRECISIONS)
  jit_compile: bool = option(False, "XLA-compile the train, test and predict steps (every layer "
                                     "compiles, SegNet's unpooling included; meant for GPUs: on "
                                     "CPU XLA is no faster and traces slower; not with "
                                     "--distribution=mirrored over CPU devices).")
  precise_bn_batches: int = option(0, "After training, re-estimate BatchNorm moving statistics "
                                      "over this many training batches (0 = off, as MTAN).")
  validation_freq: int = option(1, "Validate every this many epochs during training.")
  backup_every_steps: int = option(0, "BackupAndRestore frequency in steps; 0 = every epoch.")
  image_summary_every: int = option(0, "Every this many epochs, write prediction figures of the "
                                       "first validation images (input, truth, each role's "
                                       "prediction and error per task) to the TensorBoard logs "
                                       "(logs/images); 0 = never.")
  verbose: int = option(1, "Keras fit verbosity: 0 silent, 1 progress bar, 2 one line per epoch.")


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
  """Everything that defines a run, as five sub-configs. Code reads `cfg.data.height`,
  `cfg.method.name`, ...; code that works on flag names uses `from_flat`, `replace`,
  `flag_value` and `to_json`, which take and give the flat flag names (FLAG_FIELDS)."""

  data: DataConfig = dataclasses.field(default_factory=DataConfig)
  model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
  method: MethodConfig = dataclasses.field(default_factory=MethodConfig)
  optim: OptimConfig = dataclasses.field(default_factory=OptimConfig)
  run: RunConfig = dataclasses.field(default_factory=RunConfig)

  # ---- flat flag names ---------------------------------------------------------------------
  @classmethod
  def from_flat(cls, **values) -> "ExperimentConfig":
    """The defaults with the given flags (flat names: `from_flat(height=32, method="sd_mtcnn")`)
    set; not validated (call .validate()). An unknown name is a ValueError naming it."""
    return cls()._with(values)

  def replace(self, **changes) -> "ExperimentConfig":
    """A validated copy with the given flags (flat names) changed."""
    return self._with(changes).validate()

  def flag_value(self, name: str):
    """The value of the flag `name` (e.g. "height" -> self.data.height)."""
    group, field = _route(name)
    return getattr(getattr(self, group), field)

  def _with(self, changes: dict) -> "ExperimentConfig":
    unknown = sorted(set(changes) - set(FLAG_FIELDS))
    if unknown:
      raise ValueError(f"unknown config field(s) {unknown}: expected flag names such as "
                       "height or method")
    by_group = {}
    for name, value in changes.items():
      group, field = FLAG_FIELDS[name]
      by_group.setdefault(group, {})[field] = value
    return dataclasses.replace(self, **{
        group: dataclasses.replace(getattr(self, group), **fields)
        for group, fields in by_group.items()})

  # ---- derived values ---------------------------------------------------------------------
  # (resolved_hint_levels and resolved_student_gt_weight live on MethodConfig)
  @property
  def task_specs(self) -> tuple:
    """The Task objects of --tasks (tasks/), in canonical order."""
    return tasks_lib.from_config(self)

  @property
  def resolved_student_levels(self) -> tuple:
    """Levels (deepest first) whose encoder features the student heads merge."""
    if self.model.student_levels:
      return tuple(sorted(self.model.student_levels, reverse=True))
    return (5, 4, 3) if self.method.full else ()

  @property
  def resolved_teaching_tasks(self) -> tuple:
    return (tuple(self.method.teaching_tasks) if self.method.teaching_tasks
            else tuple(self.data.tasks))

  def task_weight(self, task: str) -> float:
    if not self.optim.task_weights:
      return 1.0
    return float(self.optim.task_weights[list(self.data.tasks).index(task)])

  # ---- validation -------------------------------------------------------------------------
  def validate(self) -> "ExperimentConfig":
    """Raises ValueError naming the flag and what was expected."""
    def need(cond, flag, expected, got):
      if not cond:
        raise ValueError(f"--{flag}: expected {expected}, got {got!r}")
    data, model, method, optim, run = self.data, self.model, self.method, self.optim, self.run
    try:
      tasks_lib.canonical(data.tasks)
    except ValueError as e:
      raise ValueError(f"--tasks: {e}") from None
    need(len(data.tasks) > 0, "tasks", "at least one task", data.tasks)
    from sdmtcnn_tf import methods  # lazily: methods build models, which read configs
    need(method.name in methods.names(), "method", f"one of {methods.names()}", method.name)
    # the enum flags (choices=) check these on the command line; configs built in code here
    need(method.distill in DISTILLS, "distill", f"one of {DISTILLS}", method.distill)
    need(model.backbone in BACKBONES, "backbone", f"one of {BACKBONES}", model.backbone)
    need(model.decoder in DECODERS, "decoder", f"one of {DECODERS}", model.decoder)
    need(data.dataset in DATASETS, "dataset", f"one of {DATASETS}", data.dataset)
    need(run.distribution in DISTRIBUTIONS, "distribution", f"one of {DISTRIBUTIONS}",
         run.distribution)
    need(run.mixed_precision in PRECISIONS, "mixed_precision", f"one of {PRECISIONS}",
         run.mixed_precision)
    need(model.adaptation in ADAPTATIONS, "adaptation", f"one of {ADAPTATIONS}", model.adaptation)
    need(method.hint_source in HINT_SOURCES, "hint_source", f"one of {HINT_SOURCES}",
         method.hint_source)
    need(data.height > 0 and data.height % 32 == 0, "height", "a positive multiple of 32",
         data.height)
    need(data.width > 0 and data.width % 32 == 0, "width", "a positive multiple of 32",
         data.width)
    need(data.num_classes >= 2, "num_classes", "at least 2", data.num_classes)
    need(optim.batch_size >= 1, "batch_size", "at least 1", optim.batch_size)
    need(data.eval_batch_size >= 1, "eval_batch_size", "at least 1", data.eval_batch_size)
    need(data.legacy_batch_size >= 1, "legacy_batch_size", "at least 1", data.legacy_batch_size)
    need(data.eval_batch_size % data.legacy_batch_size == 0, "eval_batch_size",
         f"a multiple of --legacy_batch_size={data.legacy_batch_size}", data.eval_batch_size)
    need(optim.epochs >= 1, "epochs", "at least 1", optim.epochs)
    need(optim.steps_per_epoch >= 0, "steps_per_epoch", ">= 0 (0 = one pass)",
         optim.steps_per_epoch)
    need(math.isfinite(optim.learning_rate) and optim.learning_rate > 0, "learning_rate",
         "a finite value > 0", optim.learning_rate)
    need(math.isfinite(optim.max_loss) and optim.max_loss > 0, "max_loss", "a finite value > 0",
         optim.max_loss)
    need(run.seed >= 0, "seed", ">= 0", run.seed)
    need(data.data_seed >= 0, "data_seed", ">= 0", data.data_seed)
    need(data.shuffle_buffer >= 1, "shuffle_buffer", "at least 1", data.shuffle_buffer)
    need(model.student_channels >= 1, "student_channels", "at least 1", model.student_channels)
    need(method.hint_weight >= 0, "hint_weight", ">= 0", method.hint_weight)
    need(method.hint_reduction in HINT_REDUCTIONS, "hint_reduction",
         f"one of {', '.join(HINT_REDUCTIONS)}", method.hint_reduction)
    need(run.precise_bn_batches >= 0, "precise_bn_batches", ">= 0", run.precise_bn_batches)
    need(run.backup_every_steps >= 0, "backup_every_steps", ">= 0 (0 = every epoch)",
         run.backup_every_steps)
    need(data.synthetic_num_train >= 1, "synthetic_num_train", "at least 1",
         data.synthetic_num_train)
    need(data.synthetic_num_val >= 1, "synthetic_num_val", "at least 1", data.synthetic_num_val)
    need(run.verbose in (0, 1, 2), "verbose", "0, 1 or 2", run.verbose)
    need(all(w >= 0 and math.isfinite(w) for w in optim.task_weights), "task_weights",
         "finite values >= 0", optim.task_weights)
    # (a repeated --tasks entry is caught by tasks.canonical above)
    for flag in ("hint_levels", "teaching_tasks", "student_levels", "student_exits"):
      values = list(self.flag_value(flag))
      repeated = sorted({str(v) for v in values if values.count(v) > 1})
      need(not repeated, flag, "each entry once", f"{','.join(map(str, values))} "
           f"(repeated: {','.join(repeated)})")
    need(run.validation_freq >= 1, "validation_freq", "at least 1", run.validation_freq)
    need(run.image_summary_every >= 0, "image_summary_every", ">= 0 (0 = never)",
         run.image_summary_every)
    need(optim.lr_decay_epochs >= 0, "lr_decay_epochs", ">= 0 (0 = never decay)",
         optim.lr_decay_epochs)
    need(model.width_multiplier > 0, "width_multiplier", "> 0", model.width_multiplier)
    need(0.0 <= method.alpha <= 1.0, "alpha", "a value in [0, 1]", method.alpha)
    need(method.temperature > 0, "temperature", "> 0", method.temperature)
    need(not optim.task_weights or len(optim.task_weights) == len(data.tasks), "task_weights",
         f"{len(data.tasks)} values (one per --tasks entry)", optim.task_weights)
    need(all(l in (1, 2, 3, 4, 5) for l in method.hint_levels), "hint_levels",
         "levels among 1..5", method.hint_levels)
    levels = sorted(model.student_levels, reverse=True)
    need(levels == list(range(5, 5 - len(levels), -1)), "student_levels",
         "a contiguous run of levels starting at 5 (e.g. 5,4,3)", model.student_levels)
    need(optim.optimizer in OPTIMIZERS, "optimizer", f"one of {OPTIMIZERS}", optim.optimizer)
    need(math.isfinite(optim.adam_epsilon) and optim.adam_epsilon > 0, "adam_epsilon",
         "a finite value > 0", optim.adam_epsilon)
    need(model.kernel_initializer in KERNEL_INITIALIZERS, "kernel_initializer",
         f"one of {KERNEL_INITIALIZERS}", model.kernel_initializer)
    need(data.taskonomy_label_units in TASKONOMY_LABEL_UNITS, "taskonomy_label_units",
         f"one of {TASKONOMY_LABEL_UNITS}", data.taskonomy_label_units)
    need(all(t in data.tasks for t in method.teaching_tasks), "teaching_tasks",
         f"a subset of --tasks={','.join(data.tasks)}", method.teaching_tasks)
    methods.get(method.name).validate(self)  # each method checks the flags it reads
    need(model.backbone == "segnet" or model.decoder == "per_task", "decoder",
         "per_task with --backbone=unet", model.decoder)
    return self

  # ---- (de)serialisation ------------------------------------------------------------------
  def to_json(self) -> dict:
    """The flat {flag name: value} dict of config.json (tuples as lists)."""
    return {name: list(v) if isinstance(v, tuple) else v
            for name in FLAG_FIELDS for v in (self.flag_value(name),)}

  @classmethod
  def from_json(cls, raw: dict) -> "ExperimentConfig":
    """The validated config of a flat config.json dict; a flag absent from it (added since
    the run was written) takes the value such runs had (`with_absent_flags`)."""
    unknown = sorted(set(raw) - set(FLAG_FIELDS))
    if unknown:
      raise ValueError(f"config has unknown field(s) {unknown}")
    values = {k: tuple(v) if isinstance(v, list) else v
              for k, v in with_absent_flags(raw).items()}
    if isinstance(values.get("mixed_precision"), bool):  # runs written when it was a boolean
      values["mixed_precision"] = "mixed_float16" if values["mixed_precision"] else "off"
    return cls.from_flat(**values).validate()


def _leaves() -> tuple:
  """(flag name, group, dataclasses.Field) of every leaf field, in declaration order."""
  leaves = []
  for group in dataclasses.fields(ExperimentConfig):
    for field in dataclasses.fields(group.default_factory):
      leaves.append((field.metadata.get("flag", field.name), group.name, field))
  return tuple(leaves)


_LEAVES = _leaves()
# flag name -> (group, field name): the one table between the flat flag names and the groups
FLAG_FIELDS = {flag: (group, field.name) for flag, group, field in _LEAVES}
if len(FLAG_FIELDS) != len(_LEAVES):
  raise AssertionError("two config fields share a flag name")


def _route(name: str) -> tuple:
  try:
    return FLAG_FIELDS[name]
  except KeyError:
    raise ValueError(f"unknown config field {name!r}: expected a flag name such as height or "
                     "method") from None


CONFIG_NAME = "config.json"


def values_before_flags(raw: dict) -> dict:
  """The flags whose default changes what a run does (the paper-faithful values, added in one
  fidelity change), each with the value a run ran with before the flag existed, for a flat
  config.json dict `raw` (a flag that did not affect that run is left out)."""
  values = {"kernel_initializer": "glorot_normal"}  # Keras' truncated GlorotNormal
  if raw.get("optimizer", "adam") == "adam":
    values["adam_epsilon"] = 1e-7  # Keras' default
  if raw.get("dataset") == "taskonomy":
    values["taskonomy_label_units"] = "converted"  # the records' metres and PNG / 65535
  return values


def with_absent_flags(raw: dict) -> dict:
  """A flat config.json dict completed with every flag it lacks (added since the run was
  written): the value the run had before the flag existed (`values_before_flags`), else the
  flag's default, which reproduces what runs did before it existed. So an old run loads as
  it ran (evaluate, export, resuming, reports)."""
  defaults = {**ExperimentConfig().to_json(), **values_before_flags(raw)}
  return {**{k: v for k, v in defaults.items() if k not in raw}, **raw}


def to_flags_text(cfg: ExperimentConfig) -> str:
  """Every flag as a `--name=value` line: a flagfile that reproduces `cfg`."""
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


# Flags that say where a run, its data and its teacher run live, never what the run is: a run
# directory copied or moved elsewhere resumes there, and one whose data moved resumes with the
# new --data_dir (the records are checked against the run's tasks, size and classes, as always).
LOCATION_FIELDS = ("model_dir", "data_dir", "teacher_dir")


def load(model_dir: str) -> ExperimentConfig:
  """The config of the run in `model_dir`, with --model_dir = `model_dir`: where the run is
  now, not where it was written (config.json records that; the run may have moved since)."""
  path = os.path.join(model_dir, CONFIG_NAME)
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path} is missing: {model_dir!r} is not a training run directory")
  with open(path) as f:
    return ExperimentConfig.from_json({**json.load(f), "model_dir": model_dir})


# ---- absl flags ------------------------------------------------------------------------------
_FLOAT_LISTS = {"task_weights"}
_INT_LISTS = {"hint_levels", "student_levels", "student_exits"}
_DRY_RUN_HELP = "Build the model, print its summary and parameter counts, and exit."


def define_flags(flag_values=flags.FLAGS) -> None:
  """Defines one absl flag per leaf config field (FLAG_FIELDS), plus --dry_run (idempotent).
  A field with `choices` is a DEFINE_enum: a wrong value is absl's error naming the flag."""
  if "method" in flag_values:
    return
  fv = {"flag_values": flag_values}
  for name, _, field in _LEAVES:
    default, help_text = field.default, field.metadata["help"]
    if "choices" in field.metadata:
      flags.DEFINE_enum(name, default, list(field.metadata["choices"]), help_text, **fv)
    elif isinstance(default, bool):
      flags.DEFINE_bool(name, default, help_text, **fv)
    elif isinstance(default, int):
      flags.DEFINE_integer(name, default, help_text, **fv)
    elif isinstance(default, float):
      flags.DEFINE_float(name, default, help_text, **fv)
    elif isinstance(default, tuple):
      flags.DEFINE_list(name, list(map(str, default)), help_text, **fv)
    else:
      flags.DEFINE_string(name, default, help_text, **fv)
  flags.DEFINE_bool("dry_run", False, _DRY_RUN_HELP, **fv)


def from_flags(flag_values=flags.FLAGS) -> ExperimentConfig:
  """Maps the parsed flags into a validated ExperimentConfig (the only place flags are read)."""
  values = {}
  for name, _, field in _LEAVES:
    value = flag_values[name].value
    if isinstance(field.default, tuple):
      items = [v.strip() for v in value if v.strip()]
      try:
        if name in _FLOAT_LISTS:
          items = [float(v) for v in items]
        elif name in _INT_LISTS:
          items = [int(v) for v in items]
      except ValueError as e:
        raise ValueError(f"--{name}: expected a comma list of numbers, got {value}") from e
      value = tuple(items)
    values[name] = value
  return ExperimentConfig.from_flat(**values).validate()


def parse_flagfile(*paths: str, **overrides) -> ExperimentConfig:
  """Reads flagfiles, later ones overriding earlier ones (relative paths inside them resolve
  from the working directory), into a validated ExperimentConfig, then applies `overrides`
  (flat flag names, as `ExperimentConfig.replace`)."""
  for path in paths:
    if not os.path.exists(path):
      raise FileNotFoundError(f"flagfile {path} does not exist")
  values = flags.FlagValues()
  define_flags(values)
  try:
    values(["parse_flagfile", *[f"--flagfile={path}" for path in paths]])
  except flags.Error as e:  # e.g. "flag --backbone=x: value should be one of <segnet|unet>"
    raise ValueError(f"{', '.join(paths)}: {e}") from None
  return from_flags(values).replace(**overrides)


# Flags that define the trained network or the data it expects: a flag given to `evaluate` or
# `export` (typically through the training flagfile) must agree with the run's config.json.
MODEL_FIELDS = ("dataset", "tasks", "num_classes", "height", "width", "method", "distill",
                "full", "backbone", "decoder", "width_multiplier", "student_channels",
                "student_levels", "student_exits", "student_exit", "hint_levels",
                "teaching_tasks", "adaptation", "hint_source", "two_way",
                "taskonomy_label_units")


def run_overrides(flag_values, model_dir: str, settable: tuple) -> dict:
  """Reads the flags given to a command that works on a trained run (evaluate, export).

  A user passes the training flagfile to every command, so every ExperimentConfig flag is
  accepted: the `settable` ones that were given override the run's config (returned as a
  dict of flag names); a given MODEL_FIELDS flag that disagrees with the run's config.json is
  an error naming both values; training-only flags (epochs, learning rate, ...) are read and
  ignored.
  """
  saved = load(model_dir)
  given = {name for name in FLAG_FIELDS if flag_values[name].present and name != "model_dir"}
  if not given:
    return {}
  parsed = from_flags(flag_values)
  overrides = {name: parsed.flag_value(name) for name in settable if name in given}
  differ = [f"--{name}={_as_flag_value(parsed.flag_value(name))} but the run was trained with "
            f"{_as_flag_value(saved.flag_value(name))}"
            for name in MODEL_FIELDS
            if name in given and parsed.flag_value(name) != saved.flag_value(name)]
  if differ:
    raise ValueError(f"the flags disagree with {os.path.join(model_dir, CONFIG_NAME)}: "
                     + "; ".join(differ) + " (is it the flagfile this run was trained with?)")
  return overrides


def _as_flag_value(value) -> str:
  return ",".join(map(str, value)) if isinstance(value, tuple) else str(value)
