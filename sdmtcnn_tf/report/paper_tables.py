"""The paper's numbers: tables 1 (Mini-Taskonomy) and 2 (NYUv2, CityScapes) of the SD-MTCNN
supplementary, as the CSVs in `paper/` (copied from the project's shared `paper/` folder; the
comment lines at their top say what each column is).

A paper row is found by (method label, backbone, variant, role): method label `vanilla`,
`sd_vanilla`, `traditional_kd`, `sd_mtcnn` or `sd_mtcnn_full` (sd_mtcnn with --full), backbone
`segnet`/`unet`, variant `eq5`/`eq6` (empty for vanilla and traditional KD), role `T`/`S`.
"""

from __future__ import annotations

import csv
import functools
import os

PAPER_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "paper")
# dataset -> (file, what the report calls it)
TABLES = {
    "taskonomy": ("table1_minitaskonomy_5task.csv", "table 1 (Mini-Taskonomy, 5 tasks)"),
    "nyuv2": ("table2_nyuv2_cityscapes_2task.csv", "table 2 (NYUv2, 13 classes, 2 tasks)"),
    "cityscapes": ("table2_nyuv2_cityscapes_2task.csv", "table 2 (CityScapes, 7 classes, 2 tasks)"),
}
KEY_COLUMNS = ("dataset", "method", "backbone", "variant", "role", "baseline")


def has_paper(dataset: str) -> bool:
  return dataset in TABLES


def title(dataset: str) -> str:
  return TABLES[dataset][1]


@functools.lru_cache(maxsize=None)
def _read(filename: str) -> tuple:
  with open(os.path.join(PAPER_DIR, filename), newline="") as f:
    rows = list(csv.DictReader(line for line in f if not line.startswith("#")))
  out = []
  for row in rows:
    out.append({k: (v if k in KEY_COLUMNS else (float(v) if v.strip() else None))
                for k, v in row.items()})
  return tuple(out)


def rows(dataset: str) -> tuple:
  """The paper's rows for `dataset` (dicts: the key columns as strings, metrics as floats);
  empty for a dataset the paper has no table of."""
  if dataset not in TABLES:
    return ()
  return tuple(r for r in _read(TABLES[dataset][0]) if r.get("dataset", dataset) == dataset)


def lookup(dataset: str, method: str, backbone: str, variant: str, role: str) -> dict | None:
  """The paper's row {column: value} for one of our rows, or None when the paper has none."""
  for row in rows(dataset):
    if (row["method"], row["backbone"], row["variant"], row["role"]) == (
        method, backbone, variant, role):
      return row
  return None
