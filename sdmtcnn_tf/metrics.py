"""Streaming evaluation metrics: one Keras metric object per (role, task), dict results.

Every metric here is a `keras.metrics.Metric` whose state is a set of sums, counts and histograms
(float64 variables, `aggregation="sum"`, on-read synchronised). The state of two halves of a
split adds up to the state of the whole split, so the *primary* results are identical for any
batch size and any number of replicas: under `tf.distribute` Keras reads the variables in
cross-replica context, which sums them over replicas.

`result()` returns a dict of named scalars (float32, the metric's dtype), keyed
`f"{role}_{task}_{metric}"` for primary metrics and `f"{role}_{task}_{metric}_legacy"` for the
legacy ones, e.g. `{"teacher_semseg_pixacc": ..., "teacher_semseg_miou": ...}`. Keras 3 merges dict
results into the logs: `Trainer.get_metrics_result` does `logs.update(result)` for a metric in
`Model.metrics`, and `pythonify_logs` flattens the nested dicts that `compile(metrics=...)`
produces, so `fit`/`evaluate(return_dict=True)` logs carry the flat keys above.

Inputs of every `update_state(y_true, y_pred, sample_weight=None)` are batched tensors at label
resolution (conventions of `sdmtcnn_tf/tasks`):
  semseg     y_true int [B, H, W] (or [B, H, W, 1]), ids 0..C-1, anything else (IGNORE_LABEL = -1)
             is ignored; y_pred logits [B, H, W, C] (the metric takes the argmax).
  depth      y_true float [B, H, W, 1], 0 = invalid; y_pred [B, H, W, 1]; same unit as the labels.
  normals    y_true float [B, H, W, 3], all-zero = invalid; y_pred [B, H, W, 3] (re-normalised
             here, defensively).
  keypoints, edges   y_true, y_pred float [B, H, W, 1].
`sample_weight` (optional) is a keep mask, not a weighting: per image [B] (or [B, 1]) or per pixel
[B, H, W] (or [B, H, W, 1]); pixels whose weight is 0 are removed from the evaluation entirely (as
if absent: not even in the legacy union), other weights count as 1. Use it for padded images of
a final partial batch: an image with no kept pixel does not enter any average, legacy included.

Primary metrics (ours; global over the split, independent of batch size and replica count):
  semseg     `pixacc`, `miou` in percent, from a global confusion matrix over pixels with
             0 <= label < C; mIoU = mean IoU over the classes with a non-empty union
             (rowsum + colsum - diag > 0).
  depth      `abs` = sum |pred - gt| / n_valid, `rel` = sum(|pred - gt| / gt) / n_valid, over all
             valid (gt != 0) pixels of the split.
  normals    valid = any(gt != 0) over channels; angle = degrees(acos(clip(dot(pred, gt), -1, 1))).
             `mean_deg`; `median_deg`, a true median over all valid pixels of the split taken from a
             histogram of MEDIAN_BIN_DEG = 0.005 degree bins over [0, 180] with linear interpolation
             inside the bin (error at most 0.005 degrees against np.median of the same angles);
             `within_11_25`, `within_22_5`, `within_30` = percent of valid pixels with angle below
             the threshold (exact counts); `cos` = mean dot(pred, gt) over valid pixels.
  keypoints, edges   `abs` = mean |pred - gt| over all pixels (and channels).

Legacy metrics (MTAN 2019 definitions, which the paper's tables use; suffix `_legacy`):
  semseg     `miou_legacy`: per image, for each class j, pred = (argmax == j), true = (label == j),
             union = |pred u true| where ignored pixels are NOT removed from the union (an ignored
             pixel predicted j counts in j's union), inter = |pred n true|; classes with empty
             union are skipped; the image score is the mean over the remaining classes; the result
             is the mean over all images, in percent. `pixacc_legacy`: per image,
             correct / (pixels with 0 <= label < C), mean over images (images without a labelled
             pixel are skipped), in percent.
  depth      `abs_legacy`, `rel_legacy`: per legacy batch (a group of `legacy_batch_size`
             consecutive images), pixel-weighted over the group's valid pixels; groups averaged
             with equal weight.
  normals    `mean_deg_legacy`, `median_deg_legacy` (np.median of the group's valid angles,
             exact), `within_11_25_legacy`, `within_22_5_legacy`, `within_30_legacy` (percent) per
             group, averaged with equal weight over groups.
  Grouping: each incoming (per-replica) batch is cut into consecutive chunks of
  `legacy_batch_size` images; a smaller last chunk counts as one group, like MTAN's last partial
  batch. Groups without any valid pixel are skipped (MTAN would produce NaN). The legacy numbers
  therefore equal MTAN's (evaluated with batch size `legacy_batch_size`) when the per-replica
  evaluation batch size is a multiple of `legacy_batch_size`; the evaluate CLI ensures that.
  MTAN averages the per-image semseg scores per batch and then over batches; that equals the
  mean over all images whenever all batches are full.

Empty state: every result whose denominator is zero (no valid pixel, no image, no class with a
non-empty union) is NaN, never 0, and `result()` does not raise.

Deliberate deviations from MTAN: the normal validity mask is any(gt != 0) (MTAN: sum(gt) != 0,
which differs only for non-zero vectors summing to exactly 0); semseg labels >= C are treated as
ignored (MTAN has none); percent instead of fractions for the `within_*` metrics.

Distribution: construct the metric objects inside `strategy.scope()` (variables created outside
it are not replica-aware). Per-step logs under a strategy are Keras' mean of per-replica results
(progress bar only); epoch logs and `evaluate` results are read in cross-replica context and are
exact. All update ops (segment sums, sort, gathers) are graph-mode and XLA compatible.
"""

