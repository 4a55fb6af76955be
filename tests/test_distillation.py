"""Self-distillation: which terms exist, where their gradients go, the zero-weight reduction to
Baseline-1, and replica invariance of one training step."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from tests.conftest import REPO, random_batch

from sdmtcnn_tf import experiment
from sdmtcnn_tf.config import ExperimentConfig

TASKS = ("semseg", "depth", "normals")


def _cfg(**kw) -> ExperimentConfig:
  base = dict(height=32, width=32, width_multiplier=0.125, student_channels=16, num_classes=5,
              seed=3)
  return ExperimentConfig.from_flat(**{**base, **kw}).validate()


def _group(path: str) -> str:
  """Variable path -> the part of the network it belongs to."""
  name = path.split("/")[0]
  if name.startswith("enc"):
    return "encoder"
  if name.startswith("exit"):  # SD-vanilla: exit<l>_<task>_bottleneck... / exit<l>_<task>_out
    level, task = name[len("exit"):].split("_")[:2]
    return f"exit{level}_{task}"
  for task in TASKS:
    if name.startswith(f"{task}_dec"):
      return f"decoder_{task}"
    if name.startswith(f"teacher_{task}"):
      return f"teacher_head_{task}"
    if name.startswith(f"student_{task}"):
      return f"student_head_{task}"
    if name.startswith(f"adapt_{task}"):
      return f"adaptation_{task}"
  if name.startswith("shared_dec"):
    return "decoder_shared"
  if name.startswith("adapt_shared"):
    return "adaptation_shared"
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


def _names(prefix: str, suffixes=("",)) -> list:
  return [f"{prefix}_{t}{s}_loss" for t in TASKS for s in suffixes]


# The methods of the paper's tables (METHOD.md, "Baselines" and the revised reading).
METHODS = {
    "vanilla": dict(method="vanilla", distill="none"),
    "sd_vanilla_eq5": dict(method="sd_vanilla", distill="eq5"),
    "sd_vanilla_eq6": dict(method="sd_vanilla", distill="eq6"),
    "traditional_kd": dict(method="traditional_kd", distill="eq5"),
    "sd_mtcnn_eq5": dict(method="sd_mtcnn", distill="eq5"),
    "sd_mtcnn_eq6": dict(method="sd_mtcnn", distill="eq6"),
    "sd_mtcnn_eq5_full": dict(method="sd_mtcnn", distill="eq5", full=True),
    "sd_mtcnn_eq6_full": dict(method="sd_mtcnn", distill="eq6", full=True),
}


def _term_names(kind: str) -> list:
  _, model = experiment.build_model(_cfg(**METHODS[kind]))
  return [t.name for t in model.terms]


@pytest.mark.parametrize("kind", sorted(METHODS))
def test_each_method_has_its_loss_terms(kind):
  teacher, student, kd = _names("teacher"), _names("student"), _names("kd")
  exits = [f"_e{l}" for l in (3, 4, 5)]
  by_exit = lambda *kinds: [n for e in exits for k in kinds for n in _names(k, (e,))]
  hints = lambda levels: [f"hint_{t}_l{l}_loss" for t in TASKS for l in levels]
  expected = {
      "vanilla": teacher,
      "traditional_kd": student + kd,
      "sd_vanilla_eq5": teacher + by_exit("student", "kd"),
      "sd_vanilla_eq6": teacher + by_exit("student") + by_exit("hint"),
      "sd_mtcnn_eq5": teacher + student + kd + hints((5,)),
      "sd_mtcnn_eq6": teacher + student + hints((5,)),
      "sd_mtcnn_eq5_full": teacher + student + kd + hints((1, 2, 3, 4, 5)),
      "sd_mtcnn_eq6_full": teacher + student + hints((1, 2, 3, 4, 5)),
  }[kind]
  assert _term_names(kind) == expected
  cfg = _cfg(**METHODS[kind])
  _, model = experiment.build_model(cfg)
  # every term has its own tracker, exposed through `metrics` (progress bar, TensorBoard)
  assert set(expected) | {"loss"} <= {m.name for m in model.metrics}


def test_the_methods_train_pairwise_different_losses():
  terms = {kind: frozenset(_term_names(kind)) for kind in METHODS}
  for a in METHODS:
    for b in METHODS:
      if a < b:
        assert terms[a] != terms[b], (a, b)


def test_dry_run_prints_the_loss_terms(capsys):
  from sdmtcnn_tf import train
  cfg = _cfg(**METHODS["sd_mtcnn_eq5"])
  train.dry_run(cfg)
  lines = [l for l in capsys.readouterr().out.splitlines() if l.startswith("loss term ")]
  assert lines[0] == "loss term teacher_semseg_loss weight 1"
  assert "loss term kd_depth_loss weight 0.3" in lines
  assert "loss term student_depth_loss weight 0.7" in lines
  assert "loss term hint_normals_l5_loss weight 0.333333" in lines  # λ = 1 over 3 hint pairs


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_hint_reduction_sets_the_weight_of_each_hint_pair(reduction):
  from sdmtcnn_tf import methods
  for changes in (dict(method="sd_mtcnn", distill="eq6", full=True),  # 3 tasks x 5 levels
                  dict(method="sd_vanilla", distill="eq6")):  # 3 tasks x 3 exits
    cfg = _cfg(**changes, hint_weight=0.6, hint_reduction=reduction)
    hints = [t for t in methods.get(cfg.method.name).loss_terms(cfg) if t.name.startswith("hint_")]
    assert len(hints) == (15 if changes["method"] == "sd_mtcnn" else 9)
    expected = 0.6 / len(hints) if reduction == "mean" else 0.6
    assert [t.weight for t in hints] == pytest.approx([expected] * len(hints))


def test_gradient_flow_of_every_sd_mtcnn_term():
  cfg = _cfg(method="sd_mtcnn", distill="eq5")
  _, model = experiment.build_model(cfg)
  reached = _reached(model, *random_batch(cfg))
  for task in TASKS:
    assert reached[f"teacher_{task}_loss"] == {"encoder", f"decoder_{task}",
                                                f"teacher_head_{task}"}
    assert reached[f"student_{task}_loss"] == {"encoder", f"student_head_{task}"}
    # output distillation: the teacher's prediction is a fixed target (stop-gradient)
    assert reached[f"kd_{task}_loss"] == {"encoder", f"student_head_{task}"}
    # feature hint: moves the encoder and the adaptation layer, never the decoder
    assert reached[f"hint_{task}_l5_loss"] == {"encoder", f"adaptation_{task}"}


@pytest.mark.parametrize("distill", ["eq5", "eq6"])
def test_gradient_flow_of_every_sd_vanilla_term(distill):
  cfg = _cfg(method="sd_vanilla", distill=distill)
  _, model = experiment.build_model(cfg)
  reached = _reached(model, *random_batch(cfg))
  for task in TASKS:
    for level in (3, 4, 5):
      exit_ = f"exit{level}_{task}"
      assert reached[f"student_{task}_e{level}_loss"] == {"encoder", exit_}
      extra = "kd" if distill == "eq5" else "hint"
      # the deepest outputs (eq5) or the deepest feature (eq6) teach, never move the teacher;
      # the hinted feature is the bottleneck's output (the head after it is not reached)
      assert reached[f"{extra}_{task}_e{level}_loss"] <= {"encoder", exit_}
      assert exit_ in reached[f"{extra}_{task}_e{level}_loss"]


def test_a_shared_decoder_teaches_once_per_stage():
  cfg = _cfg(method="sd_mtcnn", distill="eq6", decoder="shared", full=True)
  _, model = experiment.build_model(cfg)
  hints = [t for t in model.terms if t.name.startswith("hint_")]
  assert [t.name for t in hints] == [f"hint_shared_l{l}_loss" for l in (1, 2, 3, 4, 5)]
  reached = _reached(model, *random_batch(cfg))
  assert reached["hint_shared_l3_loss"] == {"encoder", "adaptation_shared"}


def test_a_variable_no_term_reaches_is_an_error_at_the_first_step():
  import keras
  from sdmtcnn_tf.model import UnreachedVariableError
  cfg = _cfg(method="sd_mtcnn", distill="eq6")
  _, model = experiment.build_model(cfg)
  model.terms = tuple(t for t in model.terms if not t.name.startswith("hint_semseg"))
  experiment.compile_model(model, cfg)
  image, labels = random_batch(cfg)
  with pytest.raises(UnreachedVariableError, match="adapt_semseg_l5"):
    model.train_on_batch(image, labels)


def test_two_way_lets_distillation_reach_the_teacher():
  cfg = _cfg(method="sd_mtcnn", distill="eq5", two_way=True)
  _, model = experiment.build_model(cfg)
  reached = _reached(model, *random_batch(cfg))
  assert "decoder_semseg" in reached["kd_semseg_loss"]
  assert "teacher_head_semseg" in reached["kd_semseg_loss"]
  assert "decoder_depth" in reached["hint_depth_l5_loss"]


def test_hints_reach_only_encoder_stages_up_to_their_level():
  cfg = _cfg(method="sd_mtcnn", distill="eq6", hint_levels=(2,))
  _, model = experiment.build_model(cfg)
  image, labels = random_batch(cfg)
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
  image, labels = random_batch(cfg, n=4)
  model.fit(tf.data.Dataset.from_tensor_slices((image, labels)).batch(2), epochs=1, verbose=0)
  for before, after in zip(teacher_before, network.teacher.weights):
    np.testing.assert_array_equal(before, after.numpy())
  assert network.teacher.trainable_weights == []


def test_zero_distillation_weights_reduce_to_the_vanilla_loss():
  vanilla_cfg = _cfg()
  sd_cfg = _cfg(method="sd_mtcnn", distill="eq5", full=True, alpha=0.0, hint_weight=0.0,
                student_gt_weight=0.0)
  vanilla_net, vanilla = experiment.build_model(vanilla_cfg)
  sd_net, sd = experiment.build_model(sd_cfg)
  sd_layers = {layer.name: layer for layer in sd_net.model.layers}
  for layer in vanilla_net.model.layers:
    if layer.weights:
      sd_layers[layer.name].set_weights(layer.get_weights())
  image, labels = random_batch(vanilla_cfg)
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
  # with the default student weight (1 - alpha = 1) and no hint weight the total is L_T + L_S
  default = _cfg(method="sd_mtcnn", distill="eq5", alpha=0.0, hint_weight=0.0)
  _, model = experiment.build_model(default)
  values = model.compute_terms(labels, model(image, training=True))
  expected = sum(float(values[f"{r}_{t}_loss"]) for r in ("teacher", "student") for t in TASKS)
  assert float(model.weighted_total(values)) == pytest.approx(expected, rel=1e-6)


_MIRRORED_SCRIPT = r"""
import json, os, sys
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
import numpy as np, tensorflow as tf, keras
# argv: [floatx, default float64] then, for diagnosis only: "argmax" (also count the flipped
# argmaxes of each pooling), "twopass" (synchronised BatchNorm variance as the mean of squared
# deviations instead of Keras' E[x^2] - E[x]^2)
floatx = sys.argv[1] if len(sys.argv) > 1 else "float64"
diagnose = "argmax" in sys.argv[2:]
keras.backend.set_floatx(floatx)  # before anything reads the global dtype policy
if "twopass" in sys.argv[2:]:
  from keras.src.backend.tensorflow import nn as keras_tf_nn
  def two_pass_moments(x, axes, keepdims):
    ctx = tf.distribute.get_replica_context()
    total = lambda t: ctx.all_reduce(tf.distribute.ReduceOp.SUM,
                                     tf.reduce_sum(t, axes, keepdims=True))
    count = total(tf.ones_like(x))
    mean = total(x) / count
    variance = total(tf.square(x - mean)) / count
    if not keepdims:
      mean, variance = tf.squeeze(mean, axes), tf.squeeze(variance, axes)
    return mean, variance
  keras_tf_nn._compute_moments_sync = two_pass_moments
