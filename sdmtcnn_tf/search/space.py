"""The search space: config flags and the values a search tries for each.

By default it is the method's (`Method.search_space`: e.g. SD-MTCNN ⋆ tunes alpha, temperature,
hint_weight and learning_rate). `--search_space=FILE` (JSON) replaces it: one entry per flag,

    {"alpha": {"min": 0.2, "max": 0.5},
     "temperature": {"min": 1, "max": 4, "log": true},
     "optimizer": {"values": ["adam", "sgd"]},
     "hint_levels": {"values": [[5], [4, 5]]}}

A range (`min`, `max`, optional `log`) needs a numeric flag; an int flag samples integers. An
entry that leaves out `min`, `max` or `log` takes it from the method's default entry of that
name, so `{"alpha": {"max": 0.5}}` narrows alpha to [0.1, 0.5] (and tunes nothing else).
`values` lists the choices (for a list flag such as --hint_levels, each choice is a list).
Values are in the flag's own units. Everything is checked against the config before any
training (`load`, `check`): each problem is one ValueError naming the file and the entry.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import os

from sdmtcnn_tf import methods
from sdmtcnn_tf.methods.base import Hyperparameter

__all__ = ["Hyperparameter", "default", "load", "check", "declare", "config_values"]

# Set per trial by the search itself, never searched.
NOT_SEARCHED = ("model_dir",)
_ENTRY_KEYS = ("min", "max", "log", "values")


def default(cfg) -> tuple:
  """The method's default space for `cfg` (checked like a file's)."""
  space = tuple(methods.get(cfg.method.name).search_space(cfg))
  return check(space, cfg, f"the default search space of --method={cfg.method.name}")


def load(path: str, cfg) -> tuple:
  """Reads and checks the JSON search space `path` for the base config `cfg`."""
  if not os.path.exists(path):
    raise FileNotFoundError(f"--search_space={path} does not exist")
  try:
    with open(path) as f:
      raw = json.load(f)
  except (OSError, ValueError) as e:
    raise ValueError(f"search space {path}: not readable as JSON ({e})") from None
  if not isinstance(raw, dict) or not raw:
    raise ValueError(f"search space {path}: expected a JSON object with one entry per flag, "
                     f'e.g. {{"alpha": {{"min": 0.1, "max": 0.9}}}}')
  defaults = {h.name: h for h in methods.get(cfg.method.name).search_space(cfg)}
  space = []
  for name, entry in raw.items():
    where = f"search space {path}: entry {name!r}"
    _check_name(name, cfg, f"search space {path}")
    if not isinstance(entry, dict) or set(entry) - set(_ENTRY_KEYS):
      raise ValueError(f"{where}: expected an object with keys among {', '.join(_ENTRY_KEYS)}, "
                       f"got {entry!r}")
    if "values" in entry:
      if set(entry) != {"values"}:
        raise ValueError(f"{where}: give either values or min/max/log, not both")
      values = entry["values"]
      if not isinstance(values, list) or not values:
        raise ValueError(f"{where}: values must be a non-empty list, got {values!r}")
      space.append(Hyperparameter(name, values=tuple(
          tuple(v) if isinstance(v, list) else v for v in values)))
      continue
    base = defaults.get(name, Hyperparameter(name))
    space.append(Hyperparameter(name, entry.get("min", base.min), entry.get("max", base.max),
                                bool(entry.get("log", base.log))))
  return check(tuple(space), cfg, f"search space {path}")


def check(space: tuple, cfg, source: str) -> tuple:
  """Raises ValueError (naming `source` and the entry) unless every entry of `space` names a
  config flag and every value it can take passes the config's validation."""
  flat = cfg.to_json()
  seen = set()
  for h in space:
    _check_name(h.name, cfg, source)
    where = f"{source}: entry {h.name!r}"
    if h.name in seen:
      raise ValueError(f"{where} is given twice")
    seen.add(h.name)
    current = flat[h.name]
    if h.values:
      kinds = {type(v) for v in h.values}
      if len(kinds) > 1:
        raise ValueError(f"{where}: values mix types {sorted(k.__name__ for k in kinds)}")
      if isinstance(current, list) and not all(isinstance(v, tuple) for v in h.values):
        raise ValueError(f"{where}: --{h.name} is a list flag; each value must be a list, "
                         f"e.g. [[5], [4, 5]]")
      if len(set(h.values)) != len(h.values):
        raise ValueError(f"{where}: a value is listed twice in {list(h.values)}")
      tried = h.values
    else:
      if isinstance(current, bool) or not isinstance(current, (int, float)):
        raise ValueError(f"{where}: a min/max range needs a numeric flag; --{h.name} is "
                         f"{type(current).__name__}: list its choices as \"values\"")
      if h.min is None or h.max is None:
        raise ValueError(f"{where}: needs min and max (or values)")
      if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                 for v in (h.min, h.max)):
        raise ValueError(f"{where}: min and max must be finite numbers, got {h.min!r}, "
                         f"{h.max!r}")
      if h.min > h.max:
        raise ValueError(f"{where}: min {h.min:g} > max {h.max:g}")
      if h.log and h.min <= 0:
        raise ValueError(f"{where}: a log range must lie above 0, got [{h.min:g}, {h.max:g}] "
                         "(drop \"log\" or raise min)")
      if isinstance(current, int) and not (float(h.min).is_integer()
                                           and float(h.max).is_integer()):
        raise ValueError(f"{where}: --{h.name} is an integer flag; min and max must be "
                         f"integers, got {h.min!r}, {h.max!r}")
      tried = (h.min, h.max)
    for value in tried:
      try:
        cfg.replace(**{h.name: _typed(value, current)})
      except (TypeError, ValueError) as e:
        raise ValueError(f"{where}: the config rejects {h.name}={_show(value)} ({e})") from None
  return space