from __future__ import annotations

import math

import keras
import tensorflow as tf

MEDIAN_BIN_DEG = 0.005
THRESHOLDS_DEG = (11.25, 22.5, 30.0)
THRESHOLD_KEYS = ("within_11_25", "within_22_5", "within_30")


# ------------------------------------------------------------------------------------------------
# Helpers (all graph-mode, static-shape-friendly).

def _nan_div(num, den):
  """num / den elementwise, NaN where den == 0."""
  den_ok = den > 0
  return tf.where(den_ok, num / tf.where(den_ok, den, tf.ones_like(den)),
                  tf.constant(math.nan, num.dtype))


def _keep_mask(sample_weight, bhw):
  """bool [B, H, W]: pixels kept by `sample_weight` (weight != 0); None without sample_weight."""
  if sample_weight is None:
    return None
  sw = tf.convert_to_tensor(sample_weight)
  rank = sw.shape.rank
  if rank in (1, 2):
    sw = tf.reshape(sw, [-1, 1, 1])
  elif rank == 4:
    sw = sw[..., 0]
  elif rank != 3:
    raise ValueError(f"metrics: sample_weight must have shape [B], [B, 1], [B, H, W] or "
                     f"[B, H, W, 1]; got rank {rank} ({sw.shape})")
  return tf.broadcast_to(tf.not_equal(sw, tf.zeros_like(sw)), bhw)


def _and_keep(mask, keep):
  return mask if keep is None else tf.logical_and(mask, keep)


def _segment_count(ids, num_segments):
  """int32 [num_segments]: how many of `ids` equal each index; ids == num_segments are dropped."""
  ids = tf.reshape(ids, [-1])
  counts = tf.math.unsorted_segment_sum(tf.ones_like(ids), ids, num_segments + 1)
  return counts[:num_segments]


def _f64(x):
  return tf.cast(x, tf.float64)


def _masked_sum(values, mask, axis=None):
  """float64 sum of `values` where `mask`, over `axis` (all axes if None)."""
  v = _f64(values)
  return tf.reduce_sum(tf.where(mask, v, tf.zeros_like(v)), axis=axis)


def _group_ids(batch, group_size):
  """(int32 [B] group id of each image, number of groups) for consecutive chunks of group_size."""
  ids = tf.range(batch) // group_size
  return ids, (batch + group_size - 1) // group_size


def _normal_angles(y_true, y_pred, keep):
  """(angle degrees float32 [B, H, W], dot float32 [B, H, W], valid bool [B, H, W])."""
  gt = tf.cast(y_true, tf.float32)
  gt = tf.reshape(gt, tf.concat([tf.shape(y_pred)[:3], [3]], 0))
  pred = tf.math.l2_normalize(tf.cast(y_pred, tf.float32), axis=-1)
  valid = _and_keep(tf.reduce_any(tf.not_equal(gt, 0.0), axis=-1), keep)
  dot = tf.reduce_sum(pred * gt, axis=-1)
  angle = tf.acos(tf.clip_by_value(dot, -1.0, 1.0)) * (180.0 / math.pi)
  return angle, dot, valid


