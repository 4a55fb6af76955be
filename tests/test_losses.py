"""Each loss term against a NumPy reference written here."""

import numpy as np
import pytest

from sdmtcnn_tf import losses
from tests.conftest import make_task

RNG = np.random.default_rng(0)
B, H, W, C = 2, 4, 5, 6


def _mean(pair):
  total, count = pair
  return float(total) / float(count)


def _softmax(x, axis=-1):
  e = np.exp(x - x.max(axis, keepdims=True))
  return e / e.sum(axis, keepdims=True)


def _labels():
  label = RNG.integers(-1, C, size=(B, H, W)).astype(np.int32)
  depth = RNG.uniform(0.5, 5, size=(B, H, W, 1)).astype(np.float32)
  depth[0, 0, :2] = 0
  normals = RNG.normal(size=(B, H, W, 3)).astype(np.float32)
  normals /= np.linalg.norm(normals, axis=-1, keepdims=True)
  normals[1, 2] = 0
  return label, depth, normals


def test_semseg_cross_entropy_ignores_minus_one():
  label, _, _ = _labels()
  logits = RNG.normal(size=(B, H, W, C)).astype(np.float32)
  p = _softmax(logits)
  valid = label >= 0
  expected = -np.log(np.take_along_axis(p, np.maximum(label, 0)[..., None], -1)[..., 0])[valid]
  assert _mean(losses.semseg_cross_entropy(label, logits)) == pytest.approx(expected.mean(),
                                                                            rel=1e-5)


def test_depth_l1_over_valid_pixels_only():
  _, depth, _ = _labels()
  pred = RNG.normal(size=depth.shape).astype(np.float32)
  valid = depth[..., 0] != 0
  expected = np.abs(pred - depth)[..., 0][valid].mean()
  got = _mean(make_task("depth").loss(depth, pred))
  assert got == pytest.approx(expected, rel=1e-5)


def test_normals_one_minus_cosine_over_valid_pixels():
  _, _, normals = _labels()
  pred = RNG.normal(size=normals.shape).astype(np.float32)
  pred /= np.linalg.norm(pred, axis=-1, keepdims=True)
  valid = np.any(normals != 0, -1)
  expected = 1 - (pred * normals).sum(-1)[valid].mean()
  got = _mean(make_task("normals").loss(normals, pred))
  assert got == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("task", ["keypoints", "edges"])
def test_keypoints_and_edges_plain_l1(task):
  y = RNG.random((B, H, W, 1)).astype(np.float32)
  pred = RNG.random((B, H, W, 1)).astype(np.float32)
  assert _mean(make_task(task).loss(y, pred)) == pytest.approx(
      np.abs(pred - y).mean(), rel=1e-5)


def test_semseg_kd_is_tau_squared_kl_over_valid_pixels():
  label, _, _ = _labels()
  s = RNG.normal(size=(B, H, W, C)).astype(np.float32)
  t = RNG.normal(size=(B, H, W, C)).astype(np.float32) * 2
  tau = 3.0
  qt, qs = _softmax(t / tau), _softmax(s / tau)
  kl = (qt * (np.log(qt) - np.log(qs))).sum(-1)
  expected = tau ** 2 * kl[label >= 0].mean()
  got = _mean(make_task("semseg", C).distillation_loss(label, s, t, tau))
  assert got == pytest.approx(expected, rel=1e-4)


def test_regression_kd_uses_teacher_as_target_on_valid_pixels():
  _, depth, _ = _labels()
  s = RNG.normal(size=depth.shape).astype(np.float32)
  t = RNG.normal(size=depth.shape).astype(np.float32)
  valid = depth[..., 0] != 0
  expected = np.abs(s - t)[..., 0][valid].mean()
  got = _mean(make_task("depth").distillation_loss(depth, s, t, 3.0))
  assert got == pytest.approx(expected, rel=1e-5)


def test_feature_hint_is_mean_squared_error():
  s = RNG.normal(size=(B, 2, 3, 7)).astype(np.float32)
  t = RNG.normal(size=(B, 2, 3, 7)).astype(np.float32)
  assert _mean(losses.feature_hint(s, t)) == pytest.approx(((s - t) ** 2).mean(), rel=1e-5)


def test_kd_is_zero_when_student_equals_teacher():
  label, _, _ = _labels()
  t = RNG.normal(size=(B, H, W, C)).astype(np.float32)
  assert _mean(losses.semseg_kd(label, t, t, 2.0)) == pytest.approx(0.0, abs=1e-6)
