"""`bench --compare_torch`: MTAN's split SegNet in PyTorch (its `model_segnet_split.py`), timed
the way bench times ours. Needs torch (requirements-bench.txt), never a runtime dependency.

The network: VGG-16-BN encoder (conv-BN-ReLU, 2x2 max-pool with indices), one shared mirrored
decoder (MaxUnpool2d with those indices), MTAN's heads (3x3 conv C->C, then 1x1 conv) for
semseg (log-softmax), depth and normals (unit vectors), NCHW as MTAN runs it. Its parameter
count must equal ours (bench checks it).

It imports no TensorFlow, so that its peak-memory child (`python -m sdmtcnn_tf.bench_torch
'<Reference as JSON>' <batch>`, run by bench) counts PyTorch's memory alone.
"""

from __future__ import annotations

import dataclasses
import json
import resource
import sys

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from sdmtcnn_tf import hardware, timing
from sdmtcnn_tf.models import segnet

TASK_CHANNELS = {"semseg": None, "depth": 1, "normals": 3}  # None: the number of classes


def _conv(cin: int, cout: int) -> nn.Sequential:
  return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout),
                       nn.ReLU(inplace=True))


class SplitSegNet(nn.Module):
  """image [B, 3, H, W] -> {task: [B, C_task, H, W]} (semseg log-probabilities, depth, unit
  normals). `filters`: the 5 encoder widths (64..512 scaled)."""

  def __init__(self, filters, tasks: dict):
    super().__init__()
    self.encoder = nn.ModuleList()
    cin = 3
    for f, n in zip(filters, segnet.ENCODER_CONVS):
      self.encoder.append(nn.Sequential(*[_conv(cin if i == 0 else f, f) for i in range(n)]))
      cin = f
    out = segnet.decoder_channels(filters)
    self.decoder = nn.ModuleList()
    for level in reversed(segnet.LEVELS):  # decoder stage 5 first
      convs = [_conv(cin, out[level])]
      convs += [_conv(out[level], out[level])
                for _ in range(segnet.DECODER_EXTRA_CONVS[level - 1])]
      self.decoder.append(nn.Sequential(*convs))
      cin = out[level]
    self.heads = nn.ModuleDict({name: nn.Sequential(nn.Conv2d(cin, cin, 3, padding=1),
                                                    nn.Conv2d(cin, channels, 1))
                                for name, channels in tasks.items()})

  def forward(self, x):
    indices, sizes = [], []
    for stage in self.encoder:
      x = stage(x)
      sizes.append(x.shape[-2:])
      x, index = F.max_pool2d(x, 2, 2, return_indices=True)
      indices.append(index)
    for stage in self.decoder:
      x = F.max_unpool2d(x, indices.pop(), 2, 2, output_size=sizes.pop())
      x = stage(x)
    outputs = {name: head(x) for name, head in self.heads.items()}
    if "semseg" in outputs:
      outputs["semseg"] = F.log_softmax(outputs["semseg"], dim=1)
    if "normals" in outputs:
      outputs["normals"] = outputs["normals"] / outputs["normals"].norm(p=2, dim=1, keepdim=True)
    return outputs


@dataclasses.dataclass(frozen=True)
class Reference:
  """What the PyTorch side takes of bench's reference config (plain values: no TensorFlow)."""
  tasks: tuple
  num_classes: int
  height: int
  width: int
  width_multiplier: float
  seed: int
  learning_rate: float

  @classmethod
  def of(cls, cfg) -> "Reference":
    """From an ExperimentConfig (bench.reference_config)."""
    return cls(tuple(cfg.data.tasks), cfg.data.num_classes, cfg.data.height, cfg.data.width,
               cfg.model.width_multiplier, cfg.run.seed, cfg.optim.learning_rate)