def _depth_inputs(y_true, y_pred, keep):
  """(pred float32 [B, H, W], gt float32 [B, H, W], valid bool [B, H, W])."""
  pred = tf.cast(y_pred, tf.float32)
  bhw = tf.shape(pred)[:3]
  pred = tf.reshape(pred, bhw)
  gt = tf.reshape(tf.cast(y_true, tf.float32), bhw)
  valid = _and_keep(tf.not_equal(gt, 0.0), keep)
  return pred, gt, valid


def _semseg_inputs(y_true, y_pred, num_classes, sample_weight):
  """(pred int32 [B, H, W], labels int32 [B, H, W], labelled bool [B, H, W], keep or None)."""
  pred = tf.argmax(y_pred, axis=-1, output_type=tf.int32)
  bhw = tf.shape(pred)
  labels = tf.reshape(tf.cast(y_true, tf.int32), bhw)
  keep = _keep_mask(sample_weight, bhw)
  labelled = _and_keep(tf.logical_and(labels >= 0, labels < num_classes), keep)
  return pred, labels, labelled, keep


class _SumMetric(keras.metrics.Metric):
  """Base: float64 summed state variables and a dict result.

  `role` ("teacher", "student", ...) and `task` say which output and which label the model
  feeds to `update_state`; results are keyed f"{role}_{task}_<metric>".
  """

  def __init__(self, role: str, task: str, legacy: bool = False, dtype=None):
    prefix = f"{role}_{task}"
    super().__init__(dtype=dtype, name=f"{prefix}_legacy" if legacy else prefix)
    self.role = role
    self.task = task
    self.prefix = prefix

  def _state(self, name, shape=()):
    return self.add_variable(shape=shape, initializer="zeros", dtype="float64",
                             aggregation="sum", name=name)

  def _out(self, values: dict) -> dict:
    return {f"{self.prefix}_{k}": tf.cast(v, self.dtype) for k, v in values.items()}

  def get_config(self):
    return {"role": self.role, "task": self.task, "dtype": self.dtype}


# ------------------------------------------------------------------------------------------------
# Semantic segmentation.

class SemsegMetric(_SumMetric):
  """Primary `pixacc`, `miou` (percent) from a global [C, C] confusion matrix (rows = label)."""

  def __init__(self, role: str, task: str, num_classes: int, dtype=None):
    super().__init__(role, task, dtype=dtype)
    self.num_classes = int(num_classes)
    self.confusion = self._state("confusion", (self.num_classes * self.num_classes,))

  def update_state(self, y_true, y_pred, sample_weight=None):
    c = self.num_classes
    pred, labels, labelled, _ = _semseg_inputs(y_true, y_pred, c, sample_weight)
    ids = tf.where(labelled, labels * c + pred, c * c)
    self.confusion.assign_add(_f64(_segment_count(ids, c * c)))

  def result(self):
    c = self.num_classes
    conf = tf.reshape(tf.convert_to_tensor(self.confusion), [c, c])
    diag = tf.linalg.diag_part(conf)
    total = tf.reduce_sum(conf)
    union = tf.reduce_sum(conf, 0) + tf.reduce_sum(conf, 1) - diag
    present = union > 0
    iou = tf.where(present, diag / tf.where(present, union, tf.ones_like(union)), 0.0)
    miou = _nan_div(tf.reduce_sum(iou), tf.reduce_sum(_f64(present)))
    return self._out({"pixacc": 100.0 * _nan_div(tf.reduce_sum(diag), total),
                      "miou": 100.0 * miou})

  def get_config(self):
    return {**super().get_config(), "num_classes": self.num_classes}


