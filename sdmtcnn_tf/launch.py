"""Multi-worker training on this machine: `python -m sdmtcnn_tf.launch --num_workers=N -- <train flags>`.

Starts N processes of `python -m sdmtcnn_tf.train <train flags> --distribution=multi_worker`,
each with its own TF_CONFIG (cluster: N localhost workers on free ports; worker 0 is the chief,
which writes --model_dir). It is the same TF_CONFIG path a cluster uses (deploy/k8s/tfjob.yaml),
only started here: a convenience for trying and testing multi-worker training.

Each worker's output (stdout and stderr) is printed with a `[worker i] ` prefix. When a worker
fails or is killed, the others are stopped and the launch ends with one error line naming it;
the same command then resumes from the chief's last backup. Each worker gets its own TMPDIR
under one temporary folder, removed at the end, so a killed worker leaves no scratch files.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

from sdmtcnn_tf import cli  # first: it quiets TensorFlow's C++ logs

from absl import flags

TRAIN_MODULE = "sdmtcnn_tf.train"
_STOP_GRACE_S = 10.0  # SIGTERM, then SIGKILL after this long


class WorkerFailedError(ChildProcessError):
  """A worker exited with an error or was killed (an OSError: the CLI prints one line)."""


def free_ports(n: int, host: str = "localhost") -> list:
  """`n` distinct TCP ports free on `host` now (bound together, then released)."""
  sockets = []
  try:
    for _ in range(n):
      s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
      s.bind((host, 0))
      sockets.append(s)
    return [s.getsockname()[1] for s in sockets]
  finally:
    for s in sockets:
      s.close()


def tf_config(ports: list, index: int, host: str = "localhost") -> str:
  """The TF_CONFIG of worker `index` in a cluster of workers on `host`:`ports`."""
  return json.dumps({"cluster": {"worker": [f"{host}:{p}" for p in ports]},
                     "task": {"type": "worker", "index": index}})


def worker_args(train_args: list) -> list:
  """The training command of every worker: the given flags plus --distribution=multi_worker."""
  for arg in train_args:
    if arg.startswith("--distribution=") and arg != "--distribution=multi_worker":
      raise ValueError(f"{arg}: the launch trains with --distribution=multi_worker; leave "
                       "--distribution out")
  return [sys.executable, "-m", TRAIN_MODULE, *train_args, "--distribution=multi_worker"]


def _describe_exit(code: int) -> str:
  if code < 0:
    try:
      return f"was killed by {signal.Signals(-code).name}"
    except ValueError:
      return f"was killed by signal {-code}"
  return f"exited with status {code}"


class _Worker:
  def __init__(self, index: int, args: list, env: dict):
    self.index = index
    self.last_error = ""
    self.proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    self.pump = threading.Thread(target=self._forward, daemon=True)
    self.pump.start()

  def _forward(self):
    prefix = f"[worker {self.index}] "
    for raw in iter(self.proc.stdout.readline, b""):
      line = raw.decode(errors="replace").rstrip("\n")
      if line.startswith("error: "):
        self.last_error = line[len("error: "):]
      sys.stdout.write(prefix + line + "\n")
      sys.stdout.flush()

  def stop(self):
    if self.proc.poll() is None:
      self.proc.terminate()


def launch(num_workers: int, train_args: list) -> None:
  """Runs the workers to the end; raises WorkerFailedError naming the first that failed."""
  if num_workers < 1:
    raise ValueError(f"--num_workers: expected at least 1, got {num_workers}")
  if not train_args:
    raise ValueError("expected the training flags after `--`, e.g. python -m sdmtcnn_tf.launch "
                     "--num_workers=2 -- --flagfile=configs/synthetic_smoke.flags "
                     "--model_dir=runs/x")
  args = worker_args(train_args)
  ports = free_ports(num_workers)
  scratch = tempfile.mkdtemp(prefix="sdmtcnn_launch_")
  workers = []
  try:
    for i in range(num_workers):
      tmp = os.path.join(scratch, f"worker{i}")
      os.makedirs(tmp)
      env = {**os.environ, "TF_CONFIG": tf_config(ports, i), "TMPDIR": tmp,
             "PYTHONUNBUFFERED": "1"}
      workers.append(_Worker(i, args, env))
      print(f"worker {i}: pid {workers[-1].proc.pid}, localhost:{ports[i]}"
            f"{' (chief)' if i == 0 else ''}", flush=True)
    failed = None
    while failed is None:
      done = [w for w in workers if w.proc.poll() is not None]
      # the first to fail; at the same poll, a killed one before one that lost its peer
      failed = min((w for w in done if w.proc.returncode != 0), default=None,
                   key=lambda w: (w.proc.returncode >= 0, w.index))
      if len(done) == len(workers):
        break
      time.sleep(0.1)
    if failed is not None:
      running = [w for w in workers if w.proc.poll() is None]
      _stop(running)
      failed.pump.join(timeout=5)
      # a worker's own one-line error (bad flags, data, ...) says what to fix; otherwise (killed,
      # crashed) the same command goes on from the last backup
      what = (f": {failed.last_error}" if failed.last_error else "")
      after = ("" if failed.last_error else
               "; the same command resumes from the chief's last backup")
      raise WorkerFailedError(
          f"worker {failed.index} (pid {failed.proc.pid}) {_describe_exit(failed.proc.returncode)}"
          f"{what}; stopped the other {len(running)} running worker(s){after}")
  finally:
    _stop(workers)
    for w in workers:
      w.pump.join(timeout=5)
    shutil.rmtree(scratch, ignore_errors=True)


def _stop(workers: list) -> None:
  """SIGTERM each running worker, then SIGKILL those still running after the grace period."""
  for w in workers:
    w.stop()
  deadline = time.time() + _STOP_GRACE_S
  for w in workers:
    try:
      w.proc.wait(timeout=max(0.0, deadline - time.time()))
    except subprocess.TimeoutExpired:
      w.proc.kill()
      w.proc.wait()


def _interrupt(signum, frame):
  raise KeyboardInterrupt  # SIGTERM (e.g. from a scheduler) stops the workers as Ctrl-C does


def main(argv):
  signal.signal(signal.SIGTERM, _interrupt)
  launch(flags.FLAGS.num_workers, list(argv[1:]))


if __name__ == "__main__":
  flags.DEFINE_integer("num_workers", 2, "Worker processes to start on this machine (at least "
                       "1).")
  cli.run(main)
