"""The report (`python -m sdmtcnn_tf.report`): rows, columns, mean ± std, the paper's numbers,
Δm, curves and bad input, on run directories written by hand (config.json from the real
flagfiles, metrics.json and history.csv with known numbers): nothing is trained here, except in
the one slow test that reads the finished smoke run."""

from __future__ import annotations

import csv
import json
import os
import re
import statistics

import numpy as np
import pytest

from tests.conftest import REPO, assert_one_error_line, run_module

from sdmtcnn_tf import config as config_lib
from sdmtcnn_tf import methods
from sdmtcnn_tf.report import build, curves, gain, paper_tables, table
from sdmtcnn_tf.report import runs as runs_lib
from sdmtcnn_tf.search import objective

# the paper's columns under its (legacy) definitions, for semseg + depth + normals
SYNTHETIC_KEYS = ["semseg_pixacc_legacy", "semseg_miou_legacy", "depth_abs_legacy",
                  "depth_rel_legacy", "normals_cos", "normals_mean_deg_legacy",
                  "normals_median_deg_legacy"]
HIGHER = {"semseg_pixacc_legacy": True, "semseg_miou_legacy": True, "depth_abs_legacy": False,
          "depth_rel_legacy": False, "normals_cos": True, "normals_mean_deg_legacy": False,
          "normals_median_deg_legacy": False}


@pytest.fixture(autouse=True)
def _in_repo(monkeypatch):
  monkeypatch.chdir(REPO)  # the flagfiles' nested --flagfile paths are relative to it


_CONFIGS: dict = {}


def config(flagfile: str, **overrides):
  key = (flagfile, tuple(sorted(overrides.items())))
  if key not in _CONFIGS:
    _CONFIGS[key] = config_lib.parse_flagfile(f"configs/{flagfile}.flags", **overrides)
  return _CONFIGS[key]


def all_keys(cfg) -> list:
  """Every task metric key of metrics.json for `cfg` (primary and legacy, every role)."""
  return [k for role in methods.get(cfg.method.name).roles for t in cfg.task_specs
          for k in t.metric_keys(role, legacy=True)]


def make_run(root, name: str, flagfile: str, seed: int, metrics=None, history=None,
             rng=None, **overrides) -> str:
  """A run directory `root/name` as `train` leaves it: config.json/flags.txt of the flagfile
  with --seed, results/metrics.json (given, or random positive values for every key), and
  results/history.csv when `history` ({column: [value per epoch]}) is given."""
  path = os.path.join(str(root), name)
  cfg = config(flagfile, **overrides).replace(seed=seed, model_dir=path)
  config_lib.save(cfg, path)
  if metrics is None:
    rng = rng or np.random.default_rng(seed)
    metrics = {k: float(rng.uniform(0.2, 0.9) * (100 if "semseg" in k else 1))
               for k in all_keys(cfg)}
    metrics["loss"] = 1.0
  if metrics is not False:
    os.makedirs(os.path.join(path, "results"), exist_ok=True)
    with open(os.path.join(path, "results", "metrics.json"), "w") as f:
      json.dump(metrics, f)
  if history is not None:
    os.makedirs(os.path.join(path, "results"), exist_ok=True)
    columns = sorted(history)
    epochs = max(len(v) for v in history.values())
    with open(os.path.join(path, "results", "history.csv"), "w") as f:
      f.write(",".join(["epoch"] + columns) + "\n")
      for e in range(epochs):
        values = [history[c][e] if e < len(history[c]) else "NA" for c in columns]
        f.write(",".join(map(str, [e] + values)) + "\n")
  return path


def read_csv(path) -> list:
  with open(path, newline="") as f:
    return list(csv.DictReader(f))


def metrics_of(path) -> dict:
  with open(os.path.join(path, "results", "metrics.json")) as f:
    return json.load(f)


