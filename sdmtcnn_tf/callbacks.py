"""Training callbacks: non-finite loss guard, the per-epoch weights checkpoint, the resumable
backup and history.csv (every file written atomically, see atomic.py), and the prediction
figures of a few validation images in TensorBoard."""

from __future__ import annotations

import csv
import io
import json
import math
import os

import keras
from absl import logging

from sdmtcnn_tf import atomic, integrity
from sdmtcnn_tf.rundir import RunDirectoryError, RunPaths


class NonFiniteLossError(RuntimeError):
  """A loss term became NaN or infinite, or the total loss exceeded --max_loss."""


class StopOnNonFiniteLoss(keras.callbacks.TerminateOnNaN):
  """Keras' TerminateOnNaN (raise_error=True: no later callback saves the bad state), with an
  error that names the epoch, the step, the offending loss term(s) and what a rerun starts
  from; a finite total above --max_loss (divergence) stops training the same way.

  Must run before the callbacks that save state (it is listed first), so the last good backup
  and checkpoint are kept.
  """

  def __init__(self, checkpoint_hint: str = "", max_loss: float = math.inf):
    super().__init__(raise_error=True)
    self.checkpoint_hint = checkpoint_hint
    self.max_loss = max_loss  # a finite total above this means the run diverged (--max_loss)
    self._epoch = 0

  def on_epoch_begin(self, epoch, logs=None):
    self._epoch = epoch

  def _kept(self) -> str:
    """What a rerun can start from, checked at the error (`checkpoint_hint`: a string, or a
    callable returning the state files that exist now, see `existing_files`)."""
    if not callable(self.checkpoint_hint):
      return f"the last good checkpoint is kept{self.checkpoint_hint}"
    kept = self.checkpoint_hint()
    if not kept:
      return "no backup or checkpoint had been written yet (a rerun starts over)"
    return f"the last good state is kept in {' and '.join(kept)}"

  def on_batch_end(self, batch, logs=None):
    logs = logs or {}
    total = float(logs["loss"]) if "loss" in logs else math.nan
    if math.isfinite(total) and total <= self.max_loss:
      return  # one host sync per step; the terms are only read when the total is bad
    if math.isfinite(total):
      self.model.stop_training = True
      raise NonFiniteLossError(
          f"loss {total:.3g} exceeds --max_loss={self.max_loss:g} at epoch {self._epoch + 1}, "
          f"step {batch + 1}: training diverged (lower --learning_rate?); training stopped, "
          f"{self._kept()}")
    bad = [name for name, value in logs.items()
           if name.endswith("loss") and not math.isfinite(float(value))]
    if bad:
      self.model.stop_training = True
      raise NonFiniteLossError(
          f"non-finite loss at epoch {self._epoch + 1}, step {batch + 1}: {', '.join(bad)}; "
          f"training stopped, {self._kept()}")


def existing_files(*paths: str):
  """A callable listing those of `paths` that exist when it is called."""
  return lambda: [p for p in paths if os.path.exists(p)]


class SaveNetworkWeights(keras.callbacks.Callback):
  """Writes the training graph's weights (no optimizer state) after every epoch, atomically."""

  def __init__(self, network_model: keras.Model, path: str):
    super().__init__()
    self.network_model = network_model
    self.path = path

  def on_epoch_end(self, epoch, logs=None):
    save_weights_atomically(self.network_model, self.path, epoch=epoch + 1)


def save_weights_atomically(model: keras.Model, path: str, epoch: int | None = None) -> None:
  """Writes `path` atomically; `epoch` (epochs finished) is stored as its HDF5 attr `epoch`, so
  a run whose backups are lost can resume from it (ResumableBackup)."""
  atomic.save_weights(model, path, label="checkpoint",
                      attrs=None if epoch is None else {"epoch": int(epoch)})


