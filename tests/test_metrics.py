"""Tests of sdmtcnn_tf.metrics against independent NumPy references (MTAN transliterations)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

from sdmtcnn_tf import metrics as M
from tests.conftest import make_task
from tests.conftest import REPO

N, H, W, C = 6, 8, 10, 4


# ------------------------------------------------------------------------------------------------
# Data.

def make_data(seed=0):
  rng = np.random.default_rng(seed)
  labels = rng.integers(0, C, size=(N, H, W)).astype(np.int32)
  labels[rng.random((N, H, W)) < 0.15] = -1
  logits = rng.normal(size=(N, H, W, C)).astype(np.float32)
  # Make predictions correlate with labels so IoUs are not all tiny.
  hit = (rng.random((N, H, W)) < 0.5) & (labels >= 0)
  logits[hit, labels[hit]] += 3.0
  depth_gt = rng.uniform(0.5, 5.0, size=(N, H, W, 1)).astype(np.float32)
  depth_gt[rng.random((N, H, W, 1)) < 0.2] = 0.0
  depth_pred = (depth_gt + rng.normal(scale=0.3, size=depth_gt.shape)).astype(np.float32)
  normals_gt = rng.normal(size=(N, H, W, 3)).astype(np.float32)
  normals_gt /= np.linalg.norm(normals_gt, axis=-1, keepdims=True)
  normals_gt[rng.random((N, H, W)) < 0.2] = 0.0
  # Not unit length on purpose: the metric must normalise.
  normals_pred = (1.7 * (normals_gt + rng.normal(scale=0.5, size=normals_gt.shape))).astype(
      np.float32)
  kp_gt = rng.random((N, H, W, 1)).astype(np.float32)
  kp_pred = rng.random((N, H, W, 1)).astype(np.float32)
  return dict(semseg=(labels, logits), depth=(depth_gt, depth_pred),
              normals=(normals_gt, normals_pred), keypoints=(kp_gt, kp_pred),
              edges=(kp_pred, kp_gt))


DATA = make_data()


def groups_for(n, feed_bs, legacy_bs):
  """Image index groups: each fed batch cut into consecutive chunks of legacy_bs."""
  out = []
  for s in range(0, n, feed_bs):
    e = min(s + feed_bs, n)
    out += [list(range(g, min(g + legacy_bs, e))) for g in range(s, e, legacy_bs)]
  return out


# ------------------------------------------------------------------------------------------------
# NumPy references, written from MTAN's utils.py (legacy-2019) and METHOD.md (primary).

def ref_semseg(labels, logits):
  pred = logits.argmax(-1)
  valid = (labels >= 0) & (labels < C)
  conf = np.bincount(labels[valid] * C + pred[valid], minlength=C * C).reshape(C, C)
  diag = np.diag(conf).astype(np.float64)
  union = conf.sum(0) + conf.sum(1) - diag
  iou = diag[union > 0] / union[union > 0]
  out = {"pixacc": 100 * diag.sum() / conf.sum(), "miou": 100 * iou.mean()}
  # MTAN compute_miou / compute_iou, one image at a time.
  mious, accs = [], []
  for i in range(labels.shape[0]):
    probs = []
    for j in range(C):
      pred_mask = pred[i] == j
      true_mask = labels[i] == j
      comb = pred_mask.astype(np.float32) + true_mask.astype(np.float32)
      union_j = np.sum(comb > 0)
      inter_j = np.sum(comb > 1)
      if union_j == 0:
        continue
      probs.append(inter_j / union_j)
    mious.append(np.mean(probs))
    accs.append(np.sum(pred[i] == labels[i]) / np.sum(labels[i] >= 0))
  out["miou_legacy"] = 100 * np.mean(mious)
  out["pixacc_legacy"] = 100 * np.mean(accs)
  return out


def mtan_depth_error(pred, gt):
  mask = np.sum(gt, axis=-1) != 0
  p, g = pred[mask], gt[mask]
  err = np.abs(p - g)
  return np.sum(err) / mask.sum(), np.sum(err / g) / mask.sum()


def ref_depth(gt, pred, groups):
  a, r = mtan_depth_error(pred.astype(np.float64), gt.astype(np.float64))
  per = [mtan_depth_error(pred[g].astype(np.float64), gt[g].astype(np.float64)) for g in groups]
  return {"abs": a, "rel": r, "abs_legacy": np.mean([p[0] for p in per]),
          "rel_legacy": np.mean([p[1] for p in per])}


def normal_angles(pred, gt):
  pred = pred / np.linalg.norm(pred, axis=-1, keepdims=True)
  mask = np.any(gt != 0, axis=-1)
  dot = np.sum(pred * gt, axis=-1)[mask]
  return np.degrees(np.arccos(np.clip(dot, -1, 1))), dot


def mtan_normal_error(pred, gt):
  e, _ = normal_angles(pred, gt)
  return (np.mean(e), np.median(e), 100 * np.mean(e < 11.25), 100 * np.mean(e < 22.5),
          100 * np.mean(e < 30))


def ref_normals(gt, pred, groups):
  e, dot = normal_angles(pred, gt)
  out = {"mean_deg": e.mean(), "median_deg": np.median(e), "within_11_25": 100 * np.mean(e < 11.25),
         "within_22_5": 100 * np.mean(e < 22.5), "within_30": 100 * np.mean(e < 30),
         "cos": dot.mean()}
  per = np.array([mtan_normal_error(pred[g], gt[g]) for g in groups])
  keys = ["mean_deg", "median_deg", "within_11_25", "within_22_5", "within_30"]
  out.update({k + "_legacy": v for k, v in zip(keys, per.mean(0))})
  return out


def ref_abs(gt, pred):
  return {"abs": np.mean(np.abs(pred.astype(np.float64) - gt))}


# ------------------------------------------------------------------------------------------------
# Running the metrics.

def evaluate(task, feed_bs, legacy_bs=2, data=None, graph=True, sample_weight=None):
  """Flat result dict (keys without the role_task prefix) after feeding `data` in batches."""
  spec = make_task(task, num_classes=C)
  y_true, y_pred = DATA[task] if data is None else data
  out = {}
  for m in spec.metrics("teacher", legacy=True, legacy_batch_size=legacy_bs):
    update = tf.function(m.update_state) if graph else m.update_state
    for s in range(0, len(y_true), feed_bs):
      sw = None if sample_weight is None else sample_weight[s:s + feed_bs]
      update(y_true[s:s + feed_bs], y_pred[s:s + feed_bs], sw)
    out.update({k: float(v) for k, v in m.result().items()})
  prefix = f"teacher_{task}_"
  assert all(k.startswith(prefix) for k in out)
  return {k[len(prefix):]: v for k, v in out.items()}


def assert_close(got, want, atol=1e-4, rtol=1e-5, median_tol=M.MEDIAN_BIN_DEG + 1e-4):
  assert sorted(got) == sorted(want), (sorted(got), sorted(want))
  for k in want:
    tol = median_tol if k == "median_deg" else atol
    assert got[k] == pytest.approx(want[k], abs=tol, rel=rtol), (k, got[k], want[k])


# ------------------------------------------------------------------------------------------------
# Values against NumPy.

def test_semseg_matches_numpy():
  assert_close(evaluate("semseg", 2), ref_semseg(*DATA["semseg"]))


@pytest.mark.parametrize("feed_bs", [6, 3])
def test_depth_matches_numpy(feed_bs):
  gt, pred = DATA["depth"]
  assert_close(evaluate("depth", feed_bs), ref_depth(gt, pred, groups_for(N, feed_bs, 2)))


@pytest.mark.parametrize("feed_bs,legacy_bs", [(2, 2), (3, 2), (6, 3)])
def test_normals_matches_numpy(feed_bs, legacy_bs):
  gt, pred = DATA["normals"]
  want = ref_normals(gt, pred, groups_for(N, feed_bs, legacy_bs))
  assert_close(evaluate("normals", feed_bs, legacy_bs), want)


@pytest.mark.parametrize("task", ["keypoints", "edges"])
def test_abs_matches_numpy(task):
  assert_close(evaluate(task, 4), ref_abs(*DATA[task]))


def test_eager_equals_graph():
  for task in ("semseg", "normals"):
    assert_close(evaluate(task, 2, graph=False), evaluate(task, 2), atol=1e-9, median_tol=1e-9)


def test_xla_compiles():
  for task in ("semseg", "normals"):
    spec = make_task(task, num_classes=C)
    gt, pred = DATA[task]
    out = {}
    for m in spec.metrics("s"):
      tf.function(m.update_state, jit_compile=True)(gt, pred)
      out.update({k[len(f"s_{task}_"):]: float(v) for k, v in m.result().items()})
    assert_close(out, evaluate(task, N), atol=1e-6, median_tol=1e-6)


# ------------------------------------------------------------------------------------------------
# Invariances and quirks.

@pytest.mark.parametrize("task", ["semseg", "depth", "normals", "keypoints"])
def test_primary_independent_of_batch_size(task):
  one, six = evaluate(task, 1), evaluate(task, 6)
  spec = make_task(task, num_classes=C)
  for k in spec.primary_metrics:
    assert one[k] == pytest.approx(six[k], rel=1e-9, abs=1e-9), k
  if spec.legacy_metrics:  # both multiples of legacy_batch_size = 2
    two = evaluate(task, 2)
    for k in spec.legacy_metrics:
      assert two[k] == pytest.approx(six[k], rel=1e-9, abs=1e-9), k


def test_zero_weight_padding_matches_unpadded():
  """5 real images + 1 padded (weight 0) fed as one batch of 6 == the 5 images fed in batches
  of 2 (MTAN's last partial batch of size 1)."""
  for task in ("semseg", "depth", "normals", "edges"):
    sw = np.array([1, 1, 1, 1, 1, 0], np.float32)
    padded = evaluate(task, 6, sample_weight=sw)
    gt, pred = DATA[task]
    real = evaluate(task, 2, data=(gt[:5], pred[:5]))
    assert_close(padded, real, atol=1e-9, median_tol=1e-9)


def test_miou_legacy_counts_ignored_pixels_in_union():
  labels = np.array([[[0, 0, -1, -1]]], np.int32)     # [1, 1, 4]
  pred = np.array([[[0, 0, 0, 1]]])
  logits = np.eye(2, dtype=np.float32)[pred]          # [1, 1, 4, 2]
  spec = make_task("semseg", num_classes=2)
  out = {}
  for m in spec.metrics("t"):
    m.update_state(labels, logits)
    out.update({k: float(v) for k, v in m.result().items()})
  assert out["t_semseg_miou"] == pytest.approx(100.0)            # class 1 never in a valid pixel
  assert out["t_semseg_miou_legacy"] == pytest.approx(100.0 / 3)  # (2/3 + 0/1) / 2
  assert out["t_semseg_pixacc"] == pytest.approx(100.0)
  assert out["t_semseg_pixacc_legacy"] == pytest.approx(100.0)


def test_median_is_a_true_median():
  degrees = np.array([[1, 2, 3, 4], [5, 6, 7, 8], [50, 60, 70, 80], [90, 100, 110, 120]],
                     np.float64)
  theta = np.radians(degrees)[:, None, :]  # [4, 1, 4]
  pred = np.stack([np.sin(theta), np.zeros_like(theta), np.cos(theta)], -1).astype(np.float32)
  gt = np.zeros_like(pred)
  gt[..., 2] = 1.0
  for feed_bs in (2, 4):
    out = evaluate("normals", feed_bs, data=(gt, pred))
    assert out["median_deg"] == pytest.approx(29.0, abs=M.MEDIAN_BIN_DEG + 1e-4)  # (8 + 50) / 2
    assert out["median_deg_legacy"] == pytest.approx((4.5 + 85.0) / 2, abs=1e-3)
    assert out["mean_deg"] == pytest.approx(degrees.mean(), abs=1e-3)


def test_empty_state_is_nan():
  for task in ("semseg", "depth", "normals", "keypoints"):
    spec = make_task(task, num_classes=C)
    for m in spec.metrics("t"):
      assert all(math.isnan(float(v)) for v in m.result().values())
  # A batch with no valid pixel leaves depth/normals NaN.
  gt, pred = DATA["normals"]
  out = evaluate("normals", 2, data=(np.zeros_like(gt), pred))
  assert all(math.isnan(v) for v in out.values())


def test_names_and_config():
  for task in ("semseg", "depth", "normals", "keypoints", "edges"):
    spec = make_task(task, num_classes=C)
    for legacy in (True, False):
      ms = spec.metrics("student", legacy=legacy)
      want_names = [f"student_{task}"] + ([f"student_{task}_legacy"]
                                          if legacy and spec.legacy_metrics else [])
      assert [m.name for m in ms] == want_names
      keys = [k for m in ms for k in m.result()]
      assert keys == spec.metric_keys("student", legacy=legacy)
      for m in ms:
        clone = type(m).from_config(m.get_config())
        assert clone.name == m.name and list(clone.result()) == list(m.result())


# ------------------------------------------------------------------------------------------------
# Keras integration: dict results become flat log keys.

def _identity_model():
  import keras
  x_seg = keras.Input((H, W, C), name="semseg")
  x_dep = keras.Input((H, W, 1), name="depth")
  x_nrm = keras.Input((H, W, 3), name="normals")
  outs = {"semseg": keras.layers.Identity(name="semseg_out")(x_seg),
          "depth": keras.layers.Identity(name="depth_out")(x_dep),
          "normals": keras.layers.Identity(name="normals_out")(x_nrm)}
  return keras.Model([x_seg, x_dep, x_nrm], outs)


def _compile_and_evaluate(model, batch_size, n=N):
  metrics = {t: make_task(t, num_classes=C).metrics("teacher")
             for t in ("semseg", "depth", "normals")}
  model.compile(loss={"depth": "mae"}, metrics=metrics, jit_compile=False)
  x = [DATA["semseg"][1][:n], DATA["depth"][1][:n], DATA["normals"][1][:n]]
  y = {t: DATA[t][0][:n] for t in ("semseg", "depth", "normals")}
  return model.evaluate(x, y, batch_size=batch_size, return_dict=True, verbose=0)


def _direct(batch_size, n=N):
  out = {}
  for t in ("semseg", "depth", "normals"):
    data = (DATA[t][0][:n], DATA[t][1][:n])
    out.update({f"teacher_{t}_{k}": v for k, v in evaluate(t, batch_size, data=data).items()})
  return out


def test_keras_evaluate_flat_dict_logs():
  logs = _compile_and_evaluate(_identity_model(), 2)
  direct = _direct(2)
  for k, v in direct.items():
    assert k in logs, (k, sorted(logs))
    assert logs[k] == pytest.approx(v, rel=1e-5, abs=1e-5), k


_DISTRIBUTED = """
import json, sys
import tensorflow as tf
cpus = tf.config.list_physical_devices("CPU")
tf.config.set_logical_device_configuration(cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2)
sys.path.insert(0, {tests!r})
import test_metrics as T
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
assert strategy.num_replicas_in_sync == 2
with strategy.scope():
  model = T._identity_model()
  logs = T._compile_and_evaluate(model, 4, n=4)  # one step, 2 images per replica
print("RESULT" + json.dumps(logs))
"""


def test_mirrored_strategy_two_replicas_matches_single_device():
  script = _DISTRIBUTED.format(tests=os.path.join(REPO, "tests"))
  env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="2")
  proc = subprocess.run([sys.executable, "-c", textwrap.dedent(script)], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=120)
  assert proc.returncode == 0, proc.stderr[-4000:]
  line = [l for l in proc.stdout.splitlines() if l.startswith("RESULT")][-1]
  logs = json.loads(line[len("RESULT"):])
  # Per-replica batches of 2 = legacy groups of 2, so legacy values match too.
  direct = _direct(2, n=4)
  for k, v in direct.items():
    assert logs[k] == pytest.approx(v, rel=1e-5, abs=1e-5), k
