"""The one TFRecord schema every dataset is written in, and its manifest.

Each record is a `tf.train.Example` holding raw little-endian bytes (no PNG: decoding raw
bytes is 4x faster and exact):

  key          bytes   example id (e.g. "train/000123"), used to name prediction files
  height       int64   H
  width        int64   W
  image        bytes   uint8  [H, W, 3] RGB
  semseg       bytes   int16  [H, W]    class id 0..C-1, -1 = ignore
  depth        bytes   float32[H, W]    metres or disparity (manifest "depth_unit"), 0 = invalid
  normals      bytes   float16[H, W, 3] unit vectors, all-zero = invalid
  keypoints    bytes   float16[H, W]    heat map in [0, 1]
  edges        bytes   float16[H, W]    edge strength in [0, 1]

A record carries only the task keys listed in the manifest's "tasks"; depth is never stored in
8 bits. Shards are named `<split>-00000-of-000NN.tfrecord`; `manifest.json` in the same folder
records counts, image size, tasks, classes, units and a SHA-256 per shard.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Iterable, Mapping

import numpy as np
import tensorflow as tf

from sdmtcnn_tf import tasks as tasks_lib
from sdmtcnn_tf.integrity import sha256 as file_sha256  # the one sha256 of a file

SCHEMA_VERSION = 1
MANIFEST_NAME = "manifest.json"
DEPTH_UNITS = ("metres", "disparity")



class SchemaError(ValueError):
  """A record, shard or manifest does not follow the schema."""


def label_storage(task: str) -> tuple:
  """(numpy storage dtype, channels; 0 = an [H, W] map) of task `task`'s label records (the
  task class says, see tasks/)."""
  try:
    cls = tasks_lib.task_class(task)
  except ValueError as e:
    raise SchemaError(str(e)) from None
  return cls.storage_dtype, cls.label_channels


def shard_name(split: str, index: int, num_shards: int) -> str:
  return f"{split}-{index:05d}-of-{num_shards:05d}.tfrecord"


def _bytes(value: bytes) -> tf.train.Feature:
  return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))


def _int(value: int) -> tf.train.Feature:
  return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(value)]))


def encode_example(key: str, image: np.ndarray, labels: Mapping[str, np.ndarray]) -> bytes:
  """Serializes one example.

  Args:
    key: example id.
    image: uint8 [H, W, 3] RGB.
    labels: task name -> label map in the convention of `sdmtcnn_tf/tasks` ([H, W] or [H, W, C];
      semseg int with -1 = ignore).
  Returns:
    A serialized tf.train.Example.
  """
  image = np.asarray(image)
  if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
    raise SchemaError(f"{key}: image must be uint8 [H, W, 3], got {image.dtype} {image.shape}")
  height, width = image.shape[:2]
  features = {"key": _bytes(key.encode()), "height": _int(height), "width": _int(width),
              "image": _bytes(image.tobytes())}
  for task, value in labels.items():
    try:
      dtype, channels = label_storage(task)
    except SchemaError as e:
      raise SchemaError(f"{key}: {e}") from None
    value = np.asarray(value)
    if channels == 0 and value.ndim == 3 and value.shape[2] == 1:
      value = value[..., 0]
    expected = (height, width, channels) if channels else (height, width)
    if value.shape != expected:
      raise SchemaError(f"{key}: {task} must have shape {expected}, got {value.shape}")
    if not np.all(np.isfinite(value)):
      raise SchemaError(f"{key}: {task} holds NaN or infinite values")
    features[task] = _bytes(value.astype(dtype).tobytes())
  example = tf.train.Example(features=tf.train.Features(feature=features))
  return example.SerializeToString(deterministic=True)  # same bytes in every process


def decode_example(serialized: tf.Tensor, height: int, width: int, tasks: Iterable[str]):
  """Parses one serialized record (graph-mode safe).

  Returns:
    (key, image, labels): key a string scalar; image float32 [H, W, 3] in [0, 1]; labels a dict
    task -> semseg int32 [H, W] / others float32 [H, W, C] (C = 1 for depth, keypoints, edges).
  Raises:
    tf.errors.InvalidArgumentError at run time if a record's size disagrees with (height,
    width): the message names the feature.
  """
  tasks = list(tasks)
  spec = {"key": tf.io.FixedLenFeature([], tf.string),
          "height": tf.io.FixedLenFeature([], tf.int64),
          "width": tf.io.FixedLenFeature([], tf.int64),
          "image": tf.io.FixedLenFeature([], tf.string)}
  for task in tasks:
    spec[task] = tf.io.FixedLenFeature([], tf.string)
  parsed = tf.io.parse_single_example(serialized, spec)
  checks = [
      tf.debugging.assert_equal(parsed["height"], tf.constant(height, tf.int64),
                                message=f"record height differs from the manifest ({height})"),
      tf.debugging.assert_equal(parsed["width"], tf.constant(width, tf.int64),
                                message=f"record width differs from the manifest ({width})"),
  ]
  with tf.control_dependencies(checks):
    image = _decode_raw(parsed["image"], tf.uint8, [height, width, 3], "image")
  image = tf.cast(image, tf.float32) / 255.0
  labels = {}
  for task in tasks:
    dtype, channels = label_storage(task)
    shape = [height, width, channels or 1]
    value = _decode_raw(parsed[task], tf.as_dtype(dtype), shape, task)
    labels[task] = tasks_lib.task_class(task).decode(value)
  return parsed["key"], image, labels


def _decode_raw(data: tf.Tensor, dtype: tf.DType, shape, name: str) -> tf.Tensor:
  """Bytes -> `dtype` [shape]; float16 arrives as the equal float32 values (see below)."""
  if dtype == tf.float16:
    flat = float16_bits_to_float32(tf.io.decode_raw(data, tf.uint16, little_endian=True))
  else:
    flat = tf.io.decode_raw(data, dtype, little_endian=True)
  expected = int(np.prod(shape))
  check = tf.debugging.assert_equal(
      tf.size(flat), expected,
      message=f"feature '{name}' has the wrong size for shape {shape} ({dtype.name})")
  with tf.control_dependencies([check]):
    return tf.reshape(flat, shape)


def float16_bits_to_float32(bits: tf.Tensor) -> tf.Tensor:
  """IEEE binary16 bit patterns (uint16, any shape) -> their exact float32 values.

  Decoding without a float16 tensor: with oneDNN on (the default on CPUs with AVX-512),
  TensorFlow logs `E... oneDNN supports DT_HALF only on platforms with AVX-512` on stderr the
  first time a process runs any float16 op on a CPU without AVX512-FP16 (every AMD, Intel
  before Sapphire Rapids), whatever our logging setup (tensorflow/core/util/util.cc).
  """
  b = tf.cast(bits, tf.int32)
  sign = tf.bitwise.right_shift(b, 15)
  exponent = tf.bitwise.bitwise_and(tf.bitwise.right_shift(b, 10), 0x1F)
  mantissa = tf.bitwise.bitwise_and(b, 0x3FF)
  # normal numbers: rebias the exponent (15 -> 127); infinities and NaNs: all-ones exponent
  exponent32 = tf.where(exponent == 0x1F, 0xFF, exponent + (127 - 15))
  magnitude = tf.bitcast(tf.bitwise.bitwise_or(tf.bitwise.left_shift(exponent32, 23),
                                               tf.bitwise.left_shift(mantissa, 13)), tf.float32)
  # zeros and subnormals: mantissa * 2^-24, exact in float32
  magnitude = tf.where(exponent == 0, tf.cast(mantissa, tf.float32) * 2.0**-24, magnitude)
  return tf.where(sign == 1, -magnitude, magnitude)


@dataclasses.dataclass(frozen=True)
class ShardInfo:
  file: str
  num_examples: int
  sha256: str


@dataclasses.dataclass(frozen=True)
class Manifest:
  """What a dataset folder holds. Written by the converters, read by the pipeline."""

  dataset: str
  height: int
  width: int
  tasks: tuple
  num_classes: int
  class_names: tuple
  depth_unit: str
  splits: Mapping[str, tuple]  # split -> tuple[ShardInfo]
  ignore_label: int = tasks_lib.IGNORE_LABEL
  schema_version: int = SCHEMA_VERSION
  extra: Mapping[str, object] = dataclasses.field(default_factory=dict)

  def num_examples(self, split: str) -> int:
    return sum(s.num_examples for s in self.split_shards(split))

  def split_shards(self, split: str):
    if split not in self.splits:
      raise SchemaError(f"the manifest has no split {split!r}; it has {sorted(self.splits)}")
    return self.splits[split]

  def to_json(self) -> dict:
    out = dataclasses.asdict(self)
    out["tasks"] = list(self.tasks)
    out["class_names"] = list(self.class_names)
    out["splits"] = {k: [dataclasses.asdict(s) for s in v] for k, v in self.splits.items()}
    return out


def write_split(out_dir: str, split: str, examples: Iterable[bytes], num_shards: int,
                num_examples: int | None = None) -> tuple:
  """Writes serialized examples into `num_shards` shards of `split`.

  `examples` is consumed once; with `num_examples` given the shards get contiguous blocks
  (example i goes to shard i * num_shards // num_examples), otherwise round-robin. Files are
  written under a temporary name and renamed when complete, so a killed run never leaves a
  shard that looks finished.
  Returns: tuple of ShardInfo, in shard order.
  """
  if num_shards < 1:
    raise ValueError(f"num_shards must be >= 1, got {num_shards}")
  os.makedirs(out_dir, exist_ok=True)
  names = [shard_name(split, i, num_shards) for i in range(num_shards)]
  tmp_paths = [os.path.join(out_dir, n + ".tmp") for n in names]
  writers = [tf.io.TFRecordWriter(p) for p in tmp_paths]
  counts = [0] * num_shards
  try:
    for i, record in enumerate(examples):
      shard = i * num_shards // num_examples if num_examples else i % num_shards
      writers[shard].write(record)
      counts[shard] += 1
  finally:
    for w in writers:
      w.close()
  infos = []
  for name, tmp, count in zip(names, tmp_paths, counts):
    final = os.path.join(out_dir, name)
    os.replace(tmp, final)
    infos.append(ShardInfo(name, count, file_sha256(final)))
  return tuple(infos)


def write_manifest(out_dir: str, manifest: Manifest) -> str:
  path = os.path.join(out_dir, MANIFEST_NAME)
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(manifest.to_json(), f, indent=2, sort_keys=True)
  os.replace(tmp, path)
  return path


def read_manifest(data_dir: str) -> Manifest:
  """Reads and validates `<data_dir>/manifest.json`; errors name the file and the field."""
  path = os.path.join(data_dir, MANIFEST_NAME)
  if not os.path.isdir(data_dir):
    raise FileNotFoundError(f"data directory {data_dir!r} does not exist")
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path} is missing: {data_dir!r} is not a converted dataset "
                            "(run a converter from datasets/ first)")
  try:
    with open(path) as f:
      raw = json.load(f)
  except json.JSONDecodeError as e:
    raise SchemaError(f"{path} is not valid JSON: {e}") from e
  required = ["dataset", "height", "width", "tasks", "num_classes", "class_names", "depth_unit",
              "splits"]
  missing = [k for k in required if k not in raw]
  if missing:
    raise SchemaError(f"{path} lacks the field(s) {missing}")
  if raw.get("schema_version", SCHEMA_VERSION) != SCHEMA_VERSION:
    raise SchemaError(f"{path}: schema_version {raw['schema_version']} is not {SCHEMA_VERSION}")
  unknown = [t for t in raw["tasks"] if t not in tasks_lib.names()]
  if unknown:
    raise SchemaError(f"{path}: unknown task(s) {unknown}")
  if raw["depth_unit"] not in DEPTH_UNITS:
    raise SchemaError(f"{path}: depth_unit must be one of {DEPTH_UNITS}, got {raw['depth_unit']!r}")
  splits = {name: tuple(ShardInfo(**s) for s in shards) for name, shards in raw["splits"].items()}
  return Manifest(dataset=raw["dataset"], height=int(raw["height"]), width=int(raw["width"]),
                  tasks=tuple(raw["tasks"]), num_classes=int(raw["num_classes"]),
                  class_names=tuple(raw["class_names"]), depth_unit=raw["depth_unit"],
                  splits=splits, ignore_label=int(raw.get("ignore_label", -1)),
                  extra=raw.get("extra", {}))


def shard_paths(data_dir: str, manifest: Manifest, split: str) -> list:
  """Absolute shard paths of `split`; raises naming the first missing shard."""
  paths = []
  for shard in manifest.split_shards(split):
    path = os.path.join(data_dir, shard.file)
    if not os.path.exists(path):
      raise FileNotFoundError(f"shard {path} listed in {MANIFEST_NAME} is missing")
    paths.append(path)
  return paths
