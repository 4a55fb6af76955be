"""pyproject.toml (`pip install .`), the Dockerfile and the TFJob example agree with
requirements.txt, the package and the training CLI."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile

import pytest

from sdmtcnn_tf import config as config_lib
from tests.conftest import REPO


def _name(requirement: str) -> str:
  """The normalised project name of `name[extras]==version`."""
  return re.sub(r"[-_.]+", "-", re.split(r"[\[=<>!~ ]", requirement, 1)[0]).lower()


def _pins(lines) -> dict:
  pins = {}
  for line in lines:
    line = line.split("#", 1)[0].strip()
    if line:
      assert "==" in line, f"not pinned: {line}"
      pins[_name(line)] = line.split("==", 1)[1].strip()
  return pins


def _pyproject() -> dict:
  with open(os.path.join(REPO, "pyproject.toml"), "rb") as f:
    return tomllib.load(f)


def _requirements() -> dict:
  with open(os.path.join(REPO, "requirements.txt")) as f:
    return _pins(f)


def test_pyproject_pins_are_the_requirements_pins():
  project = _pyproject()["project"]
  required = _requirements()
  declared = {"": project["dependencies"], **project["optional-dependencies"]}
  seen = set()
  for group, requirements in declared.items():
    for name, version in _pins(requirements).items():
      # the gpu extra's tensorflow[and-cuda] is requirements.txt's tensorflow-cpu, CUDA build
      home = "tensorflow-cpu" if name == "tensorflow" else name
      assert home in required, f"pyproject.toml {group or 'dependencies'}: {name} is not pinned " \
                               "in requirements.txt"
      assert version == required[home], (name, version, required[home])
      seen.add(home)
  assert seen == set(required), f"requirements.txt pins missing from pyproject.toml: " \
                                f"{sorted(set(required) - seen)}"
  # TensorFlow only as an extra: a plain `pip install .` keeps the image's TensorFlow
  assert not any(_name(r).startswith("tensorflow") for r in project["dependencies"])


def test_wheel_holds_the_package_and_not_datasets(tmp_path):
  pytest.importorskip("setuptools")
  src = tmp_path / "src"
  src.mkdir()
  for name in ("pyproject.toml", "README.md"):
    shutil.copy(os.path.join(REPO, name), src / name)
  ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
  for name in ("sdmtcnn_tf", "datasets", "tests"):  # as in a checkout, beside the package
    shutil.copytree(os.path.join(REPO, name), src / name, ignore=ignore)
  proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps",
                         "--no-build-isolation", "--no-index", "-q", "-w", str(tmp_path / "out"),
                         str(src)], capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  (wheel,) = os.listdir(tmp_path / "out")
  assert wheel.startswith(f"sdmtcnn_tf-{_pyproject()['project']['version']}-py3-none-any")
  with zipfile.ZipFile(tmp_path / "out" / wheel) as z:
    names = set(z.namelist())
    metadata = z.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
  assert {n.split("/")[0] for n in names} == {"sdmtcnn_tf",
                                              wheel.split("-py3")[0] + ".dist-info"}
  package = {os.path.relpath(os.path.join(d, f), REPO)
             for d, _, files in os.walk(os.path.join(REPO, "sdmtcnn_tf"))
             for f in files if f.endswith((".py", ".csv"))}
  assert package and package <= names, sorted(package - names)[:5]
  assert "Requires-Dist: keras==3.15.1" in metadata
  assert re.search(r'Requires-Dist: tensorflow-cpu==2\.21\.0; extra == "cpu"', metadata)


def _makefile_var(name: str) -> str:
  with open(os.path.join(REPO, "Makefile")) as f:
    return re.search(rf"^{name} \?= (\S+)$", f.read(), re.M).group(1)


def _dockerfile() -> list:
  with open(os.path.join(REPO, "Dockerfile")) as f:
    return [l.strip() for l in f if l.strip() and not l.lstrip().startswith("#")]


def test_dockerfile_builds_on_tensorflow_gpu_and_pip_installs_the_package():
  lines = _dockerfile()
  assert lines[0] == f"FROM tensorflow/tensorflow:{_requirements()['tensorflow-cpu']}-gpu"
  runs = " ".join(l for l in lines if l.startswith("RUN"))
  assert re.search(r"pip install (--\S+ )*\.( |$)", runs), runs
  copied = " ".join(l for l in lines if l.startswith("COPY"))
  for name in ("pyproject.toml", "requirements.txt", "sdmtcnn_tf", "configs"):
    assert name in copied, name
  assert "datasets" not in copied


def test_tfjob_runs_the_image_and_the_training_command():
  yaml = pytest.importorskip("yaml")
  with open(os.path.join(REPO, "deploy", "k8s", "tfjob.yaml")) as f:
    job = yaml.safe_load(f)
  assert (job["apiVersion"], job["kind"]) == ("kubeflow.org/v1", "TFJob")
  assert set(job["spec"]["tfReplicaSpecs"]) == {"Worker"}  # worker 0 is the chief
  worker = job["spec"]["tfReplicaSpecs"]["Worker"]
  assert worker["replicas"] >= 2 and worker["restartPolicy"] == "OnFailure"
  (container,) = worker["template"]["spec"]["containers"]
  assert container["name"] == "tensorflow"  # the name the training operator looks for
  version = _pyproject()["project"]["version"]
  assert container["image"] == _makefile_var("IMAGE") == f"sdmtcnn-tf:{version}"
  workdir = [l.split()[1] for l in _dockerfile() if l.startswith("WORKDIR")][-1]
  assert container["workingDir"] == workdir
  command = container["command"]
  assert command[:3] == ["python", "-m", "sdmtcnn_tf.train"]
  # the flags are the training CLI's, valid, and select the TF_CONFIG path
  values = config_lib.flags.FlagValues()
  config_lib.define_flags(values)
  cwd = os.getcwd()
  os.chdir(REPO)  # the image runs from its copy of the repository root (configs/)
  try:
    values(["train", *command[3:]])
    cfg = config_lib.from_flags(values)
  finally:
    os.chdir(cwd)
  assert cfg.run.distribution == "multi_worker"
  mounts = [m["mountPath"] for m in container["volumeMounts"]]
  for path in (cfg.run.model_dir, cfg.data.data_dir):  # one shared volume for every pod
    assert any(path.startswith(m + "/") for m in mounts), (path, mounts)
