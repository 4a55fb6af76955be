"""What the CLIs share: data preparation, model construction and loading a trained run."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os

import keras
import tensorflow as tf

from sdmtcnn_tf import atomic, methods, optimizers, rundir
from sdmtcnn_tf import config as config_lib
from sdmtcnn_tf.config import ExperimentConfig
from sdmtcnn_tf.data import pipeline, schema
from sdmtcnn_tf.model import MultiTaskModel
from sdmtcnn_tf.methods.traditional_kd import check_teacher
from sdmtcnn_tf.models.build import Network, build_network
from sdmtcnn_tf.rundir import RunPaths

TRAIN_SPLIT = "train"
EVAL_SPLIT = "val"


def prepare_data(cfg: ExperimentConfig, split: str) -> schema.Manifest:
  """Checks (and for the synthetic dataset, first generates) --data_dir; returns the manifest.

  Raises before any training with a message naming the flag or file at fault.
  """
  if not cfg.data.data_dir:
    raise ValueError("--data_dir is required: the folder of the dataset's records (the "
                     "configs/ flagfiles set it, e.g. --flagfile=configs/synthetic_vanilla.flags)")
  if cfg.data.dataset == "synthetic":
    from sdmtcnn_tf.data import synthetic
    with _generation_lock(cfg.data.data_dir):
      synthetic.ensure_dataset(cfg.data.data_dir, cfg.data.synthetic_num_train,
                               cfg.data.synthetic_num_val, cfg.data.height, cfg.data.width,
                               seed=cfg.data.data_seed)
  elif not os.path.isdir(cfg.data.data_dir):
    how = ("write the records first (data/schema.py)" if cfg.data.dataset == "custom" else
           f"convert the {cfg.data.dataset} dataset first (python -m datasets.{cfg.data.dataset})")
    raise FileNotFoundError(f"--data_dir={cfg.data.data_dir} does not exist; {how}")
  return pipeline.check_dataset(cfg.data.data_dir, split, cfg.data.tasks, cfg.data.height,
                                cfg.data.width, cfg.data.num_classes)


@contextlib.contextmanager
def _generation_lock(data_dir: str):
  """Held while the synthetic dataset is checked or generated: the workers of a multi-worker run
  start together, and one generates it while the others wait and then reuse it. The lock file,
  `.<name>.lock`, sits beside the data directory."""
  parent, name = os.path.split(os.path.abspath(data_dir))
  os.makedirs(parent, exist_ok=True)
  with open(os.path.join(parent, f".{name}.lock"), "a") as f:
    fcntl.flock(f, fcntl.LOCK_EX)
    yield


def check_against_data(cfg: ExperimentConfig, train_manifest: schema.Manifest) -> None:
  """Checks the values that depend on the data's size (the training split drops its last
  incomplete batch, so a batch larger than the split would train no step)."""
  size = train_manifest.num_examples(TRAIN_SPLIT)
  if cfg.optim.batch_size > size:
    raise ValueError(f"--batch_size={cfg.optim.batch_size} exceeds the {size} training examples of "
                     f"{cfg.data.data_dir}/{schema.MANIFEST_NAME}; expected at most {size}")


def build_model(cfg: ExperimentConfig, teacher_cfg: ExperimentConfig | None = None
                ) -> tuple[Network, MultiTaskModel]:
  """Builds the network and its training wrapper (call inside the strategy scope).
  traditional_kd: `teacher_cfg` as from teacher_config (None: a vanilla teacher like cfg)."""
  keras.utils.set_random_seed(cfg.run.seed)  # the builder is pure: the entry points seed
  network = build_network(cfg, teacher_cfg)
  return network, MultiTaskModel(network, cfg)


def steps_per_epoch(cfg: ExperimentConfig, train_manifest: schema.Manifest) -> int:
  """Optimizer steps per training epoch: --steps_per_epoch, or one pass over the training
  split with its last incomplete batch dropped (as the training pipeline batches it)."""
  return cfg.optim.steps_per_epoch or pipeline.steps_per_epoch(train_manifest, TRAIN_SPLIT,
                                                               cfg.optim.batch_size)


def learning_rate(cfg: ExperimentConfig, steps_per_epoch: int):
  """--learning_rate halved every --lr_decay_epochs epochs (MTAN's StepLR(100, 0.5)), as a
  schedule of the optimizer's step count: the backup saves that count with the optimizer, so a
  resumed run continues the schedule. Constant when --lr_decay_epochs=0, or when the steps per
  epoch are unknown (0: a model compiled only to be evaluated)."""
  if cfg.optim.lr_decay_epochs == 0 or steps_per_epoch <= 0:
    return cfg.optim.learning_rate
  return keras.optimizers.schedules.ExponentialDecay(
      cfg.optim.learning_rate, decay_steps=cfg.optim.lr_decay_epochs * steps_per_epoch,
      decay_rate=0.5, staircase=True)


def make_optimizer(cfg: ExperimentConfig, steps_per_epoch: int = 0) -> keras.optimizers.Optimizer:
  """`steps_per_epoch` (see steps_per_epoch()) places the rate's decay; 0 = --steps_per_epoch,
  and when that is 0 too the rate stays constant. Adam's epsilon is --adam_epsilon; Keras adds
  it to the uncorrected root sqrt(v) (Kingma & Ba's epsilon-hat), PyTorch to the bias-corrected
  one, so here it acts as PyTorch's epsilon / sqrt(1 - beta_2^t): 32x at step 1, within 1% of
  it after ~3,900 steps (beta_2 = 0.999)."""
  rate = learning_rate(cfg, steps_per_epoch or cfg.optim.steps_per_epoch)
  if cfg.optim.optimizer == "sgd":
    return optimizers.SGD(rate, momentum=0.9)
  return optimizers.Adam(rate, epsilon=cfg.optim.adam_epsilon)


def compile_model(model: MultiTaskModel, cfg: ExperimentConfig, steps_per_epoch: int = 0) -> None:
  """Compiles `model` (call inside the strategy scope). --jit_compile XLA-compiles the train,
  test and predict steps, or raises ValueError saying what cannot be compiled (Keras itself
  would silently go on without XLA)."""
  if cfg.run.jit_compile:
    check_jit(model)
  model.compile(optimizer=make_optimizer(cfg, steps_per_epoch), jit_compile=cfg.run.jit_compile)
  if cfg.run.jit_compile and not model.jit_compile:
    raise ValueError("--jit_compile: Keras turned XLA off for this model (TensorFlow's op "
                     "determinism is on, or an Apple GPU); run without --jit_compile")


def check_jit(model: keras.Model) -> None:
  """Raises ValueError naming what --jit_compile cannot compile: layers that declare no XLA
  kernel (`supports_jit = False`), and MirroredStrategy over logical CPU devices (XLA cannot
  read a variable that lives on another CPU device). Every layer of our networks compiles,
  SegNet's switch pooling/unpooling included (models/layers.py)."""
  strategy = tf.distribute.get_strategy()
  if strategy.num_replicas_in_sync > 1 and not tf.config.list_logical_devices("GPU"):
    raise ValueError("--jit_compile with --distribution=mirrored over CPU devices: XLA cannot "
                     "read variables placed on another logical CPU device; use one of them")
  blocked = [layer.name for layer in model._flatten_layers(include_self=False)
             if not layer.supports_jit]
  if blocked:
    raise ValueError(f"--jit_compile: {len(blocked)} layer(s) have no XLA kernel: "
                     f"{', '.join(blocked[:5])}; run without --jit_compile")


def resolve_teacher(cfg: ExperimentConfig) -> ExperimentConfig:
  """traditional_kd, first training start: the config of the trained vanilla teacher in
  --teacher_dir, checked against this run's data settings."""
  try:
    trained = config_lib.load(cfg.method.teacher_dir)
  except FileNotFoundError as e:
    raise FileNotFoundError(f"--teacher_dir={cfg.method.teacher_dir}: {e}; train the vanilla "
                            "teacher there first") from None
  check_teacher(trained, cfg, source=f"--teacher_dir={cfg.method.teacher_dir}")
  return trained


def record_teacher(cfg: ExperimentConfig) -> ExperimentConfig:
  """traditional_kd, training start: the first start copies the teacher's config into the run
  directory (RunPaths.teacher_config); later starts read that copy, so the teacher run may
  have moved or been deleted by then. Returns the teacher's config."""
  path = RunPaths(cfg.run.model_dir).teacher_config
  if os.path.exists(path):
    return teacher_config(cfg)
  trained = resolve_teacher(cfg)
  atomic.write_json(path, trained.to_json(), label="teacher_config", indent=2, sort_keys=True)
  return trained


def teacher_config(cfg: ExperimentConfig, model_dir: str = "") -> ExperimentConfig | None:
  """The frozen teacher's config that the traditional_kd run `cfg` recorded in its own
  directory (model_dir, default cfg.run.model_dir); None for the other methods. Runs recorded
  before that copy existed fall back to their --teacher_dir."""
  if not methods.get(cfg.method.name).teacher_run:
    return None
  model_dir = model_dir or cfg.run.model_dir
  path = RunPaths(model_dir).teacher_config
  if not os.path.exists(path):
    if cfg.method.teacher_dir and os.path.isdir(cfg.method.teacher_dir):
      return resolve_teacher(cfg)
    raise FileNotFoundError(f"{path} is missing: the traditional_kd run in {model_dir!r} has "
                            "not started training")
  with open(path) as f:
    trained = ExperimentConfig.from_json(json.load(f))
  check_teacher(trained, cfg, source=path)
  return trained


def has_training_state(model_dir: str) -> bool:
  """Whether training resumes from the run's own files (callbacks.ResumableBackup: the backup,
  the previous backup, or else the per-epoch checkpoint) rather than starting anew."""
  paths = RunPaths(model_dir)
  return any(os.path.exists(p) for p in (paths.backup_latest, paths.backup_previous,
                                         paths.model_weights))


def load_run_weights(model: keras.Model, run_dir: str, role: str = "teacher") -> None:
  """Loads the serving weights a training run saved for `role` (see train.py)."""
  path = RunPaths(run_dir).role_weights(role)
  if not os.path.exists(path):
    raise FileNotFoundError(f"--teacher_dir: {path} is missing; expected a finished vanilla "
                            "training run directory")
  model.load_weights(path)


EVAL_OVERRIDES = ("eval_batch_size", "legacy_batch_size", "data_dir")


def load_trained(model_dir: str, **overrides):
  """Rebuilds a finished (or interrupted) run's network with its latest weights, from where
  the run is now (cfg.run.model_dir = `model_dir`). Reads the run under its shared lock
  (rundir.reading): never while a training run writes it; it writes nothing there, so a
  read-only run directory loads.

  `overrides` may change the evaluation settings (EVAL_OVERRIDES) of the saved config.
  """
  unknown = sorted(set(overrides) - set(EVAL_OVERRIDES))
  if unknown:
    raise ValueError(f"cannot override {unknown} of a trained run; only {EVAL_OVERRIDES}")
  with rundir.reading(model_dir):
    cfg = config_lib.load(model_dir).replace(**overrides)
    paths = RunPaths(model_dir)
    if not os.path.exists(paths.model_weights):
      raise FileNotFoundError(f"{paths.model_weights} is missing: the run in {model_dir!r} has "
                              "not finished an epoch yet")
    network, model = build_model(cfg, teacher_config(cfg, model_dir))
    try:
      network.model.load_weights(paths.model_weights)
    except (OSError, ValueError) as e:
      raise ValueError(f"{paths.model_weights} cannot be loaded into the network of "
                       f"{os.path.join(model_dir, config_lib.CONFIG_NAME)} ({e})") from e
  return cfg, network, model


def dataset(cfg: ExperimentConfig, manifest: schema.Manifest, split: str, training: bool,
            batch_size: int | None = None, with_keys: bool = False):
  """The batched dataset of `split` (batch_size: the GLOBAL batch).

  --distribution=multi_worker: every worker builds the same global batches (same seed, and a
  deterministic order, forced here) and the strategy gives each its slice of every batch
  (tf.data's DATA auto-shard policy, set in pipeline.make_dataset). Each worker thus reads and
  decodes every example, but a step equals a one-process step over the same global batch; a
  FILE policy would read less but give other batches than one process.
  """
  return pipeline.make_dataset(
      cfg.data.data_dir, manifest, split, cfg.data.tasks,
      batch_size or (cfg.optim.batch_size if training else cfg.data.eval_batch_size), training,
      augment=cfg.data.augment, seed=cfg.run.seed,
      deterministic=cfg.run.deterministic or cfg.run.distribution == "multi_worker",
      shuffle_buffer=cfg.data.shuffle_buffer, with_keys=with_keys,
      repeat=training and cfg.optim.steps_per_epoch > 0, label_units=cfg.data.label_units)
