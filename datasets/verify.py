"""Re-reads a converted dataset and checks it against its manifest; prints label statistics.

  python -m datasets.verify --data_dir=/data/nyuv2_tfr [--splits=train,val]

For every shard: SHA-256 and record count against manifest.json, then every record decoded
with `schema.decode_example` (size errors name the feature), keys unique within the split,
each label map checked by its task (Task.check_label: class ids within -1..C-1, no negative
depth, finite values). Per split and task it prints the valid fraction and a class histogram
(class maps) or the min/max/mean of the valid values (Task.described_values: the vector length
for normals). Exits 1 listing every problem
(with the shard path) if anything disagrees, 0 otherwise.
"""

from __future__ import annotations

import dataclasses
import os
import re
import sys

import numpy as np
import tensorflow as tf
from absl import flags
from tqdm import tqdm

from sdmtcnn_tf import tasks as tasks_lib
from sdmtcnn_tf.data import schema

from datasets import cli


def build_flags() -> flags.FlagValues:
  fv = flags.FlagValues()
  flags.DEFINE_string("data_dir", None, "Converted dataset folder (holds manifest.json).",
                      flag_values=fv)
  flags.DEFINE_list("splits", [], "Splits to check; empty = all.", flag_values=fv)
  flags.mark_flag_as_required("data_dir", flag_values=fv)
  return fv


@dataclasses.dataclass
class TaskStats:
  """Running sums over every pixel of one task in one split."""

  pixels: int = 0
  valid: int = 0
  total: float = 0.0
  minimum: float = float("inf")
  maximum: float = float("-inf")
  histogram: np.ndarray | None = None  # semseg: int64 [C]

  def summary(self) -> dict:
    out = {"valid_fraction": self.valid / self.pixels if self.pixels else 0.0}
    if self.histogram is not None:
      out["class_histogram"] = self.histogram.tolist()
      return out
    out["mean"] = self.total / self.valid if self.valid else float("nan")
    out["min"] = self.minimum if self.valid else float("nan")
    out["max"] = self.maximum if self.valid else float("nan")
    return out


def _update(stats: TaskStats, task: tasks_lib.Task, value: np.ndarray,
            num_classes: int) -> str | None:
  """Adds one label map to `stats`; returns the task's description of a problem, or None."""
  problem = task.check_label(value, num_classes)
  if problem:
    return problem
  label = value.reshape((1,) + value.shape[:2] + (-1,))
  valid = task.valid_mask_np(label)[0]
  stats.pixels += valid.size
  stats.valid += int(valid.sum())
  if stats.histogram is not None:
    stats.histogram += np.bincount(value[valid].ravel(), minlength=num_classes)[:num_classes]
    return None
  described = task.described_values(label[0][valid])
  if described.size:
    stats.total += float(described.sum(dtype=np.float64))
    stats.minimum = min(stats.minimum, float(described.min()))
    stats.maximum = max(stats.maximum, float(described.max()))
  return None


def _short_tf_message(error: tf.errors.OpError) -> str:
  """The useful part of a TF runtime error ("corrupted record at 12", an assert message)."""
  text = (error.message or "").strip().splitlines()[0] if error.message else ""
  text = re.sub(r"\{\{function_node[^}]*\}\}\s*", "", text)
  text = re.sub(r"\s*\[Op:[^\]]*\].*$", "", text)
  return text or type(error).__name__


def _task_args(task: str, manifest: schema.Manifest) -> dict:
  """Constructor arguments of a task as the manifest configures it (its class count)."""
  return {"num_classes": manifest.num_classes} if tasks_lib.task_class(task).uses_classes else {}


