"""Fidelity flags (issue 20.5): each exists with its paper-faithful default, maps into the config,
has its effect, and an old config.json keeps the value its run had. Also the CityScapes
flagfile's legacy batch."""

from __future__ import annotations

import dataclasses
import json
import math

import keras
import numpy as np
import pytest
import tensorflow as tf
from absl import flags

from sdmtcnn_tf import config as config_lib
from sdmtcnn_tf import experiment, train
from sdmtcnn_tf.config import ExperimentConfig
from sdmtcnn_tf.data import pipeline, schema, taskonomy_units
from sdmtcnn_tf.methods.traditional_kd import check_teacher
from sdmtcnn_tf.models import layers as L
from sdmtcnn_tf.models.build import build_network
from sdmtcnn_tf.report import runs as runs_lib
from sdmtcnn_tf.report import table
from tests import test_datasets_taskonomy as taskonomy_fixture
from tests.conftest import REPO

FIDELITY = {  # flag -> (group, paper-faithful default, a non-default value)
    "adam_epsilon": ("optim", 1e-8, 1e-3),
    "kernel_initializer": ("model", "xavier_normal", "glorot_normal"),
    "taskonomy_label_units": ("data", "standley", "converted"),
}


def _parse(*argv: str) -> ExperimentConfig:
  values = flags.FlagValues()
  config_lib.define_flags(values)
  values(["prog", *argv])
  return config_lib.from_flags(values)


# ---- the flags ------------------------------------------------------------------------------
def test_each_flag_has_its_paper_default_and_maps_into_its_group():
  default, given = _parse(), _parse(*(f"--{k}={v[2]}" for k, v in FIDELITY.items()))
  for name, (group, paper, other) in FIDELITY.items():
    assert config_lib.FLAG_FIELDS[name][0] == group
    assert default.flag_value(name) == paper and given.flag_value(name) == other, name
  assert given.optim.adam_epsilon == 1e-3 and given.model.kernel_initializer == "glorot_normal"
  with pytest.raises(ValueError, match=r"^--adam_epsilon: expected a finite value > 0"):
    ExperimentConfig.from_flat(adam_epsilon=0.0).validate()


def test_taskonomy_units_apply_to_taskonomy_only():
  assert ExperimentConfig.from_flat(dataset="taskonomy").data.label_units == "standley"
  assert ExperimentConfig.from_flat(dataset="taskonomy", taskonomy_label_units="converted"
                                    ).data.label_units == "converted"
  for dataset in ("synthetic", "nyuv2", "cityscapes", "custom"):
    assert ExperimentConfig.from_flat(dataset=dataset).data.label_units == "converted"


def test_an_old_config_json_keeps_the_values_its_run_had():
  """A config.json written before the flags existed ran with Keras' epsilon and truncated
  init (and, for Taskonomy, the converted units); it loads as it ran, and resuming it with
  the new defaults is refused, naming the flags."""
  for dataset, optimizer in (("taskonomy", "adam"), ("synthetic", "sgd")):
    raw = ExperimentConfig.from_flat(dataset=dataset, optimizer=optimizer).to_json()
    for name in FIDELITY:
      del raw[name]
    cfg = ExperimentConfig.from_json(raw)
    assert cfg.model.kernel_initializer == "glorot_normal"
    # an SGD run never read Adam's epsilon; a non-Taskonomy run never read the units
    assert cfg.optim.adam_epsilon == (1e-7 if optimizer == "adam" else 1e-8)
    assert cfg.data.taskonomy_label_units == ("converted" if dataset == "taskonomy"
                                              else "standley")
  # a config.json that has them keeps them
  new = ExperimentConfig.from_flat(dataset="taskonomy").validate()
  assert ExperimentConfig.from_json(json.loads(json.dumps(new.to_json()))) == new


