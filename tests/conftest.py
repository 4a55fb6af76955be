"""Shared fixtures: a tiny synthetic dataset and one finished smoke training run."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMOKE_FLAGS = os.path.join("configs", "synthetic_smoke.flags")


def run_module(module: str, *args: str, check: bool = True, timeout: int = 600,
               env: dict | None = None) -> subprocess.CompletedProcess:
  """Runs `python -m module args` from the repository root; returns the completed process."""
  full_env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **(env or {})}
  proc = subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, env=full_env,
                        capture_output=True, text=True, timeout=timeout)
  if check and proc.returncode != 0:
    raise AssertionError(f"{module} {' '.join(args)} failed ({proc.returncode}):\n"
                         f"{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
  return proc


def assert_one_error_line(proc, *needles) -> str:
  """`proc` (a finished CLI subprocess) failed with exit status 1 and exactly one `error: `
  line on stderr, no traceback, containing every needle. Returns that line."""
  assert proc.returncode == 1, (proc.returncode, proc.stderr[-2000:])
  assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
  lines = [l for l in proc.stderr.splitlines() if l.startswith("error: ")]
  assert len(lines) == 1, proc.stderr[-2000:]
  for needle in needles:
    assert needle in lines[0], lines[0]
  return lines[0]


def random_batch(cfg, n: int = 2, seed: int = 0):
  """A random (image [n, H, W, 3], {semseg, depth, normals} labels) batch for `cfg`'s size and
  classes (semseg holds some ignore labels -1, normals are unit vectors)."""
  import numpy as np
  rng = np.random.default_rng(seed)
  image = rng.random((n, cfg.data.height, cfg.data.width, 3)).astype(np.float32)
  normals = rng.normal(size=(n, cfg.data.height, cfg.data.width, 3)).astype(np.float32)
  normals /= np.linalg.norm(normals, axis=-1, keepdims=True)
  size = (n, cfg.data.height, cfg.data.width)
  labels = {"semseg": rng.integers(-1, cfg.data.num_classes, size).astype(np.int32),
            "depth": rng.uniform(0, 5, (*size, 1)).astype(np.float32),
            "normals": normals}
  return image, labels


def make_task(name: str, num_classes: int = 13):
  """The Task object `name` as a config with `num_classes` classes builds it."""
  from sdmtcnn_tf.config import ExperimentConfig
  return ExperimentConfig.from_flat(tasks=(name,), num_classes=num_classes).task_specs[0]


def optimizer_iterations(weights_path: str) -> int:
  """The optimizer's step counter stored in a backup weights file (its only integer scalar)."""
  import h5py
  import numpy as np
  found = []
  with h5py.File(weights_path, "r") as f:
    f.visititems(lambda name, obj: found.append(int(np.asarray(obj)))
                 if isinstance(obj, h5py.Dataset) and name.startswith("optimizer/")
                 and obj.shape == () and obj.dtype.kind == "i" else None)
  assert len(found) == 1, f"no single optimizer step counter in {weights_path}: {found}"
  return found[0]


def train_shard(data_dir: str, index: int = 0, num_shards: int = 2) -> str:
  """Path of training shard `index` of `num_shards` in `data_dir`."""
  from sdmtcnn_tf.data import schema
  return os.path.join(data_dir, schema.shard_name("train", index, num_shards))


def made_once(tmp_path_factory, name: str, make) -> str:
  """The folder `make(path)` fills, made once per test session even when pytest-xdist runs
  several workers (`make test` does): the first worker to get here makes it under a file lock
  in the session's shared base folder, the others wait for it and reuse it."""
  import fcntl
  base = tmp_path_factory.getbasetemp()
  shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
  path = shared / name
  with open(shared / f"{name}.lock", "w") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    if not (shared / f"{name}.done").exists():
      if path.exists():  # a worker died halfway: start again
        shutil.rmtree(path)
      path.mkdir()
      make(str(path))
      (shared / f"{name}.done").touch()
  return str(path)


@pytest.fixture(scope="session")
def smoke_data_dir(tmp_path_factory) -> str:
  """The smoke config's synthetic dataset (32x64, 64 train / 16 val), generated once; tests
  read it and never write into it."""
  from sdmtcnn_tf.data import synthetic
  return made_once(tmp_path_factory, "synthetic_smoke",
                   lambda path: synthetic.ensure_dataset(path, 64, 16, 32, 64, seed=0))


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory, smoke_data_dir) -> str:
  """A finished `train --flagfile=configs/synthetic_smoke.flags` run directory, trained once
  per session; each worker gets its own copy (tests evaluate and export into it, and a run
  directory takes one process at a time)."""
  trained = made_once(tmp_path_factory, "smoke_run_trained", lambda model_dir: run_module(
      "sdmtcnn_tf.train", f"--flagfile={SMOKE_FLAGS}", f"--model_dir={model_dir}",
      f"--data_dir={smoke_data_dir}", "--verbose=2",
      "--image_summary_every=8"))  # 16 epochs: prediction images at epochs 8 and 16
  model_dir = str(tmp_path_factory.mktemp("smoke_run") / "run")
  shutil.copytree(trained, model_dir)
  return model_dir


# Module fixtures whose tests change the fixture's files in turn: under pytest-xdist
# (`make test`) all their tests go to one worker, in file order (--dist=loadgroup).
SEQUENTIAL_FIXTURES = ("killed_run", "three_epochs")


def pytest_collection_modifyitems(items):
  """Tests that need the finished smoke run (about a minute to train) are `slow` too."""
  for item in items:
    names = getattr(item, "fixturenames", ())
    if "smoke_run" in names:
      item.add_marker(pytest.mark.slow)
    for fixture in SEQUENTIAL_FIXTURES:
      if fixture in names:
        item.add_marker(pytest.mark.xdist_group(fixture))
