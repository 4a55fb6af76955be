"""The loss functions the tasks (Eq. 1, Eq. 4-5) and the methods (Eq. 6) are made of.

Every function returns a pair (total, count): the sum of the per-element loss over the valid
elements of the batch and how many there were. The model divides the sum by the count summed
over all replicas, which makes each term the exact mean over the global batch whatever the
number of replicas (a per-replica masked mean would weight replicas equally instead).

Shapes: labels semseg int32 [B, H, W] (-1 ignore); depth [B, H, W, 1] (0 invalid); normals
[B, H, W, 3] (all-zero invalid); keypoints/edges [B, H, W, 1]. Predictions [B, H, W, C] float32
(float64 under a float64 dtype policy: masks and counts take the prediction's dtype).
"""

from __future__ import annotations

from keras import ops


def semseg_cross_entropy(label, logits):
  """Cross-entropy over pixels with label >= 0. label [B,H,W] int, logits [B,H,W,C]."""
  mask = ops.cast(label >= 0, logits.dtype)
  safe = ops.maximum(label, 0)
  log_probs = ops.log_softmax(logits, axis=-1)
  picked = ops.take_along_axis(log_probs, ops.expand_dims(safe, -1), axis=-1)[..., 0]
  return -ops.sum(picked * mask), ops.sum(mask)


def masked_l1(label, pred, mask):
  """Sum of |pred - label| over masked pixels (all channels), and the masked pixel count x C."""
  channels = ops.cast(ops.shape(pred)[-1], pred.dtype)
  label = ops.cast(label, pred.dtype)  # float32 labels, float64 predictions under float64
  return ops.sum(ops.abs(pred - label) * mask), ops.sum(mask) * channels


def normals_cosine(label, pred, mask):
  """1 - <pred, label> summed over valid pixels (MTAN's normal loss), and their count."""
  dot = ops.sum(pred * ops.cast(label, pred.dtype), axis=-1, keepdims=True)
  return ops.sum((1.0 - dot) * mask), ops.sum(mask)


def semseg_kd(label, student_logits, teacher_logits, temperature: float):
  """Eq. 4-5 for segmentation: tau^2 * KL(softmax(T/tau) || softmax(S/tau)) per valid pixel.

  The caller passes `teacher_logits` through stop_gradient (or not, under --two_way).
  """
  mask = ops.cast(label >= 0, student_logits.dtype)
  log_q_t = ops.log_softmax(teacher_logits / temperature, axis=-1)
  log_q_s = ops.log_softmax(student_logits / temperature, axis=-1)
  kl = ops.sum(ops.exp(log_q_t) * (log_q_t - log_q_s), axis=-1)
  return (temperature ** 2) * ops.sum(kl * mask), ops.sum(mask)


def feature_hint(student_feature, teacher_feature):
  """Eq. 6 term: squared error between adapted encoder and decoder features, per element."""
  diff = student_feature - teacher_feature
  return ops.sum(diff * diff), ops.cast(ops.size(diff), diff.dtype)
