"""NYUv2 (MTAN pre-processed .npy release) -> sharded TFRecords.

  python -m datasets.nyuv2 --src=/data/nyuv2 --out_dir=/data/nyuv2_tfr \
      [--tasks=semseg,depth,normals] [--num_workers=0] [--num_shards=0] [--skip_bad]

Source layout (MTAN's `im2im_pred/create_dataset.py`): `<src>/{train,val}/{image,label,depth,
normal}/<i>.npy`, 795 train / 654 test images (the test set is the folder `val`), 288 x 384:
  image   float [H, W, 3] RGB in [0, 1]  (also accepted: [3, H, W] float, uint8 [H, W, 3])
  label   float [H, W], 13 classes 0..12, -1 = ignore
  depth   float [H, W] or [H, W, 1], metres, 0 = invalid
  normal  float [H, W, 3] in [-1, 1], all-zero = invalid (renormalised to unit length here;
          vectors shorter than --normals_min_norm become invalid)
No resizing: every array must already be --height x --width.
"""

from __future__ import annotations

import functools
import os
import sys

from absl import flags

from sdmtcnn_tf import tasks as tasks_lib

from datasets import cli
from datasets import mtan_npy
from datasets import writing

DATASET = "nyuv2"
# The 13-class NYUv2 set of ankurhanda/nyuv2-meta-data (class ids 1..13 there, 0..12 here).
CLASS_NAMES = ("bed", "books", "ceiling", "chair", "floor", "furniture", "objects", "painting",
               "sofa", "table", "tv", "wall", "window")
FOLDERS = {"image": "image", tasks_lib.SEMSEG: "label", tasks_lib.DEPTH: "depth",
           tasks_lib.NORMALS: "normal"}
ALLOWED_TASKS = (tasks_lib.SEMSEG, tasks_lib.DEPTH, tasks_lib.NORMALS)


def build_flags() -> flags.FlagValues:
  fv = flags.FlagValues()
  cli.define_common_flags(fv)
  flags.DEFINE_list("tasks", ["semseg", "depth", "normals"], "Tasks to store: "
                    "'semseg,depth,normals' (3-task setting) or 'semseg,depth' (the 2-task "
                    "table).", flag_values=fv)
  flags.DEFINE_list("splits", ["train", "val"], "Split folders to convert.", flag_values=fv)
  flags.DEFINE_integer("height", 288, "Image height every array must have.", flag_values=fv)
  flags.DEFINE_integer("width", 384, "Image width every array must have.", flag_values=fv)
  flags.DEFINE_float("normals_min_norm", 0.5, "Normal vectors shorter than this are stored as "
                     "invalid (all-zero); longer ones are renormalised.", flag_values=fv)
  return fv


def run(fv: flags.FlagValues):
  """Converts with the parsed flags; returns the Manifest (None if already converted)."""
  tasks = cli.parse_tasks(fv.tasks, ALLOWED_TASKS)
  splits = cli.list_flag(fv.splits)
  src = os.path.abspath(fv.src)
  folders = {"image": FOLDERS["image"], **{t: FOLDERS[t] for t in tasks}}
  items, problems = mtan_npy.list_splits(src, splits, folders, fv.skip_bad)
  cfg = mtan_npy.NpyConfig(tasks=tasks, height=fv.height, width=fv.width,
                           num_classes=len(CLASS_NAMES), normals_min_norm=fv.normals_min_norm)
  params = {"src": src, "layout": "mtan_npy", "tasks": tasks, "splits": splits,
            "height": fv.height, "width": fv.width, "normals_min_norm": fv.normals_min_norm,
            "num_shards": fv.num_shards, "skip_bad": fv.skip_bad}
  info = writing.DatasetInfo(DATASET, fv.height, fv.width, tasks, CLASS_NAMES, "metres")
  extra = {"notes": "MTAN pre-processed NYUv2 (.npy); image [0,1] float -> uint8 by round(x*255); "
                    "labels as stored (13 classes, -1 ignore); depth metres as stored; normals "
                    f"renormalised, shorter than {fv.normals_min_norm} -> invalid"}
  return writing.convert_splits(
      info, fv.out_dir, items, functools.partial(mtan_npy.convert_item, cfg), params,
      fv.num_shards, fv.num_workers, fv.skip_bad, fv.overwrite, problems, extra)


def main(argv) -> int:
  return cli.cli_main(build_flags, run, argv)


if __name__ == "__main__":
  sys.exit(main(sys.argv))