def verify_shard(path: str, info: schema.ShardInfo, manifest: schema.Manifest,
                 stats: dict, keys: set, errors: list) -> int:
  """Checks one shard, adding to `stats` / `keys`; appends problems naming `path` to `errors`.

  Returns: the number of records read.
  """
  if not os.path.exists(path):
    errors.append(f"{path}: shard listed in the manifest is missing")
    return 0
  digest = schema.file_sha256(path)
  if digest != info.sha256:
    errors.append(f"{path}: sha256 {digest} differs from the manifest ({info.sha256}): "
                  "the shard is corrupt or was modified")
  count = 0
  tasks = list(manifest.tasks)
  task_objects = {t: tasks_lib.task_class(t)(**_task_args(t, manifest)) for t in tasks}
  dataset = tf.data.TFRecordDataset(path).map(
      lambda r: schema.decode_example(r, manifest.height, manifest.width, tasks))
  iterator = iter(dataset)
  while True:
    try:
      key, _, labels = next(iterator)
    except StopIteration:
      break
    except tf.errors.OpError as e:  # DataLoss (truncated, CRC), InvalidArgument (sizes)
      message = _short_tf_message(e)
      errors.append(f"{path}: record {count} cannot be read or decoded ({type(e).__name__}: "
                    f"{message})")
      break
    key = key.numpy().decode()
    if key in keys:
      errors.append(f"{path}: duplicate key {key!r}")
    keys.add(key)
    for task, value in labels.items():
      problem = _update(stats[task], task_objects[task], value.numpy(), manifest.num_classes)
      if problem:
        errors.append(f"{path}: record {key!r}: {problem}")
    count += 1
  if count != info.num_examples:
    errors.append(f"{path}: holds {count} readable records, the manifest says "
                  f"{info.num_examples}")
  return count


def verify(data_dir: str, splits=None) -> tuple:
  """Checks every shard of `splits` (default all) of the dataset in `data_dir`.

  Returns:
    (errors, report): errors a list of strings, each naming a shard (empty = all good);
    report {split: {"examples": n, "tasks": {task: summary dict}}}.
  Raises:
    FileNotFoundError / schema.SchemaError if the manifest is missing or invalid.
  """
  manifest = schema.read_manifest(data_dir)
  splits = list(splits or manifest.splits)
  errors, report = [], {}
  for split in splits:
    shards = manifest.split_shards(split)
    stats = {t: TaskStats() for t in manifest.tasks}
    for t, s in stats.items():
      if tasks_lib.task_class(t).uses_classes:
        s.histogram = np.zeros(manifest.num_classes, np.int64)
    keys = set()
    count = 0
    for info in tqdm(shards, desc=f"verify {split}", unit="shard", disable=None,
                     file=sys.stderr):
      count += verify_shard(os.path.join(data_dir, info.file), info, manifest, stats, keys,
                            errors)
    report[split] = {"examples": count, "shards": len(shards),
                     "tasks": {t: s.summary() for t, s in stats.items()}}
  return errors, report


def format_report(manifest: schema.Manifest, report: dict) -> str:
  lines = [f"{manifest.dataset}: {manifest.height}x{manifest.width}, tasks "
           f"{', '.join(manifest.tasks)}, depth unit {manifest.depth_unit}"]
  for split, rep in report.items():
    lines.append(f"[{split}] {rep['examples']} examples in {rep['shards']} shard(s)")
    for task, s in rep["tasks"].items():
      if "class_histogram" in s:
        total = sum(s["class_histogram"]) or 1
        hist = ", ".join(f"{name} {100 * n / total:.1f}%"
                         for name, n in zip(manifest.class_names, s["class_histogram"]))
        lines.append(f"  {task}: valid {100 * s['valid_fraction']:.1f}% | {hist}")
      else:
        what = tasks_lib.task_class(task).described_as
        lines.append(f"  {task}: valid {100 * s['valid_fraction']:.1f}% | {what} min "
                     f"{s['min']:.4g} max {s['max']:.4g} mean {s['mean']:.4g}")
  return "\n".join(lines)


def run(fv: flags.FlagValues) -> int:
  manifest = schema.read_manifest(fv.data_dir)
  errors, report = verify(fv.data_dir, cli.list_flag(fv.splits) or None)
  print(format_report(manifest, report))
  if errors:
    print(f"FAILED: {len(errors)} problem(s):", file=sys.stderr)
    for e in errors:
      print(f"  {e}", file=sys.stderr)
    return 1
  print("OK: every shard matches the manifest")
  return 0


def main(argv) -> int:
  fv = cli.parse_flags(build_flags(), argv)
  try:
    return run(fv)
  except (FileNotFoundError, schema.SchemaError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 1


if __name__ == "__main__":
  sys.exit(main(sys.argv))
