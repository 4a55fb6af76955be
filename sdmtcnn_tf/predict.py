"""Prediction figures: `python -m sdmtcnn_tf.predict`

  python -m sdmtcnn_tf.predict --model_dir=RUN --data_dir=DIR [--split=val] [--count=8] --out=DIR
  python -m sdmtcnn_tf.predict --model_dir=RUN --images='photos/*.jpg' --out=DIR [--separate]
  python -m sdmtcnn_tf.predict --export_dir=RUN/export --images=... --out=DIR

writes `<out>/<name>.png` per image: a grid (visualize.py) with one row per task and the input,
the ground truth (records only), each role's prediction and, with a ground truth, its error
map; a class legend (the manifest's class names) or the row's shared colour scale on the right.
`--separate` also writes each panel at the image's size as `<out>/<name>/<column>_<task>.png`.

--model_dir: a trained run (its teacher and, when it has one, its student; the images are
  resized to the training size). --export_dir: a SavedModel version folder
  (`export/teacher/1`), a role's base path (`export/teacher`: its newest version) or a serving
  folder (`export`: every role in it), called through serving_default; its outputs come at
  the image's size (images are first shrunk to at most MAX_SIDE pixels).
--images: PNG/JPEG (any size, 8-bit). --data_dir: converted records (manifest.json) of
  --split, the first --count examples, with their labels.
An image that cannot be decoded, a folder that is not a run or an export, records of other tasks
or size: one `error:` line naming it.
"""

from __future__ import annotations

import os
import re

from sdmtcnn_tf import cli  # first: it quiets TensorFlow's C++ logs before TF is imported

import numpy as np
from absl import flags

from sdmtcnn_tf import atomic, visualize

MAX_SIDE = 256
SAVED_MODEL = "saved_model.pb"


# ---- predictors: uint8 images -> {role: {task: map}} per image -------------------------------
class RunPredictor:
  """A trained run (experiment.load_trained): both roles at the training size."""

  def __init__(self, model_dir: str):
    from sdmtcnn_tf import experiment
    self.cfg, _, self.model = experiment.load_trained(model_dir)
    self.tasks = list(self.cfg.task_specs)
    self.label_units = self.cfg.data.label_units  # the units its predictions are in
    self.size = (self.cfg.data.height, self.cfg.data.width)

  def fit(self, image: np.ndarray) -> np.ndarray:
    """An image of any size -> the training size (bilinear, antialiased: as the export)."""
    if image.shape[:2] == self.size:
      return image
    import tensorflow as tf
    resized = tf.image.resize(tf.cast(image, tf.float32), self.size, antialias=True)
    return np.clip(np.round(resized.numpy()), 0, 255).astype(np.uint8)

  def __call__(self, images: np.ndarray) -> list:
    outputs = self.model(images.astype(np.float32) / 255.0, training=False)
    return visualize.prediction_maps(outputs, self.model.roles, self.tasks)


class ExportPredictor:
  """SavedModels written by `sdmtcnn_tf.export`, one per role, called through serving_default
  (outputs at the input's size; each task picks its map, Task.served_map)."""

  def __init__(self, export_dir: str, num_classes: int = 0):
    import tensorflow as tf
    from sdmtcnn_tf import export
    self.signature = export.SIGNATURE
    self.models = {role: tf.saved_model.load(path)
                   for role, path in find_exports(export_dir).items()}
    probe = np.zeros((1, 8, 8, 3), np.uint8)
    first = next(iter(self.models.values())).signatures[self.signature](image=tf.constant(probe))
    self.tasks = export_tasks({k: v.numpy()[0] for k, v in first.items()}, num_classes)
    self.size = None
    # a SavedModel does not record --taskonomy_label_units: labels shown as converted
    self.label_units = "converted"

  def fit(self, image: np.ndarray) -> np.ndarray:
    scale = MAX_SIDE / max(image.shape[:2])
    if scale >= 1:
      return image
    from PIL import Image
    size = (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale)))
    return np.asarray(Image.fromarray(image).resize(size, Image.BILINEAR))

  def __call__(self, images: np.ndarray) -> list:
    import tensorflow as tf
    out = [{} for _ in images]
    for role, model in self.models.items():
      served = model.signatures[self.signature](image=tf.constant(images))
      for i in range(len(images)):
        one = {k: v.numpy()[i] for k, v in served.items()}
        out[i][role] = {t.name: t.served_map(one) for t in self.tasks}
    return out


def find_exports(export_dir: str) -> dict:
  """{role: SavedModel folder} of --export_dir (see the module docstring)."""
  def newest(base):
    versions = [d for d in os.listdir(base) if d.isdigit()
                and os.path.exists(os.path.join(base, d, SAVED_MODEL))]
    return os.path.join(base, max(versions, key=int)) if versions else None

  if not os.path.isdir(export_dir):
    raise FileNotFoundError(f"--export_dir={export_dir} does not exist")
  role = os.path.basename(os.path.normpath(os.path.dirname(export_dir.rstrip("/"))))
  if os.path.exists(os.path.join(export_dir, SAVED_MODEL)):
    return {role if role in visualize.ROLE_LETTER else "model": export_dir}
  found = newest(export_dir)
  if found:
    name = os.path.basename(os.path.normpath(export_dir))
    return {name if name in visualize.ROLE_LETTER else "model": found}
  roles = {r: newest(os.path.join(export_dir, r)) for r in visualize.ROLE_LETTER
           if os.path.isdir(os.path.join(export_dir, r))}
  roles = {r: p for r, p in roles.items() if p}
  if not roles:
    raise FileNotFoundError(f"--export_dir={export_dir} holds no SavedModel ({SAVED_MODEL}): "
                            "expected a version folder, a role's base path or a serving folder "
                            "as sdmtcnn_tf.export writes them")
  return roles