cpus = tf.config.list_physical_devices("CPU")
tf.config.set_logical_device_configuration(cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2)
from sdmtcnn_tf import experiment
from sdmtcnn_tf.config import ExperimentConfig
from tests.conftest import random_batch
# semseg + depth: a freshly initialised normals head (unit-normalised outputs of near-zero
# vectors) takes huge SGD steps whose rounding would swamp the comparison
cfg = ExperimentConfig.from_flat(height=32, width=32, width_multiplier=0.125, student_channels=16,
                                 num_classes=5, tasks=("semseg", "depth"), method="sd_mtcnn",
                                 distill="eq5", full=True,
                                 sync_batchnorm=True, optimizer="sgd", learning_rate=0.05,
                                 batch_size=4).validate()
image, labels = random_batch(cfg, n=4, seed=1)
labels.pop("normals")
ds = tf.data.Dataset.from_tensor_slices((image, labels)).batch(4)
LEVELS = (1, 2, 3, 4, 5)
def argmaxes(model, strategy, training):
  # {level: argmax of enc<l>_pool as the flat position inside its image} for the batch `ds`
  pools = [model.net.get_layer(f"enc{l}_pool") for l in LEVELS]
  probe = keras.Model(model.net.inputs, [p.output[1] for p in pools])
  run = tf.function(lambda x: probe(x, training=training))
  x = next(iter(strategy.experimental_distribute_dataset(ds)))[0]
  per = strategy.run(run, args=(x,))
  local = lambda t: np.concatenate([r.numpy() for r in strategy.experimental_local_results(t)])
  return {l: local(t) % int(np.prod(p.input.shape[1:])) for l, t, p in zip(LEVELS, per, pools)}