class SemsegLegacyMetric(_SumMetric):
  """MTAN-2019 per-image `miou_legacy` (ignore-in-union quirk) and `pixacc_legacy` (percent)."""

  def __init__(self, role: str, task: str, num_classes: int, dtype=None):
    super().__init__(role, task, legacy=True, dtype=dtype)
    self.num_classes = int(num_classes)
    self.miou_sum = self._state("miou_sum")
    self.miou_images = self._state("miou_images")
    self.pixacc_sum = self._state("pixacc_sum")
    self.pixacc_images = self._state("pixacc_images")

  def update_state(self, y_true, y_pred, sample_weight=None):
    c = self.num_classes
    pred, labels, labelled, keep = _semseg_inputs(y_true, y_pred, c, sample_weight)
    batch = tf.shape(pred)[0]
    n = batch * c
    image = tf.broadcast_to(tf.range(batch)[:, None, None], tf.shape(pred))
    kept = tf.ones_like(labelled) if keep is None else keep
    # Ignored-but-kept pixels stay in the prediction count, hence in the union (MTAN quirk).
    pred_count = _segment_count(tf.where(kept, image * c + pred, n), n)
    true_count = _segment_count(tf.where(labelled, image * c + labels, n), n)
    inter = _segment_count(
        tf.where(tf.logical_and(labelled, tf.equal(pred, labels)), image * c + labels, n), n)
    pred_count, true_count, inter = (tf.reshape(_f64(t), [batch, c])
                                     for t in (pred_count, true_count, inter))
    union = pred_count + true_count - inter
    present = union > 0
    iou = tf.where(present, inter / tf.where(present, union, tf.ones_like(union)), 0.0)
    n_present = tf.reduce_sum(_f64(present), axis=1)
    has_class = n_present > 0
    score = tf.where(has_class, tf.reduce_sum(iou, 1) / tf.maximum(n_present, 1.0), 0.0)
    self.miou_sum.assign_add(tf.reduce_sum(score))
    self.miou_images.assign_add(tf.reduce_sum(_f64(has_class)))
    n_labelled = tf.reduce_sum(true_count, axis=1)
    has_label = n_labelled > 0
    acc = tf.where(has_label, tf.reduce_sum(inter, 1) / tf.maximum(n_labelled, 1.0), 0.0)
    self.pixacc_sum.assign_add(tf.reduce_sum(acc))
    self.pixacc_images.assign_add(tf.reduce_sum(_f64(has_label)))

  def result(self):
    return self._out({
        "pixacc_legacy": 100.0 * _nan_div(tf.convert_to_tensor(self.pixacc_sum),
                                          tf.convert_to_tensor(self.pixacc_images)),
        "miou_legacy": 100.0 * _nan_div(tf.convert_to_tensor(self.miou_sum),
                                        tf.convert_to_tensor(self.miou_images)),
    })

  def get_config(self):
    return {**super().get_config(), "num_classes": self.num_classes}


# ------------------------------------------------------------------------------------------------
# Depth.

class DepthMetric(_SumMetric):
  """Primary `abs`, `rel` over all valid (gt != 0) pixels of the split (label units)."""

  def __init__(self, role: str, task: str, dtype=None):
    super().__init__(role, task, dtype=dtype)
    self.abs_sum = self._state("abs_sum")
    self.rel_sum = self._state("rel_sum")
    self.count = self._state("count")

  def update_state(self, y_true, y_pred, sample_weight=None):
    pred, gt, valid = _depth_inputs(y_true, y_pred, _keep_mask(sample_weight, tf.shape(y_pred)[:3]))
    err = tf.abs(_f64(pred) - _f64(gt))
    gt_safe = tf.where(valid, _f64(gt), tf.ones_like(err))
    self.abs_sum.assign_add(_masked_sum(err, valid))
    self.rel_sum.assign_add(_masked_sum(err / gt_safe, valid))
    self.count.assign_add(tf.reduce_sum(_f64(valid)))

  def result(self):
    count = tf.convert_to_tensor(self.count)
    return self._out({"abs": _nan_div(tf.convert_to_tensor(self.abs_sum), count),
                      "rel": _nan_div(tf.convert_to_tensor(self.rel_sum), count)})


class DepthLegacyMetric(_SumMetric):
  """MTAN `abs_legacy`, `rel_legacy`: pixel-weighted per group of `legacy_batch_size` images,
  equal weight per group."""

  def __init__(self, role: str, task: str, legacy_batch_size: int = 2, dtype=None):
    super().__init__(role, task, legacy=True, dtype=dtype)
    if int(legacy_batch_size) < 1:
      raise ValueError(f"legacy_batch_size must be >= 1, got {legacy_batch_size}")
    self.legacy_batch_size = int(legacy_batch_size)
    self.abs_sum = self._state("abs_sum")
    self.rel_sum = self._state("rel_sum")
    self.groups = self._state("groups")

  def update_state(self, y_true, y_pred, sample_weight=None):
    pred, gt, valid = _depth_inputs(y_true, y_pred, _keep_mask(sample_weight, tf.shape(y_pred)[:3]))
    err = tf.abs(_f64(pred) - _f64(gt))
    gt_safe = tf.where(valid, _f64(gt), tf.ones_like(err))
    ids, n_groups = _group_ids(tf.shape(pred)[0], self.legacy_batch_size)
    group = lambda per_image: tf.math.unsorted_segment_sum(per_image, ids, n_groups)
    abs_g = group(_masked_sum(err, valid, axis=[1, 2]))
    rel_g = group(_masked_sum(err / gt_safe, valid, axis=[1, 2]))
    n_g = group(tf.reduce_sum(_f64(valid), axis=[1, 2]))
    ok = n_g > 0
    n_safe = tf.maximum(n_g, 1.0)
    self.abs_sum.assign_add(tf.reduce_sum(tf.where(ok, abs_g / n_safe, 0.0)))
    self.rel_sum.assign_add(tf.reduce_sum(tf.where(ok, rel_g / n_safe, 0.0)))
    self.groups.assign_add(tf.reduce_sum(_f64(ok)))

  def result(self):
    groups = tf.convert_to_tensor(self.groups)
    return self._out({"abs_legacy": _nan_div(tf.convert_to_tensor(self.abs_sum), groups),
                      "rel_legacy": _nan_div(tf.convert_to_tensor(self.rel_sum), groups)})

  def get_config(self):
    return {**super().get_config(), "legacy_batch_size": self.legacy_batch_size}


