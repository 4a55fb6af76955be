"""Wall-clock timing of repeated calls, the one loop bench, bench_torch and edge time with.

No TensorFlow import: bench's PyTorch side uses it too.
"""

from __future__ import annotations

import statistics
import time


def call_seconds(call, calls: int) -> list:
  """Seconds of each of `calls` successive calls of `call()` (the first ones include tracing
  and first-call allocation: callers decide how many to leave out)."""
  times = []
  for _ in range(calls):
    start = time.perf_counter()
    call()
    times.append(time.perf_counter() - start)
  return times


def median_after(times: list, warmup: int) -> float:
  """The median of `times` without its first `warmup` entries."""
  return statistics.median(times[warmup:])
