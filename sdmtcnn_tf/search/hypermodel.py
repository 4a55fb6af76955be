"""Keras Tuner glue: the HyperModel (search space -> config -> compiled model), the Tuner whose
trials are ordinary training runs, the oracles and the chief's gRPC server.

A trial's hyperparameter values are config flags: `TrialHyperModel.config` applies them to the
base config (`cfg.replace`), and `RunTuner.run_trial` trains that config with `train.train` in
`<tune_dir>/trials/<trial id>/` (`.../exec<k>/` for each of K > 1 executions, seed + k): each
is a normal run directory (flags.txt, config.json, results/metrics.json, logs/, backup/), so a
killed trial resumes inside it and evaluate/export read it as any other run. Keras Tuner's own
files (oracle.json, trial_<id>/trial.json, <tuner id>.json) live in `<tune_dir>/oracle/`.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import shutil
import time
from concurrent import futures

import keras
import keras_tuner as kt
from keras_tuner.engine import base_tuner
from keras_tuner.src.distribute import utils as dist_utils

from sdmtcnn_tf import experiment, train
from sdmtcnn_tf.rundir import RunPaths
from sdmtcnn_tf.search import space as space_lib

ORACLE_DIR = "oracle"  # Keras Tuner's project_name inside the tune_dir
TRIALS_DIR = "trials"
WALL_TIME = "wall_time_s"  # reported beside the metrics: seconds of the trial's last run
TUNERS = ("random", "bayesian", "hyperband")
# Never copied into a Hyperband continuation: the run's record of its own config and results
# (it is a new run directory continuing the old one's weights, optimizer and history).
_NOT_CONTINUED = {".lock", "config.json", "flags.txt", "metrics.json"}


class TrialHyperModel(kt.HyperModel):
  """The search space of `space` (space.py) on top of the validated base config."""

  def __init__(self, base_cfg, space: tuple):
    super().__init__(name="sdmtcnn")
    self.base_cfg = base_cfg
    self.space = space

  def declare_hyperparameters(self, hp):
    space_lib.declare(self.space, self.base_cfg, hp)

  def config(self, values: dict, model_dir: str = "", execution: int = 0):
    """The trial's config: the base config with the trial's values; Hyperband's
    `tuner/epochs` as --epochs; execution k trains with --seed + k."""
    changes = space_lib.config_values(self.space, self.base_cfg, values)
    if "tuner/epochs" in values:
      changes["epochs"] = int(values["tuner/epochs"])
    changes["seed"] = changes.get("seed", self.base_cfg.run.seed) + execution
    return self.base_cfg.replace(**changes, model_dir=model_dir)

  def build(self, hp):
    """The compiled training model of the trial's config, built as train.py builds it."""
    cfg = self.config(hp.values)
    _, model = experiment.build_model(cfg)
    experiment.compile_model(model, cfg)
    return model


def run_dir(tune_dir: str, trial_id: str, execution: int = 0, executions: int = 1) -> str:
  """The run directory of one execution of a trial."""
  path = os.path.join(tune_dir, TRIALS_DIR, str(trial_id))
  return os.path.join(path, f"exec{execution}") if executions > 1 else path


def make_oracle(kind: str, objective, max_trials: int, seed: int, max_epochs: int,
                factor: int = 3):
  """The Keras Tuner oracle `kind` (TUNERS) for `objective` (objective.Objective).
  hyperband: trials of 1..max_epochs epochs (--epochs), brackets of `factor`; max_trials is
  not used (Hyperband's brackets decide the number of trials)."""
  goal = kt.Objective(objective.name, objective.direction)
  common = dict(objective=goal, seed=seed, max_retries_per_trial=0)
  if kind == "random":
    return kt.oracles.RandomSearchOracle(max_trials=max_trials, **common)
  if kind == "bayesian":
    missing = [m for m in ("scipy", "sklearn") if importlib.util.find_spec(m) is None]
    if missing:
      raise ValueError(f"--tuner=bayesian needs {' and '.join(missing)} (Keras Tuner's Gaussian "
                       "process), pinned in requirements.txt but not installed here: pip install -r "
                       "requirements.txt, or use --tuner=random|hyperband")
    return kt.oracles.BayesianOptimizationOracle(max_trials=max_trials, **common)
  if kind == "hyperband":
    return kt.oracles.HyperbandOracle(max_epochs=max_epochs, factor=factor, **common)
  raise ValueError(f"--tuner={kind}: expected one of {', '.join(TUNERS)}")