def expected_delta_m(values: dict, base: dict, keys) -> float:
  """Δm written out (LibMTL): per task the mean of s (M - B) / B, then the mean over tasks."""
  per_task: dict = {}
  for key in keys:
    sign = 1.0 if HIGHER[key] else -1.0
    per_task.setdefault(key.split("_")[0], []).append(sign * (values[key] - base[key]) / base[key])
  return 100.0 * float(np.mean([np.mean(v) for v in per_task.values()]))


SWEEP = (("synthetic_vanilla", (0, 1, 2)), ("synthetic_sd_vanilla_eq6", (0, 1)),
         ("synthetic_sd_mtcnn_eq5_full", (3, 4)))


# ---- rows, columns, means, stds, Δm ----------------------------------------------------------
def test_rows_columns_means_stds_and_delta_m_match_the_runs(tmp_path):
  runs_dir = tmp_path / "sweep" / "runs"
  dirs = {name: [make_run(runs_dir, f"{name}_seed{s}", name, s) for s in seeds]
          for name, seeds in SWEEP}
  report = build.write([str(tmp_path / "sweep")], str(tmp_path / "out"), curves=False)
  assert sorted(os.listdir(tmp_path / "out")) == ["report.csv", "report.md"]
  rows = read_csv(tmp_path / "out" / "report.csv")
  # the paper's order: vanilla, SD-vanilla, ..., SD-MTCNN full; teacher before student
  assert [(r["run"], r["role"]) for r in rows] == [
      ("synthetic_vanilla", "T"), ("synthetic_sd_vanilla_eq6", "T"),
      ("synthetic_sd_vanilla_eq6", "S"), ("synthetic_sd_mtcnn_eq5_full", "T"),
      ("synthetic_sd_mtcnn_eq5_full", "S")]
  assert [c.key for c in report.columns] == SYNTHETIC_KEYS
  assert not any(k.endswith("_paper") for k in rows[0])  # synthetic: no paper numbers
  assert [(r["method"], r["distill"]) for r in rows[::2]] == [
      ("vanilla", "none"), ("sd_vanilla", "eq6"), ("sd_mtcnn_full", "eq5")]
  base = {k: statistics.mean(metrics_of(p)[f"teacher_{k}"] for p in dirs["synthetic_vanilla"])
          for k in SYNTHETIC_KEYS}
  for row in rows:
    role = "teacher" if row["role"] == "T" else "student"
    paths = dirs[row["run"]]
    assert row["n"] == str(len(paths))
    assert row["seeds"] == " ".join(str(s) for s in dict(SWEEP)[row["run"]])
    per_run = [{k: metrics_of(p)[f"{role}_{k}"] for k in SYNTHETIC_KEYS} for p in paths]
    for key in SYNTHETIC_KEYS:
      values = [m[key] for m in per_run]
      assert float(row[f"{key}_mean"]) == pytest.approx(statistics.mean(values), rel=1e-12)
      assert float(row[f"{key}_std"]) == pytest.approx(statistics.stdev(values), rel=1e-12)
      assert row[f"{key}_n"] == str(len(values))
    gains = [expected_delta_m(m, base, SYNTHETIC_KEYS) for m in per_run]
    assert float(row["delta_m_mean"]) == pytest.approx(statistics.mean(gains), abs=1e-9)
    assert float(row["delta_m_std"]) == pytest.approx(statistics.stdev(gains), rel=1e-9)
    assert row["delta_m_baseline"] == "synthetic_vanilla"
  # the baseline against itself: Δm 0
  assert float(rows[0]["delta_m_mean"]) == pytest.approx(0.0, abs=1e-9)
  # markdown: same rows, `mean ± std` cells, n
  md = (tmp_path / "out" / "report.md").read_text()
  assert md == report.markdown
  lines = [l for l in md.splitlines() if l.startswith("| synthetic_")]
  assert len(lines) == 5
  mtcnn_s = [l for l in lines if l.startswith("| synthetic_sd_mtcnn_eq5_full |")][1]
  cells = [c.strip() for c in mtcnn_s.strip("|").split("|")]
  assert cells[:5] == ["synthetic_sd_mtcnn_eq5_full", "sd_mtcnn_full", "eq5", "S", "2"]
  values = [metrics_of(p)["student_semseg_miou_legacy"]
            for p in dirs["synthetic_sd_mtcnn_eq5_full"]]
  assert cells[6] == f"{statistics.mean(values):.4g} ± {statistics.stdev(values):.2g}"
  assert cells[-1].startswith(("+", "-")) and " ± " in cells[-1]
  assert "| run | method | eq. | role | n | pixacc | mIoU | depth abs |" in md
  assert "(paper)" not in md and "Baseline-1 (`synthetic_vanilla`" in md
  for name, _ in SWEEP:
    assert f"`{name}` (seeds" in md


