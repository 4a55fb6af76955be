"""Our commands print nothing on stderr but their own lines, on any CPU (sdmtcnn_tf/logs.py).

TensorFlow's start-up INFO lines (the oneDNN notice, the CPU feature guard) reach stderr before
absl's logging is initialised, whatever TF_CPP_MIN_LOG_LEVEL says. On Intel CPUs with
AVX-512/AMX oneDNN is on by default; `TF_ENABLE_ONEDNN_OPTS=1` gives that condition on any CPU,
so every test here runs under both settings, with TF_CPP_MIN_LOG_LEVEL unset and set.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from sdmtcnn_tf import logs
from tests.conftest import REPO

# Every command a user types (README); each takes --help and exits before doing any work.
COMMANDS = ("sdmtcnn_tf.train", "sdmtcnn_tf.evaluate", "sdmtcnn_tf.export", "sdmtcnn_tf.predict",
            "sdmtcnn_tf.tune", "sdmtcnn_tf.launch", "sdmtcnn_tf.report", "sdmtcnn_tf.reproduce",
            "sdmtcnn_tf.bench", "sdmtcnn_tf.edge", "sdmtcnn_tf.serving_client", "sdmtcnn_tf.demo",
            "sdmtcnn_tf.sweep", "datasets.synthetic", "datasets.nyuv2", "datasets.cityscapes",
            "datasets.taskonomy", "datasets.verify")

# TensorFlow's start-up text as it reaches stderr (see logs.py's docstring), written
# independently of logs.is_startup_noise so that a wrong filter cannot pass its own test.
FOREIGN_LINE = re.compile(r"^(WARNING: All log messages before absl|[IWEF]\d{4} [\d:.]+ +\d+ "
                          r"\S+:\d+\]|To enable the following instructions)")

ONEDNN = pytest.mark.parametrize("onednn", ["0", "1"])


def run(args, onednn: str, log_level: str | None = None, **extra_env):
  """`python args` from the repository root with oneDNN `onednn` and TF_CPP_MIN_LOG_LEVEL
  `log_level` (None: unset)."""
  env = {k: v for k, v in os.environ.items()
         if k not in ("TF_CPP_MIN_LOG_LEVEL", logs.VERBOSE_ENV)}
  env.update(TF_ENABLE_ONEDNN_OPTS=onednn, **extra_env)
  if log_level is not None:
    env["TF_CPP_MIN_LOG_LEVEL"] = log_level
  return subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True,
                        text=True, timeout=300)


def foreign_lines(stderr: str) -> list[str]:
  return [line for line in stderr.splitlines() if FOREIGN_LINE.match(line)]


def test_tensorflow_prints_its_start_up_lines_when_asked():
  """The condition the other tests guard against is real here: with SDMTCNN_TF_VERBOSE and
  oneDNN on, importing TensorFlow through our package prints the oneDNN notice."""
  proc = run(["-c", "import sdmtcnn_tf, tensorflow"], "1", **{logs.VERBOSE_ENV: "1"})
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert "oneDNN custom operations are on" in proc.stderr, proc.stderr[-2000:]
  assert foreign_lines(proc.stderr), proc.stderr[-2000:]


@ONEDNN
@pytest.mark.parametrize("log_level", [None, "0"])
def test_importing_tensorflow_through_the_package_is_silent(onednn, log_level):
  proc = run(["-c", "import sdmtcnn_tf, tensorflow as tf; print(int(tf.constant(2) + 1))"],
             onednn, log_level)
  assert proc.returncode == 0 and proc.stdout.strip() == "3", proc.stderr[-2000:]
  assert proc.stderr == "", proc.stderr[-2000:]


@ONEDNN
@pytest.mark.parametrize("log_level", [None, "2"])
def test_a_bad_flag_value_is_the_only_line_on_stderr(onednn, log_level):
  proc = run(["-m", "sdmtcnn_tf.train", "--backbone=resnet"], onednn, log_level)
  assert proc.returncode == 1, proc.stderr[-2000:]
  assert proc.stderr.splitlines() == [
      "error: flag --backbone=resnet: value should be one of <segnet|unet> "
      "(--helpshort lists the flags)"], proc.stderr[-2000:]


def test_errors_inside_the_import_still_show():
  """What the filter keeps: an ERROR record, a Python warning, plain text; what it drops."""
  kept = ["E0000 00:00:1796461617.595188    7815 cuda_dnn.cc:8] Unable to register cuDNN",
          "/x/y.py:3: DeprecationWarning: old", "Traceback (most recent call last):"]
  dropped = ["WARNING: All log messages before absl::InitializeLog() is called are written to "
             "STDERR",
             "I0000 00:00:1796461617.595188    7815 port.cc:153] oneDNN custom operations are on.",
             "W0000 00:00:1796461617.758593    7815 cpu_feature_guard.cc:227] something",
             "To enable the following instructions: AVX2 FMA, in other operations, rebuild"]
  assert [l for l in kept if logs.is_startup_noise(l)] == []
  assert [l for l in dropped if not logs.is_startup_noise(l)] == []


@pytest.mark.slow
@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_help_is_quiet_with_onednn_on(command):
  """--help imports the command and TensorFlow, prints to stdout and exits: with oneDNN on and
  no TF_CPP_MIN_LOG_LEVEL, nothing reaches stderr."""
  proc = run(["-m", command, "--help"], "1")
  assert "--" in proc.stdout, (proc.returncode, proc.stdout[-1000:], proc.stderr[-2000:])
  assert proc.stderr == "", proc.stderr[-2000:]


def test_float16_labels_decode_exactly_for_every_bit_pattern():
  """Normals, keypoints and edges are stored as float16; they are decoded without a float16
  tensor (schema.float16_bits_to_float32) to the values numpy gives, NaNs and signs included."""
  import numpy as np
  from sdmtcnn_tf.data import schema
  bits = np.arange(2**16, dtype=np.uint16)
  want = bits.view(np.float16).astype(np.float32)
  got = schema.float16_bits_to_float32(bits).numpy()
  assert np.array_equal(np.isnan(got), np.isnan(want))
  finite = ~np.isnan(want)
  assert np.array_equal(got[finite].view(np.uint32), want[finite].view(np.uint32))


@ONEDNN
def test_reading_float16_labels_is_silent(onednn, tmp_path):
  """With oneDNN on, any float16 op logs 'oneDNN supports DT_HALF only on platforms with
  AVX-512' once per process on CPUs without AVX512-FP16; the input pipeline reads the float16
  normal maps of real records without printing it."""
  from sdmtcnn_tf.data import synthetic
  data_dir = str(tmp_path / "data")
  synthetic.ensure_dataset(data_dir, 4, 2, 32, 32, seed=0)
  script = ("import sys; from sdmtcnn_tf.data import pipeline, schema\n"
            "manifest = schema.read_manifest(sys.argv[1])\n"
            "ds = pipeline.make_dataset(sys.argv[1], manifest, 'val', ('semseg', 'depth', "
            "'normals'), 2, training=False)\n"
            "print(sum(1 for _ in ds))\n")
  proc = run(["-c", script, data_dir], onednn)
  assert proc.returncode == 0 and proc.stdout.strip() == "1", proc.stderr[-2000:]
  assert proc.stderr == "", proc.stderr[-2000:]
