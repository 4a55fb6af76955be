"""Config -> functional Keras graph with teacher outputs, student outputs and hint pairs.

The training graph (`Network.model`) maps an image [B, H, W, 3] (float32 in [0, 1]) to a flat
dict of float32 tensors:
  teacher_<task>              [B, H, W, C_task]  full network (encoder + decoder + head)
  student_<task>              [B, H, W, C_task]  encoder + light student head (not vanilla)
  hint_<task>_l<l>_student    [B, h_l, w_l, C]   adaptation layer applied to the encoder side
  hint_<task>_l<l>_teacher    [B, h_l, w_l, C]   the decoder-side feature that teaches it
Semseg outputs are logits, normals unit vectors, the others linear. `Network.teacher` and
`Network.student` are sub-models sharing the same layers, with outputs keyed by task name:
they are what `export` serves.
"""

from __future__ import annotations

import dataclasses

import keras
from keras import layers

from sdmtcnn_tf.config import ExperimentConfig
from sdmtcnn_tf.models import heads, segnet, unet
from sdmtcnn_tf.models.layers import as_full_precision

IMAGE_INPUT = "image"


@dataclasses.dataclass
class Network:
  model: keras.Model  # the training graph, outputs as in the module docstring
  teacher: keras.Model  # image -> {task: teacher output}
  student: keras.Model | None  # image -> {task: student output}; None for vanilla
  hint_pairs: tuple  # ((task, level), ...) distilled by Eq. 6
  frozen_teacher: bool = False  # traditional_kd: the teacher is a trained, frozen network


def _encoder_decoders(image, cfg: ExperimentConfig, filters):
  """Runs the backbone. Returns (encoder features, {task: decoder features})."""
  sync = cfg.sync_batchnorm
  if cfg.backbone == "segnet":
    features, argmaxes = segnet.segnet_encoder(image, filters, sync, pool="argmax")
    decode = lambda prefix: segnet.segnet_decoder(features, argmaxes, filters, prefix, sync)
  else:
    features, _ = segnet.segnet_encoder(image, filters, sync, pool="max")
    decode = lambda prefix: unet.unet_decoder(features, filters, prefix, sync)
  if cfg.decoder == "shared":
    shared = decode("shared_dec")
    return features, {spec.name: shared for spec in cfg.task_specs}
  return features, {spec.name: decode(f"{spec.name}_dec") for spec in cfg.task_specs}


def _student_outputs(features, cfg: ExperimentConfig, filters):
  channels = max(1, int(round(cfg.student_channels * cfg.width_multiplier)))
  skips = [(level, features[f"enc{level}"]) for level in cfg.resolved_student_levels]
  return {spec.name: heads.student_head(features["encoded"], spec, channels, cfg.height,
                                        cfg.width, f"student_{spec.name}", cfg.sync_batchnorm,
                                        _output_bias(cfg, spec.name), skips)
          for spec in cfg.task_specs}


def _output_bias(cfg: ExperimentConfig, task: str) -> float:
  return cfg.depth_bias_init if task == "depth" else 0.0


def _hint_outputs(features, decoded, cfg: ExperimentConfig, filters):
  """Eq. 6 pairs. sd_mtcnn: dec_l of each teaching decoder teaches the mirrored enc_l.
  sd_vanilla (BYOT-style): the network's deepest feature, dec1, average-pooled to level l,
  teaches enc_l."""
  outputs, pairs = {}, []
  dec_channels = segnet.decoder_channels(filters)
  for task in cfg.resolved_teaching_tasks:
    for level in cfg.resolved_hint_levels:
      if cfg.method == "sd_vanilla":
        target = decoded[task]["dec1"]
        if level > 1:
          size = 2 ** (level - 1)
          target = layers.AveragePooling2D(size, name=f"hint_{task}_l{level}_pool")(target)
        target_channels = dec_channels[1]
      else:
        target = decoded[task][f"dec{level}"]
        target_channels = dec_channels[level]
      key = f"hint_{task}_l{level}"
      outputs[f"{key}_student"] = heads.adaptation(
          features[f"enc{level}"], target_channels, cfg.adaptation, f"adapt_{task}_l{level}",
          cfg.sync_batchnorm)
      outputs[f"{key}_teacher"] = as_full_precision(target, f"{key}_teacher")
      pairs.append((task, level))
  return outputs, tuple(pairs)


def _teacher_graph(image, cfg: ExperimentConfig, filters):
  features, decoded = _encoder_decoders(image, cfg, filters)
  teacher = {spec.name: heads.teacher_head(decoded[spec.name]["dec1"], spec,
                                           f"teacher_{spec.name}", _output_bias(cfg, spec.name))
             for spec in cfg.task_specs}
  return features, decoded, teacher


