"""The run directory (--model_dir) layout, in one place, and its lock."""

from __future__ import annotations

import contextlib
import dataclasses
import errno
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


class ReadOnlyRunError(RunDirectoryError):
  """The run directory cannot be written by this process (permissions, a read-only disk); it
  can still be read (`reading`)."""


# realpath -> (open lock file, exclusive?): the run directories this process holds
_held: dict = {}
_READ_ONLY = (errno.EACCES, errno.EPERM, errno.EROFS)


@contextlib.contextmanager
def locked(model_dir: str, command: str = "", elsewhere: str = ""):
  """Holds `<model_dir>/.lock` exclusively (fcntl.flock, holder's pid inside) for the block:
  taken by whatever writes into a run directory (train; evaluate and export into it).

  A second process on the same run directory gets RunDirectoryError naming the directory and
  the holder's pid, or saying that it is being read (`reading`). The OS drops the lock when the
  holder dies, however it dies (no stale locks). Re-entrant within a process (train -> export in
  the demo). A directory this process cannot write is ReadOnlyRunError, which names
  `elsewhere` (e.g. "--export_dir") as the way to write somewhere else.
  """
  key = os.path.realpath(model_dir)
  if key in _held:  # already ours: the outermost block releases it
    if not _held[key][1]:
      raise RunDirectoryError(f"{model_dir}: cannot write a run directory while reading it")
    yield
    return
  path = os.path.join(model_dir, LOCK_NAME)
  try:
    os.makedirs(model_dir, exist_ok=True)
    f = open(path, "a+")
  except OSError as e:
    if e.errno not in _READ_ONLY:
      raise
    raise ReadOnlyRunError(
        f"{model_dir} is read-only for this process ({e.strerror}: {e.filename}): "
        f"{command or 'this command'} cannot write into it"
        + (f"; write elsewhere with {elsewhere}" if elsewhere else "")) from None
  try:
    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except OSError:
    f.seek(0)
    holder = f.read().strip() or "unknown pid"
    f.close()
    if _only_readers(path):
      raise RunDirectoryError(
          f"{model_dir} is being read by another process (lock {path}); run this again when "
          "it has finished (a run directory is not written while it is read)") from None
    raise RunDirectoryError(
        f"{model_dir} is in use by another process ({holder}, lock {path}); wait for it to "
        "finish or stop it (two processes writing one run directory would corrupt it)") from None
  f.seek(0)
  f.truncate()
  f.write(f"pid {os.getpid()} ({command or os.path.basename(sys.argv[0])})\n")
  f.flush()
  _held[key] = (f, True)
  try:
    yield
  finally:
    del _held[key]
    f.close()  # releases the flock; the file stays (removing it would race a new holder)


@contextlib.contextmanager
def reading(model_dir: str):
  """Holds `<model_dir>/.lock` shared for the block: taken by whatever reads a run (loading its
  config and weights). Readers read side by side; none reads a run while a writer (`locked`)
  holds it: RunDirectoryError naming the writer's pid.

  Taken only where the lock file can be opened. A run directory this process cannot write
  needs none when the file is missing (no writer of this code has been there), and a run on a
  read-only disk can have no writer at all. Re-entrant within a process.
  """
  key = os.path.realpath(model_dir)
  if key in _held:
    yield
    return
  path = os.path.join(model_dir, LOCK_NAME)
  f = _open_for_reading(path)
  if f is None:
    yield
    return
  try:
    fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)
  except OSError:
    f.seek(0)
    holder = f.read().strip() or "unknown pid"
    f.close()
    raise RunDirectoryError(
        f"{model_dir} is in use by another process ({holder}, lock {path}): its files are "
        "being written; read it when that has finished") from None
  _held[key] = (f, False)
  try:
    yield
  finally:
    del _held[key]
    f.close()


def _open_for_reading(path: str):
  """The lock file `path` open for flock, created when missing and the directory is writable;
  None when it cannot be opened (see `reading`)."""
  for mode in ("r", "a+"):
    try:
      return open(path, mode)
    except FileNotFoundError:
      continue  # never locked yet: create it where we may
    except OSError as e:
      if e.errno in _READ_ONLY:
        return None
      raise
  return None


def _only_readers(path: str) -> bool:
  """Whether the processes holding the lock file `path` all hold it shared (`reading`)."""
  try:
    with open(path) as probe:
      fcntl.flock(probe, fcntl.LOCK_SH | fcntl.LOCK_NB)
  except OSError:
    return False
  return True  # closing the probe released its shared lock
