"""`python -m sdmtcnn_tf.report --runs=DIR[,DIR...] --out=DIR`: the paper-shaped report of
finished runs (report.md, report.csv, curves.png; see sdmtcnn_tf/report/__init__.py).

  python -m sdmtcnn_tf.report --runs=sweep_out/runs --out=sweep_out/report
  python -m sdmtcnn_tf.report --runs=runs/a,runs/b --out=report --skip_incomplete \\
      --baseline=synthetic_vanilla --definitions=primary --nocurves
"""

from __future__ import annotations

import sys

from sdmtcnn_tf import cli  # first: it quiets TensorFlow's C++ logs before TF is imported

from absl import flags


def main(argv):
  cli.check_no_arguments(argv)
  from sdmtcnn_tf.report import build
  fv = flags.FLAGS
  if not fv.runs:
    raise ValueError("--runs is required: run directories, or folders holding them (comma list)")
  if not fv.out:
    raise ValueError("--out is required: the folder report.md and report.csv go to")

  def warn(message):
    print(f"warning: {message}", file=sys.stderr, flush=True)

  report = build.write(fv.runs, fv.out, fv.skip_incomplete, fv.baseline, fv.definitions,
                       fv.curves, warn)
  print(report.markdown)
  print("wrote " + ", ".join(report.files))


if __name__ == "__main__":
  flags.DEFINE_list("runs", [], "Run directories, or folders holding run directories (e.g. a "
                    "sweep's <out_dir>/runs), comma separated.")
  flags.DEFINE_string("out", "", "Folder for report.md, report.csv and curves.png.")
  flags.DEFINE_bool("skip_incomplete", False, "Leave out runs without results/metrics.json "
                    "(with a warning) instead of stopping.")
  flags.DEFINE_string("baseline", "", "The group (report row name) Δm compares with; default: "
                      "the Baseline-1 (vanilla, --distill=none) group.")
  flags.DEFINE_enum("definitions", "paper", ["paper", "primary"], "paper: the MTAN-2019 legacy "
                    "metrics where the task has one (as the paper's numbers); primary: ours.")
  flags.DEFINE_bool("curves", None, "Write curves.png (needs matplotlib); default: when "
                    "matplotlib is installed.")
  cli.run(main)
