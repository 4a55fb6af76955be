"""Self-distillation: which terms exist, where their gradients go, the zero-weight reduction to
Baseline-1, and replica invariance of one training step."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from tests.conftest import REPO

from sdmtcnn_tf import experiment
from sdmtcnn_tf.config import ExperimentConfig

TASKS = ("semseg", "depth", "normals")


def _cfg(**kw) -> ExperimentConfig:
  base = dict(height=32, width=32, width_multiplier=0.125, student_channels=16, num_classes=5,
              seed=3)
  return ExperimentConfig(**{**base, **kw}).validate()


def _batch(cfg, n=2, seed=0):
  rng = np.random.default_rng(seed)
  image = rng.random((n, cfg.height, cfg.width, 3)).astype(np.float32)
  normals = rng.normal(size=(n, cfg.height, cfg.width, 3)).astype(np.float32)
  normals /= np.linalg.norm(normals, axis=-1, keepdims=True)
  labels = {"semseg": rng.integers(-1, cfg.num_classes, (n, cfg.height, cfg.width)).astype(np.int32),
            "depth": rng.uniform(0, 5, (n, cfg.height, cfg.width, 1)).astype(np.float32),
            "normals": normals}
  return image, labels


def _group(path: str) -> str:
  """Variable path -> the part of the network it belongs to."""
  name = path.split("/")[0]
  if name.startswith("enc"):
    return "encoder"
  for task in TASKS:
    if name.startswith(f"{task}_dec"):
      return f"decoder_{task}"
    if name.startswith(f"teacher_{task}"):
      return f"teacher_head_{task}"
    if name.startswith(f"student_{task}"):
      return f"student_head_{task}"
    if name.startswith(f"adapt_{task}"):
      return f"adaptation_{task}"
  raise AssertionError(f"unclassified variable {path}")


def _reached(model, image, labels) -> dict:
  """Term name -> set of network parts whose variables get a non-zero gradient."""
  with tf.GradientTape(persistent=True) as tape:
    outputs = model(image, training=True)
    values = model.compute_terms(labels, outputs)
  reached = {}
  for name, value in values.items():
    grads = tape.gradient(value, model.trainable_variables)
    reached[name] = {_group(v.path) for g, v in zip(grads, model.trainable_variables)
                     if g is not None and float(tf.reduce_max(tf.abs(g))) > 0}
  return reached


@pytest.mark.parametrize("method", ["vanilla", "sd_vanilla_eq5", "sd_vanilla_eq6", "sd_mtcnn_eq5",
                                   "sd_mtcnn_eq6", "sd_mtcnn_both_full", "traditional_kd"])
def test_each_method_has_its_loss_terms(method):
  name, _, variant = method.rpartition("_") if method not in ("vanilla", "traditional_kd") \
      else (method, "", "")
  full = variant == "full"
  if full:
    name, _, variant = name.rpartition("_")
  distill = variant or ("eq5" if method == "traditional_kd" else "none")
  cfg = _cfg(method=name, distill=distill, full=full)
  network, model = experiment.build_model(cfg)
  names = [t.name for t in model.terms]
  teacher = [f"teacher_{t}_loss" for t in TASKS]
  student = [f"student_{t}_loss" for t in TASKS]
  kd = [f"kd_{t}_loss" for t in TASKS]
  hints = [f"hint_{t}_l{l}_loss" for t in TASKS for l in cfg.resolved_hint_levels]
  expected = {
      "vanilla": teacher,
      "traditional_kd": student + kd,
      "eq5": teacher + student + kd,
      "eq6": teacher + student + hints,
      "both": teacher + student + kd + hints,
  }[method if method in ("vanilla", "traditional_kd") else distill]
  assert names == expected
  if full:
    assert cfg.resolved_hint_levels == (1, 2, 3, 4, 5)
  # every term has its own tracker, exposed through `metrics` (progress bar, TensorBoard)
  assert set(names) | {"loss"} <= {m.name for m in model.metrics}


def test_gradient_flow_of_every_term():
  cfg = _cfg(method="sd_mtcnn", distill="both")
  _, model = experiment.build_model(cfg)
  reached = _reached(model, *_batch(cfg))
  for task in TASKS:
    assert reached[f"teacher_{task}_loss"] == {"encoder", f"decoder_{task}",
                                                f"teacher_head_{task}"}
    assert reached[f"student_{task}_loss"] == {"encoder", f"student_head_{task}"}
    # output distillation: the teacher's prediction is a fixed target (stop-gradient)
    assert reached[f"kd_{task}_loss"] == {"encoder", f"student_head_{task}"}
    # feature hint: moves the encoder and the adaptation layer, never the decoder
    assert reached[f"hint_{task}_l5_loss"] == {"encoder", f"adaptation_{task}"}


def test_two_way_lets_distillation_reach_the_teacher():
  cfg = _cfg(method="sd_mtcnn", distill="both", two_way=True)
  _, model = experiment.build_model(cfg)
  reached = _reached(model, *_batch(cfg))
  assert "decoder_semseg" in reached["kd_semseg_loss"]
  assert "teacher_head_semseg" in reached["kd_semseg_loss"]
  assert "decoder_depth" in reached["hint_depth_l5_loss"]


def test_hints_reach_only_encoder_stages_up_to_their_level():
  cfg = _cfg(method="sd_mtcnn", distill="eq6", hint_levels=(2,))
  _, model = experiment.build_model(cfg)
  image, labels = _batch(cfg)
  with tf.GradientTape() as tape:
    values = model.compute_terms(labels, model(image, training=True))
  grads = tape.gradient(values["hint_semseg_l2_loss"], model.trainable_variables)
  stages = {v.path.split("_")[0] for g, v in zip(grads, model.trainable_variables)
            if g is not None and v.path.startswith("enc") and float(tf.reduce_max(tf.abs(g))) > 0}
  assert stages == {"enc1", "enc2"}


def test_frozen_teacher_of_traditional_kd_gets_no_update(tmp_path):
  cfg = _cfg(method="traditional_kd", distill="eq5")
  network, model = experiment.build_model(cfg)
  teacher_before = [w.numpy().copy() for w in network.teacher.weights]
  experiment.compile_model(model, cfg)
  image, labels = _batch(cfg, n=4)
  model.fit(tf.data.Dataset.from_tensor_slices((image, labels)).batch(2), epochs=1, verbose=0)
  for before, after in zip(teacher_before, network.teacher.weights):
    np.testing.assert_array_equal(before, after.numpy())
  assert network.teacher.trainable_weights == []


def test_zero_distillation_weights_reduce_to_the_vanilla_loss():
  vanilla_cfg = _cfg()
  sd_cfg = _cfg(method="sd_mtcnn", distill="both", full=True, alpha=0.0, hint_weight=0.0,
                student_gt_weight=0.0)
  vanilla_net, vanilla = experiment.build_model(vanilla_cfg)
  sd_net, sd = experiment.build_model(sd_cfg)
  sd_layers = {layer.name: layer for layer in sd_net.model.layers}
  for layer in vanilla_net.model.layers:
    if layer.weights:
      sd_layers[layer.name].set_weights(layer.get_weights())
  image, labels = _batch(vanilla_cfg)
  with tf.GradientTape() as tape:
    v_total = vanilla.weighted_total(vanilla.compute_terms(labels, vanilla(image, training=True)))
  v_grads = dict(zip([v.path for v in vanilla.trainable_variables],
                     tape.gradient(v_total, vanilla.trainable_variables)))
  with tf.GradientTape() as tape:
    values = sd.compute_terms(labels, sd(image, training=True))
    s_total = sd.weighted_total(values)
  s_grads = dict(zip([v.path for v in sd.trainable_variables],
                     tape.gradient(s_total, sd.trainable_variables)))
  np.testing.assert_allclose(float(s_total), float(v_total), rtol=1e-6)
  for path, grad in v_grads.items():
    np.testing.assert_allclose(s_grads[path], grad, rtol=1e-5, atol=1e-7, err_msg=path)
  # with the default student weight (1 - alpha = 1) the total is L_T + L_S
  default = _cfg(method="sd_mtcnn", distill="eq5", alpha=0.0)
  _, model = experiment.build_model(default)
  values = model.compute_terms(labels, model(image, training=True))
  expected = sum(float(values[f"{r}_{t}_loss"]) for r in ("teacher", "student") for t in TASKS)
  assert float(model.weighted_total(values)) == pytest.approx(expected, rel=1e-6)


_MIRRORED_SCRIPT = r"""
import json, os
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
import numpy as np, tensorflow as tf
cpus = tf.config.list_physical_devices("CPU")
tf.config.set_logical_device_configuration(cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2)
from sdmtcnn_tf import experiment
from sdmtcnn_tf.config import ExperimentConfig
from tests.test_distillation import _batch
# semseg + depth: a freshly initialised normals head (unit-normalised outputs of near-zero
# vectors) takes huge SGD steps whose rounding would swamp the comparison
cfg = ExperimentConfig(height=32, width=32, width_multiplier=0.125, student_channels=16,
                       num_classes=5, tasks=("semseg", "depth"), method="sd_mtcnn", distill="both", full=True,
                       sync_batchnorm=True, optimizer="sgd", learning_rate=0.05,
                       batch_size=4).validate()