def test_resuming_an_old_run_with_the_new_defaults_names_the_flags(tmp_path):
  cfg = ExperimentConfig.from_flat(dataset="taskonomy", model_dir=str(tmp_path)).validate()
  raw = cfg.to_json()
  for name in FIDELITY:
    del raw[name]
  (tmp_path / config_lib.CONFIG_NAME).write_text(json.dumps(raw))
  with pytest.raises(ValueError, match=r"different config \(fields \['adam_epsilon', "
                                       r"'kernel_initializer', 'taskonomy_label_units'\]\)"):
    train._check_same_run(cfg, str(tmp_path))
  train._check_same_run(cfg.replace(adam_epsilon=1e-7, kernel_initializer="glorot_normal",
                                    taskonomy_label_units="converted"), str(tmp_path))


# ---- Adam's epsilon -------------------------------------------------------------------------
@pytest.mark.parametrize("epsilon", [1e-8, 1e-7, 1e-3])
def test_adam_epsilon_reaches_the_update(epsilon):
  """One step of make_optimizer's Adam (its fused kernel) on gradients small enough for the
  epsilon to matter, against Keras' Adam formula in float64."""
  cfg = ExperimentConfig.from_flat(adam_epsilon=epsilon).validate()
  optimizer = experiment.make_optimizer(cfg)
  assert optimizer.epsilon == epsilon
  variable = keras.Variable(np.zeros(4, np.float32))
  grad = np.array([1e-9, 1e-7, 1e-5, -1.0])
  optimizer.apply_gradients([(tf.constant(grad, tf.float32), variable)])
  b1, b2, lr = 0.9, 0.999, cfg.optim.learning_rate
  # step 1: m = (1 - b1) g, v = (1 - b2) g^2, w -= lr sqrt(1 - b2) / (1 - b1) m / (sqrt(v) + eps)
  expected = -lr * math.sqrt(1 - b2) / (1 - b1) * ((1 - b1) * grad) / (
      np.sqrt((1 - b2) * grad ** 2) + epsilon)
  np.testing.assert_allclose(variable.numpy(), expected, rtol=1e-5)


# ---- the kernel initializer -----------------------------------------------------------------
def _kernels(kind: str) -> dict:
  keras.utils.set_random_seed(0)
  cfg = ExperimentConfig.from_flat(height=32, width=32, width_multiplier=0.25,
                                   kernel_initializer=kind).validate()
  model = build_network(cfg).model
  return {name: model.get_layer(name).kernel.numpy()
          for name in ("enc5_2_conv", "semseg_dec1_1_conv", "teacher_depth_conv3")}


def test_the_flag_picks_an_untruncated_or_truncated_normal_of_xavier_std():
  """xavier_normal (the default, MTAN's nn.init.xavier_normal_): std sqrt(2 / (fan_in +
  fan_out)) with normal tails (beyond 2.5 std: 1.24% of a normal's values); glorot_normal
  (Keras'): the same std, nothing beyond 2.27 std."""
  untruncated, truncated = _kernels("xavier_normal"), _kernels("glorot_normal")
  for name, kernel in untruncated.items():
    k_h, k_w, c_in, c_out = kernel.shape
    std = math.sqrt(2.0 / (k_h * k_w * (c_in + c_out)))
    for values in (kernel, truncated[name]):
      assert abs(values.std() / std - 1) < 0.05, name
      assert abs(values.mean()) < 0.05 * std, name
    beyond = np.abs(kernel) > 2.5 * std
    if kernel.size > 100_000:  # enc5_2: 147,456 values; the others too few for the tail rate
      assert 0.009 < beyond.mean() < 0.016, beyond.mean()
    assert np.abs(kernel).max() > 2.3 * std, name
    assert np.abs(truncated[name]).max() < 2.28 * std, name


def test_kernel_initializer_outside_a_build_is_mtans():
  assert isinstance(L.kernel_initializer(), keras.initializers.VarianceScaling)
  assert L.kernel_initializer().get_config()["distribution"] == "untruncated_normal"
  with L.kernel_initializer_scope("glorot_normal"):
    assert isinstance(L.kernel_initializer(), keras.initializers.GlorotNormal)
  assert L.kernel_initializer().get_config()["distribution"] == "untruncated_normal"
  with pytest.raises(ValueError, match="--kernel_initializer=he_normal: expected"):
    with L.kernel_initializer_scope("he_normal"):
      pass


