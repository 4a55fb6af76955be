"""Bad data and flags fail before training, with messages naming the file or flag at fault."""

from __future__ import annotations

import json
import os
import re

import numpy as np
import pytest

from sdmtcnn_tf import experiment
from sdmtcnn_tf.config import ExperimentConfig
from sdmtcnn_tf.data import pipeline, schema
from tests.conftest import SMOKE_FLAGS, run_module, train_shard as shard

H, W = 32, 64
TASKS = ("semseg", "depth")
NUM_CLASSES = 13


def write_dataset(data_dir: str, height: int = H, width: int = W, tasks=TASKS, n: int = 4,
                  manifest_size: tuple | None = None) -> schema.Manifest:
  """n train (2 shards) and n val (1 shard) examples; the manifest may lie about the size."""
  rng = np.random.default_rng(0)
  splits = {}
  for split, shards in (("train", 2), ("val", 1)):
    records = []
    for i in range(n):
      labels = {"semseg": rng.integers(-1, NUM_CLASSES, (height, width)),
                "depth": rng.uniform(1, 5, (height, width)).astype(np.float32),
                "normals": np.tile(np.float32([0, 0, 1]), (height, width, 1))}
      image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
      records.append(schema.encode_example(f"{split}/{i:06d}", image,
                                           {t: labels[t] for t in tasks}))
    splits[split] = schema.write_split(data_dir, split, records, shards, num_examples=n)
  mh, mw = manifest_size or (height, width)
  manifest = schema.Manifest(
      dataset="nyuv2", height=mh, width=mw, tasks=tuple(tasks), num_classes=NUM_CLASSES,
      class_names=tuple(f"c{i}" for i in range(NUM_CLASSES)), depth_unit="metres",
      splits=splits)
  schema.write_manifest(data_dir, manifest)
  return manifest


def config(data_dir: str, **changes) -> ExperimentConfig:
  values = dict(dataset="nyuv2", data_dir=data_dir, tasks=TASKS, num_classes=NUM_CLASSES,
                height=H, width=W)
  values.update(changes)
  return ExperimentConfig.from_flat(**values).validate()


@pytest.fixture()
def data_dir(tmp_path) -> str:
  path = str(tmp_path / "nyuv2")
  write_dataset(path)
  return path


def test_clean_dataset_passes(data_dir):
  manifest = experiment.prepare_data(config(data_dir), "train")
  assert manifest.num_examples("train") == 4 and manifest.tasks == TASKS


def test_missing_data_dir_names_the_flag_and_path(tmp_path):
  missing = str(tmp_path / "no_such_dir")
  with pytest.raises(FileNotFoundError) as e:
    experiment.prepare_data(config(missing), "train")
  assert "--data_dir" in str(e.value) and missing in str(e.value)


def test_directory_without_manifest(tmp_path):
  empty = str(tmp_path / "empty")
  os.makedirs(empty)
  with pytest.raises(FileNotFoundError, match=re.escape(os.path.join(empty, "manifest.json"))):
    experiment.prepare_data(config(empty), "train")


def test_config_size_differs_from_the_data(data_dir):
  with pytest.raises(ValueError) as e:
    experiment.prepare_data(config(data_dir, width=96), "train")
  message = str(e.value)
  assert "--height/--width" in message and "32x96" in message and "32x64" in message
  assert data_dir in message


def test_manifest_size_differs_from_the_records(tmp_path):
  data_dir = str(tmp_path / "lying")
  write_dataset(data_dir, manifest_size=(H, 96))  # records 32x64, manifest (checksums ok) 32x96
  with pytest.raises(schema.SchemaError) as e:
    pipeline.check_dataset(data_dir, "train", TASKS, H, 96, NUM_CLASSES)
  message = str(e.value)
  assert shard(data_dir) in message and "32x96" in message and "width" in message
  with pytest.raises(schema.SchemaError, match=re.escape(shard(data_dir))):
    experiment.prepare_data(config(data_dir, width=96), "train")


@pytest.mark.parametrize("damage", ["truncate", "flip_byte"])
def test_damaged_shard_fails_its_checksum(data_dir, damage):
  path = shard(data_dir, 1)
  with open(path, "rb") as f:
    data = bytearray(f.read())
  if damage == "truncate":
    data = data[:len(data) // 2]
  else:
    data[len(data) // 2] ^= 0xFF
  with open(path, "wb") as f:
    f.write(data)
  with pytest.raises(schema.SchemaError) as e:
    experiment.prepare_data(config(data_dir), "train")
  assert path in str(e.value) and "checksum" in str(e.value)
  experiment.prepare_data(config(data_dir), "val")  # the other split is still fine


def test_task_the_data_does_not_carry(data_dir):
  with pytest.raises(ValueError) as e:
    experiment.prepare_data(config(data_dir, tasks=("semseg", "depth", "normals")), "train")
  message = str(e.value)
  assert "--tasks" in message and "normals" in message
  assert "['semseg', 'depth']" in message and "manifest.json" in message


def test_num_classes_disagrees_with_the_manifest(data_dir):
  with pytest.raises(ValueError) as e:
    experiment.prepare_data(config(data_dir, num_classes=40), "train")
  message = str(e.value)
  assert "--num_classes=40" in message and f"{NUM_CLASSES} classes" in message
  # Without semseg the class count does not matter.
  experiment.prepare_data(config(data_dir, tasks=("depth",), num_classes=40), "train")


def test_missing_shard_is_named(data_dir):
  path = shard(data_dir, 1)
  os.remove(path)
  with pytest.raises(FileNotFoundError) as e:
    experiment.prepare_data(config(data_dir), "train")
  assert path in str(e.value) and "manifest.json" in str(e.value)
  manifest = schema.read_manifest(data_dir)
  with pytest.raises(FileNotFoundError, match=re.escape(path)):
    pipeline.make_dataset(data_dir, manifest, "train", TASKS, 2, training=True)


def test_manifest_of_an_unknown_task_or_bad_json(data_dir):
  path = os.path.join(data_dir, "manifest.json")
  with open(path) as f:
    raw = json.load(f)
  raw["tasks"] = ["semseg", "colour"]
  with open(path, "w") as f:
    json.dump(raw, f)
  with pytest.raises(schema.SchemaError, match=re.escape(path) + r".*unknown task.*colour"):
    experiment.prepare_data(config(data_dir), "train")
  with open(path, "w") as f:
    f.write("{not json")
  with pytest.raises(schema.SchemaError, match=re.escape(path) + " is not valid JSON"):
    experiment.prepare_data(config(data_dir), "train")


def test_train_cli_fails_before_training_on_a_missing_data_dir(tmp_path):
  missing = str(tmp_path / "no_nyuv2")
  model_dir = str(tmp_path / "run")
  proc = run_module("sdmtcnn_tf.train", f"--flagfile={SMOKE_FLAGS}", "--dataset=nyuv2",
                    f"--data_dir={missing}", f"--model_dir={model_dir}", check=False,
                    timeout=120)
  assert proc.returncode != 0
  assert f"--data_dir={missing} does not exist" in proc.stderr
  assert not os.path.exists(os.path.join(model_dir, "checkpoints"))
  assert not os.path.exists(missing)
