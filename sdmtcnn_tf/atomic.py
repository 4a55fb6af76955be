"""Atomic writes: every file a run writes goes through here.

Each writer writes a temp file beside its target (same directory, so same filesystem), fsyncs
it, then `os.replace`s it over the target and fsyncs the directory: a process killed at any
instant, even inside a write, leaves either the old file or the new one, never a torn one. A full
disk raises `RunDirectoryError("<path>: no space left on device (needed about N MB ...)")` and
leaves the old file in place, so the same command works again once space is freed.

A writer given a digest manifest (`digests`, e.g. backup/SHA256SUMS, see integrity.py) lists the
new file's sha256 there in two atomic steps around the renames: before them, a manifest listing
the new digest AND the old ones (the target's, and the kept previous copy's); after them, only
the current ones. So at every instant each file in place has its digest listed: a kill never
leaves a good file looking corrupt, nor a file trusted on a digest that is not its own.

Test hooks (fault injection for tests/test_durability.py; unset in normal use). Each write has a
label (backup, checkpoint, history, metrics, config, ...; a digest manifest's two writes per
file are labelled <label>_digests) and a per-process counter per label:
  SDMTCNN_TEST_KILL_IN=<label>:<n>    at the n-th <label> write, cut the finished temp file to
                                      half and SIGKILL this process (a kill inside the write);
  SDMTCNN_TEST_ENOSPC_IN=<label>:<n>  at the n-th <label> write, fail with ENOSPC (a full disk).
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import signal

from sdmtcnn_tf import integrity
from sdmtcnn_tf.rundir import RunDirectoryError

KILL_ENV = "SDMTCNN_TEST_KILL_IN"
ENOSPC_ENV = "SDMTCNN_TEST_ENOSPC_IN"
_WEIGHTS_EXT = ".weights.h5"  # Keras requires this ending, temp files included
_writes: dict = {}  # label -> writes so far in this process (test hooks)


def is_disk_full(error: BaseException) -> bool:
  """True for ENOSPC/EDQUOT, also as h5py/TF report it (in the message only)."""
  if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
    return True
  text = str(error)
  return "No space left on device" in text or "errno = 28" in text


def disk_full_error(path: str, needed_bytes: int) -> RunDirectoryError:
  free = _free_bytes(os.path.dirname(path) or ".")
  return RunDirectoryError(
      f"{path}: no space left on device (needed about {_mb(needed_bytes)} MB, "
      f"{_mb(free) if free is not None else '?'} MB free); free some space and run the same "
      "command again: the run resumes from its last complete state")


def temp_path(path: str) -> str:
  """The temp file written before `path` is replaced: hidden, beside it, same extension."""
  directory, base = os.path.split(path)
  if base.endswith(_WEIGHTS_EXT):
    return os.path.join(directory, f".{base[:-len(_WEIGHTS_EXT)]}.tmp{_WEIGHTS_EXT}")
  return os.path.join(directory, f".{base}.tmp")


@contextlib.contextmanager
def replacing(path: str, label: str, needed_bytes: int, previous: str = "",
              digests: str = ""):
  """Yields a temp path; when the block returns, fsyncs it and atomically replaces `path`.

  `previous`: first keep the current `path` under this name (the last good copy). `digests`:
  the manifest (in the same folder) where the sha256 of `path` (and `previous`) is kept, see
  the module docstring. On any error the temp file is removed and `path` is untouched; a full
  disk raises RunDirectoryError.
  """
  directory = os.path.dirname(path) or "."
  tmp = temp_path(path)
  try:
    os.makedirs(directory, exist_ok=True)
    free = _free_bytes(directory)
    if free is not None and free < needed_bytes:
      raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)
    yield tmp
    _fsync(tmp)
    _test_hook(label, tmp)
    keep = bool(previous) and os.path.exists(path)
    if digests:
      during, after = _listed_digests(digests, path, tmp, previous if keep else "")
      write_text(digests, integrity.format_digests(during), label=f"{label}_digests")
    if keep:
      _keep_previous(path, previous)
    os.replace(tmp, path)
    _fsync_dir(directory)
    if digests:
      write_text(digests, integrity.format_digests(after), label=f"{label}_digests")
  except BaseException as e:
    with contextlib.suppress(OSError):
      os.remove(tmp)
    if is_disk_full(e):
      raise disk_full_error(path, needed_bytes) from e
    if isinstance(e, OSError) and path not in str(e):
      raise RunDirectoryError(f"{path}: cannot write it ({e})") from e
    raise


def write_bytes(path: str, data: bytes, label: str = "bytes") -> None:
  with replacing(path, label, len(data)) as tmp:
    with open(tmp, "wb") as f:
      f.write(data)


def write_text(path: str, text: str, label: str = "text") -> None:
  write_bytes(path, text.encode(), label)


def write_json(path: str, obj, label: str = "json", **dump_args) -> None:
  write_text(path, json.dumps(obj, **dump_args) + "\n", label)


def write_npz(path: str, label: str = "npz", **arrays) -> None:
  """np.savez_compressed of `arrays` to `path` (which should end in .npz), atomically."""
  import numpy as np
  needed = sum(int(np.asarray(a).nbytes) for a in arrays.values())  # upper bound
  with replacing(path, label, needed) as tmp:
    with open(tmp, "wb") as f:  # a file object: savez would append .npz to a name
      np.savez_compressed(f, **arrays)


def save_weights(model, path: str, label: str = "weights", attrs: dict | None = None,
                 previous: str = "", digests: str = "") -> None:
  """`model.save_weights(path)` atomically; `attrs` are stored on the HDF5 root (e.g. epoch).
  `previous`, `digests`: see `replacing`."""
  needed = max(estimate_weights_bytes(model),
               os.path.getsize(path) if os.path.exists(path) else 0)
  with replacing(path, label, needed, previous=previous, digests=digests) as tmp:
    model.save_weights(tmp)
    if attrs:
      import h5py
      with h5py.File(tmp, "a") as f:
        for key, value in attrs.items():
          f.attrs[key] = value


def read_attrs(path: str) -> dict:
  """The root attributes `save_weights` stored (raises if the file is unreadable)."""
  import h5py
  with h5py.File(path, "r") as f:
    return {key: f.attrs[key].item() if hasattr(f.attrs[key], "item") else f.attrs[key]
            for key in f.attrs}


def estimate_weights_bytes(model) -> int:
  """Bytes of the model's (and its built optimizer's) variables, plus HDF5 overhead."""
  variables = list(model.weights)
  optimizer = getattr(model, "optimizer", None)
  if optimizer is not None and getattr(optimizer, "built", False):
    variables += list(optimizer.variables)
  total = 0
  for v in variables:
    size = {"float16": 2, "bfloat16": 2, "float64": 8, "int64": 8}.get(str(v.dtype), 4)
    total += int(math.prod(v.shape)) * size
  return total + 64 * 1024


def _test_hook(label: str, tmp: str) -> None:
  count = _writes[label] = _writes.get(label, 0) + 1
  for env in (KILL_ENV, ENOSPC_ENV):
    name, _, nth = os.environ.get(env, "").partition(":")
    if name != label or int(nth or 1) != count:
      continue
    if env == ENOSPC_ENV:
      raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), tmp)
    with open(tmp, "r+b") as f:  # as if killed halfway through writing the temp file
      f.truncate(os.path.getsize(tmp) // 2)
    os.kill(os.getpid(), signal.SIGKILL)


def _listed_digests(manifest: str, path: str, tmp: str, previous: str) -> tuple:
  """The manifests ({name: digests}) to write before and after `tmp` replaces `path` (and
  `path` becomes `previous`, if given); names are relative to the manifest's folder.

  No manifest yet (the first backup, or a run from before digests were kept): the current
  `path` that is kept as `previous` is hashed now, so it stays a fallback.
  """
  try:
    listed = integrity.read_digests(manifest)
  except integrity.IntegrityError:
    listed = {}  # a damaged manifest vouches for nothing; the new file gets a fresh one
  if listed is None:
    listed = {os.path.basename(path): {integrity.sha256(path)}} if previous else {}
  name, new = os.path.basename(path), integrity.sha256(tmp)
  current = listed.get(name, set())
  if previous and len(current) > 1:  # a kill mid-commit listed two: keep the one it holds
    current = current & {integrity.sha256(path)}
  during = {**listed, name: current | {new}}
  after = {**listed, name: {new}}
  if previous:
    kept = os.path.basename(previous)
    during[kept] = listed.get(kept, set()) | current
    after[kept] = current
  return during, {k: v for k, v in after.items() if v}


def _keep_previous(path: str, previous: str) -> None:
  """`previous` := the current `path`, without a moment where `path` is missing (hard link)."""
  link = temp_path(previous)
  with contextlib.suppress(OSError):
    os.remove(link)
  try:
    os.link(path, link)
    os.replace(link, previous)
  except OSError:  # no hard links on this filesystem
    os.replace(path, previous)


def _fsync(path: str) -> None:
  with open(path, "rb") as f:
    os.fsync(f.fileno())


def _fsync_dir(directory: str) -> None:
  with contextlib.suppress(OSError):
    fd = os.open(directory, os.O_RDONLY)
    try:
      os.fsync(fd)
    finally:
      os.close(fd)


def _free_bytes(directory: str) -> int | None:
  try:
    st = os.statvfs(directory)
  except OSError:
    return None
  return st.f_bavail * st.f_frsize


def _mb(n: int) -> int:
  return max(1, math.ceil(n / 2**20))
