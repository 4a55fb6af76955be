"""Distribution strategy and precision policy selection.

--distribution=multi_worker reads the cluster from the TF_CONFIG environment variable (what
Kubeflow's TFJob, Vertex AI and GKE set; `python -m sdmtcnn_tf.launch` sets it on localhost):

  {"cluster": {"worker": ["host0:port", "host1:port"]}, "task": {"type": "worker", "index": 1}}

(an optional one-entry "chief" job is the chief; without one, worker 0 is). Every worker runs
the same training command; the chief writes the run directory, the others write their copies
of the same files into a temporary directory (train.py). `MultiWorkerFit` holds the two Keras
overrides that `fit` needs under this strategy.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re

import keras
import tensorflow as tf

from sdmtcnn_tf.config import ExperimentConfig

TF_CONFIG = "TF_CONFIG"
_SHAPE = ('{"cluster": {"worker": ["host:port", ...]}, "task": {"type": "worker", "index": i}} '
          '(an optional one-entry "chief" job beside "worker")')


@dataclasses.dataclass(frozen=True)
class ClusterTask:
  """This process's place in the TF_CONFIG cluster."""

  task_type: str  # "chief" or "worker"
  task_index: int
  num_workers: int  # processes in the cluster, the chief included
  has_chief: bool = False  # the cluster has a "chief" job

  @property
  def is_chief(self) -> bool:
    """The process that writes the run directory: the chief job, else worker 0 (TF's rule)."""
    return self.task_type == "chief" or (self.task_type == "worker" and self.task_index == 0
                                         and not self.has_chief)

  @property
  def name(self) -> str:
    return f"{self.task_type} {self.task_index}"


def cluster_task(environ=os.environ) -> ClusterTask:
  """Parses and checks TF_CONFIG; raises ValueError naming TF_CONFIG and what was expected."""
  raw = environ.get(TF_CONFIG, "").strip()
  if not raw:
    raise ValueError(f"--distribution=multi_worker needs the {TF_CONFIG} environment variable, "
                     f"expected {_SHAPE} (python -m sdmtcnn_tf.launch sets it on this machine)")
  try:
    config = json.loads(raw)
  except ValueError as e:
    raise ValueError(f"{TF_CONFIG} is not valid JSON ({e}): expected {_SHAPE}") from None

  def need(cond, what, got):
    if not cond:
      raise ValueError(f"{TF_CONFIG}: expected {what}, got {got!r}")

  need(isinstance(config, dict), f"a JSON object {_SHAPE}", config)
  cluster, task = config.get("cluster"), config.get("task")
  need(isinstance(cluster, dict) and cluster, '"cluster": {"worker": ["host:port", ...]}',
       cluster)
  extra = sorted(set(cluster) - {"chief", "worker"})
  need(not extra, 'only "chief" and "worker" jobs in "cluster" (MultiWorkerMirroredStrategy '
       'has no parameter servers or evaluators)', extra)
  for job, addresses in cluster.items():
    need(isinstance(addresses, list) and addresses
         and all(isinstance(a, str) and a.rpartition(":")[2].isdigit() for a in addresses),
         f'"cluster.{job}" to be a list of "host:port" strings', addresses)
  need(len(cluster.get("chief", [])) <= 1, 'at most one "chief" address', cluster.get("chief"))
  need(isinstance(task, dict) and task.get("type") in cluster,
       f'"task": {{"type": one of {sorted(cluster)}, "index": i}}', task)
  index, size = task.get("index", 0), len(cluster[task["type"]])
  need(isinstance(index, int) and not isinstance(index, bool) and 0 <= index < size,
       f'"task.index" in 0..{size - 1} (the "{task["type"]}" job has {size} address(es))', index)
  return ClusterTask(task["type"], index, sum(len(a) for a in cluster.values()),
                     has_chief="chief" in cluster)


def is_chief(cfg: ExperimentConfig) -> bool:
  """Whether this process is the run's chief: the one process of a run without
  --distribution=multi_worker, else the TF_CONFIG chief. Only the chief writes --model_dir and
  prints progress and results (Keras' convention: verbose=0 on the other workers)."""
  return cfg.run.distribution != "multi_worker" or cluster_task().is_chief


class LostWorkerError(ConnectionError):
  """Another worker of the cluster stopped (killed, failed) or cannot be reached, so this one
  cannot go on: not a bug here (an OSError: the CLI prints one line)."""


# what a collective op raises when a peer is gone (gRPC UNAVAILABLE mostly; TF keeps the status
# code when it aborts the other collectives)
_LOST_PEER_ERRORS = (tf.errors.UnavailableError, tf.errors.AbortedError,
                     tf.errors.CancelledError, tf.errors.DeadlineExceededError)