def build(ref: Reference) -> SplitSegNet:
  """The reference network: its tasks, classes and width."""
  torch.manual_seed(ref.seed)
  tasks = {t: TASK_CHANNELS[t] or ref.num_classes for t in ref.tasks}
  return SplitSegNet(segnet.scaled_filters(ref.width_multiplier), tasks)


def count_params(ref: Reference) -> int:
  return sum(p.numel() for p in build(ref).parameters())


def _batch(ref: Reference, batch: int):
  rng = np.random.default_rng(0)
  h, w = ref.height, ref.width
  image = torch.from_numpy(rng.random((batch, 3, h, w), dtype=np.float32))
  labels = {"semseg": torch.from_numpy(rng.integers(-1, ref.num_classes, (batch, h, w))),
            "depth": torch.from_numpy(rng.uniform(0.5, 10, (batch, 1, h, w)).astype(np.float32)),
            "normals": F.normalize(torch.from_numpy(
                rng.normal(size=(batch, 3, h, w)).astype(np.float32)), dim=1)}
  return image, {t: labels[t] for t in ref.tasks}


def _loss(outputs: dict, labels: dict):
  """MTAN's losses: NLL with ignore -1, L1 and 1 - cosine over the valid pixels."""
  total = 0.0
  for name, pred in outputs.items():
    pred = pred.float()
    label = labels[name]
    if name == "semseg":
      total = total + F.nll_loss(pred, label, ignore_index=-1)
    elif name == "depth":
      valid = (label != 0).float()
      total = total + (torch.abs(pred - label) * valid).sum() / valid.sum().clamp(min=1)
    else:
      valid = (label.abs().sum(dim=1, keepdim=True) != 0).float()
      total = total + 1 - (pred * label * valid).sum() / valid.sum().clamp(min=1)
  return total


def _step(model, optimizer, image, labels, bf16: bool):
  optimizer.zero_grad(set_to_none=True)
  if bf16:
    with torch.autocast("cpu", dtype=torch.bfloat16):
      outputs = model(image)
  else:
    outputs = model(image)
  loss = _loss(outputs, labels)
  loss.backward()
  optimizer.step()
  return float(loss.detach())


def time_training(ref: Reference, batch: int, steps: int, warmup: int, bf16: bool = False) -> dict:
  """Median seconds per Adam training step (after `warmup`) of the reference network on one
  random batch; fp32, or bf16 under torch.autocast("cpu"). Every usable core, as TF
  uses them.
  Returns {"step_s", "img_s", "params", "torch", "threads"}."""
  torch.set_num_threads(hardware.usable_cpus())
  model = build(ref).train()
  optimizer = torch.optim.Adam(model.parameters(), lr=ref.learning_rate)
  image, labels = _batch(ref, batch)
  times = timing.call_seconds(lambda: _step(model, optimizer, image, labels, bf16),
                              max(warmup, 1) + steps)
  step = timing.median_after(times, max(warmup, 1))
  return {"step_s": step, "img_s": batch / step, "torch": torch.__version__,
          "params": sum(p.numel() for p in model.parameters()),
          "threads": torch.get_num_threads()}


def child_memory(ref: Reference, batch: int) -> dict:
  """Peak RSS (GiB) of this process after 2 fp32 training steps at `batch` (bench --child)."""
  torch.set_num_threads(hardware.usable_cpus())
  model = build(ref).train()
  optimizer = torch.optim.Adam(model.parameters(), lr=ref.learning_rate)
  image, labels = _batch(ref, batch)
  for _ in range(2):
    _step(model, optimizer, image, labels, bf16=False)
  return {"peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20,
          "batch": batch, "params": sum(p.numel() for p in model.parameters()),
          "tensorflow_loaded": "tensorflow" in sys.modules}


if __name__ == "__main__":  # bench's memory child: <Reference as JSON> <batch>
  spec = json.loads(sys.argv[1])
  print(json.dumps(child_memory(Reference(**{**spec, "tasks": tuple(spec["tasks"])}),
                                int(sys.argv[2]))))
