"""Runs that never lose work: a kill inside a checkpoint write, a corrupt or lost backup, a full
disk, two processes on one run directory, an export over an existing version, and the error of
a diverged first epoch. Faults are injected with atomic.py's test hooks (SDMTCNN_TEST_*)."""

from __future__ import annotations

import csv
import errno
import os
import signal
import subprocess
import sys

import pytest

from tests.conftest import REPO, SMOKE_FLAGS, optimizer_iterations, run_module

from sdmtcnn_tf import atomic, export, rundir

pytestmark = pytest.mark.slow  # end-to-end training runs

# durability is about files, not learning: no per-epoch validation, no precise BatchNorm pass
ARGS = (f"--flagfile={SMOKE_FLAGS}", "--steps_per_epoch=2", "--verbose=2",
        "--validation_freq=100", "--precise_bn_batches=0")


def _train(model_dir, data_dir, epochs=3, env=None, check=True, *extra):
  return run_module("sdmtcnn_tf.train", *ARGS, f"--epochs={epochs}", f"--model_dir={model_dir}",
                    f"--data_dir={data_dir}", *extra, env=env, check=check)


def _epochs_run(proc) -> list:
  return [line.split()[1] for line in proc.stdout.splitlines() if line.startswith("Epoch ")]


def _history_epochs(model_dir) -> list:
  with open(os.path.join(model_dir, "results", "history.csv")) as f:
    return [int(row["epoch"]) for row in csv.DictReader(f)]


@pytest.fixture(scope="module")
def killed_run(tmp_path_factory, smoke_data_dir):
  """A run SIGKILLed inside its 2nd backup write (end of epoch 2 of 3), then rerun to the end."""
  model_dir = str(tmp_path_factory.mktemp("killed") / "run")
  paths = rundir.RunPaths(model_dir)
  killed = _train(model_dir, smoke_data_dir, env={atomic.KILL_ENV: "backup:2"}, check=False)
  after_kill = {
      "returncode": killed.returncode,
      "torn_temp": os.path.exists(atomic.temp_path(paths.backup_latest)),
      "backup_epoch": atomic.read_attrs(paths.backup_latest)["epoch"],
      "backup_steps": optimizer_iterations(paths.backup_latest),
      "history": _history_epochs(model_dir),
  }
  rerun = _train(model_dir, smoke_data_dir)
  after_kill["rerun_history"] = _history_epochs(model_dir)
  after_kill["rerun_steps"] = optimizer_iterations(paths.backup_latest)
  return model_dir, after_kill, rerun


def test_kill_inside_the_backup_write_loses_at_most_one_epoch(killed_run):
  model_dir, after_kill, rerun = killed_run
  assert after_kill["returncode"] == -signal.SIGKILL
  assert after_kill["torn_temp"]  # killed halfway through writing the new backup...
  assert after_kill["backup_epoch"] == 1  # ...which left the epoch-1 backup whole
  assert after_kill["backup_steps"] == 2
  assert after_kill["history"] == [0, 1]  # epoch 2's row was written before its backup
  # the rerun resumes at epoch 2 (one epoch lost), finishes, and lists each epoch once
  assert _epochs_run(rerun) == ["2/3", "3/3"], rerun.stdout[-2000:]
  assert after_kill["rerun_history"] == [0, 1, 2]
  assert after_kill["rerun_steps"] == 3 * 2  # optimizer state continued from the epoch-1 backup
  assert os.path.exists(os.path.join(model_dir, "results", "metrics.json"))


def test_a_resumed_run_says_where_it_resumes_from(killed_run):
  model_dir, _, rerun = killed_run
  latest = rundir.RunPaths(model_dir).backup_latest
  # the epoch-1 backup was whole: the rerun goes on with epoch 2, and has nothing to warn about
  assert f"resuming from {latest} (epoch 2)" in rerun.stdout.splitlines(), rerun.stdout[-2000:]
  assert "resuming from" not in rerun.stderr, rerun.stderr[-2000:]


def test_corrupt_latest_backup_falls_back_to_the_previous_one(killed_run, smoke_data_dir):
  model_dir, _, _ = killed_run
  paths = rundir.RunPaths(model_dir)
  previous = atomic.read_attrs(paths.backup_previous)["epoch"]
  epochs = atomic.read_attrs(paths.backup_latest)["epoch"] + 1
  with open(paths.backup_latest, "wb") as f:
    f.write(b"garbage, not HDF5" * 1000)
  proc = _train(model_dir, smoke_data_dir, epochs=epochs)
  warning = [line for line in proc.stderr.splitlines() if "resuming from" in line]
  assert len(warning) == 1, proc.stderr[-3000:]
  assert paths.backup_previous in warning[0] and paths.backup_latest in warning[0]
  assert _epochs_run(proc) == [f"{e}/{epochs}" for e in range(previous + 1, epochs + 1)]
  assert _history_epochs(model_dir) == list(range(epochs))
  assert optimizer_iterations(paths.backup_latest) == epochs * 2


def test_lost_backups_resume_from_the_checkpoint(killed_run, smoke_data_dir):
  model_dir, _, _ = killed_run
  paths = rundir.RunPaths(model_dir)
  epochs = atomic.read_attrs(paths.model_weights)["epoch"] + 1
  for path in (paths.backup_latest, paths.backup_previous):
    os.remove(path)
  proc = _train(model_dir, smoke_data_dir, epochs=epochs)
  warning = [line for line in proc.stderr.splitlines() if "resuming from" in line]
  assert len(warning) == 1 and paths.model_weights in warning[0], proc.stderr[-3000:]
  assert "optimizer state restarts" in warning[0]
  assert _epochs_run(proc) == [f"{epochs}/{epochs}"]
  assert _history_epochs(model_dir) == list(range(epochs))
  assert optimizer_iterations(paths.backup_latest) == epochs * 2  # the step count (LR schedule) goes on


