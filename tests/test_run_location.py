"""Where a run lives is not what the run is: a run directory copied or moved elsewhere resumes,
evaluates, exports and predicts from its new place (and its data from theirs); a read-only run
can be read by every reader; `train` without flags says how to start."""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import sys

import pytest

from tests.conftest import REPO, SMOKE_FLAGS, assert_one_error_line, run_module

from sdmtcnn_tf import config as config_lib
from sdmtcnn_tf import experiment, rundir


def _epochs_run(proc) -> list:
  return [line.split()[1] for line in proc.stdout.splitlines() if line.startswith("Epoch ")]


def _rewrite_config(run_dir: str, **changes) -> None:
  """Edits config.json of `run_dir` as if the run had been written somewhere else."""
  path = os.path.join(run_dir, config_lib.CONFIG_NAME)
  with open(path) as f:
    raw = json.load(f)
  raw.update(changes)
  with open(path, "w") as f:
    json.dump(raw, f)


# ---- a moved run -----------------------------------------------------------------------------
def test_a_moved_run_resumes_evaluates_exports_and_predicts_in_its_new_place(
    smoke_run, smoke_data_dir, tmp_path):
  # the run and its data both moved: copied to a new disk, then moved within it; their old
  # places (recorded in config.json) are gone
  copied = str(tmp_path / "disk2" / "copied")
  shutil.copytree(smoke_run, copied)
  # this worker's smoke run may hold another test's export: this test exports version 1 itself
  shutil.rmtree(os.path.join(copied, "export"), ignore_errors=True)
  moved = str(tmp_path / "disk2" / "runs" / "moved")
  os.makedirs(os.path.dirname(moved))
  shutil.move(copied, moved)
  data = str(tmp_path / "disk2" / "data")
  shutil.copytree(smoke_data_dir, data)
  _rewrite_config(moved, model_dir="/gone/runs/old", data_dir="/gone/data/old")

  assert config_lib.load(moved).run.model_dir == moved  # where it is, not where it was
  common = (f"--flagfile={SMOKE_FLAGS}", f"--model_dir={moved}", f"--data_dir={data}")
  trained = config_lib.load(moved).optim.epochs
  proc = run_module("sdmtcnn_tf.train", *common, "--verbose=2", "--image_summary_every=8",
                    f"--epochs={trained + 1}")
  assert _epochs_run(proc) == [f"{trained + 1}/{trained + 1}"], proc.stdout[-2000:]
  saved = config_lib.load(moved)
  assert (saved.run.model_dir, saved.data.data_dir) == (moved, data)
  assert not os.path.exists("/gone")

  proc = run_module("sdmtcnn_tf.evaluate", f"--model_dir={moved}")
  assert "teacher_semseg_miou" in proc.stdout
  assert f"wrote {os.path.join(moved, 'results', 'metrics.json')}" in proc.stdout
  run_module("sdmtcnn_tf.export", f"--model_dir={moved}")
  assert os.path.exists(os.path.join(moved, "export", "teacher", "1", "saved_model.pb"))
  figures = tmp_path / "figures"
  run_module("sdmtcnn_tf.predict", f"--model_dir={moved}", f"--data_dir={data}", "--count=2",
             f"--out={figures}")
  assert len(list(figures.glob("*.png"))) == 2


def test_where_a_run_and_its_data_live_is_not_part_of_its_identity(tmp_path):
  from sdmtcnn_tf import train
  cfg = config_lib.ExperimentConfig.from_flat(model_dir="/a/run", data_dir="/a/data").validate()
  config_lib.save(cfg, str(tmp_path))
  train._check_same_run(cfg.replace(model_dir=str(tmp_path), data_dir="/b/data",
                                    teacher_dir="/b/teacher"), str(tmp_path))
  with pytest.raises(ValueError, match=r"different config \(fields \['seed'\]\)"):
    train._check_same_run(cfg.replace(model_dir=str(tmp_path), seed=1), str(tmp_path))


# ---- a read-only run -------------------------------------------------------------------------
def _read_only_prefix() -> list:
  """The command prefix under which the file permissions hold: none for an ordinary user;
  for root (who writes through them) setpriv without any capability."""
  if os.geteuid() != 0:
    return []
  setpriv = shutil.which("setpriv")
  if setpriv is None:
    pytest.skip("running as root without setpriv: cannot make a directory read-only to a test")
  return [setpriv, "--bounding-set=-all", "--inh-caps=-all", "--"]


