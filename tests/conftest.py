"""Shared fixtures: a tiny synthetic dataset and one finished smoke training run."""

from __future__ import annotations

import os
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


@pytest.fixture(scope="session")
def smoke_data_dir(tmp_path_factory) -> str:
  """The smoke config's synthetic dataset (32x64, 64 train / 16 val), generated once."""
  from sdmtcnn_tf.data import synthetic
  path = str(tmp_path_factory.mktemp("synthetic_smoke"))
  synthetic.ensure_dataset(path, 64, 16, 32, 64, seed=0)
  return path


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory, smoke_data_dir) -> str:
  """A finished `train --flagfile=configs/synthetic_smoke.flags` run directory."""
  model_dir = str(tmp_path_factory.mktemp("smoke_run"))
  run_module("sdmtcnn_tf.train", f"--flagfile={SMOKE_FLAGS}", f"--model_dir={model_dir}",
             f"--data_dir={smoke_data_dir}", "--verbose=2")
  return model_dir


def pytest_collection_modifyitems(items):
  """Tests that need the finished smoke run (about a minute to train) are `slow` too."""
  for item in items:
    if "smoke_run" in getattr(item, "fixturenames", ()):
      item.add_marker(pytest.mark.slow)