class RunTuner(base_tuner.BaseTuner):
  """Runs each trial as `executions` training runs (train.train) and reports the objective
  and the run's averaged metrics (metrics.json) to the oracle. Prints one line per trial start
  and end, with the best so far."""

  def __init__(self, oracle, hypermodel: TrialHyperModel, objective, tune_dir: str,
               executions: int = 1, log=print):
    self.objective = objective
    self.tune_dir = tune_dir
    self.executions = executions
    self.log = log
    self._started = {}
    oracle.verbose = 0  # our one-line progress replaces Keras Tuner's tables
    super().__init__(oracle, hypermodel, directory=tune_dir, project_name=ORACLE_DIR,
                     overwrite=False)

  # ---- Keras Tuner hooks ------------------------------------------------------------------
  def _populate_initial_space(self):
    # Our spaces have no conditional hyperparameters: declaring them is enough (Keras Tuner
    # would otherwise build a model here just to discover them).
    hp = self.oracle.get_space()
    self.hypermodel.declare_hyperparameters(hp)
    self.oracle.update_space(hp)

  def search(self, *args, **kwargs):
    if dist_utils.is_chief_oracle():  # the chief only serves the oracle
      self.save()
      serve(self.oracle)
      # The oracle saved itself last inside end_trial, before it dropped that trial from its
      # ongoing ones: saved as it was, a restart would queue the finished trial for a retry.
      self.save()
      return
    super().search(*args, **kwargs)

  def on_search_begin(self):
    # Keras Tuner reloads a project only when this tuner's file exists, and writes it first at
    # a trial's end: without this, a search killed inside its first trial would start afresh.
    self.save()

  def on_trial_begin(self, trial):
    self._started[trial.trial_id] = time.time()
    values = _user_values(trial.hyperparameters.values)
    shown = " ".join(f"{k}={_fmt(v)}" for k, v in values.items())
    if "tuner/trial_id" in trial.hyperparameters.values:
      shown += f" (continues trial {trial.hyperparameters.values['tuner/trial_id']})"
    self.log(f"trial {trial.trial_id} start: {shown} -> "
             f"{run_dir(self.tune_dir, trial.trial_id)}", flush=True)

  def on_trial_end(self, trial):
    super().on_trial_end(trial)  # the oracle records it
    ended = self.oracle.get_trial(trial.trial_id)
    seconds = time.time() - self._started.pop(trial.trial_id, time.time())
    name = self.objective.name
    if ended.status == "COMPLETED":
      result = f"{name}={_fmt(ended.score)}"
    else:
      last = (ended.message or "").strip().splitlines()[-1:] or [""]
      result = f"{ended.status} ({last[0]})"
    best = self.oracle.get_best_trials(1)
    best_text = (f"best {name}={_fmt(best[0].score)} (trial {best[0].trial_id})"
                 if best and best[0].status == "COMPLETED" else "no completed trial yet")
    self.log(f"trial {trial.trial_id} end in {seconds:.0f} s: {result}; {best_text}", flush=True)

  def run_trial(self, trial, *args, **kwargs):
    values = trial.hyperparameters.values
    start = time.time()
    runs = []
    for k in range(self.executions):
      directory = run_dir(self.tune_dir, trial.trial_id, k, self.executions)
      cfg = self.hypermodel.config(values, directory, k)
      if "tuner/trial_id" in values:  # Hyperband: continue the earlier trial's run
        continue_run(run_dir(self.tune_dir, values["tuner/trial_id"], k, self.executions),
                     directory)
      metrics = train_or_read(cfg)
      runs.append(metrics)
      write_hparams(cfg, trial.trial_id, _user_values(values), self.objective.name,
                    self.objective.value(metrics, cfg))
    metrics = average(runs)
    value = self.objective.value(metrics, self.hypermodel.base_cfg)
    return {**{k: (math.nan if v is None else v) for k, v in metrics.items()},
            self.objective.name: value, WALL_TIME: time.time() - start}

  def load_model(self, trial):
    """The trained model of the trial's first execution (get_best_models)."""
    return experiment.load_trained(run_dir(self.tune_dir, trial.trial_id, 0,
                                           self.executions))[2]