# ---- Taskonomy label units ------------------------------------------------------------------
@pytest.fixture(scope="module")
def taskonomy_records(tmp_path_factory):
  """Two buildings of 64x64 Taskonomy PNGs (the converter test's fixture) converted to 32x32:
  (records folder, raw arrays by "<building>/<stem>")."""
  root = tmp_path_factory.mktemp("taskonomy")
  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(taskonomy_fixture, "S", 64)
    patch.setattr(taskonomy_fixture, "OUT", 32)
    arrays = taskonomy_fixture.write_tree(str(root / "src"))
    out = str(root / "out")
    assert taskonomy_fixture.convert(str(root / "src"), out, "--train_buildings=bA",
                                     "--val_buildings=bB") == 0
  return out, arrays


def _val_examples(cfg, out):
  manifest = schema.read_manifest(out)
  ds = experiment.dataset(cfg, manifest, experiment.EVAL_SPLIT, training=False, batch_size=1,
                          with_keys=True)
  return [(k.numpy()[0].decode(), {t: v.numpy()[0] for t, v in labels.items()})
          for k, _, labels in ds]


def test_standley_units_are_taskgroupings_scaling_of_the_png_values(taskonomy_records):
  """Through experiment.dataset (what training and evaluation read): depth (z - 1500) / 1000
  where 0 < z < 8192 else 0 (invalid), keypoints (k - 50) / 100, edges (e - 718) / 1070, of
  the PNG values; normals and semseg as converted; --taskonomy_label_units=converted keeps
  metres and PNG / 65535."""
  out, arrays = taskonomy_records
  base = ExperimentConfig.from_flat(dataset="taskonomy", data_dir=out, num_classes=17,
                                    height=32, width=32,
                                    tasks=("semseg", "depth", "normals", "keypoints", "edges"))
  standley = _val_examples(base.validate(), out)
  converted = _val_examples(base.replace(taskonomy_label_units="converted"), out)
  assert len(standley) == 3
  for (key, got), (_, stored) in zip(standley, converted):
    z = arrays[key.split("/", 1)[1]]["depth"][1::2, 1::2, None].astype(np.float64)
    np.testing.assert_allclose(stored["depth"], np.where(z == 65535, 0, z / 512), rtol=1e-6)
    valid = (z > 0) & (z < 8192) & (z != 1500)
    assert 0 < valid.mean() < 0.5  # the fixture's z spans 0..40000: most beyond 16 m
    np.testing.assert_allclose(got["depth"], np.where(valid, (z - 1500) / 1000, 0),
                               rtol=1e-6, atol=1e-6)
    assert got["depth"].min() < 0  # nearer than 2.93 m
    for task, (offset, divisor) in (("keypoints", (50, 100)), ("edges", (718, 1070))):
      png = stored[task].astype(np.float64) * 65535
      np.testing.assert_allclose(got[task], (png - offset) / divisor, rtol=1e-5, atol=1e-5)
    for task in ("semseg", "normals"):
      np.testing.assert_array_equal(got[task], stored[task])

