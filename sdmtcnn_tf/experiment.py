"""What the CLIs share: data preparation, model construction and loading a trained run."""

from __future__ import annotations

import os

import keras

from sdmtcnn_tf import config as config_lib
from sdmtcnn_tf.config import ExperimentConfig
from sdmtcnn_tf.data import pipeline, schema
from sdmtcnn_tf.model import MultiTaskModel
from sdmtcnn_tf.models.build import Network, build_network
from sdmtcnn_tf.rundir import RunPaths

TRAIN_SPLIT = "train"
EVAL_SPLIT = "val"


def prepare_data(cfg: ExperimentConfig, split: str) -> schema.Manifest:
  """Checks (and for the synthetic dataset, first generates) cfg.data_dir; returns the manifest.

  Raises before any training with a message naming the flag or file at fault.
  """
  if not cfg.data_dir:
    raise ValueError("--data_dir is required")
  if cfg.dataset == "synthetic":
    from sdmtcnn_tf.data import synthetic
    synthetic.ensure_dataset(cfg.data_dir, cfg.synthetic_num_train, cfg.synthetic_num_val,
                             cfg.height, cfg.width, seed=cfg.seed)
  elif not os.path.isdir(cfg.data_dir):
    raise FileNotFoundError(f"--data_dir={cfg.data_dir} does not exist; convert the "
                            f"{cfg.dataset} dataset first (python -m datasets.{cfg.dataset})")
  return pipeline.check_dataset(cfg.data_dir, split, cfg.tasks, cfg.height, cfg.width,
                                cfg.num_classes)


def build_model(cfg: ExperimentConfig) -> tuple[Network, MultiTaskModel]:
  """Builds the network and its training wrapper (call inside the strategy scope)."""
  network = build_network(cfg)
  return network, MultiTaskModel(network, cfg)


def make_optimizer(cfg: ExperimentConfig) -> keras.optimizers.Optimizer:
  if cfg.optimizer == "sgd":
    return keras.optimizers.SGD(cfg.learning_rate, momentum=0.9)
  return keras.optimizers.Adam(cfg.learning_rate)


def compile_model(model: MultiTaskModel, cfg: ExperimentConfig) -> None:
  model.compile(optimizer=make_optimizer(cfg), jit_compile=cfg.jit_compile)


EVAL_OVERRIDES = ("eval_batch_size", "legacy_batch_size", "data_dir")


def load_trained(model_dir: str, **overrides):
  """Rebuilds a finished (or interrupted) run's network with its latest weights.

  `overrides` may change the evaluation settings (EVAL_OVERRIDES) of the saved config.
  """
  unknown = sorted(set(overrides) - set(EVAL_OVERRIDES))
  if unknown:
    raise ValueError(f"cannot override {unknown} of a trained run; only {EVAL_OVERRIDES}")
  cfg = config_lib.load(model_dir).replace(**overrides)
  paths = RunPaths(model_dir)
  if not os.path.exists(paths.model_weights):
    raise FileNotFoundError(f"{paths.model_weights} is missing: the run in {model_dir!r} has "
                            "not finished an epoch yet")
  network, model = build_model(cfg)
  network.model.load_weights(paths.model_weights)
  return cfg, network, model


def dataset(cfg: ExperimentConfig, manifest: schema.Manifest, split: str, training: bool,
            batch_size: int | None = None, with_keys: bool = False):
  return pipeline.make_dataset(
      cfg.data_dir, manifest, split, cfg.tasks,
      batch_size or (cfg.batch_size if training else cfg.eval_batch_size), training,
      augment=cfg.augment, seed=cfg.seed, deterministic=cfg.deterministic,
      shuffle_buffer=cfg.shuffle_buffer, with_keys=with_keys,
      repeat=training and cfg.steps_per_epoch > 0)
