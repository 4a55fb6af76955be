"""datasets.verify on a tiny dataset written with the schema, then damaged in several ways."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from datasets import verify
from sdmtcnn_tf.data import schema
from tests.conftest import train_shard as shard

H, W = 4, 6
CLASSES = ("a", "b", "c")


def make_examples(n, seed=0):
  rng = np.random.default_rng(seed)
  out = []
  for i in range(n):
    image = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    semseg = rng.integers(-1, 3, (H, W)).astype(np.int16)
    depth = rng.uniform(1, 5, (H, W)).astype(np.float32)
    depth[0, 0] = 0
    normals = np.zeros((H, W, 3), np.float32)
    normals[:2, ..., 2] = 1.0  # top half valid
    out.append((f"train/{i:06d}", image, {"semseg": semseg, "depth": depth,
                                          "normals": normals}))
  return out


@pytest.fixture()
def dataset(tmp_path):
  """3 train examples in 2 shards + 1 val example; returns (data_dir, examples)."""
  data_dir = str(tmp_path / "ds")
  train = make_examples(3)
  val = [("val/000000", *make_examples(1, seed=1)[0][1:])]
  splits = {}
  for split, examples in (("train", train), ("val", val)):
    records = [schema.encode_example(k, img, labels) for k, img, labels in examples]
    splits[split] = schema.write_split(data_dir, split, records, 2 if split == "train" else 1,
                                       num_examples=len(records))
  schema.write_manifest(data_dir, schema.Manifest(
      dataset="toy", height=H, width=W, tasks=("semseg", "depth", "normals"), num_classes=3,
      class_names=CLASSES, depth_unit="metres", splits=splits))
  return data_dir, train


def test_clean_dataset_passes_with_exact_statistics(dataset, capsys):
  data_dir, train = dataset
  errors, report = verify.verify(data_dir)
  assert errors == []
  assert report["train"]["examples"] == 3 and report["val"]["examples"] == 1
  seg = np.stack([e[2]["semseg"] for e in train])
  stats = report["train"]["tasks"]
  assert stats["semseg"]["class_histogram"] == np.bincount(seg[seg >= 0], minlength=3).tolist()
  assert stats["semseg"]["valid_fraction"] == pytest.approx(np.mean(seg >= 0))
  depth = np.stack([e[2]["depth"] for e in train])
  valid = depth[depth > 0]
  assert stats["depth"]["valid_fraction"] == pytest.approx(valid.size / depth.size)
  assert stats["depth"]["min"] == pytest.approx(valid.min())
  assert stats["depth"]["max"] == pytest.approx(valid.max())
  assert stats["depth"]["mean"] == pytest.approx(valid.mean(), rel=1e-6)
  assert stats["normals"]["valid_fraction"] == pytest.approx(0.5)
  assert stats["normals"]["mean"] == pytest.approx(1.0)
  assert verify.main(["verify", f"--data_dir={data_dir}"]) == 0
  out = capsys.readouterr().out
  assert "OK" in out and "[train] 3 examples" in out


def test_flipped_byte_is_a_checksum_error_naming_the_shard(dataset, capsys):
  data_dir, _ = dataset
  path = shard(data_dir, 1)
  data = bytearray(open(path, "rb").read())
  data[len(data) // 2] ^= 0xFF
  with open(path, "wb") as f:
    f.write(bytes(data))
  assert verify.main(["verify", f"--data_dir={data_dir}"]) == 1
  err = capsys.readouterr().err
  assert f"{path}: sha256" in err


def test_truncated_shard_is_reported(dataset, capsys):
  data_dir, _ = dataset
  path = shard(data_dir, 0)
  data = open(path, "rb").read()
  with open(path, "wb") as f:
    f.write(data[:len(data) - 10])
  errors, _ = verify.verify(data_dir)
  assert all(e.startswith(path) for e in errors)
  assert any("cannot be read" in e for e in errors)
  assert any("manifest says" in e for e in errors)
  assert verify.main(["verify", f"--data_dir={data_dir}"]) == 1
  assert path in capsys.readouterr().err


def test_count_mismatch_and_missing_shard(dataset):
  data_dir, _ = dataset
  manifest_path = os.path.join(data_dir, schema.MANIFEST_NAME)
  raw = json.load(open(manifest_path))
  raw["splits"]["train"][0]["num_examples"] += 1
  json.dump(raw, open(manifest_path, "w"))
  os.remove(os.path.join(data_dir, schema.shard_name("val", 0, 1)))
  errors, _ = verify.verify(data_dir)
  assert any(e.startswith(shard(data_dir, 0)) and "manifest says" in e for e in errors)
  assert any("val-00000-of-00001.tfrecord: shard listed in the manifest is missing" in e
             for e in errors)


def test_wrong_size_and_bad_labels_are_decoding_errors(tmp_path):
  data_dir = str(tmp_path / "ds")
  image = np.zeros((H, W, 3), np.uint8)
  bad_class = schema.encode_example("train/0", image, {"semseg": np.full((H, W), 5, np.int16)})
  wrong_size = schema.encode_example("train/1", np.zeros((H, W + 1, 3), np.uint8),
                                     {"semseg": np.zeros((H, W + 1), np.int16)})
  splits = {"train": schema.write_split(data_dir, "train", [bad_class, wrong_size], 1)}
  schema.write_manifest(data_dir, schema.Manifest(
      dataset="toy", height=H, width=W, tasks=("semseg",), num_classes=3, class_names=CLASSES,
      depth_unit="metres", splits=splits))
  errors, _ = verify.verify(data_dir)
  path = os.path.join(data_dir, schema.shard_name("train", 0, 1))
  assert any(e.startswith(path) and "outside -1..2" in e for e in errors)
  assert any(e.startswith(path) and "width differs" in e for e in errors)


def test_missing_manifest_and_unknown_flag(tmp_path, capsys):
  assert verify.main(["verify", f"--data_dir={tmp_path}"]) == 1
  assert "manifest.json" in capsys.readouterr().err
  with pytest.raises(SystemExit) as exit_info:
    verify.main(["verify", f"--data_dir={tmp_path}", "--bogus"])
  assert exit_info.value.code != 0
  assert "bogus" in capsys.readouterr().err
