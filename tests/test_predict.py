"""Prediction figures: the grid's layout and colours (visualize.py), the TensorBoard images
(callbacks.PredictionImages), and `python -m sdmtcnn_tf.predict` on the smoke run's records,
raw images and export, and on an image it cannot decode."""

from __future__ import annotations

import glob
import math
import os

import numpy as np
import pytest
from PIL import Image

from tests.conftest import assert_one_error_line, make_task, random_batch, run_module

from sdmtcnn_tf import visualize
from sdmtcnn_tf.tasks.semseg import PALETTE

CLASS_NAMES = tuple(f"c{i}" for i in range(5))


def _colours(pixels) -> set:
  return {tuple(int(c) for c in p) for p in np.asarray(pixels).reshape(-1, 3)}


def _expected_size(height, width, tasks, columns, classes):
  """The grid's pixel size from the layout the module docstring describes, worked out here."""
  zoom = math.ceil(visualize.MIN_PANEL / min(height, width))
  per_column = (height * zoom) // visualize.LEGEND_LINE
  key = max(visualize.SCALE_W, math.ceil(classes / per_column) * visualize.LEGEND_COLUMN_W)
  return (tasks * (visualize.TITLE_H + height * zoom + visualize.PAD),
          columns * (width * zoom + visualize.PAD) + key)


def test_the_grid_has_its_size_palette_colours_one_depth_scale_and_error_maps():
  tasks = [make_task("semseg", 5), make_task("depth"), make_task("normals")]
  rng = np.random.default_rng(0)
  image = rng.integers(0, 256, (20, 24, 3), np.uint8)
  semseg = rng.integers(-1, 5, (20, 24)).astype(np.int32)
  depth = rng.uniform(1.0, 4.0, (20, 24)).astype(np.float32)
  depth[0, :] = 0.0  # no depth
  normals = rng.normal(size=(20, 24, 3)).astype(np.float32)
  normals /= np.linalg.norm(normals, axis=-1, keepdims=True)
  truth = {"semseg": semseg, "depth": depth, "normals": normals}
  teacher = {"semseg": np.where(semseg < 0, 0, semseg), "depth": depth * 2.0, "normals": normals}
  student = {"semseg": np.zeros_like(semseg), "depth": depth, "normals": -normals}
  pixels, pieces = visualize.grid(tasks, image, truth, {"teacher": teacher, "student": student},
                                  CLASS_NAMES)
  assert pixels.shape == (*_expected_size(20, 24, 3, 6, 5), 3)
  palette = _colours(PALETTE)
  zoom = 5  # ceil(96 / 20)
  left = 2 * (24 * zoom + visualize.PAD)  # input, truth, then the teacher's prediction
  panel = pixels[visualize.TITLE_H:visualize.TITLE_H + 20 * zoom, left:left + 24 * zoom]
  assert _colours(panel) <= palette and len(_colours(panel)) == 5
  assert np.array_equal(panel[::zoom, ::zoom], PALETTE[teacher["semseg"]])
  assert _colours(pieces[("semseg", "truth")]) <= palette | {(0, 0, 0)}  # ignore: black
  # one colour scale for the depth row: the same depth has the same colour in truth and student
  assert np.array_equal(pieces[("depth", "truth")], pieces[("depth", "student")])
  assert not np.array_equal(pieces[("depth", "truth")], pieces[("depth", "teacher")])
  assert _colours(pieces[("depth", "truth")][0]) == {(0, 0, 0)}
  # error maps: a perfect prediction is all the colour of 0, a wrong one brighter
  zero = tuple(visualize.heat(np.zeros(1))[0])
  assert _colours(pieces[("normals", "teacher error")]) == {zero}
  assert _colours(pieces[("semseg", "student error")]) >= {zero}
  student_angle = tasks[2].error_map(student["normals"], normals)
  assert np.allclose(student_angle, 180.0, atol=0.1)
  wrong = tasks[0].error_map(student["semseg"], semseg)
  assert np.isnan(wrong[semseg < 0]).all() and (wrong[semseg > 0] == 1).all()
  assert (wrong[semseg == 0] == 0).all()
  # without a ground truth: input and predictions only
  bare, _ = visualize.grid(tasks[:1], image, None, {"teacher": teacher}, CLASS_NAMES)
  assert bare.shape == (*_expected_size(20, 24, 1, 2, 5), 3)


def test_tensorboard_gets_prediction_images_every_n_epochs(tmp_path):
  import tensorflow as tf
  from sdmtcnn_tf import callbacks, experiment
  from sdmtcnn_tf.config import ExperimentConfig
  cfg = ExperimentConfig.from_flat(height=32, width=32, width_multiplier=0.125,
                                   student_channels=16, num_classes=5, method="sd_mtcnn",
                                   distill="eq5")
  _, model = experiment.build_model(cfg)
  image, labels = random_batch(cfg, n=3)
  val_ds = tf.data.Dataset.from_tensor_slices((image, labels)).batch(2)
  callback = callbacks.PredictionImages(str(tmp_path), val_ds, cfg.task_specs, CLASS_NAMES,
                                        every=2, count=2)
  callback.set_model(model)
  callback.on_train_begin()
  for epoch in range(4):
    callback.on_epoch_end(epoch)
  callback.on_train_end()
  found = []
  for path in glob.glob(str(tmp_path / "images" / "events.out.tfevents.*")):
    for event in tf.compat.v1.train.summary_iterator(path):
      for value in event.summary.value:
        png = tf.io.decode_png(tf.make_ndarray(value.tensor)[2]).numpy()
        found.append((event.step, value.tag, png.shape))
  # roles teacher and student, with truth: input, truth, T, T error, S, S error
  shape = (*_expected_size(32, 32, 3, 6, 5), 3)
  assert sorted(found) == [(2, "predictions/0", shape), (2, "predictions/1", shape),
                           (4, "predictions/0", shape), (4, "predictions/1", shape)]