image, labels = _batch(cfg, n=4, seed=1)
labels.pop("normals")
ds = tf.data.Dataset.from_tensor_slices((image, labels)).batch(4)
def one_step(strategy, init=None):
  with strategy.scope():
    _, model = experiment.build_model(cfg)
    experiment.compile_model(model, cfg)
  if init is not None:
    model.set_weights(init)
  start = [w.copy() for w in model.get_weights()]
  logs = model.fit(ds, epochs=1, verbose=0).history
  return start, model.get_weights(), {k: float(v[0]) for k, v in logs.items()}
start, single, single_logs = one_step(tf.distribute.get_strategy())
mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
_, multi, multi_logs = one_step(mirrored, start)
print(json.dumps({"replicas": mirrored.num_replicas_in_sync,
                  "max_weight_diff": max(float(np.max(np.abs(a - b))) for a, b in zip(single, multi)),
                  "max_update": max(float(np.max(np.abs(a - b))) for a, b in zip(single, start)),
                  "single": single_logs, "multi": multi_logs}))
"""


def test_two_replicas_give_the_same_step_as_one():
  proc = subprocess.run([sys.executable, "-c", _MIRRORED_SCRIPT], cwd=REPO, capture_output=True,
                        text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-4000:]
  result = json.loads(proc.stdout.strip().splitlines()[-1])
  assert result["replicas"] == 2
  assert result["max_update"] > 1e-4  # the step did move the weights
  assert result["max_weight_diff"] < 1e-4, result  # float32 reduction order only
  assert result["single"].keys() == result["multi"].keys()
  for key, value in result["single"].items():
    assert result["multi"][key] == pytest.approx(value, rel=1e-4, abs=1e-6), key
