"""--distribution=multi_worker: TF_CONFIG checks, sdmtcnn_tf.launch, and 2 localhost workers
training like 1 process; a killed worker stops the launch and a rerun resumes."""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import subprocess
import sys
import time
import types

import h5py
import numpy as np
import pytest

from sdmtcnn_tf import distribute, launch
from tests.conftest import (REPO, assert_one_error_line, made_once, optimizer_iterations,
                            run_module)

# the multi-process tests: one at a time under pytest-xdist (ports, and 2 cores for 2 workers)
multiworker_group = pytest.mark.xdist_group("multiworker")


@pytest.fixture(scope="session")
def data_32(tmp_path_factory) -> str:
  """A tiny synthetic set (32x32, 8 train / 4 val), made before any worker starts (workers
  that find it absent would all generate it at once)."""
  from sdmtcnn_tf.data import synthetic
  return made_once(tmp_path_factory, "synthetic_32x32_mw",
                   lambda path: synthetic.ensure_dataset(path, 8, 4, 32, 32, seed=0))


def tiny_flags(data_dir: str, model_dir: str, **changes) -> list:
  values = dict(dataset="synthetic", data_dir=data_dir, height=32, width=32,
                synthetic_num_train=8, synthetic_num_val=4, tasks="semseg,depth",
                num_classes=13, method="vanilla", distill="none", decoder="shared",
                width_multiplier=0.125, batch_size=4, eval_batch_size=2, legacy_batch_size=2,
                lr_decay_epochs=0, precise_bn_batches=0, validation_freq=100, verbose=2,
                model_dir=model_dir)
  values.update(changes)
  return [f"--{k}" if v is True else f"--{k}={v}" for k, v in values.items()]


def _env(**extra) -> dict:
  return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **extra}


# ---- TF_CONFIG -------------------------------------------------------------------------------
def _task(value):
  return distribute.cluster_task({"TF_CONFIG": value if isinstance(value, str)
                                  else json.dumps(value)})


WORKERS = {"worker": ["localhost:1000", "localhost:1001"]}


def test_tf_config_names_the_chief():
  assert _task({"cluster": WORKERS, "task": {"type": "worker", "index": 0}}).is_chief
  second = _task({"cluster": WORKERS, "task": {"type": "worker", "index": 1}})
  assert not second.is_chief and second.num_workers == 2 and second.name == "worker 1"
  with_chief = {**WORKERS, "chief": ["localhost:999"]}
  assert _task({"cluster": with_chief, "task": {"type": "chief", "index": 0}}).is_chief
  assert not _task({"cluster": with_chief, "task": {"type": "worker", "index": 0}}).is_chief


@pytest.mark.parametrize("value,needle", [
    ("", "needs the TF_CONFIG environment variable"),
    ("{not json", "TF_CONFIG is not valid JSON"),
    ("[1, 2]", "a JSON object"),
    ({"task": {"type": "worker", "index": 0}}, '"cluster"'),
    ({"cluster": {"worker": "localhost:1"}, "task": {"type": "worker", "index": 0}},
     '"cluster.worker" to be a list of "host:port"'),
    ({"cluster": {"worker": ["localhost"]}, "task": {"type": "worker", "index": 0}},
     '"host:port"'),
    ({"cluster": {**WORKERS, "ps": ["localhost:2"]}, "task": {"type": "worker", "index": 0}},
     "parameter servers"),
    ({"cluster": WORKERS, "task": {"type": "evaluator", "index": 0}}, '"task"'),
    ({"cluster": WORKERS, "task": {"type": "worker", "index": 2}}, '"task.index" in 0..1'),
    ({"cluster": WORKERS, "task": {"type": "worker", "index": "1"}}, '"task.index"'),
])
def test_bad_tf_config_is_named(value, needle):
  with pytest.raises(ValueError, match="TF_CONFIG") as e:
    _task(value)
  assert needle in str(e.value)


def test_launch_gives_each_worker_its_tf_config():
  ports = launch.free_ports(3)
  assert len(set(ports)) == 3
  tasks = [_task(launch.tf_config(ports, i)) for i in range(3)]
  assert [(t.task_index, t.num_workers, t.is_chief) for t in tasks] == [
      (0, 3, True), (1, 3, False), (2, 3, False)]
  cluster = json.loads(launch.tf_config(ports, 1))["cluster"]
  assert cluster == {"worker": [f"localhost:{p}" for p in ports]}