# ------------------------------------------------------------------------------------------------
# Surface normals.

class NormalsMetric(_SumMetric):
  """Primary angle statistics (degrees / percent) and cosine similarity over the split.

  The median comes from a histogram of `MEDIAN_BIN_DEG` (0.005 degree) bins over [0, 180],
  interpolated linearly inside the bin holding each middle order statistic: within 0.005 degrees
  of np.median of the same angles. Mean, thresholds and cosine are exact.
  """

  def __init__(self, role: str, task: str, dtype=None):
    super().__init__(role, task, dtype=dtype)
    self.num_bins = int(round(180.0 / MEDIAN_BIN_DEG))
    self.angle_sum = self._state("angle_sum")
    self.cos_sum = self._state("cos_sum")
    self.count = self._state("count")
    self.within = self._state("within", (len(THRESHOLDS_DEG),))
    self.histogram = self._state("histogram", (self.num_bins,))

  def update_state(self, y_true, y_pred, sample_weight=None):
    angle, dot, valid = _normal_angles(y_true, y_pred,
                                       _keep_mask(sample_weight, tf.shape(y_pred)[:3]))
    self.angle_sum.assign_add(_masked_sum(angle, valid))
    self.cos_sum.assign_add(_masked_sum(dot, valid))
    self.count.assign_add(tf.reduce_sum(_f64(valid)))
    self.within.assign_add(tf.stack(
        [tf.reduce_sum(_f64(tf.logical_and(valid, angle < t))) for t in THRESHOLDS_DEG]))
    bins = tf.clip_by_value(tf.cast(tf.floor(angle / MEDIAN_BIN_DEG), tf.int32),
                            0, self.num_bins - 1)
    self.histogram.assign_add(_f64(_segment_count(tf.where(valid, bins, self.num_bins),
                                                  self.num_bins)))

  def _median(self):
    hist = tf.convert_to_tensor(self.histogram)
    cum = tf.cumsum(hist)
    n = cum[-1]

    def order_statistic(k):  # k: 0-based rank, float64 scalar
      i = tf.searchsorted(cum, tf.reshape(k, [1]), side="right")[0]
      i = tf.minimum(i, self.num_bins - 1)
      in_bin = tf.maximum(hist[i], 1.0)
      frac = (k - (cum[i] - hist[i]) + 0.5) / in_bin
      return (_f64(i) + frac) * MEDIAN_BIN_DEG

    lo = order_statistic(tf.floor((n - 1.0) / 2.0))
    hi = order_statistic(tf.floor(n / 2.0))
    return tf.where(n > 0, 0.5 * (lo + hi), tf.constant(math.nan, tf.float64))

  def result(self):
    count = tf.convert_to_tensor(self.count)
    within = tf.convert_to_tensor(self.within)
    out = {"mean_deg": _nan_div(tf.convert_to_tensor(self.angle_sum), count),
           "median_deg": self._median()}
    for j, key in enumerate(THRESHOLD_KEYS):
      out[key] = 100.0 * _nan_div(within[j], count)
    out["cos"] = _nan_div(tf.convert_to_tensor(self.cos_sum), count)
    return self._out(out)


