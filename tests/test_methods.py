"""A short run of every method on the synthetic data: all learn, the student is reported.
(Resuming is tested in test_durability.py, test_train.py and test_schedule.py.)"""

from __future__ import annotations

import csv
import json
import os

import pytest

from tests.conftest import SMOKE_FLAGS

from sdmtcnn_tf import baselines, config as config_lib, experiment, methods, tasks, train

pytestmark = pytest.mark.slow  # end-to-end training runs

# One config per method (eq5 and eq6 both covered); vanilla is the smoke run of test_train.py.
# SD-MTCNN runs the five Taskonomy tasks (keypoints and edges included).
METHOD_CONFIGS = {
    "sd_vanilla": ("configs/synthetic_sd_vanilla_eq5.flags", {}),
    "traditional_kd": ("configs/synthetic_traditional_kd.flags", {}),
    "sd_mtcnn": ("configs/synthetic_sd_mtcnn_eq6.flags", {"tasks": tasks.ALL_TASKS}),
    "sd_mtcnn_full": ("configs/synthetic_sd_mtcnn_eq5_full.flags", {}),
    # U-Net with distillation: built by test_configs.py, its gradients in test_distillation.py
    "unet": ("configs/synthetic_vanilla_unet.flags", {}),
}

# Validation metrics that a method's teacher is not held to, with the measured reason. Five
# tasks on 64 training images overfit depth: SD-MTCNN's teacher depth training loss falls
# 0.91 -> 0.50 while its validation abs error settles at 0.53-0.78 over five trajectories
# (seeds 0-3 on an EPYC, seed 0 on CI's CPU; 2026-12-05), around the constant's 0.72. Every
# other teacher metric clears the constant by a wide margin (mIoU 14.6-16.7 vs 5.7, normals
# 30-32 vs 46 degrees, keypoints 0.030-0.043 vs 0.058, edges 0.19-0.21 vs 0.32). Depth is
# still held to its training loss below.
NOT_HELD_ON_VALIDATION = {
    "sd_mtcnn": {"teacher_depth_abs", "teacher_depth_rel"},
}


def _tiny_config(flagfile: str, model_dir: str, data_dir: str, **changes):
  # one backup per 64 steps (every 8 epochs) instead of one per epoch: each costs ~2 s of Keras'
  # HDF5 writing here, and resuming is tested elsewhere (see the module docstring)
  return config_lib.parse_flagfile(flagfile, "configs/size_tiny.flags", model_dir=model_dir,
                                   data_dir=data_dir, verbose=0, validation_freq=100,
                                   backup_every_steps=64, **changes)


@pytest.fixture(scope="module")
def constant(smoke_data_dir):
  cfg = config_lib.parse_flagfile(SMOKE_FLAGS, data_dir=smoke_data_dir, tasks=tasks.ALL_TASKS)
  return baselines.evaluate_constant(cfg, experiment.prepare_data(cfg, experiment.EVAL_SPLIT))


@pytest.mark.parametrize("method", sorted(METHOD_CONFIGS))
def test_every_method_learns_and_reports_its_student(method, tmp_path, smoke_data_dir,
                                                     smoke_run, constant):
  flagfile, changes = METHOD_CONFIGS[method]
  if method == "traditional_kd":
    changes = {**changes, "teacher_dir": smoke_run}
  cfg = _tiny_config(flagfile, str(tmp_path / method), smoke_data_dir, **changes)
  metrics = train.train(cfg)
  with open(os.path.join(cfg.run.model_dir, "results", "metrics.json")) as f:
    assert json.load(f).keys() == metrics.keys()
  if method != "traditional_kd":  # Baseline-3 reports the student only
    failures = baselines.not_beaten(cfg, metrics, constant, "teacher")
    exempt = NOT_HELD_ON_VALIDATION.get(method, set())
    assert [f for f in failures if f.split(":")[0] not in exempt] == []
  with open(os.path.join(cfg.run.model_dir, "results", "history.csv")) as f:
    rows = list(csv.DictReader(f))
  first, last = rows[0], rows[-1]
  trained = ("student_",) if method == "traditional_kd" else ("student_", "teacher_")
  for key in first:
    if key.startswith(trained) and key.endswith("_loss"):
      assert float(last[key]) < float(first[key]), key
  if "student" not in methods.get(cfg.method.name).roles:
    return
  # a non-full student reads only the 1/32 encoder output, which is 1x2 pixels at the 32x64
  # test size, so it is held to each task's headline metric alone
  headlines = {f"student_{t.name}_{t.headline}" for t in cfg.task_specs}
  assert headlines <= metrics.keys()
  if cfg.resolved_student_levels:  # a multi-scale (--full) student must beat it everywhere
    assert baselines.not_beaten(cfg, metrics, constant, "student") == []
  else:
    failures = baselines.not_beaten(cfg, metrics, constant, "student")
    headline = [f for f in failures if f.split(":")[0] in headlines]
    assert len(headline) < len(cfg.data.tasks), failures  # learns at least one task
