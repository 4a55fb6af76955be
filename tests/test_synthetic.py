"""Tests of the built-in synthetic dataset (sdmtcnn_tf/data/synthetic/, datasets/synthetic.py)."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from sdmtcnn_tf import tasks as tasks_lib
from sdmtcnn_tf.data import schema
from sdmtcnn_tf.data import synthetic
from tests.conftest import REPO, run_module

H, W = 24, 32
NUM_TRAIN, NUM_VAL = 3, 2


def _examples(n: int = 8, height: int = H, width: int = W, seed: int = 0):
  return [synthetic.render_example(seed, "train", i, height, width) for i in range(n)]


@pytest.fixture(scope="module")
def examples():
  return _examples()


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
  out = str(tmp_path_factory.mktemp("synthetic"))
  manifest = synthetic.generate_dataset(out, NUM_TRAIN, NUM_VAL, H, W, seed=0)
  return out, manifest


def _shard_bytes(out_dir: str, manifest: schema.Manifest) -> dict:
  result = {}
  for split in manifest.splits:
    for path in schema.shard_paths(out_dir, manifest, split):
      with open(path, "rb") as f:
        result[os.path.basename(path)] = f.read()
  return result


def _sha256s(manifest: schema.Manifest) -> dict:
  return {s.file: s.sha256 for shards in manifest.splits.values() for s in shards}


# ---- rendering ------------------------------------------------------------------------------

# the tiny default size, and a larger one with another aspect ratio (was a misnamed
# "test_large_image_renders_quickly" that timed nothing: speed is measured by `make bench`)
@pytest.mark.parametrize("height, width", [(H, W), (144, 192)])
def test_render_shapes_and_dtypes(height, width):
  image, labels = synthetic.render_example(0, "val", 0, height, width)
  assert image.dtype == np.uint8 and image.shape == (height, width, 3)
  assert image.std() > 5  # not a blank image
  assert set(labels) == set(tasks_lib.ALL_TASKS)
  expected = {"semseg": (np.int16, (height, width)), "depth": (np.float32, (height, width, 1)),
              "normals": (np.float32, (height, width, 3)),
              "keypoints": (np.float32, (height, width, 1)),
              "edges": (np.float32, (height, width, 1))}
  for task, (dtype, shape) in expected.items():
    assert labels[task].dtype == dtype, task
    assert labels[task].shape == shape, task
  depth = labels["depth"][..., 0]
  valid = depth > 0
  assert valid.mean() > 0.5 and np.all(depth >= 0)
  np.testing.assert_allclose(np.linalg.norm(labels["normals"][valid], axis=-1), 1.0, atol=1e-5)
  assert np.all(labels["normals"][~valid] == 0)
  assert len(np.unique(labels["semseg"][labels["semseg"] >= 0])) >= 3
  assert len(synthetic.CLASS_NAMES) == synthetic.NUM_CLASSES == 13


def test_labels_are_consistent(examples):
  ignore_seen = invalid_seen = False
  boundaries = 0
  for image, labels in examples:
    depth, normals = labels["depth"][..., 0], labels["normals"]
    valid = depth > 0
    assert np.all(depth >= 0) and np.all(np.isfinite(depth))
    assert np.all(depth <= synthetic.MAX_DEPTH)
    norm = np.linalg.norm(normals, axis=-1)
    np.testing.assert_allclose(norm[valid], 1.0, atol=1e-5)
    assert np.all(normals[~valid] == 0)
    semseg = labels["semseg"]
    assert semseg.min() >= -1 and semseg.max() <= 12
    ignore_seen |= bool(np.any(semseg == -1))
    invalid_seen |= bool(np.any(~valid))
    for task in ("keypoints", "edges"):
      assert labels[task].min() >= 0 and labels[task].max() <= 1, task
      assert labels[task].max() > 0.5, task
    # Every change of (labelled) class between neighbours is an edge, on both sides.
    edges = labels["edges"][..., 0]
    for a, b in (((slice(None), slice(None, -1)), (slice(None), slice(1, None))),
                 ((slice(None, -1), slice(None)), (slice(1, None), slice(None)))):
      boundary = (semseg[a] != semseg[b]) & (semseg[a] >= 0) & (semseg[b] >= 0)
      boundaries += boundary.sum()
      assert np.all(edges[a][boundary] == 1) and np.all(edges[b][boundary] == 1)
    assert image.std() > 5  # not a blank image
  assert boundaries > 50
  assert ignore_seen, "the ignore label never occurs"
  assert invalid_seen, "invalid depth never occurs"


def test_normals_and_depth_match_the_camera_pose():
  """Floor and ceiling pixels back-project onto their planes and carry the pose's normals."""
  checked = 0
  for index in range(8):
    scene = synthetic.sample_scene(synthetic.example_rng(0, "train", index))
    _, labels = synthetic.render_example(0, "train", index, H, W)
    depth, normals, semseg = labels["depth"][..., 0], labels["normals"], labels["semseg"]
    # World points of the pixels: camera centre + depth * (ray with z = -1), rotated to world.
    points = scene.cam_pos + (depth[..., None] * synthetic.pixel_rays(H, W)) @ scene.cam_rot.T
    floor = (semseg == synthetic.FLOOR) & (depth > 0)
    checked += floor.sum() > 10
    floor_normal = scene.cam_rot[1]  # world up (0, 1, 0) in camera coordinates
    np.testing.assert_allclose(normals[floor], np.broadcast_to(floor_normal, (floor.sum(), 3)),
                               atol=1e-5)
    np.testing.assert_allclose(points[floor][:, 1], 0.0, atol=1e-4)
    # The camera looks 0-20 degrees down with at most 3 degrees roll.
    assert floor_normal[2] >= -1e-9
    assert floor_normal[1] > np.cos(np.deg2rad(20)) * np.cos(np.deg2rad(3)) - 1e-6
    ceiling = (semseg == synthetic.CEILING) & (depth > 0)
    np.testing.assert_allclose(normals[ceiling], -np.broadcast_to(floor_normal,
                                                                  (ceiling.sum(), 3)), atol=1e-5)
    np.testing.assert_allclose(points[ceiling][:, 1], scene.room[1], atol=1e-4)
    walls = (semseg == synthetic.WALL) & (depth > 0)
    np.testing.assert_allclose(normals[walls] @ floor_normal, 0.0, atol=1e-5)
    # Every visible surface faces the camera.
    valid = depth > 0
    assert np.all(np.einsum("...c,...c->...", normals, synthetic.pixel_rays(H, W))[valid] < 0)
  assert checked >= 4


