"""tf.data pipeline, record decoding and geometry-consistent augmentation on hand-made data."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import tensorflow as tf

from sdmtcnn_tf import tasks as tasks_lib
from sdmtcnn_tf.data import augment, pipeline, schema

H, W = 32, 64
TASKS = tasks_lib.ALL_TASKS
NUM_TRAIN, NUM_VAL = 6, 5


def make_example(index: int, rng: np.random.Generator):
  """(image uint8, labels) with every task, invalid pixels included."""
  image = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
  image[0, 0] = (index, 0, 0)
  semseg = rng.integers(-1, 13, (H, W)).astype(np.int16)
  depth = rng.uniform(0.5, 9.0, (H, W)).astype(np.float32)
  normals = rng.normal(size=(H, W, 3)).astype(np.float32)
  normals /= np.linalg.norm(normals, axis=-1, keepdims=True)
  depth[:3, :5] = 0.0
  normals[:3, :5] = 0.0
  labels = {tasks_lib.SEMSEG: semseg, tasks_lib.DEPTH: depth, tasks_lib.NORMALS: normals,
            tasks_lib.KEYPOINTS: rng.uniform(0, 1, (H, W)).astype(np.float32),
            tasks_lib.EDGES: (rng.uniform(0, 1, (H, W)) > 0.8).astype(np.float32)}
  return image, labels


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  """6 train examples in 3 shards, 5 val examples in 2 contiguous shards (0-2, 3-4)."""
  out = str(tmp_path_factory.mktemp("pipeline_ds"))
  rng = np.random.default_rng(0)
  splits = {}
  for split, n, shards in (("train", NUM_TRAIN, 3), ("val", NUM_VAL, 2)):
    records = [schema.encode_example(f"{split}/{i:06d}", *make_example(i, rng))
               for i in range(n)]
    splits[split] = schema.write_split(out, split, records, shards, num_examples=n)
  schema.write_manifest(out, schema.Manifest(
      dataset="toy", height=H, width=W, tasks=TASKS, num_classes=13,
      class_names=tuple(f"c{i}" for i in range(13)), depth_unit="metres", splits=splits))
  return out


def expected_label_shape(task: str, batch: int) -> tuple:
  """Class maps decode to [B, H, W], the other labels to [B, H, W, C] (C >= 1)."""
  task_cls = tasks_lib.task_class(task)
  if task_cls.uses_classes:
    return (batch, H, W)
  return (batch, H, W, max(task_cls.label_channels, 1))


def as_numpy(ds) -> list:
  return [tf.nest.map_structure(lambda t: t.numpy(), element) for element in ds]


# ---- make_dataset -------------------------------------------------------------------------

def test_eval_batches_have_global_batch_size_shapes_and_dtypes(data_dir):
  manifest = schema.read_manifest(data_dir)
  ds = pipeline.make_dataset(data_dir, manifest, "val", TASKS, batch_size=2, training=False)
  batches = as_numpy(ds)
  assert [b[0].shape[0] for b in batches] == [2, 2, 1]  # last partial batch kept
  assert len(ds) == 3
  for image, labels in batches:
    batch = image.shape[0]
    assert image.shape == (batch, H, W, 3) and image.dtype == np.float32
    assert image.min() >= 0.0 and image.max() <= 1.0
    assert sorted(labels) == sorted(TASKS)
    for task, value in labels.items():
      assert value.shape == expected_label_shape(task, batch), task
      assert value.dtype == (np.int32 if task == tasks_lib.SEMSEG else np.float32), task


def test_eval_keeps_manifest_order_and_yields_every_example_once(data_dir):
  manifest = schema.read_manifest(data_dir)
  ds = pipeline.make_dataset(data_dir, manifest, "val", TASKS, batch_size=2, training=False,
                             with_keys=True)
  keys, first_pixels = [], []
  for key, image, labels in as_numpy(ds):
    assert image.shape[0] == key.shape[0] == labels[tasks_lib.DEPTH].shape[0]
    keys.extend(k.decode() for k in key)
    first_pixels.extend(np.rint(image[:, 0, 0, 0] * 255).astype(int))
  assert len(keys) == manifest.num_examples("val") == NUM_VAL
  # Shards are contiguous blocks (0-2, 3-4): manifest order, not interleaved.
  assert keys == [f"val/{i:06d}" for i in range(NUM_VAL)]
  assert first_pixels == list(range(NUM_VAL))


def test_eval_decodes_records_exactly(data_dir):
  manifest = schema.read_manifest(data_dir)
  ds = pipeline.make_dataset(data_dir, manifest, "val", TASKS, batch_size=8, training=False)
  (image, labels), = as_numpy(ds)
  rng = np.random.default_rng(0)
  for _ in range(NUM_TRAIN):  # the fixture drew the train split first
    make_example(0, rng)
  for i in range(NUM_VAL):
    want_image, want = make_example(i, rng)
    np.testing.assert_array_equal(image[i], want_image / np.float32(255.0))
    np.testing.assert_array_equal(labels["semseg"][i], want["semseg"])
    np.testing.assert_array_equal(labels["depth"][i, ..., 0], want["depth"])
    np.testing.assert_array_equal(labels["normals"][i],
                                  want["normals"].astype(np.float16).astype(np.float32))


def test_training_drops_remainder(data_dir):
  manifest = schema.read_manifest(data_dir)
  ds = pipeline.make_dataset(data_dir, manifest, "train", TASKS, batch_size=4, training=True,
                             with_keys=True)
  batches = as_numpy(ds)
  assert len(batches) == len(ds) == NUM_TRAIN // 4 == pipeline.steps_per_epoch(
      manifest, "train", 4)
  key, image, labels = batches[0]
  assert image.shape == (4, H, W, 3)
  for task, value in labels.items():
    assert value.shape == expected_label_shape(task, 4), task
  assert len(set(key)) == 4
  assert all(k.decode().startswith("train/") for k in key)


def _epoch(data_dir, seed):
  manifest = schema.read_manifest(data_dir)
  ds = pipeline.make_dataset(data_dir, manifest, "train", TASKS, batch_size=2, training=True,
                             augment=True, seed=seed, deterministic=True, with_keys=True)
  return as_numpy(ds)


def _same(a, b) -> bool:
  flat_a, flat_b = tf.nest.flatten(a), tf.nest.flatten(b)
  return len(flat_a) == len(flat_b) and all(np.array_equal(x, y) for x, y in zip(flat_a, flat_b))


def test_deterministic_training_repeats_for_a_seed_and_changes_with_it(data_dir):
  first, second, other = _epoch(data_dir, 3), _epoch(data_dir, 3), _epoch(data_dir, 4)
  assert len(first) == NUM_TRAIN // 2
  assert _same(first, second)
  assert not _same(first, other)
  for key, image, labels in first:  # augmented batches still follow the label conventions
    assert image.min() >= 0.0 and image.max() <= 1.0
    for task, value in labels.items():
      assert value.shape == expected_label_shape(task, 2), task


def test_augmentation_draws_anew_every_epoch_yet_repeats_per_seed(data_dir):
  """One shard, no shuffling: the order is fixed, so only the augmentation can differ."""
  manifest = schema.read_manifest(data_dir)
  manifest = dataclasses.replace(manifest, splits={"val": manifest.splits["val"][:1]})

  def two_epochs():
    ds = pipeline.make_dataset(data_dir, manifest, "val", TASKS, batch_size=3, training=True,
                               augment=True, seed=5, deterministic=True, shuffle_buffer=1,
                               with_keys=True)
    return as_numpy(ds), as_numpy(ds)

  (epoch1, epoch2), again = two_epochs(), two_epochs()
  assert list(epoch1[0][0]) == list(epoch2[0][0]) == [b"val/000000", b"val/000001",
                                                        b"val/000002"]
  assert not np.array_equal(epoch1[0][1], epoch2[0][1])
  assert _same(epoch1, again[0]) and _same(epoch2, again[1])


# ---- augmentation geometry ----------------------------------------------------------------

def hand_made():
  """An example whose depth (1 + row * W + col, 0 at invalid pixels) names its source pixel."""
  ii, jj = np.meshgrid(np.arange(H), np.arange(W), indexing="ij")
  idx = ii * W + jj
  invalid = idx % 7 == 3
  depth = np.where(invalid, 0.0, idx + 1.0).astype(np.float32)[..., None]
  angle = 0.37 * idx
  normals = np.stack([np.cos(angle), np.sin(angle), np.full_like(angle, 0.5)], -1)
  normals /= np.linalg.norm(normals, axis=-1, keepdims=True)
  normals = np.where(invalid[..., None], 0.0, normals).astype(np.float32)
  semseg = (idx % 5 - 1).astype(np.int32)  # -1..3
  image = np.random.default_rng(1).uniform(0, 1, (H, W, 3)).astype(np.float32)
  labels = {tasks_lib.SEMSEG: semseg, tasks_lib.DEPTH: depth, tasks_lib.NORMALS: normals,
            tasks_lib.KEYPOINTS: (jj / (W - 1)).astype(np.float32)[..., None],
            tasks_lib.EDGES: (ii % 2).astype(np.float32)[..., None]}
  return image, labels


def _run(fn, image, labels, seed):
  out_image, out_labels = fn(tf.constant(image), {k: tf.constant(v) for k, v in labels.items()},
                             tf.constant(seed, tf.int32))
  return out_image.numpy(), {k: v.numpy() for k, v in out_labels.items()}


def test_horizontal_flip_mirrors_every_map_and_negates_normal_x_only():
  image, labels = hand_made()
  flipped_labels = {k: np.flip(v, axis=1) for k, v in labels.items()}
  flipped_labels["normals"] = flipped_labels["normals"] * np.array([-1, 1, 1], np.float32)
  flipped = (np.flip(image, axis=1), flipped_labels)
  seen = set()
  for k in range(64):
    out = _run(augment.horizontal_flip, image, labels, [7, k])
    did_flip = not np.array_equal(out[0], image)
    want = flipped if did_flip else (image, labels)
    np.testing.assert_array_equal(out[0], want[0])
    assert sorted(out[1]) == sorted(labels)
    for task in labels:
      np.testing.assert_array_equal(out[1][task], want[1][task], err_msg=task)
      assert out[1][task].dtype == labels[task].dtype, task
    assert _same(out, _run(augment.horizontal_flip, image, labels, [7, k]))  # stateless
    seen.add(did_flip)
    if seen == {True, False}:
      break
  assert seen == {True, False}


def _chosen(seed) -> tuple:
  """(scale, top, left, crop_h, crop_w) that scale_crop draws from `seed`."""
  seed = tf.constant(seed, tf.int32)
  choice = int(tf.random.stateless_uniform([], seed, 0, len(augment.SCALES), dtype=tf.int32))
  scale = augment.SCALES[choice]
  crop_h, crop_w = int(round(H / scale)), int(round(W / scale))
  seed_y, seed_x = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
  top = int(tf.random.stateless_uniform([], seed_y, 0, H - crop_h + 1, dtype=tf.int32))
  left = int(tf.random.stateless_uniform([], seed_x, 0, W - crop_w + 1, dtype=tf.int32))
  return scale, top, left, crop_h, crop_w


def _check_scale_crop(image, labels, out_image, out, scale, top, left, crop_h, crop_w):
  depth = out["depth"][..., 0]
  valid = depth != 0
  assert valid.mean() > 0.7
  # Nearest resize: depth * scale is an original depth value, exactly depth / scale.
  source = np.rint(depth * np.float32(scale)).astype(np.int64)
  np.testing.assert_array_equal(depth[valid], source[valid].astype(np.float32) / np.float32(scale))
  si, sj = np.divmod(source - 1, W)
  assert np.all(labels["depth"][si[valid], sj[valid], 0] == source[valid])
  # Every output row / column comes from one source row / column of the crop window, in order.
  rows = [np.unique(si[r][valid[r]]) for r in range(H)]
  cols = [np.unique(sj[:, c][valid[:, c]]) for c in range(W)]
  assert all(len(r) == 1 for r in rows) and all(len(c) == 1 for c in cols)
  rows, cols = np.concatenate(rows), np.concatenate(cols)
  assert np.all(np.diff(rows) >= 0) and np.all(np.diff(cols) >= 0)
  assert sorted(set(rows)) == list(range(top, top + crop_h))
  assert sorted(set(cols)) == list(range(left, left + crop_w))
  # The other nearest maps took the very same source pixel.
  np.testing.assert_array_equal(out["semseg"][valid], labels["semseg"][si[valid], sj[valid]])
  np.testing.assert_array_equal(out["normals"][valid], labels["normals"][si[valid], sj[valid]])
  assert np.all(out["normals"][~valid] == 0)  # invalid depth <=> invalid normals, kept exact
  assert set(np.unique(out["semseg"])) <= set(np.unique(labels["semseg"]))
  assert -1 in out["semseg"] and out["semseg"].dtype == np.int32
  norms = np.linalg.norm(out["normals"], axis=-1)
  assert np.all((norms == 0) | (np.abs(norms - 1) < 1e-5))
  assert out_image.shape == (H, W, 3) and out_image.min() >= 0 and out_image.max() <= 1
  for task in ("keypoints", "edges"):
    assert out[task].shape == (H, W, 1) and out[task].min() >= 0 and out[task].max() <= 1
  if scale == 1.0:
    np.testing.assert_allclose(out_image, image, atol=1e-6)
    for task in labels:
      np.testing.assert_allclose(out[task], labels[task], atol=1e-6, err_msg=task)


def test_scale_crop_is_nearest_consistent_and_rescales_depth():
  image, labels = hand_made()
  seen = set()
  for k in range(40):
    scale, top, left, crop_h, crop_w = _chosen([11, k])
    if scale in seen:
      continue
    out_image, out = _run(augment.scale_crop, image, labels, [11, k])
    _check_scale_crop(image, labels, out_image, out, scale, top, left, crop_h, crop_w)
    seen.add(scale)
    if len(seen) == len(augment.SCALES):
      break
  assert seen == set(augment.SCALES)


def test_scale_crop_multiplies_disparity():
  image, labels = hand_made()
  seed = next([5, k] for k in range(40) if _chosen([5, k])[0] != 1.0)
  scale = _chosen(seed)[0]
  _, metres = _run(augment.scale_crop, image, labels, seed)
  _, disparity = _run(lambda i, l, s: augment.scale_crop(i, l, s, "disparity"), image, labels,
                      seed)
  np.testing.assert_array_equal(disparity["semseg"], metres["semseg"])
  np.testing.assert_allclose(disparity["depth"], metres["depth"] * scale * scale, rtol=1e-6)


def test_augment_keeps_shapes_dtypes_and_ranges():
  image, labels = hand_made()
  for k in range(4):
    out_image, out = _run(augment.augment, image, labels, [2, k])
    assert out_image.shape == image.shape and out_image.dtype == np.float32
    assert 0 <= out_image.min() and out_image.max() <= 1
    for task in labels:
      assert out[task].shape == labels[task].shape and out[task].dtype == labels[task].dtype
    assert set(np.unique(out["semseg"])) <= set(range(-1, 4))
    norms = np.linalg.norm(out["normals"], axis=-1)
    assert np.all((norms == 0) | (np.abs(norms - 1) < 1e-5))
    assert np.all((out["depth"][..., 0] == 0) == (norms == 0))


# ---- decode_example -----------------------------------------------------------------------

def _record(height, width, image_shape, depth_shape=None) -> bytes:
  """A record whose height/width fields say (height, width) whatever the bytes hold."""
  feature = lambda **kw: tf.train.Feature(**kw)
  features = {
      "key": feature(bytes_list=tf.train.BytesList(value=[b"val/000000"])),
      "height": feature(int64_list=tf.train.Int64List(value=[height])),
      "width": feature(int64_list=tf.train.Int64List(value=[width])),
      "image": feature(bytes_list=tf.train.BytesList(
          value=[np.zeros(image_shape, np.uint8).tobytes()])),
      "depth": feature(bytes_list=tf.train.BytesList(
          value=[np.ones(depth_shape or image_shape[:2], np.float32).tobytes()]))}
  return tf.train.Example(features=tf.train.Features(feature=features)).SerializeToString()


def test_decode_example_accepts_a_matching_record():
  key, image, labels = schema.decode_example(_record(H, W, (H, W, 3)), H, W, ["depth"])
  assert key.numpy() == b"val/000000" and image.shape == (H, W, 3)
  assert labels["depth"].shape == (H, W, 1)


def test_decode_example_rejects_image_bytes_of_another_size():
  record = _record(H, 96, (H, W, 3), depth_shape=(H, 96))  # claims 32x96, image is 32x64
  with pytest.raises(tf.errors.InvalidArgumentError, match="feature 'image' has the wrong size"):
    schema.decode_example(record, H, 96, ["depth"])
  # The same inside a tf.data graph (as in make_dataset).
  ds = tf.data.Dataset.from_tensors(record).map(
      lambda r: schema.decode_example(r, H, 96, ["depth"]))
  with pytest.raises(tf.errors.InvalidArgumentError,  # graph mode escapes the quotes
                     match=r"feature \W*image\W* has the wrong size for shape \[32, 96, 3\]"):
    next(iter(ds))


def test_decode_example_rejects_a_label_of_another_size():
  record = _record(H, W, (H, W, 3), depth_shape=(H, W // 2))
  with pytest.raises(tf.errors.InvalidArgumentError, match="feature 'depth' has the wrong size"):
    schema.decode_example(record, H, W, ["depth"])


def test_decode_example_rejects_a_record_of_another_declared_size():
  record = schema.encode_example("val/000000", *make_example(0, np.random.default_rng(0)))
  with pytest.raises(tf.errors.InvalidArgumentError, match=r"record width differs.*\(96\)"):
    schema.decode_example(record, H, 96, TASKS)
