"""Backups are verified before a run resumes from them: random bytes written into the latest
backup (its sha256 no longer matches backup/SHA256SUMS) or a NaN in one of its kernels (a
backup whose digest matches, as a run that produced NaN weights writes it) is passed over with
one warning naming the file and why, for the previous backup; with every file bad the run stops
with one error naming each. A kill between the digest and the rename loses nothing, and a
backup from before digests were kept still resumes (unverified, with a warning)."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import signal

import numpy as np
import pytest

from tests.conftest import assert_one_error_line, optimizer_iterations
from tests.test_durability import _epochs_run, _train

from sdmtcnn_tf import atomic, integrity, rundir

pytestmark = pytest.mark.slow  # end-to-end training runs

NETWORK = "layers/functional/"  # where a backup holds the network's weights (the checkpoint's)
KERNEL = "layers/functional/layers/conv2d/vars/0"  # the first convolution's kernel


@pytest.fixture(scope="module")
def three_epochs(tmp_path_factory, smoke_data_dir):
  """A finished 3-epoch run (backups of epochs 3, latest, and 2, previous; checkpoint of 3)
  and a pristine copy of it, trained once. A run directory cannot move (config.json records
  --model_dir), so each test gets the copy back at the same path (run_copy)."""
  model_dir = str(tmp_path_factory.mktemp("three_epochs") / "run")
  _train(model_dir, smoke_data_dir, epochs=3)
  pristine = model_dir + ".pristine"
  shutil.copytree(model_dir, pristine)
  return model_dir, pristine


@pytest.fixture
def run_copy(three_epochs) -> rundir.RunPaths:
  model_dir, pristine = three_epochs
  shutil.rmtree(model_dir)
  shutil.copytree(pristine, model_dir)
  return rundir.RunPaths(model_dir)


def _arrays(path: str, prefix: str = "") -> dict:
  """{dataset name without `prefix`: values} of the float datasets under `prefix` in `path`."""
  import h5py
  found = {}
  with h5py.File(path, "r") as f:
    f.visititems(lambda name, item: found.__setitem__(name[len(prefix):], item[()])
                 if isinstance(item, h5py.Dataset) and item.dtype.kind == "f"
                 and name.startswith(prefix) else None)
  return found


def _scribble(path: str, size: int = 64 * 1024) -> None:
  """`size` random bytes written over the middle of `path` (its length unchanged)."""
  with open(path, "r+b") as f:
    f.seek(os.path.getsize(path) // 2 - size // 2)
    f.write(np.random.default_rng(0).bytes(size))


def _put_nan(path: str, dataset: str, manifest: str = "") -> None:
  """One NaN in `dataset` of `path`; its digest in `manifest` (if there is one) updated, as a
  run that trained into NaN weights would have listed it."""
  import h5py
  before = hashlib.sha256(open(path, "rb").read()).hexdigest()
  with h5py.File(path, "r+") as f:
    values = f[dataset][()]
    values.flat[0] = np.nan
    f[dataset][...] = values
  after = hashlib.sha256(open(path, "rb").read()).hexdigest()
  if manifest and os.path.exists(manifest):
    with open(manifest) as f:
      text = f.read()
    assert before in text
    with open(manifest, "w") as f:
      f.write(text.replace(before, after))


def _warnings(proc) -> list:
  return [line for line in proc.stderr.splitlines() if "resuming from" in line]


def test_random_bytes_in_the_latest_backup_fall_back_to_the_previous_one(run_copy,
                                                                         smoke_data_dir):
  paths = run_copy
  assert atomic.read_attrs(paths.backup_previous)["epoch"] == 2
  good = _arrays(paths.backup_previous, NETWORK)
  _scribble(paths.backup_latest)
  # --epochs=2: the previous backup already finished it, so the weights the run resumed with
  # are what it saves as its checkpoint at the end
  proc = _train(paths.root, smoke_data_dir, epochs=2)
  warning = _warnings(proc)
  assert len(warning) == 1, proc.stderr[-3000:]
  assert f"{paths.backup_latest} fails its sha256 digest" in warning[0]
  assert f"resuming from {paths.backup_previous} (epoch 3) instead" in warning[0]
  assert f"resuming from {paths.backup_previous} (epoch 3)" in proc.stdout.splitlines()
  resumed = _arrays(paths.model_weights)
  assert resumed.keys() == good.keys()
  for name, values in good.items():
    np.testing.assert_array_equal(resumed[name], values, err_msg=name)


def test_nan_in_a_kernel_of_the_latest_backup_is_refused(run_copy, smoke_data_dir):
  paths = run_copy
  good_previous = integrity.sha256(paths.backup_previous)
  _put_nan(paths.backup_latest, KERNEL, paths.backup_digests)
  proc = _train(paths.root, smoke_data_dir, epochs=3)
  warning = _warnings(proc)
  assert len(warning) == 1, proc.stderr[-3000:]
  assert f"{paths.backup_latest} holds NaN/Inf values in {KERNEL}" in warning[0]
  assert f"resuming from {paths.backup_previous} (epoch 3) instead" in warning[0]
  assert f"resuming from {paths.backup_previous} (epoch 3)" in proc.stdout.splitlines()
  assert _epochs_run(proc) == ["3/3"]
  # epoch 3 again, from the previous backup's optimizer state (2 steps an epoch)
  assert optimizer_iterations(paths.backup_latest) == 3 * 2
  assert all(np.isfinite(v).all() for v in _arrays(paths.backup_latest).values())
  assert all(np.isfinite(v).all() for v in _arrays(paths.model_weights).values())
  # the NaN backup was not kept as the fallback: the good previous one still is
  assert integrity.sha256(paths.backup_previous) == good_previous
  assert integrity.check_digest(paths.backup_latest, paths.backup_digests)
  assert integrity.check_digest(paths.backup_previous, paths.backup_digests)


def test_every_file_bad_stops_with_one_error_naming_each(run_copy, smoke_data_dir):
  paths = run_copy
  _scribble(paths.backup_latest)
  _put_nan(paths.backup_previous, KERNEL, paths.backup_digests)
  _put_nan(paths.model_weights, "layers/conv2d/vars/0")
  before = {p: integrity.sha256(p) for p in (paths.backup_latest, paths.backup_previous,
                                             paths.model_weights)}
  proc = _train(paths.root, smoke_data_dir, epochs=4, check=False)
  assert_one_error_line(proc, "cannot resume", f"{paths.backup_latest} fails its sha256 digest",
                        f"{paths.backup_previous} holds NaN/Inf values in {KERNEL}",
                        f"{paths.model_weights} holds NaN/Inf values in layers/conv2d/vars/0",
                        "to start over")
  assert "Epoch " not in proc.stdout  # neither trained nor started over
  assert {p: integrity.sha256(p) for p in before} == before


def test_a_kill_after_the_digest_before_the_rename_loses_nothing(tmp_path, smoke_data_dir):
  paths = rundir.RunPaths(str(tmp_path / "run"))
  # each backup lists its digest twice (before and after the renames): the 4th write is the
  # 2nd backup's second, so it dies with the epoch-2 backup in place, listed only in the first
  killed = _train(paths.root, smoke_data_dir, env={atomic.KILL_ENV: "backup_digests:4"},
                  check=False)
  assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
  assert atomic.read_attrs(paths.backup_latest)["epoch"] == 2
  rerun = _train(paths.root, smoke_data_dir, epochs=3)
  assert not _warnings(rerun), rerun.stderr[-3000:]
  assert f"resuming from {paths.backup_latest} (epoch 3)" in rerun.stdout.splitlines()
  assert _epochs_run(rerun) == ["3/3"]
  with open(paths.backup_digests) as f:  # back to one digest per file
    assert len(f.read().splitlines()) == 2


def test_a_backup_from_before_digests_resumes_unverified(run_copy, smoke_data_dir):
  paths = run_copy
  with contextlib.suppress(FileNotFoundError):
    os.remove(paths.backup_digests)  # as a run directory written before this change
  old_latest = integrity.sha256(paths.backup_latest)
  proc = _train(paths.root, smoke_data_dir, epochs=4)
  warning = _warnings(proc)
  assert len(warning) == 1, proc.stderr[-3000:]
  assert f"resuming from {paths.backup_latest} (epoch 4)" in warning[0]
  assert f"unverified: {paths.backup_digests} is missing" in warning[0]
  assert f"resuming from {paths.backup_latest} (epoch 4)" in proc.stdout.splitlines()
  assert _epochs_run(proc) == ["4/4"]
  # its next backup lists both files: the new latest, and the old one kept as previous
  assert integrity.check_digest(paths.backup_latest, paths.backup_digests)
  assert integrity.check_digest(paths.backup_previous, paths.backup_digests)
  assert integrity.sha256(paths.backup_previous) == old_latest
