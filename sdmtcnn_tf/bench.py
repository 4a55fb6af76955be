"""`make bench`: where the time goes, as JSON lines and `bench/results.json` (issue 11).

`python -m sdmtcnn_tf.bench [--steps=3] [--compare_torch] [--out=bench/results.json]`

Every measurement is printed as one JSON line `{"name": ..., "value": ..., "unit": ..., ...}` as
soon as it is taken; at the end each target is printed as a line `{"target": ..., "ratio": ...,
"pass": true|false}` (the ratio is measured / required, PASS when >= 1), and everything is
written atomically to --out. Sections (--sections, all by default):
  peak      a 3x3 convolution alone, fp32 and bf16: the machine's conv peak (GFLOP/s)
  reference MTAN's split SegNet (3 tasks, shared decoder, 25,055,185 parameters) at
            --reference_size, batch --reference_batch, Adam, fp32 and bf16: img/s and the
            fraction of the conv peak reached (3 x forward conv FLOPs per training image)
  train     training img/s of each --configs flagfile (Baseline-1, SD-MTCNN full at the NYUv2
            and CityScapes sizes by default), in each --precisions
  data      tf.data: decode + augment + batch from TFRecords, on one core (img/s)
  latency   batch-1 latency (ms) of the exported teacher and student SavedModels of each
            --latency_configs flagfile, their calls alternating (the ratio is the target)
  profile   (only when named) the reference training step traced with tf.profiler: seconds
            per step by op type (sdmtcnn_tf/profile_ops.py), --profile_dir keeps the trace
  memory    peak RSS (GiB) of a process that trains the reference network for 2 steps at batch
            --memory_batch (a fresh child process, so nothing else counts)
  flops     parameters and forward conv GFLOP per image of every network timed
--compare_torch (requirements-bench.txt) times the same reference network in PyTorch (fp32 and
bf16 autocast) in the same run, and checks the parameter counts agree.

Training is timed on one random in-memory batch (the input pipeline is measured on its own):
the median of --steps steps after --warmup untimed ones (the first traces the graph).
Timings on a shared machine are noisy: compare the ratios of one run, not numbers across runs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

from sdmtcnn_tf import cli  # first: it quiets TensorFlow's C++ logs before TF is imported

import keras
import numpy as np
import tensorflow as tf
from absl import flags

from sdmtcnn_tf import atomic, distribute, experiment, hardware, timing
from sdmtcnn_tf import config as config_lib
from sdmtcnn_tf.config import ExperimentConfig
from sdmtcnn_tf.models.build import count_params

FLAGS = flags.FLAGS

SECTIONS = ("peak", "reference", "profile", "train", "data", "latency", "memory", "flops")
DEFAULT_SECTIONS = tuple(s for s in SECTIONS if s != "profile")  # the profile is asked for
PRECISION_NAMES = {"off": "fp32", "mixed_float16": "fp16", "mixed_bfloat16": "bf16"}
REFERENCE_PARAMS = 25_055_185  # MTAN's split SegNet, 13 classes, seg + depth + normals
# issue 11's targets (this repository's numbers at the time it was filed: 0.55 img/s fp32,
# 1.23 img/s bf16, on a 2-core Xeon with AMX)
TARGET_FP32_PEAK_FRACTION = 0.70
TARGET_FP32_VS_TORCH = 1.3
TARGET_BF16_IMG_S = 2.5
TARGET_BF16_VS_TORCH = 1.5
TARGET_STUDENT_LATENCY = 0.5  # student / teacher
TARGET_DATA_VS_TRAIN = 5.0
TARGET_DATA_IMG_S = 100.0
TARGET_MEMORY_VS_TORCH = 2.0


def define_flags() -> None:
  flags.DEFINE_list("sections", list(DEFAULT_SECTIONS), f"Which measurements to take: "
                    f"{SECTIONS} (profile only when named).")
  flags.DEFINE_string("profile_dir", "", "section profile: keep the traces here (TensorBoard's "
                      "profile plugin opens them); empty = a temporary folder, removed.")
  flags.DEFINE_integer("profile_top", 12, "section profile: op types listed by name.")
  flags.DEFINE_list("configs", ["configs/nyuv2_vanilla.flags",
                                "configs/nyuv2_sd_mtcnn_eq5_full.flags",
                                "configs/cityscapes_vanilla.flags",
                                "configs/cityscapes_sd_mtcnn_eq5_full.flags"],
                    "Flagfiles whose training step is timed (section train).")
  flags.DEFINE_list("latency_configs", ["configs/nyuv2_sd_mtcnn_eq5_full.flags",
                                        "configs/cityscapes_sd_mtcnn_eq5_full.flags"],
                    "Flagfiles (methods with a student) whose exports are timed.")
  flags.DEFINE_list("precisions", ["auto"],
                    f"--mixed_precision values to time: {config_lib.PRECISIONS}; auto = off, "
                    "plus mixed_bfloat16 where the CPU has bf16 hardware (AMX or AVX512-BF16; "
                    "elsewhere bf16 is emulated, about 10x slower than fp32, and the defaults "
                    "would not finish in 10 minutes).")
  flags.DEFINE_integer("steps", 3, "Timed training steps per measurement (median).")
  flags.DEFINE_integer("warmup", 1, "Untimed training steps first (the first one traces).")
  flags.DEFINE_integer("batch", 0, "Training batch size of every config; 0 = each config's.")
  flags.DEFINE_integer("height", 0, "Input height of every network; 0 = each config's.")
  flags.DEFINE_integer("width", 0, "Input width of every network; 0 = each config's.")
  flags.DEFINE_float("width_multiplier", 0.0, "Filter scale of every network; 0 = each config's "
                                              "(the test runs the bench at 1/16).")
  flags.DEFINE_list("reference_size", ["288", "384"], "Height,width of the reference network.")
  flags.DEFINE_integer("reference_batch", 2, "Batch of the reference network's training step.")
  flags.DEFINE_integer("memory_batch", 8, "Batch of the peak-memory measurement.")
  flags.DEFINE_integer("latency_runs", 5, "Timed batch-1 calls per export (median, after 2; "
                                          "teacher and student calls alternate).")
  flags.DEFINE_string("data_dir", "", "Converted TFRecords for section data; empty = random "
                                      "records in the same format written to a temp folder at "
                                      "the reference size.")
  flags.DEFINE_integer("data_examples", 64, "Examples of the generated records (section data).")
  flags.DEFINE_integer("data_batches", 20, "Timed batches of section data (after 2).")
  flags.DEFINE_list("conv_shape", ["4", "72", "96", "256"], "[B, H, W, C] of the peak "
                                                            "convolution (C -> C filters, 3x3).")
  flags.DEFINE_bool("compare_torch", False, "Also time the reference network in PyTorch "
                                            "(pip install -r requirements-bench.txt).")
  flags.DEFINE_string("out", "bench/results.json", "Where all the results are written.")
  flags.DEFINE_string("child", "", "Internal: run one measurement in this process and print it "
                                   "(memory_tf | memory_torch).")


# ---- recording -------------------------------------------------------------------------------
class Recorder:
  """Collects measurements and targets; prints each as one JSON line when it is added."""

  def __init__(self):
    self.measurements, self.targets = [], []

  def add(self, name: str, value: float, unit: str, **context) -> dict:
    row = {"name": name, "value": round(float(value), 6), "unit": unit, **context}
    self.measurements.append(row)
    print(json.dumps(row), flush=True)
    return row

  def get(self, name: str):
    return next((m["value"] for m in self.measurements if m["name"] == name), None)

  def target(self, name: str, measured: float, required: float, what: str) -> None:
    """`what`: how measured and required are defined. The ratio is measured / required."""
    row = {"target": name, "measured": round(float(measured), 6), "required": required,
           "ratio": round(float(measured) / required, 4), "pass": bool(measured >= required),
           "what": what}
    row["status"] = "PASS" if row["pass"] else "MISS"
    self.targets.append(row)
    print(json.dumps(row), flush=True)


def machine() -> dict:
  return {**hardware.cpu_info(), "tensorflow": tf.__version__, "keras": keras.__version__,
          "load_average": os.getloadavg()[0]}


# ---- networks --------------------------------------------------------------------------------
def _config(path: str, **overrides) -> ExperimentConfig:
  sizes = {k: v for k, v in (("height", FLAGS.height), ("width", FLAGS.width),
                             ("width_multiplier", FLAGS.width_multiplier)) if v}
  return config_lib.parse_flagfile(path, teacher_dir="", **{**sizes, **overrides})


def reference_config(precision: str = "off") -> ExperimentConfig:
  """MTAN's split SegNet: NYUv2's 13 classes, semseg + depth + normals, one shared decoder,
  Adam, at --reference_size (--width_multiplier scales it for tests)."""
  height, width = map(int, FLAGS.reference_size)
  overrides = {"tasks": ("semseg", "depth", "normals"), "decoder": "shared",
               "height": height, "width": width, "mixed_precision": precision}
  if FLAGS.width_multiplier:
    overrides["width_multiplier"] = FLAGS.width_multiplier
  return config_lib.parse_flagfile("configs/nyuv2_vanilla.flags", teacher_dir="", **overrides)


def conv_flops(model: keras.Model) -> int:
  """Forward FLOPs per image of `model`'s convolutions (2 per multiply-add; bias, BatchNorm and
  element-wise work left out: they are what the peak fraction leaves to spare)."""
  total = 0
  for layer in model._flatten_layers(include_self=False):
    if isinstance(layer, keras.layers.Conv2D):
      _, height, width, filters = layer.output.shape
      k_h, k_w, cin, _ = layer.kernel.shape
      total += 2 * height * width * filters * k_h * k_w * cin
  return int(total)


def random_batch(cfg: ExperimentConfig, batch: int, seed: int = 0):
  """(image float32 [B, H, W, 3] in [0, 1], {task: label}) as tensors, labels from each task's
  random_label."""
  rng = np.random.default_rng(seed)
  image = rng.random((batch, cfg.data.height, cfg.data.width, 3), dtype=np.float32)
  labels = {task.name: task.random_label(rng, batch, cfg.data.height, cfg.data.width)
            for task in cfg.task_specs}
  return tf.constant(image), tf.nest.map_structure(tf.constant, labels)


@contextlib.contextmanager
def compiled_model(cfg: ExperimentConfig):
  """Yields (network, compiled training model) of `cfg` under its precision policy; restores
  float32 and clears the Keras session afterwards."""
  keras.backend.clear_session()
  distribute.set_precision(cfg)
  try:
    network, model = experiment.build_model(cfg)
    experiment.compile_model(model, cfg)
    # as fit does (train.py's ResumableBackup): an optimizer built inside the first step makes
    # tf.function trace the step twice (its variables are created on the first trace)
    model.optimizer.build(model.trainable_variables)
    yield network, model
  finally:
    keras.mixed_precision.set_global_policy("float32")
    keras.backend.clear_session()


def time_training(cfg: ExperimentConfig, batch: int, steps: int, warmup: int) -> dict:
  """Builds and compiles `cfg`'s model under its precision and times its training step.

  Returns {"step_s": median seconds per step, "img_s": batch / step_s, "first_s": seconds of
  the first (tracing) step, "params": training-graph parameters, "teacher_params",
  "student_params", "teacher_gflop", "student_gflop": forward conv GFLOP per image}.
  """
  with compiled_model(cfg) as (network, model):
    image, labels = random_batch(cfg, batch)
    times = timing.call_seconds(lambda: model.train_on_batch(image, labels),
                                max(warmup, 1) + steps)
    step = timing.median_after(times, max(warmup, 1))
    return {"step_s": step, "img_s": batch / step, "first_s": times[0],
            "params": count_params(network.model), "teacher_params": count_params(network.teacher),
            "student_params": count_params(network.student),
            "teacher_gflop": conv_flops(network.teacher) / 1e9,
            "student_gflop": conv_flops(network.student) / 1e9 if network.student else 0.0}


def profile_training(cfg: ExperimentConfig, batch: int, steps: int, warmup: int,
                     logdir: str) -> tuple:
  """Traces `steps` training steps of `cfg` (after `warmup`, at least 1) into `logdir`.

  Returns (op self seconds per step by op type, wall seconds per step)."""
  from sdmtcnn_tf import profile_ops
  with compiled_model(cfg) as (_, model):
    image, labels = random_batch(cfg, batch)
    for _ in range(max(warmup, 1)):
      model.train_on_batch(image, labels)
    start = time.perf_counter()
    profile_ops.trace(lambda: model.train_on_batch(image, labels), steps, logdir)
    wall = (time.perf_counter() - start) / steps
  seconds = profile_ops.op_seconds(logdir)
  return {kind: s / steps for kind, s in seconds.items()}, wall


def conv_peak(shape, dtype, repeats: int = 10) -> float:
  """GFLOP/s of a 3x3 SAME convolution C -> C on a [B, H, W, C] input in `dtype`, forward only
  (median of `repeats` after 2)."""
  b, h, w, c = shape
  x = tf.random.uniform(shape, dtype=tf.float32)
  k = tf.random.uniform((3, 3, c, c), dtype=tf.float32) / (9 * c)
  x, k = tf.cast(x, dtype), tf.cast(k, dtype)
  conv = tf.function(lambda x, k: tf.nn.conv2d(x, k, 1, "SAME"))
  times = timing.call_seconds(lambda: conv(x, k).numpy(), repeats + 2)
  return 2 * b * h * w * c * c * 9 / timing.median_after(times, 2) / 1e9


# ---- sections --------------------------------------------------------------------------------
def section_peak(rec: Recorder) -> None:
  shape = [int(v) for v in FLAGS.conv_shape]
  for name, dtype in (("fp32", tf.float32), ("bf16", tf.bfloat16)):
    rec.add(f"conv_peak/{name}", conv_peak(shape, dtype), "GFLOP/s", shape=shape)


def section_reference(rec: Recorder) -> None:
  for precision in FLAGS.precisions:
    cfg = reference_config(precision)
    result = time_training(cfg, FLAGS.reference_batch, FLAGS.steps, FLAGS.warmup)
    if not FLAGS.width_multiplier and result["params"] != REFERENCE_PARAMS:
      raise AssertionError(f"the reference network has {result['params']:,} parameters, not "
                           f"MTAN's split SegNet's {REFERENCE_PARAMS:,}")
    p = PRECISION_NAMES[precision]
    context = {"height": cfg.data.height, "width": cfg.data.width,
               "batch": FLAGS.reference_batch, "params": result["params"]}
    rec.add(f"reference/train_img_s/{p}", result["img_s"], "img/s", **context)
    rec.add(f"reference/train_step_s/{p}", result["step_s"], "s", first_s=result["first_s"],
            **context)
    gflop = 3 * result["teacher_gflop"]  # forward + two backward products per conv
    rec.add(f"reference/train_gflop_s/{p}", gflop * result["img_s"], "GFLOP/s",
            gflop_per_image=gflop)
    peak = rec.get(f"conv_peak/{p}")
    if peak:
      rec.add(f"reference/peak_fraction/{p}", gflop * result["img_s"] / peak, "fraction")
    if "flops" in FLAGS.sections and precision == FLAGS.precisions[0]:
      rec.add("flops/reference/params", result["params"], "parameters")
      rec.add("flops/reference/forward_gflop", result["teacher_gflop"], "GFLOP/image",
              height=cfg.data.height, width=cfg.data.width)


def section_profile(rec: Recorder) -> None:
  """The reference network's training step traced with tf.profiler, in each precision: the
  --profile_top op types by self time per step (summed over threads), the rest as "other"."""
  for precision in FLAGS.precisions:
    cfg = reference_config(precision)
    p = PRECISION_NAMES[precision]
    logdir = (os.path.join(FLAGS.profile_dir, p) if FLAGS.profile_dir
              else tempfile.mkdtemp(prefix="sdmtcnn_bench_profile_"))
    try:
      seconds, wall = profile_training(cfg, FLAGS.reference_batch, FLAGS.steps, FLAGS.warmup,
                                       logdir)
    finally:
      if not FLAGS.profile_dir:
        shutil.rmtree(logdir, ignore_errors=True)
    total = sum(seconds.values())
    rec.add(f"profile/{p}/wall_s", wall, "s/step", batch=FLAGS.reference_batch,
            height=cfg.data.height, width=cfg.data.width, trace=FLAGS.profile_dir or None)
    rec.add(f"profile/{p}/op_s/total", total, "s/step", what="op self time over all threads")
    ranked = sorted(seconds.items(), key=lambda kv: -kv[1])
    for kind, s in ranked[:FLAGS.profile_top]:
      rec.add(f"profile/{p}/op_s/{kind}", s, "s/step", share=round(s / total, 4))
    rec.add(f"profile/{p}/op_s/other", sum(s for _, s in ranked[FLAGS.profile_top:]), "s/step")


def _label(path: str) -> str:
  return os.path.basename(path)[:-len(".flags")] if path.endswith(".flags") else path


def section_train(rec: Recorder) -> None:
  for path in FLAGS.configs:
    for precision in FLAGS.precisions:
      cfg = _config(path, mixed_precision=precision)
      batch = FLAGS.batch or cfg.optim.batch_size
      result = time_training(cfg, batch, FLAGS.steps, FLAGS.warmup)
      p = PRECISION_NAMES[precision]
      rec.add(f"train_img_s/{_label(path)}/{p}", result["img_s"], "img/s",
              step_s=result["step_s"], first_s=result["first_s"], batch=batch,
              height=cfg.data.height, width=cfg.data.width, method=cfg.method.name)
      if "flops" in FLAGS.sections and precision == FLAGS.precisions[0]:
        for role in ("teacher", "student"):
          if result[f"{role}_params"]:
            rec.add(f"flops/{_label(path)}/{role}_params", result[f"{role}_params"],
                    "parameters")
            rec.add(f"flops/{_label(path)}/{role}_forward_gflop", result[f"{role}_gflop"],
                    "GFLOP/image", height=cfg.data.height, width=cfg.data.width)


def write_random_records(out_dir: str, cfg: ExperimentConfig, count: int) -> None:
  """`count` random examples of `cfg`'s size and tasks as a converted dataset (train split,
  2 shards, manifest), in the converters' format (data/schema.py)."""
  from sdmtcnn_tf.data import schema
  rng = np.random.default_rng(0)
  h, w = cfg.data.height, cfg.data.width

  def examples():
    for i in range(count):
      normals = rng.normal(size=(h, w, 3))
      labels = {"semseg": rng.integers(-1, cfg.data.num_classes, (h, w)),
                "depth": rng.uniform(0.5, 10, (h, w)),
                "normals": normals / np.linalg.norm(normals, axis=-1, keepdims=True)}
      yield schema.encode_example(f"bench_{i:05d}", rng.integers(0, 256, (h, w, 3), np.uint8),
                                  {t: labels[t] for t in cfg.data.tasks})

  shards = schema.write_split(out_dir, "train", examples(), 2, count)
  schema.write_manifest(out_dir, schema.Manifest(
      dataset="custom", height=h, width=w, tasks=tuple(cfg.data.tasks),
      num_classes=cfg.data.num_classes,
      class_names=tuple(f"class{i}" for i in range(cfg.data.num_classes)),
      depth_unit="metres", splits={"train": shards}))


