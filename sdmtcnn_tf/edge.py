"""Edge export: the student as a TensorFlow Lite file, and its size and CPU latency.

    python -m sdmtcnn_tf.export --model_dir=RUN --format=tflite [--quantize=none|dynamic|int8]
        [--export_dir=DIR] [--overwrite] [--data_dir=DIR]

writes `<export_dir>/student_<float32|dynamic|int8>.tflite` (default export_dir
`<model_dir>/export/student`, the student's SavedModel base path: TF Serving reads only the
numbered version folders there and ignores these files). An existing file is refused unless
--overwrite; the file is written to a temp file beside it and renamed (atomic.py).

Only the student is exported: it is what the paper deploys, and SegNet's teacher decodes with
the argmax pooling indices (`tf.nn.max_pool_with_argmax` + scatter), which have no TFLite
builtin. The student never reads the indices, so the network's student
(models/build.index_free) runs plain max pooling with the very same layers and weights.

The file's one signature (`serving_default`) takes `image`: float32 [1, H, W, 3] RGB in [0, 1]
(pixel / 255, the Keras student's own input) at the training size, in all three variants: the
int8 file quantises it with its first op (the scale and zero point calibrated on training
images), so a client feeds every variant the same array. Outputs are named as the SavedModel's
(Task.serving_outputs): `semseg_logits` float32 [1, H, W, C], `semseg_labels` int32 [1, H, W],
`depth` [1, H, W], `normals` [1, H, W, 3], `keypoints`, `edges`; the int8 file computes in int8
and dequantises its outputs to float32.

--quantize: `none` float32; `dynamic` dynamic-range quantisation (int8 weights, float
activations quantised at run time per tensor); `int8` full-integer post-training quantisation
(int8 weights and activations, integer builtins only: TFLITE_BUILTINS_INT8), calibrated on the
first CALIBRATION_IMAGES training images in the order of the evaluation pipeline
(experiment.dataset(training=False): no shuffling, no augmentation), or on all of them when the
training split is smaller (the CLI says so).

`python -m sdmtcnn_tf.edge --config=configs/<x>.flags` measures size and batch-1 CPU latency of
the teacher SavedModel, the student SavedModel and the student TFLite (float32, int8) of a
config with freshly initialised weights (latency only; BUILD_NOTES.md has the numbers).
"""

from __future__ import annotations

import contextlib
import os
import tempfile

from sdmtcnn_tf import cli  # first: it quiets TensorFlow's C++ logs before TF is imported

import keras
import numpy as np
import tensorflow as tf

from sdmtcnn_tf import atomic, experiment, hardware, methods, rundir, timing
from sdmtcnn_tf import config as config_lib

QUANTIZE = ("none", "dynamic", "int8")
VARIANT = {"none": "float32", "dynamic": "dynamic", "int8": "int8"}
CALIBRATION_IMAGES = 100
SIGNATURE = "serving_default"


def file_name(quantize: str) -> str:
  return f"student_{VARIANT[quantize]}.tflite"


# ---- the graph --------------------------------------------------------------------------------
def _write_saved_model(model: keras.Model, cfg, directory: str) -> None:
  """`model` as a SavedModel whose `serving_default` signature maps `image` float32
  [1, H, W, 3] to the named outputs (export.serving_outputs: the SavedModel export's names)."""
  from sdmtcnn_tf import export
  tasks = cfg.task_specs

  @tf.function(input_signature=[tf.TensorSpec([1, cfg.data.height, cfg.data.width, 3],
                                              tf.float32, name="image")])
  def serve(image):
    return export.serving_outputs(model(image, training=False), tasks)

  # each weight once, as in the TF Serving export (Keras' `track` would store it twice)
  export.export_archive(model, {SIGNATURE: serve}).write_out(directory, verbose=False)


