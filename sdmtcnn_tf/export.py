"""SavedModel export for TF Serving:
`python -m sdmtcnn_tf.export --model_dir=... [--serving_dir=DIR] [--role=teacher|student|all]
[--version=1] [--overwrite]` or, for one role's base path, `--export_dir=DIR`.

Layout (TF Serving's model base paths): `<serving_dir>/<role>/<version>/` for each exported role
(default `<serving_dir>` = `<model_dir>/export`) and `<serving_dir>/models.config`, a TF Serving
model config serving every role found there side by side (`--model_config_file`). With
`--export_dir` (one role's base path, as before) the version goes to `<export_dir>/<version>/`
and no models.config is written. A version is written atomically and an existing one is
refused unless --overwrite.

Signatures (both return the same named outputs, `Task.serving_outputs` of each task: float32
`semseg_logits` [B, H, W, C], int32 `semseg_labels` [B, H, W], float32 `depth` [B, H, W]
(metres or disparity, as the training data), `normals` [B, H, W, 3] (unit vectors),
`keypoints` [B, H, W], `edges` [B, H, W] -- for the tasks the model has):
  serving_default: `image` uint8 [B, H, W, 3] RGB of any H and W. It is resized to the training
    size inside the graph (bilinear, antialiased) and each task's prediction is resized back to
    H x W by the task (`Task.resize_prediction`: bilinear, unit vectors re-normalised) before
    its named outputs are taken, so class maps are the argmax of the resized logits. At the
    training size nothing is resized.
  serving_bytes: `image_bytes` string [B], encoded PNG or JPEG (also BMP/GIF; grey and RGBA
    become RGB), decoded in the graph. All images of one request must decode to the same H x W
    (they form one batch); otherwise the request fails with an error saying so.
A request of no images (batch of 0) fails with an error saying so, in both signatures.
The loaded SavedModel's `variables`, `trainable_variables` and `non_trainable_variables` are
the model's weights (each stored once, `export_archive`).
Each version holds `assets.extra/tf_serving_warmup_requests`: one PredictionLog per signature,
which TF Serving replays on load. The student export holds only the encoder and the student
heads.
`--format=tflite [--quantize=none|dynamic|int8]` writes the student as a TensorFlow Lite file
instead (sdmtcnn_tf/edge.py).
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
BYTES_SIGNATURE = "serving_bytes"
INPUTS = {SIGNATURE: "image", BYTES_SIGNATURE: "image_bytes"}  # each signature's one input
WARMUP_FILE = ("assets.extra", "tf_serving_warmup_requests")
MODELS_CONFIG = "models.config"
EMPTY_BATCH = "the request holds no images (batch of 0); send at least one"
ROLES = ("teacher", "student")


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


def serving_functions(role_model: keras.Model, cfg: ExperimentConfig) -> dict:
  """{signature name: tf.function} of the export (see the module docstring); the first is
  serving_default."""
  tasks = cfg.task_specs
  train_size = (cfg.data.height, cfg.data.width)

  def predict(image):  # uint8 [B, H, W, 3], any H and W
    size = tf.shape(image)[1:3]
    same = tf.reduce_all(tf.equal(size, train_size))
    x = tf.cast(image, tf.float32)
    x = tf.cond(same, lambda: x,
                lambda: tf.image.resize(x, train_size, method="bilinear", antialias=True))
    x = tf.ensure_shape(x, [None, *train_size, 3])
    outputs = role_model(x / 255.0, training=False)
    named = {}
    for task in tasks:
      if task.name in outputs:
        y = outputs[task.name]
        resized = tf.cond(same, lambda y=y: y,
                          lambda y=y, task=task: task.resize_prediction(y, size))
        named.update(task.serving_outputs(resized))
    return named

  @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8, name="image")])
  def serving_default(image):
    # a runtime check: a restored signature (and TF Serving) feeds any shape through; this
    # fails with "Shape of tensor image [H,W,3] is not compatible with expected shape
    # [?,?,?,3]" instead of an error deep inside the graph
    return predict(not_empty(tf.ensure_shape(image, [None, None, None, 3]), SIGNATURE))

  @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")])
  def serving_bytes(image_bytes):
    return predict(decode_batch(not_empty(image_bytes, BYTES_SIGNATURE)))

  return {SIGNATURE: serving_default, BYTES_SIGNATURE: serving_bytes}


def not_empty(batch, signature: str):
  """`batch` ([B, ...], a request's input) after a runtime check that B > 0: an empty request
  fails with an InvalidArgumentError saying so (TF Serving's answer to it), not with an error of
  the first layer that meets a batch of none ("scale must have the same number of elements as
  the channels of x")."""
  check = tf.debugging.Assert(tf.shape(batch)[0] > 0, [f"{signature}: {EMPTY_BATCH}"])
  with tf.control_dependencies([check]):
    return tf.identity(batch)


def decode_batch(image_bytes):
  """string [B > 0] of encoded images -> uint8 [B, H, W, 3]; every image must have one size."""

  def decode(data):
    image = tf.io.decode_image(data, channels=3, dtype=tf.uint8, expand_animations=False)
    return tf.ensure_shape(image, [None, None, 3])

  first_size = tf.shape(decode(image_bytes[0]))

  def decode_same_size(data):
    image = decode(data)
    same = tf.debugging.assert_equal(
        tf.shape(image), first_size,
        message=f"{BYTES_SIGNATURE}: all images of one request must decode to the same height "
                "and width (they form one batch); send images of other sizes in another "
                "request. [height, width, 3] of this image and of the first one")
    with tf.control_dependencies([same]):
      return tf.identity(image)

  return tf.map_fn(decode_same_size, image_bytes,
                   fn_output_signature=tf.TensorSpec([None, None, 3], tf.uint8))


def export_archive(role_model: keras.Model, functions: dict) -> keras.export.ExportArchive:
  """An ExportArchive of `functions` ({endpoint name: tf.function}, the first is
  serving_default) that exposes `role_model`'s weights, each stored once.

  The loaded SavedModel's `variables`, `trainable_variables` and `non_trainable_variables`
  are lists of the model's weights in the model's order (for counting parameters, inspecting
  and fine-tuning, as Keras' own `ExportArchive.track` offers). They hold the tf.Variables
  behind the Keras variables, the very objects the functions capture, so the SavedModel
  stores each once. Not `archive.track(role_model)`: Keras 3.15 then saves the Keras
  variables and the captured tf.Variables separately, every weight twice (BUILD_NOTES.md,
  "Export, serving, edge": SavedModel size).
  """
  archive = keras.export.ExportArchive()
  for name, function in functions.items():
    archive.add_endpoint(name, function)
  for collection in ("variables", "trainable_variables", "non_trainable_variables"):
    archive.add_variable_collection(
        collection, [_tf_variable(v) for v in getattr(role_model, collection)])
  return archive


def _tf_variable(variable) -> tf.Variable:
  """The tf.Variable holding a Keras variable's value (TensorFlow backend), outside a layer
  call (where mixed precision would cast it)."""
  value = variable.value
  if not isinstance(value, tf.Variable):
    raise TypeError(f"{variable.path}: expected a tf.Variable behind the Keras variable (the "
                    f"TensorFlow backend), got {type(value).__name__}")
  return value


def warmup_records(cfg: ExperimentConfig, model_name: str) -> list:
  """Serialized PredictionLogs, one per signature, of one image at the training size."""
  from sdmtcnn_tf import serving_protos
  protos = serving_protos.classes()
  image = np.full((1, cfg.data.height, cfg.data.width, 3), 128, np.uint8)
  png = tf.io.encode_png(image[0]).numpy()
  records = []
  for signature, inputs in ((SIGNATURE, {"image": image}),
                            (BYTES_SIGNATURE, {"image_bytes": np.array([png], object)})):
    log = protos.PredictionLog()
    log.predict_log.request.CopyFrom(
        serving_protos.predict_request(model_name, signature, inputs))
    records.append(log.SerializeToString())
  return records


def write_warmup(saved_model_dir: str, records: list) -> str:
  """Writes `records` as `<saved_model_dir>/assets.extra/tf_serving_warmup_requests`."""
  path = os.path.join(saved_model_dir, *WARMUP_FILE)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with tf.io.TFRecordWriter(path) as writer:
    for record in records:
      writer.write(record)
  return path


def export_role(role_model: keras.Model, cfg: ExperimentConfig, path: str,
                overwrite: bool = False, model_name: str = "") -> str:
  """Exports `role_model` (image float [0,1] -> {task: output}) as a SavedModel at `path`.

  An existing `path` (a served version) is refused unless `overwrite`. The SavedModel (with
  its warmup requests for model `model_name`, default the base path's name) is written to a
  hidden temp folder beside it and renamed into place, so a killed or failed export never
  leaves half a version for TF Serving to load.
  """
  if os.path.exists(path) and not overwrite:
    raise FileExistsError(f"{path} already exists (an exported version); pass --overwrite to "
                          "replace it, or choose another --version or --export_dir")
  archive = export_archive(role_model, serving_functions(role_model, cfg))
  model_name = model_name or os.path.basename(os.path.dirname(os.path.abspath(path)))
  records = warmup_records(cfg, model_name)
  _write_in_place_of(archive, path, lambda tmp: write_warmup(tmp, records))
  return path


def _write_in_place_of(archive, path: str, finish=None) -> None:
  """Writes `archive` to a temp folder beside `path`, calls `finish(temp folder)` (extra files
  of the version), then renames it to `path`."""
  parent, name = os.path.split(os.path.abspath(path))
  os.makedirs(parent, exist_ok=True)
  tmp, old = os.path.join(parent, f".{name}.tmp"), os.path.join(parent, f".{name}.old")
  for leftover in (tmp, old):  # of an export killed earlier
    shutil.rmtree(leftover, ignore_errors=True)
  try:
    archive.write_out(tmp, verbose=False)
    if finish is not None:
      finish(tmp)
  except Exception as e:
    shutil.rmtree(tmp, ignore_errors=True)
    if atomic.is_disk_full(e):
      raise atomic.disk_full_error(path, 0) from e
    raise
  if os.path.exists(path):
    os.replace(path, old)
  os.replace(tmp, path)
  shutil.rmtree(old, ignore_errors=True)


def models_config(serving_dir: str, mount: str = "/models") -> str:
  """TF Serving model config text serving every role exported under `serving_dir` (each
  `<role>/` holding a numeric version) side by side, as model `<role>`, with `serving_dir`
  mounted at `mount` in the server's container."""
  roles = [role for role in ROLES if os.path.isdir(os.path.join(serving_dir, role)) and any(
      v.isdigit() for v in os.listdir(os.path.join(serving_dir, role)))]
  entries = "".join(
      f'  config {{\n    name: "{role}"\n    base_path: "{mount}/{role}"\n'
      '    model_platform: "tensorflow"\n  }\n' for role in roles)
  return ("# TF Serving model config: every role exported in this folder, side by side.\n"
          f"# docker run -p 8500:8500 -p 8501:8501 -v <this folder>:{mount} tensorflow/serving \\\n"
          f"#   --model_config_file={mount}/{MODELS_CONFIG}\n"
          f"model_config_list {{\n{entries}}}\n")


def run(model_dir: str, export_dir: str = "", role: str = "teacher", version: int = 1,
        overwrite: bool = False, serving_dir: str = "") -> str | list:
  """Exports `role` ("teacher", "student" or "all": every role the model has).

  `export_dir`: one role's base path (`<export_dir>/<version>`; returns that path).
  Otherwise `<serving_dir or model_dir/export>/<role>/<version>` per role plus the folder's
  models.config; returns the path for one role, the list of paths for "all".
  """
  if export_dir and serving_dir:
    raise ValueError("give --export_dir (one role's base path) or --serving_dir (a folder of "
                     "<role>/<version>/ base paths), not both")
  if export_dir and role == "all":
    raise ValueError("--role=all needs --serving_dir (or the default <model_dir>/export): "
                     "--export_dir is the base path of one role")
  cfg, network, _ = experiment.load_trained(model_dir)
  roles = [r for r in ROLES if getattr(network, r) is not None] if role == "all" else [role]
  for r in roles:
    if getattr(network, r) is None:
      raise ValueError(f"--role={r}: the {cfg.method.name} model has no {r}")
  root = serving_dir or os.path.dirname(experiment.RunPaths(model_dir).export(roles[0]))
  # the default base path is inside the run directory: take its lock while writing there
  lock = (contextlib.nullcontext() if export_dir or serving_dir
          else rundir.locked(model_dir, "sdmtcnn_tf.export",
                             elsewhere="--export_dir or --serving_dir outside it"))
  with lock:
    if export_dir:
      return export_role(network.teacher if role == "teacher" else network.student, cfg,
                         os.path.join(export_dir, str(version)), overwrite)
    paths = [export_role(getattr(network, r), cfg, os.path.join(root, r, str(version)),
                         overwrite, model_name=r) for r in roles]
    atomic.write_text(os.path.join(root, MODELS_CONFIG), models_config(root), "models_config")
  return paths if role == "all" else paths[0]


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
  paths = run(FLAGS.model_dir, FLAGS.export_dir, FLAGS.role, FLAGS.version, FLAGS.overwrite,
              FLAGS.serving_dir)
  for path in paths if isinstance(paths, list) else [paths]:
    print(f"exported the {os.path.basename(os.path.dirname(path))} to {path}"
          if FLAGS.role == "all" else f"exported the {FLAGS.role} to {path}")
  if not FLAGS.export_dir:
    root = FLAGS.serving_dir or os.path.join(FLAGS.model_dir, "export")
    print(f"TF Serving model config: {os.path.join(root, MODELS_CONFIG)}")


if __name__ == "__main__":
  # Every training flag is accepted (the training flagfile works here), see run_overrides.
  config_lib.define_flags()
  flags.DEFINE_string("export_dir", "", "One role's TF Serving base path: writes "
                      "<export_dir>/<version>/ (no models.config). Default: see --serving_dir.")
  flags.DEFINE_string("serving_dir", "", "Folder of TF Serving base paths: writes "
                      "<serving_dir>/<role>/<version>/ and <serving_dir>/models.config; "
                      "default <model_dir>/export.")
  flags.DEFINE_enum("role", "teacher", ["teacher", "student", "all"],
                    "Which network to export; all: every one the model has.")
  flags.DEFINE_integer("version", 1, "Model version sub-directory.")
  flags.DEFINE_bool("overwrite", False, "Replace an existing <export_dir>/<version>.")
  flags.DEFINE_enum("format", "savedmodel", ["savedmodel", "tflite"],
                    "savedmodel: TF Serving SavedModel; tflite: the student as "
                    "<export_dir>/student_<variant>.tflite (sdmtcnn_tf/edge.py).")
  flags.DEFINE_enum("quantize", "none", ["none", "dynamic", "int8"],
                    "--format=tflite: none (float32), dynamic (int8 weights) or int8 (full "
                    "integer, calibrated on 100 training images).")
  cli.run(main)