def time_pipeline(data_dir: str, cfg: ExperimentConfig, batch: int, batches: int,
                  threads: int) -> float:
  """Images per second of the training pipeline (decode + augment + batch, repeated) of the
  records in `data_dir`, on a private pool of `threads` threads."""
  from sdmtcnn_tf.data import pipeline
  manifest = pipeline.check_dataset(data_dir, "train", cfg.data.tasks, cfg.data.height,
                                    cfg.data.width, verify_checksums=False)
  ds = pipeline.make_dataset(data_dir, manifest, "train", cfg.data.tasks, batch, training=True,
                             augment=True, repeat=True, shuffle_buffer=16)
  options = tf.data.Options()
  options.threading.private_threadpool_size = threads
  it = iter(ds.with_options(options))
  for _ in range(2):
    next(it)
  start = time.perf_counter()
  for _ in range(batches):
    tf.nest.map_structure(lambda t: t.numpy(), next(it))
  return batches * batch / (time.perf_counter() - start)


def section_data(rec: Recorder) -> None:
  cfg = reference_config()
  tmp = None
  data_dir = FLAGS.data_dir
  if not data_dir:
    tmp = data_dir = tempfile.mkdtemp(prefix="sdmtcnn_bench_data_")
    write_random_records(data_dir, cfg, FLAGS.data_examples)
  else:
    from sdmtcnn_tf.data import schema
    manifest = schema.read_manifest(data_dir)
    cfg = cfg.replace(height=manifest.height, width=manifest.width,
                      tasks=tuple(t for t in cfg.data.tasks if t in manifest.tasks),
                      num_classes=manifest.num_classes)
  try:
    for threads in (1, hardware.usable_cpus()):
      rec.add(f"data/img_s/{threads}_threads",
              time_pipeline(data_dir, cfg, 2, FLAGS.data_batches, threads), "img/s",
              height=cfg.data.height, width=cfg.data.width, records=FLAGS.data_dir or "random",
              augment=True)
  finally:
    if tmp:
      shutil.rmtree(tmp, ignore_errors=True)