class NormalsLegacyMetric(_SumMetric):
  """MTAN angle statistics per group of `legacy_batch_size` images (median exact, np.median
  convention), each averaged with equal weight over groups; degrees / percent."""

  def __init__(self, role: str, task: str, legacy_batch_size: int = 2, dtype=None):
    super().__init__(role, task, legacy=True, dtype=dtype)
    if int(legacy_batch_size) < 1:
      raise ValueError(f"legacy_batch_size must be >= 1, got {legacy_batch_size}")
    self.legacy_batch_size = int(legacy_batch_size)
    self.mean_sum = self._state("mean_sum")
    self.median_sum = self._state("median_sum")
    self.within_sum = self._state("within_sum", (len(THRESHOLDS_DEG),))
    self.groups = self._state("groups")

  def update_state(self, y_true, y_pred, sample_weight=None):
    angle, _, valid = _normal_angles(y_true, y_pred,
                                     _keep_mask(sample_weight, tf.shape(y_pred)[:3]))
    size = self.legacy_batch_size
    batch = tf.shape(angle)[0]
    ids, n_groups = _group_ids(batch, size)
    group = lambda per_image: tf.math.unsorted_segment_sum(per_image, ids, n_groups)
    n_g = group(tf.reduce_sum(_f64(valid), axis=[1, 2]))
    ok = n_g > 0
    n_safe = tf.maximum(n_g, 1.0)
    mean_g = group(_masked_sum(angle, valid, axis=[1, 2])) / n_safe
    within_g = tf.stack([group(tf.reduce_sum(_f64(tf.logical_and(valid, angle < t)), axis=[1, 2]))
                         for t in THRESHOLDS_DEG], axis=1) / n_safe[:, None]
    # Exact per-group median: sort each group's angles with invalid pixels pushed to +inf.
    flat = tf.reshape(tf.where(valid, angle, math.inf), [batch, -1])
    flat = tf.pad(flat, [[0, n_groups * size - batch], [0, 0]], constant_values=math.inf)
    ordered = tf.sort(tf.reshape(flat, [n_groups, -1]), axis=1)
    n_int = tf.cast(n_g, tf.int32)
    lo = tf.maximum((n_int - 1) // 2, 0)
    hi = tf.maximum(n_int // 2, 0)
    pick = lambda k: _f64(tf.gather(ordered, k[:, None], axis=1, batch_dims=1)[:, 0])
    median_g = 0.5 * (pick(lo) + pick(hi))
    self.mean_sum.assign_add(tf.reduce_sum(tf.where(ok, mean_g, 0.0)))
    self.median_sum.assign_add(tf.reduce_sum(tf.where(ok, median_g, 0.0)))
    self.within_sum.assign_add(100.0 * tf.reduce_sum(tf.where(ok[:, None], within_g, 0.0), 0))
    self.groups.assign_add(tf.reduce_sum(_f64(ok)))

  def result(self):
    groups = tf.convert_to_tensor(self.groups)
    within = tf.convert_to_tensor(self.within_sum)
    out = {"mean_deg_legacy": _nan_div(tf.convert_to_tensor(self.mean_sum), groups),
           "median_deg_legacy": _nan_div(tf.convert_to_tensor(self.median_sum), groups)}
    for j, key in enumerate(THRESHOLD_KEYS):
      out[key + "_legacy"] = _nan_div(within[j], groups)
    return self._out(out)

  def get_config(self):
    return {**super().get_config(), "legacy_batch_size": self.legacy_batch_size}


# ------------------------------------------------------------------------------------------------
# Keypoints and edges.

class AbsErrorMetric(_SumMetric):
  """Primary `abs` = mean |pred - gt| over all pixels and channels (label units)."""

  def __init__(self, role: str, task: str, dtype=None):
    super().__init__(role, task, dtype=dtype)
    self.abs_sum = self._state("abs_sum")
    self.count = self._state("count")

  def update_state(self, y_true, y_pred, sample_weight=None):
    pred = tf.cast(y_pred, tf.float32)
    gt = tf.reshape(tf.cast(y_true, tf.float32), tf.shape(pred))
    keep = _keep_mask(sample_weight, tf.shape(pred)[:3])
    keep = tf.ones_like(pred, tf.bool) if keep is None else tf.broadcast_to(keep[..., None],
                                                                            tf.shape(pred))
    self.abs_sum.assign_add(_masked_sum(tf.abs(pred - gt), keep))
    self.count.assign_add(tf.reduce_sum(_f64(keep)))

  def result(self):
    return self._out({"abs": _nan_div(tf.convert_to_tensor(self.abs_sum),
                                      tf.convert_to_tensor(self.count))})
