"""`--num_workers=N` on one machine: the chief (the oracle) and N workers of Keras Tuner's own
distributed mode, as subprocesses on localhost.

Each child runs the same command with `--num_workers=0` and the environment Keras Tuner reads:
KERASTUNER_ORACLE_IP=127.0.0.1, KERASTUNER_ORACLE_PORT=<a free port> and KERASTUNER_TUNER_ID
(`chief`, `worker0`, ..., `worker<N-1>`). Their output lines are printed prefixed with
`[chief] ` / `[worker<i>] `. When one exits with an error, the others are stopped and the
launch fails naming it; when the chief has finished (it serves until every worker was told to
stop), a worker still running is one that never got a trial, and it is stopped.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time

ENV_IP, ENV_PORT, ENV_ID = "KERASTUNER_ORACLE_IP", "KERASTUNER_ORACLE_PORT", "KERASTUNER_TUNER_ID"
LOCALHOST = "127.0.0.1"


def role() -> str:
  """This process's role from the environment: "chief", "worker" or "single" (no variables)."""
  if ENV_IP not in os.environ:
    return "single"
  missing = [v for v in (ENV_PORT, ENV_ID) if not os.environ.get(v)]
  if missing:
    raise ValueError(f"{ENV_IP} is set but {' and '.join(missing)} not: a distributed search "
                     f"needs all three ({ENV_IP}, {ENV_PORT}, {ENV_ID}=chief|worker<i>)")
  return "chief" if "chief" in os.environ[ENV_ID] else "worker"


def free_port() -> int:
  with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
    s.bind((LOCALHOST, 0))
    return s.getsockname()[1]


def _relay(name: str, stream, out) -> None:
  for line in stream:
    out.write(f"[{name}] {line}")
    out.flush()


def _stop(procs: dict, grace_seconds: float = 10.0) -> None:
  for p in procs.values():
    if p.poll() is None:
      p.terminate()
  deadline = time.time() + grace_seconds
  for p in procs.values():
    try:
      p.wait(timeout=max(0.1, deadline - time.time()))
    except subprocess.TimeoutExpired:
      p.kill()
      p.wait()


def launch(module_args: list, num_workers: int, module: str = "sdmtcnn_tf.tune",
           out=sys.stdout, poll_seconds: float = 0.5) -> None:
  """Runs `python -m module *module_args --num_workers=0` as the chief and `num_workers`
  workers; returns when all have finished. Raises ChildProcessError when one fails."""
  port = free_port()
  command = [sys.executable, "-m", module, *module_args, "--num_workers=0"]
  names = ["chief"] + [f"worker{i}" for i in range(num_workers)]
  procs, relays = {}, []
  print(f"oracle on {LOCALHOST}:{port}; starting {', '.join(names)}", file=out, flush=True)
  try:
    for name in names:
      env = {**os.environ, ENV_IP: LOCALHOST, ENV_PORT: str(port), ENV_ID: name,
             "PYTHONUNBUFFERED": "1"}
      procs[name] = subprocess.Popen(command, env=env, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, bufsize=1)
      relay = threading.Thread(target=_relay, args=(name, procs[name].stdout, out), daemon=True)
      relay.start()
      relays.append(relay)
    chief_done_at = None
    while True:
      for name, p in procs.items():
        code = p.poll()
        if code not in (None, 0):
          _stop(procs)
          raise ChildProcessError(f"the {name} process exited with status {code}; the others "
                                  f"were stopped (its last lines are above, prefixed [{name}])")
      if all(p.poll() == 0 for p in procs.values()):
        break
      if procs["chief"].poll() == 0:
        chief_done_at = chief_done_at or time.time()
        if time.time() - chief_done_at > 30:  # a worker that never got a trial
          _stop(procs)
          break
      time.sleep(poll_seconds)
  except BaseException:
    _stop(procs)
    raise
  finally:
    for relay in relays:
      relay.join(timeout=5)
