"""Prediction figures: one grid per image (predict.py, the TensorBoard images of train.py).

A grid has one row per task and the columns: the input, the ground truth (when known), then per
role its prediction and, with a ground truth, its error map; last a key (the class legend of a
class map, or the colour scale shared by the row). The colours are the task's (`Task.colourise`,
`display_range`, `legend`, `error_map`): nothing here knows a task by name. Every panel is the
image's pixels enlarged `zoom` times by pixel repetition (a class map keeps its palette colours
exactly), under a TITLE_H-pixel caption; cells are PAD pixels apart. Pillow only.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from sdmtcnn_tf.tasks.base import heat

TITLE_H = 12          # caption strip above each panel (Pillow's default bitmap font)
PAD = 4               # gap right of and below every cell
LEGEND_LINE = 11      # one legend entry
LEGEND_COLUMN_W = 84  # one column of legend entries (swatch + name)
SCALE_W = 64          # a colour scale: bar + its numbers
MIN_PANEL = 96        # panels are enlarged until their short side reaches this
ROLE_LETTER = {"teacher": "T", "student": "S"}
BACKGROUND = (255, 255, 255)
TEXT = (0, 0, 0)


@dataclasses.dataclass(frozen=True)
class Layout:
  """Where everything of a grid goes: the panel size, the columns and the key's width."""

  panel_h: int
  panel_w: int
  columns: tuple  # ("input", "truth", "teacher", "teacher error", ...)
  rows: int
  key_w: int

  @property
  def cell_h(self) -> int:
    return TITLE_H + self.panel_h + PAD

  @property
  def cell_w(self) -> int:
    return self.panel_w + PAD

  @property
  def size(self) -> tuple:
    """(height, width) of the grid in pixels."""
    return self.rows * self.cell_h, len(self.columns) * self.cell_w + self.key_w

  def panel_origin(self, row: int, column: str) -> tuple:
    """(top, left) pixel of a panel's image (below its caption)."""
    return row * self.cell_h + TITLE_H, self.columns.index(column) * self.cell_w


