"""Where a step's time goes: a `tf.profiler` trace summed by TensorFlow op type (issue 11).

`trace(step, steps, logdir)` records `steps` calls of `step` with the TensorFlow profiler (the
trace TensorBoard's profile plugin opens: `<logdir>/plugins/profile/<run>/<host>.xplane.pb`);
`op_seconds(logdir)` reads it back and sums each op type's *self* time over all host threads,
so the total can exceed the wall time on several cores. An op's self time leaves out the ops
nested inside it (a function-call op's body, say); envelopes that are not ops (the executor's
`ExecutorState::Process`, thread-pool `ParallelFor`s) count towards the op that encloses them.
"""

from __future__ import annotations

import collections
import glob
import os
import re

import tensorflow as tf

# An op kernel's trace event is "<op name>:<OpType>", optionally followed by "#key=value,...#".
_OP_EVENT = re.compile(r"^[^:#]+:([A-Za-z_][A-Za-z0-9_]*)(#.*#)?$")


def trace(step, steps: int, logdir: str) -> None:
  """Calls `step()` `steps` times under the TensorFlow profiler, writing the trace to `logdir`.

  Call `step` at least once before (tracing and first-call allocation are not what a steady
  step costs)."""
  options = tf.profiler.experimental.ProfilerOptions(host_tracer_level=2, python_tracer_level=0,
                                                     device_tracer_level=1)
  tf.profiler.experimental.start(logdir, options=options)
  try:
    for _ in range(steps):
      step()
  finally:
    tf.profiler.experimental.stop()


def op_type(event_name: str):
  """The op type of a trace event's name, or None when the event is not an op kernel."""
  match = _OP_EVENT.match(event_name)
  return match.group(1) if match else None


def self_seconds(events) -> collections.Counter:
  """Self seconds by op type of one thread's events, `events` = [(start_ps, duration_ps,
  name)]: each op's duration minus that of the ops nested in it (through envelopes too)."""
  totals = collections.Counter()
  stack = []  # open events: [end_ps, start_ps, op type or None, nested op ps]

  def close(until_ps):
    while stack and stack[-1][0] <= until_ps:
      end, start, kind, nested = stack.pop()
      if kind is not None:
        totals[kind] += (end - start - nested) / 1e12
      handed_on = end - start if kind is not None else nested
      if stack:
        stack[-1][3] += handed_on

  for start, duration, name in sorted(events, key=lambda e: (e[0], -e[1])):
    close(start)
    stack.append([start + duration, start, op_type(name), 0])
  close(float("inf"))
  return totals


def op_seconds(logdir: str) -> collections.Counter:
  """Self seconds by op type, summed over the host threads of the newest trace under `logdir`
  (the profiler names each run's folder by its start time)."""
  from tensorflow.tsl.profiler.protobuf import xplane_pb2
  runs = sorted(glob.glob(os.path.join(logdir, "plugins", "profile", "*", "")))
  paths = glob.glob(os.path.join(runs[-1], "*.xplane.pb")) if runs else []
  if not paths:
    raise FileNotFoundError(f"{logdir}: no plugins/profile/<run>/*.xplane.pb trace")
  totals = collections.Counter()
  for path in paths:
    space = xplane_pb2.XSpace()
    with open(path, "rb") as f:
      space.ParseFromString(f.read())
    for plane in space.planes:
      if not plane.name.startswith("/host:"):
        continue
      names = {key: meta.name for key, meta in plane.event_metadata.items()}
      for line in plane.lines:
        totals += self_seconds([(e.offset_ps, e.duration_ps, names.get(e.metadata_id, ""))
                                for e in line.events])
  return totals