def test_primary_definitions_and_a_missing_value(tmp_path):
  for seed, miou in ((0, 10.0), (1, 14.0), (2, None)):
    make_run(tmp_path, f"v_seed{seed}", "synthetic_vanilla", seed,
             metrics={"teacher_semseg_miou": miou, "teacher_depth_abs": 0.5 + seed})
  report = build.write([str(tmp_path)], str(tmp_path / "out"), definitions="primary",
                       curves=False)
  assert [c.key for c in report.columns] == [
      "semseg_pixacc", "semseg_miou", "depth_abs", "depth_rel", "normals_cos",
      "normals_mean_deg", "normals_median_deg"]
  (row,) = read_csv(tmp_path / "out" / "report.csv")
  assert (row["run"], row["n"], row["semseg_miou_n"]) == ("v", "3", "2")
  assert float(row["semseg_miou_mean"]) == 12.0 and row["semseg_pixacc_n"] == "0"
  assert float(row["depth_abs_std"]) == pytest.approx(1.0)
  # one seed lacks mIoU: its Δm is not computable, the other two count
  assert row["delta_m_n"] == "2"
  md_row = next(l for l in report.markdown.splitlines() if l.startswith("| v |"))
  assert "| 12 ± 2.8 (n=2) |" in md_row and "| 1.5 ± 1 |" in md_row


def test_delta_m_of_a_run_against_itself_is_zero_and_matches_the_objective(tmp_path):
  path = make_run(tmp_path, "alone", "synthetic_vanilla", 0)
  report = build.write([path], str(tmp_path / "out"), curves=False)
  (row,) = report.rows
  assert row.delta_m == [0.0]
  assert "| +0.00 |" in report.markdown
  # one home for Δm: the search objective's Δm is report.gain's over every primary metric
  cfg = config("synthetic_vanilla")
  metrics = metrics_of(path)
  base = {k: v for k, v in metrics.items() if not k.endswith("_legacy") and k != "loss"}
  assert objective.delta_m(metrics, base, cfg, "teacher") == 0.0
  trial = dict(metrics, teacher_semseg_miou=metrics["teacher_semseg_miou"] * 1.3)
  assert objective.delta_m(trial, base, cfg, "teacher") == pytest.approx(30.0 / 2 / 3)
  assert gain.delta_m([("a", 11.0, 10.0, True), ("a", 9.0, 10.0, False),
                       ("b", 5.0, 10.0, True)]) == pytest.approx((10.0 + -50.0) / 2)
  assert np.isnan(gain.delta_m([("a", None, 10.0, True)]))
  assert np.isnan(gain.delta_m([("a", 1.0, 0.0, True)]))


