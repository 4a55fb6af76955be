"""Taskonomy label units: the converter's physical values, or Standley et al.'s standardised PNG
values (the paper's Mini-Taskonomy protocol, --taskonomy_label_units=standley).

datasets/taskonomy.py stores depth_zbuffer in metres (PNG value z / 512; z = 65535, missing,
-> 0) and keypoints2d / edge_texture as PNG value / --label_scale (65535: [0, 1]). Standley et
al.'s loader, whose protocol the paper follows (github.com/tstandley/taskgrouping,
taskonomy_loader.py, TaskonomyLoader.__getitem__), trains and validates on

  depth_zbuffer  (z - 1500) / 1000, valid where z < 2**13 (16 m)
  keypoints2d    (k - 50) / 100
  edge_texture   (e - 718) / 1070

Its normals ((n - 0.5) * 2 of the 8-bit PNG / 255) and semantic labels (0 ignored) are what the
converter stores already. `to_standley` maps converted labels to these units in the input
pipeline, after augmentation (whose zoom divides metres). The records keep the converted units:
the schema's invariants (depth >= 0 with 0 = invalid, heat maps in [0, 1]) hold, and one
conversion serves both settings.

Depth that is missing or beyond 16 m becomes 0, the marker the losses and metrics read (gt != 0,
MTAN's mask). So does a valid pixel at z = 1500 exactly (2.93 m), which standardises to 0: those
pixels (one z level of the ~8,000 below 16 m) are left out, as MTAN's `gt != 0` mask would leave
them out of its metrics. Standley's loader resizes depth bilinearly (then masks the blends with
65535 away by z < 8192); the converter resizes it nearest.
"""

from __future__ import annotations

from typing import Mapping

import tensorflow as tf

from sdmtcnn_tf import tasks as tasks_lib
from sdmtcnn_tf.data import schema

DATASET = "taskonomy"
UNITS = ("standley", "converted")  # --taskonomy_label_units
DEPTH_PNG_PER_METRE = 512.0  # depth_zbuffer is in units of 1/512 m (StanfordVL/taskonomy)
DEPTH_PNG_VALID_BELOW = 2.0 ** 13  # Standley's depth mask: z < 2**13
# task -> (offset, divisor): Standley's (PNG value - offset) / divisor
STANDLEY = {tasks_lib.DEPTH: (1500.0, 1000.0), tasks_lib.KEYPOINTS: (50.0, 100.0),
            tasks_lib.EDGES: (718.0, 1070.0)}
# --taskonomy_label_units -> task -> the unit a report column names ("" = none stated)
UNIT_NAMES = {
    "standley": {tasks_lib.DEPTH: "Standley: (z-1500)/1000",
                 tasks_lib.KEYPOINTS: "Standley: (k-50)/100",
                 tasks_lib.EDGES: "Standley: (e-718)/1070"},
    "converted": {tasks_lib.DEPTH: "m"},
}


def unit(task: str, data_cfg) -> str:
  """The unit of `task`'s labels and errors under a DataConfig (report headers); "" where it
  is not a Taskonomy label this module knows."""
  if data_cfg.dataset != DATASET:
    return ""
  return UNIT_NAMES[data_cfg.label_units].get(task, "")


def png_per_stored_unit(manifest: schema.Manifest, data_dir: str) -> dict:
  """{task: PNG value of one stored unit} of the STANDLEY tasks a converted Taskonomy dataset
  carries: 512 for depth (metres), the converter's --label_scale for keypoints and edges.
  SchemaError naming the manifest when it was not written by datasets.taskonomy."""
  where = f"{data_dir}/{schema.MANIFEST_NAME}"
  if manifest.dataset != DATASET:
    raise schema.SchemaError(
        f"--taskonomy_label_units=standley needs records written by datasets.taskonomy, but "
        f"{where} holds a {manifest.dataset!r} dataset (use --taskonomy_label_units=converted)")
  scales = {}
  for task in STANDLEY:
    if task not in manifest.tasks:
      continue
    if task == tasks_lib.DEPTH:
      scales[task] = DEPTH_PNG_PER_METRE
      continue
    params = manifest.extra.get("params") if isinstance(manifest.extra, Mapping) else None
    scale = params.get("label_scale") if isinstance(params, Mapping) else None
    if not isinstance(scale, (int, float)) or scale <= 0:
      raise schema.SchemaError(f"{where}: extra.params.label_scale (the converter's "
                               f"--label_scale, > 0) is missing or invalid, got {scale!r}; "
                               "re-run datasets.taskonomy")
    scales[task] = float(scale)
  return scales


def to_standley(labels: dict, png_per_unit: dict) -> dict:
  """Converted labels {task: float32 [..., H, W, 1]} -> Standley's units (the module
  docstring) for the tasks in `png_per_unit` (`png_per_stored_unit`); other tasks unchanged."""
  out = dict(labels)
  for task, per_unit in png_per_unit.items():
    if task not in labels:
      continue
    offset, divisor = STANDLEY[task]
    png = labels[task] * per_unit
    value = (png - offset) / divisor
    if task == tasks_lib.DEPTH:
      valid = (labels[task] > 0) & (png < DEPTH_PNG_VALID_BELOW)
      value = tf.where(valid, value, tf.zeros_like(value))
    out[task] = value
  return out