def convert(model: keras.Model, cfg, quantize: str = "none", calibration=None) -> bytes:
  """The .tflite flatbuffer of `model` (image float [0, 1] -> {task: output}, no argmax
  pooling: models/build.index_free), converted from a temporary SavedModel so that the file
  keeps the signature's input and output names. `calibration`: float32 images [N, H, W, 3] in
  [0, 1], required for quantize="int8"."""
  if quantize not in QUANTIZE:
    raise ValueError(f"--quantize: expected one of {', '.join(QUANTIZE)}, got {quantize!r}")
  if quantize == "int8" and (calibration is None or len(calibration) == 0):
    raise ValueError("--quantize=int8 needs calibration images")
  with tempfile.TemporaryDirectory(prefix="sdmtcnn_tflite_") as directory:
    _write_saved_model(model, cfg, directory)
    converter = tf.lite.TFLiteConverter.from_saved_model(directory, signature_keys=[SIGNATURE])
    if quantize != "none":
      converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantize == "int8":
      images = np.asarray(calibration, np.float32)
      converter.representative_dataset = lambda: ([image[None]] for image in images)
      converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    return converter.convert()


def calibration_images(cfg, count: int = CALIBRATION_IMAGES) -> tuple:
  """(float32 [n, H, W, 3] in [0, 1], note): the first min(count, training size) training
  images as the evaluation pipeline reads them (manifest order, no augmentation). `note` is
  "" or a sentence saying that the split had fewer than `count` images."""
  manifest = experiment.prepare_data(cfg, experiment.TRAIN_SPLIT)
  available = manifest.num_examples(experiment.TRAIN_SPLIT)
  n = min(count, available)
  ds = experiment.dataset(cfg, manifest, experiment.TRAIN_SPLIT, training=False, batch_size=1)
  images = np.concatenate([image.numpy() for image, _ in ds.take(n)], 0)
  note = ("" if n == count else
          f"calibrated on all {n} training images of {cfg.data.data_dir} (fewer than {count})")
  return images, note


# ---- running a .tflite file -------------------------------------------------------------------
class TFLiteModel:
  """A .tflite file in `tf.lite.Interpreter`: call(images float32 [N, H, W, 3] in [0, 1]) ->
  {output name: [N, ...]} (batch 1 per invocation, as the file's signature)."""

  def __init__(self, path: str, num_threads: int | None = None):
    self.interpreter = tf.lite.Interpreter(model_path=path, num_threads=num_threads)
    signatures = self.interpreter.get_signature_list()
    if SIGNATURE not in signatures:
      raise ValueError(f"{path}: no {SIGNATURE!r} signature (has {list(signatures)})")
    self.runner = self.interpreter.get_signature_runner(SIGNATURE)
    self.output_names = tuple(signatures[SIGNATURE]["outputs"])

  def __call__(self, images) -> dict:
    outputs = [self.runner(image=np.asarray(image[None], np.float32))
               for image in np.asarray(images)]
    return {name: np.concatenate([o[name] for o in outputs], 0) for name in self.output_names}

  def _ops(self) -> list:
    """The file's ops (without the DELEGATE nodes that XNNPACK puts in place of the ops it
    runs: their details stay listed)."""
    return [op for op in self.interpreter._get_ops_details()  # pylint: disable=protected-access
            if op["op_name"] != "DELEGATE"]

  def tensor_dtypes(self) -> dict:
    """{op name: sorted dtype names of its inputs} over the file's ops (to check what an
    int8 file computes in)."""
    tensors = {t["index"]: t for t in self.interpreter.get_tensor_details()}
    out = {}
    for op in self._ops():
      dtypes = {np.dtype(tensors[i]["dtype"]).name for i in op["inputs"] if i >= 0}
      out.setdefault(op["op_name"], set()).update(dtypes)
    return {name: sorted(d) for name, d in out.items()}

  def output_step(self, name: str) -> float | None:
    """The quantisation step (scale) of the integer tensor that output `name` is dequantised
    from (following the ops that produce it back to the DEQUANTIZE); None when there is none
    (float files)."""
    tensors = {t["index"]: t for t in self.interpreter.get_tensor_details()}
    producer = {out: op for op in self._ops() for out in op["outputs"]}
    index = self.runner.get_output_details()[name]["index"]
    while index in producer:
      op = producer[index]
      if op["op_name"] == "DEQUANTIZE":
        scale, _ = tensors[op["inputs"][0]]["quantization"]
        return float(scale) or None
      index = op["inputs"][0]
    return None


