"""Whether a saved weights file may be resumed from: its sha256 against the digest manifest
beside it, and every floating-point value in it finite.

The manifest (e.g. backup/SHA256SUMS) is in `sha256sum`'s format, `<hex>  <file name>` per line,
names relative to the manifest's folder (`cd backup && sha256sum -c SHA256SUMS` checks it by
hand). A name may be listed more than once while a new file is being committed (see
atomic.replacing): the file is good if its digest is any of those listed for it.
"""

from __future__ import annotations

import hashlib
import os


class IntegrityError(ValueError):
  """A weights file fails its digest, has none, or holds NaN/Inf; the message says which."""


def sha256(path: str) -> str:
  """The hex sha256 of the file at `path` (read in 1 MiB blocks)."""
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      digest.update(block)
  return digest.hexdigest()


def read_digests(manifest: str) -> dict | None:
  """{file name: set of hex digests} listed in `manifest`; None if it does not exist.

  Raises IntegrityError naming the manifest if a line is not `<64 hex>  <name>`.
  """
  if not os.path.exists(manifest):
    return None
  listed: dict = {}
  with open(manifest, encoding="utf-8", errors="replace") as f:
    for number, line in enumerate(f, 1):
      digest, _, name = line.rstrip("\n").partition("  ")
      if len(digest) != 64 or not name or any(c not in "0123456789abcdef" for c in digest):
        raise IntegrityError(f"{manifest} line {number} is not `<sha256 hex>  <file name>`")
      listed.setdefault(name, set()).add(digest)
  return listed


def format_digests(listed: dict) -> str:
  """The manifest text of {file name: set of hex digests} (sorted, sha256sum's format)."""
  return "".join(f"{digest}  {name}\n" for name in sorted(listed)
                 for digest in sorted(listed[name]))


def check_digest(path: str, manifest: str) -> bool:
  """True if `path`'s sha256 is one listed for its name in `manifest`; False if there is no
  manifest at all (a file written before digests were kept: unverified, the caller decides).

  Raises IntegrityError if the manifest lists no digest for `path`, lists others, or is
  malformed.
  """
  listed = read_digests(manifest)
  if listed is None:
    return False
  expected = listed.get(os.path.basename(path))
  if not expected:
    raise IntegrityError(f"has no sha256 digest in {manifest}")
  if sha256(path) not in expected:
    raise IntegrityError(f"fails its sha256 digest (listed in {manifest})")
  return True


def check_finite(path: str) -> None:
  """Raises IntegrityError naming the first HDF5 dataset of `path` (a weight or optimizer
  variable) holding NaN or Inf, and how many more do; reads every dataset, so a file whose data
  cannot be read raises h5py's error."""
  import h5py
  import numpy as np
  bad = []

  def visit(name, item):
    if (isinstance(item, h5py.Dataset) and item.dtype.kind == "f"
        and not np.isfinite(item[()]).all()):
      bad.append(name)

  with h5py.File(path, "r") as f:
    f.visititems(visit)
  if bad:
    more = f" and {len(bad) - 1} more variables" if len(bad) > 1 else ""
    raise IntegrityError(f"holds NaN/Inf values in {bad[0]}{more}")
