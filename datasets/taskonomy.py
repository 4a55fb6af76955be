"""(Mini-)Taskonomy -> sharded TFRecords with the five tasks of Standley et al.'s `sdnkt` set.

  python -m datasets.taskonomy --src=/data/taskonomy --out_dir=/data/taskonomy_tfr \
      (--train_buildings=a,b --val_buildings=c | --split_file=splits.csv) \
      [--tasks=semseg,depth,normals,keypoints,edges] [--height=256 --width=256]

Source layouts (--layout; auto picks omnidata when `<src>/rgb/taskonomy` is a folder, else
task_building when `<src>/rgb` is a folder, else building_task):
  building_task   `<src>/<building>/<folder>/` (each `<building>_<folder>.tar` of the release
                  extracted into `<src>/<building>/`)
  task_building   `<src>/<folder>/<building>/` (Standley et al.'s taskgrouping loader)
  omnidata        `<src>/<folder>/taskonomy/<building>/` (`omnitools.download ...
                  --components taskonomy --dest <src>`)
Folders: rgb, segment_semantic, depth_zbuffer, normal, keypoints2d, edge_texture. Files are
`point_<p>_view_<v>_domain_<suffix>.png`, the suffix equal to the folder name except for the
semantic labels: `segment_semantic/point_0_view_0_domain_segmentsemantic.png` (folder with an
underscore, file suffix without) <-> `rgb/point_0_view_0_domain_rgb.png`. Files of one view
share the stem before `_domain_`.

Decoding (the stored values, per task):
  rgb               8-bit RGB PNG; resized bilinear (Pillow, antialiased).
  segment_semantic  8-bit labels 0..17; 0 = "uncertain" -> -1 (ignore); 1..17 -> classes
                    0..16 (class 0 = Taskonomy's "background"), 17 classes. Nearest.
  depth_zbuffer     16-bit, 1/512 m; 65535 = missing -> 0 (invalid); stored in metres. Nearest.
  normal            8-bit RGB, n = v / 255 * 2 - 1, renormalised; invalid (all-zero) where the
                    decoded vector is shorter than --normals_min_norm (grey fill) and, with
                    --normals_mask_from_depth (default), where depth_zbuffer is missing.
                    Nearest.
  keypoints2d       16-bit, divided by --label_scale (65535) -> [0, 1]. Bilinear.
  edge_texture      16-bit, divided by --label_scale (65535) -> [0, 1]. Bilinear.
Splits: building lists (--train_buildings / --val_buildings / --test_buildings) or
--split_file with `building,split` lines.

The records keep these physical units; training maps depth, keypoints and edges to Standley et
al.'s standardised values (the paper's protocol) under --taskonomy_label_units=standley, the
default (sdmtcnn_tf/data/taskonomy_units.py).
"""

from __future__ import annotations

import dataclasses
import functools
import os
import sys

import numpy as np
from absl import flags

from sdmtcnn_tf import tasks as tasks_lib
from sdmtcnn_tf.data import schema
from sdmtcnn_tf.data import taskonomy_units

from datasets import checks
from datasets import cli
from datasets import reading
from datasets import writing

DATASET = "taskonomy"
FOLDERS = {"image": "rgb", tasks_lib.SEMSEG: "segment_semantic",
           tasks_lib.DEPTH: "depth_zbuffer", tasks_lib.NORMALS: "normal",
           tasks_lib.KEYPOINTS: "keypoints2d", tasks_lib.EDGES: "edge_texture"}
# File suffix after "_domain_" where it differs from the folder name (the release's own naming).
SUFFIXES = {"segment_semantic": "segmentsemantic"}
LAYOUTS = ("building_task", "task_building", "omnidata")
OMNIDATA_COMPONENT = "taskonomy"  # omnitools.download puts files in <domain>/taskonomy/<building>
DEPTH_ROLE = "depth_mask"  # the depth_zbuffer file read only to mask normals
NUM_SOURCE_LABELS = 18  # segment_semantic values 0..17
# Taskonomy label 1 is "background"; labels 2..17 are 16 COCO-derived object classes whose
# names are not in the sources we could read, so they are named by their Taskonomy id.
CLASS_NAMES = ("background",) + tuple(f"taskonomy_{i}" for i in range(2, NUM_SOURCE_LABELS))
DEPTH_MISSING = 65535
DEPTH_UNITS_PER_METRE = taskonomy_units.DEPTH_PNG_PER_METRE


