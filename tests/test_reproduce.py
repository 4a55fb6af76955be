"""`python -m sdmtcnn_tf.reproduce`: the paper's rows <-> configs, bad input, and one tiny
2-row, 2-seed synthetic reproduction that is killed, resumed, and reported."""

from __future__ import annotations

import csv
import json
import os
import statistics
import subprocess
import sys
import time

import pytest

from tests.conftest import REPO, assert_one_error_line, run_module
from tests.test_report import SYNTHETIC_KEYS

from sdmtcnn_tf import config as config_lib
from sdmtcnn_tf import reproduce
from sdmtcnn_tf.report import paper_tables, runs as runs_lib

# test size: one epoch of two steps on 8 images of 32x32, the narrowest network
TINY = """--height=32
--width=32
--synthetic_num_train=8
--synthetic_num_val=4
--width_multiplier=0.125
--student_channels=16
--batch_size=4
--eval_batch_size=4
--epochs=1
--lr_decay_epochs=0
--precise_bn_batches=0
"""


@pytest.fixture(autouse=True)
def _in_repo(monkeypatch):
  monkeypatch.chdir(REPO)  # the flagfiles' nested --flagfile paths are relative to it


@pytest.mark.parametrize("table", [1, 2])
def test_every_row_of_a_table_has_a_config_of_that_method_on_every_dataset(table):
  rows = paper_tables.table_rows(table)
  assert rows[0] == "vanilla" and len(rows) == (11 if table == 1 else 8)
  primary = paper_tables.TABLE_DATASETS[table][0]
  for dataset in paper_tables.TABLE_DATASETS[table][1]:
    for row in rows:
      cfg = config_lib.parse_flagfile(paper_tables.flagfile(dataset, row), teacher_dir="/t")
      assert cfg.data.dataset == dataset
      variant = runs_lib.paper_variant(cfg)
      # the config is the paper row it is named after (and the report finds that row)
      assert paper_tables.row_name(runs_lib.method_label(cfg), cfg.model.backbone,
                                   variant) == row
      if dataset != "synthetic":
        assert paper_tables.lookup(dataset, runs_lib.method_label(cfg), cfg.model.backbone,
                                   variant, "S" if cfg.method.name == "traditional_kd" else "T")
  assert paper_tables.lookup(primary, "vanilla", "segnet", "", "T")["baseline"] == "1"


def test_rows_are_chosen_in_the_paper_order_and_a_kd_row_brings_its_teacher():
  assert reproduce.rows_of(table=2, dataset="cityscapes",
                           rows=["sd_mtcnn_eq6_full", "vanilla"]) == (
                               "vanilla", "sd_mtcnn_eq6_full")
  assert reproduce.rows_of(figure=1, dataset="synthetic") == paper_tables.FIGURE_ROWS[1]
  files, teachers = reproduce.flagfiles("nyuv2", ["traditional_kd", "sd_mtcnn_eq5"])
  assert list(files) == ["vanilla", "traditional_kd", "sd_mtcnn_eq5"]
  assert teachers == {"traditional_kd": "vanilla"}
  with pytest.raises(ValueError, match=r"--rows: no row vanilla_unet in table 2; its rows are "
                                       r"vanilla, sd_vanilla_eq5"):
    reproduce.rows_of(table=2, dataset="nyuv2", rows=["vanilla_unet"])
  with pytest.raises(ValueError, match=r"--dataset=nyuv2: table 1 is reproduced on taskonomy, "
                                       r"synthetic"):
    reproduce.rows_of(table=1, dataset="nyuv2")
  with pytest.raises(ValueError, match="exactly one of --table"):
    reproduce.rows_of(table=2, figure=1, dataset="nyuv2")


def test_the_cli_names_the_bad_flag(tmp_path):
  proc = run_module("sdmtcnn_tf.reproduce", "--table=3", "--dataset=nyuv2",
                    f"--out_dir={tmp_path}", check=False)
  assert_one_error_line(proc, "--table=3", "expected one of 1, 2")


def _metrics(run_dir):
  with open(os.path.join(run_dir, "results", "metrics.json")) as f:
    return json.load(f)


@pytest.mark.slow
def test_a_killed_reproduction_resumes_and_reports_the_runs_metrics(tmp_path):
  tiny = tmp_path / "tiny.flags"
  tiny.write_text(TINY)
  out = tmp_path / "out"
  args = ["--table=2", "--dataset=synthetic", "--seeds=2", "--rows=sd_mtcnn_eq5_full,vanilla",
          f"--out_dir={out}", f"--extra_flagfiles={tiny}"]
  runs = out / "runs"
  first, second = runs / "synthetic_vanilla_seed0", runs / "synthetic_sd_mtcnn_eq5_full_seed0"
  env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
  proc = subprocess.Popen([sys.executable, "-m", "sdmtcnn_tf.reproduce", *args], cwd=REPO,
                          env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
  try:
    deadline = time.time() + 400
    while not (second / "config.json").exists():  # the second run has started
      assert proc.poll() is None, proc.stderr.read()[-3000:]
      assert time.time() < deadline
      time.sleep(0.2)
  finally:
    proc.kill()
    proc.communicate()
  assert (first / "results" / "metrics.json").exists()
  second_finished = (second / "results" / "metrics.json").exists()
  stamp = os.stat(first / "results" / "metrics.json").st_mtime_ns

  done = run_module("sdmtcnn_tf.reproduce", *args)
  assert f"finished already: {first}" in done.stdout
  if not second_finished:
    assert f"resuming {second}" in done.stdout
  assert os.stat(first / "results" / "metrics.json").st_mtime_ns == stamp  # not retrained

  with open(out / "report" / "report.csv", newline="") as f:
    rows = {(r["run"], r["role"]): r for r in csv.DictReader(f)}
  assert set(rows) == {("synthetic_vanilla", "T"), ("synthetic_sd_mtcnn_eq5_full", "T"),
                       ("synthetic_sd_mtcnn_eq5_full", "S")}
  head = list(next(iter(rows.values())))
  assert [k[:-len("_mean")] for k in head if k.endswith("_mean") and
          not k.startswith("delta_m")] == SYNTHETIC_KEYS
  for (name, letter), row in rows.items():
    dirs = [str(runs / f"{name}_seed{s}") for s in (0, 1)]
    assert row["run_dirs"].split() == dirs and row["seeds"] == "0 1" and row["n"] == "2"
    role = {"T": "teacher", "S": "student"}[letter]
    for key in SYNTHETIC_KEYS:
      values = [_metrics(d)[f"{role}_{key}"] for d in dirs]
      assert float(row[f"{key}_mean"]) == pytest.approx(statistics.mean(values), rel=1e-12)
      assert float(row[f"{key}_std"]) == pytest.approx(statistics.stdev(values), rel=1e-9)
  assert float(rows[("synthetic_vanilla", "T")]["delta_m_mean"]) == pytest.approx(0, abs=1e-9)
  assert (out / "report" / "curves.png").stat().st_size > 0  # validated every epoch
  assert "| synthetic_sd_mtcnn_eq5_full | sd_mtcnn_full | eq5 | S | 2 |" in (
      out / "report" / "report.md").read_text()
