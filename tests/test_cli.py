"""The CLIs as a user meets them: one flagfile for every command, one-line errors, value ranges
checked against the data, divergence stops, short progress lines, the data seed."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from contextlib import redirect_stdout

import pytest

from sdmtcnn_tf import config as config_lib
from tests.conftest import REPO, SMOKE_FLAGS, assert_one_error_line, run_module


def _smoke(**changes):
  return config_lib.parse_flagfile(os.path.join(REPO, SMOKE_FLAGS)).replace(**changes)


# ---- values that pass the type check but not the range check ---------------------------------
@pytest.mark.parametrize("flag,value", [
    ("hint_levels", (5, 5)), ("teaching_tasks", ("depth", "depth")),
    ("student_levels", (5, 4, 5)), ("learning_rate", -1.0), ("learning_rate", 0.0),
    ("learning_rate", float("nan")), ("max_loss", 0.0), ("shuffle_buffer", 0),
    ("task_weights", (1.0, -1.0, 1.0)), ("steps_per_epoch", -1), ("data_seed", -2)])
def test_out_of_range_values_name_their_flag(flag, value):
  extra = {"method": "sd_mtcnn", "distill": "eq6"} if flag in ("hint_levels",
                                                                "teaching_tasks") else {}
  with pytest.raises(ValueError, match=f"--{flag}"):
    _smoke(**extra, **{flag: value})


def test_duplicate_tasks_name_the_flag():
  with pytest.raises(ValueError, match="--tasks"):
    _smoke(tasks=("semseg", "semseg"))


def test_batch_larger_than_the_training_split_stops_before_training(smoke_data_dir, tmp_path):
  proc = run_module("sdmtcnn_tf.train", f"--flagfile={SMOKE_FLAGS}",
                    f"--model_dir={tmp_path / 'run'}", f"--data_dir={smoke_data_dir}",
                    "--batch_size=65", check=False)
  assert_one_error_line(proc, "--batch_size=65", "64 training examples")
  assert not os.path.exists(tmp_path / "run" / "backup")


@pytest.mark.slow
@pytest.mark.parametrize("flags,needle", [
    # --max_loss below the first step's loss (about 5): the first step already "diverged"
    (("--max_loss=0.5",), "exceeds --max_loss=0.5 at epoch 1, step 1"),
    # the case: Adam at 1e6 trained to a finite loss of ~9e19 and exited 0
    (("--learning_rate=1e6",), "loss"),
])
def test_a_diverging_loss_stops_the_run_with_one_line(smoke_data_dir, tmp_path, flags, needle):
  proc = run_module("sdmtcnn_tf.train", f"--flagfile={SMOKE_FLAGS}",
                    f"--model_dir={tmp_path / 'run'}", f"--data_dir={smoke_data_dir}",
                    "--epochs=1", "--verbose=0", *flags, check=False)
  line = assert_one_error_line(proc, needle, "training stopped")
  assert "exceeds --max_loss" in line or "non-finite loss" in line
  assert not os.path.exists(tmp_path / "run" / "results" / "metrics.json")


def test_a_missing_run_is_one_error_line_in_every_cli(tmp_path):
  missing = str(tmp_path / "nowhere")
  for module in ("sdmtcnn_tf.evaluate", "sdmtcnn_tf.export"):
    proc = run_module(module, f"--model_dir={missing}", check=False)
    assert_one_error_line(proc, missing)
  proc = run_module("sdmtcnn_tf.evaluate", f"--model_dir={missing}", "--traceback", check=False)
  assert proc.returncode != 0 and "Traceback" in proc.stderr


# ---- one flagfile for every command ----------------------------------------------------------
def test_evaluate_and_export_accept_the_training_flagfile(smoke_run, smoke_data_dir, tmp_path):
  common = (f"--flagfile={SMOKE_FLAGS}", f"--model_dir={smoke_run}",
            f"--data_dir={smoke_data_dir}")
  proc = run_module("sdmtcnn_tf.evaluate", *common, "--eval_batch_size=8")
  assert "teacher_semseg_miou" in proc.stdout
  with open(os.path.join(smoke_run, "results", "metrics.json")) as f:
    assert "teacher_depth_abs" in json.load(f)
  export_dir = tmp_path / "serving" / "teacher"
  run_module("sdmtcnn_tf.export", *common, f"--export_dir={export_dir}")
  assert (export_dir / "1" / "saved_model.pb").exists()


def test_a_flag_that_disagrees_with_the_run_is_named(smoke_run, smoke_data_dir):
  proc = run_module("sdmtcnn_tf.evaluate", f"--flagfile={SMOKE_FLAGS}", f"--model_dir={smoke_run}",
                    f"--data_dir={smoke_data_dir}", "--width_multiplier=0.5", check=False)
  assert_one_error_line(proc, "--width_multiplier=0.5", "config.json")
  proc = run_module("sdmtcnn_tf.evaluate", "--flagfile=configs/synthetic_sd_mtcnn_eq5.flags",
                    "--flagfile=configs/size_tiny.flags", f"--model_dir={smoke_run}",
                    f"--data_dir={smoke_data_dir}", check=False)
  assert_one_error_line(proc, "--method=sd_mtcnn", "trained with vanilla")


# ---- the synthetic data's seed is not the training seed --------------------------------------
def test_a_seed_sweep_shares_one_synthetic_data_dir(smoke_data_dir):
  from sdmtcnn_tf import experiment
  for seed in (0, 1, 2):
    cfg = _smoke(seed=seed, data_dir=smoke_data_dir)
    assert experiment.prepare_data(cfg, experiment.TRAIN_SPLIT).num_examples("train") == 64
  with pytest.raises(ValueError, match="seed"):
    experiment.prepare_data(_smoke(data_seed=1, data_dir=smoke_data_dir), experiment.TRAIN_SPLIT)


# ---- progress lines --------------------------------------------------------------------------
def test_the_progress_line_shows_the_headline_metrics_only():
  from sdmtcnn_tf import progress
  from sdmtcnn_tf.config import ExperimentConfig
  specs = ExperimentConfig.from_flat(tasks=("semseg", "depth", "normals")).task_specs
  keys = progress.headline_keys(("teacher", "student"), specs)
  assert "val_student_normals_mean_deg" in keys and "val_teacher_semseg_miou" in keys
  bar = progress.HeadlineProgbar(keys)
  bar.set_params({"verbose": 2, "epochs": 1, "steps": 2})
  logs = {"loss": 1.0, "teacher_semseg_loss": 0.5, "val_loss": 2.0,
          **{f"val_{role}_{s.name}_{m}": 1.0 for role in ("teacher", "student") for s in specs
             for m in s.higher_is_better}}
  out = io.StringIO()
  with redirect_stdout(out):
    bar.on_train_begin()
    bar.on_epoch_begin(0)
    bar.on_train_batch_end(0, {"loss": 1.0, "teacher_semseg_loss": 0.5})
    bar.on_train_batch_end(1, {"loss": 1.0, "teacher_semseg_loss": 0.5})
    bar.on_epoch_end(0, logs)
  text = out.getvalue()
  assert "val_teacher_semseg_miou" in text and "val_student_depth_abs" in text
  assert "teacher_semseg_loss" not in text and "within_11_25" not in text
  assert max(len(line) for line in text.splitlines()) < 300, text


# ---- flag definitions never collide ----------------------------------------------------------
def test_cli_modules_import_in_any_order():
  script = ("import sdmtcnn_tf.cli, sdmtcnn_tf.config as c; c.define_flags(); "
            "import sdmtcnn_tf.cli as k; k.define_flags(); c.define_flags(); print('ok')")
  proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True,
                        text=True, timeout=120)
  assert proc.returncode == 0 and "ok" in proc.stdout, proc.stderr[-2000:]