# ---- dataset files --------------------------------------------------------------------------

def test_same_seed_same_bytes(dataset, tmp_path):
  out, manifest = dataset
  again = synthetic.generate_dataset(str(tmp_path / "again"), NUM_TRAIN, NUM_VAL, H, W, seed=0)
  assert _sha256s(again) == _sha256s(manifest)
  assert _shard_bytes(str(tmp_path / "again"), again) == _shard_bytes(out, manifest)
  other = synthetic.generate_dataset(str(tmp_path / "other"), NUM_TRAIN, NUM_VAL, H, W, seed=1)
  assert not set(_sha256s(other).values()) & set(_sha256s(manifest).values())


def test_manifest(dataset):
  out, manifest = dataset
  read = schema.read_manifest(out)
  assert read == manifest
  assert read.dataset == "synthetic" and read.depth_unit == "metres"
  assert read.num_classes == 13 and read.class_names == synthetic.CLASS_NAMES
  assert read.tasks == tasks_lib.ALL_TASKS
  assert read.extra == {"seed": 0, "generator_version": synthetic.GENERATOR_VERSION}
  assert read.num_examples("train") == NUM_TRAIN and read.num_examples("val") == NUM_VAL
  assert not os.path.exists(os.path.join(out, synthetic.INCOMPLETE_MARKER))


