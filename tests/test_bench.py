"""`bench` runs on a tiny network and prints (and writes) the keys it promises. The timings
themselves are not checked: the benchmark is not a test."""

from __future__ import annotations

import json
import os

import pytest

from tests.conftest import REPO, run_module

TINY = ["--height=32", "--width=64", "--width_multiplier=0.0625", "--reference_size=32,64",
        "--steps=1", "--batch=2", "--memory_batch=2", "--data_examples=8", "--data_batches=2",
        "--conv_shape=1,8,8,16", "--latency_runs=1", "--precisions=off"]


def _lines(stdout: str) -> list:
  return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


def _check_output(proc, out: str, names: set, targets: set) -> None:
  lines = _lines(proc.stdout)
  assert "machine" in lines[0] and "cores" in lines[0]["machine"]
  printed = {l["name"]: l for l in lines if "name" in l}
  assert names <= set(printed), sorted(names - set(printed))
  assert all(l["value"] > 0 and l["unit"] for l in printed.values())
  printed_targets = {l["target"]: l for l in lines if "target" in l}
  assert set(printed_targets) == targets
  for t in printed_targets.values():
    assert t["status"] == ("PASS" if t["ratio"] >= 1 else "MISS")
  assert "elapsed_s" in lines[-1]
  with open(out) as f:
    written = json.load(f)
  assert [m["name"] for m in written["measurements"]] == [l["name"] for l in lines if "name" in l]
  assert {t["target"] for t in written["targets"]} == targets
  assert not [p for p in os.listdir(os.path.dirname(out)) if p != os.path.basename(out)]


@pytest.mark.slow  # 60 s on the shared 2-core machine (35 s of CPU): one SegNet trace
def test_bench_tiny_peak_reference_data(tmp_path):
  out = str(tmp_path / "bench" / "results.json")
  proc = run_module("sdmtcnn_tf.bench", *TINY, "--sections=peak,reference,profile,data,flops",
                    f"--profile_dir={tmp_path}/trace", f"--out={out}")
  names = {"conv_peak/fp32", "conv_peak/bf16", "reference/train_img_s/fp32",
           "reference/train_step_s/fp32", "reference/train_gflop_s/fp32",
           "reference/peak_fraction/fp32", "flops/reference/params",
           "flops/reference/forward_gflop", "data/img_s/1_threads", "profile/fp32/wall_s",
           "profile/fp32/op_s/total"}
  _check_output(proc, out, names, {"fp32_step_vs_conv_peak", "data_vs_train", "data_img_s"})
  op_types = [l["name"].rsplit("/", 1)[1] for l in _lines(proc.stdout)
              if l.get("name", "").startswith("profile/fp32/op_s/")]
  # the convolutions' backward kernels are in any CPU build's trace (Eigen or oneDNN names)
  assert any("Conv2DBackpropFilter" in t for t in op_types), op_types
  assert os.listdir(tmp_path / "trace" / "fp32" / "plugins" / "profile")  # --profile_dir kept


@pytest.mark.slow
def test_bench_tiny_train_latency_memory(tmp_path):
  out = str(tmp_path / "results.json")
  proc = run_module("sdmtcnn_tf.bench", *TINY, "--sections=train,latency,memory,flops",
                    "--configs=configs/cityscapes_sd_mtcnn_eq5_full.flags",
                    "--latency_configs=configs/nyuv2_sd_mtcnn_eq5_full.flags", f"--out={out}")
  label = "cityscapes_sd_mtcnn_eq5_full"
  names = {f"train_img_s/{label}/fp32", f"flops/{label}/teacher_params",
           f"flops/{label}/student_params", f"flops/{label}/student_forward_gflop",
           "latency_ms/nyuv2_sd_mtcnn_eq5_full/teacher",
           "latency_ms/nyuv2_sd_mtcnn_eq5_full/student", "memory/peak_rss_gib/tf"}
  _check_output(proc, out, names, {"student_latency/nyuv2_sd_mtcnn_eq5_full"})


def test_bench_refuses_unknown_sections(tmp_path):
  proc = run_module("sdmtcnn_tf.bench", "--sections=peak,warp", f"--out={tmp_path}/r.json",
                    check=False)
  assert proc.returncode == 1 and "--sections" in proc.stderr and "warp" in proc.stderr


