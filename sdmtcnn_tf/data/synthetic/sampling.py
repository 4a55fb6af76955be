"""Random scene sampling for the synthetic dataset: object models (random dimensions per class),
the builder that places furniture on the floor, small objects on tables and cabinets, paintings
and a window on the walls, and `sample_scene`, which draws a whole Scene (room, camera pose,
objects, lighting) from a numpy Generator. The order of the random draws defines the dataset.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from sdmtcnn_tf.data.synthetic.raycast import _Hits, _cast_room, _rot_x, _rot_y, _rot_z
from sdmtcnn_tf.data.synthetic.scene import (
    _ROOM_INSTANCES, _WALL_X0_I, _WALL_X1_I, _WALL_Z0_I, _WALL_Z1_I, BALL, BED, BIN, BOX,
    CABINET, CEILING, CHAIR, FLOOR, PAINTING, SOFA, TABLE, UNLABELLED, WALL, WINDOW, Box,
    Cylinder, Scene, Sphere)

# Display-space base colours (RGB in [0, 1]) per class; each object gets a random tint.
BASE_COLOURS = np.array([
    (0.62, 0.47, 0.32),  # floor: light wood
    (0.80, 0.78, 0.72),  # wall: off-white
    (0.93, 0.93, 0.95),  # ceiling
    (0.80, 0.88, 1.00),  # window: sky (emissive)
    (0.25, 0.35, 0.65),  # painting
    (0.85, 0.30, 0.35),  # bed
    (0.35, 0.20, 0.10),  # table: dark wood
    (0.30, 0.52, 0.35),  # cabinet
    (0.40, 0.32, 0.62),  # sofa
    (0.92, 0.60, 0.15),  # chair
    (0.72, 0.60, 0.40),  # box: cardboard
    (0.20, 0.60, 0.72),  # bin
    (0.92, 0.85, 0.20),  # ball
])


def _unit(v) -> np.ndarray:
  v = np.asarray(v, np.float64)
  return v / np.linalg.norm(v)


@dataclasses.dataclass
class _Model:
  """An object in its own frame (origin on the floor under its centre, +z = front).

  parts: ("box", center[3], half[3], corners_are_keypoints) / ("cylinder", radius, height) /
    ("sphere", radius); cylinders and spheres stand centred on the origin.
  half_xz: footprint half extents. support: None or (top height, half x, half z) where small
    objects may stand.
  """

  cls: int
  parts: list
  half_xz: tuple
  support: tuple | None = None
  against_wall: bool = False


def _model(cls: int, rng: np.random.Generator) -> _Model:
  """Random dimensions (metres) of an object of class `cls` (UNLABELLED = random clutter)."""
  u = rng.uniform
  if cls == BED:
    hx, hz, hb = u(0.45, 0.8), u(0.9, 1.05), u(0.3, 0.5)
    top = hb + u(0.3, 0.6)
    return _Model(cls, [("box", (0, hb / 2, 0), (hx, hb / 2, hz), True),
                        ("box", (0, top / 2, -hz + 0.04), (hx, top / 2, 0.04), True)],
                  (hx, hz), against_wall=True)
  if cls == TABLE:
    hx, hz, ht = u(0.35, 0.75), u(0.3, 0.55), u(0.68, 0.78)
    parts = [("box", (0, ht - 0.03, 0), (hx, 0.03, hz), True)]
    for sx in (-1, 1):
      for sz in (-1, 1):
        parts.append(("box", (sx * (hx - 0.05), (ht - 0.06) / 2, sz * (hz - 0.05)),
                      (0.03, (ht - 0.06) / 2, 0.03), False))
    return _Model(cls, parts, (hx, hz), support=(ht, hx - 0.05, hz - 0.05))
  if cls == CABINET:
    hx, hz, h = u(0.3, 0.6), u(0.2, 0.3), u(0.8, 2.0)
    return _Model(cls, [("box", (0, h / 2, 0), (hx, h / 2, hz), True)], (hx, hz),
                  support=(h, hx - 0.03, hz - 0.03) if h < 1.3 else None, against_wall=True)
  if cls == SOFA:
    hx, hz = u(0.7, 1.1), u(0.4, 0.5)
    return _Model(cls, [("box", (0, 0.4, -hz + 0.1), (hx, 0.4, 0.1), True),
                        ("box", (-(hx - 0.1), 0.3, 0.1), (0.1, 0.3, hz - 0.1), True),
                        ("box", (hx - 0.1, 0.3, 0.1), (0.1, 0.3, hz - 0.1), True),
                        ("box", (0, 0.21, 0.1), (hx - 0.2, 0.21, hz - 0.1), True)],
                  (hx, hz), against_wall=True)
  if cls == CHAIR:
    s, hs = u(0.2, 0.26), u(0.42, 0.48)
    parts = [("box", (0, hs - 0.025, 0), (s, 0.025, s), True),
             ("box", (0, hs + 0.22, -s + 0.025), (s, 0.22, 0.025), True)]
    for sx in (-1, 1):
      for sz in (-1, 1):
        parts.append(("box", (sx * (s - 0.03), (hs - 0.05) / 2, sz * (s - 0.03)),
                      (0.02, (hs - 0.05) / 2, 0.02), False))
    return _Model(cls, parts, (s, s))
  if cls == BOX:
    hx, hy, hz = u(0.1, 0.3), u(0.1, 0.3), u(0.1, 0.3)
    return _Model(cls, [("box", (0, hy, 0), (hx, hy, hz), True)], (hx, hz))
  if cls == BIN:
    r = u(0.15, 0.3)
    return _Model(cls, [("cylinder", r, u(0.4, 0.9))], (r, r))
  if cls == BALL:
    r = u(0.15, 0.35)
    return _Model(cls, [("sphere", r)], (r, r))
  if cls == UNLABELLED:
    kind = rng.integers(3)
    if kind == 0:
      h = u(0.15, 0.5, size=3)
      return _Model(cls, [("box", (0, h[1], 0), tuple(h), True)], (h[0], h[2]))
    if kind == 1:
      r = u(0.1, 0.3)
      return _Model(cls, [("cylinder", r, u(0.2, 1.2))], (r, r))
    r = u(0.1, 0.35)
    return _Model(cls, [("sphere", r)], (r, r))
  raise ValueError(f"no model for class {cls}")


_OBJECT_CLASSES = (BED, TABLE, CABINET, SOFA, CHAIR, BOX, BIN, BALL)
_OBJECT_WEIGHTS = np.array([0.10, 0.14, 0.12, 0.10, 0.14, 0.14, 0.13, 0.13])


class _SceneBuilder:
  """Accumulates instances and primitives while a scene is sampled."""

  def __init__(self, rng: np.random.Generator, room: np.ndarray, cam_pos: np.ndarray,
               yaw: float):
    self.rng = rng
    self.room = room
    self.cam_pos = cam_pos
    self.forward = np.array([-np.sin(yaw), 0.0, -np.cos(yaw)])  # horizontal view direction
    self.right = np.array([np.cos(yaw), 0.0, -np.sin(yaw)])
    self.boxes, self.spheres, self.cylinders = [], [], []
    self.classes = [FLOOR, CEILING, WALL, WALL, WALL, WALL, WINDOW]
    self.colours = [self._tint(c) for c in self.classes]
    self.keypoints = [np.array([x, y, z]) for x in (0, room[0]) for y in (0, room[1])
                      for z in (0, room[2])]
    self.footprints = []  # (x, z, radius) on the floor
    self.supports = []  # (x, z, yaw, top, half x, half z)
    self.stacked = []  # (x, z, radius) of the objects standing on supports
    self.num_prims = _ROOM_INSTANCES

  def _tint(self, cls: int) -> np.ndarray:
    if cls == UNLABELLED:
      return self.rng.uniform(0.2, 0.9, size=3)
    if cls == PAINTING:
      return np.clip(0.5 * BASE_COLOURS[cls] + self.rng.uniform(0.0, 0.5, size=3), 0, 1)
    jitter = self.rng.uniform(0.85, 1.1) * (1.0 + self.rng.normal(0.0, 0.05, size=3))
    return np.clip(BASE_COLOURS[cls] * jitter, 0.0, 1.0)

  def new_instance(self, cls: int) -> int:
    self.classes.append(cls)
    self.colours.append(self._tint(cls))
    return len(self.classes) - 1

  def _prim(self) -> int:
    self.num_prims += 1
    return self.num_prims - 1

  def add_model(self, model: _Model, pos: np.ndarray, yaw: float) -> None:
    """Instantiates `model` with its origin at world `pos` [3], rotated by `yaw`."""
    inst = self.new_instance(model.cls)
    rot = _rot_y(yaw)
    for part in model.parts:
      if part[0] == "box":
        _, center, half, corners = part
        box = Box(pos + rot @ np.asarray(center, np.float64), np.asarray(half, np.float64),
                  yaw, inst, self._prim())
        self.boxes.append(box)
        if corners:
          signs = np.array([(a, b, c) for a in (-1, 1) for b in (-1, 1) for c in (-1, 1)])
          self.keypoints.extend(box.center + (signs * box.half) @ rot.T)
      elif part[0] == "cylinder":
        _, r, h = part
        self.cylinders.append(Cylinder(pos[[0, 2]].copy(), r, pos[1], pos[1] + h, inst,
                                       self._prim()))
      else:
        _, r = part
        self.spheres.append(Sphere(pos + np.array([0.0, r, 0.0]), r, inst, self._prim()))

  def _fits(self, x: float, z: float, yaw: float, model: _Model) -> bool:
    hx, hz = model.half_xz
    c, s = abs(np.cos(yaw)), abs(np.sin(yaw))
    ex, ez = c * hx + s * hz, s * hx + c * hz  # footprint bounding box half extents
    if x - ex < 0.01 or x + ex > self.room[0] - 0.01:
      return False
    if z - ez < 0.01 or z + ez > self.room[2] - 0.01:
      return False
    radius = np.hypot(hx, hz)
    if np.hypot(x - self.cam_pos[0], z - self.cam_pos[2]) < radius + 0.5:
      return False
    return all(np.hypot(x - fx, z - fz) >= radius + fr for fx, fz, fr in self.footprints)

  def place_on_floor(self, model: _Model, tries: int = 30) -> bool:
    hx, hz = model.half_xz
    for _ in range(tries):
      if model.against_wall and self.rng.random() < 0.6:
        wall = self.rng.integers(4)
        yaw = (0.0, np.pi, np.pi / 2, -np.pi / 2)[wall]
        along = self.rng.uniform(hx + 0.02, max(hx + 0.02, (self.room[0 if wall < 2 else 2]
                                                              - hx - 0.02)))
        off = hz + 0.02
        x, z = {0: (along, off), 1: (along, self.room[2] - off), 2: (off, along),
                3: (self.room[0] - off, along)}[wall]
      elif self.rng.random() < 0.8:  # somewhere in view
        yaw = self.rng.uniform(0.0, 2 * np.pi)
        ahead = self.rng.uniform(1.0, 4.5)
        side = self.rng.uniform(-0.5, 0.5) * ahead
        x, _, z = self.cam_pos + ahead * self.forward + side * self.right
      else:
        yaw = self.rng.uniform(0.0, 2 * np.pi)
        x, z = self.rng.uniform(0.0, self.room[0]), self.rng.uniform(0.0, self.room[2])
      if self._fits(x, z, yaw, model):
        self.add_model(model, np.array([x, 0.0, z]), yaw)
        self.footprints.append((x, z, np.hypot(hx, hz)))
        if model.support is not None:
          self.supports.append((x, z, yaw) + tuple(model.support))
        return True
    return False

  def place_on_support(self, model: _Model, tries: int = 5) -> bool:
    """Puts a small object on a random table / low cabinet top, if it fits there."""
    if not self.supports:
      return False
    x, z, yaw, top, sx, sz = self.supports[self.rng.integers(len(self.supports))]
    r = np.hypot(*model.half_xz)
    if r > min(sx, sz):
      return False
    for _ in range(tries):
      local = np.array([self.rng.uniform(-(sx - r), sx - r), top,
                        self.rng.uniform(-(sz - r), sz - r)])
      pos = np.array([x, 0.0, z]) + _rot_y(yaw) @ local
      if all(np.hypot(pos[0] - ox, pos[2] - oz) >= r + orad for ox, oz, orad in self.stacked):
        self.add_model(model, pos, yaw + self.rng.uniform(-0.5, 0.5))
        self.stacked.append((pos[0], pos[2], r))
        return True
    return False

  def add_painting(self, wall: int, taken: list) -> None:
    """A thin box hanging on `wall` (instance id), not overlapping `taken` (u0, u1) spans."""
    length = self.room[2] if wall in (_WALL_X0_I, _WALL_X1_I) else self.room[0]
    hw, hh = self.rng.uniform(0.3, 0.8), self.rng.uniform(0.25, 0.5)
    if length < 2 * hw + 0.3:
      return
    u = self.rng.uniform(hw + 0.15, length - hw - 0.15)
    if any(u + hw > a and u - hw < b for a, b in taken):
      return
    taken.append((u - hw, u + hw))
    y = self.rng.uniform(1.2, min(1.9, self.room[1] - 0.5))
    depth = 0.015
    center, half, normal = {
        _WALL_X0_I: ((depth, y, u), (depth, hh, hw), (1, 0, 0)),
        _WALL_X1_I: ((self.room[0] - depth, y, u), (depth, hh, hw), (-1, 0, 0)),
        _WALL_Z0_I: ((u, y, depth), (hw, hh, depth), (0, 0, 1)),
        _WALL_Z1_I: ((u, y, self.room[2] - depth), (hw, hh, depth), (0, 0, -1)),
    }[wall]
    center, half = np.array(center, np.float64), np.array(half, np.float64)
    self.boxes.append(Box(center, half, 0.0, self.new_instance(PAINTING), self._prim()))
    front = center + depth * np.array(normal)
    along = np.array((0, 0, hw) if wall in (_WALL_X0_I, _WALL_X1_I) else (hw, 0, 0))
    for a in (-1, 1):
      for b in (-1, 1):
        self.keypoints.append(front + a * along + np.array([0, b * hh, 0]))


def _wall_point(room: np.ndarray, wall: int, along: float, y: float) -> np.ndarray:
  """World point [3] on `wall` (instance id) at coordinate `along` the wall and height y."""
  if wall in (_WALL_X0_I, _WALL_X1_I):
    return np.array([0.0 if wall == _WALL_X0_I else room[0], y, along])
  return np.array([along, y, 0.0 if wall == _WALL_Z0_I else room[2]])


def _wall_ahead(room: np.ndarray, cam_pos: np.ndarray, yaw: float) -> tuple:
  """(distance, wall instance) of the wall straight ahead of a camera with this yaw."""
  hits = _Hits(1)
  _cast_room(room, None, cam_pos, np.array([[-np.sin(yaw), 0.0, -np.cos(yaw)]]), hits)
  return hits.t[0], int(hits.instance[0])


def sample_scene(rng: np.random.Generator) -> Scene:
  """Draws a random room, camera pose, furniture and lighting (does not depend on image size)."""
  u = rng.uniform
  room = np.array([u(3.5, 6.5), u(2.5, 3.1), u(3.5, 7.0)])
  cam_pos = np.array([u(0.2, 0.8) * room[0], u(1.1, 1.7), u(0.2, 0.8) * room[2]])
  # Look towards the farthest of 8 directions, so that most views see across the room.
  yaws = u(0.0, 2 * np.pi) + np.arange(8) * np.pi / 4
  yaw = yaws[int(np.argmax([_wall_ahead(room, cam_pos, y)[0] for y in yaws]))]
  yaw += u(-0.2, 0.2)
  pitch, roll = np.deg2rad(u(-20.0, 0.0)), np.deg2rad(u(-3.0, 3.0))
  cam_rot = _rot_y(yaw) @ _rot_x(pitch) @ _rot_z(roll)

  builder = _SceneBuilder(rng, room, cam_pos, yaw)
  ahead = _wall_ahead(room, cam_pos, yaw)[1]
  window = None
  taken = {w: [] for w in (_WALL_X0_I, _WALL_X1_I, _WALL_Z0_I, _WALL_Z1_I)}
  if rng.random() < 0.7:
    wall = ahead if rng.random() < 0.8 else int(rng.integers(2, 6))
    length = room[2] if wall in (_WALL_X0_I, _WALL_X1_I) else room[0]
    hw = min(u(0.4, 0.9), length / 2 - 0.3)
    uc = u(hw + 0.2, length - hw - 0.2)
    y0 = u(0.7, 1.0)
    y1 = min(room[1] - 0.25, y0 + u(1.0, 1.6))
    window = (wall, uc - hw, uc + hw, y0, y1)
    taken[wall].append((uc - hw, uc + hw))
    for a in (uc - hw, uc + hw):
      for y in (y0, y1):
        builder.keypoints.append(_wall_point(room, wall, a, y))
  for _ in range(rng.choice(3, p=[0.3, 0.4, 0.3])):
    wall = ahead if rng.random() < 0.6 else int(rng.integers(2, 6))
    builder.add_painting(wall, taken[wall])

  for _ in range(rng.integers(4, 10)):
    cls = int(rng.choice(_OBJECT_CLASSES, p=_OBJECT_WEIGHTS))
    model = _model(cls, rng)
    if cls in (BOX, BALL, BIN) and rng.random() < 0.4 and builder.place_on_support(model):
      continue
    builder.place_on_floor(model)
  if rng.random() < 0.35:
    builder.place_on_floor(_model(UNLABELLED, rng))

  key = _unit(np.array([-0.35, 0.75, 0.55]) + rng.normal(0.0, 0.1, 3))
  fill = _unit(np.array([0.5, -0.1, 0.85]) + rng.normal(0.0, 0.1, 3))
  return Scene(room=room, cam_pos=cam_pos, cam_rot=cam_rot, boxes=tuple(builder.boxes),
               spheres=tuple(builder.spheres), cylinders=tuple(builder.cylinders),
               window=window, instance_class=np.array(builder.classes, np.int32),
               instance_colour=np.array(builder.colours), keypoints=np.array(builder.keypoints),
               key_light=key, fill_light=fill, floor_period=u(0.3, 0.6),
               wall_period=u(0.15, 0.4), exposure=u(0.9, 1.1))
