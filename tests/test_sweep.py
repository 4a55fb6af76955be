"""The seed sweep: finished runs are not trained again, and the table is mean ± sample std."""

from __future__ import annotations

import json
import os

import pytest

from tests.conftest import REPO

from sdmtcnn_tf import sweep

CONFIGS = ["configs/synthetic_vanilla.flags", "configs/synthetic_sd_mtcnn_eq6.flags"]


def _finished(out_dir, flagfile, seed, metrics):
  results = os.path.join(out_dir, "runs", sweep.run_name(flagfile, seed), "results")
  os.makedirs(results)
  with open(os.path.join(results, "metrics.json"), "w") as f:
    json.dump(metrics, f)


def test_finished_runs_are_read_not_retrained_and_tabulated(tmp_path, monkeypatch):
  monkeypatch.chdir(REPO)
  out = str(tmp_path)
  for seed, miou in ((0, 10.0), (1, 14.0)):
    _finished(out, CONFIGS[0], seed, {"teacher_semseg_miou": miou})
    _finished(out, CONFIGS[1], seed, {"teacher_semseg_miou": miou + 1, "student_semseg_miou": 2.0})
  results = sweep.train_all(CONFIGS, [0, 1], out)  # would train (minutes) if it did not read
  assert results[(CONFIGS[1], 1)]["student_semseg_miou"] == 2.0
  text = sweep.table(CONFIGS, [0, 1], results, {"constant_semseg_miou": 5.0})
  rows = text.splitlines()
  # the report's table (report/table.py), primary definitions: run, method, eq., role, n, then
  # pixacc, mIoU, depth abs, depth rel, normals cos, normals mean°, normals median°, Δm %
  assert rows[0].startswith("| run | method | eq. | role | n | pixacc | mIoU |")
  assert rows[2] == "| constant predictor | – | – | – | – |  | 5 |  |  |  |  |  |  |"
  # std of 10, 14 (ddof 1); Δm against synthetic_vanilla's mean mIoU 12 over the seeds
  assert rows[3] == ("| synthetic_vanilla | vanilla | – | T | 2 |  | 12 ± 2.8 |  |  |  |  |  "
                     "| +0.00 ± 23.57 |")
  assert rows[4].endswith("| T | 2 |  | 13 ± 2.8 |  |  |  |  |  | +8.33 ± 23.57 |")
  assert rows[5] == ("| synthetic_sd_mtcnn_eq6 | sd_mtcnn | eq6 | S | 2 |  | 2 ± 0 |  |  |  |  "
                     "|  | -83.33 ± 0.00 |")
  assert len(rows) == 2 + 1 + 3  # header, constant, vanilla T, sd_mtcnn T and S
