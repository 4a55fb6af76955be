"""Test helper: read a converted split back through the schema and tf.data."""

from __future__ import annotations

import tensorflow as tf

from sdmtcnn_tf.data import schema


def read_split(out_dir: str, split: str) -> dict:
  """key -> (image float [H, W, 3], {task: label}) decoded with schema.decode_example."""
  manifest = schema.read_manifest(out_dir)
  ds = tf.data.TFRecordDataset(schema.shard_paths(out_dir, manifest, split)).map(
      lambda r: schema.decode_example(r, manifest.height, manifest.width, manifest.tasks))
  return {k.numpy().decode(): (img.numpy(), {t: v.numpy() for t, v in labels.items()})
          for k, img, labels in ds}
