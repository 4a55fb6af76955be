"""What every CLI shares: quiet logs, one `error:` line per failure, and `--traceback`.

A CLI's `main(argv)` raises; `cli.run(main)` turns the errors a user can fix (bad flags, missing
or corrupt files, a diverged run, a full disk, a locked run directory) into one line on stderr
naming the flag or file, and exit status 1. `--traceback` prints the full traceback instead
(for bug reports). Any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import sys

from absl import app, flags

from sdmtcnn_tf.logs import quiet_logs

_TRACEBACK_HELP = "On an error, print the full traceback, not just the one-line message."


def define_flags(flag_values=flags.FLAGS) -> None:
  """Defines --traceback (idempotent)."""
  if "traceback" not in flag_values:
    flags.DEFINE_bool("traceback", False, _TRACEBACK_HELP, flag_values=flag_values)


def user_errors() -> tuple:
  """The exception types that mean "the input is wrong", not "the code is wrong"."""
  from sdmtcnn_tf import callbacks, rundir
  from sdmtcnn_tf.data import schema
  return (ValueError, OSError, schema.SchemaError, callbacks.NonFiniteLossError,
          rundir.RunDirectoryError)


def fail(message: str, hint: str = "--traceback shows where") -> None:
  """Prints `error: <message> (<hint>)` as the one line on stderr and exits with status 1.

  The line starts on a fresh line of the terminal: when stdout is one, a Keras progress bar may
  have left its cursor mid-line, so stdout gets the line break (stderr keeps exactly one line).
  """
  sys.stdout.flush()
  if sys.stdout.isatty():
    print(file=sys.stdout, flush=True)
  message = " ".join(message.split())
  print(f"error: {message} ({hint})", file=sys.stderr)
  sys.exit(1)


def parse_flags(argv):
  """absl's flag parsing with a bad flag (unknown name, bad value, missing required flag) as one
  error line naming it, instead of absl's `FATAL Flags parsing error` and its second line."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    fail(str(e), "--helpshort lists the flags")


def run(main) -> None:
  """`app.run(main)` with one-line errors (see the module docstring)."""
  define_flags()

  def guarded(argv):
    quiet_logs()
    try:
      return main(argv)
    except app.UsageError as e:
      fail(str(e), "--helpshort lists the flags")
    except user_errors() as e:
      if flags.FLAGS.traceback:
        raise
      fail(str(e).strip() or type(e).__name__)
    except KeyboardInterrupt:
      print("\ninterrupted", file=sys.stderr)
      sys.exit(130)

  app.run(guarded, flags_parser=parse_flags)


def check_no_arguments(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