@pytest.mark.slow  # 37 s here (TF + torch imports, two tiny nets)
def test_bench_compare_torch_times_the_same_network(tmp_path):
  pytest.importorskip("torch")  # requirements-bench.txt
  out = str(tmp_path / "results.json")
  proc = run_module("sdmtcnn_tf.bench", *TINY, "--sections=flops,memory", "--compare_torch",
                    "--precisions=off,mixed_bfloat16", f"--out={out}")
  _check_output(proc, out, {"torch/train_img_s/fp32", "torch/train_img_s/bf16", "torch/params",
                            "memory/peak_rss_gib/tf", "memory/peak_rss_gib/torch"},
                {"memory_vs_torch"})
  lines = {l["name"]: l for l in _lines(proc.stdout) if "name" in l}
  assert lines["torch/params"]["equal_to_ours"]
  assert lines["torch/params"]["value"] == 99325  # the reference at width 1/16
  # PyTorch's peak memory is PyTorch's alone: its child process never loads TensorFlow
  assert lines["memory/peak_rss_gib/torch"]["tensorflow_loaded"] is False


def test_auto_precisions_time_bf16_only_on_bf16_hardware():
  from sdmtcnn_tf import bench
  assert bench.resolve_precisions(["auto"], {"amx": True}) == ["off", "mixed_bfloat16"]
  assert bench.resolve_precisions(["auto"], {"amx": False, "avx512_bf16": True}) == [
      "off", "mixed_bfloat16"]
  assert bench.resolve_precisions(["auto"], {"amx": False, "avx512_bf16": False}) == ["off"]
  assert bench.resolve_precisions(["mixed_float16", "auto"], {}) == ["mixed_float16", "off"]


def test_op_types_of_trace_event_names():
  from sdmtcnn_tf import profile_ops
  assert profile_ops.op_type("model/enc1_1_conv/Conv2D:_FusedConv2D") == "_FusedConv2D"
  assert profile_ops.op_type("Adam/AssignSubVariableOp:AssignSubVariableOp#id=3,step=1#") == (
      "AssignSubVariableOp")
  assert profile_ops.op_type("ExecutorState::Process") is None
  assert profile_ops.op_type("ParallelFor") is None


def test_self_seconds_leave_out_nested_ops():
  from sdmtcnn_tf import profile_ops
  ps = 10 ** 12  # picoseconds per second
  events = [  # (start, duration, name) on one thread, out of order
      (20 * ps, 30 * ps, "a/b:Conv2D"),                  # in Call, through an envelope
      (0, 100 * ps, "f:PartitionedCall"),
      (10 * ps, 60 * ps, "ExecutorState::Process"),     # envelope: not an op
      (60 * ps, 5 * ps, "c:Relu"),                      # in the envelope, after Conv2D
      (100 * ps, 30 * ps, "d:Conv2D"),                   # starts as Call ends
      (200 * ps, 10 * ps, "ParallelFor"),               # an envelope alone counts nowhere
      (202 * ps, 4 * ps, "e:Mul"),                      # an op in it, no op around it
  ]
  seconds = profile_ops.self_seconds(events)
  assert dict(seconds) == {"PartitionedCall": 65.0, "Conv2D": 60.0, "Relu": 5.0, "Mul": 4.0}


def test_usable_cpus_follow_the_affinity_mask():
  """`taskset -c 0` gives a process one CPU whatever the machine has: bench and its PyTorch
  side size their thread pools by it."""
  import shutil
  import subprocess
  import sys
  if not shutil.which("taskset"):
    pytest.skip("no taskset")
  proc = subprocess.run(["taskset", "-c", "0", sys.executable, "-c",
                         "from sdmtcnn_tf import hardware; print(hardware.usable_cpus())"],
                        capture_output=True, text=True, check=True, cwd=REPO)
  assert proc.stdout.strip() == "1"


def test_interleaved_timings_take_the_calls_in_turn():
  from sdmtcnn_tf import timing
  order = []
  times = timing.interleaved_seconds({"teacher": lambda: order.append("t"),
                                      "student": lambda: order.append("s")}, rounds=3)
  assert order == ["t", "s"] * 3
  assert {k: len(v) for k, v in times.items()} == {"teacher": 3, "student": 3}
  assert all(s >= 0 for v in times.values() for s in v)
