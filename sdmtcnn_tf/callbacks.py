"""Training callbacks: non-finite loss guard and the per-epoch weights checkpoint."""

from __future__ import annotations

import math
import os

import keras


class NonFiniteLossError(RuntimeError):
  """A loss term became NaN or infinite."""


class StopOnNonFiniteLoss(keras.callbacks.Callback):
  """Stops training at the first step whose logged loss terms are not finite.

  Must run before the callbacks that save state (it is listed first), so the last good backup
  and checkpoint are kept. The error names the epoch, the step and the offending term(s).
  """

  def __init__(self, checkpoint_hint: str = ""):
    super().__init__()
    self.checkpoint_hint = checkpoint_hint
    self._epoch = 0

  def on_epoch_begin(self, epoch, logs=None):
    self._epoch = epoch

  def on_train_batch_end(self, batch, logs=None):
    logs = logs or {}
    if "loss" in logs and math.isfinite(float(logs["loss"])):
      return  # one host sync per step; the terms are only read when the total is bad
    bad = [name for name, value in logs.items()
           if name.endswith("loss") and not math.isfinite(float(value))]
    if bad:
      self.model.stop_training = True
      raise NonFiniteLossError(
          f"non-finite loss at epoch {self._epoch + 1}, step {batch + 1}: {', '.join(bad)}; "
          f"training stopped, the last good checkpoint is kept{self.checkpoint_hint}")


class SaveNetworkWeights(keras.callbacks.Callback):
  """Writes the training graph's weights (no optimizer state) after every epoch, atomically."""

  def __init__(self, network_model: keras.Model, path: str):
    super().__init__()
    self.network_model = network_model
    self.path = path

  def on_epoch_end(self, epoch, logs=None):
    save_weights_atomically(self.network_model, self.path)


def save_weights_atomically(model: keras.Model, path: str) -> None:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  tmp = path[:-len(".weights.h5")] + ".tmp.weights.h5"
  model.save_weights(tmp)
  os.replace(tmp, path)


def halving_schedule(base_rate: float, every_epochs: int):
  """Epoch -> learning rate, halved every `every_epochs` epochs (MTAN's StepLR(100, 0.5))."""
  return lambda epoch: base_rate * (0.5 ** (epoch // max(1, every_epochs)))