def export_tasks(outputs: dict, num_classes: int = 0) -> list:
  """The Task objects whose outputs a SavedModel returns (`outputs`: one image's), class maps
  with the class count of its logits (or `num_classes`)."""
  from sdmtcnn_tf.config import ExperimentConfig
  from sdmtcnn_tf.tasks import registry
  names = [n for n in registry.names() if registry.task_class(n)().served_map(outputs) is not None]
  channels = [v.shape[-1] for k, v in outputs.items() if k.endswith("_logits") and v.ndim == 3]
  classes = num_classes or (channels[0] if channels else 13)
  return list(ExperimentConfig.from_flat(tasks=tuple(names), num_classes=classes).task_specs)


# ---- inputs: (name, uint8 image, {task: label map} or None) ---------------------------------
def read_images(pattern: str) -> list:
  from sdmtcnn_tf.serving_client import image_files, read_image
  stems, paths = image_files(pattern)
  return [(stem, read_image(path)[1], None) for stem, path in zip(stems, paths)]


def read_records(data_dir: str, split: str, count: int, tasks,
                 label_units: str = "converted") -> tuple:
  """(examples, class names) of the first `count` examples of `split` in `data_dir`, with
  the labels of `tasks` as label maps, in `label_units` (pipeline.make_dataset)."""
  from sdmtcnn_tf.data import pipeline, schema
  manifest = schema.read_manifest(data_dir)
  classes = next((t.channels for t in tasks if t.uses_classes), None)
  pipeline.check_dataset(data_dir, split, [t.name for t in tasks], manifest.height,
                         manifest.width, classes)
  ds = pipeline.make_dataset(data_dir, manifest, split, [t.name for t in tasks], 1,
                             training=False, with_keys=True,
                             label_units=label_units).take(count)
  out = []
  for keys, images, labels in ds:
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", keys.numpy()[0].decode())
    image = np.clip(np.round(images.numpy()[0] * 255.0), 0, 255).astype(np.uint8)
    out.append((name, image, {t.name: t.label_map(labels[t.name].numpy()[0]) for t in tasks}))
  return out, manifest.class_names


def run(out: str, model_dir: str = "", export_dir: str = "", images: str = "",
        data_dir: str = "", split: str = "val", count: int = 8, separate: bool = False) -> list:
  """Writes the figures; returns the paths written."""
  if bool(model_dir) == bool(export_dir):
    raise ValueError("give exactly one of --model_dir and --export_dir")
  if bool(images) == bool(data_dir):
    raise ValueError("give exactly one of --images and --data_dir")
  if count < 1:
    raise ValueError(f"--count={count}: expected at least 1")
  class_names = ()
  examples = read_images(images) if images else None  # an undecodable file stops us early
  if model_dir:
    predictor = RunPredictor(model_dir)
    run_data = predictor.cfg.data.data_dir
    if not data_dir and run_data and os.path.exists(os.path.join(run_data, "manifest.json")):
      from sdmtcnn_tf.data import schema
      class_names = schema.read_manifest(run_data).class_names
  else:
    classes = 0
    if data_dir:
      from sdmtcnn_tf.data import schema
      classes = schema.read_manifest(data_dir).num_classes
    predictor = ExportPredictor(export_dir, classes)
  if data_dir:
    examples, class_names = read_records(data_dir, split, count, predictor.tasks,
                                         predictor.label_units)
  written = []
  for name, image, truth in examples:
    if truth is None:
      image = predictor.fit(image)
    elif predictor.size is not None and image.shape[:2] != predictor.size:
      raise ValueError(f"--data_dir={data_dir}: images of {image.shape[0]}x{image.shape[1]}, "
                       f"but the run in --model_dir={model_dir} was trained at "
                       f"{predictor.size[0]}x{predictor.size[1]}")
    prediction = predictor(image[None])[0]
    pixels, pieces = visualize.grid(predictor.tasks, image, truth, prediction, class_names)
    path = os.path.join(out, f"{name}.png")
    atomic.write_bytes(path, visualize.png_bytes(pixels), label="figure")
    written.append(path)
    if separate:
      for (task, column), panel in pieces.items():
        if column == "input" and task != predictor.tasks[0].name:
          continue
        file = "input" if column == "input" else f"{column.replace(' ', '_')}_{task}"
        path = os.path.join(out, name, f"{file}.png")
        atomic.write_bytes(path, visualize.png_bytes(panel), label="figure")
        written.append(path)
  return written


def main(argv):
  cli.check_no_arguments(argv)
  fv = flags.FLAGS
  if not fv.out:
    raise ValueError("--out is required: the folder the figures go to")
  written = run(fv.out, fv.model_dir, fv.export_dir, fv.images, fv.data_dir, fv.split,
                fv.count, fv.separate)
  print(f"wrote {len(written)} files to {fv.out}")


if __name__ == "__main__":
  flags.DEFINE_string("model_dir", "", "A trained run directory.")
  flags.DEFINE_string("export_dir", "", "A SavedModel version folder, a role's base path or a "
                      "serving folder written by sdmtcnn_tf.export.")
  flags.DEFINE_string("images", "", "Glob of PNG/JPEG images (any size).")
  flags.DEFINE_string("data_dir", "", "Converted records (with manifest.json): figures with "
                      "the ground truth and error maps.")
  flags.DEFINE_string("split", "val", "The split of --data_dir.")
  flags.DEFINE_integer("count", 8, "How many examples of --data_dir (the first ones).")
  flags.DEFINE_string("out", "", "Folder for the figures.")
  flags.DEFINE_bool("separate", False, "Also write each panel as its own PNG.")
  cli.run(main)
