"""Config -> Network: the functional training graph of the config's method and the teacher /
student serving sub-models. Pure: no file is read and no global seed is set here (the entry
points seed, experiment.build_model; a frozen teacher's weights are loaded by train.py).

The training graph (`Network.model`) maps an image [B, H, W, 3] (float32 in [0, 1]) to a nested
structure of float32 tensors (which parts exist depends on the method, see methods/):
  {"teacher": {task: [B, H, W, C_task]},          full network (encoder + decoder + head)
   "student": {task: [B, H, W, C_task]},          the reported student (not vanilla)
   "exits":   {"e<l>": {task: [B, H, W, C_task]}}, SD-vanilla's exits after encoder stage l
   "hints":   {key: {"student": [B, h, w, C],     an adapted encoder-side feature (Eq. 6)
                     "teacher": [B, h, w, C]}}}   and the decoder-side feature teaching it
Semseg outputs are logits, normals unit vectors, the others linear (each task's activation).
`Network.teacher` and `Network.student` are sub-models sharing the same layers, with outputs
keyed by task name: they are what `export` serves. The student pools with plain max pooling
(`index_free`): it never reads the SegNet pooling's switches, so it does not compute them.
"""

from __future__ import annotations

import dataclasses

import keras

from sdmtcnn_tf import methods
from sdmtcnn_tf.config import ExperimentConfig
from sdmtcnn_tf.models import layers as L

IMAGE_INPUT = "image"


@dataclasses.dataclass
class Network:
  model: keras.Model  # the training graph, outputs as in the module docstring
  teacher: keras.Model  # image -> {task: teacher output}
  student: keras.Model | None  # image -> {task: student output}; None for vanilla
  frozen_teacher: bool = False  # traditional_kd: the teacher is a trained, frozen network


def build_network(cfg: ExperimentConfig,
                  teacher_cfg: ExperimentConfig | None = None) -> Network:
  """Builds the training graph of `cfg`'s method and its serving sub-models.

  traditional_kd: `teacher_cfg` is the config of the trained vanilla teacher (the run records
  it at training start, see experiment.teacher_config); None builds a vanilla teacher like
  `cfg` (dry runs, tests).
  """
  method = methods.get(cfg.method.name)
  image = keras.Input((cfg.data.height, cfg.data.width, 3), name=IMAGE_INPUT)
  with L.kernel_initializer_scope(cfg.model.kernel_initializer):
    outputs, teacher, student, frozen_teacher = method.build(image, cfg, teacher_cfg)
  name = f"{cfg.method.name}_{cfg.model.backbone}"
  return Network(
      model=keras.Model(image, outputs, name=name),
      teacher=frozen_teacher or keras.Model(image, teacher, name=f"{name}_teacher"),
      student=(index_free(keras.Model(image, student, name=f"{name}_student")) if student
               else None),
      frozen_teacher=frozen_teacher is not None)


def index_free(model: keras.Model) -> keras.Model:
  """`model` with every MaxPoolWithArgmax replaced by a plain 2x2 max pooling of the same name;
  every other layer is the model's own (shared, so are its weights). The pooled values are the
  same (the indices only record where the maxima were). Raises ValueError when an output of
  `model` reads the indices (SegNet's unpooling: the teacher), which the clone cannot compute.
  """
  def call(layer, *args, **kwargs):
    if isinstance(layer, L.MaxPoolWithArgmax):
      # only the pooled value: the node's second output (the indices) stays uncomputed
      return keras.layers.MaxPooling2D(2, padding="same", name=layer.name)(*args, **kwargs)
    return layer(*args, **kwargs)

  try:
    return keras.models.clone_model(model, clone_function=lambda layer: layer,
                                    call_function=call)
  except ValueError as e:
    raise ValueError(f"{model.name} reads the argmax pooling indices ({e})") from None


def count_params(model: keras.Model | None) -> int:
  """Learnable parameters of `model` (0 for None): every weight except BatchNorm's moving
  statistics, counted even when the model is frozen (as PyTorch counts `parameters()`)."""
  if model is None:
    return 0
  learnable = [w for w in model.weights if "moving_" not in w.path]
  return int(sum(int(keras.ops.size(w)) for w in learnable))