# ---- the paper's numbers ---------------------------------------------------------------------
def test_the_paper_numbers_sit_beside_ours_for_nyuv2(tmp_path):
  for name in ("nyuv2_vanilla", "nyuv2_sd_mtcnn_eq5", "nyuv2_sd_mtcnn_eq5_full",
               "nyuv2_sd_vanilla_eq6"):
    for seed in (0, 1):
      make_run(tmp_path / "runs", f"{name}_seed{seed}", name, seed)
  report = build.write([str(tmp_path / "runs")], str(tmp_path / "out"), curves=False)
  keys = ["semseg_pixacc_legacy", "semseg_miou_legacy", "depth_abs_legacy", "depth_rel_legacy"]
  assert [c.key for c in report.columns] == keys  # nyuv2 configs: semseg + depth (table 2)
  rows = {(r["run"], r["role"]): r for r in read_csv(tmp_path / "out" / "report.csv")}
  paper = {(r["method"], r["variant"], r["role"]): r for r in paper_tables.rows("nyuv2")}
  # (our row, the paper's row) — values copied from ../shared/paper's table 2
  assert float(rows[("nyuv2_sd_mtcnn_eq5", "T")]["semseg_miou_legacy_paper"]) == 21.22
  assert float(rows[("nyuv2_sd_mtcnn_eq5", "S")]["semseg_miou_legacy_paper"]) == 21.64
  assert float(rows[("nyuv2_sd_mtcnn_eq5_full", "T")]["depth_abs_legacy_paper"]) == 0.5847
  assert float(rows[("nyuv2_vanilla", "T")]["semseg_pixacc_legacy_paper"]) == 50.64
  assert float(rows[("nyuv2_sd_vanilla_eq6", "S")]["semseg_miou_legacy_paper"]) == 6.55
  columns = {"semseg_pixacc_legacy": "seg_pixacc", "semseg_miou_legacy": "seg_miou",
             "depth_abs_legacy": "depth_abs", "depth_rel_legacy": "depth_rel"}
  vanilla = paper[("vanilla", "", "T")]
  for (run, role), row in rows.items():
    method = runs_lib.method_label(config(run))
    variant = "" if method == "vanilla" else config(run).method.distill
    theirs = paper[(method, variant, role)]
    for key, column in columns.items():
      assert float(row[f"{key}_paper"]) == theirs[column]
    expected = expected_delta_m({k: theirs[c] for k, c in columns.items()},
                                {k: vanilla[c] for k, c in columns.items()}, keys)
    assert float(row["delta_m_paper"]) == pytest.approx(expected, abs=1e-9)
  assert float(rows[("nyuv2_vanilla", "T")]["delta_m_paper"]) == 0.0
  md = report.markdown
  assert "| mIoU | mIoU (paper) |" in md and "| Δm % | Δm % (paper) |" in md
  assert "table 2 (NYUv2" in md
  line = next(l for l in md.splitlines() if l.startswith("| nyuv2_sd_mtcnn_eq5 |"))
  assert "| 21.22 |" in line  # the teacher row comes first


def test_paper_rows_match_methods_backbones_and_roles():
  assert paper_tables.lookup("cityscapes", "traditional_kd", "segnet", "", "S")["seg_miou"] == 49.87
  assert paper_tables.lookup("cityscapes", "traditional_kd", "segnet", "", "T") is None
  row = paper_tables.lookup("taskonomy", "sd_mtcnn_full", "unet", "eq6", "S")
  assert (row["normal_cs"], row["keypoint_abs"], row["edge_abs"]) == (0.8691, 0.0237, 0.0136)
  assert paper_tables.rows("synthetic") == ()
  assert len(paper_tables.rows("nyuv2")) == len(paper_tables.rows("cityscapes")) == 14
  assert len(paper_tables.rows("taskonomy")) == 19
  cfg = config("taskonomy_sd_mtcnn_eq5_full_unet")
  assert (runs_lib.method_label(cfg), runs_lib.paper_variant(cfg)) == ("sd_mtcnn_full", "eq5")
  assert runs_lib.paper_variant(config("nyuv2_traditional_kd", teacher_dir="/t")) == ""


