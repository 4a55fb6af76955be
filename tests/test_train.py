"""The training CLI end to end on the smoke config: run directory, learning, metrics, resume,
non-finite losses."""

from __future__ import annotations

import csv
import glob
import json
import os
import re
import signal
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest

from tests.conftest import REPO, SMOKE_FLAGS, optimizer_iterations, run_module

from sdmtcnn_tf import baselines, config as config_lib, experiment


def test_run_directory_holds_everything(smoke_run):
  for name in ("flags.txt", "config.json", "checkpoints/model.weights.h5",
               "checkpoints/teacher.weights.h5", "results/metrics.json",
               "results/history.csv"):
    assert os.path.exists(os.path.join(smoke_run, name)), name
  cfg = config_lib.load(smoke_run)
  # flags.txt is a flagfile reproducing the config; it names the directory the run was trained
  # in, and this copy of the run lives elsewhere (config.load gives where it is now)
  flagfile = config_lib.parse_flagfile(os.path.join(smoke_run, "flags.txt"))
  assert flagfile.replace(model_dir=smoke_run) == cfg
  with open(os.path.join(smoke_run, "results", "history.csv")) as f:
    rows = list(csv.DictReader(f))
  assert len(rows) == cfg.optim.epochs
  assert float(rows[-1]["loss"]) < float(rows[0]["loss"])


def test_metrics_json_has_every_key(smoke_run):
  with open(os.path.join(smoke_run, "results", "metrics.json")) as f:
    metrics = json.load(f)
  expected = {"semseg": ["pixacc", "miou", "pixacc_legacy", "miou_legacy"],
              "depth": ["abs", "rel", "abs_legacy", "rel_legacy"],
              "normals": ["mean_deg", "median_deg", "within_11_25", "within_22_5",
                          "within_30", "cos", "mean_deg_legacy", "median_deg_legacy",
                          "within_11_25_legacy", "within_22_5_legacy", "within_30_legacy"]}
  for task, names in expected.items():
    for name in names + ["loss"]:
      key = f"teacher_{task}_{name}"
      assert isinstance(metrics[key], float), key
  assert not any(k.startswith("student_") for k in metrics)  # vanilla has no student


def test_tensorboard_logs_every_loss_term_and_metric(smoke_run):
  from tensorboard.backend.event_processing import event_accumulator
  tags = set()
  for path in glob.glob(os.path.join(smoke_run, "logs", "**", "events.*"), recursive=True):
    acc = event_accumulator.EventAccumulator(path, size_guidance={"tensors": 0, "scalars": 0})
    acc.Reload()
    tags |= set(acc.Tags().get("tensors", [])) | set(acc.Tags().get("scalars", []))
  for tag in ("epoch_teacher_semseg_loss", "epoch_teacher_depth_loss",
              "epoch_teacher_normals_loss", "epoch_loss", "epoch_teacher_semseg_miou",
              "epoch_teacher_normals_median_deg"):
    assert tag in tags, (tag, sorted(tags))


def test_smoke_run_beats_the_constant_predictor_on_every_metric(smoke_run):
  cfg = config_lib.load(smoke_run)
  with open(os.path.join(smoke_run, "results", "metrics.json")) as f:
    metrics = json.load(f)
  manifest = experiment.prepare_data(cfg, experiment.EVAL_SPLIT)
  constant = baselines.evaluate_constant(cfg, manifest)
  assert baselines.not_beaten(cfg, metrics, constant, "teacher") == []


def test_dry_run_prints_parameter_counts():
  proc = run_module("sdmtcnn_tf.train", f"--flagfile={SMOKE_FLAGS}", "--dry_run",
                    "--method=sd_mtcnn", "--distill=eq5")
  assert "teacher parameters:" in proc.stdout and "student parameters:" in proc.stdout
  student = int(proc.stdout.split("student parameters:")[1].split()[0].replace(",", ""))
  assert student > 0
  terms = dict(line.split()[2::2] for line in proc.stdout.splitlines()
               if line.startswith("loss term "))
  cfg = config_lib.parse_flagfile(SMOKE_FLAGS, method="sd_mtcnn", distill="eq5")
  assert float(terms["teacher_semseg_loss"]) == 1.0
  assert float(terms["kd_depth_loss"]) == pytest.approx(cfg.method.alpha, rel=1e-5)
  assert float(terms["student_normals_loss"]) == pytest.approx(1 - cfg.method.alpha, rel=1e-5)


