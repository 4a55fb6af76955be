"""Converting Items in a process pool and writing sharded splits and the manifest.

Each Item is converted into one serialized record by a picklable function (run in a process
pool, results kept in input order), and the records of each split are written through
`schema.write_split`; the manifest is written last, so a folder with a manifest is complete.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import multiprocessing
import os
import re
import sys
from typing import Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np
from tqdm import tqdm

from sdmtcnn_tf.data import schema

from datasets.reading import ConversionError, Item, Skipped

SHARD_TARGET_BYTES = 128 << 20
_SHARD_RE = re.compile(r"^(?P<split>.+)-\d{5}-of-\d{5}\.tfrecord(\.tmp)?$")


@dataclasses.dataclass(frozen=True)
class Result:
  """What a worker returns for one Item: a record, or why it is bad."""

  key: str
  record: bytes | None = None
  error: Skipped | None = None


def _guarded(convert: Callable[[Item], bytes], item: Item) -> Result:
  try:
    return Result(item.key, record=convert(item))
  except ConversionError as e:
    return Result(item.key, error=Skipped(e.path, e.reason))
  except schema.SchemaError as e:
    path = next(iter(item.paths.values()), item.key)
    return Result(item.key, error=Skipped(path, str(e)))


def map_ordered(convert: Callable[[Item], bytes], items: Sequence[Item], num_workers: int,
                desc: str) -> Iterator[Result]:
  """Yields convert(item) for every item, in input order, with a tqdm progress bar.

  `convert` must be picklable (a module-level function or a functools.partial of one) when
  num_workers != 1. num_workers = 0 uses one process per CPU core.
  """
  if num_workers <= 0:
    num_workers = os.cpu_count() or 1
  num_workers = min(num_workers, max(1, len(items)))
  fn = functools.partial(_guarded, convert)
  bar = tqdm(total=len(items), desc=desc, unit="ex", disable=None, file=sys.stderr)
  try:
    if num_workers == 1:
      for item in items:
        yield fn(item)
        bar.update()
      return
    # fork: the workers inherit the imported modules; they only run NumPy, Pillow and
    # protobuf serialization, never TF ops.
    methods = multiprocessing.get_all_start_methods()
    ctx = multiprocessing.get_context("fork" if "fork" in methods else None)
    with ctx.Pool(num_workers) as pool:
      chunk = max(1, min(16, len(items) // (4 * num_workers)))
      for result in pool.imap(fn, items, chunksize=chunk):
        yield result
        bar.update()
  finally:
    bar.close()


def record_bytes(height: int, width: int, task_names: Iterable[str]) -> int:
  """Approximate stored bytes of one record (image + label maps)."""
  total = height * width * 3
  for task in task_names:
    dtype, channels = schema.label_storage(task)
    total += height * width * max(channels, 1) * np.dtype(dtype).itemsize
  return total


def resolve_num_shards(requested: int, num_items: int, bytes_per_record: int) -> int:
  """--num_shards (0 = auto, ~128 MiB each), never above the number of examples, >= 1."""
  if requested < 0:
    raise ValueError(f"--num_shards must be >= 0, got {requested}")
  if requested == 0:
    requested = math.ceil(num_items * bytes_per_record / SHARD_TARGET_BYTES)
  return max(1, min(requested, num_items))


def write_split_records(out_dir: str, split: str, items: Sequence[Item],
                        convert: Callable[[Item], bytes], num_shards: int, num_workers: int,
                        skip_bad: bool, skipped: list) -> tuple:
  """Converts `items` (in order) and writes them as the shards of `split`.

  Bad examples raise ConversionError, or with `skip_bad` are appended to `skipped`.
  Returns: tuple of schema.ShardInfo.
  """

  def records():
    for result in map_ordered(convert, items, num_workers, desc=split):
      if result.error is None:
        yield result.record
      elif skip_bad:
        skipped.append(result.error)
      else:
        raise ConversionError(result.error.path, result.error.reason)

  try:
    return schema.write_split(out_dir, split, records(), num_shards, num_examples=len(items))
  except BaseException:
    for name in os.listdir(out_dir):
      match = _SHARD_RE.match(name)
      if match and match.group("split") == split and name.endswith(".tmp"):
        os.remove(os.path.join(out_dir, name))
    raise


def remove_stale_shards(out_dir: str, keep: Iterable[str]) -> list:
  """Deletes shard files (`*-NNNNN-of-NNNNN.tfrecord[.tmp]`) not in `keep`; returns them."""
  keep = set(keep)
  removed = []
  if not os.path.isdir(out_dir):
    return removed
  for name in sorted(os.listdir(out_dir)):
    if _SHARD_RE.match(name) and name not in keep:
      os.remove(os.path.join(out_dir, name))
      removed.append(name)
  return removed


def existing_conversion(out_dir: str, params: Mapping[str, object], overwrite: bool) -> bool:
  """True if out_dir already holds a complete conversion made with `params`.

  Raises:
    ConversionError if it holds a complete conversion with other parameters, or a
    manifest.json that cannot be read, and not `overwrite` (so a typo or a damaged folder never
    silently replaces a dataset).
  """
  path = os.path.join(out_dir, schema.MANIFEST_NAME)
  if overwrite or not os.path.exists(path):
    return False
  try:
    manifest = schema.read_manifest(out_dir)
    if not isinstance(manifest.extra, Mapping):
      raise schema.SchemaError(f"'extra' must be an object, got {type(manifest.extra).__name__}")
  except (schema.SchemaError, ValueError, KeyError, TypeError, AttributeError, OSError) as e:
    detail = str(e).replace(path, "").strip(" :") or type(e).__name__
    raise ConversionError(path, f"corrupt manifest ({detail}); pass --overwrite to convert "
                                "again into this folder or choose another --out_dir") from e
  complete = all(os.path.exists(os.path.join(out_dir, s.file))
                 for shards in manifest.splits.values() for s in shards)
  if not complete:
    return False
  old = manifest.extra.get("params")
  if old != json_ready(params):
    changed = sorted(k for k in set(old or {}) | set(params)
                     if (old or {}).get(k) != json_ready(params).get(k))
    raise ConversionError(out_dir, f"already holds a conversion made with other parameters "
                                   f"(differ: {', '.join(changed)}); pass --overwrite to "
                                   "replace it or choose another --out_dir")
  return True


def json_ready(value):
  """Tuples -> lists, recursively, so params compare equal to their JSON round trip."""
  if isinstance(value, Mapping):
    return {str(k): json_ready(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [json_ready(v) for v in value]
  return value


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  """Manifest fields a converter fixes."""

  dataset: str
  height: int
  width: int
  tasks: tuple
  class_names: tuple
  depth_unit: str = "metres"


def convert_splits(info: DatasetInfo, out_dir: str, splits: Mapping[str, Sequence[Item]],
                   convert: Callable[[Item], bytes], params: Mapping[str, object],
                   num_shards: int, num_workers: int, skip_bad: bool, overwrite: bool,
                   pre_skipped: Sequence[Skipped] = (), extra: Mapping | None = None
                   ) -> schema.Manifest | None:
  """Writes every split and then the manifest; the common tail of every converter.

  Args:
    info: dataset name, size, tasks, classes, depth unit.
    splits: split name -> Items, in the order their records are written.
    convert: Item -> serialized record (picklable), raising ConversionError on bad input.
    params: everything the output depends on (source path and converter flags); stored in
      manifest extra["params"] and compared on re-runs.
    pre_skipped: examples already dropped while listing (missing partner files).
    extra: converter notes for manifest.extra.
  Returns:
    The new Manifest, or None when out_dir already held this conversion.
  """
  if existing_conversion(out_dir, params, overwrite):
    print(f"{out_dir} already holds this conversion (same source and parameters); "
          "nothing to do (pass --overwrite to redo it).")
    return None
  os.makedirs(out_dir, exist_ok=True)
  manifest_path = os.path.join(out_dir, schema.MANIFEST_NAME)
  if os.path.exists(manifest_path):
    os.remove(manifest_path)  # the folder is incomplete until the new manifest lands
  skipped = list(pre_skipped)
  per_record = record_bytes(info.height, info.width, info.tasks)
  shards = {}
  for split, items in splits.items():
    if not items:
      raise ConversionError(f"split {split!r}", "no examples found in the source")
    n_shards = resolve_num_shards(num_shards, len(items), per_record)
    shards[split] = write_split_records(out_dir, split, items, convert, n_shards, num_workers,
                                        skip_bad, skipped)
  remove_stale_shards(out_dir, [s.file for infos in shards.values() for s in infos])
  notes = dict(extra or {})
  notes["params"] = json_ready(params)
  notes["source"] = params.get("src")
  notes["skipped"] = [dataclasses.asdict(s) for s in skipped]
  manifest = schema.Manifest(
      dataset=info.dataset, height=info.height, width=info.width, tasks=tuple(info.tasks),
      num_classes=len(info.class_names), class_names=tuple(info.class_names),
      depth_unit=info.depth_unit, splits=shards, extra=notes)
  schema.write_manifest(out_dir, manifest)
  counts = ", ".join(f"{k}: {manifest.num_examples(k)}" for k in shards)
  print(f"wrote {out_dir} ({counts} examples; {len(skipped)} skipped)")
  for s in skipped:
    print(f"  skipped {s.path}: {s.reason}", file=sys.stderr)
  return manifest
