"""Train: `python -m sdmtcnn_tf.train --flagfile=configs/<experiment>.flags --model_dir=...`.

Run directory: flags.txt, config.json, checkpoints/ (model/teacher/student weights), backup/
(BackupAndRestore: a killed run started again with the same command resumes), logs/
(TensorBoard: every loss term and metric), results/metrics.json and results/history.csv.
A run directory may be copied or moved: the same command with --model_dir=<its new place>
resumes it there, and --data_dir may name where its data is now (config.LOCATION_FIELDS).

--distribution=multi_worker (TF_CONFIG, see distribute.py; `python -m sdmtcnn_tf.launch` on one
machine): every worker runs this same command and the same steps. Only the chief prints progress
and the results table, and writes --model_dir (and holds its lock); every other worker writes
its copies of the same files into a temporary directory that is removed when it ends
(TensorFlow's rule for multi-worker saving: every worker runs the same saves and evaluations, so
any collective they involve stays in step). Every worker resumes from the chief's backup, so
--model_dir must be one shared folder on a cluster. A worker whose peer died stops with one line
naming it (distribute.one_line_on_lost_worker).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile

from sdmtcnn_tf import cli  # first: it quiets TensorFlow's C++ logs before TF is imported

import keras
from absl import flags, logging

from sdmtcnn_tf import callbacks as callbacks_lib
from sdmtcnn_tf import config as config_lib
from sdmtcnn_tf import distribute, evaluate, experiment, methods, precise_bn, progress, rundir
from sdmtcnn_tf.config import ExperimentConfig
from sdmtcnn_tf.models.build import count_params


def dry_run(cfg: ExperimentConfig) -> dict:
  """Builds the model (no data needed), prints its summary, parameter counts and weighted loss
  terms (`loss term <name> weight <w>`, one line each)."""
  if cfg.method.teacher_dir:  # traditional_kd: the architecture does not need the trained weights
    cfg = cfg.replace(teacher_dir="")
  network, model = experiment.build_model(cfg)
  network.model.summary(print_fn=print, line_length=110)
  counts = {"teacher": count_params(network.teacher), "student": count_params(network.student),
            "training_graph": count_params(network.model)}
  for role, n in counts.items():
    print(f"{role} parameters: {n:,}")
  for term in model.terms:
    print(f"loss term {term.name} weight {term.weight:g}")
  return counts


# How a new user starts (the error without --model_dir says it), as the README's first run.
START_EXAMPLE = "--flagfile=configs/synthetic_vanilla.flags --model_dir=runs/vanilla"
RESUME_MAY_CHANGE = ("epochs", "verbose", "validation_freq", "image_summary_every")


def _check_same_run(cfg: ExperimentConfig, model_dir: str) -> None:
  """A run directory belongs to one config; only RESUME_MAY_CHANGE may change on resume, and
  the LOCATION_FIELDS, which say where the run and its data are, not what it is."""
  path = os.path.join(model_dir, config_lib.CONFIG_NAME)
  if not os.path.exists(path):
    return
  with open(path) as f:  # a field added since the run started holds the value it ran with
    previous = config_lib.with_absent_flags(json.load(f))
  current = cfg.to_json()
  may_change = {*RESUME_MAY_CHANGE, *config_lib.LOCATION_FIELDS}
  differ = sorted(k for k in current if k not in may_change and previous.get(k) != current[k])
  if differ:
    raise ValueError(f"--model_dir={model_dir} holds a run with a different config "
                     f"(fields {differ}); use a new --model_dir")


def train(cfg: ExperimentConfig) -> dict:
  """Trains, saves weights, evaluates. Returns the final metrics dict.

  Holds the run directory's lock throughout: a second process on the same --model_dir stops
  with an error naming the holder's pid. --distribution=multi_worker: only the chief does; the
  other workers write into (and lock) a temporary directory, see the module docstring.
  """
  if not cfg.run.model_dir:
    raise ValueError(f"--model_dir is required: give a run directory, e.g. {START_EXAMPLE}")
  task = distribute.cluster_task() if cfg.run.distribution == "multi_worker" else None
  with distribute.one_line_on_lost_worker(task):  # another worker died: one line, not ~60
    # first: MultiWorkerMirroredStrategy must exist before TensorFlow runs any op
    strategy = distribute.make_strategy(cfg)
    if distribute.is_chief(cfg):
      with rundir.locked(cfg.run.model_dir, "sdmtcnn_tf.train"):
        return _train(cfg, cfg.run.model_dir, strategy)
    scratch = tempfile.mkdtemp(prefix=f"sdmtcnn_{task.task_type}{task.task_index}_")
    print(f"{task.name} of {task.num_workers}: the chief writes {cfg.run.model_dir}; this "
          f"worker writes its copies to {scratch} (removed at the end)", flush=True)
    try:
      with rundir.locked(scratch, "sdmtcnn_tf.train"):
        return _train(cfg, scratch, strategy)
    finally:
      shutil.rmtree(scratch, ignore_errors=True)


def _train(cfg: ExperimentConfig, write_dir: str, strategy) -> dict:
  """Trains `cfg`, writing every file into `write_dir` (--model_dir, except on a non-chief
  worker) and resuming from --model_dir."""
  teacher_run = methods.get(cfg.method.name).teacher_run
  if teacher_run and not cfg.method.teacher_dir:
    raise ValueError(f"--teacher_dir is required with --method={cfg.method.name}: the run "
                     "directory of a trained vanilla teacher")
  if teacher_run:  # resolved once, here; config.json records the result
    cfg = cfg.replace(teacher_dir=os.path.abspath(cfg.method.teacher_dir))
  paths = experiment.RunPaths(write_dir)
  resume = experiment.RunPaths(cfg.run.model_dir)  # what a rerun starts from (the chief's)
  chief = write_dir == cfg.run.model_dir
  train_manifest = experiment.prepare_data(cfg, experiment.TRAIN_SPLIT)
  eval_manifest = experiment.prepare_data(cfg, experiment.EVAL_SPLIT)
  experiment.check_against_data(cfg, train_manifest)
  _check_same_run(cfg, cfg.run.model_dir)
  # traditional_kd: the teacher's config is copied into the run at the first start
  # (a non-chief worker reads the chief's copy, or the teacher run before the chief made it)
  teacher_cfg = None
  if teacher_run:
    teacher_cfg = experiment.record_teacher(cfg) if chief else experiment.teacher_config(cfg)
  config_lib.save(cfg, write_dir)
  distribute.set_precision(cfg)
  with strategy.scope():
    network, model = experiment.build_model(cfg, teacher_cfg)
    experiment.compile_model(model, cfg, experiment.steps_per_epoch(cfg, train_manifest))
    if teacher_cfg is not None and not experiment.has_training_state(cfg.run.model_dir):
      # first start: the frozen teacher's weights; later starts restore them with the rest
      experiment.load_run_weights(network.teacher, cfg.method.teacher_dir, role="teacher")
  train_ds = experiment.dataset(cfg, train_manifest, experiment.TRAIN_SPLIT, training=True)
  val_ds = experiment.dataset(cfg, eval_manifest, experiment.EVAL_SPLIT, training=False)
  os.makedirs(paths.results, exist_ok=True)
  callbacks = [
      callbacks_lib.StopOnNonFiniteLoss(callbacks_lib.existing_files(  # the chief's files
                                            resume.backup_latest, resume.model_weights),
                                        max_loss=cfg.optim.max_loss),
      callbacks_lib.LogLearningRate(),  # the schedule itself lives in the optimizer
      # history and checkpoint before the backup: the backup commits an epoch (a run killed
      # in between redoes that epoch, and EpochHistory drops its row)
      callbacks_lib.EpochHistory(paths.history_csv),
      callbacks_lib.SaveNetworkWeights(network.model, paths.model_weights),
      callbacks_lib.ResumableBackup(paths, network.model,
                                    save_freq=cfg.run.backup_every_steps or "epoch",
                                    resume_from=resume),
      keras.callbacks.TensorBoard(paths.logs, update_freq="epoch"),
      *([callbacks_lib.PredictionImages(
          paths.logs, val_ds, cfg.task_specs, eval_manifest.class_names,
          cfg.run.image_summary_every)] if cfg.run.image_summary_every else []),
      progress.HeadlineProgbar(progress.headline_keys(model.roles, cfg.task_specs)),
  ]
  model.fit(train_ds, validation_data=val_ds, epochs=cfg.optim.epochs,
            steps_per_epoch=cfg.optim.steps_per_epoch or None, callbacks=callbacks,
            verbose=cfg.run.verbose if chief else 0,  # the chief alone shows progress
            shuffle=False,
            validation_freq=[e for e in range(1, cfg.optim.epochs + 1)
                             if e % cfg.run.validation_freq == 0 or e == cfg.optim.epochs])
  if cfg.run.precise_bn_batches:
    if strategy.num_replicas_in_sync > 1:
      logging.warning("--precise_bn_batches is skipped under %d replicas",
                      strategy.num_replicas_in_sync)
    else:
      used = precise_bn.recalibrate(network.model, train_ds, cfg.run.precise_bn_batches)
      logging.info("re-estimated BatchNorm statistics over %d training batches", used)
  callbacks_lib.save_weights_atomically(network.model, paths.model_weights, epoch=cfg.optim.epochs)
  callbacks_lib.save_weights_atomically(network.teacher, paths.role_weights("teacher"))
  if network.student is not None:
    callbacks_lib.save_weights_atomically(network.student, paths.role_weights("student"))
  metrics = evaluate.evaluate_model(cfg, model, eval_manifest)
  evaluate.write_metrics(metrics, paths.metrics_json)
  logging.info("wrote %s", paths.metrics_json)
  return metrics


def main(argv):
  cli.check_no_arguments(argv)
  cfg = config_lib.from_flags(flags.FLAGS)
  if flags.FLAGS.dry_run:
    dry_run(cfg)
    return
  metrics = train(cfg)
  if distribute.is_chief(cfg):  # every worker has them; one table is enough
    print(evaluate.format_table({"value": metrics}))


if __name__ == "__main__":
  config_lib.define_flags()
  cli.run(main)