def one_step(strategy, init=None):
  with strategy.scope():
    _, model = experiment.build_model(cfg)
    experiment.compile_model(model, cfg)
  if init is not None:
    model.set_weights(init)
  start = [w.copy() for w in model.get_weights()]
  # the forward pass of the step: BatchNorm batch statistics, summed across the replicas
  step_argmax = argmaxes(model, strategy, True) if diagnose else None
  model.set_weights(start)  # that pass moved BatchNorm's moving statistics
  logs = model.fit(ds, epochs=1, verbose=0).history
  return model, start, model.get_weights(), {k: float(v[0]) for k, v in logs.items()}, step_argmax
model, start, single, single_logs, single_step = one_step(tf.distribute.get_strategy())
mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
_, _, multi, multi_logs, multi_step = one_step(mirrored, start)
result = {"floatx": floatx, "replicas": mirrored.num_replicas_in_sync,
          "max_weight_diff": max(float(np.max(np.abs(a - b))) for a, b in zip(single, multi)),
          "max_update": max(float(np.max(np.abs(a - b))) for a, b in zip(single, start)),
          "single": single_logs, "multi": multi_logs}
if diagnose:
  default = tf.distribute.get_strategy()
  after_single = argmaxes(model, default, False)  # inference, the weights after each step
  model.set_weights(multi)
  after_multi = argmaxes(model, default, False)
  paths = [w.path for w in model.weights]
  diffs = sorted(((float(np.max(np.abs(a - b))), p) for a, b, p in zip(single, multi, paths)),
                 reverse=True)
  result.update(
      positions={l: int(single_step[l].size) for l in LEVELS},
      flipped_in_step={l: int(np.sum(single_step[l] != multi_step[l])) for l in LEVELS},
      flipped_after_step={l: int(np.sum(after_single[l] != after_multi[l])) for l in LEVELS},
      largest_weight_diffs=diffs[:3])
