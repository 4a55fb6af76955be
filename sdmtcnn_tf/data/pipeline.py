"""tf.data input pipeline: shards -> interleave -> decode -> (train) augment -> batch -> prefetch.

Elements are (image float32 [B, H, W, 3] in [0, 1], {task: label}) with labels as in sdmtcnn_tf/tasks;
`with_keys=True` prepends the example keys (string [B]) for prediction files.
"""

from __future__ import annotations

import os

import tensorflow as tf

from sdmtcnn_tf import tasks as tasks_lib
from sdmtcnn_tf.data import augment as augment_lib
from sdmtcnn_tf.data import schema
from sdmtcnn_tf.data import taskonomy_units

AUTOTUNE = tf.data.AUTOTUNE


def check_dataset(data_dir: str, split: str, tasks, height: int, width: int,
                  num_classes: int | None = None, verify_checksums: bool = True):
  """Validates a converted dataset against the config before training; returns its Manifest.

  Raises (naming the file/flag and what was expected): a missing directory/manifest/shard; a
  task the data does not carry; a size or class count that differs from the config; a shard
  whose checksum differs from the manifest (truncated or corrupt); a first record that does not
  decode to the manifest's shapes.
  """
  manifest = schema.read_manifest(data_dir)
  missing = [t for t in tasks if t not in manifest.tasks]
  if missing:
    raise ValueError(f"--tasks asks for {missing} but {data_dir}/{schema.MANIFEST_NAME} only "
                     f"carries {list(manifest.tasks)}")
  if (manifest.height, manifest.width) != (height, width):
    raise ValueError(f"--height/--width = {height}x{width} but the records in {data_dir} are "
                     f"{manifest.height}x{manifest.width}")
  uses_classes = any(tasks_lib.task_class(t).uses_classes for t in tasks)
  if num_classes is not None and uses_classes and manifest.num_classes != num_classes:
    raise ValueError(f"--num_classes={num_classes} but {data_dir} has "
                     f"{manifest.num_classes} classes")
  paths = schema.shard_paths(data_dir, manifest, split)
  if manifest.num_examples(split) == 0:
    raise ValueError(f"split {split!r} of {data_dir} holds no examples")
  for shard, path in zip(manifest.split_shards(split), paths):
    if verify_checksums and schema.file_sha256(path) != shard.sha256:
      raise schema.SchemaError(f"shard {path} does not match its checksum in the manifest "
                               "(truncated or corrupt); re-run the converter")
    if shard.num_examples:
      _check_first_record(path, manifest, tasks)
  return manifest


def _check_first_record(path: str, manifest: schema.Manifest, tasks) -> None:
  try:
    record = next(iter(tf.data.TFRecordDataset(path).take(1)))
    schema.decode_example(record, manifest.height, manifest.width, tasks)
  except (tf.errors.OpError, StopIteration) as e:
    message = getattr(e, "message", str(e))
    raise schema.SchemaError(f"shard {path}: first record does not match the manifest "
                             f"({manifest.height}x{manifest.width}, tasks {list(tasks)}): "
                             f"{message}") from None


def make_dataset(data_dir: str, manifest: schema.Manifest, split: str, tasks, batch_size: int,
                 training: bool, augment: bool = False, seed: int = 0,
                 deterministic: bool = False, shuffle_buffer: int = 256,
                 with_keys: bool = False, repeat: bool = False,
                 drop_remainder: bool | None = None,
                 label_units: str = "converted") -> tf.data.Dataset:
  """Builds the batched dataset of `split`. batch_size is the GLOBAL batch size.
  label_units: "converted" (the records' units) or "standley" (Taskonomy records in Standley
  et al.'s units, data/taskonomy_units.py; `ExperimentConfig.data.label_units`)."""
  tasks = list(tasks)
  if label_units not in taskonomy_units.UNITS:
    raise ValueError(f"label_units={label_units!r}: expected one of {taskonomy_units.UNITS}")
  png_per_unit = (taskonomy_units.png_per_stored_unit(manifest, data_dir)
                  if label_units == "standley" else {})
  paths = schema.shard_paths(data_dir, manifest, split)
  files = tf.data.Dataset.from_tensor_slices(paths)
  if training:
    files = files.shuffle(len(paths), seed=seed, reshuffle_each_iteration=True)
    records = files.interleave(tf.data.TFRecordDataset, cycle_length=min(4, len(paths)),
                               num_parallel_calls=AUTOTUNE, deterministic=deterministic)
  else:
    # Evaluation reads the shards one after another: examples come in manifest order, so the
    # per-batch legacy metrics group the same images as MTAN's sequential loader.
    records = files.flat_map(tf.data.TFRecordDataset)
  height, width = manifest.height, manifest.width
  decode = lambda r: schema.decode_example(r, height, width, tasks)
  ds = records.map(decode, num_parallel_calls=AUTOTUNE, deterministic=True)
  if training:
    ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
  if repeat:
    ds = ds.repeat()
  if training and augment:
    # A new draw every epoch (deterministic given seed); without rerandomizing, each epoch
    # would repeat the same scale/crop/flip sequence over the reshuffled examples.
    seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
    ds = tf.data.Dataset.zip((ds, seeds)).map(
        lambda ex, s: (ex[0], *augment_lib.augment(ex[1], ex[2], tf.cast(s, tf.int32),
                                                   manifest.depth_unit)),
        num_parallel_calls=AUTOTUNE, deterministic=True)
  if png_per_unit:  # after augmentation: its zoom divides metres
    ds = ds.map(lambda key, image, labels: (
        key, image, taskonomy_units.to_standley(labels, png_per_unit)),
        num_parallel_calls=AUTOTUNE, deterministic=True)
  if with_keys:
    ds = ds.map(lambda key, image, labels: (key, image, labels))
  else:
    ds = ds.map(lambda key, image, labels: (image, labels))
  drop = training if drop_remainder is None else drop_remainder
  ds = ds.batch(batch_size, drop_remainder=drop)
  if not repeat:  # interleave hides the size; Keras needs it to end epochs without warnings
    n = manifest.num_examples(split)
    ds = ds.apply(tf.data.experimental.assert_cardinality(
        n // batch_size if drop else -(-n // batch_size)))
  options = tf.data.Options()
  options.deterministic = deterministic or not training
  options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
  return ds.with_options(options).prefetch(AUTOTUNE)


def steps_per_epoch(manifest: schema.Manifest, split: str, batch_size: int) -> int:
  return max(1, manifest.num_examples(split) // batch_size)