# ---- bad input on the command line: one error line -------------------------------------------
def test_multi_worker_without_tf_config_is_one_error_line(tmp_path, data_32):
  env = {k: v for k, v in _env().items() if k != "TF_CONFIG"}
  proc = subprocess.run([sys.executable, "-m", "sdmtcnn_tf.train",
                         *tiny_flags(data_32, str(tmp_path / "run")),
                         "--distribution=multi_worker"], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=300)
  assert_one_error_line(proc, "--distribution=multi_worker", "TF_CONFIG")
  assert not os.path.exists(tmp_path / "run")  # checked before anything is written


def test_malformed_tf_config_is_one_error_line(tmp_path, data_32):
  proc = run_module("sdmtcnn_tf.train", *tiny_flags(data_32, str(tmp_path / "run")),
                    "--distribution=multi_worker", check=False,
                    env={"TF_CONFIG": '{"cluster": {"worker": ["localhost:1"]}'})
  assert_one_error_line(proc, "TF_CONFIG is not valid JSON")


@pytest.mark.parametrize("args,needles", [
    (["--num_workers=0", "--", "--epochs=1"], ["--num_workers", "at least 1", "got 0"]),
    (["--num_workers=2"], ["expected the training flags after `--`"]),
    (["--num_workers=2", "--", "--distribution=mirrored"], ["--distribution=mirrored"]),
])
def test_bad_launch_is_one_error_line(args, needles):
  proc = run_module("sdmtcnn_tf.launch", *args, check=False)
  assert_one_error_line(proc, *needles)


def test_launch_stops_at_a_failing_worker_naming_it_and_its_error(tmp_path):
  proc = run_module("sdmtcnn_tf.launch", "--num_workers=2", "--", "--height=50",
                    f"--model_dir={tmp_path / 'run'}", check=False)
  line = assert_one_error_line(proc, "exited with status 1: --height: expected a positive "
                               "multiple of 32, got 50")
  assert re.match(r"error: worker [01] \(pid \d+\)", line), line
  assert "resumes" not in line  # the worker's own error says what to fix
  for i in (0, 1):  # each worker's own output, prefixed
    assert re.search(rf"^worker {i}: pid \d+", proc.stdout, re.M)
  assert "[worker 0] error: --height" in proc.stdout or "[worker 1] error: --height" in proc.stdout


# ---- what reaches the user -------------------------------------------------------------------
def test_every_line_and_progress_bar_redraw_of_a_worker_is_prefixed():
  prefix = launch.LinePrefixer("[worker 0] ")
  # Keras' progress bar (verbose=1) redraws its line with backspaces and a carriage return
  pieces = ["Epoch 1/2\n", "\r1/2 ━━━ 1s", "\b" * 11 + "\r2/2 ━━━━━━ 2s", " - loss: 5.0\n",
            "\n", "metric  value\nab", "c\r", "\nlast"]
  text = "".join(prefix(p) for p in pieces)
  assert text == ("[worker 0] Epoch 1/2\n\r[worker 0] 1/2 ━━━ 1s" + "\b" * 11 +
                  "\r[worker 0] 2/2 ━━━━━━ 2s - loss: 5.0\n[worker 0] \n"
                  "[worker 0] metric  value\n[worker 0] abc\r\n[worker 0] last")


def test_a_worker_writing_ends_another_workers_open_progress_bar_line():
  import io
  stream = io.StringIO()
  output = launch._Output(stream)
  chief, other = launch.LinePrefixer("[worker 0] "), launch.LinePrefixer("[worker 1] ")
  output.write(chief, "\r1/2 bar")
  output.write(other, "a warning\n")
  output.write(chief, "\r2/2 bar\n")
  output.write(other, "done\n")
  assert stream.getvalue() == ("\r[worker 0] 1/2 bar\n[worker 1] a warning\n"
                               "\r[worker 0] 2/2 bar\n[worker 1] done\n")