def section_latency(rec: Recorder) -> None:
  from sdmtcnn_tf import edge
  for path in FLAGS.latency_configs:
    cfg = _config(path)
    keras.backend.clear_session()
    network, _ = experiment.build_model(cfg)
    if network.student is None:
      raise ValueError(f"--latency_configs: {path} has no student (method {cfg.method.name})")
    image = np.random.default_rng(0).integers(
        0, 256, (1, cfg.data.height, cfg.data.width, 3), dtype=np.uint8)
    out_dir = tempfile.mkdtemp(prefix="sdmtcnn_bench_export_")
    try:
      latency = edge.saved_model_latencies_ms(
          {"teacher": network.teacher, "student": network.student}, cfg, out_dir, image,
          FLAGS.latency_runs, warmup=2)
      for role, ms in latency.items():
        rec.add(f"latency_ms/{_label(path)}/{role}", ms, "ms",
                height=cfg.data.height, width=cfg.data.width, batch=1)
    finally:
      shutil.rmtree(out_dir, ignore_errors=True)
    keras.backend.clear_session()


def child_command(kind: str) -> list:
  """The command of a fresh measuring process: "memory_tf" (this module, `--child`) or
  "memory_torch" (`bench_torch`'s own entry point, so no TensorFlow is loaded in it)."""
  if kind == "memory_torch":
    from sdmtcnn_tf import bench_torch
    spec = dataclasses.asdict(bench_torch.Reference.of(reference_config()))
    return [sys.executable, "-m", "sdmtcnn_tf.bench_torch", json.dumps(spec),
            str(FLAGS.memory_batch)]
  passed = [f"--{name}={','.join(map(str, value)) if isinstance(value, list) else value}"
            for name in ("reference_size", "memory_batch", "width_multiplier")
            for value in (FLAGS[name].value,)]
  return [sys.executable, "-m", "sdmtcnn_tf.bench", f"--child={kind}", *passed]