def build_flags() -> flags.FlagValues:
  fv = flags.FlagValues()
  cli.define_common_flags(fv)
  flags.DEFINE_list("tasks", ["semseg", "depth", "normals", "keypoints", "edges"],
                    "Tasks to store.", flag_values=fv)
  flags.DEFINE_enum("layout", "auto", ["auto", *LAYOUTS], "Folder order under --src "
                    "(see the module docstring).", flag_values=fv)
  flags.DEFINE_list("train_buildings", [], "Training buildings.", flag_values=fv)
  flags.DEFINE_list("val_buildings", [], "Validation buildings.", flag_values=fv)
  flags.DEFINE_list("test_buildings", [], "Test buildings.", flag_values=fv)
  flags.DEFINE_string("split_file", None, "Text/CSV file of `building,split` lines ('#' "
                      "comments and blank lines allowed); replaces the *_buildings flags.",
                      flag_values=fv)
  flags.DEFINE_integer("height", 256, "Output height (resize target).", flag_values=fv)
  flags.DEFINE_integer("width", 256, "Output width (resize target).", flag_values=fv)
  flags.DEFINE_float("label_scale", 65535.0, "keypoints2d and edge_texture PNG values are "
                     "divided by this (65535 maps the 16-bit range to [0, 1]).", flag_values=fv)
  flags.DEFINE_float("normals_min_norm", 0.5, "Decoded normals shorter than this are stored "
                     "as invalid (all-zero).", flag_values=fv)
  flags.DEFINE_bool("normals_mask_from_depth", True, "Also mark normals invalid where "
                    "depth_zbuffer is missing (65535); needs the depth_zbuffer files.",
                    flag_values=fv)
  flags.DEFINE_integer("max_per_building", 0, "Convert at most this many views per building "
                       "(first in natural stem order); 0 = all.", flag_values=fv)
  return fv


# ---------------------------------------------------------------------------------------------
# Splits and listing
# ---------------------------------------------------------------------------------------------

def read_split_file(path: str) -> dict:
  """`building,split` lines -> {split: [buildings]} (file order kept)."""
  if not os.path.isfile(path):
    raise reading.ConversionError(path, "missing --split_file")
  out = {}
  seen = {}
  with open(path) as f:
    for n, line in enumerate(f, 1):
      line = line.split("#", 1)[0].strip()
      if not line:
        continue
      parts = [p.strip() for p in line.replace("\t", ",").split(",")]
      if len(parts) != 2 or not all(parts):
        raise reading.ConversionError(path, f"line {n}: expected 'building,split', got {line!r}")
      building, split = parts
      if building in seen:
        raise reading.ConversionError(path, f"line {n}: building {building!r} listed twice")
      seen[building] = split
      out.setdefault(split, []).append(building)
  if not out:
    raise reading.ConversionError(path, "lists no buildings")
  return out


def building_splits(fv: flags.FlagValues) -> dict:
  """{split: [buildings]} from --split_file or the --*_buildings flags (exactly one)."""
  lists = {"train": cli.list_flag(fv.train_buildings),
           "val": cli.list_flag(fv.val_buildings),
           "test": cli.list_flag(fv.test_buildings)}
  lists = {k: v for k, v in lists.items() if v}
  if fv.split_file and lists:
    raise ValueError("pass either --split_file or --train_buildings/--val_buildings/"
                     "--test_buildings, not both")
  if fv.split_file:
    return read_split_file(fv.split_file)
  if not lists:
    raise ValueError("no buildings: pass --train_buildings/--val_buildings or --split_file")
  everything = [b for v in lists.values() for b in v]
  twice = sorted({b for b in everything if everything.count(b) > 1})
  if twice:
    raise ValueError(f"building(s) {twice} are listed in more than one split")
  return lists


def resolve_layout(src: str, layout: str) -> str:
  if layout != "auto":
    return layout
  rgb = os.path.join(src, FOLDERS["image"])
  if os.path.isdir(os.path.join(rgb, OMNIDATA_COMPONENT)):
    return "omnidata"
  return "task_building" if os.path.isdir(rgb) else "building_task"


def file_name(folder: str, stem: str) -> str:
  """The release's name of view `stem` in `folder`: "<stem>_domain_<suffix>.png"."""
  return f"{stem}_domain_{SUFFIXES.get(folder, folder)}.png"


def building_dir(src: str, layout: str, folder: str, building: str) -> str:
  if layout == "building_task":
    return os.path.join(src, building, folder)
  if layout == "omnidata":
    return os.path.join(src, folder, OMNIDATA_COMPONENT, building)
  return os.path.join(src, folder, building)