# ---- export -------------------------------------------------------------------------------------
def refuse_teacher() -> ValueError:
  return ValueError("--format=tflite exports the student only (--role=student): the teacher's "
                    "SegNet unpooling needs the argmax pooling indices, which have no TFLite op; "
                    "export the teacher as a SavedModel (--format=savedmodel)")


def export_tflite(model_dir: str, export_dir: str = "", quantize: str = "none",
                  overwrite: bool = False, data_dir: str = "") -> tuple:
  """Writes the run's student as `<export_dir>/student_<variant>.tflite` (see the module
  docstring). Returns (path, note); `note` is "" or says what calibrated an int8 file on fewer
  than CALIBRATION_IMAGES images. `data_dir` overrides the run's (int8 calibration only)."""
  if quantize not in QUANTIZE:
    raise ValueError(f"--quantize: expected one of {', '.join(QUANTIZE)}, got {quantize!r}")
  saved = config_lib.load(model_dir)
  if "student" not in methods.get(saved.method.name).roles:
    raise ValueError(f"--format=tflite: the {saved.method.name} model in {model_dir!r} has no "
                     "student (only the self-distillation and traditional_kd methods train one)")
  base = export_dir or experiment.RunPaths(model_dir).export("student")
  path = os.path.join(base, file_name(quantize))
  if os.path.exists(path) and not overwrite:
    raise FileExistsError(f"{path} already exists; pass --overwrite to replace it, or choose "
                          "another --export_dir")
  overrides = {"data_dir": data_dir} if data_dir else {}
  cfg, network, _ = experiment.load_trained(model_dir, **overrides)
  calibration, note = (calibration_images(cfg) if quantize == "int8" else (None, ""))
  data = convert(network.student, cfg, quantize, calibration)
  # the default base path is inside the run directory: take its lock while writing there
  lock = contextlib.nullcontext() if export_dir else rundir.locked(
      model_dir, "sdmtcnn_tf.export", elsewhere="--export_dir outside it")
  with lock:
    write(path, data)
  return path, note


def write(path: str, data: bytes) -> None:
  """`data` to `path` atomically (a temp file beside it, renamed into place)."""
  with atomic.replacing(path, "tflite", len(data)) as tmp:
    with open(tmp, "wb") as f:
      f.write(data)


def main(flag_values) -> None:
  """`export --format=tflite` (called by export.main with its parsed flags)."""
  if flag_values["role"].present and flag_values.role != "student":
    raise refuse_teacher()
  data_dir = flag_values.data_dir if flag_values["data_dir"].present else ""
  path, note = export_tflite(flag_values.model_dir, flag_values.export_dir, flag_values.quantize,
                             flag_values.overwrite, data_dir)
  print(f"exported the student ({VARIANT[flag_values.quantize]}) to {path}"
        + (f"; {note}" if note else ""))


# ---- size and latency ---------------------------------------------------------------------------
def _bytes(path: str) -> int:
  if os.path.isfile(path):
    return os.path.getsize(path)
  return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path) for f in files)


def _median_ms(call, runs: int, warmup: int) -> float:
  return 1000 * timing.median_after(timing.call_seconds(call, warmup + runs), warmup)