def train_or_read(cfg) -> dict:
  """Trains `cfg` (resuming its run directory), or reads the results of a run of this very
  config that finished already (a trial killed after its evaluation, before Keras Tuner
  recorded it). Returns {metric: float or None}."""
  paths = RunPaths(cfg.run.model_dir)
  config_json = os.path.join(cfg.run.model_dir, "config.json")
  if os.path.exists(paths.metrics_json) and os.path.exists(config_json):
    with open(config_json) as f:
      same = json.load(f) == cfg.to_json()
    if same:
      with open(paths.metrics_json) as f:
        return json.load(f)
  keras.backend.clear_session()  # each run starts as in a fresh process
  metrics = train.train(cfg)
  return {k: (v if math.isfinite(v) else None) for k, v in metrics.items()}


def continue_run(source: str, target: str) -> None:
  """Hyperband: `target` starts as a copy of the finished run `source` (weights, optimizer,
  backup, history, logs; not its config or results), so the training resume continues it up
  to the new --epochs. A target with its own training state is left alone (a resumed trial)."""
  if experiment.has_training_state(target):
    return
  if not os.path.isdir(source):
    raise FileNotFoundError(f"Hyperband continues trial run {source}, which does not exist")
  partial = target.rstrip(os.sep) + ".partial"
  shutil.rmtree(partial, ignore_errors=True)
  shutil.copytree(source, partial,
                  ignore=lambda _, names: [n for n in names if n in _NOT_CONTINUED])
  shutil.rmtree(target, ignore_errors=True)
  os.replace(partial, target)


def average(runs: list) -> dict:
  """The metrics of K executions, key by key (None where any execution has none)."""
  keys = sorted({k for m in runs for k in m})
  out = {}
  for key in keys:
    values = [m.get(key) for m in runs]
    ok = all(v is not None and math.isfinite(v) for v in values)
    out[key] = sum(values) / len(values) if ok else None
  return out


def write_hparams(cfg, trial_id: str, values: dict, objective: str, value: float) -> None:
  """The TensorBoard HParams summary of a trial run (its values and final objective) in its
  logs/: TensorBoard on <tune_dir>/trials shows the search in the HParams dashboard."""
  import tensorflow as tf
  from tensorboard.plugins.hparams import api as hp_api
  writer = tf.summary.create_file_writer(RunPaths(cfg.run.model_dir).logs)
  with writer.as_default():
    hp_api.hparams({k: v if isinstance(v, (bool, int, float, str)) else str(v)
                    for k, v in values.items()}, trial_id=f"{trial_id}/seed{cfg.run.seed}")
    tf.summary.scalar(f"tune/{objective}", value, step=cfg.optim.epochs)
  writer.close()


def serve(oracle, poll_seconds: float = 1.0) -> None:
  """The chief: serves `oracle` over gRPC at KERASTUNER_ORACLE_IP:KERASTUNER_ORACLE_PORT until
  the search is over (Keras Tuner's oracle_chief.start_server, polling every second instead of
  every 20 s once the first worker was told to stop)."""
  import grpc
  from keras_tuner.src import protos
  from keras_tuner.src.distribute import oracle_chief
  address = f"{os.environ['KERASTUNER_ORACLE_IP']}:{os.environ['KERASTUNER_ORACLE_PORT']}"
  server = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
  servicer = oracle_chief.OracleServicer(oracle)
  protos.get_service_grpc().add_OracleServicer_to_server(servicer, server)
  try:
    port = server.add_insecure_port(address)
  except RuntimeError as e:
    raise OSError(f"the oracle cannot listen on {address} ({e})") from None
  if port == 0:
    raise OSError(f"the oracle cannot listen on {address} (port in use?)")
  server.start()
  try:
    while not (servicer.stop_triggered and oracle_chief.exit_chief(oracle)):
      time.sleep(poll_seconds)
  finally:
    server.stop(grace=2)


def _user_values(values: dict) -> dict:
  """The searched flags of a trial's values (plus Hyperband's epochs), without the other
  "tuner/..." bookkeeping."""
  return {k: v for k, v in values.items() if not k.startswith("tuner/") or k == "tuner/epochs"}


def _fmt(value) -> str:
  if isinstance(value, float):
    return f"{value:.4g}"
  return str(value)
