"""Multi-worker training on this machine: `python -m sdmtcnn_tf.launch --num_workers=N -- <train flags>`.

Starts N processes of `python -m sdmtcnn_tf.train <train flags> --distribution=multi_worker`,
each with its own TF_CONFIG (cluster: N localhost workers on free ports; worker 0 is the chief,
which writes --model_dir). It is the same TF_CONFIG path a cluster uses (deploy/k8s/tfjob.yaml),
only started here: a convenience for trying and testing multi-worker training.

Each worker's output (stdout and stderr) is printed as it comes with a `[worker i] ` prefix on
every line (and after every carriage return: the chief's progress bar). Only the chief prints
progress and results (train.py); the other workers print little but their own errors. When a
worker fails or is killed, the others are stopped (a worker that lost its peer first says so in
one line) and the launch ends with one error line naming it; the same command then resumes from
the chief's last backup. Each worker gets its own TMPDIR under one temporary folder, removed at
the end, so a killed worker leaves no scratch files.
"""

from __future__ import annotations

import codecs
import json
import os
import re
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
_PIECES = re.compile(r"[^\r\n]+|\r|\n")  # a text as runs of characters and line ends


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


class LinePrefixer:
  """Puts `prefix` at the start of every line of a text that comes in pieces, and after every
  carriage return that does not end a line (a progress bar redraws its line with one)."""

  def __init__(self, prefix: str):
    self.prefix = prefix
    self.at_line_start = True
    self.after_return = False  # the last character given was a carriage return

  def __call__(self, text: str) -> str:
    out = []
    for piece in _PIECES.findall(text):
      # not before a carriage return (what follows it gets one) nor the line feed after one
      if self.at_line_start and piece != "\r" and not (piece == "\n" and self.after_return):
        out.append(self.prefix)
      out.append(piece)
      self.at_line_start = piece in ("\r", "\n")
      self.after_return = piece == "\r"
    return "".join(out)

  @property
  def line_open(self) -> bool:
    """Something of this text's current line is on the screen (the cursor is after it, or at
    its start after a carriage return)."""
    return not self.at_line_start or self.after_return

  def end_line(self) -> str:
    """What ends the open line (another text is about to be written)."""
    opened, self.at_line_start, self.after_return = self.line_open, True, False
    return "\n" if opened else ""


class _Output:
  """Our stdout, shared by the workers' pumps: a worker's line left open (a progress bar) is
  ended before another worker writes."""

  def __init__(self, stream):
    self.stream = stream
    self.lock = threading.Lock()
    self.open_by = None  # the LinePrefixer whose line is open

  def write(self, prefixer: LinePrefixer, text: str) -> None:
    with self.lock:
      if self.open_by is not None and self.open_by is not prefixer:
        self.stream.write(self.open_by.end_line())
      self.stream.write(prefixer(text))
      self.stream.flush()
      self.open_by = prefixer if prefixer.line_open else None


class _Worker:
  def __init__(self, index: int, args: list, env: dict, output: _Output):
    self.index = index
    self.last_error = ""
    self.proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    self.pump = threading.Thread(target=self._forward, args=(output,), daemon=True)
    self.pump.start()

  def _forward(self, output: _Output):
    """Copies the worker's output as it comes (not line by line: a progress bar redraws its
    line), remembering its last `error: ` line."""
    prefixer = LinePrefixer(f"[worker {self.index}] ")
    decode = codecs.getincrementaldecoder("utf-8")(errors="replace").decode
    line = ""  # the current line, for its `error: `
    for raw in iter(lambda: self.proc.stdout.read1(65536), b""):
      text = decode(raw)
      output.write(prefixer, text)
      for piece in _PIECES.findall(text):
        if piece == "\n" and line.startswith("error: "):
          self.last_error = line[len("error: "):]
        line = "" if piece in ("\r", "\n") else line + piece

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
  output = _Output(sys.stdout)
  try:
    for i in range(num_workers):
      tmp = os.path.join(scratch, f"worker{i}")
      os.makedirs(tmp)
      env = {**os.environ, "TF_CONFIG": tf_config(ports, i), "TMPDIR": tmp,
             "PYTHONUNBUFFERED": "1"}
      workers.append(_Worker(i, args, env, output))
      with output.lock:  # before the workers' first output (they take seconds to start)
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