def _run_read_only(module: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
  """run_module, as a process that the file permissions bind."""
  env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
  proc = subprocess.run([*_read_only_prefix(), sys.executable, "-m", module, *args], cwd=REPO,
                        env=env, capture_output=True, text=True, timeout=600)
  if check and proc.returncode != 0:
    raise AssertionError(f"{module} {' '.join(args)} failed ({proc.returncode}):\n"
                         f"{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
  return proc


def _chmod_tree(root: str, writable: bool) -> None:
  write = stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH
  for path in [root] + [os.path.join(d, n) for d, dirs, files in os.walk(root)
                        for n in dirs + files]:
    mode = os.stat(path).st_mode
    os.chmod(path, (mode | stat.S_IWUSR) if writable else (mode & ~write))


@pytest.fixture
def read_only_run(smoke_run, tmp_path):
  """A copy of the finished smoke run with every file and folder read-only (a-w)."""
  path = str(tmp_path / "read_only" / "run")
  shutil.copytree(smoke_run, path)
  _chmod_tree(path, writable=False)
  probe = subprocess.run(
      [*_read_only_prefix(), sys.executable, "-c",
       "import sys; open(sys.argv[1], 'w')", os.path.join(path, "probe")],
      capture_output=True, text=True, timeout=60)
  if probe.returncode == 0 or "PermissionError" not in probe.stderr:
    _chmod_tree(path, writable=True)
    pytest.skip(f"cannot make {path} read-only here: {probe.stderr[-300:]}")
  yield path
  _chmod_tree(path, writable=True)  # so that pytest can remove it


def test_a_read_only_run_can_be_evaluated_exported_predicted_and_reported(
    read_only_run, smoke_data_dir, tmp_path):
  metrics = os.path.join(read_only_run, "results", "metrics.json")
  with open(metrics) as f:
    before = f.read()
  proc = _run_read_only("sdmtcnn_tf.evaluate", f"--model_dir={read_only_run}",
                        f"--data_dir={smoke_data_dir}")
  assert "teacher_semseg_miou" in proc.stdout  # evaluated and printed...
  notes = [l for l in proc.stderr.splitlines() if l.startswith("note: ")]
  assert len(notes) == 1 and metrics in notes[0] and "read-only" in notes[0], proc.stderr[-2000:]
  with open(metrics) as f:
    assert f.read() == before  # ...and said in one line that it could not write the run

  export_dir = tmp_path / "serving" / "teacher"
  _run_read_only("sdmtcnn_tf.export", f"--model_dir={read_only_run}",
                 f"--export_dir={export_dir}")
  assert (export_dir / "1" / "saved_model.pb").exists()
  figures = tmp_path / "figures"
  _run_read_only("sdmtcnn_tf.predict", f"--model_dir={read_only_run}",
                 f"--data_dir={smoke_data_dir}", "--count=1", f"--out={figures}")
  assert len(list(figures.glob("*.png"))) == 1
  report = tmp_path / "report"
  _run_read_only("sdmtcnn_tf.report", f"--runs={read_only_run}", f"--out={report}",
                 "--nocurves")
  assert (report / "report.md").exists()
  # writing into it is one line naming the directory and the way out
  proc = _run_read_only("sdmtcnn_tf.export", f"--model_dir={read_only_run}", check=False)
  assert_one_error_line(proc, read_only_run, "read-only", "--export_dir")
  assert not os.path.exists(os.path.join(read_only_run, "export"))


# ---- readers and the lock --------------------------------------------------------------------
def _hold(model_dir: str, how: str) -> subprocess.Popen:
  """Another process holding the run directory's lock (`how`: locked or reading) until killed."""
  holder = subprocess.Popen(
      [sys.executable, "-c", "import sys, time\nfrom sdmtcnn_tf import rundir\n"
       f"with rundir.{how}(sys.argv[1]):\n  print('held', flush=True)\n"
       "  time.sleep(300)\n", model_dir], cwd=REPO, stdout=subprocess.PIPE, text=True)
  assert holder.stdout.readline().strip() == "held"
  return holder


def test_readers_share_a_run_but_not_with_a_trainer(smoke_run):
  trainer = _hold(smoke_run, "locked")
  try:  # a run being written is not read
    with pytest.raises(rundir.RunDirectoryError, match=f"in use by another process "
                                                       f"\\(pid {trainer.pid}"):
      experiment.load_trained(smoke_run)
  finally:
    trainer.kill()
    trainer.wait()
  reader = _hold(smoke_run, "reading")
  try:  # readers read side by side; a writer is refused while one reads
    cfg, _, _ = experiment.load_trained(smoke_run)
    assert cfg.run.model_dir == smoke_run
    with pytest.raises(rundir.RunDirectoryError, match="being read by another process"):
      with rundir.locked(smoke_run, "test"):
        pass
  finally:
    reader.kill()
    reader.wait()
  with rundir.locked(smoke_run, "test"):  # the OS released both
    pass


# ---- a first start ---------------------------------------------------------------------------
@pytest.mark.parametrize("args", [(), ("--flagfile=configs/synthetic_vanilla.flags",)])
def test_train_without_a_model_dir_says_how_to_start(args):
  proc = run_module("sdmtcnn_tf.train", *args, check=False)
  line = assert_one_error_line(proc, "--model_dir is required", "--flagfile=configs/")
  flagfile = re.search(r"--flagfile=(\S+\.flags)", line).group(1)
  assert os.path.exists(os.path.join(REPO, flagfile)), line  # the example is a real config
  assert config_lib.parse_flagfile(os.path.join(REPO, flagfile)).data.data_dir
