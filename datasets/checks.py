"""Checks and conversions of decoded arrays: images, label maps, and resizing.

Each check raises `ConversionError` naming the source file and what is wrong with it.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from sdmtcnn_tf import tasks as tasks_lib

from datasets.reading import ConversionError


def float_image_to_uint8(image: np.ndarray, path: str, shape: tuple | None) -> np.ndarray:
  """MTAN-style image array -> uint8 [H, W, 3] RGB.

  Accepts float [H, W, 3] in [0, 1] (values within 1e-3 outside are clipped), float
  [3, H, W] (channels first, detected when the last axis is not 3), or uint8 [H, W, 3].
  Args:
    shape: expected (H, W), or None for any.
  """
  image = np.asarray(image)
  if image.ndim == 3 and image.shape[-1] != 3 and image.shape[0] == 3:
    image = np.transpose(image, (1, 2, 0))
  if image.ndim != 3 or image.shape[-1] != 3:
    raise ConversionError(path, f"image must be [H, W, 3] (or [3, H, W]), got {image.shape}")
  check_shape(image.shape[:2], shape, path, "image")
  if image.dtype == np.uint8:
    return image
  if not np.issubdtype(image.dtype, np.floating):
    raise ConversionError(path, f"image must be float in [0, 1] or uint8, got {image.dtype}")
  if not np.all(np.isfinite(image)):
    raise ConversionError(path, "image holds NaN or infinite values")
  lo, hi = float(image.min()), float(image.max())
  if lo < -1e-3 or hi > 1 + 1e-3:
    raise ConversionError(path, f"image values must lie in [0, 1], got [{lo:.4g}, {hi:.4g}] "
                                "(a 0..255 image must be stored as uint8)")
  return np.round(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8)


def check_shape(actual, expected, path: str, what: str) -> None:
  if expected is not None and tuple(actual) != tuple(expected):
    raise ConversionError(path, f"{what} has size {tuple(actual)}, expected {tuple(expected)}")


def class_map(label: np.ndarray, path: str, num_classes: int, shape: tuple | None) -> np.ndarray:
  """Float/int class map [H, W] (or [H, W, 1]) with -1 = ignore -> int16 [H, W].

  Raises ConversionError for non-integral values or values outside -1..num_classes-1.
  """
  label = np.asarray(label)
  if label.ndim == 3 and label.shape[-1] == 1:
    label = label[..., 0]
  if label.ndim != 2:
    raise ConversionError(path, f"label must be [H, W], got {label.shape}")
  check_shape(label.shape, shape, path, "label")
  if not (np.issubdtype(label.dtype, np.integer) or np.issubdtype(label.dtype, np.floating)):
    raise ConversionError(path, f"label must be a numeric array, got {label.dtype}")
  if np.issubdtype(label.dtype, np.floating):
    if not np.all(np.isfinite(label)):
      raise ConversionError(path, "label holds NaN or infinite values")
    if not np.all(label == np.round(label)):
      raise ConversionError(path, "label holds non-integer class ids")
  bad = (label < tasks_lib.IGNORE_LABEL) | (label >= num_classes)
  if np.any(bad):
    values = np.unique(label[bad])[:5].tolist()
    raise ConversionError(path, f"label values {values} outside the class range "
                                f"0..{num_classes - 1} (and -1 = ignore)")
  return label.astype(np.int16)


def nonnegative_map(value: np.ndarray, path: str, what: str, shape: tuple | None) -> np.ndarray:
  """Depth/disparity [H, W] or [H, W, 1], finite, >= 0 (0 = invalid) -> float32 [H, W]."""
  value = np.asarray(value)
  if value.ndim == 3 and value.shape[-1] == 1:
    value = value[..., 0]
  if value.ndim != 2:
    raise ConversionError(path, f"{what} must be [H, W] or [H, W, 1], got {value.shape}")
  check_shape(value.shape, shape, path, what)
  if not (np.issubdtype(value.dtype, np.floating) or np.issubdtype(value.dtype, np.integer)):
    raise ConversionError(path, f"{what} must be numeric, got {value.dtype}")
  value = value.astype(np.float32)
  if not np.all(np.isfinite(value)):
    raise ConversionError(path, f"{what} holds NaN or infinite values")
  if value.size and value.min() < 0:
    raise ConversionError(path, f"{what} holds negative values (min {value.min():.4g}); "
                                "0 marks invalid pixels")
  return value


def unit_normals(normals: np.ndarray, path: str, shape: tuple | None,
                 min_norm: float = 0.5) -> np.ndarray:
  """Normal map [H, W, 3] with components in [-1, 1] -> float32 unit vectors, 0 = invalid.

  Vectors shorter than `min_norm` (all-zero invalid pixels, grey "127-centred" fill, blends
  with invalid pixels) become all-zero; the others are renormalised to unit length.
  """
  normals = np.asarray(normals)
  if normals.ndim == 3 and normals.shape[0] == 3 and normals.shape[-1] != 3:
    normals = np.transpose(normals, (1, 2, 0))
  if normals.ndim != 3 or normals.shape[-1] != 3:
    raise ConversionError(path, f"normals must be [H, W, 3], got {normals.shape}")
  check_shape(normals.shape[:2], shape, path, "normals")
  if not np.issubdtype(normals.dtype, np.floating):
    raise ConversionError(path, f"normals must be float in [-1, 1], got {normals.dtype}")
  normals = normals.astype(np.float32)
  if not np.all(np.isfinite(normals)):
    raise ConversionError(path, "normals hold NaN or infinite values")
  if normals.size and np.abs(normals).max() > 1.01:
    raise ConversionError(path, f"normal components must lie in [-1, 1], got max "
                                f"|n_i| = {np.abs(normals).max():.4g}")
  return renormalise(normals, min_norm)


def renormalise(normals: np.ndarray, min_norm: float) -> np.ndarray:
  """float32 [H, W, 3] -> unit vectors; vectors shorter than min_norm -> all-zero."""
  norm = np.linalg.norm(normals, axis=-1, keepdims=True)
  valid = norm >= min_norm
  return np.where(valid, normals / np.maximum(norm, 1e-12), 0.0).astype(np.float32)


def nearest_indices(size_in: int, size_out: int) -> np.ndarray:
  """Source index of each output pixel for nearest-neighbour resizing (pixel centres)."""
  idx = np.floor((np.arange(size_out) + 0.5) * size_in / size_out).astype(np.int64)
  return np.minimum(idx, size_in - 1)


def resize_nearest(value: np.ndarray, height: int, width: int) -> np.ndarray:
  """Nearest-neighbour resize of [H, W] or [H, W, C]; keeps dtype and exact values."""
  if value.shape[:2] == (height, width):
    return value
  rows = nearest_indices(value.shape[0], height)
  cols = nearest_indices(value.shape[1], width)
  return value[rows][:, cols]


def resize_image_bilinear(image: np.ndarray, height: int, width: int) -> np.ndarray:
  """uint8 [H, W, 3] -> uint8 [height, width, 3] with Pillow's (antialiased) bilinear filter."""
  if image.shape[:2] == (height, width):
    return image
  img = Image.fromarray(image)  # uint8 [H, W, 3] -> mode RGB
  return np.asarray(img.resize((width, height), Image.Resampling.BILINEAR), dtype=np.uint8)


def resize_float_bilinear(value: np.ndarray, height: int, width: int) -> np.ndarray:
  """float [H, W] -> float32 [height, width] with Pillow's (antialiased) bilinear filter."""
  value = value.astype(np.float32)
  if value.shape[:2] == (height, width):
    return value
  img = Image.fromarray(value)  # float32 [H, W] -> mode F
  return np.asarray(img.resize((width, height), Image.Resampling.BILINEAR), dtype=np.float32)