# ---- grouping and baselines ------------------------------------------------------------------
def test_runs_group_by_config_minus_seed_and_are_named_apart(tmp_path):
  # seeds whose configs differ only where a run lives or how it logs are one group
  c = [make_run(tmp_path, "c0", "synthetic_vanilla", 5, validation_freq=4, verbose=0),
       make_run(tmp_path, "c1", "synthetic_vanilla", 6)]
  # directory names not shared (not a sweep's): named after the method; the same method at two
  # schedules: told apart by the flags that differ
  a = [make_run(tmp_path, f"a{s}", "synthetic_sd_mtcnn_eq5", s) for s in (1, 0)]
  b = [make_run(tmp_path, f"b{s}", "synthetic_sd_mtcnn_eq5", s, epochs=3) for s in (0, 1)]
  single = make_run(tmp_path / "x", "my_run", "synthetic_sd_vanilla_eq5", 0)
  groups = runs_lib.group(runs_lib.load([str(tmp_path)]))
  assert [(g.name, [r.path for r in g.runs]) for g in groups] == [
      ("vanilla", c), ("my_run", [single]), ("sd_mtcnn_eq5 (epochs=12)", a[::-1]),
      ("sd_mtcnn_eq5 (epochs=3)", b)]
  assert groups[2].seeds == [0, 1]
  # two Baseline-1 groups: each row takes the one of its own data and schedule
  make_run(tmp_path, "d0", "synthetic_vanilla", 0, epochs=3)
  make_run(tmp_path, "d1", "synthetic_vanilla", 1, epochs=3)
  groups = runs_lib.group(runs_lib.load([str(tmp_path)]))
  cols = table.columns(groups)
  rows = table.build_rows(groups, cols)
  assert {r.group.name: r.baseline.name for r in rows} == {
      "vanilla (epochs=12)": "vanilla (epochs=12)", "vanilla (epochs=3)": "vanilla (epochs=3)",
      "my_run": "vanilla (epochs=12)", "sd_mtcnn_eq5 (epochs=12)": "vanilla (epochs=12)",
      "sd_mtcnn_eq5 (epochs=3)": "vanilla (epochs=3)"}
  rows = table.build_rows(groups, cols, baseline="vanilla (epochs=3)")
  assert {r.baseline.name for r in rows} == {"vanilla (epochs=3)"}
  with pytest.raises(ValueError, match=r"--baseline=nope: no such group; the groups are vanilla"):
    table.build_rows(groups, cols, baseline="nope")
  # a row neither Baseline-1 fits: the user chooses
  make_run(tmp_path, "e", "synthetic_sd_mtcnn_eq5", 0, epochs=5)
  groups = runs_lib.group(runs_lib.load([str(tmp_path)]))
  with pytest.raises(ValueError, match=r"could be the baseline of e: vanilla \(epochs=12\), "
                     r"vanilla \(epochs=3\); choose one with --baseline=NAME"):
    table.build_rows(groups, table.columns(groups))


# ---- curves ----------------------------------------------------------------------------------
def _history(seed: int, epochs: int = 4) -> dict:
  h = {}
  for role in ("teacher", "student"):
    h[f"val_{role}_semseg_miou_legacy"] = [10.0 * (e + 1) + seed for e in range(epochs)]
    h[f"val_{role}_depth_rel_legacy"] = [1.0 / (e + 1) + 0.1 * seed for e in range(epochs)]
    h[f"val_{role}_normals_median_deg_legacy"] = [40.0 - e - seed for e in range(epochs)]
  h["loss"] = [1.0] * epochs
  return h


