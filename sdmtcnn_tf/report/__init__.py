"""Reports over finished runs: `python -m sdmtcnn_tf.report --runs=DIR[,DIR...] --out=DIR`.

The package reads run directories and writes what people look at, in the paper's shape:
- `runs.py`: finds run directories (a folder with config.json) in or under the given folders,
  reads each one's config.json and results/metrics.json (one error line naming the file for
  bad input; `--skip_incomplete` leaves unfinished runs out with a warning) and groups them by
  their config minus the seed (and minus the flags that only locate a run or set its logging).
- `table.py`: the columns (the paper's metrics of each task, legacy definitions where the paper
  used them), one row per group and role with mean ± sample std over the seeds, the paper's
  numbers beside ours, Δm against Baseline-1; markdown and CSV.
- `gain.py`: Δm (LibMTL), also used by the search objective.
- `paper_tables.py`: the paper's tables 1 and 2 (`paper/*.csv`, copied from the project's
  shared paper folder).
- `curves.py`: per-epoch validation curves (fig. 1's panels) from each run's
  results/history.csv, mean line and ± std band over seeds (matplotlib, Agg).
- `build.py`: reads, groups and writes report.md, report.csv and curves.png.
This module imports nothing heavy: `search/objective.py` imports `report.gain`.
"""
