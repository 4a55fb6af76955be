"""What this machine offers the benchmarks: the CPUs this process may use and their features.

No TensorFlow import: bench's PyTorch child uses it too.
"""

from __future__ import annotations

import contextlib
import os
import platform


def usable_cpus() -> int:
  """CPUs this process may run on: its affinity mask (taskset, a container's cpuset), which is
  what TensorFlow sizes its thread pools by, not the machine's `os.cpu_count()`."""
  return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def cpu_info() -> dict:
  """{"cpu": model name, "cores": usable_cpus(), "amx", "avx512_bf16", "avx512": bool} from
  /proc/cpuinfo (all False where it cannot be read)."""
  cpu, features = platform.processor(), set()
  with contextlib.suppress(OSError):
    with open("/proc/cpuinfo") as f:
      info = f.read()
    cpu = next((l.split(":", 1)[1].strip() for l in info.splitlines()
                if l.startswith("model name")), cpu)
    features = set(info.split())
  return {"cpu": cpu, "cores": usable_cpus(), "amx": "amx_bf16" in features,
          "avx512_bf16": "avx512_bf16" in features, "avx512": "avx512f" in features}
