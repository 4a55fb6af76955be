"""Reading a converter's source files: the example list (`Item`), and errors that name the file.

A converter lists its examples as `Item`s (an example key plus the source files it reads);
bad input raises `ConversionError` naming the offending file, or, under --skip_bad, is kept as
a `Skipped` entry for the manifest.
"""

from __future__ import annotations

import dataclasses
import os
import re
from typing import Callable, Mapping, Sequence

import numpy as np
from PIL import Image


class ConversionError(Exception):
  """Bad input: names the offending file (or folder) and what was wrong with it."""

  def __init__(self, path: str, reason: str):
    reason = " ".join(str(reason).split())  # one line, whatever the wrapped error printed
    super().__init__(f"{path}: {reason}")
    self.path = path
    self.reason = reason


@dataclasses.dataclass(frozen=True)
class Item:
  """One example to convert.

  Attributes:
    key: example id stored in the record (e.g. "train/000123").
    paths: role -> source file ("image", or a task folder name); what the roles mean is up to
      the converter.
  """

  key: str
  paths: Mapping[str, str]


@dataclasses.dataclass(frozen=True)
class Skipped:
  """An example left out under --skip_bad."""

  path: str
  reason: str


def require_dir(path: str, what: str) -> str:
  """Returns `path` if it is a folder, else raises ConversionError naming it."""
  if not os.path.isdir(path):
    raise ConversionError(path, f"missing folder ({what})")
  return path


def natural_key(name: str) -> tuple:
  """Sort key with numbers compared by value: 'point_2' < 'point_10', '9' < '10'."""
  return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name))


def load_npy(path: str) -> np.ndarray:
  """np.load without pickles; a missing/corrupt file raises ConversionError naming it."""
  try:
    return np.load(path, allow_pickle=False)
  except Exception as e:  # noqa: BLE001 - numpy raises many types for corrupt files
    raise ConversionError(path, f"cannot read .npy ({type(e).__name__}: {e})") from e


def load_png(path: str) -> Image.Image:
  """Opens and fully decodes an image; a missing/corrupt file raises ConversionError."""
  try:
    with Image.open(path) as img:
      img.load()
      return img.copy()
  except Exception as e:  # noqa: BLE001 - Pillow raises many types for corrupt files
    raise ConversionError(path, f"cannot decode image ({type(e).__name__}: {e})") from e


def png_array(img: Image.Image, path: str, bits: int) -> np.ndarray:
  """Single-band image -> integer array [H, W].

  Args:
    bits: 8 (modes L, P) or 16 (modes I;16*, or I holding values < 2**16).
  Raises:
    ConversionError if the mode does not match `bits`.
  """
  if bits == 8 and img.mode in ("L", "P"):
    return np.asarray(img, dtype=np.uint8)
  if bits == 16 and img.mode.startswith("I;16"):
    return np.asarray(img).astype(np.int32)
  if bits == 16 and img.mode == "I":
    arr = np.asarray(img, dtype=np.int32)
    if arr.size and (arr.min() < 0 or arr.max() > 65535):
      raise ConversionError(path, f"16-bit PNG values outside [0, 65535]: "
                                  f"[{arr.min()}, {arr.max()}]")
    return arr
  raise ConversionError(path, f"expected a single-band {bits}-bit PNG, got mode {img.mode!r}")


def pair_up(files: Mapping[str, Mapping[str, str]],
            expected: Callable[[str, str], str]) -> tuple:
  """Matches the files of one example across roles (image and task folders).

  Args:
    files: role -> {stem -> path}; a stem is the part of the name shared by partners.
    expected: (role, stem) -> the path a missing partner should have (for the message).
  Returns:
    (matched, problems): matched a list of (stem, {role: path}) in natural stem order;
    problems a list of Skipped naming a file whose partner is missing, and where.
  """
  stems = sorted(set().union(*[set(v) for v in files.values()]), key=natural_key)
  matched, problems = [], []
  for stem in stems:
    missing = [role for role in files if stem not in files[role]]
    if not missing:
      matched.append((stem, {role: files[role][stem] for role in files}))
      continue
    present = next(files[role][stem] for role in files if stem in files[role])
    wanted = ", ".join(expected(role, stem) for role in missing)
    problems.append(Skipped(present, f"no partner file: missing {wanted}"))
  return matched, problems


def raise_or_keep(problems: Sequence[Skipped], skip_bad: bool) -> list:
  """Raises ConversionError for the first problem unless skip_bad; returns the list."""
  if problems and not skip_bad:
    raise ConversionError(problems[0].path, problems[0].reason)
  return list(problems)
