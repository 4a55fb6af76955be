"""The multi-task gain Δm (LibMTL's `count_improvement`), in one place.

    Δm = mean over tasks t of  mean over t's compared metrics m of  s_m (M_m - B_m) / B_m × 100

in percent, higher is better; s_m = +1 when the metric is better higher, −1 when lower (the
direction comes from the task: `Task.primary_metrics`). Used by the search objective
(`search/objective.py`: a trial against a Baseline-1 run, over every primary metric) and by the
report (`report/table.py`: each row against Baseline-1, over the report's columns).
"""

from __future__ import annotations

import math


def delta_m(pairs) -> float:
  """pairs: iterable of (task name, value M, baseline value B, higher_is_better) -> Δm in
  percent; NaN when there is no pair, or a value or baseline value is missing (None), not
  finite, or the baseline value is 0 (Δm divides by it)."""
  per_task: dict = {}
  for task, value, base, higher in pairs:
    if value is None or base is None or not math.isfinite(value) or not math.isfinite(base) \
        or base == 0:
      return float("nan")
    per_task.setdefault(task, []).append((1.0 if higher else -1.0) * (value - base) / base)
  if not per_task:
    return float("nan")
  return 100.0 * sum(sum(g) / len(g) for g in per_task.values()) / len(per_task)