def _read_split(out_dir: str, split: str, tasks=None):
  manifest = schema.read_manifest(out_dir)
  tasks = manifest.tasks if tasks is None else tasks
  ds = tf.data.TFRecordDataset(schema.shard_paths(out_dir, manifest, split))
  return [schema.decode_example(r, manifest.height, manifest.width, tasks) for r in ds]


def test_round_trip(dataset):
  out, _ = dataset
  for split, n in (("train", NUM_TRAIN), ("val", NUM_VAL)):
    records = _read_split(out, split)
    assert len(records) == n
    for index, (key, image, labels) in enumerate(records):
      assert key.numpy().decode() == f"{split}/{index:06d}"
      want_image, want = synthetic.render_example(0, split, index, H, W)
      np.testing.assert_array_equal(np.round(image.numpy() * 255).astype(np.uint8), want_image)
      np.testing.assert_array_equal(labels["semseg"].numpy(), want["semseg"])
      np.testing.assert_array_equal(labels["depth"].numpy(), want["depth"])
      for task in ("normals", "keypoints", "edges"):
        np.testing.assert_allclose(labels[task].numpy(), want[task], atol=2e-3, err_msg=task)


def test_only_requested_tasks_are_written(tmp_path):
  manifest = synthetic.generate_dataset(str(tmp_path), 1, 1, H, W, seed=3,
                                        tasks=("depth", "semseg"), num_shards=4)
  assert manifest.tasks == ("semseg", "depth")  # canonical order
  assert len(manifest.splits["train"]) == 1  # never more shards than examples
  path = schema.shard_paths(str(tmp_path), manifest, "train")[0]
  record = next(iter(tf.data.TFRecordDataset(path))).numpy()
  features = tf.train.Example.FromString(record).features.feature
  assert set(features) == {"key", "height", "width", "image", "semseg", "depth"}


# ---- ensure_dataset -------------------------------------------------------------------------

def test_ensure_dataset(tmp_path):
  data_dir = str(tmp_path / "data")
  manifest = synthetic.ensure_dataset(data_dir, 2, 1, H, W, seed=5, tasks=("semseg", "depth"))
  assert manifest.num_examples("train") == 2
  files = sorted(os.listdir(data_dir))
  mtimes = {f: os.stat(os.path.join(data_dir, f)).st_mtime_ns for f in files}
  # Same request, or a subset of the tasks: returned as it is, nothing rewritten.
  assert synthetic.ensure_dataset(data_dir, 2, 1, H, W, seed=5,
                                  tasks=("depth", "semseg")) == manifest
  assert synthetic.ensure_dataset(data_dir, 2, 1, H, W, seed=5, tasks=("depth",),
                                  num_shards=1) == manifest
  assert {f: os.stat(os.path.join(data_dir, f)).st_mtime_ns for f in files} == mtimes
  assert sorted(os.listdir(data_dir)) == files
  for kwargs, what in (({"seed": 6}, "seed"), ({"height": 16}, "size"),
                       ({"num_train": 3}, "train examples"), ({"tasks": ("normals",)}, "lack")):
    args = dict(num_train=2, num_val=1, height=H, width=W, seed=5, tasks=("semseg",))
    args.update(kwargs)
    with pytest.raises(ValueError, match=what) as info:
      synthetic.ensure_dataset(data_dir, **args)
    assert data_dir in str(info.value)
  assert {f: os.stat(os.path.join(data_dir, f)).st_mtime_ns for f in files} == mtimes


