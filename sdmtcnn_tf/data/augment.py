"""Geometry-consistent train-time augmentation over the image and every label map.

One random draw per example is applied to all maps (MTAN protocol, HEAD):
  * random scale-crop: pick s in SCALES, crop a random (H/s, W/s) window, resize back to (H, W);
    depth is divided by s (the scene looks s times closer) -- disparity is multiplied by s;
  * random horizontal flip: mirror every map and negate the normals' x component.
Each task says how its label resizes (`Task.resize_method`: nearest for semseg, depth and
normals, so ignore/invalid pixels stay exactly -1 / 0 and normals stay unit vectors), what a
zoom does to its values (`Task.zoom`) and what a mirror does (`Task.flip`).
Randomness is stateless, keyed by a per-example seed that make_dataset draws from its seed
(new draws every epoch): the same seed gives the same sequence of epochs.
"""

from __future__ import annotations

import tensorflow as tf

from sdmtcnn_tf import tasks as tasks_lib

SCALES = (1.0, 1.2, 1.5)


def _resize(x, size, method):
  return tf.image.resize(x, size, method=method)


def scale_crop(image, labels, seed, depth_unit: str = "metres"):
  """image [H, W, 3]; labels {task: [H, W] or [H, W, C]}; seed int32 [2] (stateless)."""
  height, width = image.shape[0], image.shape[1]
  choice = tf.random.stateless_uniform([], seed, 0, len(SCALES), dtype=tf.int32)
  scale = tf.gather(tf.constant(SCALES, tf.float32), choice)
  crop_h = tf.cast(tf.round(height / scale), tf.int32)
  crop_w = tf.cast(tf.round(width / scale), tf.int32)
  seed_y, seed_x = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
  top = tf.random.stateless_uniform([], seed_y, 0, height - crop_h + 1, dtype=tf.int32)
  left = tf.random.stateless_uniform([], seed_x, 0, width - crop_w + 1, dtype=tf.int32)

  def crop(x, method):
    squeeze = x.shape.rank == 2
    x = x[..., None] if squeeze else x
    dtype = x.dtype
    x = tf.cast(x[top:top + crop_h, left:left + crop_w], tf.float32)
    x = tf.cast(_resize(x, (height, width), method), dtype)
    x = tf.ensure_shape(x, [height, width, x.shape[-1]])
    return x[..., 0] if squeeze else x

  image = crop(image, "bilinear")
  out = {}
  for task, value in labels.items():
    task_cls = tasks_lib.task_class(task)
    out[task] = task_cls.zoom(crop(value, task_cls.resize_method), scale, depth_unit)
  return image, out


def horizontal_flip(image, labels, seed):
  """Mirrors every map with probability 1/2 (each task fixes its values, see Task.flip)."""
  flip = tf.random.stateless_uniform([], seed) < 0.5

  def do_flip():
    flipped = {}
    for task, value in labels.items():
      flipped[task] = tasks_lib.task_class(task).flip(tf.reverse(value, axis=[1]))
    return tf.reverse(image, axis=[1]), flipped

  return tf.cond(flip, do_flip, lambda: (image, dict(labels)))


def augment(image, labels, seed, depth_unit: str = "metres"):
  """Scale-crop then flip. seed: int32 [2] stateless seed for this example."""
  seed_crop, seed_flip = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
  image, labels = scale_crop(image, labels, seed_crop, depth_unit)
  return horizontal_flip(image, labels, seed_flip)