def test_curve_series_are_mean_and_std_over_seeds(tmp_path):
  for seed in (0, 1, 2):
    make_run(tmp_path, f"m_seed{seed}", "synthetic_sd_mtcnn_eq5_full", seed,
             history=_history(seed, epochs=4 if seed < 2 else 3))
  make_run(tmp_path, "v_seed0", "synthetic_vanilla", 0)  # no history: left out, with a warning
  groups = runs_lib.group(runs_lib.load([str(tmp_path)]))
  panels = curves.panels(groups)
  assert [p.key for p in panels] == ["semseg_miou_legacy", "depth_rel_legacy",
                                     "normals_median_deg_legacy"]
  assert [p.key for p in curves.panels(groups, "primary")] == [
      "semseg_miou", "depth_rel", "normals_median_deg"]
  histories = {r.path: curves.read_history(r.history) for g in groups for r in g.runs
               if r.history}
  lines = curves.series(groups, panels[0], histories)
  assert [(s.label, s.role) for s in lines] == [("m T", "teacher"), ("m S", "student")]
  teacher = lines[0]
  assert teacher.epochs.tolist() == [1, 2, 3, 4]
  assert teacher.count.tolist() == [3, 3, 3, 2]  # seed 2 stopped after 3 epochs
  assert teacher.mean.tolist() == pytest.approx([11.0, 21.0, 31.0, 40.5])
  assert teacher.std.tolist() == pytest.approx([1.0, 1.0, 1.0, statistics.stdev([40.0, 41.0])])
  if not curves.available():
    with pytest.raises(ValueError, match="--curves needs matplotlib"):
      build.write([str(tmp_path)], str(tmp_path / "out"), curves=True)
    report = build.write([str(tmp_path)], str(tmp_path / "out"))  # curves when available
    assert "No curves: matplotlib is not installed." in report.markdown
    assert not (tmp_path / "out" / "curves.png").exists()


def test_the_curves_png_exists_for_runs_with_a_history(tmp_path):
  pytest.importorskip("matplotlib")
  from PIL import Image
  for seed in (0, 1):
    make_run(tmp_path, f"m_seed{seed}", "synthetic_sd_mtcnn_eq5_full", seed,
             history=_history(seed))
    make_run(tmp_path, f"v_seed{seed}", "synthetic_vanilla", seed, history={
        k: v for k, v in _history(seed + 5).items() if "student" not in k})
  warnings = []
  report = build.write([str(tmp_path)], str(tmp_path / "out"), warn=warnings.append)
  png = tmp_path / "out" / "curves.png"
  assert str(png) in report.files and not warnings
  with Image.open(png) as image:
    assert image.format == "PNG" and image.size == (3 * 450, 400)  # 3 panels of 4.5 x 4 in, 100 dpi
    assert len(set(image.convert("RGB").getdata())) > 10  # lines, bands, text: not blank
  assert "![validation curves](curves.png)" in report.markdown
  # runs without validation values: no PNG, a warning, a note
  for seed in (0, 1):
    make_run(tmp_path / "novalid", f"v_seed{seed}", "synthetic_vanilla", seed,
             history={"loss": [1.0, 0.5]})
  report = build.write([str(tmp_path / "novalid")], str(tmp_path / "out2"), curves=True,
                       warn=warnings.append)
  assert not (tmp_path / "out2" / "curves.png").exists()
  assert "No curves: no run has validation values" in report.markdown
  assert any("no run has validation values" in w for w in warnings)


