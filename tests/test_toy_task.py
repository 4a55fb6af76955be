"""A task defined here, in the test, with no change to the library: registered, written into
records, trained (teacher, student, output distillation and hints), evaluated and exported."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from sdmtcnn_tf import evaluate, experiment, export, tasks, train
from sdmtcnn_tf.config import ExperimentConfig
from sdmtcnn_tf.data import schema

pytestmark = pytest.mark.slow  # a short end-to-end run

H, W = 32, 64


class Saliency(tasks.RegressionTask):
  """A one-channel regression: how bright each pixel is (the mean of its RGB), in [0, 1]."""

  name = "saliency"
  storage_dtype = np.float16
  label_channels = 0
  headline = "abs"


@pytest.fixture
def saliency():
  tasks.register(Saliency)
  yield Saliency
  tasks.unregister(Saliency.name)


def _write_records(data_dir: str, counts: dict) -> None:
  rng = np.random.default_rng(0)
  splits = {}
  for split, n in counts.items():
    records = []
    for i in range(n):
      # smooth blobs, so brightness is learnable from a neighbourhood
      yy, xx = np.mgrid[0:H, 0:W] / np.array([H, W])[:, None, None]
      cy, cx = rng.random(2)
      blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 0.05)
      image = (255 * blob[..., None] * rng.uniform(0.5, 1.0, 3)).astype(np.uint8)
      semseg = (blob > 0.5).astype(np.int16)
      labels = {"semseg": semseg, "saliency": image.mean(-1) / 255.0}
      records.append(schema.encode_example(f"{split}/{i:03d}", image, labels))
    splits[split] = schema.write_split(data_dir, split, records, num_shards=1)
  schema.write_manifest(data_dir, schema.Manifest(
      dataset="custom", height=H, width=W, tasks=("semseg", "saliency"), num_classes=2,
      class_names=("background", "blob"), depth_unit="metres", splits=splits))


def test_a_task_defined_outside_the_library_trains_evaluates_and_exports(saliency, tmp_path):
  data_dir, model_dir = str(tmp_path / "data"), str(tmp_path / "run")
  _write_records(data_dir, {"train": 16, "val": 4})
  cfg = ExperimentConfig.from_flat(
      dataset="custom", data_dir=data_dir, model_dir=model_dir, tasks=("semseg", "saliency"),
      num_classes=2, height=H, width=W, width_multiplier=0.125, student_channels=16,
      method="sd_mtcnn", distill="eq5", batch_size=4, epochs=2, eval_batch_size=2,
      learning_rate=1e-3, verbose=0).validate()
  metrics = train.train(cfg)
  for key in ("teacher_saliency_abs", "student_saliency_abs", "kd_saliency_loss",
              "hint_saliency_l5_loss", "student_saliency_loss"):
    assert np.isfinite(metrics[key]), key
  # brightness is in [0, 1]: a trained model's error is well below predicting 0 everywhere
  assert metrics["teacher_saliency_abs"] < 0.5
  again = evaluate.run(model_dir)
  assert again["teacher_saliency_abs"] == pytest.approx(metrics["teacher_saliency_abs"], rel=1e-5)
  with open(os.path.join(model_dir, "results", "metrics.json")) as f:
    assert "student_saliency_abs" in json.load(f)
  _, network, _ = experiment.load_trained(model_dir)
  path = export.export_role(network.student, cfg, str(tmp_path / "export" / "1"))
  served = tf.saved_model.load(path).signatures[export.SIGNATURE](
      image=tf.zeros((1, H, W, 3), tf.uint8))
  assert served["saliency"].shape == (1, H, W)