def zoom_of(height: int, width: int) -> int:
  return max(1, -(-MIN_PANEL // max(1, min(height, width))))


def layout(tasks, height: int, width: int, roles, with_truth: bool, class_names=()) -> Layout:
  """The grid layout of an image of height x width for `tasks` and `roles`."""
  zoom = zoom_of(height, width)
  panel_h, panel_w = height * zoom, width * zoom
  columns = ["input"] + (["truth"] if with_truth else [])
  for role in roles:
    columns += [role] + ([f"{role} error"] if with_truth else [])
  per_column = max(1, panel_h // LEGEND_LINE)
  key_w = SCALE_W
  for task in tasks:
    entries = len(task.legend(class_names))
    if entries:
      key_w = max(key_w, -(-entries // per_column) * LEGEND_COLUMN_W)
  return Layout(panel_h, panel_w, tuple(columns), len(tasks), key_w)


def prediction_maps(outputs: dict, roles, tasks) -> list:
  """A Keras network's batch outputs {role: {task: [B, H, W, C]}} -> per image {role: {task:
  prediction map (Task.prediction_map)}}, for the roles in `roles` that `outputs` holds."""
  roles = [r for r in roles if r in outputs]
  batch = len(outputs[roles[0]][tasks[0].name]) if roles else 0
  return [{r: {t.name: t.prediction_map(np.asarray(outputs[r][t.name][i])) for t in tasks}
           for r in roles} for i in range(batch)]


def panels(tasks, image, truth, predictions) -> dict:
  """The panels' pixels at the image's size: {(task name, column): uint8 [H, W, 3]}, and per
  task the colour range of its maps and of its errors: {(task name, "range"|"error range"):
  (lo, hi) or None}.

  image: uint8 [H, W, 3]; truth: {task: label_map} or None; predictions: {role: {task:
  prediction_map}} (maps as Task.label_map / prediction_map / served_map give them)."""
  out = {}
  for task in tasks:
    maps = ([truth[task.name]] if truth else []) + [p[task.name] for p in predictions.values()]
    value_range = task.display_range(maps)
    out[(task.name, "range")] = value_range
    out[(task.name, "input")] = np.asarray(image, np.uint8)
    if truth:
      out[(task.name, "truth")] = task.colourise(truth[task.name], value_range)
    errors = {}
    for role, prediction in predictions.items():
      out[(task.name, role)] = task.colourise(prediction[task.name], value_range)
      if truth:
        errors[role] = task.error_map(prediction[task.name], truth[task.name])
    finite = np.concatenate([e[np.isfinite(e)] for e in errors.values()] or [np.zeros(0)])
    error_range = (0.0, float(max(np.percentile(finite, 99), 1e-6))) if finite.size else None
    out[(task.name, "error range")] = error_range
    for role, error in errors.items():
      out[(task.name, f"{role} error")] = heat(error / (error_range or (0, 1.0))[1])
  return out


def _caption(column: str, task, value_range=None) -> str:
  role, _, error = column.partition(" ")
  if column in ("input", "truth"):
    return f"{task.name} {'truth' if column == 'truth' else 'input'}"
  text = f"{role} {task.name}"
  if error:
    text = f"{ROLE_LETTER.get(role, role)} error"
    if value_range:
      text += f" 0-{_number(value_range[1])}"
  return text


def _number(value: float) -> str:
  return f"{value:.3g}"


def grid(tasks, image, truth, predictions, class_names=()):
  """(uint8 [height, width, 3] grid, {(task, column): panel at the image's size}). See
  `panels` for the arguments; the columns' roles are `predictions`' keys in order."""
  from PIL import Image, ImageDraw, ImageFont
  image = np.asarray(image, np.uint8)
  height, width = image.shape[:2]
  shape = layout(tasks, height, width, list(predictions), bool(truth), class_names)
  zoom = shape.panel_h // height
  pieces = panels(tasks, image, truth, predictions)
  canvas = Image.new("RGB", shape.size[::-1], BACKGROUND)
  draw = ImageDraw.Draw(canvas)
  font = ImageFont.load_default()
  for row, task in enumerate(tasks):
    for column in shape.columns:
      top, left = shape.panel_origin(row, column)
      pixels = np.repeat(np.repeat(pieces[(task.name, column)], zoom, 0), zoom, 1)
      canvas.paste(Image.fromarray(pixels), (left, top))
      draw.text((left + 1, top - TITLE_H), _caption(column, task,
                                                    pieces[(task.name, "error range")]),
                fill=TEXT, font=font)
    key_left = len(shape.columns) * shape.cell_w
    top = row * shape.cell_h + TITLE_H
    entries = task.legend(class_names)
    if entries:
      per_column = max(1, shape.panel_h // LEGEND_LINE)
      for i, (name, colour) in enumerate(entries):
        x = key_left + (i // per_column) * LEGEND_COLUMN_W
        y = top + (i % per_column) * LEGEND_LINE
        draw.rectangle((x, y + 1, x + 8, y + 9), fill=colour)
        draw.text((x + 11, y), name[:12], fill=TEXT, font=font)
    elif pieces[(task.name, "range")]:
      lo, hi = pieces[(task.name, "range")]
      # the task's own colours over its range, top = hi (a depth of 0 would read "no value")
      ramp = np.linspace(hi, lo, shape.panel_h - 2 * LEGEND_LINE, dtype=np.float32)
      ramp = np.maximum(ramp, 1e-6 * max(abs(hi), 1.0))
      bar = task.colourise(np.repeat(ramp[:, None], 12, 1), (lo, hi))
      canvas.paste(Image.fromarray(bar), (key_left, top + LEGEND_LINE))
      draw.text((key_left, top), _number(hi), fill=TEXT, font=font)
      draw.text((key_left, top + shape.panel_h - LEGEND_LINE), _number(lo), fill=TEXT, font=font)
  return np.asarray(canvas), {k: v for k, v in pieces.items() if isinstance(v, np.ndarray)}


def png_bytes(pixels: np.ndarray) -> bytes:
  import io
  from PIL import Image
  buffer = io.BytesIO()
  Image.fromarray(np.asarray(pixels, np.uint8)).save(buffer, format="PNG")
  return buffer.getvalue()
