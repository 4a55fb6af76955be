"""`objective.png`: the objective against the trial number (with the running best) and against
each searched flag, one scatter panel each, drawn with Pillow (matplotlib is not a dependency).

x axes: trial order (trial ids sorted); a range's values (log10 scale for a log range, labelled
in the flag's own units); a choice's values as evenly spaced categories. y: the objective of the
completed trials, in its own units.
"""

from __future__ import annotations

import math

from PIL import Image, ImageDraw, ImageFont

PANEL = (420, 300)  # pixels per panel
_LEFT, _RIGHT, _TOP, _BOTTOM = 70, 20, 30, 45
_COLUMNS = 3


def save(path: str, table: list, objective, space: tuple) -> None:
  """Writes the figure for the leaderboard rows `table` (leaderboard.rows)."""
  done = sorted((r for r in table if r.objective is not None), key=lambda r: r.trial_id)
  order = {r.trial_id: i for i, r in enumerate(sorted(table, key=lambda r: r.trial_id))}
  panels = [("trial", [(order[r.trial_id], r.objective) for r in done], None)]
  for h in space:
    points = []
    for r in done:
      value = r.values.get(h.name)
      if value is None:
        continue
      if h.values:
        labels = [_label(v) for v in h.values]
        points.append((labels.index(_label(value)) if _label(value) in labels else 0,
                       r.objective))
      else:
        points.append((math.log10(value) if h.log and value > 0 else float(value), r.objective))
    panels.append((h.name, points, h))
  rows = math.ceil(len(panels) / _COLUMNS)
  columns = min(len(panels), _COLUMNS)
  image = Image.new("RGB", (PANEL[0] * columns, PANEL[1] * rows), "white")
  draw = ImageDraw.Draw(image)
  font = ImageFont.load_default()
  for i, (name, points, h) in enumerate(panels):
    origin = ((i % _COLUMNS) * PANEL[0], (i // _COLUMNS) * PANEL[1])
    _panel(draw, font, origin, name, points, h, objective,
           running_best=(i == 0))
  image.save(path)


def _label(value) -> str:
  if isinstance(value, (list, tuple)):
    return ",".join(map(str, value))
  return f"{value:g}" if isinstance(value, float) else str(value)


def _panel(draw, font, origin, name, points, h, objective, running_best: bool) -> None:
  x0, y0 = origin[0] + _LEFT, origin[1] + _TOP
  x1, y1 = origin[0] + PANEL[0] - _RIGHT, origin[1] + PANEL[1] - _BOTTOM
  draw.rectangle([x0, y0, x1, y1], outline="black")
  title = f"{objective.name} vs {name}" + (" (log)" if h is not None and h.log else "")
  draw.text((x0, origin[1] + 8), title, fill="black", font=font)
  if not points:
    draw.text((x0 + 10, (y0 + y1) // 2), "no completed trial", fill="grey", font=font)
    return
  xs, ys = [p[0] for p in points], [p[1] for p in points]
  if h is not None and h.values:
    xlo, xhi = -0.5, len(h.values) - 0.5
  elif h is not None:
    xlo, xhi = ((math.log10(h.min), math.log10(h.max)) if h.log else (h.min, h.max))
  else:
    xlo, xhi = -0.5, max(xs) + 0.5
  ylo, yhi = min(ys), max(ys)
  if xhi <= xlo:
    xlo, xhi = xlo - 1, xhi + 1
  if yhi <= ylo:
    ylo, yhi = ylo - 1, yhi + 1
  pad = 0.05 * (yhi - ylo)
  ylo, yhi = ylo - pad, yhi + pad

  def at(x, y):
    return (x0 + (x - xlo) / (xhi - xlo) * (x1 - x0), y1 - (y - ylo) / (yhi - ylo) * (y1 - y0))

  for y in (ylo + pad, yhi - pad):
    draw.text((origin[0] + 4, at(xlo, y)[1] - 6), f"{y:.4g}", fill="black", font=font)
  if h is not None and h.values:
    for k, v in enumerate(h.values):
      draw.text((at(k, ylo)[0] - 10, y1 + 6), _label(v)[:12], fill="black", font=font)
  elif h is not None:
    for x, v in ((xlo, h.min), (xhi, h.max)):
      draw.text((at(x, ylo)[0] - 12, y1 + 6), f"{v:.3g}", fill="black", font=font)
  else:
    for x in sorted({0, int(max(xs))}):
      draw.text((at(x, ylo)[0] - 3, y1 + 6), str(x), fill="black", font=font)
    draw.text(((x0 + x1) // 2 - 30, y1 + 22), "trial (order)", fill="black", font=font)
  if running_best:
    better = max if objective.direction == "max" else min
    best, line = None, []
    for x, y in sorted(points):
      best = y if best is None else better(best, y)
      line.append(at(x, best))
    if len(line) > 1:
      draw.line(line, fill=(0, 150, 0), width=2)
  for x, y in points:
    px, py = at(x, y)
    draw.ellipse([px - 4, py - 4, px + 4, py + 4], fill=(30, 90, 200), outline="black")
