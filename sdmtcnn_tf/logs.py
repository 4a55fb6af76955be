"""Log noise control: the one home of what TensorFlow and absl may print on our commands' stderr.

TensorFlow prints, while `import tensorflow` loads its shared libraries and before absl's C++
logging is initialised, INFO lines that no log level hides (`TF_CPP_MIN_LOG_LEVEL` included):

    WARNING: All log messages before absl::InitializeLog() is called are written to STDERR
    I0000 00:00:... port.cc:153] oneDNN custom operations are on. ...
    I0000 00:00:... cpu_feature_guard.cc:227] This TensorFlow binary is optimized to use ...
    To enable the following instructions: AVX2 AVX512F ..., in other operations, rebuild ...

(the oneDNN notice twice per process on CPUs where oneDNN is on: Intel AVX-512/AMX by default,
any CPU with `TF_ENABLE_ONEDNN_OPTS=1`). `silence_tensorflow_startup()`, called by the package's
`__init__` before anything imports TensorFlow, wraps that first import: file descriptor 2 goes
to a temporary file while TensorFlow loads, then every captured line that is not one of these
INFO/WARNING records is written back to stderr (an ERROR record, a Python warning or a failed
import's traceback still shows). oneDNN itself stays as TensorFlow chose it.

`SDMTCNN_TF_VERBOSE=1` in the environment turns all of this off: TensorFlow's and absl's logs
come back unfiltered, as they are without this package (for debugging).
"""

from __future__ import annotations

import contextlib
import importlib.abc
import os
import re
import sys
import tempfile

VERBOSE_ENV = "SDMTCNN_TF_VERBOSE"

# absl's C++ log record prefix: severity letter, MMDD, time, thread id, file:line]
_ABSL_RECORD = re.compile(r"^([IWEF])\d{4} [\d:.]+\s+\d+ [^ \]]+:\d+\] ")
_PRE_INIT_NOTICE = "WARNING: All log messages before absl::InitializeLog() is called"
# the second line of cpu_feature_guard.cc's INFO record
_CPU_FEATURE_CONTINUATION = "To enable the following instructions:"


def verbose() -> bool:
  """Whether `SDMTCNN_TF_VERBOSE` asks for TensorFlow's logs (any value but '', '0', 'false')."""
  return os.environ.get(VERBOSE_ENV, "").strip().lower() not in ("", "0", "false", "no")


def is_startup_noise(line: str) -> bool:
  """Whether `line` (of TensorFlow's stderr while it is imported) is an INFO/WARNING record of
  its start-up, which we drop; ERROR/FATAL records and anything else are kept."""
  if line.startswith((_PRE_INIT_NOTICE, _CPU_FEATURE_CONTINUATION)):
    return True
  record = _ABSL_RECORD.match(line)
  return bool(record) and record.group(1) in "IW"


@contextlib.contextmanager
def _stderr_filtered_at_fd():
  """Sends file descriptor 2 to a temporary file for the block, then writes back the lines that
  are not start-up noise (all of them if the block raised)."""
  sys.stderr.flush()
  saved = os.dup(2)
  with tempfile.TemporaryFile() as captured:
    os.dup2(captured.fileno(), 2)
    failed = False
    try:
      yield
    except BaseException:
      failed = True
      raise
    finally:
      sys.stderr.flush()
      os.dup2(saved, 2)
      os.close(saved)
      captured.seek(0)
      text = captured.read().decode("utf-8", "replace")
      kept = [l for l in text.splitlines(keepends=True) if failed or not is_startup_noise(l)]
      if kept:
        sys.stderr.write("".join(kept))
        sys.stderr.flush()


class _QuietLoader(importlib.abc.Loader):
  """Runs the wrapped loader of the `tensorflow` package with stderr filtered."""

  def __init__(self, loader):
    self._loader = loader

  def create_module(self, spec):
    return self._loader.create_module(spec)

  def exec_module(self, module):
    with _stderr_filtered_at_fd():
      self._loader.exec_module(module)


class _QuietTensorFlowFinder(importlib.abc.MetaPathFinder):
  """Finds `tensorflow` the normal way, once, and hands back its spec with a `_QuietLoader`."""

  def find_spec(self, fullname, path=None, target=None):
    if fullname != "tensorflow":
      return None
    sys.meta_path.remove(self)  # one use: the normal finders take over from here
    import importlib.util
    spec = importlib.util.find_spec(fullname)
    if spec is not None and spec.loader is not None:
      spec.loader = _QuietLoader(spec.loader)
    return spec


def silence_tensorflow_startup() -> None:
  """Hides TensorFlow's start-up INFO lines (module docstring) unless `SDMTCNN_TF_VERBOSE` is
  set. Call it before TensorFlow is imported; after that it changes nothing. Idempotent."""
  if verbose():
    return
  # C++ INFO/WARNING records after start-up (retracing notices, CPU feature lines of libraries
  # loaded later) are hidden by TensorFlow's own level.
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  if "tensorflow" in sys.modules:
    return
  if not any(isinstance(f, _QuietTensorFlowFinder) for f in sys.meta_path):
    sys.meta_path.insert(0, _QuietTensorFlowFinder())


def quiet_logs() -> None:
  """Hides TensorFlow's Python INFO chatter (SavedModel writing, retracing) but keeps warnings;
  with `SDMTCNN_TF_VERBOSE` set it leaves the logs as they are."""
  if verbose():
    return
  import tensorflow as tf
  from absl import logging
  logging.set_verbosity(logging.WARNING)
  tf.get_logger().setLevel("ERROR")