# ---- bad input -------------------------------------------------------------------------------
def test_bad_input_is_one_error_naming_the_path(tmp_path):
  nowhere = str(tmp_path / "nowhere")
  with pytest.raises(FileNotFoundError, match=re.escape(f"--runs: {nowhere} does not exist")):
    runs_lib.load([str(tmp_path / "nowhere")])
  (tmp_path / "empty" / "data").mkdir(parents=True)
  with pytest.raises(FileNotFoundError, match=re.escape(
      f"--runs: no run directory (a folder with config.json) in or under {tmp_path / 'empty'}")):
    runs_lib.load([str(tmp_path / "empty")])
  # unreadable metrics.json: not JSON, not an object, not numbers
  bad = make_run(tmp_path / "bad", "r", "synthetic_vanilla", 0)
  metrics_path = os.path.join(bad, "results", "metrics.json")
  for text, needle in (('{"teacher_semseg_miou": 1', "unreadable metrics"),
                       ("[1, 2]", "expected a JSON object of metric values, got list"),
                       ('{"teacher_semseg_miou": "high"}', "teacher_semseg_miou not a number")):
    with open(metrics_path, "w") as f:
      f.write(text)
    for skip in (False, True):  # a corrupt file is not an unfinished run: never skipped
      with pytest.raises(ValueError, match=needle) as caught:
        runs_lib.load([bad], skip_incomplete=skip)
      assert str(caught.value).startswith(metrics_path)
  # unreadable config.json
  with open(os.path.join(bad, "config.json"), "w") as f:
    f.write('{"no_such_flag": 1}')
  with pytest.raises(ValueError, match=r"config.json: not a readable run config \(config has "
                     r"unknown field\(s\) \['no_such_flag'\]\)") as caught:
    runs_lib.load([bad])
  assert str(caught.value).startswith(os.path.join(bad, "config.json"))
  # every run incomplete and skipped
  make_run(tmp_path / "unfinished", "r", "synthetic_vanilla", 0, metrics=False)
  warnings = []
  with pytest.raises(FileNotFoundError, match="every run in or under .* was skipped"):
    runs_lib.load([str(tmp_path / "unfinished")], skip_incomplete=True, warn=warnings.append)
  assert len(warnings) == 1
  with pytest.raises(ValueError, match="--definitions=legacy: expected one of paper, primary"):
    build.write([str(tmp_path / "unfinished")], str(tmp_path / "out"), definitions="legacy")


def test_the_cli_reports_bad_input_as_one_line_and_skips_when_asked(tmp_path):
  complete = make_run(tmp_path / "runs", "synthetic_vanilla_seed0", "synthetic_vanilla", 0)
  unfinished = make_run(tmp_path / "runs", "synthetic_vanilla_seed1", "synthetic_vanilla", 1,
                        metrics=False)
  out = str(tmp_path / "out")
  proc = run_module("sdmtcnn_tf.report", f"--runs={tmp_path / 'runs'}", f"--out={out}",
                    check=False)
  assert_one_error_line(proc, unfinished, "no results/metrics.json", "--skip_incomplete")
  assert not os.path.exists(out)
  proc = run_module("sdmtcnn_tf.report", f"--runs={tmp_path / 'runs'}", f"--out={out}",
                    "--skip_incomplete", "--nocurves")
  warnings = [l for l in proc.stderr.splitlines() if l.startswith("warning: ")]
  assert len(warnings) == 1 and unfinished in warnings[0] and "skipping" in warnings[0]
  assert "| synthetic_vanilla | vanilla | – | T | 1 |" in proc.stdout
  (row,) = read_csv(os.path.join(out, "report.csv"))
  assert (row["n"], row["run_dirs"]) == ("1", complete)
  # runs of two datasets in one report
  nyu = make_run(tmp_path / "nyu", "nyuv2_vanilla_seed0", "nyuv2_vanilla", 0)
  proc = run_module("sdmtcnn_tf.report", f"--runs={complete},{tmp_path / 'nyu'}",
                    f"--out={out}", check=False)
  assert_one_error_line(proc, "runs of different datasets in one report",
                        f"synthetic ({complete})", f"nyuv2 ({nyu})")


# ---- a real finished run (slow: the smoke run trains once per session) -----------------------
def test_the_report_of_the_finished_smoke_run(smoke_run, tmp_path):
  report = build.write([smoke_run], str(tmp_path / "out"), definitions="primary")
  (row,) = read_csv(tmp_path / "out" / "report.csv")
  metrics = metrics_of(smoke_run)
  for c in report.columns:
    assert float(row[f"{c.key}_mean"]) == pytest.approx(metrics[f"teacher_{c.key}"], rel=1e-12)
  assert row["delta_m_mean"] == "0.0"
  if curves.available():
    assert (tmp_path / "out" / "curves.png").exists()
