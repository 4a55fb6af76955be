"""SavedModel export for TF Serving:
`python -m sdmtcnn_tf.export --model_dir=... --export_dir=... [--role=teacher|student] [--version=1]
[--overwrite] [--format=savedmodel|tflite] [--quantize=none|dynamic|int8]`.

Writes `<export_dir>/<version>/` (a TF Serving model base path is `<export_dir>`: one per role)
atomically, and refuses an existing version unless --overwrite. The
`serving_default` signature takes `image`: uint8 [B, H, W, 3] RGB at the training size and
returns float32 `semseg_logits` [B, H, W, C], int32 `semseg_labels` [B, H, W], float32 `depth`
[B, H, W] (metres or disparity, as the training data), `normals` [B, H, W, 3] (unit vectors),
`keypoints` [B, H, W], `edges` [B, H, W] -- for the tasks the model has. The student export
holds only the encoder and the student heads. `--format=tflite` writes the student as a
TensorFlow Lite file instead (sdmtcnn_tf/edge.py).
"""

from __future__ import annotations

import contextlib
import os
import shutil

from sdmtcnn_tf import cli  # first: it quiets TensorFlow's C++ logs before TF is imported

import keras
import numpy as np
import tensorflow as tf
from absl import flags

from sdmtcnn_tf import atomic, experiment, rundir
from sdmtcnn_tf import config as config_lib
from sdmtcnn_tf.config import ExperimentConfig

SIGNATURE = "serving_default"


def serving_outputs(outputs: dict, tasks) -> dict:
  """{task name: model output} -> the signature's named outputs (each task names its own,
  Task.serving_outputs). `tasks`: the run's Task objects."""
  named = {}
  for task in tasks:
    if task.name in outputs:
      named.update(task.serving_outputs(outputs[task.name]))
  return named


def agreement(served: dict, direct: dict, tasks, atol: float = 0.05) -> dict:
  """{output name: (median |served - Keras|, fraction of elements within `atol`)}.

  Exact equality is not expected: the SavedModel graph runs Grappler-fused kernels whose
  float32 round-off differs from eager execution, and where two values of a pooling window
  are within round-off of each other SegNet's argmax unpooling may pick the other position,
  which moves the activations of a few small regions (measured on a smoke model: median
  difference 6e-7, 99th percentile 0.018, max 0.069 on logits of mean magnitude 1.7; 99.97%
  of the labels equal). `direct` is the Keras role model's {task: output}; `tasks` the run's
  Task objects.
  """
  stats = {}
  for name, value in serving_outputs(direct, tasks).items():
    diff = np.abs(np.asarray(served[name], np.float64) - np.asarray(value, np.float64))
    stats[name] = (float(np.median(diff)), float(np.mean(diff <= atol)))
  return stats


def check_agreement(served: dict, direct: dict, tasks, where: str) -> None:
  """Raises AssertionError unless the export matches the Keras model (see `agreement`)."""
  for name, (median, fraction) in agreement(served, direct, tasks).items():
    if median > 1e-4 or fraction < 0.99:
      raise AssertionError(f"{where}: output {name} differs from the Keras model (median "
                           f"difference {median:.2e}, {fraction:.2%} of elements within 0.05)")


def export_role(role_model: keras.Model, cfg: ExperimentConfig, path: str,
                overwrite: bool = False) -> str:
  """Exports `role_model` (image float [0,1] -> {task: output}) as a SavedModel at `path`.

  An existing `path` (a served version) is refused unless `overwrite`. The SavedModel is
  written to a hidden temp folder beside it and renamed into place, so a killed or failed
  export never leaves half a version for TF Serving to load.
  """
  if os.path.exists(path) and not overwrite:
    raise FileExistsError(f"{path} already exists (an exported version); pass --overwrite to "
                          "replace it, or choose another --version or --export_dir")
  archive = keras.export.ExportArchive()
  archive.track(role_model)
  tasks = cfg.task_specs

  @tf.function(input_signature=[tf.TensorSpec([None, cfg.data.height, cfg.data.width, 3], tf.uint8,
                                              name="image")])
  def serve(image):
    outputs = role_model(tf.cast(image, tf.float32) / 255.0, training=False)
    return serving_outputs(outputs, tasks)

  archive.add_endpoint(SIGNATURE, serve)
  _write_in_place_of(archive, path)
  return path


def _write_in_place_of(archive, path: str) -> None:
  parent, name = os.path.split(os.path.abspath(path))
  os.makedirs(parent, exist_ok=True)
  tmp, old = os.path.join(parent, f".{name}.tmp"), os.path.join(parent, f".{name}.old")
  for leftover in (tmp, old):  # of an export killed earlier
    shutil.rmtree(leftover, ignore_errors=True)
  try:
    archive.write_out(tmp, verbose=False)
  except Exception as e:
    shutil.rmtree(tmp, ignore_errors=True)
    if atomic.is_disk_full(e):
      raise atomic.disk_full_error(path, 0) from e
    raise
  if os.path.exists(path):
    os.replace(path, old)
  os.replace(tmp, path)
  shutil.rmtree(old, ignore_errors=True)


def run(model_dir: str, export_dir: str = "", role: str = "teacher", version: int = 1,
        overwrite: bool = False) -> str:
  cfg, network, _ = experiment.load_trained(model_dir)
  role_model = network.teacher if role == "teacher" else network.student
  if role_model is None:
    raise ValueError(f"--role={role}: the {cfg.method.name} model has no {role}")
  base = export_dir or experiment.RunPaths(model_dir).export(role)
  # the default base path is inside the run directory: take its lock while writing there
  lock = contextlib.nullcontext() if export_dir else rundir.locked(model_dir,
                                                                   "sdmtcnn_tf.export")
  with lock:
    return export_role(role_model, cfg, os.path.join(base, str(version)), overwrite)


def main(argv):
  cli.check_no_arguments(argv)
  FLAGS = flags.FLAGS
  if not FLAGS.model_dir:
    raise ValueError("--model_dir is required: the run directory written by sdmtcnn_tf.train")
  config_lib.run_overrides(FLAGS, FLAGS.model_dir, settable=())  # checks a given flagfile
  if FLAGS.format == "tflite":  # the student as a .tflite file
    from sdmtcnn_tf import edge
    return edge.main(FLAGS)
  if FLAGS.quantize != "none":
    raise ValueError(f"--quantize={FLAGS.quantize} needs --format=tflite")
  path = run(FLAGS.model_dir, FLAGS.export_dir, FLAGS.role, FLAGS.version, FLAGS.overwrite)
  print(f"exported the {FLAGS.role} to {path}")


if __name__ == "__main__":
  # Every training flag is accepted (the training flagfile works here), see run_overrides.
  config_lib.define_flags()
  flags.DEFINE_string("export_dir", "", "TF Serving base path; default <model_dir>/export/<role>.")
  flags.DEFINE_enum("role", "teacher", ["teacher", "student"], "Which network to export.")
  flags.DEFINE_integer("version", 1, "Model version sub-directory.")
  flags.DEFINE_bool("overwrite", False, "Replace an existing <export_dir>/<version>.")
  flags.DEFINE_enum("format", "savedmodel", ["savedmodel", "tflite"],
                    "savedmodel: TF Serving SavedModel; tflite: the student as "
                    "<export_dir>/student_<variant>.tflite (sdmtcnn_tf/edge.py).")
  flags.DEFINE_enum("quantize", "none", ["none", "dynamic", "int8"],
                    "--format=tflite: none (float32), dynamic (int8 weights) or int8 (full "
                    "integer, calibrated on 100 training images).")
  cli.run(main)