def build_network(cfg: ExperimentConfig,
                  teacher_cfg: ExperimentConfig | None = None) -> Network:
  """Builds the training graph and the teacher/student serving sub-models of `cfg`.

  traditional_kd: `teacher_cfg` is the config of the trained vanilla teacher (the run records
  it at training start, see experiment.teacher_config); None builds a vanilla teacher like
  `cfg` (dry runs, tests). No file is read here: the frozen teacher's weights come with the
  run's checkpoint, or, on the first training start, from experiment.load_run_weights.
  """
  keras.utils.set_random_seed(cfg.seed)
  filters = segnet.scaled_filters(cfg.width_multiplier)
  image = keras.Input((cfg.height, cfg.width, 3), name=IMAGE_INPUT)
  if cfg.method == "traditional_kd":
    return _build_traditional_kd(image, cfg, filters, teacher_cfg)
  features, decoded, teacher = _teacher_graph(image, cfg, filters)
  outputs = {f"teacher_{t}": v for t, v in teacher.items()}
  student, pairs = None, ()
  if cfg.has_student:
    student = _student_outputs(features, cfg, filters)
    outputs.update({f"student_{t}": v for t, v in student.items()})
    if cfg.distill in ("eq6", "both"):
      hints, pairs = _hint_outputs(features, decoded, cfg, filters)
      outputs.update(hints)
  name = f"{cfg.method}_{cfg.backbone}"
  return Network(
      model=keras.Model(image, outputs, name=name),
      teacher=keras.Model(image, teacher, name=f"{name}_teacher"),
      student=keras.Model(image, student, name=f"{name}_student") if student else None,
      hint_pairs=pairs)


def _build_traditional_kd(image, cfg: ExperimentConfig, filters,
                          teacher_cfg: ExperimentConfig | None) -> Network:
  """Baseline-3: a trained vanilla teacher (frozen) and a separate student network. The
  teacher's outputs are matched to the student's by task name (its --tasks order may differ)."""
  if teacher_cfg is None:
    teacher_cfg = cfg.replace(method="vanilla", distill="none", full=False, student_levels=(),
                              teacher_dir="")
  check_teacher(teacher_cfg, cfg)
  teacher_net = build_network(teacher_cfg).teacher
  teacher_net.trainable = False
  teacher = teacher_net(image, training=False)
  features, _ = segnet.segnet_encoder(image, filters, cfg.sync_batchnorm,
                                      pool="argmax" if cfg.backbone == "segnet" else "max")
  student = _student_outputs(features, cfg, filters)
  outputs = {f"teacher_{t}": as_full_precision(teacher[t], f"frozen_teacher_{t}") for t in teacher}
  outputs.update({f"student_{t}": v for t, v in student.items()})
  name = f"traditional_kd_{cfg.backbone}"
  return Network(model=keras.Model(image, outputs, name=name), teacher=teacher_net,
                 student=keras.Model(image, student, name=f"{name}_student"), hint_pairs=(),
                 frozen_teacher=True)


def check_teacher(teacher_cfg: ExperimentConfig, cfg: ExperimentConfig,
                  source: str = "the teacher") -> None:
  """traditional_kd: the teacher must be a vanilla run on the same data as `cfg` (the same
  tasks as a set, classes and size). Raises ValueError naming `source`."""
  if teacher_cfg.method != "vanilla":
    raise ValueError(f"{source} holds a {teacher_cfg.method} run; traditional_kd distils a "
                     "trained vanilla (Baseline-1) teacher")
  def differs(field):
    mine, theirs = getattr(cfg, field), getattr(teacher_cfg, field)
    return sorted(mine) != sorted(theirs) if field == "tasks" else mine != theirs
  differ = [f"{f}: teacher {getattr(teacher_cfg, f)!r} vs this run {getattr(cfg, f)!r}"
            for f in ("tasks", "num_classes", "height", "width") if differs(f)]
  if differ:
    raise ValueError(f"{source} was trained on other data: " + "; ".join(differ))


def count_params(model: keras.Model | None) -> int:
  """Learnable parameters of `model` (0 for None): every weight except BatchNorm's moving
  statistics, counted even when the model is frozen (as PyTorch counts `parameters()`)."""
  if model is None:
    return 0
  learnable = [w for w in model.weights if "moving_" not in w.path]
  return int(sum(int(keras.ops.size(w)) for w in learnable))
