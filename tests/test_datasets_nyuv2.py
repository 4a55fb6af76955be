"""NYUv2 converter (MTAN .npy layout) on a tiny fixture tree written by the test."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from datasets import nyuv2
from sdmtcnn_tf.data import schema
from tests.conftest import REPO
from tests.records import read_split

H, W = 16, 24


def write_tree(root, counts=(("train", 3), ("val", 2)), tasks_folders=("label", "depth", "normal"),
               seed=0):
  """Writes `<root>/<split>/{image,label,depth,normal}/<i>.npy`; returns the arrays by key."""
  rng = np.random.default_rng(seed)
  arrays = {}
  for split, n in counts:
    for folder in ("image",) + tuple(tasks_folders):
      os.makedirs(os.path.join(root, split, folder), exist_ok=True)
    for i in range(n):
      image = rng.random((H, W, 3)).astype(np.float32)
      label = rng.integers(-1, 13, (H, W)).astype(np.float32)
      depth = rng.uniform(0.5, 10.0, (H, W, 1)).astype(np.float32)
      depth[0, :3] = 0.0
      normal = rng.normal(size=(H, W, 3))
      normal /= np.linalg.norm(normal, axis=-1, keepdims=True)
      normal[1, :4] = 0.0
      normal = normal.astype(np.float32)
      # One channels-first image and one [H, W] depth: both accepted.
      stored_image = np.transpose(image, (2, 0, 1)) if (split, i) == ("train", 1) else image
      stored_depth = depth[..., 0] if (split, i) == ("train", 2) else depth
      files = {"image": stored_image, "label": label, "depth": stored_depth, "normal": normal}
      for folder, value in files.items():
        if folder == "image" or folder in tasks_folders:
          np.save(os.path.join(root, split, folder, f"{i}.npy"), value)
      arrays[f"{split}/{i:06d}"] = {"image": image, "label": label, "depth": depth,
                                    "normal": normal}
  return arrays


def convert(src, out, *extra):
  return nyuv2.main(["nyuv2", f"--src={src}", f"--out_dir={out}", f"--height={H}",
                     f"--width={W}", "--num_workers=1", *extra])


@pytest.fixture()
def tree(tmp_path):
  src = str(tmp_path / "src")
  return src, write_tree(src)


def test_roundtrip_values_and_manifest(tree, tmp_path):
  src, arrays = tree
  out = str(tmp_path / "out")
  assert convert(src, out, "--num_shards=2") == 0
  manifest = schema.read_manifest(out)
  assert manifest.dataset == "nyuv2"
  assert manifest.tasks == ("semseg", "depth", "normals")
  assert (manifest.height, manifest.width) == (H, W)
  assert manifest.num_classes == 13 and len(manifest.class_names) == 13
  assert manifest.depth_unit == "metres"
  assert manifest.num_examples("train") == 3 and manifest.num_examples("val") == 2
  assert len(manifest.split_shards("train")) == 2
  assert manifest.extra["source"] == os.path.abspath(src)
  assert manifest.extra["skipped"] == []
  for shard in manifest.split_shards("train") + manifest.split_shards("val"):
    assert schema.file_sha256(os.path.join(out, shard.file)) == shard.sha256
  records = {**read_split(out, "train"), **read_split(out, "val")}
  assert sorted(records) == sorted(arrays)
  for key, (image, labels) in records.items():
    ref = arrays[key]
    np.testing.assert_array_equal(np.round(image * 255), np.round(ref["image"] * 255))
    np.testing.assert_array_equal(labels["semseg"], ref["label"].astype(np.int32))
    np.testing.assert_allclose(labels["depth"], ref["depth"], rtol=1e-6)
    np.testing.assert_allclose(labels["normals"], ref["normal"], atol=2e-3)
    assert np.all(labels["normals"][1, :4] == 0) and np.all(labels["depth"][0, :3] == 0)
  # Records of a split keep the numeric file order across shards.
  assert list(read_split(out, "train")) == ["train/000000", "train/000001", "train/000002"]


def test_two_task_setting_needs_no_normals(tmp_path):
  src = str(tmp_path / "src")
  write_tree(src, tasks_folders=("label", "depth"))
  out = str(tmp_path / "out")
  assert convert(src, out, "--tasks=semseg,depth") == 0
  assert schema.read_manifest(out).tasks == ("semseg", "depth")
  _, labels = next(iter(read_split(out, "val").values()))
  assert set(labels) == {"semseg", "depth"}


def test_rerun_is_idempotent_and_overwrite_replaces(tree, tmp_path, capsys):
  src, _ = tree
  out = str(tmp_path / "out")
  assert convert(src, out, "--num_shards=2") == 0
  before = {n: os.stat(os.path.join(out, n)).st_mtime_ns for n in os.listdir(out)}
  assert convert(src, out, "--num_shards=2") == 0
  assert "already holds this conversion" in capsys.readouterr().out
  assert {n: os.stat(os.path.join(out, n)).st_mtime_ns for n in os.listdir(out)} == before
  # Other parameters: refuse without --overwrite, then replace (no stale shards left).
  assert convert(src, out, "--num_shards=1") == 1
  assert "--overwrite" in capsys.readouterr().err
  assert convert(src, out, "--num_shards=1", "--overwrite") == 0
  assert sorted(n for n in os.listdir(out) if n.endswith(".tfrecord")) == [
      "train-00000-of-00001.tfrecord", "val-00000-of-00001.tfrecord"]
  assert schema.read_manifest(out).num_examples("train") == 3


@pytest.mark.parametrize("content", [b"", b"\x00\xff garbage", b'{"dataset": "nyuv2"}',
                                     b'["not", "an", "object"]'])
def test_corrupt_manifest_stops_naming_it_unless_overwrite(tree, tmp_path, capsys, content):
  src, _ = tree
  out = str(tmp_path / "out")
  assert convert(src, out) == 0
  path = os.path.join(out, schema.MANIFEST_NAME)
  with open(path, "wb") as f:
    f.write(content)
  capsys.readouterr()
  assert convert(src, out) == 1
  err = capsys.readouterr().err
  assert err.startswith(f"error: {path}: corrupt manifest") and err.count("\n") == 1, err
  assert "--overwrite" in err
  with open(path, "rb") as f:
    assert f.read() == content  # nothing touched
  assert convert(src, out, "--overwrite") == 0
  assert schema.read_manifest(out).num_examples("train") == 3


def test_worker_pool_writes_the_same_bytes(tree, tmp_path):
  src, _ = tree
  one, two = str(tmp_path / "one"), str(tmp_path / "two")
  assert convert(src, one, "--num_shards=2") == 0
  assert nyuv2.main(["nyuv2", f"--src={src}", f"--out_dir={two}", f"--height={H}",
                     f"--width={W}", "--num_workers=2", "--num_shards=2"]) == 0
  shas = lambda d: {s.file: s.sha256 for v in schema.read_manifest(d).splits.values() for s in v}
  assert shas(one) == shas(two)
  # Records are serialized with sorted feature keys (byte-identical across processes).
  for record in tf.data.TFRecordDataset(os.path.join(two, "train-00000-of-00002.tfrecord")):
    record = record.numpy()
    assert tf.train.Example.FromString(record).SerializeToString(deterministic=True) == record


def _break(src, case):
  """Damages the fixture tree; returns the path the error must name."""
  if case == "missing_folder":
    path = os.path.join(src, "val", "depth")
    for name in os.listdir(path):
      os.remove(os.path.join(path, name))
    os.rmdir(path)
    return path
  if case == "missing_partner":
    os.remove(os.path.join(src, "train", "label", "1.npy"))
    return os.path.join(src, "train", "label", "1.npy")
  path = os.path.join(src, "train", {"corrupt": "depth", "wrong_shape": "image",
                                     "label_range": "label", "wrong_dtype": "label"}[case],
                      "1.npy")
  if case == "corrupt":
    with open(path, "wb") as f:
      f.write(b"\x93NUMPY garbage")
  elif case == "wrong_shape":
    np.save(path, np.zeros((H - 2, W, 3), np.float32))
  elif case == "label_range":
    label = np.zeros((H, W), np.float32)
    label[3, 4] = 13
    np.save(path, label)
  elif case == "wrong_dtype":
    np.save(path, np.full((H, W), "a"))
  return path


@pytest.mark.parametrize("case", ["missing_folder", "missing_partner", "corrupt", "wrong_shape",
                                  "label_range", "wrong_dtype"])
def test_bad_input_stops_naming_the_file(tree, tmp_path, capsys, case):
  src, _ = tree
  path = _break(src, case)
  out = str(tmp_path / "out")
  assert convert(src, out) == 1
  err = capsys.readouterr().err
  assert path in err, err
  assert not os.path.exists(os.path.join(out, schema.MANIFEST_NAME))
  assert not [n for n in os.listdir(out) if n.endswith(".tmp")] if os.path.isdir(out) else True


def test_skip_bad_lists_every_skipped_example(tree, tmp_path):
  src, _ = tree
  partner = _break(src, "missing_partner")  # train/1
  np.save(os.path.join(src, "val", "label", "0.npy"), np.full((H, W), 20, np.float32))
  out = str(tmp_path / "out")
  assert convert(src, out, "--skip_bad") == 0
  manifest = schema.read_manifest(out)
  assert manifest.num_examples("train") == 2 and manifest.num_examples("val") == 1
  skipped = manifest.extra["skipped"]
  assert len(skipped) == 2
  assert skipped[0]["path"] == os.path.join(src, "train", "image", "1.npy")
  assert partner in skipped[0]["reason"]
  assert skipped[1]["path"] == os.path.join(src, "val", "label", "0.npy")
  assert "outside the class range" in skipped[1]["reason"]
  assert sorted(read_split(out, "train")) == ["train/000000", "train/000002"]


def test_unknown_flag_exits_nonzero_naming_it(capsys):
  with pytest.raises(SystemExit) as exit_info:
    nyuv2.main(["nyuv2", "--src=x", "--out_dir=y", "--no_such_flag=1"])
  assert exit_info.value.code != 0
  assert "no_such_flag" in capsys.readouterr().err


def test_cli_from_the_repository_root(tree, tmp_path):
  src, _ = tree
  out = str(tmp_path / "cli")
  proc = subprocess.run(
      [sys.executable, "-m", "datasets.nyuv2", f"--src={src}", f"--out_dir={out}",
       f"--height={H}", f"--width={W}", "--num_workers=1", "--tasks=semseg,depth"],
      cwd=REPO, capture_output=True, text=True, timeout=120)
  assert proc.returncode == 0, proc.stderr
  with open(os.path.join(out, schema.MANIFEST_NAME)) as f:
    assert json.load(f)["tasks"] == ["semseg", "depth"]