print(json.dumps(result))
"""


@pytest.mark.slow
def test_two_replicas_give_the_same_step_as_one():
  # float64: in float32 the two runs differ by up to ~1e-3 in the weights (enc1_1_conv/kernel).
  # Not argmax pooling (no argmax of the step's forward pass flips): synchronised BatchNorm sums
  # its batch statistics in another order on 2 replicas, Keras computes the variance as
  # E[x^2] - E[x]^2, and backpropagation through 49 BatchNorm layers over 4-image batches
  # amplifies that round-off (BUILD_NOTES.md, "Numerics: replica equivalence and argmax
  # pooling"; argv "float32 argmax [twopass]" measures it). In float64 the steps agree to ~1e-14,
  # so a bound far above that and far below the float32 effect checks the replica logic itself.
  proc = subprocess.run([sys.executable, "-c", _MIRRORED_SCRIPT, "float64"], cwd=REPO,
                        capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-4000:]
  result = json.loads(proc.stdout.strip().splitlines()[-1])
  assert result["replicas"] == 2
  assert result["max_update"] > 1e-4  # the step did move the weights
  assert result["max_weight_diff"] < 1e-10, result  # float64 reduction order only (~1e-14)
  assert result["single"].keys() == result["multi"].keys()
  for key, value in result["single"].items():
    assert result["multi"][key] == pytest.approx(value, rel=1e-10, abs=1e-12), key


@pytest.mark.parametrize("changes,flag", [
    (dict(method="vanilla", full=True), "--full"),
    (dict(method="sd_vanilla", distill="eq5", full=True), "--full"),
    (dict(method="sd_mtcnn", distill="eq5", student_exits=(3, 4)), "--student_exits"),
    (dict(method="sd_vanilla", distill="eq6", hint_source="mirrored"), "--hint_source"),
    (dict(method="sd_vanilla", distill="eq6", student_exit=2), "--student_exit"),
    (dict(method="sd_mtcnn", distill="none"), "--distill"),
    (dict(method="traditional_kd", distill="eq6"), "--distill"),
])
def test_each_method_rejects_the_flags_it_does_not_read(changes, flag):
  with pytest.raises(ValueError, match=flag):
    _cfg(**changes)
