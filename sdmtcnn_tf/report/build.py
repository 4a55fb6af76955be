"""Reads the runs, groups them and writes `report.md`, `report.csv` and `curves.png` into one
folder (each file atomically). `python -m sdmtcnn_tf.report` is this with flags."""

from __future__ import annotations

import dataclasses
import os

from sdmtcnn_tf import atomic
from sdmtcnn_tf.report import curves as curves_lib
from sdmtcnn_tf.report import paper_tables, table
from sdmtcnn_tf.report import runs as runs_lib

MARKDOWN, CSV, CURVES = "report.md", "report.csv", "curves.png"

_DEFINITION_NOTES = {
    "paper": "the paper's definitions: MTAN-2019 legacy metrics (`*_legacy`: per batch of "
             "--legacy_batch_size images, equal weight per batch) where the task has one; "
             "normals cos, keypoints and edges as ours",
    "primary": "our primary definitions (global confusion matrix, every valid pixel of the "
               "split; independent of the batch size)",
}


@dataclasses.dataclass
class Report:
  """What `write` made: the groups and rows, the markdown, and the files written."""

  groups: list
  rows: list
  columns: list
  markdown: str
  files: list


def summary(groups, definitions: str = "paper", baseline: str = "", references=()):
  """(rows, columns, markdown table, notes) of `groups` (see table.py)."""
  cols = table.columns(groups, definitions)
  rows = table.build_rows(groups, cols, baseline)
  dataset = groups[0].cfg.data.dataset
  with_paper = paper_tables.has_paper(dataset)
  text = table.markdown(rows, cols, references, with_paper)
  notes = [f"Mean ± sample std over each row's runs (n; the seeds differ), "
           f"{_DEFINITION_NOTES[definitions]}."]
  if with_paper:
    notes.append(f"(paper): the supplementary's {paper_tables.title(dataset)}, the row of the "
                 "same method, backbone, equation and role; the paper trained at full size.")
  bases = sorted({r.baseline.name for r in rows if r.baseline is not None})
  if bases:
    notes.append("Δm %: the multi-task gain (LibMTL) of each run against the mean of Baseline-1 "
                 f"({', '.join(f'`{b}`' for b in bases)}, teacher) over the columns, "
                 "each metric's direction from its task; mean ± std over the row's runs"
                 + ("; Δm % (paper): the paper's row against the paper's Baseline-1, over the "
                    "same columns where the paper has them" if with_paper else "") + ".")
  else:
    notes.append("No Δm: no Baseline-1 (vanilla, --distill=none) group among the runs "
                 "(--baseline=NAME picks another group).")
  return rows, cols, text, notes


def write(run_dirs, out_dir: str, skip_incomplete: bool = False, baseline: str = "",
          definitions: str = "paper", curves: bool | None = None, warn=print) -> Report:
  """The report of the runs in or under `run_dirs` into `out_dir`. `curves`: True requires
  matplotlib, None writes them when matplotlib is installed, False never."""
  if definitions not in table.DEFINITIONS:
    raise ValueError(f"--definitions={definitions}: expected one of "
                     f"{', '.join(table.DEFINITIONS)}")
  if curves and not curves_lib.available():
    raise ValueError("--curves needs matplotlib, which is not installed (pip install -r "
                     "requirements.txt)")
  runs = runs_lib.load(run_dirs, skip_incomplete, warn)
  groups = runs_lib.group(runs)
  rows, cols, text, notes = summary(groups, definitions, baseline)
  dataset = groups[0].cfg.data.dataset
  files = []
  curves_note = ""
  if curves is False:
    pass
  elif not curves_lib.available():
    curves_note = "No curves: matplotlib is not installed."
  else:
    path = os.path.join(out_dir, CURVES)
    if curves_lib.write(groups, path, definitions, warn):
      files.append(path)
      curves_note = (f"![validation curves]({CURVES})\n\nValidation metrics per epoch "
                     "(results/history.csv), mean over the seeds and ± std band.")
    else:
      curves_note = ("No curves: no run has validation values in results/history.csv (a run "
                     "validated only after training, e.g. --validation_freq beyond --epochs).")
      warn(f"curves: {curves_note[len('No curves: '):]}")
  parts = [f"# Report: {dataset}, {len(runs)} runs in {len(groups)} groups", "", text, ""]
  parts += [f"- {n}" for n in notes] + [""]
  if curves_note:
    parts += [curves_note, ""]
  parts += ["## Runs", ""]
  for g in groups:
    parts.append(f"- `{g.name}` (seeds {', '.join(map(str, g.seeds))}): "
                 + ", ".join(f"`{r.path}`" for r in g.runs))
  markdown = "\n".join(parts) + "\n"
  md_path, csv_path = os.path.join(out_dir, MARKDOWN), os.path.join(out_dir, CSV)
  atomic.write_text(md_path, markdown, label="report")
  atomic.write_text(csv_path, table.csv_text(rows, cols, paper_tables.has_paper(dataset)),
                    label="report")
  return Report(groups, rows, cols, markdown, [md_path, csv_path] + files)
