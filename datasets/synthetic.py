r"""Generates the built-in synthetic dataset (see sdmtcnn_tf/data/synthetic/).

  python -m datasets.synthetic --out_dir=data/synthetic --num_train=64 --num_val=16 \
      --height=288 --width=384 --seed=0 [--tasks=semseg,depth,normals,keypoints,edges] \
      [--num_shards=2]

Idempotent and safe: an out_dir that already holds the same dataset (same seed, size, counts,
tasks a superset) is left as it is; one that holds anything else is an error, never
overwritten.
"""

from __future__ import annotations

import sys

from absl import app, flags

from sdmtcnn_tf import tasks as tasks_lib

FLAGS = flags.FLAGS


def define_flags(flag_values: flags.FlagValues = FLAGS) -> None:
  """Defines the CLI's flags; called from `__main__` only, never at import.

  Defining them at import put --seed, --height, ... on the global FLAGS, so importing this
  module next to `sdmtcnn_tf.config.define_flags` (which defines flags of the same names)
  raised DuplicateFlagError whatever the import order.
  """
  if "num_train" in flag_values:  # already defined (idempotent, like config.define_flags)
    return
  fv = flag_values
  flags.DEFINE_string("out_dir", None, "Output folder for the shards and manifest.json.",
                      flag_values=fv)
  flags.DEFINE_integer("num_train", 64, "Training images.", lower_bound=0, flag_values=fv)
  flags.DEFINE_integer("num_val", 16, "Validation images.", lower_bound=0, flag_values=fv)
  flags.DEFINE_integer("height", 288, "Image height in pixels.", lower_bound=2, flag_values=fv)
  flags.DEFINE_integer("width", 384, "Image width in pixels.", lower_bound=2, flag_values=fv)
  flags.DEFINE_integer("seed", 0, "Dataset seed: same seed, same bytes.", lower_bound=0,
                       flag_values=fv)
  flags.DEFINE_list("tasks", list(tasks_lib.ALL_TASKS), "Tasks whose labels are stored.",
                    flag_values=fv)
  flags.DEFINE_integer("num_shards", 2, "Shards per split (at most one per example).",
                       lower_bound=1, flag_values=fv)
  flags.mark_flag_as_required("out_dir", flag_values=fv)


def main(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  from sdmtcnn_tf.data import synthetic  # imports TensorFlow: only once the flags are valid
  try:
    manifest = synthetic.ensure_dataset(FLAGS.out_dir, FLAGS.num_train, FLAGS.num_val,
                                        FLAGS.height, FLAGS.width, seed=FLAGS.seed,
                                        tasks=FLAGS.tasks, num_shards=FLAGS.num_shards)
  except ValueError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(1)
  counts = ", ".join(f"{s}: {manifest.num_examples(s)}" for s in manifest.splits)
  print(f"synthetic dataset in {FLAGS.out_dir}: {counts} images of "
        f"{manifest.height}x{manifest.width}, tasks {','.join(manifest.tasks)}")


if __name__ == "__main__":
  define_flags()
  app.run(main)
