"""The task classes and their registry: what the rest of the library asks a task."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import make_task

from sdmtcnn_tf import tasks

BUILT_IN = ("semseg", "depth", "normals", "keypoints", "edges")


def test_registry_order_and_errors():
  assert tasks.names()[:5] == BUILT_IN
  assert tasks.canonical(["edges", "semseg"]) == ("semseg", "edges")
  with pytest.raises(ValueError, match="unknown task.*sky"):
    tasks.canonical(["semseg", "sky"])
  with pytest.raises(ValueError, match="repeated"):
    tasks.canonical(["depth", "depth"])
  with pytest.raises(TypeError):
    tasks.register(int)


@pytest.mark.parametrize("name", BUILT_IN)
def test_random_labels_decode_shapes_losses_and_pictures(name):
  task = make_task(name, num_classes=4)
  label = task.random_label(np.random.default_rng(0), 2, 8, 12)
  # the decoded-label convention: class maps [B, H, W], the others [B, H, W, C]
  assert label.shape[:3] == (2, 8, 12)
  assert (label.ndim == 3) == task.uses_classes
  assert task.check_label(label, 4) is None
  pred = np.random.default_rng(1).normal(size=(2, 8, 12, task.channels)).astype(np.float32)
  if task.activation == "l2_normalize":
    pred /= np.linalg.norm(pred, axis=-1, keepdims=True)
  total, count = task.loss(label, pred)
  assert np.isfinite(float(total)) and float(count) > 0
  # the saved maps and their colours
  picture = task.colourise(task.prediction_map(pred[0]))
  assert picture.shape == (8, 12, 3) and picture.dtype == np.uint8
  assert task.label_map(label[0]).shape == task.prediction_map(pred[0]).shape


def test_each_task_names_its_label_problems():
  assert "outside -1..3" in make_task("semseg", 4).check_label(np.array([[0, 7]]), 4)
  assert "negative" in make_task("depth").check_label(np.array([[1.0, -2.0]]), 13)
  assert "NaN" in make_task("edges").check_label(np.array([[np.nan]]), 13)


def test_the_constant_predictors():
  semseg = make_task("semseg", 3).constant_fit()
  semseg.update(np.array([[[0, 2, 2, -1]]]))
  assert np.argmax(semseg.prediction()) == 2
  depth = make_task("depth").constant_fit()
  depth.update(np.array([[[[0.0], [2.0], [4.0]]]]))  # 0 = invalid, not averaged
  assert depth.prediction() == pytest.approx([3.0])
  normals = make_task("normals").constant_fit()
  normals.update(np.array([[[[0.0, 0.0, 2.0], [0.0, 0.0, 0.0]]]]))
  assert normals.prediction() == pytest.approx([0.0, 0.0, 1.0])
