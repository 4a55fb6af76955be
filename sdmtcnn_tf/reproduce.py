"""Reproduce a paper table or figure: train every row with its config, then write the report.

  python -m sdmtcnn_tf.reproduce --table=2 --dataset=nyuv2 [--seeds=3] [--rows=vanilla,...] \\
      --out_dir=DIR [--data_dir=DIR] [--extra_flagfiles=...]
  python -m sdmtcnn_tf.reproduce --table=1 --dataset=taskonomy --out_dir=DIR
  python -m sdmtcnn_tf.reproduce --figure=1 --dataset=synthetic --out_dir=DIR

A table's rows are the paper's (report/paper_tables.py: `table_rows`, and `flagfile` maps each
row to `configs/<dataset>_<row>.flags`); `--dataset=synthetic` runs the same rows on the
built-in synthetic scenes, demo-sized (the synthetic_* configs; add
`--extra_flagfiles=configs/size_tiny.flags` for test size). The runs are the seed sweep's
(sweep.train_all): `<out_dir>/runs/<config>_seed<s>`, trained one after the other, seed by seed;
a finished run (results/metrics.json) is not trained again and a killed one resumes from its
backup, so re-running the same command continues where it stopped. Traditional KD's frozen
teacher is the Baseline-1 run of the same seed and backbone (its row is added when missing).
Each config validates as its flags say (every epoch by default: the curves need it).
Then `<out_dir>/report/` gets report.md, report.csv and curves.png (report/build.py) of exactly
these runs.
"""

from __future__ import annotations

import os

from sdmtcnn_tf import cli  # first: it quiets TensorFlow's C++ logs before TF is imported

from absl import flags

from sdmtcnn_tf import config as config_lib
from sdmtcnn_tf import methods, sweep
from sdmtcnn_tf.report import build, paper_tables

REPORT_DIR = "report"


def rows_of(table: int = 0, figure: int = 0, dataset: str = "", rows=()) -> tuple:
  """The row names to train, in the paper's order: those of `table` (or `figure`), restricted
  to `rows` when given. ValueError naming the flag for a wrong choice."""
  if bool(table) == bool(figure):
    raise ValueError("give exactly one of --table=1|2 and --figure=1")
  if table:
    available = paper_tables.table_rows(table)
    datasets = paper_tables.TABLE_DATASETS[table][1]
    if dataset not in datasets:
      raise ValueError(f"--dataset={dataset}: table {table} is reproduced on "
                       f"{', '.join(datasets)}")
  else:
    if figure not in paper_tables.FIGURE_ROWS:
      raise ValueError(f"--figure={figure}: expected one of "
                       f"{', '.join(map(str, paper_tables.FIGURE_ROWS))}")
    available = paper_tables.FIGURE_ROWS[figure]
    if not dataset:
      raise ValueError("--dataset is required")
  if not rows:
    return tuple(available)
  unknown = [r for r in rows if r not in available]
  if unknown:
    raise ValueError(f"--rows: no row {', '.join(unknown)} in "
                     f"{'table' if table else 'figure'} {table or figure}; its rows are "
                     f"{', '.join(available)}")
  return tuple(r for r in available if r in rows)


def flagfiles(dataset: str, rows, extra_flagfiles=(), config_dir: str = paper_tables.CONFIG_DIR):
  """{row: flagfile} of `rows`, with the Baseline-1 row a traditional-KD row takes its teacher
  from added first when missing; {row: teacher row} of those rows."""
  files, teachers = {}, {}
  for row in rows:
    path = paper_tables.flagfile(dataset, row, config_dir)
    if not os.path.exists(path):
      raise FileNotFoundError(f"{path} does not exist: no config for row {row} of "
                              f"--dataset={dataset}")
    files[row] = path
  for row, path in list(files.items()):
    cfg = config_lib.parse_flagfile(path, *extra_flagfiles)
    if methods.get(cfg.method.name).teacher_run:
      teachers[row] = paper_tables.row_name("vanilla", cfg.model.backbone, "")
  missing = [t for t in dict.fromkeys(teachers.values()) if t not in files]
  if missing:
    added = {t: paper_tables.flagfile(dataset, t, config_dir) for t in missing}
    files = {**added, **files}
  return files, teachers


def reproduce(dataset: str, rows, seeds, out_dir: str, extra_flagfiles=(), data_dir: str = "",
              log=None):
  """Trains what is not finished yet and writes the report; returns the report (build.Report)."""
  files, teachers = flagfiles(dataset, rows, extra_flagfiles)
  if not data_dir:
    data_dir = (os.path.join(out_dir, "data") if dataset == "synthetic" else
                config_lib.parse_flagfile(next(iter(files.values())),
                                          *extra_flagfiles).data.data_dir)
  row_of = {path: row for row, path in files.items()}

  def overrides(flagfile, seed):
    teacher = teachers.get(row_of[flagfile])
    if teacher is None:
      return {}
    return {"teacher_dir": os.path.join(out_dir, "runs", sweep.run_name(files[teacher], seed))}

  sweep.train_all(list(files.values()), seeds, out_dir, extra_flagfiles, data_dir=data_dir,
                  validation_freq=None, overrides=overrides, log=log)
  run_dirs = [os.path.join(out_dir, "runs", sweep.run_name(f, s))
              for f in files.values() for s in seeds]
  return build.write(run_dirs, os.path.join(out_dir, REPORT_DIR), warn=log or print)


def main(argv):
  cli.check_no_arguments(argv)
  fv = flags.FLAGS
  if not fv.out_dir:
    raise ValueError("--out_dir is required")
  if fv.seeds < 1:
    raise ValueError(f"--seeds={fv.seeds}: expected at least 1 (the seeds are 0..N-1)")
  rows = rows_of(fv.table, fv.figure, fv.dataset, fv.rows)
  report = reproduce(fv.dataset, rows, list(range(fv.seeds)), fv.out_dir, fv.extra_flagfiles,
                     fv.data_dir)
  print(report.markdown)
  print("wrote " + ", ".join(report.files))


if __name__ == "__main__":
  flags.DEFINE_integer("table", 0, "The paper table to reproduce: 1 (Mini-Taskonomy) or 2 "
                       "(NYUv2, CityScapes).")
  flags.DEFINE_integer("figure", 0, "The paper figure to reproduce: 1 (validation curves).")
  flags.DEFINE_enum("dataset", "", ["", "nyuv2", "cityscapes", "taskonomy", "synthetic"],
                    "The dataset the rows are trained on; synthetic = the demo-sized version.")
  flags.DEFINE_integer("seeds", 3, "Seeds per row: 0..N-1.")
  flags.DEFINE_list("rows", [], "Only these rows (names as configs/<dataset>_<row>.flags, e.g. "
                    "vanilla,sd_mtcnn_eq5_full); default: all of the table.")
  flags.DEFINE_string("out_dir", "", "Where the runs (runs/), the synthetic data (data/) and "
                      "the report (report/) go.")
  flags.DEFINE_string("data_dir", "", "The dataset's records; default: the configs' (converted "
                      "datasets) or <out_dir>/data (synthetic).")
  flags.DEFINE_list("extra_flagfiles", [], "Flagfiles applied on top of every row's config "
                    "(e.g. configs/size_tiny.flags).")
  cli.run(main)
