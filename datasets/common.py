"""Shared machinery of the dataset converters (`python -m datasets.<name>`).

A converter lists its examples as `Item`s (an example key plus the source files it reads),
converts each Item into one serialized record with a picklable function (run in a process
pool, results kept in input order), and writes the records of each split through
`schema.write_split`; the manifest is written last, so a folder with a manifest is complete.

Flags live in a fresh `absl.flags.FlagValues` per call (`build_flags`), not in the global
FLAGS: several converters can run in one process (tests) and a second call never sees the
first call's values.
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
from absl import flags
from PIL import Image
from tqdm import tqdm

from sdmtcnn_tf import tasks as tasks_lib
from sdmtcnn_tf.data import schema

SHARD_TARGET_BYTES = 128 << 20
_SHARD_RE = re.compile(r"^(?P<split>.+)-\d{5}-of-\d{5}\.tfrecord(\.tmp)?$")


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


# ---------------------------------------------------------------------------------------------
# Flags
# ---------------------------------------------------------------------------------------------

def define_common_flags(fv: flags.FlagValues) -> None:
  """Flags every converter has: --src, --out_dir, --num_workers, --num_shards, ..."""
  flags.DEFINE_string("src", None, "Source dataset folder.", flag_values=fv)
  flags.DEFINE_string("out_dir", None, "Output folder for the shards and manifest.json.",
                      flag_values=fv)
  flags.DEFINE_integer("num_workers", 0, "Decoding processes; 0 = one per CPU core, 1 = no "
                       "pool (decode in this process).", flag_values=fv)
  flags.DEFINE_integer("num_shards", 0, "Shards per split; 0 = about one per 128 MiB of "
                       "records (never more shards than examples).", flag_values=fv)
  flags.DEFINE_bool("overwrite", False, "Redo the conversion even if out_dir already holds a "
                    "complete one, one made from other parameters, or a corrupt "
                    "manifest.json (without it these stop with an error).", flag_values=fv)
  flags.DEFINE_bool("skip_bad", False, "Skip unreadable or invalid examples instead of "
                    "stopping; each is listed (path + reason) in manifest extra['skipped'].",
                    flag_values=fv)
  flags.mark_flag_as_required("src", flag_values=fv)
  flags.mark_flag_as_required("out_dir", flag_values=fv)


def parse_flags(fv: flags.FlagValues, argv: Sequence[str]) -> flags.FlagValues:
  """Parses argv (argv[0] = program name) into `fv`.

  Raises:
    SystemExit(0) after printing the help for --help / -h / --helpfull; SystemExit(2) with
    the flag's name on stderr for an unknown flag, a bad value or a missing required flag.
  """
  argv = list(argv)
  if any(a in ("-h", "--help", "--helpfull", "-help") for a in argv[1:]):
    print(fv.get_help())
    raise SystemExit(0)
  try:
    rest = fv(argv)
  except flags.Error as e:
    print(f"error: {e}\nPass --help for the flags.", file=sys.stderr)
    raise SystemExit(2) from e
  if len(rest) > 1:
    print(f"error: unexpected positional argument(s) {rest[1:]}", file=sys.stderr)
    raise SystemExit(2)
  return fv


def csv_list(value: str) -> list:
  """'a, b,,c' -> ['a', 'b', 'c']."""
  return [v.strip() for v in (value or "").split(",") if v.strip()]


def parse_tasks(value: str, allowed: Sequence[str]) -> tuple:
  """Comma list of task names -> tuple in the canonical tasks.ALL_TASKS order."""
  names = csv_list(value)
  bad = [n for n in names if n not in allowed]
  if not names or bad:
    raise ValueError(f"--tasks={value!r}: expected a comma list from {', '.join(allowed)}")
  if len(set(names)) != len(names):
    raise ValueError(f"--tasks={value!r} names a task twice")
  return tuple(t for t in tasks_lib.ALL_TASKS if t in names)


def cli_main(build_flags: Callable[[], flags.FlagValues], run: Callable[[flags.FlagValues], object],
             argv: Sequence[str]) -> int:
  """Parses flags, runs the converter; returns the process exit status.

  A ConversionError or ValueError (bad input or bad flag combination) prints one line naming
  the file or flag and returns 1; flag syntax errors exit 2 (see parse_flags).
  """
  fv = parse_flags(build_flags(), argv)
  try:
    run(fv)
  except (ConversionError, ValueError, FileNotFoundError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  return 0


# ---------------------------------------------------------------------------------------------
# Reading sources
# ---------------------------------------------------------------------------------------------

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


# ---------------------------------------------------------------------------------------------
# Array checks and resizing
# ---------------------------------------------------------------------------------------------

def float_image_to_uint8(image: np.ndarray, path: str, shape: tuple | None) -> np.ndarray:
  """MTAN-style image array -> uint8 [H, W, 3] RGB.

  Accepts float [H, W, 3] in [0, 1] (values within 1e-3 outside are clipped), float
  [3, H, W] (channels first, detected when the last axis is not 3), or uint8 [H, W, 3].
  Args:
    shape: expected (H, W), or None for any.
  """
  image = np.asarray(image)
  if image.ndim == 3 and image.shape[-1] != 3 and image.shape[0] == 3:
    image = np.transpose(image, (1, 2, 0))
  if image.ndim != 3 or image.shape[-1] != 3:
    raise ConversionError(path, f"image must be [H, W, 3] (or [3, H, W]), got {image.shape}")
  check_shape(image.shape[:2], shape, path, "image")
  if image.dtype == np.uint8:
    return image
  if not np.issubdtype(image.dtype, np.floating):
    raise ConversionError(path, f"image must be float in [0, 1] or uint8, got {image.dtype}")
  if not np.all(np.isfinite(image)):
    raise ConversionError(path, "image holds NaN or infinite values")
  lo, hi = float(image.min()), float(image.max())
  if lo < -1e-3 or hi > 1 + 1e-3:
    raise ConversionError(path, f"image values must lie in [0, 1], got [{lo:.4g}, {hi:.4g}] "
                                "(a 0..255 image must be stored as uint8)")
  return np.round(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8)


def check_shape(actual, expected, path: str, what: str) -> None:
  if expected is not None and tuple(actual) != tuple(expected):
    raise ConversionError(path, f"{what} has size {tuple(actual)}, expected {tuple(expected)}")


def class_map(label: np.ndarray, path: str, num_classes: int, shape: tuple | None) -> np.ndarray:
  """Float/int class map [H, W] (or [H, W, 1]) with -1 = ignore -> int16 [H, W].

  Raises ConversionError for non-integral values or values outside -1..num_classes-1.
  """
  label = np.asarray(label)
  if label.ndim == 3 and label.shape[-1] == 1:
    label = label[..., 0]
  if label.ndim != 2:
    raise ConversionError(path, f"label must be [H, W], got {label.shape}")
  check_shape(label.shape, shape, path, "label")
  if not (np.issubdtype(label.dtype, np.integer) or np.issubdtype(label.dtype, np.floating)):
    raise ConversionError(path, f"label must be a numeric array, got {label.dtype}")
  if np.issubdtype(label.dtype, np.floating):
    if not np.all(np.isfinite(label)):
      raise ConversionError(path, "label holds NaN or infinite values")
    if not np.all(label == np.round(label)):
      raise ConversionError(path, "label holds non-integer class ids")
  bad = (label < tasks_lib.IGNORE_LABEL) | (label >= num_classes)
  if np.any(bad):
    values = np.unique(label[bad])[:5].tolist()
    raise ConversionError(path, f"label values {values} outside the class range "
                                f"0..{num_classes - 1} (and -1 = ignore)")
  return label.astype(np.int16)


def nonnegative_map(value: np.ndarray, path: str, what: str, shape: tuple | None) -> np.ndarray:
  """Depth/disparity [H, W] or [H, W, 1], finite, >= 0 (0 = invalid) -> float32 [H, W]."""
  value = np.asarray(value)
  if value.ndim == 3 and value.shape[-1] == 1:
    value = value[..., 0]
  if value.ndim != 2:
    raise ConversionError(path, f"{what} must be [H, W] or [H, W, 1], got {value.shape}")
  check_shape(value.shape, shape, path, what)
  if not (np.issubdtype(value.dtype, np.floating) or np.issubdtype(value.dtype, np.integer)):
    raise ConversionError(path, f"{what} must be numeric, got {value.dtype}")
  value = value.astype(np.float32)
  if not np.all(np.isfinite(value)):
    raise ConversionError(path, f"{what} holds NaN or infinite values")
  if value.size and value.min() < 0:
    raise ConversionError(path, f"{what} holds negative values (min {value.min():.4g}); "
                                "0 marks invalid pixels")
  return value


def unit_normals(normals: np.ndarray, path: str, shape: tuple | None,
                 min_norm: float = 0.5) -> np.ndarray:
  """Normal map [H, W, 3] with components in [-1, 1] -> float32 unit vectors, 0 = invalid.

  Vectors shorter than `min_norm` (all-zero invalid pixels, grey "127-centred" fill, blends
  with invalid pixels) become all-zero; the others are renormalised to unit length.
  """
  normals = np.asarray(normals)
  if normals.ndim == 3 and normals.shape[0] == 3 and normals.shape[-1] != 3:
    normals = np.transpose(normals, (1, 2, 0))
  if normals.ndim != 3 or normals.shape[-1] != 3:
    raise ConversionError(path, f"normals must be [H, W, 3], got {normals.shape}")
  check_shape(normals.shape[:2], shape, path, "normals")
  if not np.issubdtype(normals.dtype, np.floating):
    raise ConversionError(path, f"normals must be float in [-1, 1], got {normals.dtype}")
  normals = normals.astype(np.float32)
  if not np.all(np.isfinite(normals)):
    raise ConversionError(path, "normals hold NaN or infinite values")
  if normals.size and np.abs(normals).max() > 1.01:
    raise ConversionError(path, f"normal components must lie in [-1, 1], got max "
                                f"|n_i| = {np.abs(normals).max():.4g}")
  return renormalise(normals, min_norm)


def renormalise(normals: np.ndarray, min_norm: float) -> np.ndarray:
  """float32 [H, W, 3] -> unit vectors; vectors shorter than min_norm -> all-zero."""
  norm = np.linalg.norm(normals, axis=-1, keepdims=True)
  valid = norm >= min_norm
  return np.where(valid, normals / np.maximum(norm, 1e-12), 0.0).astype(np.float32)


def nearest_indices(size_in: int, size_out: int) -> np.ndarray:
  """Source index of each output pixel for nearest-neighbour resizing (pixel centres)."""
  idx = np.floor((np.arange(size_out) + 0.5) * size_in / size_out).astype(np.int64)
  return np.minimum(idx, size_in - 1)


def resize_nearest(value: np.ndarray, height: int, width: int) -> np.ndarray:
  """Nearest-neighbour resize of [H, W] or [H, W, C]; keeps dtype and exact values."""
  if value.shape[:2] == (height, width):
    return value
  rows = nearest_indices(value.shape[0], height)
  cols = nearest_indices(value.shape[1], width)
  return value[rows][:, cols]


def resize_image_bilinear(image: np.ndarray, height: int, width: int) -> np.ndarray:
  """uint8 [H, W, 3] -> uint8 [height, width, 3] with Pillow's (antialiased) bilinear filter."""
  if image.shape[:2] == (height, width):
    return image
  img = Image.fromarray(image)  # uint8 [H, W, 3] -> mode RGB
  return np.asarray(img.resize((width, height), Image.Resampling.BILINEAR), dtype=np.uint8)


def resize_float_bilinear(value: np.ndarray, height: int, width: int) -> np.ndarray:
  """float [H, W] -> float32 [height, width] with Pillow's (antialiased) bilinear filter."""
  value = value.astype(np.float32)
  if value.shape[:2] == (height, width):
    return value
  img = Image.fromarray(value)  # float32 [H, W] -> mode F
  return np.asarray(img.resize((width, height), Image.Resampling.BILINEAR), dtype=np.float32)


# ---------------------------------------------------------------------------------------------
# Converting and writing
# ---------------------------------------------------------------------------------------------

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
    dtype, channels = schema.LABEL_STORAGE[task]
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
