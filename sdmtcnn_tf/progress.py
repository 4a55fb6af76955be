"""A short progress line: the total loss and each task's headline metric.

Keras's progress bar prints every log entry (about 30 validation metrics, ~1,500 characters a
line). This one shows `loss`, `val_loss` and `<role>_<task>_<headline>` (`Task.headline`)
for the validation logs; every value still reaches TensorBoard, `results/history.csv` and the
end-of-run table.
"""

from __future__ import annotations

import keras


def headline_keys(roles, specs) -> tuple:
  """The log keys shown: loss, val_loss and val_<role>_<task>_<headline> per role and task."""
  keys = ["loss", "val_loss"]
  keys += [f"val_{role}_{spec.name}_{spec.headline}" for role in roles for spec in specs]
  return tuple(keys)


class HeadlineProgbar(keras.callbacks.ProgbarLogger):
  """`keras.callbacks.ProgbarLogger` restricted to `keys` (given to `fit` in `callbacks`, it
  replaces the default bar)."""

  def __init__(self, keys):
    super().__init__()
    self.keys = tuple(keys)

  def _shown(self, logs):
    return {k: logs[k] for k in self.keys if k in (logs or {})}

  def _update_progbar(self, batch, logs=None):
    super()._update_progbar(batch, self._shown(logs))

  def _finalize_progbar(self, logs):
    super()._finalize_progbar(self._shown(logs))
