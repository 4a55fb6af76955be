"""The run directory (--model_dir) layout, in one place."""

from __future__ import annotations

import dataclasses
import os


@dataclasses.dataclass(frozen=True)
class RunPaths:
  """The run directory (--model_dir) layout."""

  root: str

  @property
  def checkpoints(self):
    return os.path.join(self.root, "checkpoints")

  @property
  def model_weights(self):
    """Weights of the whole training graph after the last finished epoch."""
    return os.path.join(self.checkpoints, "model.weights.h5")

  def role_weights(self, role: str):
    return os.path.join(self.checkpoints, f"{role}.weights.h5")

  @property
  def backup(self):
    return os.path.join(self.root, "backup")

  @property
  def logs(self):
    return os.path.join(self.root, "logs")

  @property
  def results(self):
    return os.path.join(self.root, "results")

  @property
  def metrics_json(self):
    return os.path.join(self.results, "metrics.json")

  @property
  def history_csv(self):
    return os.path.join(self.results, "history.csv")

  def export(self, role: str):
    return os.path.join(self.root, "export", role)