def test_standley_units_apply_after_the_zoom_in_metres(taskonomy_records):
  """Augmentation divides metres by the zoom; the units come after it (Standley's values are
  not proportional to depth): the same draws in converted units, then standardised."""
  out, _ = taskonomy_records
  cfg = ExperimentConfig.from_flat(dataset="taskonomy", data_dir=out, num_classes=17,
                                   height=32, width=32, tasks=("depth",), augment=True,
                                   deterministic=True).validate()
  manifest = schema.read_manifest(out)

  def two_epochs(cfg):
    ds = experiment.dataset(cfg, manifest, experiment.TRAIN_SPLIT, training=True, batch_size=1)
    return [labels["depth"].numpy()[0] for _ in range(2) for _, labels in ds]

  metres = two_epochs(cfg.replace(taskonomy_label_units="converted"))
  zoomed = [m for m in metres if np.any(np.abs(m * 512 - np.round(m * 512)) > 1e-3)]
  assert zoomed, "no draw zoomed (scale 1.2 or 1.5)"
  for m, got in zip(metres, two_epochs(cfg)):
    png = m.astype(np.float64) * 512
    want = np.where((m > 0) & (png < 8192), (png - 1500) / 1000, 0)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_standley_units_need_taskonomy_records(taskonomy_records):
  out, _ = taskonomy_records
  manifest = dataclasses.replace(schema.read_manifest(out), dataset="nyuv2")
  with pytest.raises(schema.SchemaError, match=r"--taskonomy_label_units=standley needs records "
                     r"written by datasets.taskonomy, but .*manifest.json holds a 'nyuv2'"):
    pipeline.make_dataset(out, manifest, "val", ["depth"], 1, training=False,
                          label_units="standley")


def test_a_kd_teacher_must_predict_in_the_students_units():
  student = ExperimentConfig.from_flat(dataset="taskonomy", method="traditional_kd",
                                       distill="eq5").validate()
  teacher = ExperimentConfig.from_flat(dataset="taskonomy", taskonomy_label_units="converted")
  with pytest.raises(ValueError, match=r"label units: teacher 'converted' vs this run "
                                       r"'standley' \(--taskonomy_label_units\)"):
    check_teacher(teacher, student)
  check_teacher(teacher.replace(taskonomy_label_units="standley"), student)
  # the flag does nothing outside Taskonomy
  check_teacher(teacher.replace(dataset="nyuv2"), student.replace(dataset="nyuv2",
                                                                  taskonomy_label_units="standley"))


def test_report_headers_name_the_units(tmp_path):
  def group(name, **flat):
    cfg = ExperimentConfig.from_flat(tasks=("semseg", "depth", "keypoints", "edges"),
                                     **flat).validate()
    return runs_lib.Group(name, [runs_lib.Run(str(tmp_path / name), cfg, {})])

  titles = lambda groups: [c.title for c in table.columns(groups)]
  assert titles([group("a", dataset="taskonomy")]) == [
      "pixacc", "mIoU", "depth abs (Standley: (z-1500)/1000)",
      "depth rel (Standley: (z-1500)/1000)", "keypoints abs (Standley: (k-50)/100)",
      "edges abs (Standley: (e-718)/1070)"]
  converted = group("b", dataset="taskonomy", taskonomy_label_units="converted")
  assert titles([converted])[2:] == ["depth abs (m)", "depth rel (m)", "keypoints abs",
                                     "edges abs"]
  assert titles([group("c", dataset="synthetic")])[2] == "depth abs"  # unchanged elsewhere
  with pytest.raises(ValueError, match=r"the runs hold depth labels in different units \("
                                       r"Standley: \(z-1500\)/1000 in a; m in b\)"):
    table.columns([group("a", dataset="taskonomy"), converted])
  assert taskonomy_units.unit("depth", converted.cfg.data) == "m"


# ---- CityScapes evaluation batch ------------------------------------------------------------
@pytest.mark.parametrize("flagfile", ["base_cityscapes", "cityscapes_vanilla",
                                      "cityscapes_sd_mtcnn_eq5_full"])
def test_cityscapes_legacy_metrics_use_batches_of_8(flagfile, monkeypatch):
  """The SD-MTCNN authors' draft evaluates CityScapes with its training batch, 8 (MTAN's
  scripts: one batch_size for both loaders); NYUv2 stays at MTAN's 2."""
  monkeypatch.chdir(REPO)
  cfg = config_lib.parse_flagfile(f"configs/{flagfile}.flags")
  assert cfg.data.legacy_batch_size == 8 == cfg.optim.batch_size
  assert cfg.data.eval_batch_size % cfg.data.legacy_batch_size == 0
  assert config_lib.parse_flagfile("configs/base_nyuv2.flags").data.legacy_batch_size == 2