def _lost_peer_summary(error: tf.errors.OpError, task: ClusterTask) -> str:
  """`worker 1 (UnavailableError: recvmsg:Connection reset by peer)` from the error of a
  collective op whose peer is gone. Its message (~60 lines) holds TensorFlow's stack of the op
  (indented, blank-separated), then the cause and a gRPC dump, or the coordination service's
  `The following tasks are unhealthy (stopped sending heartbeats):` and the task names."""
  peers = [f"{job} {index}" for job, index in
           re.findall(r"/job:(\w+)(?:/replica:\d+)?/task:(\d+)", error.message)
           if (job, int(index)) != (task.task_type, task.task_index)]
  lines = [line for line in error.message.splitlines() if line.strip()
           and not line[0].isspace() and not line.startswith(("Graph execution error",
                                                             "Detected at node"))]
  cause = " ".join(lines[:2] if lines and lines[0].endswith(":") else lines[:1])
  cause = re.sub(r"^Collective ops is aborted by: ", "", cause)
  what = f"{type(error).__name__}: {cause}" if cause else type(error).__name__
  return f"{peers[0] if peers else 'another worker'} ({what})"


@contextlib.contextmanager
def one_line_on_lost_worker(task):
  """Inside it, the error a collective op raises when another worker of `task`'s cluster is gone
  becomes one LostWorkerError naming that worker (no traceback: the launch or the cluster
  names the worker that died). `task` None (one process): nothing changes."""
  try:
    yield
  except _LOST_PEER_ERRORS as e:
    if task is None:
      raise
    raise LostWorkerError(
        f"{task.name} of {task.num_workers} stopped: lost contact with "
        f"{_lost_peer_summary(e, task)}; once every worker runs again, the same command resumes "
        "from the chief's last backup") from e


def make_strategy(cfg: ExperimentConfig) -> tf.distribute.Strategy:
  """default: the current (single-device) strategy; mirrored: MirroredStrategy over every
  visible GPU, or every logical CPU device when there is no GPU (how the tests run it);
  multi_worker: MultiWorkerMirroredStrategy over the TF_CONFIG cluster (call cluster_task()
  first for a clear error; this blocks until every worker has started)."""
  if cfg.run.distribution == "mirrored":
    gpus = tf.config.list_logical_devices("GPU")
    devices = [d.name for d in (gpus or tf.config.list_logical_devices("CPU"))]
    return tf.distribute.MirroredStrategy(devices)
  if cfg.run.distribution == "multi_worker":
    cluster_task()
    return tf.distribute.MultiWorkerMirroredStrategy()  # AUTO: NCCL on GPUs, ring on CPUs
  return tf.distribute.get_strategy()


def is_multi_worker(strategy: tf.distribute.Strategy) -> bool:
  """True when `strategy` spans several processes (Keras' own test for its multi-worker path)."""
  return (isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
          and strategy.extended._in_multi_worker_mode())


class MultiWorkerFit(keras.Model):
  """The Keras 3.15 workaround for `fit`/`evaluate` under MultiWorkerMirroredStrategy.

  Out of the box they fail there (tensorflow/tensorflow#72388; research/toolchain-report.md
  section 4) at two places of keras/src/backend/tensorflow/trainer.py, both private API, hence
  the keras==3.15.1 pin and tests/test_multiworker.py, which trains through them:
    1. `_maybe_symbolic_build` pulls one batch and calls `strategy.reduce("MEAN", batch)` on the
       whole (x, y) structure, which the collective strategy cannot reduce. Our model is built
       when constructed (a functional graph), so only the optimizer is left to build and no
       batch is needed; pulling none also keeps the first batch of the (reset) iterator the
       same as in a one-process run.
    2. `reduce_per_replica` reduces every step log with `strategy.reduce("MEAN", v, axis=0)`,
       which fails on scalars: `per_replica_logs` gives each log a leading dimension of 1 (the
       values are already global, so their mean over the workers is the value itself).
  Both act only in multi-worker mode; elsewhere Keras' own code runs unchanged.
  """

  def _maybe_symbolic_build(self, iterator=None, data_batch=None):
    if not is_multi_worker(self.distribute_strategy):
      return super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)
    if not all(layer.built for layer in self._flatten_layers()):
      raise RuntimeError(f"{type(self).__name__} must be built before fit/evaluate under "
                         "MultiWorkerMirroredStrategy")
    with self.distribute_strategy.scope():
      self._symbolic_build(data_batch=data_batch)  # builds the optimizer; reads no batch

  def per_replica_logs(self, logs: dict) -> dict:
    """`train_step`/`test_step` return their logs through this."""
    if not is_multi_worker(self.distribute_strategy):
      return logs
    return {name: tf.reshape(value, [1]) for name, value in logs.items()}


def set_precision(cfg: ExperimentConfig) -> None:
  """Sets Keras' global dtype policy from --mixed_precision (off = Keras' floatx, float32
  unless a program set another, as the float64 equivalence tests do)."""
  policy = cfg.run.mixed_precision
  keras.mixed_precision.set_global_policy(keras.backend.floatx() if policy == "off" else policy)
