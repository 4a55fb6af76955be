"""A traditional_kd run depends on its teacher run only at its first start: afterwards
evaluate, export and resume read the student run's own directory. Teacher tasks are matched by
name (as a set), not by their --tasks order."""

from __future__ import annotations

import csv
import json
import os
import shutil

import numpy as np
import pytest

from tests.conftest import REPO, SMOKE_FLAGS, run_module

from sdmtcnn_tf import config as config_lib, experiment, train
from sdmtcnn_tf.methods.traditional_kd import check_teacher
from sdmtcnn_tf.models.build import build_network

KD_FLAGS = "configs/synthetic_traditional_kd.flags"
FAST = dict(epochs=1, steps_per_epoch=2, verbose=0, validation_freq=100, precise_bn_batches=0)


def _tiny_kd(**changes):
  return config_lib.parse_flagfile(KD_FLAGS, "configs/size_tiny.flags", teacher_dir="",
                                   **changes)


def test_teacher_outputs_are_matched_by_task_name_not_order(monkeypatch):
  monkeypatch.chdir(REPO)
  student = _tiny_kd(tasks=("semseg", "depth"))
  teacher = student.replace(method="vanilla", distill="none", tasks=("depth", "semseg"))
  network = build_network(student, teacher)
  out = network.model(np.zeros((1, 32, 64, 3), np.float32))
  assert out["teacher"]["semseg"].shape[-1] == student.data.num_classes
  assert out["teacher"]["depth"].shape[-1] == 1
  with pytest.raises(ValueError, match="tasks"):
    check_teacher(teacher.replace(tasks=("depth", "normals")), student)


def _teacher_outputs(model_dir, image):
  _, network, _ = experiment.load_trained(model_dir)
  return {k: np.asarray(v) for k, v in network.teacher(image, training=False).items()}


@pytest.mark.slow
def test_kd_run_survives_its_teacher_being_moved(tmp_path, smoke_data_dir, monkeypatch):
  teacher_dir = tmp_path / "teacher"
  train.train(config_lib.parse_flagfile(SMOKE_FLAGS, model_dir=str(teacher_dir),
                                        data_dir=smoke_data_dir, tasks=("depth", "semseg"),
                                        **FAST))
  image = np.random.default_rng(0).random((2, 32, 64, 3), np.float32)
  expected = _teacher_outputs(str(teacher_dir), image)

  # the student names its teacher relative to the working directory, tasks in another order
  student_dir = str(tmp_path / "student")
  cfg = _tiny_kd(model_dir=student_dir, data_dir=smoke_data_dir, tasks=("semseg", "depth"),
                 **FAST).replace(teacher_dir="teacher")
  monkeypatch.chdir(tmp_path)
  train.train(cfg)
  recorded = config_lib.load(student_dir)
  assert recorded.method.teacher_dir == str(teacher_dir)
  assert os.path.isabs(recorded.method.teacher_dir)
  with open(os.path.join(student_dir, "flags.txt")) as f:
    assert f"--teacher_dir={teacher_dir}\n" in f.read()
  with open(experiment.RunPaths(student_dir).teacher_config) as f:
    assert json.load(f)["tasks"] == ["depth", "semseg"]
  for task, value in _teacher_outputs(student_dir, image).items():
    np.testing.assert_allclose(value, expected[task], rtol=1e-5, atol=1e-5, err_msg=task)

  shutil.move(str(teacher_dir), str(tmp_path / "moved_teacher"))
  run_module("sdmtcnn_tf.evaluate", f"--model_dir={student_dir}")
  for role in ("student", "teacher"):
    run_module("sdmtcnn_tf.export", f"--model_dir={student_dir}", f"--role={role}")
    assert os.path.isdir(os.path.join(student_dir, "export", role, "1"))

  train.train(cfg.replace(epochs=2))  # resumed from the run's own backup
  with open(os.path.join(student_dir, "results", "history.csv")) as f:
    assert len(list(csv.DictReader(f))) == 2
  for task, value in _teacher_outputs(student_dir, image).items():  # still the frozen teacher
    np.testing.assert_allclose(value, expected[task], rtol=1e-5, atol=1e-5, err_msg=task)