def test_unknown_flag_is_an_error_naming_it():
  proc = run_module("sdmtcnn_tf.train", f"--flagfile={SMOKE_FLAGS}", "--learnin_rate=1",
                    check=False)
  assert proc.returncode != 0
  assert "learnin_rate" in proc.stderr


def test_bad_flag_value_is_an_error_naming_the_flag():
  proc = run_module("sdmtcnn_tf.train", f"--flagfile={SMOKE_FLAGS}", "--height=50",
                    "--dry_run", check=False)
  assert proc.returncode != 0 and "--height" in proc.stderr


def _backup_state(model_dir):
  path = os.path.join(model_dir, "backup", "training_metadata.json")
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, ValueError):
    return None


@pytest.mark.slow
def test_killed_run_resumes_from_its_last_backup(tmp_path, smoke_data_dir):
  model_dir = str(tmp_path / "run")
  args = [sys.executable, "-m", "sdmtcnn_tf.train", f"--flagfile={SMOKE_FLAGS}",
          f"--model_dir={model_dir}", f"--data_dir={smoke_data_dir}", "--epochs=3",
          "--backup_every_steps=1", "--verbose=2", "--validation_freq=100",
          "--precise_bn_batches=0"]
  env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
  proc = subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)
  deadline = time.time() + 300
  state = None
  while time.time() < deadline:
    state = _backup_state(model_dir)
    if state and state["epoch"] >= 1 and state["batch"] >= 2:
      break
    assert proc.poll() is None, proc.stdout.read()
    time.sleep(0.05)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  state = _backup_state(model_dir)
  backup = os.path.join(model_dir, "backup", "latest.weights.h5")
  steps_before = optimizer_iterations(backup)
  assert steps_before >= 8 * state["epoch"]  # 8 steps per epoch, mid-epoch backup
  done = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
  assert done.returncode == 0, done.stderr[-3000:]
  epochs_run = [line for line in done.stdout.splitlines() if line.startswith("Epoch ")]
  assert epochs_run[0] == f"Epoch {state['epoch'] + 1}/3", epochs_run
  assert len(epochs_run) == 3 - state["epoch"]
  # weights and optimizer state were restored: the step counter continued from the backup
  assert optimizer_iterations(backup) == steps_before + 8 * (3 - state["epoch"])


@pytest.mark.slow
def test_non_finite_loss_stops_training_naming_step_and_term(tmp_path, smoke_data_dir):
  model_dir = str(tmp_path / "nan")
  proc = run_module("sdmtcnn_tf.train", f"--flagfile={SMOKE_FLAGS}", f"--model_dir={model_dir}",
                    f"--data_dir={smoke_data_dir}", "--learning_rate=1e35",
                    "--max_loss=1e38",  # let the loss overflow: this test is about NaN/inf
                    "--backup_every_steps=1", "--verbose=0", check=False)
  assert proc.returncode != 0
  message = proc.stderr
  match = re.search(r"non-finite loss at epoch (\d+), step (\d+): (.*)", message)
  assert match, message[-2000:]
  epoch, step = int(match.group(1)), int(match.group(2))
  assert epoch == 1 and step >= 1
  assert "teacher_" in match.group(3)
  backup = os.path.join(model_dir, "backup", "latest.weights.h5")
  if (epoch, step) == (1, 1):
    # nothing was backed up before the very first step
    assert not os.path.exists(backup)
    assert "no backup or checkpoint had been written yet" in match.group(3)
    return
  # --backup_every_steps=1 backs up after every step, and StopOnNonFiniteLoss (the first
  # callback) raises before ResumableBackup sees the failing step: the backup is the one of
  # the step before, with the last finite weights.
  assert os.path.exists(backup), message[-2000:]
  assert f"kept in {backup}" in match.group(3)
  with h5py.File(backup, "r") as f:
    position = {k: int(v) for k, v in f.attrs.items() if k in ("epoch", "batch")}
    arrays = []
    f.visititems(lambda n, o: arrays.append(o[()]) if isinstance(o, h5py.Dataset) else None)
  assert position == {"epoch": epoch - 1, "batch": step - 2}  # 0-based: the step before
  floats = [a for a in arrays if np.issubdtype(np.asarray(a).dtype, np.floating)]
  assert floats and all(np.all(np.isfinite(a)) for a in floats)
