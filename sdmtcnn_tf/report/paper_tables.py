"""The paper's numbers: tables 1 (Mini-Taskonomy) and 2 (NYUv2, CityScapes) of the SD-MTCNN
supplementary, as the CSVs in `paper/` (copied from the project's shared `paper/` folder; the
comment lines at their top say what each column is).

A paper row is found by (method label, backbone, variant, role): method label `vanilla`,
`sd_vanilla`, `traditional_kd`, `sd_mtcnn` or `sd_mtcnn_full` (sd_mtcnn with --full), backbone
`segnet`/`unet`, variant `eq5`/`eq6` (empty for vanilla and traditional KD), role `T`/`S`.

The rows <-> configs mapping lives here too (`row_name`, `table_rows`, `flagfile`): a paper row
(method, backbone, variant) is the row name `<method>[_<variant>][_unet]` with `sd_mtcnn_full`
written `sd_mtcnn_<variant>_full`, and its config is `configs/<dataset>_<row name>.flags` (e.g.
`nyuv2_sd_mtcnn_eq5_full.flags`, `taskonomy_vanilla_unet.flags`); `reproduce` trains them.
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
# --table=N -> the dataset whose rows it lists and the datasets it may be reproduced on
# (synthetic: the demo-sized version of the same rows)
TABLE_DATASETS = {1: ("taskonomy", ("taskonomy", "synthetic")),
                  2: ("nyuv2", ("nyuv2", "cityscapes", "synthetic"))}
# fig. 1 (validation curves, report/curves.py): the rows it compares (DECIDED, BUILD_NOTES.md:
# the figure's own row list is not in our sources), on any dataset
FIGURE_ROWS = {1: ("vanilla", "sd_vanilla_eq5", "sd_mtcnn_eq5", "sd_mtcnn_eq5_full")}
CONFIG_DIR = "configs"


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


def row_name(method: str, backbone: str, variant: str) -> str:
  """The name of a paper row (see the module docstring), e.g. `sd_mtcnn_eq5_full`."""
  full = method == "sd_mtcnn_full"
  name = "sd_mtcnn" if full else method
  if variant:
    name += f"_{variant}"
  if full:
    name += "_full"
  return name + ("_unet" if backbone == "unet" else "")


def table_rows(number: int) -> tuple:
  """The row names of table `number` (1 or 2), in the paper's order, each once."""
  if number not in TABLE_DATASETS:
    raise ValueError(f"--table={number}: expected one of {', '.join(map(str, TABLE_DATASETS))}")
  names = []
  for row in rows(TABLE_DATASETS[number][0]):
    name = row_name(row["method"], row["backbone"], row["variant"])
    if name not in names:
      names.append(name)
  return tuple(names)


def flagfile(dataset: str, row: str, config_dir: str = CONFIG_DIR) -> str:
  """The config of paper row `row` on `dataset`: `<config_dir>/<dataset>_<row>.flags`."""
  return os.path.join(config_dir, f"{dataset}_{row}.flags")
