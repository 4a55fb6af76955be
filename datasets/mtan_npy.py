"""The MTAN pre-processed `.npy` layout, shared by the NYUv2 and CityScapes converters.

Layout: `<src>/<split>/<folder>/<i>.npy`, one folder per role ("image" plus one per task),
files matched across folders by name. Arrays (all H x W at the converted size, no resizing):
  image    float [H, W, 3] RGB in [0, 1] (also [3, H, W], or uint8 [H, W, 3])
  label    float/int [H, W] class ids 0..C-1, -1 = ignore
  depth    float [H, W] or [H, W, 1], >= 0, 0 = invalid (metres or disparity)
  normal   float [H, W, 3] components in [-1, 1], all-zero = invalid
"""

from __future__ import annotations

import dataclasses
import os
from typing import Mapping, Sequence

from sdmtcnn_tf import tasks as tasks_lib
from sdmtcnn_tf.data import schema

from datasets import checks
from datasets import reading


@dataclasses.dataclass(frozen=True)
class NpyConfig:
  """How to read one example; picklable (sent to the worker processes)."""

  tasks: tuple
  height: int
  width: int
  num_classes: int
  normals_min_norm: float = 0.5


def list_split(src: str, split: str, folders: Mapping[str, str]) -> tuple:
  """Lists the examples of one split.

  Args:
    folders: role ("image" or a task name) -> folder name under `<src>/<split>/`.
  Returns:
    (items, problems): Items keyed "<split>/<i:06d>" with paths keyed by role, in numeric
    order; problems lists files whose partner in another folder is missing.
  Raises:
    ConversionError naming a missing split or role folder.
  """
  split_dir = reading.require_dir(os.path.join(src, split), f"split {split!r}")
  files = {}
  for role, folder in folders.items():
    folder_dir = reading.require_dir(os.path.join(split_dir, folder), f"{role} of split {split!r}")
    files[role] = {name[:-4]: os.path.join(folder_dir, name)
                   for name in os.listdir(folder_dir) if name.endswith(".npy")}
  matched, problems = reading.pair_up(
      files, lambda role, stem: os.path.join(split_dir, folders[role], stem + ".npy"))
  items = [reading.Item(example_key(split, stem), paths) for stem, paths in matched]
  return items, problems


def example_key(split: str, stem: str) -> str:
  return f"{split}/{int(stem):06d}" if stem.isdigit() else f"{split}/{stem}"


def convert_item(cfg: NpyConfig, item: reading.Item) -> bytes:
  """Reads the .npy files of one Item and returns its serialized record.

  Raises:
    ConversionError naming the file: unreadable, wrong shape or dtype, values out of range.
  """
  shape = (cfg.height, cfg.width)
  path = item.paths["image"]
  image = checks.float_image_to_uint8(reading.load_npy(path), path, shape)
  labels = {}
  if tasks_lib.SEMSEG in cfg.tasks:
    path = item.paths[tasks_lib.SEMSEG]
    labels[tasks_lib.SEMSEG] = checks.class_map(reading.load_npy(path), path, cfg.num_classes,
                                                shape)
  if tasks_lib.DEPTH in cfg.tasks:
    path = item.paths[tasks_lib.DEPTH]
    labels[tasks_lib.DEPTH] = checks.nonnegative_map(reading.load_npy(path), path, "depth", shape)
  if tasks_lib.NORMALS in cfg.tasks:
    path = item.paths[tasks_lib.NORMALS]
    labels[tasks_lib.NORMALS] = checks.unit_normals(reading.load_npy(path), path, shape,
                                                    cfg.normals_min_norm)
  return schema.encode_example(item.key, image, labels)


def list_splits(src: str, splits: Sequence[str], folders: Mapping[str, str],
                skip_bad: bool) -> tuple:
  """list_split over `splits`; raises on the first missing partner unless skip_bad.

  Returns: ({split: items}, problems).
  """
  reading.require_dir(src, "--src")
  out, problems = {}, []
  for split in splits:
    items, bad = list_split(src, split, folders)
    problems += reading.raise_or_keep(bad, skip_bad)
    out[split] = items
  return out, problems