def test_image_summaries_are_off_by_default_and_checked():
  from sdmtcnn_tf.config import ExperimentConfig
  assert ExperimentConfig().run.image_summary_every == 0
  with pytest.raises(ValueError, match="image_summary_every"):
    ExperimentConfig.from_flat(image_summary_every=-1).validate()


@pytest.mark.slow
def test_training_writes_prediction_images_to_tensorboard(smoke_run):
  import tensorflow as tf
  steps = {}
  for path in glob.glob(os.path.join(smoke_run, "logs", "images", "events.out.tfevents.*")):
    for event in tf.compat.v1.train.summary_iterator(path):
      for value in event.summary.value:
        steps.setdefault(event.step, set()).add(value.tag)
  # the smoke run: 16 epochs, --image_summary_every=8 (conftest), 3 fixed validation examples
  assert steps == {8: {"predictions/0", "predictions/1", "predictions/2"},
                   16: {"predictions/0", "predictions/1", "predictions/2"}}


def test_predict_writes_grids_of_records_images_and_exports(smoke_run, smoke_data_dir, tmp_path):
  from sdmtcnn_tf import export, predict
  from sdmtcnn_tf.data import schema
  out = tmp_path / "records"
  written = predict.run(str(out), model_dir=smoke_run, data_dir=smoke_data_dir, count=2,
                        separate=True)
  grids = sorted(glob.glob(str(out / "*.png")))
  assert len(grids) == 2 and set(grids) <= set(written)
  classes = schema.read_manifest(smoke_data_dir).num_classes
  # the smoke run: vanilla (teacher only), semseg + depth + normals at 32x64
  grid = np.asarray(Image.open(grids[0]).convert("RGB"))
  assert grid.shape == (*_expected_size(32, 64, 3, 4, classes), 3)
  stem = os.path.splitext(grids[0])[0]
  separate = np.asarray(Image.open(os.path.join(stem, "teacher_semseg.png")))
  assert separate.shape == (32, 64, 3) and _colours(separate) <= _colours(PALETTE)
  zoom, left = 3, 2 * (64 * 3 + visualize.PAD)
  panel = grid[visualize.TITLE_H:visualize.TITLE_H + 32 * zoom, left:left + 64 * zoom]
  assert np.array_equal(panel[::zoom, ::zoom], separate)
  assert sorted(os.listdir(stem)) == sorted(
      ["input.png"] + [f"{c}_{t}.png" for c in ("truth", "teacher", "teacher_error")
                       for t in ("semseg", "depth", "normals")])

  # raw images of another size, through the run and through its export
  photos = tmp_path / "photos"
  photos.mkdir()
  rng = np.random.default_rng(1)
  Image.fromarray(rng.integers(0, 256, (50, 70, 3), np.uint8)).save(photos / "a.jpg")
  Image.fromarray(rng.integers(0, 256, (300, 200, 3), np.uint8)).save(photos / "b.png")
  predict.run(str(tmp_path / "raw"), model_dir=smoke_run, images=str(photos / "*"))
  raw = np.asarray(Image.open(tmp_path / "raw" / "a.png").convert("RGB"))
  assert raw.shape == (*_expected_size(32, 64, 3, 2, classes), 3)  # at the training size
  export.run(smoke_run, role="teacher", overwrite=True)
  predict.run(str(tmp_path / "exported"), export_dir=os.path.join(smoke_run, "export"),
              images=str(photos / "*"))
  served = np.asarray(Image.open(tmp_path / "exported" / "b.png").convert("RGB"))
  # shrunk to at most MAX_SIDE pixels, predicted at that size
  h, w = 256, round(200 * 256 / 300)
  assert served.shape == (*_expected_size(h, w, 3, 2, classes), 3)


def test_an_image_that_cannot_be_decoded_is_one_error_naming_it(tmp_path):
  (tmp_path / "good.png").write_bytes(visualize.png_bytes(np.zeros((8, 8, 3), np.uint8)))
  (tmp_path / "broken.jpg").write_bytes(b"not a jpeg")
  proc = run_module("sdmtcnn_tf.predict", f"--model_dir={tmp_path}",
                    f"--images={tmp_path / '*'}", f"--out={tmp_path / 'out'}", check=False)
  assert_one_error_line(proc, str(tmp_path / "broken.jpg"), "not a decodable image")
  proc = run_module("sdmtcnn_tf.predict", f"--export_dir={tmp_path}",
                    f"--images={tmp_path / 'good.png'}", f"--out={tmp_path / 'out'}",
                    check=False)
  assert_one_error_line(proc, f"--export_dir={tmp_path} holds no SavedModel")
