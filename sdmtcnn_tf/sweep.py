"""Seed sweep: train every config with every seed, tabulate mean ± std per config and role.

  python -m sdmtcnn_tf.sweep --out_dir=/tmp/patterns --seeds=0,1,2 \
      --configs=configs/synthetic_vanilla.flags,configs/synthetic_sd_mtcnn_eq5.flags \
      [--extra_flagfiles=configs/size_tiny.flags]

Runs go to `<out_dir>/runs/<config>_seed<s>` and share one dataset in `<out_dir>/data` (the
config's --data_seed: only the training seed varies). A run whose results/metrics.json exists
is not trained again, so a killed sweep continues where it stopped. The table (markdown) is
printed and written to `<out_dir>/sweep.md` (the report's table, report/table.py, with our
primary metric definitions and the constant predictor); every run's metrics stay in its
metrics.json, and `python -m sdmtcnn_tf.report --runs=<out_dir>/runs` makes the full report.
"""

from __future__ import annotations

import json
import os

from sdmtcnn_tf import cli  # first: it quiets TensorFlow's C++ logs before TF is imported

from absl import flags

from sdmtcnn_tf import atomic, baselines, experiment, train
from sdmtcnn_tf import config as config_lib
from sdmtcnn_tf.report import build
from sdmtcnn_tf.report import runs as report_runs
from sdmtcnn_tf.rundir import RunPaths


def run_name(flagfile: str, seed: int) -> str:
  return f"{os.path.splitext(os.path.basename(flagfile))[0]}_seed{seed}"


def train_all(flagfiles, seeds, out_dir: str, extra_flagfiles=(), data_dir: str | None = None,
              validation_freq: int | None = 10**6, overrides=None, log=None) -> dict:
  """{(config name, seed): metrics} for every pair, training the ones not finished yet (seed by
  seed: a sweep stopped early has whole seeds of every config). A run directory without
  results/metrics.json is trained with the same command again, so a killed run resumes from its
  backup (train.py).

  `data_dir`: the one dataset of every run (None: `<out_dir>/data`); `validation_freq`: None
  keeps each config's (the sweep validates once, after the last epoch: its table reads the
  final metrics only); `overrides(flagfile, seed)`: more flag values of one run (e.g.
  reproduce's --teacher_dir)."""
  data_dir = os.path.join(out_dir, "data") if data_dir is None else data_dir
  log = log or (lambda message: print(message, flush=True))
  results = {}
  for seed in seeds:
    for flagfile in flagfiles:
      model_dir = os.path.join(out_dir, "runs", run_name(flagfile, seed))
      path = RunPaths(model_dir).metrics_json
      if not os.path.exists(path):
        extra = dict(overrides(flagfile, seed)) if overrides else {}
        if validation_freq is not None:
          extra["validation_freq"] = validation_freq
        cfg = config_lib.parse_flagfile(flagfile, *extra_flagfiles, model_dir=model_dir,
                                        data_dir=data_dir, seed=seed, verbose=0, **extra)
        log(f"{'resuming' if os.path.exists(model_dir) else 'training'} {model_dir}")
        train.train(cfg)
      else:
        log(f"finished already: {model_dir}")
      with open(path) as f:
        results[(flagfile, seed)] = json.load(f)
  return results


def groups(flagfiles, seeds, results: dict, extra_flagfiles=(), out_dir: str = "") -> list:
  """The report's groups (report/runs.py) of the sweep: one per flagfile (named after it), its
  seeds' metrics from `results` ({(flagfile, seed): metrics})."""
  out = []
  for flagfile in flagfiles:
    cfg = config_lib.parse_flagfile(flagfile, *extra_flagfiles)
    runs = [report_runs.Run(os.path.join(out_dir, "runs", run_name(flagfile, s)),
                            cfg.replace(seed=s), results[(flagfile, s)]) for s in seeds]
    out.append(report_runs.Group(os.path.splitext(os.path.basename(flagfile))[0], runs))
  return out


def table(flagfiles, seeds, results: dict, constant: dict, extra_flagfiles=()) -> str:
  """Markdown: one row per (config, role), mean ± sample std over the seeds per column, our
  primary metric definitions, Δm against the vanilla config; the constant predictor first.
  The report's table (report/table.py), in the order of `flagfiles`."""
  _, _, text, _ = build.summary(groups(flagfiles, seeds, results, extra_flagfiles), "primary",
                                references=[("constant predictor", baselines.ROLE, constant)])
  return text


def main(argv):
  cli.check_no_arguments(argv)
  fv = flags.FLAGS
  if not fv.configs or not fv.seeds:
    raise ValueError("--configs and --seeds are required (comma lists)")
  seeds = [int(s) for s in fv.seeds]
  results = train_all(fv.configs, seeds, fv.out_dir, fv.extra_flagfiles)
  cfg = config_lib.parse_flagfile(fv.configs[0], *fv.extra_flagfiles,
                                  data_dir=os.path.join(fv.out_dir, "data"))
  constant = baselines.evaluate_constant(cfg, experiment.prepare_data(cfg, experiment.EVAL_SPLIT))
  text = (f"{len(seeds)} seeds ({','.join(map(str, seeds))}), mean ± sample std\n\n"
          + table(fv.configs, seeds, results, constant, fv.extra_flagfiles) + "\n\n"
          + "The report with the paper's metric definitions: python -m sdmtcnn_tf.report "
          + f"--runs={os.path.join(fv.out_dir, 'runs')} "
          + f"--out={os.path.join(fv.out_dir, 'report')}\n")
  atomic.write_text(os.path.join(fv.out_dir, "sweep.md"), text, label="sweep")
  print(text)


if __name__ == "__main__":
  flags.DEFINE_string("out_dir", "sweep_out", "Where the data, the runs and sweep.md go.")
  flags.DEFINE_list("configs", [], "Flagfiles to train.")
  flags.DEFINE_list("seeds", ["0", "1", "2"], "Training seeds (--seed) of every config.")
  flags.DEFINE_list("extra_flagfiles", [], "Flagfiles applied on top of every config (e.g. "
                    "configs/size_tiny.flags).")
  cli.run(main)
