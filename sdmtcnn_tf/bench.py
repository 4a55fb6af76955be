"""`make bench`: training and inference speed of a config on random in-memory data.

`python -m sdmtcnn_tf.bench [--config=configs/nyuv2_vanilla.flags] [--steps=5] [--batch=2]`
prints parameters, seconds per training step (median over --steps after one warm-up step),
images per second, inference seconds per batch and peak resident memory. The input pipeline is
left out on purpose: on CPU the model bounds training by three orders of magnitude.
"""

from __future__ import annotations

import resource
import statistics
import time

from sdmtcnn_tf import cli  # first: it quiets TensorFlow's C++ logs before TF is imported

import numpy as np
from absl import flags

from sdmtcnn_tf import config as config_lib, experiment
from sdmtcnn_tf.models.build import count_params

FLAGS = flags.FLAGS


def define_flags() -> None:
  flags.DEFINE_string("config", "configs/nyuv2_vanilla.flags", "Flagfile of the model to time.")
  flags.DEFINE_integer("steps", 5, "Timed training steps (after one warm-up step).")
  flags.DEFINE_integer("batch", 0, "Batch size; 0 = the config's.")


def _random_batch(cfg, batch: int, rng):
  image = rng.random((batch, cfg.data.height, cfg.data.width, 3), dtype=np.float32)
  labels = {task.name: task.random_label(rng, batch, cfg.data.height, cfg.data.width)
            for task in cfg.task_specs}
  return image, labels


def main(argv):
  cli.check_no_arguments(argv)
  cfg = config_lib.parse_flagfile(FLAGS.config, teacher_dir="")
  batch = FLAGS.batch or cfg.optim.batch_size
  network, model = experiment.build_model(cfg)
  experiment.compile_model(model, cfg)
  image, labels = _random_batch(cfg, batch, np.random.default_rng(0))
  start = time.perf_counter()
  model.train_on_batch(image, labels)
  first = time.perf_counter() - start
  times = []
  for _ in range(FLAGS.steps):
    start = time.perf_counter()
    model.train_on_batch(image, labels)
    times.append(time.perf_counter() - start)
  step = statistics.median(times)
  model.predict_on_batch(image)
  start = time.perf_counter()
  model.predict_on_batch(image)
  infer = time.perf_counter() - start
  rss_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20
  print(f"config            {FLAGS.config} ({cfg.method.name}, {cfg.model.backbone}, "
        f"{cfg.data.height}x{cfg.data.width}, batch {batch})")
  print(f"parameters        teacher {count_params(network.teacher):,}  "
        f"student {count_params(network.student):,}")
  print(f"first step        {first:.2f} s (tracing included)")
  print(f"train step        {step:.3f} s median of {FLAGS.steps}  ({batch / step:.2f} img/s)")
  print(f"inference         {infer:.3f} s per batch of {batch} (full training graph)")
  print(f"peak RSS          {rss_gb:.2f} GB")


if __name__ == "__main__":
  define_flags()
  cli.run(main)
