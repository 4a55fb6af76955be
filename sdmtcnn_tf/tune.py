"""Hyperparameter search: `python -m sdmtcnn_tf.tune --flagfile=configs/<x>.flags --tune_dir=DIR
[--tuner=random|bayesian|hyperband] [--max_trials=N] [--executions_per_trial=K]
[--objective=NAME[:min|max]] [--search_space=FILE] [--baseline_dir=RUN] [--num_workers=N]`.

Every trial is a training run of the flagfile's config with the trial's values
(`<tune_dir>/trials/<id>/`, see search/hypermodel.py); the search space is the method's default
or FILE (search/space.py); the objective a key of metrics.json or delta_m (search/objective.py).
Resumable: the same command after a kill continues with the remaining trials (a trial killed
mid-run resumes inside its run directory); `<tune_dir>/search.json` records the setup, and a
restart with another setup is refused (only --max_trials, --num_workers and --verbose may
change). Results: leaderboard.md/.csv, best.flags and objective.png (search/leaderboard.py).
`--dry_run` checks the setup (space, objective, data) and prints it without training.

Distributed: `--num_workers=N` starts the oracle and N workers on this machine. On several
machines, run the same command on each with KERASTUNER_ORACLE_IP/PORT set to the chief's address
and KERASTUNER_TUNER_ID=chief on one machine, worker<i> on the others (see docs/tuning.md).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys

from sdmtcnn_tf import cli  # first: it quiets TensorFlow's C++ logs before TF is imported

from absl import flags

from sdmtcnn_tf import atomic, experiment, rundir
from sdmtcnn_tf import config as config_lib
from sdmtcnn_tf.search import hypermodel, leaderboard, workers
from sdmtcnn_tf.search import objective as objective_lib
from sdmtcnn_tf.search import space as space_lib

SEARCH_JSON = "search.json"
MAY_CHANGE = ("max_trials",)  # and the config's --verbose


@dataclasses.dataclass(frozen=True)
class Search:
  """A validated search setup. `cfg`: the base config (no model_dir)."""

  cfg: object
  space: tuple
  objective: objective_lib.Objective
  tune_dir: str
  tuner: str = "random"
  max_trials: int = 10
  executions: int = 1
  tuner_seed: int = 1
  hyperband_factor: int = 3

  def record(self) -> dict:
    """What must not change between the starts of one search (search.json)."""
    cfg = {k: v for k, v in self.cfg.to_json().items() if k != "verbose"}
    return json.loads(json.dumps({
        "config": cfg, "space": space_lib.as_dict(self.space),
        "objective": [self.objective.name, self.objective.direction],
        "baseline": self.objective.baseline, "tuner": self.tuner,
        "executions_per_trial": self.executions, "tuner_seed": self.tuner_seed,
        "hyperband_factor": self.hyperband_factor}))


def prepare(cfg, tune_dir: str, tuner: str = "random", max_trials: int = 10,
            executions: int = 1, objective: str = "", search_space: str = "",
            baseline_dir: str = "", tuner_seed: int = 1, hyperband_factor: int = 3,
            check_data: bool = True) -> Search:
  """Checks everything a search needs before its first trial; ValueError (or
  FileNotFoundError) naming the flag, file or entry at fault."""
  if not tune_dir:
    raise ValueError("--tune_dir is required: the search's folder (trials, leaderboard)")
  if tuner not in hypermodel.TUNERS:
    raise ValueError(f"--tuner={tuner}: expected one of {', '.join(hypermodel.TUNERS)}")
  for flag, value, least in (("max_trials", max_trials, 1),
                             ("executions_per_trial", executions, 1),
                             ("tuner_seed", tuner_seed, 1), ("hyperband_factor",
                                                             hyperband_factor, 2)):
    if value < least:
      raise ValueError(f"--{flag}: expected at least {least}, got {value}")
  if cfg.run.model_dir:
    print(f"note: --model_dir={cfg.run.model_dir} is not used: each trial trains in "
          f"{os.path.join(tune_dir, hypermodel.TRIALS_DIR, '<trial id>')}", flush=True)
  cfg = cfg.replace(model_dir="")
  if cfg.method.teacher_dir:  # resolved once (as train.py does), so best.flags matches the trials
    cfg = cfg.replace(teacher_dir=os.path.abspath(cfg.method.teacher_dir))
  space = (space_lib.load(search_space, cfg) if search_space else space_lib.default(cfg))
  if tuner == "hyperband" and any(h.name == "epochs" for h in space):
    raise ValueError("--tuner=hyperband sets --epochs of each trial itself (up to the config's "
                     "--epochs); remove 'epochs' from the search space")
  goal = objective_lib.parse(objective, cfg, baseline_dir)
  hypermodel.make_oracle(tuner, goal, max_trials, tuner_seed, cfg.optim.epochs, hyperband_factor)
  if check_data:
    manifest = experiment.prepare_data(cfg, experiment.TRAIN_SPLIT)
    experiment.prepare_data(cfg, experiment.EVAL_SPLIT)
    experiment.check_against_data(cfg, manifest)
  return Search(cfg, space, goal, tune_dir, tuner, max_trials, executions, tuner_seed,
                hyperband_factor)


def check_same_search(search: Search) -> None:
  """Writes <tune_dir>/search.json at the first start; later starts must match it."""
  path = os.path.join(search.tune_dir, SEARCH_JSON)
  current = search.record()
  if os.path.exists(path):
    with open(path) as f:
      previous = json.load(f)
    differ = sorted(k for k in current if previous.get(k) != current[k])
    fields = [f"{k}.{f}" for k in differ if k == "config"
              for f in sorted(current[k]) if previous[k].get(f) != current[k][f]]
    if differ:
      raise ValueError(f"--tune_dir={search.tune_dir} holds a search with another setup "
                       f"({', '.join(fields + [k for k in differ if k != 'config'])} differ from "
                       f"{path}); use a new --tune_dir, or the command that started it")
    return
  atomic.write_json(path, current, label="search", indent=2, sort_keys=True)


def describe(search: Search) -> str:
  space = "; ".join(space_lib.describe(h) for h in search.space)
  trials = ("Hyperband brackets up to --epochs=" + str(search.cfg.optim.epochs)
            if search.tuner == "hyperband" else f"{search.max_trials} trials")
  return (f"search: {search.tuner}, {trials} x {search.executions} execution(s); objective "
          f"{search.objective.name} ({search.objective.direction}); space: {space}; "
          f"runs in {os.path.join(search.tune_dir, hypermodel.TRIALS_DIR)}")


def run(search: Search, role: str = "single") -> list:
  """Runs (or continues) the search in this process as `role` (workers.role()); the chief and
  a single process then write the results. Returns the leaderboard rows (workers: [])."""
  model = hypermodel.TrialHyperModel(search.cfg, search.space)

  def go():
    oracle = hypermodel.make_oracle(search.tuner, search.objective, search.max_trials,
                                    search.tuner_seed, search.cfg.optim.epochs,
                                    search.hyperband_factor)
    tuner = hypermodel.RunTuner(oracle, model, search.objective, search.tune_dir,
                                search.executions)
    try:
      tuner.search()
    except RuntimeError as e:  # Keras Tuner's "Number of consecutive failures exceeded ..."
      if "consecutive failures" not in str(e):
        raise
      raise ValueError(f"{str(e).splitlines()[0]}: the last one: {_last_line(str(e))} (each "
                       f"trial's traceback: {search.tune_dir}/{hypermodel.ORACLE_DIR}/"
                       "trial_<id>/trial.json)") from None
    return tuner

  if role == "worker":
    go()
    return []
  os.makedirs(search.tune_dir, exist_ok=True)
  with rundir.locked(search.tune_dir, "sdmtcnn_tf.tune"):
    check_same_search(search)
    tuner = go()
    return write_results(search, list(tuner.oracle.trials.values()))


def write_results(search: Search, trials) -> list:
  model = hypermodel.TrialHyperModel(search.cfg, search.space)
  done = sum(t.status == "COMPLETED" for t in trials)
  title = (f"{search.tuner} search, objective {search.objective.name} "
           f"({search.objective.direction}): {done} of {len(trials)} trials completed")
  table = leaderboard.write(search.tune_dir, trials, search.objective, search.space,
                            lambda values: model.config(values), title)
  if not table or table[0].objective is None:
    failed = [t for t in trials if t.message]
    why = f"; the last failure: {_last_line(failed[-1].message)}" if failed else ""
    raise ValueError(f"no trial of the search in {search.tune_dir} completed{why}")
  return table


def _last_line(text: str) -> str:
  lines = [l for l in (text or "").strip().splitlines() if l.strip()]
  return lines[-1].strip() if lines else "(no message)"


def main(argv):
  cli.check_no_arguments(argv)
  fv = flags.FLAGS
  cfg = config_lib.from_flags(fv)
  role = workers.role()
  search = prepare(cfg, fv.tune_dir, fv.tuner, fv.max_trials, fv.executions_per_trial,
                   fv.objective, fv.search_space, fv.baseline_dir, fv.tuner_seed,
                   fv.hyperband_factor, check_data=role != "chief")
  if role != "worker":
    print(describe(search), flush=True)
  if fv.dry_run:
    return
  if fv.num_workers:
    if role != "single":
      raise ValueError("--num_workers starts its own chief and workers; unset "
                       f"{workers.ENV_IP}, {workers.ENV_PORT} and {workers.ENV_ID}")
    workers.launch(sys.argv[1:], fv.num_workers)
    table = leaderboard.rows(leaderboard.load_trials(search.tune_dir), search.objective)
  else:
    table = run(search, role)
    if role == "worker":
      return
  best = table[0]
  print(f"best: trial {best.trial_id}, {search.objective.name} = {best.objective:.6g}; "
        f"{os.path.join(search.tune_dir, 'leaderboard.md')}, "
        f"{os.path.join(search.tune_dir, 'best.flags')}", flush=True)


if __name__ == "__main__":
  config_lib.define_flags()  # the training flags: the base config of every trial
  flags.DEFINE_string("tune_dir", "", "The search's folder: trials/<id>/ (one training run "
                      "directory per trial), oracle/ (Keras Tuner's state), search.json, "
                      "leaderboard.md/.csv, best.flags, objective.png.")
  flags.DEFINE_enum("tuner", "random", list(hypermodel.TUNERS), "Keras Tuner oracle: random | "
                    "bayesian (needs scipy, scikit-learn) | hyperband (trials of 1..--epochs "
                    "epochs; --max_trials is not used).")
  flags.DEFINE_integer("max_trials", 10, "Trials of a random or bayesian search.")
  flags.DEFINE_integer("executions_per_trial", 1, "Runs per trial (seeds --seed, --seed+1, ...; "
                       "in trials/<id>/exec<k>/); the objective is their mean.")
  flags.DEFINE_string("objective", "", "NAME[:min|max]: a key of results/metrics.json (default "
                      "the first role's headline metric of the first task, e.g. "
                      "teacher_semseg_miou:max), or delta_m / student_delta_m (with "
                      "--baseline_dir).")
  flags.DEFINE_string("search_space", "", "JSON file replacing the method's default search "
                      "space (see sdmtcnn_tf/search/space.py).")
  flags.DEFINE_string("baseline_dir", "", "delta_m: a finished Baseline-1 (vanilla) run.")
  flags.DEFINE_integer("num_workers", 0, "Start the oracle and this many worker processes on "
                       "this machine (Keras Tuner's chief/worker mode over gRPC); 0 = this "
                       "process searches (or takes its role from KERASTUNER_TUNER_ID).")
  flags.DEFINE_integer("tuner_seed", 1, "Seed of the oracle's sampling (>= 1).")
  flags.DEFINE_integer("hyperband_factor", 3, "Hyperband's reduction factor.")
  cli.run(main)