class ResumableBackup(keras.callbacks.BackupAndRestore):
  """keras BackupAndRestore that survives a kill at any instant, a full disk and a bad file.

  Keras writes backup/latest.weights.h5 in place and its epoch in a second file: a kill inside
  the write left a torn HDF5 that stopped every rerun. Here each backup is ONE file written
  atomically (atomic.save_weights), its position stored inside it (HDF5 attrs `epoch`,
  `batch`), the one before it kept as previous.weights.h5, and the sha256 of both listed in
  backup/SHA256SUMS, committed with them (see atomic.py: a kill never leaves a file in place
  whose digest is not listed). training_metadata.json is still written, after the weights, for
  tools that read it. List it after the callbacks that write history and checkpoints: the
  backup is the commit point of an epoch.

  At the start the run resumes from the first good one of latest, previous and the per-epoch
  checkpoint (checkpoints/model.weights.h5: weights only, the optimizer state restarts). A
  backup is good if its sha256 is the one SHA256SUMS lists for it, every float in it (weight
  or optimizer variable) is finite and it loads; the checkpoint has no digest, the rest is
  checked alike. A backup dir without SHA256SUMS (written before digests were kept) is resumed
  from unverified, with a warning; its next backup writes SHA256SUMS. Resuming prints
  `resuming from <file> (epoch N)` on stdout (N: the epoch training goes on with, as Keras'
  `Epoch N/M` lines count); passing over a file adds ONE warning on stderr naming each file
  passed over and why. If no file is good the run stops with an error naming them all (it
  never starts over silently). A rejected latest backup is not kept as previous by the next
  backup: the good previous stays the fallback.

  `resume_from` (multi-worker runs): the run directory whose files are read at the start when
  it is not `paths` (a non-chief worker writes its backups into a temporary directory and
  resumes, like every worker, from the chief's, so that all restart from the same state).
  """

  def __init__(self, paths: RunPaths, checkpoint_model: keras.Model, save_freq="epoch",
               resume_from: RunPaths | None = None):
    super().__init__(paths.backup, save_freq=save_freq, delete_checkpoint=False)
    self._weights_path = paths.backup_latest
    self._previous_path = paths.backup_previous
    self._digests_path = paths.backup_digests
    self._checkpoint_model = checkpoint_model
    read = resume_from or paths
    self._resume_paths = (read.backup_latest, read.backup_previous, read.model_weights)
    self._resume_digests = read.backup_digests
    self._latest_rejected = False  # then the next backup keeps previous, not the bad latest

  def on_train_begin(self, logs=None):
    if not self.model.built:
      return super().on_train_begin(logs)  # raises Keras' "must be built" error
    optimizer = self.model.optimizer
    if optimizer is not None and not optimizer.built:
      optimizer.build(self.model.trainable_variables)  # its state is part of the backup
    latest, previous, checkpoint = self._resume_paths
    rejected = []  # "<file> <why>" of each file passed over
    for path in (latest, previous):
      if not os.path.exists(path):
        continue
      try:
        verified = integrity.check_digest(path, self._resume_digests)
        integrity.check_finite(path)
        epoch = self._epoch_of(path)
        self.model.load_weights(path)
      except Exception as e:  # torn, damaged, NaN or foreign file: try the next one
        rejected.append(_rejected(path, e))
        self._latest_rejected = self._latest_rejected or path == latest
        continue
      warning = _passed_over(rejected, f"resuming from {path} (epoch {epoch + 1})")
      if not verified:
        warning += (f", unverified: {self._resume_digests} is missing (a backup from before "
                    "backups had digests)")
      self._resume(path, epoch, warning if rejected or not verified else "")
      return
    backup_dir = os.path.dirname(latest)
    if not os.path.exists(checkpoint):
      if rejected:
        raise RunDirectoryError(f"cannot resume: {'; '.join(rejected)}; there is no "
                                f"{checkpoint}; delete {backup_dir} to start over")
      return  # a new run
    try:
      integrity.check_finite(checkpoint)
      epoch = atomic.read_attrs(checkpoint).get("epoch")
      if epoch is None:
        raise ValueError("it records no epoch")
      self._checkpoint_model.load_weights(checkpoint)
    except Exception as e:
      rejected.append(_rejected(checkpoint, e))
      raise RunDirectoryError(
          f"cannot resume: {'; '.join(rejected)}; delete {backup_dir} and {checkpoint} to "
          "start over") from e
    steps = self.params.get("steps") if self.params else None
    if optimizer is not None and steps:
      optimizer.iterations.assign(int(epoch) * int(steps))  # the step-based schedule goes on
    where = (f"resuming from {checkpoint} (epoch {int(epoch) + 1}, weights only: the optimizer "
             "state restarts)")
    self._resume(checkpoint, int(epoch), _passed_over(rejected, where) if rejected
                 else f"no backup in {backup_dir}; {where}")

  def _resume(self, path: str, epoch: int, warning: str = "") -> None:
    """Goes on after `epoch` epochs from `path` (loaded): `warning` (if any) on stderr, then
    `resuming from <path> (epoch N)` on stdout, N = epoch + 1."""
    if warning:
      logging.warning("%s", warning)
    print(f"resuming from {path} (epoch {epoch + 1})", flush=True)
    self.model._initial_epoch = epoch

  def _epoch_of(self, path: str) -> int:
    epoch = atomic.read_attrs(path).get("epoch")
    if epoch is None and path == self._resume_paths[0]:  # written by keras' BackupAndRestore
      with open(os.path.join(os.path.dirname(path), "training_metadata.json")) as f:
        epoch = json.load(f)["epoch"]
    if epoch is None:
      raise ValueError("it records no epoch")
    return int(epoch)

  def _save_model(self):
    position = {"epoch": int(self._current_epoch), "batch": int(self._last_batch_seen)}
    atomic.save_weights(self.model, self._weights_path, label="backup", attrs=position,
                        previous="" if self._latest_rejected else self._previous_path,
                        digests=self._digests_path)
    self._latest_rejected = False
    atomic.write_json(self._training_metadata_path, position, label="backup_metadata")