def test_ensure_dataset_empty_dir_and_foreign_data(tmp_path):
  empty = tmp_path / "empty"
  empty.mkdir()
  assert synthetic.ensure_dataset(str(empty), 1, 1, H, W).num_examples("val") == 1
  foreign = tmp_path / "foreign"
  foreign.mkdir()
  (foreign / "photo.jpg").write_bytes(b"not ours")
  with pytest.raises(ValueError, match="foreign"):
    synthetic.ensure_dataset(str(foreign), 1, 1, H, W)
  assert os.listdir(foreign) == ["photo.jpg"]
  other = tmp_path / "other"
  schema.write_manifest(str(other.mkdir() or other), schema.Manifest(
      dataset="nyuv2", height=H, width=W, tasks=("semseg",), num_classes=13,
      class_names=synthetic.CLASS_NAMES, depth_unit="metres", splits={}))
  with pytest.raises(ValueError, match="nyuv2"):
    synthetic.ensure_dataset(str(other), 1, 1, H, W)
  with pytest.raises(ValueError, match="no data directory"):
    synthetic.ensure_dataset("", 1, 1, H, W)


def test_ensure_dataset_finishes_an_interrupted_generation(tmp_path):
  data_dir = tmp_path / "data"
  data_dir.mkdir()
  (data_dir / synthetic.INCOMPLETE_MARKER).write_text("seed=0\n")
  (data_dir / "train-00000-of-00001.tfrecord.tmp").write_bytes(b"partial")
  manifest = synthetic.ensure_dataset(str(data_dir), 1, 1, H, W)
  assert manifest.num_examples("train") == 1
  assert sorted(os.listdir(data_dir)) == ["manifest.json", "train-00000-of-00001.tfrecord",
                                          "val-00000-of-00001.tfrecord"]


# ---- command line ---------------------------------------------------------------------------

def _cli(*args):
  return run_module("datasets.synthetic", *args, check=False, timeout=120)


def test_cli_matches_the_library(dataset, tmp_path):
  _, manifest = dataset
  out = str(tmp_path / "cli")
  result = _cli(f"--out_dir={out}", f"--num_train={NUM_TRAIN}", f"--num_val={NUM_VAL}",
                f"--height={H}", f"--width={W}", "--seed=0",
                "--tasks=semseg,depth,normals,keypoints,edges", "--num_shards=2")
  assert result.returncode == 0, result.stderr
  read = schema.read_manifest(out)
  assert read.num_examples("train") == NUM_TRAIN and read.num_examples("val") == NUM_VAL
  # Another process, the same bytes.
  assert _sha256s(read) == _sha256s(manifest)


def test_cli_rejects_unknown_flag(tmp_path):
  result = _cli(f"--out_dir={tmp_path}", "--num_trian=3")
  assert result.returncode != 0
  assert "num_trian" in result.stderr
  assert not os.listdir(tmp_path)


_IMPORT_ORDERS = {
    "cli_module_first": "import datasets.synthetic\n"
                        "from sdmtcnn_tf import config\n"
                        "config.define_flags()\n",
    "config_first": "from sdmtcnn_tf import config\n"
                    "config.define_flags()\n"
                    "import datasets.synthetic\n",
}


@pytest.mark.parametrize("order", sorted(_IMPORT_ORDERS))
def test_cli_module_defines_no_flags_at_import(order):
  """absl FLAGS is global, so each order runs in a fresh process; no DuplicateFlagError."""
  code = (_IMPORT_ORDERS[order]
          + "import datasets.cli, datasets.reading, datasets.checks, datasets.writing, datasets.nyuv2, datasets.cityscapes, datasets.taskonomy\n"
          + "import datasets.mtan_npy, datasets.verify\n"
          + "from absl import flags\n"
          + "assert 'num_train' not in flags.FLAGS, 'datasets.synthetic defined flags at import'\n"
          + "print('ok')\n")
  result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
  assert result.returncode == 0, result.stderr
  assert result.stdout.strip() == "ok"


def test_cli_help_lists_the_flags():
  result = _cli("--help")
  # absl's --help exits 1 after printing the usage (its convention, unchanged here).
  assert result.returncode in (0, 1) and "Traceback" not in result.stderr, result.stderr
  for flag in ("--out_dir", "--num_train", "--num_val", "--height", "--width", "--seed",
               "--tasks", "--num_shards"):
    assert flag in result.stdout, result.stdout