def role_folders(tasks, mask_normals: bool) -> dict:
  """role -> source folder: the image, each task, and depth_zbuffer for the normals mask."""
  roles = {"image": FOLDERS["image"], **{t: FOLDERS[t] for t in tasks}}
  if mask_normals and tasks_lib.NORMALS in tasks and tasks_lib.DEPTH not in tasks:
    roles[DEPTH_ROLE] = FOLDERS[tasks_lib.DEPTH]
  return roles


def list_building(src: str, layout: str, split: str, building: str, roles: dict,
                  max_views: int) -> tuple:
  """Items of one building keyed "<split>/<building>/<stem>"; (items, problems)."""
  dirs = {role: reading.require_dir(building_dir(src, layout, folder, building),
                                   f"{folder} of building {building!r}")
          for role, folder in roles.items()}
  files, misnamed = {}, {}
  for role, folder in roles.items():
    suffix = file_name(folder, "")
    wrong = f"_domain_{folder}.png"  # segment_semantic: the name the release does not use
    files[role] = {}
    for n in os.listdir(dirs[role]):
      if n.endswith(suffix):
        files[role][n[:-len(suffix)]] = os.path.join(dirs[role], n)
      elif wrong != suffix and n.endswith(wrong):
        misnamed[(role, n[:-len(wrong)])] = n

  def expected(role, stem):
    path = os.path.join(dirs[role], file_name(roles[role], stem))
    if (role, stem) in misnamed:
      path += (f" (found {misnamed[role, stem]}: the Taskonomy release names these files "
               f"*{file_name(roles[role], '')})")
    return path

  matched, problems = reading.pair_up(files, expected)
  if max_views > 0:
    matched = matched[:max_views]
  items = [reading.Item(f"{split}/{building}/{stem}", paths) for stem, paths in matched]
  return items, problems


# ---------------------------------------------------------------------------------------------
# Decoding
# ---------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Config:
  """How to convert one view; picklable."""

  tasks: tuple
  height: int
  width: int
  label_scale: float
  normals_min_norm: float
  normals_mask_from_depth: bool


def decode_rgb(path: str) -> np.ndarray:
  img = reading.load_png(path)
  if img.mode != "RGB":
    raise reading.ConversionError(path, f"expected an 8-bit RGB PNG, got mode {img.mode!r}")
  return np.asarray(img, dtype=np.uint8)


def decode_semseg(path: str) -> np.ndarray:
  """segment_semantic PNG -> int16 [H, W]: 0 (uncertain) -> -1, label l in 1..17 -> l - 1."""
  raw = reading.png_array(reading.load_png(path), path, 8)
  if raw.size and raw.max() >= NUM_SOURCE_LABELS:
    bad = np.unique(raw[raw >= NUM_SOURCE_LABELS])[:5].tolist()
    raise reading.ConversionError(path, f"label values {bad} outside 0..{NUM_SOURCE_LABELS - 1}")
  return raw.astype(np.int16) - 1


def decode_depth(path: str) -> np.ndarray:
  """depth_zbuffer PNG -> float32 [H, W] metres, 0 = missing."""
  raw = reading.png_array(reading.load_png(path), path, 16)
  return np.where(raw == DEPTH_MISSING, 0.0, raw / DEPTH_UNITS_PER_METRE).astype(np.float32)


def decode_normals(path: str, min_norm: float) -> np.ndarray:
  """normal PNG -> float32 [H, W, 3] unit vectors, all-zero = invalid (see module docstring)."""
  img = reading.load_png(path)
  if img.mode != "RGB":
    raise reading.ConversionError(path, f"expected an 8-bit RGB PNG, got mode {img.mode!r}")
  normals = np.asarray(img, dtype=np.float32) / 255.0 * 2.0 - 1.0
  return checks.renormalise(normals, min_norm)


def decode_heatmap(path: str, scale: float) -> np.ndarray:
  """keypoints2d / edge_texture 16-bit PNG -> float32 [H, W] = value / scale, in [0, 1]."""
  value = reading.png_array(reading.load_png(path), path, 16) / scale
  if value.size and value.max() > 1.0:
    raise reading.ConversionError(path, f"values / --label_scale={scale:g} exceed 1 "
                                       f"(max {value.max():.4g})")
  return value.astype(np.float32)


