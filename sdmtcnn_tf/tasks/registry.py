"""The task registry: name -> Task subclass, in registration order (the canonical task order).

    @registry.register
    class Saliency(RegressionTask):
      name = "saliency"

makes `--tasks=...,saliency` work everywhere (records, pipeline, model, losses, metrics,
evaluation, export) with no other change.
"""

from __future__ import annotations

from sdmtcnn_tf.tasks.base import Task

_TASKS: dict = {}


def register(cls: type) -> type:
  """Class decorator: adds a Task subclass under `cls.name` (re-registering a name replaces
  it, so a test may redefine its toy task)."""
  if not (isinstance(cls, type) and issubclass(cls, Task)) or not cls.name:
    raise TypeError(f"register expects a Task subclass with a name, got {cls!r}")
  _TASKS[cls.name] = cls
  return cls


def unregister(name: str) -> None:
  """Removes task `name` (a test's toy task) from the registry."""
  _TASKS.pop(name, None)


def names() -> tuple:
  """Every registered task name, in registration order."""
  return tuple(_TASKS)


def task_class(name: str) -> type:
  """The Task subclass registered as `name`; ValueError naming the known tasks otherwise."""
  if name not in _TASKS:
    raise ValueError(f"unknown task {name!r}; expected one of {', '.join(_TASKS)}")
  return _TASKS[name]


def canonical(task_names) -> tuple:
  """`task_names` in registration order; ValueError on an unknown or repeated name."""
  task_names = list(task_names)
  unknown = [n for n in task_names if n not in _TASKS]
  if unknown:
    raise ValueError(f"unknown task(s) {unknown}; expected names from {', '.join(_TASKS)}")
  repeated = sorted({n for n in task_names if task_names.count(n) > 1})
  if repeated:
    raise ValueError(f"repeated task(s) {repeated} in {task_names}")
  return tuple(n for n in _TASKS if n in task_names)


def from_config(cfg) -> tuple:
  """The Task objects of `cfg.data.tasks` as `cfg` configures them, in canonical order."""
  return tuple(task_class(n).from_config(cfg) for n in canonical(cfg.data.tasks))
