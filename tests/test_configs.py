"""Every flagfile parses, matches its name and builds its model (on a tiny input)."""

from __future__ import annotations

import csv
import glob
import os

import numpy as np
import pytest

from tests.conftest import REPO

from sdmtcnn_tf import config as config_lib, methods
from sdmtcnn_tf.models.build import build_network, count_params

CONFIGS = sorted(os.path.relpath(p, REPO) for p in glob.glob(os.path.join(REPO, "configs",
                                                                             "*.flags")))
EXPERIMENTS = [p for p in CONFIGS if not os.path.basename(p).startswith(("base_", "size_", "study_"))]
PAPER = os.path.join(REPO, "tests", "data", "paper")  # copies of ../shared/paper/table*.csv


def _expected(path: str) -> dict:
  """What a name `<dataset>_<method>[_eq5|_eq6][_full][_unet].flags` promises."""
  stem = os.path.basename(path)[:-len(".flags")]
  dataset, rest = stem.split("_", 1)
  if rest in ("smoke", "demo"):
    return {"dataset": dataset, "method": "vanilla"}
  parts = rest.split("_")
  backbone = "unet" if parts[-1] == "unet" else "segnet"
  parts = parts[:-1] if backbone == "unet" else parts
  full = parts[-1] == "full"
  parts = parts[:-1] if full else parts
  distill = parts[-1] if parts[-1] in ("eq5", "eq6") else None
  method = "_".join(parts[:-1] if distill else parts)
  expected = {"dataset": dataset, "method": method, "backbone": backbone, "full": full}
  if distill:
    expected["distill"] = distill
  return expected


@pytest.mark.parametrize("path", EXPERIMENTS)
def test_flagfile_parses_matches_its_name_and_builds(path, monkeypatch):
  monkeypatch.chdir(REPO)
  cfg = config_lib.parse_flagfile(path)
  for field, value in _expected(path).items():
    assert cfg.flag_value(field) == value, (path, field)
  tiny = cfg.replace(height=32, width=32, width_multiplier=1 / 32, teacher_dir="")
  network = build_network(tiny)
  out = network.model(np.zeros((1, 32, 32, 3), np.float32))
  assert set(cfg.data.tasks) == set(out["teacher"])
  assert (network.student is not None) == ("student" in methods.get(cfg.method.name).roles)
  assert count_params(network.teacher) > 0


@pytest.mark.parametrize("path", EXPERIMENTS)
def test_flagfile_halves_the_rate_during_training(path, monkeypatch):
  """MTAN's schedule (StepLR(step_size=100, gamma=0.5) over 200 epochs) on the real datasets;
  every config decays at least once."""
  monkeypatch.chdir(REPO)
  cfg = config_lib.parse_flagfile(path)
  assert 0 < cfg.optim.lr_decay_epochs < cfg.optim.epochs
  if cfg.data.dataset != "synthetic":
    expected = (200, 100, 1e-4)
    assert (cfg.optim.epochs, cfg.optim.lr_decay_epochs, cfg.optim.learning_rate) == expected


def test_every_paper_table_row_has_a_flagfile(monkeypatch):
  monkeypatch.chdir(REPO)
  rows = []
  for name, dataset_of in (("table1_minitaskonomy_5task.csv", lambda r: "taskonomy"),
                           ("table2_nyuv2_cityscapes_2task.csv", lambda r: r["dataset"])):
    with open(os.path.join(PAPER, name)) as f:
      lines = [line for line in f if not line.startswith("#")]
    rows += [(dataset_of(r), r) for r in csv.DictReader(lines)]
  assert len(rows) == 19 + 28
  for dataset, row in rows:
    method = row["method"].replace("sd_mtcnn_full", "sd_mtcnn")
    full = row["method"] == "sd_mtcnn_full"
    name = "_".join(p for p in [dataset, method, row["variant"], "full" if full else "",
                                "unet" if row["backbone"] == "unet" else ""] if p)
    assert os.path.exists(os.path.join("configs", name + ".flags")), (name, row)
    cfg = config_lib.parse_flagfile(os.path.join("configs", name + ".flags"))
    expected_tasks = 5 if dataset == "taskonomy" else 2
    assert len(cfg.data.tasks) == expected_tasks


def test_the_demo_says_why_a_student_beats_its_teacher():
  from sdmtcnn_tf import demo
  columns = {"constant": {"semseg_miou": 5.0},
             "synthetic_demo:T": {"semseg_miou": 16.1},
             "full:T": {"semseg_miou": 22.2}, "full:S": {"semseg_miou": 50.8},
             "even:T": {"semseg_miou": 30.0}, "even:S": {"semseg_miou": 29.0}}
  notes = demo.students_above_teachers(columns)
  assert len(notes) == 1 and notes[0].startswith("note: full's student beats its teacher on "
                                                 "semseg_miou (50.8 vs 22.2) because")


def test_the_study_scale_gives_every_student_a_map_of_at_least_4x6():
  """configs/study_scale.flags (issue 20) on top of every table-1 synthetic row: 128x192 or
  more, so the 1/32 encoder output a non-full student reads is at least 4x6."""
  for row in ("vanilla", "sd_vanilla_eq5", "sd_mtcnn_eq6", "sd_mtcnn_eq5_full_unet"):
    cfg = config_lib.parse_flagfile(f"configs/synthetic_{row}.flags", "configs/study_scale.flags")
    assert cfg.data.height // 32 >= 4 and cfg.data.width // 32 >= 6, row
