"""The run directory (--model_dir) layout, in one place, and its lock."""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import os
import sys

LOCK_NAME = ".lock"


class RunDirectoryError(RuntimeError):
  """The run directory cannot be used: in use by another process, disk full, unwritable."""


@dataclasses.dataclass(frozen=True)
class RunPaths:
  """The run directory (--model_dir) layout."""

  root: str

  @property
  def checkpoints(self):
    return os.path.join(self.root, "checkpoints")

  @property
  def model_weights(self):
    """Weights of the whole training graph after the last finished epoch."""
    return os.path.join(self.checkpoints, "model.weights.h5")

  def role_weights(self, role: str):
    return os.path.join(self.checkpoints, f"{role}.weights.h5")

  @property
  def teacher_config(self):
    """traditional_kd: the frozen teacher's config, copied from --teacher_dir at the first
    training start (the run never reads --teacher_dir again)."""
    return os.path.join(self.root, "teacher_config.json")

  @property
  def backup(self):
    return os.path.join(self.root, "backup")

  @property
  def backup_latest(self):
    """The resume state (weights, optimizer, HDF5 attr `epoch`) after the last backup."""
    return os.path.join(self.backup, "latest.weights.h5")

  @property
  def backup_previous(self):
    """The backup before `backup_latest`: resumed from when the latest is unreadable."""
    return os.path.join(self.backup, "previous.weights.h5")

  @property
  def backup_digests(self):
    """The sha256 of each backup file (integrity.py: `sha256sum -c` format), written with it."""
    return os.path.join(self.backup, "SHA256SUMS")

  @property
  def logs(self):
    return os.path.join(self.root, "logs")

  @property
  def results(self):
    return os.path.join(self.root, "results")

  @property
  def metrics_json(self):
    return os.path.join(self.results, "metrics.json")

  @property
  def history_csv(self):
    return os.path.join(self.results, "history.csv")

  def export(self, role: str):
    return os.path.join(self.root, "export", role)


_held: dict = {}  # realpath -> open lock file: the run directories this process holds


@contextlib.contextmanager
def locked(model_dir: str, command: str = ""):
  """Holds `<model_dir>/.lock` (fcntl.flock, holder's pid inside) for the block.

  A second process on the same run directory gets RunDirectoryError naming the directory and
  the holder's pid. The OS drops the lock when the holder dies, however it dies (no stale
  locks). Re-entrant within a process (train -> export in the demo).
  """
  key = os.path.realpath(model_dir)
  if key in _held:  # already ours: the outermost block releases it
    yield
    return
  os.makedirs(model_dir, exist_ok=True)
  path = os.path.join(model_dir, LOCK_NAME)
  f = open(path, "a+")
  try:
    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except OSError:
    f.seek(0)
    holder = f.read().strip() or "unknown pid"
    f.close()
    raise RunDirectoryError(
        f"{model_dir} is in use by another process ({holder}, lock {path}); wait for it to "
        "finish or stop it (two processes writing one run directory would corrupt it)") from None
  f.seek(0)
  f.truncate()
  f.write(f"pid {os.getpid()} ({command or os.path.basename(sys.argv[0])})\n")
  f.flush()
  _held[key] = f
  try:
    yield
  finally:
    del _held[key]
    f.close()  # releases the flock; the file stays (removing it would race a new holder)
