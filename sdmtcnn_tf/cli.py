"""What every CLI shares: quiet logs, one `error:` line per failure, and `--traceback`.

A CLI's `main(argv)` raises; `cli.run(main)` turns the errors a user can fix (bad flags, missing
or corrupt files, a diverged run, a full disk, a locked run directory) into one line on stderr
naming the flag or file, and exit status 1. `--traceback` prints the full traceback instead
(for bug reports). Any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import os
import sys
import traceback

# Before TensorFlow is imported: hide the C++ INFO lines (oneDNN notice, CPU feature guard).
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags  # noqa: E402

from sdmtcnn_tf.logs import quiet_logs  # noqa: E402

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


def run(main) -> None:
  """`app.run(main)` with one-line errors (see the module docstring)."""
  define_flags()

  def guarded(argv):
    quiet_logs()
    try:
      return main(argv)
    except user_errors() as e:
      if flags.FLAGS.traceback:
        raise
      sys.stdout.flush()
      message = str(e).strip() or type(e).__name__
      print(f"\nerror: {message} (--traceback shows where)", file=sys.stderr)
      sys.exit(1)
    except KeyboardInterrupt:
      print("\ninterrupted", file=sys.stderr)
      sys.exit(130)

  app.run(guarded)


def check_no_arguments(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
