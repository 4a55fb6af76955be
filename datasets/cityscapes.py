"""CityScapes -> sharded TFRecords (7 categories + disparity), from two source layouts.

  python -m datasets.cityscapes --src=/data/cityscapes2 --out_dir=/data/cityscapes_tfr \
      [--layout=mtan] [--label_folder=label_7] [--tasks=semseg,depth]
  python -m datasets.cityscapes --layout=raw --src=/data/cityscapes --out_dir=... \
      [--height=128 --width=256] [--ignore_in_eval]

--layout=mtan (default): MTAN's pre-processed release ("cityscapes2", 128 x 256),
`<src>/{train,val}/{image,label_7|label,depth}/<i>.npy`: image float [H, W, 3] in [0, 1],
label_7 float [H, W] 7 classes 0..6 with -1 = ignore, depth float [H, W(, 1)] = disparity used
as inverse depth (0..~0.49 there), 0 = invalid. Stored as is (no resizing: the arrays must be
--height x --width).

--layout=raw: the official release, `leftImg8bit/<split>/<city>/<stem>_leftImg8bit.png`,
`gtFine/<split>/<city>/<stem>_gtFine_labelIds.png`, `disparity/<split>/<city>/<stem>_disparity.png`
(2048 x 1024; <stem> = <city>_<seq:06d>_<frame:06d>), each top folder directly under --src
(the zips unpacked into one folder) or inside a folder named after its zip
(`leftImg8bit_trainvaltest/leftImg8bit/...`, `gtFine_trainvaltest/gtFine/...`,
`disparity_trainvaltest/disparity/...`). Label ids 0..33 map to their category
(cityscapesscripts.helpers.labels): flat, construction, object, nature, sky, human,
vehicle = classes 0..6; void -> -1 (ignore); with --ignore_in_eval, labels flagged
ignoreInEval (parking, rail track, guard rail, bridge, tunnel, polegroup, caravan, trailer)
-> -1 too. Disparity PNG value p > 0 -> (p - 1) / 256
pixels at the source width, multiplied by width / source width (disparity scales with the
image width), p = 0 -> 0 = invalid. Resized to --height x --width: image bilinear
(Pillow, antialiased), labels and disparity nearest (no blending across classes or with
invalid pixels).
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

from datasets import checks
from datasets import cli
from datasets import mtan_npy
from datasets import reading
from datasets import writing

DATASET = "cityscapes"
CLASS_NAMES = ("flat", "construction", "object", "nature", "sky", "human", "vehicle")
ALLOWED_TASKS = (tasks_lib.SEMSEG, tasks_lib.DEPTH)
CITYSCAPESSCRIPTS_PIN = "cityscapesscripts==2.3.0"
NOT_A_LABEL_ID = -2  # lookup-table value of 8-bit values that are no Cityscapes label id

RAW_SUFFIX = {"image": "_leftImg8bit.png", tasks_lib.SEMSEG: "_gtFine_labelIds.png",
              tasks_lib.DEPTH: "_disparity.png"}
RAW_ROOT = {"image": "leftImg8bit", tasks_lib.SEMSEG: "gtFine", tasks_lib.DEPTH: "disparity"}

DEPTH_NOTE_RAW = ("disparity in pixels of the stored image: (png - 1) / 256 at the source "
                  "width (2048), times width / source width; png 0 -> 0 = invalid; resized "
                  "nearest-neighbour")
DEPTH_NOTE_MTAN = ("MTAN pre-processed 'depth' array stored as is: disparity used as inverse "
                   "depth (about 0..0.49), 0 = invalid")


def build_flags() -> flags.FlagValues:
  fv = flags.FlagValues()
  cli.define_common_flags(fv)
  flags.DEFINE_enum("layout", "mtan", ["mtan", "raw"], "Source layout: MTAN's pre-processed "
                    ".npy release, or the official PNG release.", flag_values=fv)
  flags.DEFINE_list("tasks", ["semseg", "depth"], "Tasks to store (from semseg, depth).",
                    flag_values=fv)
  flags.DEFINE_list("splits", ["train", "val"], "Splits to convert.", flag_values=fv)
  flags.DEFINE_enum("label_folder", "label_7", ["label_7", "label"], "--layout=mtan: folder "
                    "of the 7-class labels (LibMTL renames label_7 to label).", flag_values=fv)
  flags.DEFINE_integer("height", 128, "Output height (mtan: the arrays' height; raw: resize "
                       "target).", flag_values=fv)
  flags.DEFINE_integer("width", 256, "Output width (mtan: the arrays' width; raw: resize "
                       "target).", flag_values=fv)
  flags.DEFINE_bool("ignore_in_eval", False, "--layout=raw: also map the label ids flagged "
                    "ignoreInEval in the Cityscapes label table to -1 (default: only void).",
                    flag_values=fv)
  return fv


# ---------------------------------------------------------------------------------------------
# Label table (raw layout)
# ---------------------------------------------------------------------------------------------

def cityscapes_label_table() -> list:
  """(id, categoryId, category, ignoreInEval) rows of cityscapesscripts.helpers.labels."""
  try:
    from cityscapesscripts.helpers import labels  # pylint: disable=import-outside-toplevel
  except ImportError as e:
    raise reading.ConversionError(
        "cityscapesscripts", "--layout=raw needs the Cityscapes label table: "
        f"pip install --no-deps {CITYSCAPESSCRIPTS_PIN}") from e
  return [(l.id, l.categoryId, l.category, l.ignoreInEval) for l in labels.labels]


def category_lut(table, ignore_in_eval: bool) -> np.ndarray:
  """Label id -> class lookup table.

  Args:
    table: (id, categoryId, category, ignoreInEval) rows; categories 1..7 must be
      CLASS_NAMES in order, category 0 is void.
    ignore_in_eval: map ignoreInEval labels to -1 as well.
  Returns:
    int16 [256]: class 0..6, -1 = ignore, NOT_A_LABEL_ID for values that are no label id
    (ids < 0, e.g. the license plate's -1, cannot occur in an 8-bit labelIds PNG).
  """
  lut = np.full(256, NOT_A_LABEL_ID, np.int16)
  for label_id, cat_id, category, ignored in table:
    if cat_id > 0 and CLASS_NAMES[cat_id - 1] != category:
      raise ValueError(f"label table: category {cat_id} is {category!r}, expected "
                       f"{CLASS_NAMES[cat_id - 1]!r}")
    if 0 <= label_id < 256:
      void = cat_id == 0 or (ignore_in_eval and ignored)
      lut[label_id] = tasks_lib.IGNORE_LABEL if void else cat_id - 1
  return lut


@dataclasses.dataclass(frozen=True)
class RawConfig:
  """How to convert one raw-layout example; picklable."""

  tasks: tuple
  height: int
  width: int
  lut: tuple  # 256 ints, see category_lut


def convert_raw_item(cfg: RawConfig, item: reading.Item) -> bytes:
  """Decodes the PNGs of one raw example into a record (see the module docstring)."""
  path = item.paths["image"]
  img = reading.load_png(path)
  if img.mode != "RGB":
    raise reading.ConversionError(path, f"expected an 8-bit RGB PNG, got mode {img.mode!r}")
  source = np.asarray(img, dtype=np.uint8)
  src_shape = source.shape[:2]
  image = checks.resize_image_bilinear(source, cfg.height, cfg.width)
  labels = {}
  if tasks_lib.SEMSEG in cfg.tasks:
    path = item.paths[tasks_lib.SEMSEG]
    ids = reading.png_array(reading.load_png(path), path, 8)
    checks.check_shape(ids.shape, src_shape, path, "labelIds")
    classes = np.asarray(cfg.lut, np.int16)[ids]
    if np.any(classes == NOT_A_LABEL_ID):
      bad = np.unique(ids[classes == NOT_A_LABEL_ID])[:5].tolist()
      raise reading.ConversionError(path, f"label ids {bad} are not Cityscapes label ids "
                                         "(expected 0..33)")
    labels[tasks_lib.SEMSEG] = checks.resize_nearest(classes, cfg.height, cfg.width)
  if tasks_lib.DEPTH in cfg.tasks:
    path = item.paths[tasks_lib.DEPTH]
    raw = reading.png_array(reading.load_png(path), path, 16)
    checks.check_shape(raw.shape, src_shape, path, "disparity")
    labels[tasks_lib.DEPTH] = checks.resize_nearest(
        disparity_pixels(raw, cfg.width / src_shape[1]), cfg.height, cfg.width)
  return schema.encode_example(item.key, image, labels)


def disparity_pixels(png: np.ndarray, scale: float) -> np.ndarray:
  """Cityscapes disparity PNG values -> float32 disparity in pixels times `scale`, 0 = invalid."""
  png = png.astype(np.float32)
  return np.where(png > 0, (png - 1.0) / 256.0 * scale, 0.0).astype(np.float32)


def raw_root(src: str, role: str) -> str:
  """`<src>/<type>`, or `<src>/<type>_trainvaltest/<type>` when only that exists."""
  top = os.path.join(src, RAW_ROOT[role])
  zipped = os.path.join(src, f"{RAW_ROOT[role]}_trainvaltest", RAW_ROOT[role])
  return zipped if not os.path.isdir(top) and os.path.isdir(zipped) else top


def list_raw_split(src: str, split: str, tasks) -> tuple:
  """Items of one split of the official layout, keyed "<split>/<city>_<seq>_<frame>".

  Returns: (items, problems) as reading.pair_up.
  """
  roles = ("image",) + tuple(tasks)
  files = {role: {} for role in roles}
  for role in roles:
    root = reading.require_dir(os.path.join(raw_root(src, role), split),
                              f"{RAW_ROOT[role]} of split {split!r}")
    cities = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
    for city in cities:
      for name in os.listdir(os.path.join(root, city)):
        if name.endswith(RAW_SUFFIX[role]):
          files[role][name[:-len(RAW_SUFFIX[role])]] = os.path.join(root, city, name)

  def expected(role, stem):
    city = stem.rsplit("_", 2)[0]  # <city>_<seq>_<frame>
    return os.path.join(raw_root(src, role), split, city, stem + RAW_SUFFIX[role])

  matched, problems = reading.pair_up(files, expected)
  return [reading.Item(f"{split}/{stem}", paths) for stem, paths in matched], problems


# ---------------------------------------------------------------------------------------------
# Driver
# ---------------------------------------------------------------------------------------------

def run(fv: flags.FlagValues):
  """Converts with the parsed flags; returns the Manifest (None if already converted)."""
  tasks = cli.parse_tasks(fv.tasks, ALLOWED_TASKS)
  splits = cli.list_flag(fv.splits)
  src = os.path.abspath(fv.src)
  params = {"src": src, "layout": fv.layout, "tasks": tasks, "splits": splits,
            "height": fv.height, "width": fv.width, "num_shards": fv.num_shards,
            "skip_bad": fv.skip_bad}
  if fv.layout == "mtan":
    params["label_folder"] = fv.label_folder
    folders = {"image": "image", tasks_lib.SEMSEG: fv.label_folder, tasks_lib.DEPTH: "depth"}
    folders = {r: f for r, f in folders.items() if r == "image" or r in tasks}
    items, problems = mtan_npy.list_splits(src, splits, folders, fv.skip_bad)
    cfg = mtan_npy.NpyConfig(tasks=tasks, height=fv.height, width=fv.width,
                             num_classes=len(CLASS_NAMES))
    convert = functools.partial(mtan_npy.convert_item, cfg)
    extra = {"depth_note": DEPTH_NOTE_MTAN,
             "notes": f"MTAN pre-processed CityScapes (.npy), labels from {fv.label_folder}/"}
  else:
    params["ignore_in_eval"] = fv.ignore_in_eval
    lut = category_lut(cityscapes_label_table(), fv.ignore_in_eval)
    reading.require_dir(src, "--src")
    items, problems = {}, []
    for split in splits:
      split_items, bad = list_raw_split(src, split, tasks)
      problems += reading.raise_or_keep(bad, fv.skip_bad)
      items[split] = split_items
    cfg = RawConfig(tasks=tasks, height=fv.height, width=fv.width, lut=tuple(lut.tolist()))
    convert = functools.partial(convert_raw_item, cfg)
    extra = {"depth_note": DEPTH_NOTE_RAW,
             "label_note": "label ids -> Cityscapes categories (cityscapesscripts "
                           f"{CITYSCAPESSCRIPTS_PIN}): flat..vehicle = 0..6, void -> -1"
                           + (", ignoreInEval -> -1" if fv.ignore_in_eval else "")
                           + "; resized nearest-neighbour",
             "image_note": "leftImg8bit resized with Pillow bilinear (antialiased)"}
  info = writing.DatasetInfo(DATASET, fv.height, fv.width, tasks, CLASS_NAMES, "disparity")
  return writing.convert_splits(info, fv.out_dir, items, convert, params, fv.num_shards,
                               fv.num_workers, fv.skip_bad, fv.overwrite, problems, extra)


def main(argv) -> int:
  return cli.cli_main(build_flags, run, argv)


if __name__ == "__main__":
  sys.exit(main(sys.argv))