def declare(space: tuple, cfg, hp) -> None:
  """Declares `space` on a keras_tuner.HyperParameters `hp` (list values as comma strings:
  Keras Tuner's choices are scalars)."""
  flat = cfg.to_json()
  for h in space:
    if h.values:
      hp.Choice(h.name, [_show(v) if isinstance(v, tuple) else v for v in h.values])
    elif isinstance(flat[h.name], int):
      hp.Int(h.name, int(h.min), int(h.max), sampling="log" if h.log else "linear")
    else:
      hp.Float(h.name, float(h.min), float(h.max), sampling="log" if h.log else "linear")


def config_values(space: tuple, cfg, values: dict) -> dict:
  """A trial's Keras Tuner values -> {flag: config value} for `cfg.replace` (the entries of
  `space` only; Keras Tuner's own "tuner/..." values are left out)."""
  flat = cfg.to_json()
  out = {}
  for h in space:
    if h.name not in values:
      continue
    value = values[h.name]
    if h.values and isinstance(flat[h.name], list):
      value = next(v for v in h.values if _show(v) == value)
    out[h.name] = _typed(value, flat[h.name])
  return out


def describe(h: Hyperparameter) -> str:
  """`alpha in [0.1, 0.9]`, `temperature in [1, 8] (log)`, `optimizer in {adam, sgd}`."""
  if h.values:
    return f"{h.name} in {{{', '.join(_show(v) for v in h.values)}}}"
  return f"{h.name} in [{h.min:g}, {h.max:g}]" + (" (log)" if h.log else "")


def _check_name(name, cfg, source: str) -> None:
  flat = cfg.to_json()
  if name in flat and name not in NOT_SEARCHED:
    return
  if name in NOT_SEARCHED:
    raise ValueError(f"{source}: {name!r} is set by the search itself and cannot be searched")
  close = difflib.get_close_matches(str(name), list(flat), n=3)
  hint = f"; did you mean {', '.join(close)}?" if close else ""
  raise ValueError(f"{source}: {name!r} is not a config flag (see --helpfull){hint}")


def _typed(value, current):
  """`value` as the config field holding `current` (its flat JSON form) stores it."""
  if isinstance(current, bool):
    if not isinstance(value, bool):
      raise TypeError(f"expected true or false, got {value!r}")
    return value
  if isinstance(current, int):
    if isinstance(value, bool) or not float(value).is_integer():
      raise TypeError(f"expected an integer, got {value!r}")
    return int(value)
  if isinstance(current, float):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
      raise TypeError(f"expected a number, got {value!r}")
    return float(value)
  if isinstance(current, list):
    return tuple(value)
  if not isinstance(value, str):
    raise TypeError(f"expected a string, got {value!r}")
  return value


def _show(value) -> str:
  if isinstance(value, tuple):
    return ",".join(map(str, value))
  return f"{value:g}" if isinstance(value, float) else str(value)


def as_dict(space: tuple) -> dict:
  """The space as JSON (recorded in <tune_dir>/search.json)."""
  return {h.name: {k: list(v) if isinstance(v, tuple) else v
                   for k, v in dataclasses.asdict(h).items() if k != "name"} for h in space}
