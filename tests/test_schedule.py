"""The learning-rate schedule (MTAN's StepLR(100, 0.5)) lives in the optimizer: it counts
optimizer steps, is saved with them in the backup, and survives a resume across a decay."""

from __future__ import annotations

import csv
import os

import keras
import pytest

from tests.conftest import SMOKE_FLAGS, optimizer_iterations

from sdmtcnn_tf import config as config_lib, experiment, train


def test_schedule_halves_the_rate_every_lr_decay_epochs_and_serializes():
  cfg = config_lib.ExperimentConfig.from_flat(learning_rate=1e-3, lr_decay_epochs=3)
  schedule = experiment.learning_rate(cfg, steps_per_epoch=5)
  for epoch in range(10):
    for step in (epoch * 5, epoch * 5 + 4):  # first and last step of the epoch
      assert float(schedule(step)) == pytest.approx(1e-3 * 0.5 ** (epoch // 3), rel=1e-6)
  again = keras.optimizers.schedules.deserialize(keras.optimizers.schedules.serialize(schedule))
  assert float(again(30)) == pytest.approx(2.5e-4, rel=1e-6)  # epoch 6
  optimizer = experiment.make_optimizer(cfg, steps_per_epoch=5)
  assert isinstance(optimizer.get_config()["learning_rate"], dict)  # the schedule is saved


def test_lr_decay_epochs_zero_means_constant_and_negative_is_rejected():
  cfg = config_lib.ExperimentConfig.from_flat(learning_rate=1e-3, lr_decay_epochs=0)
  assert experiment.learning_rate(cfg, steps_per_epoch=5) == 1e-3
  with pytest.raises(ValueError, match="--lr_decay_epochs"):
    config_lib.ExperimentConfig.from_flat(lr_decay_epochs=-1).validate()


def test_steps_per_epoch_is_what_the_training_pipeline_yields(smoke_data_dir):
  cfg = config_lib.parse_flagfile(SMOKE_FLAGS, data_dir=smoke_data_dir, batch_size=6)
  manifest = experiment.prepare_data(cfg, experiment.TRAIN_SPLIT)
  ds = experiment.dataset(cfg, manifest, experiment.TRAIN_SPLIT, training=True)
  assert experiment.steps_per_epoch(cfg, manifest) == len(ds) == 64 // 6
  assert experiment.steps_per_epoch(cfg.replace(steps_per_epoch=3), manifest) == 3


def _history(model_dir):
  with open(os.path.join(model_dir, "results", "history.csv")) as f:
    return list(csv.DictReader(f))


def _backup_iterations(model_dir) -> int:
  """The optimizer's step count saved in the BackupAndRestore checkpoint."""
  return optimizer_iterations(os.path.join(model_dir, "backup", "latest.weights.h5"))


@pytest.mark.slow
def test_resumed_run_continues_the_schedule_across_the_decay(tmp_path, smoke_data_dir):
  base = 2e-3
  cfg = config_lib.parse_flagfile(SMOKE_FLAGS, model_dir=str(tmp_path / "run"),
                                  data_dir=smoke_data_dir, learning_rate=base, lr_decay_epochs=1,
                                  epochs=1, steps_per_epoch=2, verbose=0,
                                  validation_freq=100, precise_bn_batches=0)
  steps = experiment.steps_per_epoch(cfg, experiment.prepare_data(cfg, experiment.TRAIN_SPLIT))
  train.train(cfg)  # stopped after epoch 1, before the first decay takes effect
  assert _backup_iterations(cfg.run.model_dir) == steps
  train.train(cfg.replace(epochs=3))  # resumed: epochs 2 and 3 use base/2 and base/4
  rows = _history(cfg.run.model_dir)
  assert [int(r["epoch"]) for r in rows] == [0, 1, 2]
  for k, row in enumerate(rows):
    assert float(row["learning_rate"]) == pytest.approx(base * 0.5 ** k, rel=1e-6), k
  assert _backup_iterations(cfg.run.model_dir) == 3 * steps
