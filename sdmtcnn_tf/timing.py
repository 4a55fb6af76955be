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


def interleaved_seconds(calls: dict, rounds: int) -> dict:
  """{name: seconds of each of `rounds` calls of calls[name]()}, the calls taken in turn (one of
  each per round), so a machine that slows down or speeds up while they run moves every entry
  alike: what to use when the ratio of two timings is the result."""
  times = {name: [] for name in calls}
  for _ in range(rounds):
    for name, call in calls.items():
      times[name].extend(call_seconds(call, 1))
  return times
