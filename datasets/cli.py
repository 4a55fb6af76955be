"""Flags and the entry point shared by the dataset converters (`python -m datasets.<name>`).

Flags live in a fresh `absl.flags.FlagValues` per call (`build_flags`), not in the global
FLAGS: several converters can run in one process (tests) and a second call never sees the
first call's values.
"""

from __future__ import annotations

import sys
from typing import Callable, Sequence

from absl import flags

from sdmtcnn_tf import tasks as tasks_lib

from datasets.reading import ConversionError


def define_common_flags(fv: flags.FlagValues) -> None:
  """Flags every converter has: --src, --out_dir, --num_workers, --num_shards, ..."""
  flags.DEFINE_string("src", None, "Source dataset folder.", flag_values=fv)
  flags.DEFINE_string("out_dir", None, "Output folder for the shards and manifest.json.",
                      flag_values=fv)
  flags.DEFINE_integer("num_workers", 0, "Decoding processes; 0 = one per CPU core, 1 = no "
                       "pool (decode in this process).", flag_values=fv)
  flags.DEFINE_integer("num_shards", 0, "Shards per split; 0 = about one per 128 MiB of "
                       "records (never more shards than examples).", flag_values=fv)
  flags.DEFINE_bool("overwrite", False, "Redo the conversion even if out_dir already holds a "
                    "complete one, one made from other parameters, or a corrupt "
                    "manifest.json (without it these stop with an error).", flag_values=fv)
  flags.DEFINE_bool("skip_bad", False, "Skip unreadable or invalid examples instead of "
                    "stopping; each is listed (path + reason) in manifest extra['skipped'].",
                    flag_values=fv)
  flags.mark_flag_as_required("src", flag_values=fv)
  flags.mark_flag_as_required("out_dir", flag_values=fv)


def parse_flags(fv: flags.FlagValues, argv: Sequence[str]) -> flags.FlagValues:
  """Parses argv (argv[0] = program name) into `fv`.

  Raises:
    SystemExit(0) after printing the help for --help / -h / --helpfull; SystemExit(2) with
    the flag's name on stderr for an unknown flag, a bad value or a missing required flag.
  """
  argv = list(argv)
  if any(a in ("-h", "--help", "--helpfull", "-help") for a in argv[1:]):
    print(fv.get_help())
    raise SystemExit(0)
  try:
    rest = fv(argv)
  except flags.Error as e:
    print(f"error: {e}\nPass --help for the flags.", file=sys.stderr)
    raise SystemExit(2) from e
  if len(rest) > 1:
    print(f"error: unexpected positional argument(s) {rest[1:]}", file=sys.stderr)
    raise SystemExit(2)
  return fv


def list_flag(values: Sequence[str] | None) -> list:
  """A `DEFINE_list` flag's value without blank entries: ['a', 'b', '', 'c'] -> ['a', 'b', 'c'].

  absl splits `--flag=a, b,,c` into ['a', 'b', '', 'c'] and `--flag=` into [].
  """
  return [v.strip() for v in (values or ()) if v.strip()]


def parse_tasks(values: Sequence[str], allowed: Sequence[str]) -> tuple:
  """The --tasks list flag -> tuple of task names in the canonical tasks.ALL_TASKS order."""
  names = list_flag(values)
  value = ",".join(values or ())  # the flag as given (absl strips spaces around entries)
  bad = [n for n in names if n not in allowed]
  if not names or bad:
    raise ValueError(f"--tasks={value!r}: expected a comma list from {', '.join(allowed)}")
  if len(set(names)) != len(names):
    raise ValueError(f"--tasks={value!r} names a task twice")
  return tuple(t for t in tasks_lib.ALL_TASKS if t in names)


def cli_main(build_flags: Callable[[], flags.FlagValues], run: Callable[[flags.FlagValues], object],
             argv: Sequence[str]) -> int:
  """Parses flags, runs the converter; returns the process exit status.

  A ConversionError or ValueError (bad input or bad flag combination) prints one line naming
  the file or flag and returns 1; flag syntax errors exit 2 (see parse_flags).
  """
  fv = parse_flags(build_flags(), argv)
  try:
    run(fv)
  except (ConversionError, ValueError, FileNotFoundError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  return 0