def saved_model_latencies_ms(models: dict, cfg, out_dir: str, image: np.ndarray, runs: int,
                             warmup: int = 2) -> dict:
  """Exports each of `models` ({role: a role network of `cfg`}) to `out_dir`/<role>/1 (replaced
  if there) and returns {role: median latency in ms} of `runs` calls of its serving_default on
  uint8 `image` [B, H, W, 3], outputs fetched to numpy, after `warmup` untimed calls. The roles'
  calls alternate (timing.interleaved_seconds), so their ratio holds on a machine whose speed
  drifts."""
  from sdmtcnn_tf import export
  def served(model, role):
    path = export.export_role(model, cfg, os.path.join(out_dir, role, "1"), overwrite=True)
    signature = tf.saved_model.load(path).signatures[export.SIGNATURE]
    return lambda: {k: v.numpy() for k, v in signature(image=tf.constant(image)).items()}

  calls = {role: served(model, role) for role, model in models.items()}
  times = timing.interleaved_seconds(calls, warmup + runs)
  return {role: 1000 * timing.median_after(t, warmup) for role, t in times.items()}


def measure(cfg, out_dir: str, runs: int = 10, warmup: int = 2, calibration: int = 8,
            threads: int | None = None) -> list:
  """Size (bytes) and batch-1 CPU latency (median of `runs` after `warmup` calls, ms) of the
  teacher SavedModel, the student SavedModel and the student TFLite float32 and int8 files of
  `cfg`'s network with freshly initialised weights, written under `out_dir`. The int8 file is
  calibrated on `calibration` random images: latency only (its outputs mean nothing).
  `threads`: TFLite interpreter threads (default: every core, as TensorFlow's own default).
  Returns [(artefact, bytes, ms)]."""
  threads = threads or hardware.usable_cpus()
  network, _ = experiment.build_model(cfg)
  if network.student is None:
    raise ValueError(f"--method={cfg.method.name} has no student")
  rng = np.random.default_rng(0)
  image = rng.integers(0, 256, (1, cfg.data.height, cfg.data.width, 3), dtype=np.uint8)
  rows = []
  latency = saved_model_latencies_ms({"teacher": network.teacher, "student": network.student},
                                     cfg, out_dir, image, runs, warmup)
  for role, ms in latency.items():
    rows.append((f"{role} SavedModel", _bytes(os.path.join(out_dir, role, "1")), ms))
  floats = image.astype(np.float32) / 255.0
  for quantize in ("none", "int8"):
    images = rng.random((calibration, cfg.data.height, cfg.data.width, 3), dtype=np.float32)
    path = os.path.join(out_dir, file_name(quantize))
    write(path, convert(network.student, cfg, quantize, images if quantize == "int8" else None))
    model = TFLiteModel(path, num_threads=threads)
    rows.append((f"student TFLite {VARIANT[quantize]}", _bytes(path),
                 _median_ms(lambda: model(floats), runs, warmup)))
  return rows


def bench_main(argv) -> None:
  from absl import flags
  cli.check_no_arguments(argv)
  FLAGS = flags.FLAGS
  cfg = config_lib.parse_flagfile(FLAGS.config, teacher_dir="")
  rows = measure(cfg, FLAGS.out_dir, FLAGS.runs, calibration=FLAGS.calibration)
  print(f"{FLAGS.config}: {cfg.method.name} {cfg.model.backbone}, {cfg.data.height}x"
        f"{cfg.data.width}, width x{cfg.model.width_multiplier}, untrained weights (latency "
        f"only), batch 1, median of {FLAGS.runs} runs, {hardware.usable_cpus()} threads")
  print("| artefact | size (MB) | latency (ms) |\n|---|---|---|")
  for name, size, ms in rows:
    print(f"| {name} | {size / 1e6:.1f} | {ms:.0f} |")


if __name__ == "__main__":
  from absl import flags
  flags.DEFINE_string("config", "configs/nyuv2_sd_mtcnn_eq5_full.flags",
                      "Flagfile of the model to measure (a method with a student).")
  flags.DEFINE_string("out_dir", "/tmp/sdmtcnn_edge_bench", "Where the exports are written.")
  flags.DEFINE_integer("runs", 10, "Timed calls per artefact (after 2 warm-up calls).")
  flags.DEFINE_integer("calibration", 8, "Random calibration images of the int8 file.")
  cli.run(bench_main)