def convert_item(cfg: Config, item: reading.Item) -> bytes:
  """Decodes, resizes and serializes one view (see the module docstring).

  Every label map must have the rgb image's size (they are resized the same way).
  """
  h, w = cfg.height, cfg.width
  rgb = decode_rgb(item.paths["image"])
  source_shape = rgb.shape[:2]

  def same_size(value, role):
    checks.check_shape(value.shape[:2], source_shape, item.paths[role], f"{role} map "
                       "(must match rgb)")
    return value

  labels = {}
  depth = None
  depth_role = tasks_lib.DEPTH if tasks_lib.DEPTH in item.paths else DEPTH_ROLE
  if depth_role in item.paths and (tasks_lib.DEPTH in cfg.tasks or cfg.normals_mask_from_depth):
    depth = checks.resize_nearest(
        same_size(decode_depth(item.paths[depth_role]), depth_role), h, w)
  if tasks_lib.SEMSEG in cfg.tasks:
    labels[tasks_lib.SEMSEG] = checks.resize_nearest(
        same_size(decode_semseg(item.paths[tasks_lib.SEMSEG]), tasks_lib.SEMSEG), h, w)
  if tasks_lib.DEPTH in cfg.tasks:
    labels[tasks_lib.DEPTH] = depth
  if tasks_lib.NORMALS in cfg.tasks:
    normals = decode_normals(item.paths[tasks_lib.NORMALS], cfg.normals_min_norm)
    normals = checks.resize_nearest(same_size(normals, tasks_lib.NORMALS), h, w)
    if cfg.normals_mask_from_depth and depth is not None:
      normals = np.where((depth > 0)[..., None], normals, 0.0).astype(np.float32)
    labels[tasks_lib.NORMALS] = normals
  for task in (tasks_lib.KEYPOINTS, tasks_lib.EDGES):
    if task in cfg.tasks:
      heat = same_size(decode_heatmap(item.paths[task], cfg.label_scale), task)
      labels[task] = checks.resize_float_bilinear(heat, h, w)
  image = checks.resize_image_bilinear(rgb, h, w)
  return schema.encode_example(item.key, image, labels)


# ---------------------------------------------------------------------------------------------
# Driver
# ---------------------------------------------------------------------------------------------

def run(fv: flags.FlagValues):
  """Converts with the parsed flags; returns the Manifest (None if already converted)."""
  tasks = cli.parse_tasks(fv.tasks, tasks_lib.ALL_TASKS)
  if fv.label_scale <= 0:
    raise ValueError(f"--label_scale must be > 0, got {fv.label_scale}")
  src = os.path.abspath(fv.src)
  reading.require_dir(src, "--src")
  splits = building_splits(fv)
  layout = resolve_layout(src, fv.layout)
  roles = role_folders(tasks, fv.normals_mask_from_depth)
  items, problems = {}, []
  for split, buildings in splits.items():
    items[split] = []
    for building in buildings:
      found, bad = list_building(src, layout, split, building, roles, fv.max_per_building)
      problems += reading.raise_or_keep(bad, fv.skip_bad)
      items[split] += found
  cfg = Config(tasks=tasks, height=fv.height, width=fv.width, label_scale=fv.label_scale,
               normals_min_norm=fv.normals_min_norm,
               normals_mask_from_depth=fv.normals_mask_from_depth)
  params = {"src": src, "layout": layout, "tasks": tasks, "splits": splits,
            "height": fv.height, "width": fv.width, "label_scale": fv.label_scale,
            "normals_min_norm": fv.normals_min_norm,
            "normals_mask_from_depth": fv.normals_mask_from_depth,
            "max_per_building": fv.max_per_building, "num_shards": fv.num_shards,
            "skip_bad": fv.skip_bad}
  extra = {
      "buildings": splits,
      "semseg_note": "segment_semantic 0 (uncertain) -> -1; Taskonomy label l in 1..17 -> "
                     "class l - 1 (class 0 = background)",
      "depth_note": "depth_zbuffer / 512 = metres; 65535 (missing) -> 0; nearest resize",
      "normals_note": f"v / 255 * 2 - 1, renormalised; norm < {fv.normals_min_norm} -> invalid"
                      + ("; invalid where depth_zbuffer is missing"
                         if fv.normals_mask_from_depth else "") + "; nearest resize",
      "heatmap_note": f"keypoints2d, edge_texture: value / {fv.label_scale:g}; bilinear resize",
      "image_note": "rgb resized with Pillow bilinear (antialiased)",
  }
  info = writing.DatasetInfo(DATASET, fv.height, fv.width, tasks, CLASS_NAMES, "metres")
  return writing.convert_splits(info, fv.out_dir, items, functools.partial(convert_item, cfg),
                               params, fv.num_shards, fv.num_workers, fv.skip_bad,
                               fv.overwrite, problems, extra)


def main(argv) -> int:
  return cli.cli_main(build_flags, run, argv)


if __name__ == "__main__":
  sys.exit(main(sys.argv))