def test_full_disk_stops_with_one_line_and_the_rerun_resumes(tmp_path, smoke_data_dir):
  model_dir = str(tmp_path / "run")
  paths = rundir.RunPaths(model_dir)
  proc = _train(model_dir, smoke_data_dir, env={atomic.ENOSPC_ENV: "backup:2"}, check=False)
  assert proc.returncode == 1, proc.stderr[-3000:]
  errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
  assert len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
  assert f"{paths.backup_latest}: no space left on device (needed about" in errors[0]
  assert not os.path.exists(atomic.temp_path(paths.backup_latest))
  rerun = _train(model_dir, smoke_data_dir)
  assert _epochs_run(rerun) == ["2/3", "3/3"]
  assert _history_epochs(model_dir) == [0, 1, 2]


def _hold_lock(model_dir) -> subprocess.Popen:
  """Another process that holds the run directory's lock until it is killed."""
  holder = subprocess.Popen(
      [sys.executable, "-c", "import sys, time\nfrom sdmtcnn_tf import rundir\n"
       "with rundir.locked(sys.argv[1], 'holder'):\n  print('locked', flush=True)\n"
       "  time.sleep(300)\n", model_dir], cwd=REPO, stdout=subprocess.PIPE, text=True)
  assert holder.stdout.readline().strip() == "locked"
  return holder


def test_second_process_on_a_run_directory_is_refused(tmp_path, smoke_data_dir, killed_run):
  model_dir = str(tmp_path / "run")
  holder = _hold_lock(model_dir)
  try:
    proc = _train(model_dir, smoke_data_dir, check=False)
  finally:
    holder.kill()
    holder.wait()
  assert proc.returncode == 1
  assert f"{model_dir} is in use by another process (pid {holder.pid}" in proc.stderr
  assert not os.path.exists(os.path.join(model_dir, "config.json"))  # refused before writing
  with rundir.locked(model_dir):  # the OS released the killed holder's lock
    pass
  # evaluate and export (into the run directory) take the same lock
  finished, _, _ = killed_run
  holder = _hold_lock(finished)
  try:
    proc = run_module("sdmtcnn_tf.evaluate", f"--model_dir={finished}", check=False)
    assert proc.returncode == 1 and f"pid {holder.pid}" in proc.stderr, proc.stderr[-2000:]
    with pytest.raises(rundir.RunDirectoryError, match=f"pid {holder.pid}"):
      export.run(finished, role="teacher")
  finally:
    holder.kill()
    holder.wait()


def test_export_refuses_an_existing_version_unless_overwrite(killed_run, tmp_path):
  model_dir, _, _ = killed_run
  base = str(tmp_path / "serving" / "teacher")
  path = export.run(model_dir, base)
  pb = os.path.join(path, "saved_model.pb")
  before = os.stat(pb).st_mtime_ns
  proc = run_module("sdmtcnn_tf.export", f"--model_dir={model_dir}", f"--export_dir={base}",
                    check=False)
  assert proc.returncode == 1
  assert path in proc.stderr and "--overwrite" in proc.stderr, proc.stderr[-2000:]
  assert os.stat(pb).st_mtime_ns == before
  assert export.run(model_dir, base, overwrite=True) == path
  assert os.stat(pb).st_mtime_ns != before
  assert os.listdir(base) == ["1"]  # no temp folder left beside it


def test_a_failed_export_leaves_no_half_version(tmp_path):
  base = str(tmp_path / "serving")

  class DiesHalfway:  # an ExportArchive whose write fails halfway (a full disk)
    def write_out(self, filepath, **kwargs):
      os.makedirs(os.path.join(filepath, "variables"))
      with open(os.path.join(filepath, "saved_model.pb"), "w") as f:
        f.write("half")
      raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

  with pytest.raises(rundir.RunDirectoryError, match="no space left on device"):
    export._write_in_place_of(DiesHalfway(), os.path.join(base, "2"))
  assert os.listdir(base) == []


def test_diverged_first_epoch_names_only_what_exists(tmp_path, smoke_data_dir):
  model_dir = str(tmp_path / "run")
  proc = _train(model_dir, smoke_data_dir, 3, None, False, "--max_loss=1e-3", "--verbose=1")
  assert proc.returncode == 1
  errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
  assert len(errors) == 1, proc.stderr[-2000:]  # on its own line, not after the progress bar
  assert "epoch 1, step 1" in errors[0]
  assert "no backup or checkpoint had been written yet" in errors[0]
  assert "latest.weights.h5" not in errors[0] and "model.weights.h5" not in errors[0]


def test_prediction_files_are_written_atomically(tmp_path, monkeypatch):
  import numpy as np
  path = str(tmp_path / "val_000.npz")
  atomic.write_npz(path, label="predictions", gt_depth=np.ones((2, 3), np.float32))
  assert np.load(path)["gt_depth"].shape == (2, 3)
  assert os.listdir(tmp_path) == ["val_000.npz"]  # no temp file left behind
  # a failure between writing and renaming leaves the previous file untouched, no temp file
  def fail(label, tmp):
    raise KeyboardInterrupt("killed")
  monkeypatch.setattr(atomic, "_test_hook", fail)
  with pytest.raises(KeyboardInterrupt):
    atomic.write_npz(path, label="predictions", gt_depth=np.zeros((5,), np.float32))
  assert np.load(path)["gt_depth"].shape == (2, 3)
  assert os.listdir(tmp_path) == ["val_000.npz"]