def _passed_over(rejected: list, where: str) -> str:
  """One line: each file passed over and why, then where the run resumes instead (just
  `where` if none was)."""
  return f"{'; '.join(rejected)}; {where} instead" if rejected else where


def _rejected(path: str, error: Exception) -> str:
  """`<path> <why it is not resumed from>`, on one line."""
  if isinstance(error, integrity.IntegrityError):
    return f"{path} {error}"
  lines = str(error).strip().splitlines()
  return f"{path} is unreadable ({type(error).__name__}{': ' + lines[0] if lines else ''})"


class EpochHistory(keras.callbacks.Callback):
  """results/history.csv: one row per epoch (keras CSVLogger's format), each epoch once.

  The whole file is rewritten atomically at every epoch end. The first epoch a (resumed) fit
  runs drops the rows of that epoch and later ones (written before a kill, after the backup
  the run resumed from). List it after the callbacks that add to the epoch logs.
  """

  def __init__(self, path: str):
    super().__init__()
    self.path = path
    self._rows = None

  def on_epoch_begin(self, epoch, logs=None):
    if self._rows is None:
      self._rows = [row for row in self._read() if row["epoch"] < epoch]

  def on_epoch_end(self, epoch, logs=None):
    row = {"epoch": epoch}
    for key, value in (logs or {}).items():
      try:
        row[key] = value if isinstance(value, str) else float(value)
      except (TypeError, ValueError):
        row[key] = str(value)
    self._rows = [r for r in self._rows or [] if r["epoch"] != epoch] + [row]
    keys = sorted({k for r in self._rows for k in r} - {"epoch"})
    text = io.StringIO()
    writer = csv.DictWriter(text, ["epoch"] + keys, restval="NA", lineterminator="\n")
    writer.writeheader()
    writer.writerows(self._rows)
    atomic.write_text(self.path, text.getvalue(), label="history")

  def on_train_end(self, logs=None):
    self._rows = None  # a later fit re-reads the file

  def _read(self) -> list:
    if not os.path.exists(self.path):
      return []
    with open(self.path, newline="") as f:
      rows = list(csv.DictReader(f))
    kept = []
    for row in rows:
      try:
        row["epoch"] = int(row["epoch"])
      except (KeyError, TypeError, ValueError):
        continue
      kept.append({k: v for k, v in row.items() if k is not None})
    return kept


class LogLearningRate(keras.callbacks.Callback):
  """Adds `learning_rate` to the epoch logs: the optimizer's rate (a schedule of its step count,
  see experiment.learning_rate) as the epoch began, i.e. the rate its steps used. List it before
  CSVLogger and TensorBoard."""

  def __init__(self):
    super().__init__()
    self._rate = None

  def on_epoch_begin(self, epoch, logs=None):
    self._rate = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))

  def on_epoch_end(self, epoch, logs=None):
    if logs is not None and self._rate is not None:
      logs["learning_rate"] = self._rate


class PredictionImages(keras.callbacks.Callback):
  """Every `every` epochs, the prediction figure (visualize.grid: input, truth, each role's
  prediction and error per task) of each of the first `count` images of `val_ds` as a
  TensorBoard image summary `predictions/<i>` in `<logdir>/images`, step = epochs finished.
  The images are taken once, at the start; TensorBoard's event files are append-only, so a
  kill leaves the summaries written so far readable."""

  def __init__(self, logdir: str, val_ds, tasks, class_names=(), every: int = 1,
               count: int = 3):
    super().__init__()
    self.logdir = os.path.join(logdir, "images")
    self.val_ds = val_ds
    self.tasks = list(tasks)
    self.class_names = tuple(class_names)
    self.every = every
    self.count = count
    self._examples = None
    self._writer = None

  def on_train_begin(self, logs=None):
    import tensorflow as tf
    if self._examples is None:
      self._examples = next(iter(self.val_ds.unbatch().take(self.count).batch(self.count)))
    self._writer = tf.summary.create_file_writer(self.logdir)

  def on_epoch_end(self, epoch, logs=None):
    if (epoch + 1) % self.every:
      return
    import numpy as np
    import tensorflow as tf
    from sdmtcnn_tf import visualize
    images, labels = self._examples
    outputs = self.model(images, training=False)
    predictions = visualize.prediction_maps(outputs, self.model.roles, self.tasks)
    with self._writer.as_default():
      for i, prediction in enumerate(predictions):
        truth = {t.name: t.label_map(labels[t.name][i].numpy()) for t in self.tasks}
        pixels = np.clip(np.round(images[i].numpy() * 255.0), 0, 255).astype(np.uint8)
        figure, _ = visualize.grid(self.tasks, pixels, truth, prediction, self.class_names)
        tf.summary.image(f"predictions/{i}", figure[None], step=epoch + 1)
    self._writer.flush()

  def on_train_end(self, logs=None):
    if self._writer is not None:
      self._writer.close()