def run_child(kind: str) -> dict:
  """Runs a measurement in a fresh process (`child_command`); returns its JSON result."""
  proc = subprocess.run(child_command(kind), capture_output=True, text=True,
                        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
  if proc.returncode != 0:
    raise RuntimeError(f"bench child {kind} failed ({proc.returncode}):\n"
                       f"{proc.stderr[-3000:]}")
  return json.loads(proc.stdout.strip().splitlines()[-1])


def peak_rss_gib() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20


def child_memory_tf() -> dict:
  """Peak RSS (GiB) of this process after 2 fp32 training steps of the reference network at
  --memory_batch (the second step is when everything is allocated)."""
  cfg = reference_config()
  network, model = experiment.build_model(cfg)
  experiment.compile_model(model, cfg)
  image, labels = random_batch(cfg, FLAGS.memory_batch)
  for _ in range(2):
    model.train_on_batch(image, labels)
  return {"peak_rss_gib": peak_rss_gib(), "batch": FLAGS.memory_batch,
          "params": count_params(network.model)}


def section_memory(rec: Recorder) -> None:
  result = run_child("memory_tf")
  height, width = map(int, FLAGS.reference_size)
  rec.add("memory/peak_rss_gib/tf", result["peak_rss_gib"], "GiB", batch=result["batch"],
          height=height, width=width, what="fp32 training step of the reference network, "
                                           "whole process")
  if FLAGS.compare_torch:
    result = run_child("memory_torch")
    rec.add("memory/peak_rss_gib/torch", result["peak_rss_gib"], "GiB", batch=result["batch"],
            height=height, width=width, tensorflow_loaded=result["tensorflow_loaded"])


def section_torch(rec: Recorder) -> None:
  from sdmtcnn_tf import bench_torch
  height, width = map(int, FLAGS.reference_size)
  cfg = reference_config()
  ref = bench_torch.Reference.of(cfg)
  for precision in FLAGS.precisions:
    if precision == "mixed_float16":
      continue
    result = bench_torch.time_training(ref, FLAGS.reference_batch, FLAGS.steps, FLAGS.warmup,
                                       bf16=precision == "mixed_bfloat16")
    p = PRECISION_NAMES[precision]
    rec.add(f"torch/train_img_s/{p}", result["img_s"], "img/s", step_s=result["step_s"],
            params=result["params"], torch=result["torch"], height=height, width=width,
            batch=FLAGS.reference_batch, threads=result["threads"])
  params = bench_torch.count_params(ref)
  ours = rec.get("flops/reference/params")
  if ours is None:
    from sdmtcnn_tf.models.build import build_network
    ours = count_params(build_network(cfg).teacher)
    keras.backend.clear_session()
  if int(ours) != params:
    raise AssertionError(f"the PyTorch reference network has {params:,} parameters, ours "
                         f"{int(ours):,}: they are not the same network")
  rec.add("torch/params", params, "parameters", equal_to_ours=True)


# ---- targets ---------------------------------------------------------------------------------
def resolve_precisions(precisions, info: dict) -> list:
  """`precisions` with "auto" replaced by off (+ mixed_bfloat16 on bf16 hardware)."""
  auto = ["off"] + (["mixed_bfloat16"] if info.get("amx") or info.get("avx512_bf16") else [])
  resolved = []
  for p in precisions:
    resolved += auto if p == "auto" else [p]
  return list(dict.fromkeys(resolved))


def check_targets(rec: Recorder) -> None:
  """Adds every target whose measurements were taken (see the module docstring)."""
  get = rec.get
  frac = get("reference/peak_fraction/fp32")
  if frac is not None:
    rec.target("fp32_step_vs_conv_peak", frac, TARGET_FP32_PEAK_FRACTION,
               "reference fp32 training GFLOP/s / fp32 conv peak")
  ours, theirs = get("reference/train_img_s/fp32"), get("torch/train_img_s/fp32")
  if ours and theirs:
    rec.target("fp32_vs_torch", ours / theirs, TARGET_FP32_VS_TORCH,
               "reference fp32 img/s, ours / PyTorch")
  bf16 = get("reference/train_img_s/bf16")
  if bf16 is not None:
    rec.target("bf16_img_s", bf16, TARGET_BF16_IMG_S,
               "reference bf16 training img/s (issue 11's absolute target, 2-core Xeon with AMX)")
    theirs = get("torch/train_img_s/bf16")
    if theirs:
      rec.target("bf16_vs_torch", bf16 / theirs, TARGET_BF16_VS_TORCH,
                 "reference bf16 img/s, ours / PyTorch autocast bf16")
  for path in FLAGS.latency_configs:
    t, s = get(f"latency_ms/{_label(path)}/teacher"), get(f"latency_ms/{_label(path)}/student")
    if t and s:  # a ratio <= 0.5 is the target: report required / measured, >= 1 passes
      rec.target(f"student_latency/{_label(path)}", TARGET_STUDENT_LATENCY / (s / t), 1.0,
                 f"{TARGET_STUDENT_LATENCY} / (student ms / teacher ms); student/teacher = "
                 f"{s / t:.3f}")
  one = get("data/img_s/1_threads")
  if one is not None:
    trained = [m["value"] for m in rec.measurements
               if "train_img_s/" in m["name"] and m.get("height") == int(FLAGS.reference_size[0])
               and m.get("width") == int(FLAGS.reference_size[1])]
    if trained:
      rec.target("data_vs_train", one / max(trained), TARGET_DATA_VS_TRAIN,
                 "tf.data img/s on one thread / fastest training img/s at that size")
    rec.target("data_img_s", one, TARGET_DATA_IMG_S, "tf.data img/s on one thread")
  tf_mem, torch_mem = get("memory/peak_rss_gib/tf"), get("memory/peak_rss_gib/torch")
  if tf_mem and torch_mem:  # at most 2x PyTorch's: report required / measured, >= 1 passes
    rec.target("memory_vs_torch", TARGET_MEMORY_VS_TORCH / (tf_mem / torch_mem), 1.0,
               f"{TARGET_MEMORY_VS_TORCH} / (ours GiB / PyTorch GiB); ours/PyTorch = "
               f"{tf_mem / torch_mem:.3f}")


def main(argv):
  cli.check_no_arguments(argv)
  if FLAGS.child:
    if FLAGS.child != "memory_tf":
      raise ValueError(f"--child={FLAGS.child}: expected memory_tf")
    result = child_memory_tf()
    print(json.dumps(result))
    return
  unknown = sorted(set(FLAGS.sections) - set(SECTIONS))
  if unknown:
    raise ValueError(f"--sections: unknown {unknown}; expected some of {SECTIONS}")
  bad = sorted(set(FLAGS.precisions) - set(config_lib.PRECISIONS) - {"auto"})
  if bad:
    raise ValueError(f"--precisions: unknown {bad}; expected auto or some of "
                     f"{config_lib.PRECISIONS}")
  if FLAGS.compare_torch:
    try:
      import torch  # noqa: F401
    except ImportError:
      raise ValueError("--compare_torch needs PyTorch: pip install -r requirements-bench.txt")
  start = time.perf_counter()
  rec = Recorder()
  info = machine()
  print(json.dumps({"machine": info}), flush=True)
  if "auto" in FLAGS.precisions:
    FLAGS.precisions = resolve_precisions(FLAGS.precisions, info)
    print(json.dumps({"precisions": FLAGS.precisions}), flush=True)
  steps = [("peak", section_peak), ("reference", section_reference),
           ("profile", section_profile), ("train", section_train),
           ("data", section_data), ("latency", section_latency), ("memory", section_memory)]
  for name, section in steps:
    if name in FLAGS.sections:
      section(rec)
  if FLAGS.compare_torch:
    section_torch(rec)
  check_targets(rec)
  elapsed = time.perf_counter() - start
  print(json.dumps({"elapsed_s": round(elapsed, 1),
                    "passed": sum(t["pass"] for t in rec.targets),
                    "missed": sum(not t["pass"] for t in rec.targets)}), flush=True)
  if FLAGS.out:
    os.makedirs(os.path.dirname(os.path.abspath(FLAGS.out)), exist_ok=True)
    flag_values = {name: FLAGS[name].value for name in
                   ("sections", "configs", "latency_configs", "precisions", "steps", "warmup",
                    "batch", "height", "width", "width_multiplier", "reference_size",
                    "reference_batch", "memory_batch", "data_dir", "compare_torch")}
    atomic.write_json(FLAGS.out, {"machine": info, "flags": flag_values,
                                  "elapsed_s": round(elapsed, 1),
                                  "measurements": rec.measurements, "targets": rec.targets},
                      label="bench results", indent=2)


if __name__ == "__main__":
  define_flags()
  cli.run(main)