# what worker 0's collective op raised when worker 1 was killed (TF 2.21; the stack shortened)
LOST_PEER_MESSAGE = """Graph execution error:

Detected at node CollectiveReduceV2 defined at (most recent call last):
  File "<frozen runpy>", line 198, in _run_module_as_main

  File "/work/sdmtcnn_tf/train.py", line 143, in _train

  File "/work/.venv/lib/python3.11/site-packages/keras/src/backend/tensorflow/trainer.py", line 134, in one_step_on_data

Collective ops is aborted by: recvmsg:Connection reset by peer
Additional GRPC error information from remote target /job:worker/replica:0/task:1 while calling /tensorflow.WorkerService/RecvBuf:
:UNKNOWN:Error received from peer  {grpc_message:"recvmsg:Connection reset by peer", grpc_status:14}
The error could be from a previous operation. Restart your program to reset.
\t [[{{node CollectiveReduceV2}}]] [Op:__inference_multi_step_on_iterator_11256]"""


def test_a_lost_peer_is_one_line_naming_it():
  import tensorflow as tf
  chief = _task({"cluster": WORKERS, "task": {"type": "worker", "index": 0}})
  with pytest.raises(distribute.LostWorkerError) as e:
    with distribute.one_line_on_lost_worker(chief):
      raise tf.errors.UnavailableError(None, None, LOST_PEER_MESSAGE)
  assert isinstance(e.value, OSError)  # the CLI prints it as one `error:` line
  assert str(e.value) == (
      "worker 0 of 2 stopped: lost contact with worker 1 (UnavailableError: recvmsg:Connection "
      "reset by peer); once every worker runs again, the same command resumes from the chief's "
      "last backup")
  # when the coordination service noticed first (its format; the first line as seen)
  heartbeats = ("Error reported from /job:worker/task:1: The following tasks are unhealthy "
                "(stopped sending heartbeats):\n/job:worker/replica:0/task:1\nThe tasks have "
                "crashed. Check the task logs for an earlier error, or scheduler events (e.g. "
                "preemption, eviction) to debug further.")
  with pytest.raises(distribute.LostWorkerError, match=re.escape(
      "lost contact with worker 1 (UnavailableError: Error reported from /job:worker/task:1: The "
      "following tasks are unhealthy (stopped sending heartbeats): /job:worker/replica:0/task:1)")):
    with distribute.one_line_on_lost_worker(chief):
      raise tf.errors.UnavailableError(None, None, heartbeats)
  with pytest.raises(tf.errors.UnavailableError):  # one process: no peer to lose
    with distribute.one_line_on_lost_worker(None):
      raise tf.errors.UnavailableError(None, None, LOST_PEER_MESSAGE)
  with pytest.raises(tf.errors.InvalidArgumentError):  # not a lost peer: a bug, with traceback
    with distribute.one_line_on_lost_worker(chief):
      raise tf.errors.InvalidArgumentError(None, None, "Incompatible shapes")


def test_workers_generate_the_synthetic_dataset_one_at_a_time(tmp_path):
  import fcntl
  import threading
  from sdmtcnn_tf import experiment
  from sdmtcnn_tf.config import ExperimentConfig
  data_dir = tmp_path / "synthetic"
  cfg = ExperimentConfig.from_flat(dataset="synthetic", data_dir=str(data_dir), height=32,
                                   width=32, synthetic_num_train=2, synthetic_num_val=2,
                                   batch_size=1).validate()
  done = []
  worker = threading.Thread(target=lambda: done.append(experiment.prepare_data(cfg, "train")))
  with open(tmp_path / ".synthetic.lock", "a") as held:  # another worker is generating it
    fcntl.flock(held, fcntl.LOCK_EX)
    worker.start()
    worker.join(timeout=1.0)
    assert worker.is_alive() and not data_dir.exists()  # waits for the lock
  worker.join(timeout=120)
  assert done and done[0].num_examples("train") == 2


# ---- 2 workers == 1 process ------------------------------------------------------------------
def _weights(path: str) -> dict:
  arrays = {}
  with h5py.File(path, "r") as f:
    f.visititems(lambda name, obj: arrays.__setitem__(name, obj[()])
                 if isinstance(obj, h5py.Dataset) else None)
  return arrays


def _history(model_dir: str) -> list:
  with open(os.path.join(model_dir, "results", "history.csv")) as f:
    return [{k: v if v == "NA" else float(v) for k, v in row.items()}  # NA: not validated
            for row in csv.DictReader(f)]


