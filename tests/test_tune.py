"""Hyperparameter search (sdmtcnn_tf.tune): bad input fails before training, the Keras Tuner loop
(with a stand-in for train.train: fast), and real searches (slow): killed and resumed, and
distributed over 2 workers on localhost."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from sdmtcnn_tf import config as config_lib
from sdmtcnn_tf import evaluate, train, tune
from sdmtcnn_tf.rundir import RunPaths
from sdmtcnn_tf.search import hypermodel, leaderboard, workers
from sdmtcnn_tf.search import objective as objective_lib
from tests.conftest import REPO, SMOKE_FLAGS, assert_one_error_line, run_module

SD_FLAGS = os.path.join(REPO, "configs", "synthetic_sd_mtcnn_eq5.flags")
TINY = ["--steps_per_epoch=2", "--epochs=1", "--validation_freq=100", "--precise_bn_batches=0",
        "--verbose=0"]


def _cfg(path=SD_FLAGS, **changes):
  return config_lib.parse_flagfile(path, **changes)


def _space(tmp_path, entries) -> str:
  path = tmp_path / "space.json"
  path.write_text(json.dumps(entries))
  return str(path)


def _no_training(monkeypatch):
  def fail(cfg):
    raise AssertionError(f"trained {cfg.run.model_dir}")
  monkeypatch.setattr(train, "train", fail)


# ---- bad input: one clear error before any training ----------------------------------------
@pytest.mark.parametrize("entries,needles", [
    ({"alhpa": {"min": 0.1, "max": 0.5}}, ["'alhpa' is not a config flag", "did you mean alpha"]),
    ({"alpha": {"min": 0.6, "max": 0.2}}, ["entry 'alpha'", "min 0.6 > max 0.2"]),
    ({"hint_weight": {"min": 0, "max": 1, "log": True}}, ["entry 'hint_weight'", "log range"]),
    ({"temperature": {"min": -1, "max": 4, "log": True}}, ["entry 'temperature'", "log range"]),
    ({"alpha": {"min": 0.1, "max": 1.5}}, ["entry 'alpha'", "rejects alpha=1.5", "--alpha"]),
    ({"optimizer": {"min": 0, "max": 1}}, ["entry 'optimizer'", "numeric flag"]),
    ({"optimizer": {"values": ["adam", "adagrad"]}}, ["entry 'optimizer'", "adagrad"]),
    ({"model_dir": {"values": ["a"]}}, ["'model_dir' is set by the search"]),
    ({"alpha": {"min": 0.1, "max": 0.5, "steps": 2}}, ["entry 'alpha'", "keys among"]),
])
def test_bad_search_space_fails_naming_file_and_entry(tmp_path, monkeypatch, entries, needles):
  _no_training(monkeypatch)
  path = _space(tmp_path, entries)
  with pytest.raises(ValueError) as e:
    tune.prepare(_cfg(), str(tmp_path / "tune"), search_space=path)
  message = str(e.value)
  assert path in message and "\n" not in message, message
  for needle in needles:
    assert needle in message, message
  assert not os.path.exists(tmp_path / "tune")


def test_unknown_objective_lists_the_valid_names(tmp_path, monkeypatch):
  _no_training(monkeypatch)
  with pytest.raises(ValueError) as e:
    tune.prepare(_cfg(), str(tmp_path / "tune"), objective="teacher_semseg_mio:max")
  message = str(e.value)
  assert "did you mean teacher_semseg_miou?" in message
  for name in ("teacher_semseg_miou", "student_depth_abs", "teacher_normals_mean_deg_legacy",
               "kd_semseg_loss", "hint_semseg_l5_loss", "delta_m", "student_delta_m"):
    assert name in message, message
  with pytest.raises(ValueError, match="direction after ':' must be min or max"):
    objective_lib.parse("teacher_semseg_miou:up", _cfg())
  with pytest.raises(ValueError, match="needs --baseline_dir"):
    objective_lib.parse("delta_m", _cfg())
  with pytest.raises(ValueError, match="has no student"):  # vanilla: teacher only
    objective_lib.parse("student_delta_m", _cfg(os.path.join(REPO, SMOKE_FLAGS)))


def test_objective_directions_and_delta_m(tmp_path):
  cfg = _cfg()
  assert objective_lib.parse("", cfg) == objective_lib.Objective("teacher_semseg_miou", "max")
  assert objective_lib.parse("student_depth_abs_legacy", cfg).direction == "min"
  assert objective_lib.parse("teacher_depth_abs:max", cfg).direction == "max"  # as asked
  # Δm, LibMTL's count_improvement: per task the mean signed relative change, then the mean
  base = {f"teacher_{t.name}_{m}": 10.0 for t in cfg.task_specs for m in t.primary_metrics}
  os.makedirs(RunPaths(str(tmp_path)).results)
  evaluate.write_metrics(base, RunPaths(str(tmp_path)).metrics_json)
  goal = objective_lib.parse("student_delta_m", cfg, str(tmp_path))
  trial = {k.replace("teacher_", "student_"): v for k, v in base.items()}
  trial["student_semseg_miou"] = 12.0   # +20 % on one of 2 semseg metrics: +10 % for semseg
  trial["student_depth_abs"] = 9.0      # lower is better: +10 % on one of 2: +5 % for depth
  assert goal.value(trial, cfg) == pytest.approx((10.0 + 5.0 + 0.0) / 3)
  trial["student_depth_rel"] = None
  assert goal.value(trial, cfg) != goal.value(trial, cfg)  # NaN: Keras Tuner fails the trial
  del base["teacher_normals_cos"]
  evaluate.write_metrics(base, RunPaths(str(tmp_path)).metrics_json)
  with pytest.raises(ValueError, match="lacks teacher_normals_cos"):
    objective_lib.parse("delta_m", cfg, str(tmp_path))


def test_the_cli_reports_a_bad_input_as_one_line_before_training(tmp_path):
  path = _space(tmp_path, {"alpha": {"min": 0.6, "max": 0.2}})
  proc = run_module("sdmtcnn_tf.tune", f"--flagfile={SD_FLAGS}", f"--tune_dir={tmp_path / 't'}",
                    f"--search_space={path}", check=False)
  assert_one_error_line(proc, "min 0.6 > max 0.2")
  assert not os.path.exists(tmp_path / "t")


def test_default_search_spaces_are_the_flags_each_method_reads():
  names = {}
  for config in ("vanilla", "sd_mtcnn_eq5", "sd_mtcnn_eq6", "sd_vanilla_eq5", "sd_vanilla_eq6",
                 "traditional_kd"):
    cfg = _cfg(os.path.join(REPO, "configs", f"synthetic_{config}.flags"))
    names[config] = [h.name for h in tune.space_lib.default(cfg)]
  assert names == {
      "vanilla": ["learning_rate"],
      "sd_mtcnn_eq5": ["alpha", "temperature", "hint_weight", "learning_rate"],
      "sd_mtcnn_eq6": ["hint_weight", "learning_rate"],
      "sd_vanilla_eq5": ["alpha", "temperature", "learning_rate"],
      "sd_vanilla_eq6": ["hint_weight", "learning_rate"],
      "traditional_kd": ["alpha", "temperature", "learning_rate"]}
  no_classes = _cfg(tasks=("depth", "normals"))  # τ softens class scores only
  assert [h.name for h in tune.space_lib.default(no_classes)] == ["alpha", "hint_weight",
                                                                  "learning_rate"]


def test_the_hypermodel_builds_the_trials_compiled_model():
  import keras_tuner as kt
  cfg = _cfg(os.path.join(REPO, "configs", "size_tiny.flags"), method="sd_mtcnn",
             distill="eq5", lr_decay_epochs=0)
  model = hypermodel.TrialHyperModel(cfg, tune.space_lib.default(cfg))
  hp = kt.HyperParameters()
  model.declare_hyperparameters(hp)
  hp.values.update(alpha=0.7, learning_rate=3e-4)
  built = model.build(hp)
  assert built.cfg.method.alpha == 0.7 and built.cfg.method.temperature == hp.values["temperature"]
  assert float(built.optimizer.learning_rate) == pytest.approx(3e-4)
  assert {t.name: t.weight for t in built.terms}["kd_semseg_loss"] == pytest.approx(0.7)


def test_one_failing_worker_stops_the_chief_and_the_others(monkeypatch):
  monkeypatch.chdir(REPO)
  out = io.StringIO()
  start = time.time()
  with pytest.raises(ChildProcessError, match="worker1 process exited with status 3"):
    workers.launch(["--x=1"], 2, module="tests.tune_child", out=out, poll_seconds=0.1)
  assert time.time() - start < 60
  lines = out.getvalue().splitlines()
  assert "[worker1] worker1 up, args --x=1 --num_workers=0" in lines, lines
  assert any(l.startswith("[chief] chief up") for l in lines), lines


# ---- the search loop, with a stand-in for train.train ----------------------------------------
class FakeTrain:
  """Writes what a run directory needs (config, a checkpoint, results) and returns metrics:
  teacher_semseg_miou = 1000 * learning_rate + seed (so the best trial is predictable)."""

  def __init__(self, interrupt_at: int = -1):
    self.calls = []
    self.interrupt_at = interrupt_at

  def __call__(self, cfg):
    self.calls.append(cfg)
    if len(self.calls) - 1 == self.interrupt_at:
      os.makedirs(cfg.run.model_dir, exist_ok=True)
      raise KeyboardInterrupt  # like a kill: Keras Tuner never hears of the trial's end
    paths = RunPaths(cfg.run.model_dir)
    os.makedirs(paths.checkpoints, exist_ok=True)
    os.makedirs(paths.results, exist_ok=True)
    config_lib.save(cfg, cfg.run.model_dir)
    before = open(paths.history_csv).read() if os.path.exists(paths.history_csv) else ""
    with open(paths.history_csv, "w") as f:
      f.write(before + f"epochs {cfg.optim.epochs}\n")
    open(paths.model_weights, "w").close()
    metrics = {k: 1.0 for k in objective_lib.metric_directions(cfg)}
    metrics["teacher_semseg_miou"] = 1000 * cfg.optim.learning_rate + cfg.run.seed
    evaluate.write_metrics(metrics, paths.metrics_json)
    return metrics


def test_random_search_writes_runs_leaderboard_and_best_flags(tmp_path, monkeypatch):
  fake = FakeTrain()
  monkeypatch.setattr(train, "train", fake)
  tune_dir = str(tmp_path / "tune")
  search = tune.prepare(_cfg(), tune_dir, max_trials=3, executions=2,
                        search_space=_space(tmp_path, {"learning_rate": {"max": 1e-4},
                                                       "hint_levels": {"values": [[5], [4, 5]]}}),
                        check_data=False)
  table = tune.run(search)
  assert len(fake.calls) == 6 and sorted(c.run.seed for c in fake.calls) == [0, 0, 0, 1, 1, 1]
  assert len(table) == 3 and [r.status for r in table] == ["COMPLETED"] * 3
  values = [r.objective for r in table]
  assert values == sorted(values, reverse=True)  # max: best first
  best = table[0]
  assert best.objective == pytest.approx(1000 * best.values["learning_rate"] + 0.5)  # seeds 0, 1
  assert 1e-5 <= best.values["learning_rate"] <= 1e-4
  for r in table:
    for k in range(2):
      run = hypermodel.run_dir(tune_dir, r.trial_id, k, 2)
      cfg = config_lib.load(run)
      levels = tuple(map(int, r.values["hint_levels"].split(",")))
      assert cfg.run.seed == k and cfg.method.hint_levels == levels
      assert os.path.exists(os.path.join(run, "logs"))  # the HParams summary
  flagfile = os.path.join(tune_dir, "best.flags")
  retrain = config_lib.parse_flagfile(flagfile)
  trained = config_lib.load(hypermodel.run_dir(tune_dir, best.trial_id, 0, 2))
  assert retrain.replace(model_dir="") == trained.replace(model_dir="")
  assert retrain.run.model_dir == os.path.join(tune_dir, leaderboard.BEST_RUN)
  md = open(os.path.join(tune_dir, "leaderboard.md")).read()
  assert "teacher_semseg_miou (max)" in md and "student_depth_abs" in md and "time_s" in md
  csv_rows = open(os.path.join(tune_dir, "leaderboard.csv")).read().splitlines()
  assert len(csv_rows) == 4 and csv_rows[1].split(",")[1] == best.trial_id
  assert os.path.getsize(os.path.join(tune_dir, "objective.png")) > 1000
  # the same command again: nothing left to run, nothing retrained
  tune.run(search)
  assert len(fake.calls) == 6
  # another setup in the same folder is refused
  other = tune.prepare(_cfg(alpha=0.5), tune_dir, max_trials=3, executions=2,
                       check_data=False)
  with pytest.raises(ValueError, match="config.alpha"):
    tune.run(other)


def test_a_trial_interrupted_mid_run_is_run_again_and_finished_ones_are_not(tmp_path,
                                                                           monkeypatch):
  tune_dir = str(tmp_path / "tune")
  search = tune.prepare(_cfg(), tune_dir, max_trials=3, check_data=False)
  first = FakeTrain(interrupt_at=1)
  monkeypatch.setattr(train, "train", first)
  with pytest.raises(KeyboardInterrupt):
    tune.run(search)
  # Keras Tuner recorded trial 1 as running; the reloaded oracle queues it for a retry
  state = json.load(open(os.path.join(tune_dir, hypermodel.ORACLE_DIR, "oracle.json")))
  assert list(state["ongoing_trials"].values()) == ["1"]
  second = FakeTrain()
  monkeypatch.setattr(train, "train", second)
  table = tune.run(search)
  assert [c.run.model_dir for c in second.calls] == [hypermodel.run_dir(tune_dir, i) for i in "12"]
  assert second.calls[0] == first.calls[1]  # the same values, in the same run directory
  assert sorted(r.trial_id for r in table) == ["0", "1", "2"]


def test_hyperband_continues_the_earlier_trials_run(tmp_path, monkeypatch):
  fake = FakeTrain()
  monkeypatch.setattr(train, "train", fake)
  tune_dir = str(tmp_path / "tune")
  search = tune.prepare(_cfg(epochs=3), tune_dir, tuner="hyperband", check_data=False)
  table = tune.run(search)
  # max_epochs 3, factor 3: a bracket of 3 one-epoch trials whose best goes on to 3 epochs,
  # then a bracket of 2 three-epoch trials
  assert sorted(c.optim.epochs for c in fake.calls) == [1, 1, 1, 3, 3, 3]
  continued = [r for r in table if r.values.get("tuner/trial_id")]
  assert len(continued) == 1
  c = continued[0]
  history = open(RunPaths(hypermodel.run_dir(tune_dir, c.trial_id)).history_csv).read()
  assert history == "epochs 1\nepochs 3\n"  # the copy of the 1-epoch run, then trained on
  best = config_lib.parse_flagfile(os.path.join(tune_dir, "best.flags"))
  assert best.optim.epochs == table[0].values["tuner/epochs"]


def test_bayesian_search_runs_its_trials_and_ranks_them(tmp_path, monkeypatch):
  fake = FakeTrain()
  monkeypatch.setattr(train, "train", fake)
  search = tune.prepare(_cfg(), str(tmp_path / "tune"), tuner="bayesian", max_trials=4,
                        search_space=_space(tmp_path, {"learning_rate": {"max": 1e-4}}),
                        check_data=False)
  table = tune.run(search)
  assert len(fake.calls) == 4 and len({c.optim.learning_rate for c in fake.calls}) == 4
  values = [r.objective for r in table]
  assert values == sorted(values, reverse=True)
  assert table[0].objective == pytest.approx(1000 * table[0].values["learning_rate"])


# ---- real searches (slow) --------------------------------------------------------------------
def _tune_args(data_dir, tune_dir, *extra):
  return [f"--flagfile={SMOKE_FLAGS}", f"--data_dir={data_dir}", *TINY, f"--tune_dir={tune_dir}",
          "--max_trials=2", *extra]


@pytest.fixture(scope="module")
def killed_search(smoke_data_dir, tmp_path_factory):
  """A 2-trial random search SIGKILLed once its second trial has started (the first finished),
  then started again with the same command. Returns (tune_dir, first metrics.json bytes and
  mtime, the second start's output)."""
  tune_dir = str(tmp_path_factory.mktemp("tune") / "search")
  args = _tune_args(smoke_data_dir, tune_dir)
  env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
  proc = subprocess.Popen([sys.executable, "-m", "sdmtcnn_tf.tune", *args], cwd=REPO, env=env,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  second = hypermodel.run_dir(tune_dir, "1")
  deadline = time.time() + 480
  while not os.path.exists(second) and proc.poll() is None and time.time() < deadline:
    time.sleep(0.2)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  assert os.path.exists(second), "the search ended or timed out before its second trial"
  first = RunPaths(hypermodel.run_dir(tune_dir, "0")).metrics_json
  before = (open(first, "rb").read(), os.path.getmtime(first))
  done = run_module("sdmtcnn_tf.tune", *args)
  return tune_dir, before, done.stdout


@pytest.mark.slow
def test_killed_search_runs_only_the_remaining_trial(killed_search):
  tune_dir, (first_bytes, first_mtime), output = killed_search
  assert "trial 1 start" in output and "trial 0 start" not in output, output
  first = RunPaths(hypermodel.run_dir(tune_dir, "0")).metrics_json
  assert open(first, "rb").read() == first_bytes and os.path.getmtime(first) == first_mtime
  assert sorted(os.listdir(os.path.join(tune_dir, hypermodel.TRIALS_DIR))) == ["0", "1"]
  state = json.load(open(os.path.join(tune_dir, hypermodel.ORACLE_DIR, "oracle.json")))
  assert state["ongoing_trials"] == {} and state["end_order"] == ["0", "1"]


@pytest.mark.slow
def test_search_writes_every_run_the_leaderboard_and_best_flags(killed_search):
  tune_dir, _, output = killed_search
  rows = open(os.path.join(tune_dir, "leaderboard.csv")).read().splitlines()
  assert len(rows) == 3 and all(",COMPLETED," in r for r in rows[1:]), rows
  for trial_id in ("0", "1"):
    run = hypermodel.run_dir(tune_dir, trial_id)
    for name in ("flags.txt", "config.json", "results/metrics.json"):
      assert os.path.exists(os.path.join(run, name)), (run, name)
    metrics = json.load(open(RunPaths(run).metrics_json))
    assert set(metrics) == set(objective_lib.metric_directions(config_lib.load(run)))
  best_id = rows[1].split(",")[1]
  retrain = config_lib.parse_flagfile(os.path.join(tune_dir, "best.flags"))
  trained = config_lib.load(hypermodel.run_dir(tune_dir, best_id))
  assert retrain.replace(model_dir="") == trained.replace(model_dir="")
  assert f"best: trial {best_id}" in output


@pytest.mark.slow
def test_distributed_search_with_two_workers(smoke_data_dir, tmp_path):
  tune_dir = str(tmp_path / "search")
  proc = run_module("sdmtcnn_tf.tune", *_tune_args(smoke_data_dir, tune_dir, "--num_workers=2"))
  starts = [l for l in proc.stdout.splitlines() if " start: " in l]
  assert len(starts) == 2 and all(l.startswith("[worker") for l in starts), proc.stdout
  oracle_dir = os.path.join(tune_dir, hypermodel.ORACLE_DIR)
  assert {"oracle.json", "chief.json", "worker0.json", "worker1.json"} <= set(
      os.listdir(oracle_dir))
  state = json.load(open(os.path.join(oracle_dir, "oracle.json")))
  assert state["ongoing_trials"] == {} and sorted(state["end_order"]) == ["0", "1"]
  trials = leaderboard.load_trials(tune_dir)
  assert sorted(t.status for t in trials) == ["COMPLETED", "COMPLETED"]
  assert sorted(os.listdir(os.path.join(tune_dir, hypermodel.TRIALS_DIR))) == ["0", "1"]
  for t in trials:
    assert os.path.exists(RunPaths(hypermodel.run_dir(tune_dir, t.trial_id)).metrics_json)
  assert os.path.exists(os.path.join(tune_dir, "best.flags"))