@pytest.mark.slow
@multiworker_group
def test_two_workers_train_like_one_process_and_only_the_chief_writes(tmp_path, data_32):
  # float64 (tests/float64_train.py) and synchronised BatchNorm, as the MirroredStrategy test
  # (test_distillation.py::test_two_replicas_give_the_same_step_as_one) and with its bound:
  # in float32 the summation order of BatchNorm's statistics alone moves the weights ~1e-3.
  # 2 epochs of 1 step (global batch 4, 2 per worker); the second epoch validates.
  # --deterministic: the one process must read its shards in a fixed order too (multi_worker
  # forces it); without it the two runs' batches may differ (measured: weights 0.08 apart). Evaluation
  # batches of 4 = 2 per worker = one --legacy_batch_size group, so the per-batch legacy
  # metrics group the same images too (with batches of 2 each worker would see groups of 1).
  common = dict(sync_batchnorm=True, optimizer="sgd", learning_rate=0.05, epochs=2,
                steps_per_epoch=1, eval_batch_size=4, deterministic=True)
  single_dir, multi_dir = str(tmp_path / "single"), str(tmp_path / "multi")
  run_module("tests.float64_train", *tiny_flags(data_32, single_dir, **common))
  ports = launch.free_ports(2)
  procs, scratch_roots = [], []
  for i in range(2):
    tmp = tmp_path / f"tmp{i}"
    tmp.mkdir()
    scratch_roots.append(str(tmp))
    env = _env(TF_CONFIG=launch.tf_config(ports, i), TMPDIR=str(tmp))
    procs.append(subprocess.Popen(
        [sys.executable, "-m", "tests.float64_train",
         *tiny_flags(data_32, multi_dir, distribution="multi_worker", **common)],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
  outputs = [p.communicate(timeout=600) for p in procs]
  for p, (out, err) in zip(procs, outputs):
    assert p.returncode == 0, (out[-2000:], err[-4000:])

  single, multi = _weights(f"{single_dir}/checkpoints/model.weights.h5"), \
      _weights(f"{multi_dir}/checkpoints/model.weights.h5")
  assert single.keys() == multi.keys() and single
  assert any(a.dtype == np.float64 for a in single.values())
  diff = max(float(np.max(np.abs(single[k] - multi[k]))) for k in single)
  assert diff < 1e-10, diff  # float64 reduction order only
  single_rows, multi_rows = _history(single_dir), _history(multi_dir)
  assert len(single_rows) == 2 and single_rows[1]["loss"] != single_rows[0]["loss"]  # it learnt
  for s_row, m_row in zip(single_rows, multi_rows):
    assert s_row.keys() == m_row.keys()
    for key, value in s_row.items():
      assert m_row[key] == (value if value == "NA" else
                            pytest.approx(value, rel=1e-10, abs=1e-12)), key
  with open(f"{single_dir}/results/metrics.json") as f:
    single_metrics = json.load(f)
  with open(f"{multi_dir}/results/metrics.json") as f:
    multi_metrics = json.load(f)
  assert single_metrics.keys() == multi_metrics.keys()
  for key, value in single_metrics.items():  # the final evaluation, split over the workers
    assert multi_metrics[key] == pytest.approx(value, rel=1e-9, abs=1e-12), key

  # the chief (worker 0) alone held and wrote the run directory; worker 1 wrote into a scratch
  # directory under its TMPDIR and removed it
  with open(os.path.join(multi_dir, ".lock")) as f:
    assert f.read().startswith(f"pid {procs[0].pid} ")
  for name in ("config.json", "flags.txt", "checkpoints/model.weights.h5",
               "backup/latest.weights.h5", "results/history.csv", "results/metrics.json"):
    assert os.path.exists(os.path.join(multi_dir, name)), name
  assert any(os.scandir(os.path.join(multi_dir, "logs", "train")))
  match = re.search(r"this worker writes its copies to (\S+) \(removed", outputs[1][0])
  assert match, outputs[1][0][-2000:]
  assert match.group(1).startswith(scratch_roots[1] + os.sep)
  assert not os.path.exists(match.group(1))
  assert "writes its copies" not in outputs[0][0]
  assert os.listdir(scratch_roots[1]) == [] and os.listdir(scratch_roots[0]) == []


# ---- a killed worker -------------------------------------------------------------------------
def _backup_state(model_dir):
  try:
    with open(os.path.join(model_dir, "backup", "training_metadata.json")) as f:
      return json.load(f)
  except (OSError, ValueError):
    return None


@pytest.mark.slow
@multiworker_group
def test_killed_worker_stops_the_launch_and_a_rerun_resumes(tmp_path, data_32):
  model_dir = str(tmp_path / "run")
  steps = 4
  args = [sys.executable, "-m", "sdmtcnn_tf.launch", "--num_workers=2", "--",
          *tiny_flags(data_32, model_dir, batch_size=2, epochs=3, steps_per_epoch=steps,
                      backup_every_steps=1)]
  log_path, err_path = tmp_path / "launch.log", tmp_path / "launch.err"
  with open(log_path, "w") as log, open(err_path, "w") as err:
    proc = subprocess.Popen(args, cwd=REPO, env=_env(), stdout=log, stderr=err, text=True)
  deadline = time.time() + 400
  state = None
  while time.time() < deadline:
    state = _backup_state(model_dir)
    if state and state["epoch"] >= 1 and state["batch"] >= 1:
      break
    assert proc.poll() is None, log_path.read_text()[-3000:]
    time.sleep(0.05)
  assert state and state["epoch"] >= 1, log_path.read_text()[-3000:]
  worker1 = int(re.search(r"^worker 1: pid (\d+)", log_path.read_text(), re.M).group(1))
  os.kill(worker1, signal.SIGKILL)
  proc.wait(timeout=120)  # the launch notices and stops the chief
  failed = types.SimpleNamespace(returncode=proc.returncode, stderr=err_path.read_text())
  assert_one_error_line(failed, f"worker 1 (pid {worker1}) was killed by SIGKILL",
                        "stopped the other 1 running worker(s)",
                        "the same command resumes from the chief's last backup")
  chief = int(re.search(r"^worker 0: pid (\d+)", log_path.read_text(), re.M).group(1))
  with pytest.raises(ProcessLookupError):
    os.kill(chief, 0)  # stopped (and reaped) by the launch
  # the chief's collective op failed when its peer died: at most one line from it (if it got
  # there before the launch stopped it), no traceback or gRPC dump
  launched = log_path.read_text() + failed.stderr
  assert "Traceback" not in launched, launched[-3000:]
  assert not re.search(r"grpc|Detected at node|CollectiveReduce", launched, re.I), launched[-3000:]
  assert len(re.findall(r"^error: ", launched, re.M)) == 1, launched[-3000:]
  chief_errors = re.findall(r"^\[worker 0\] error: (.*)", launched, re.M)
  assert len(chief_errors) <= 1 and all("lost contact with worker 1" in line
                                        for line in chief_errors), chief_errors

  state = _backup_state(model_dir)
  backup = os.path.join(model_dir, "backup", "latest.weights.h5")
  steps_before = optimizer_iterations(backup)
  assert steps_before >= steps * state["epoch"]
  # a rerun with the progress bar (--verbose may change on resume)
  done = subprocess.run([*args, "--verbose=1"], cwd=REPO, env=_env(), capture_output=True,
                        text=True, timeout=600)
  assert done.returncode == 0, (done.stdout[-3000:], done.stderr[-3000:])
  # the chief alone shows progress and the results table (Keras' convention: verbose=0 on the
  # other workers); every line a worker prints reaches us prefixed, the bar's redraws included
  assert len(re.findall(r"^\[worker 0\] metric +value$", done.stdout, re.M)) == 1, done.stdout
  assert not re.search(r"^(\[worker 1\] )?(metric +value|Epoch )", done.stdout, re.M)
  # (text=True reads each redraw's carriage return as a line end)
  assert re.search(r"^\[worker 0\] \S*4/4", done.stdout, re.M), done.stdout[-3000:]  # the bar
  for piece in re.split(r"[\r\n]+", done.stdout):
    assert not piece or re.match(r"\[worker [01]\] |worker [01]: pid \d+", piece), repr(piece)
  epochs_run = [line.split("] ", 1)[1] for line in done.stdout.splitlines()
                if line.startswith("[worker 0] Epoch ")]
  assert epochs_run[0] == f"Epoch {state['epoch'] + 1}/3", epochs_run
  assert len(epochs_run) == 3 - state["epoch"]
  # both workers restored the chief's backup (weights and optimizer state): the step counter
  # continued from it
  assert optimizer_iterations(backup) == steps_before + steps * (3 - state["epoch"])
