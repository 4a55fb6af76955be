"""The built-in synthetic dataset: procedurally generated rooms, rendered by ray casting.

Every example is a pinhole camera inside a box-shaped room (floor, ceiling, four walls, maybe a
window and paintings) furnished with a few objects standing on the floor (beds, tables,
cabinets, sofas, chairs, boxes, bins, balls; small ones sometimes on a table or cabinet).
Each pixel's ray is intersected analytically with every primitive (numpy, vectorised over
pixels) and the nearest hit gives all labels at once, so they are geometrically consistent:

  semseg     int16 [H, W]: class id (CLASS_NAMES), -1 = ignore at the occluding contours of
             objects and on the occasional unlabelled "clutter" object.
  depth      float32 [H, W, 1]: z-depth along the optical axis in metres; 0 = invalid (window
             glass, or beyond MAX_DEPTH).
  normals    float32 [H, W, 3]: unit surface normals in camera coordinates (x right, y up, z
             towards the camera), facing the camera; all-zero where depth is invalid.
  keypoints  float32 [H, W, 1]: max of Gaussian blobs (peak 1) at the visible projected corners
             of the room, boxes, window and paintings.
  edges      float32 [H, W, 1]: 1 on both sides of every change of surface (face of a box,
             plane of the room, object, window), else 0. Every depth, normal or class
             discontinuity in these scenes is such a change.
  image      uint8 [H, W, 3] RGB: per-object colour x textures (floor tiles, wall stripes) x
             Lambertian shading from two lights fixed in camera coordinates, blended towards a
             grey fog with distance (exp(-depth / FOG_METRES)), plus pixel noise.

World coordinates: metres, y up, the room spans [0, room[0]] x [0, room[1]] x [0, room[2]].
The camera (HFOV_DEGREES horizontal field of view, see `intrinsics`) stands 1.1-1.7 m above the
floor, pitched 0-20 degrees down, rolled at most 3 degrees.

An example depends only on (seed, split, index) (`example_rng`), so any example can be
regenerated on its own, and the same seed gives the same shard bytes.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import zlib

import numpy as np
import tqdm

from sdmtcnn_tf import tasks as tasks_lib
from sdmtcnn_tf.data import schema

DATASET_NAME = "synthetic"
GENERATOR_VERSION = 2  # 2: denser, bluer fog (a stronger per-pixel depth cue)

CLASS_NAMES = ("floor", "wall", "ceiling", "window", "painting", "bed", "table", "cabinet",
               "sofa", "chair", "box", "bin", "ball")
NUM_CLASSES = len(CLASS_NAMES)
(FLOOR, WALL, CEILING, WINDOW, PAINTING, BED, TABLE, CABINET, SOFA, CHAIR, BOX, BIN,
 BALL) = range(NUM_CLASSES)
UNLABELLED = tasks_lib.IGNORE_LABEL

HFOV_DEGREES = 60.0
MAX_DEPTH = 10.0  # metres; farther pixels get depth 0 (invalid)
FOG_METRES = 4.0
KEYPOINT_SIGMA = 0.01  # Gaussian sigma as a fraction of max(H, W), at least 1 pixel
SILHOUETTE_JUMP = 1.05  # an object pixel is ignored next to a pixel this much farther

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
FOG_COLOUR = np.array([0.35, 0.45, 0.65])

# Fixed instance (and primitive) ids of the room: index = instance id.
_FLOOR_I, _CEILING_I, _WALL_X0_I, _WALL_X1_I, _WALL_Z0_I, _WALL_Z1_I, _WINDOW_I = range(7)
_ROOM_INSTANCES = 7
# Room plane hit along axis a, going in the negative (0) or positive (1) direction.
_ROOM_PLANE = np.array([[_WALL_X0_I, _WALL_X1_I], [_FLOOR_I, _CEILING_I],
                        [_WALL_Z0_I, _WALL_Z1_I]])
_EPS = 1e-6
_FACES = 8  # surface id = primitive * _FACES + face


# ---------------------------------------------------------------------------------------------
# Scene description
# ---------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Box:
  """A box rotated by `yaw` (radians) about the vertical axis; metres, world coordinates."""

  center: np.ndarray  # [3]
  half: np.ndarray  # [3] half extents along the box's own x, y, z
  yaw: float
  instance: int
  prim: int


@dataclasses.dataclass(frozen=True)
class Sphere:
  center: np.ndarray  # [3]
  radius: float
  instance: int
  prim: int


@dataclasses.dataclass(frozen=True)
class Cylinder:
  """A vertical cylinder with axis (x, z) = `center_xz`, from height y0 to y1 (top cap)."""

  center_xz: np.ndarray  # [2]
  radius: float
  y0: float
  y1: float
  instance: int
  prim: int


@dataclasses.dataclass(frozen=True)
class Scene:
  """Everything `render` needs; independent of the image size.

  Attributes:
    room: [3] room size (x width, y height, z depth), metres.
    cam_pos: [3] camera centre, world metres.
    cam_rot: [3, 3] camera-to-world rotation; its columns are the camera x (right), y (up) and
      z (backwards) axes in world coordinates. A world vector v is `cam_rot.T @ v` in camera
      coordinates (so the floor normal in camera coordinates is `cam_rot[1]`).
    boxes, spheres, cylinders: the objects' primitives.
    window: None or (wall instance id, u0, u1, y0, y1): the window rectangle on that wall,
      u along the wall (z on the x = const walls, x on the z = const walls), y the height.
    instance_class: [I] int class id per instance (-1 = unlabelled).
    instance_colour: [I, 3] float display-space albedo per instance.
    keypoints: [K, 3] candidate keypoints (world); those visible from the camera are drawn.
    key_light, fill_light: [3] unit light directions in camera coordinates (towards light).
    floor_period, wall_period: texture periods, metres.
    exposure: global brightness factor.
  """

  room: np.ndarray
  cam_pos: np.ndarray
  cam_rot: np.ndarray
  boxes: tuple
  spheres: tuple
  cylinders: tuple
  window: tuple | None
  instance_class: np.ndarray
  instance_colour: np.ndarray
  keypoints: np.ndarray
  key_light: np.ndarray
  fill_light: np.ndarray
  floor_period: float
  wall_period: float
  exposure: float


def intrinsics(height: int, width: int) -> tuple:
  """(fx, fy, cx, cy) in pixels; pixel (row i, column j) is at (u, v) = (j, i).

  A camera point (x, y, z) (z < 0 in front) projects to u = cx + fx * x / -z,
  v = cy - fy * y / -z.
  """
  fx = (width / 2.0) / np.tan(np.deg2rad(HFOV_DEGREES) / 2.0)
  return fx, fx, (width - 1) / 2.0, (height - 1) / 2.0


def pixel_rays(height: int, width: int) -> np.ndarray:
  """float64 [H, W, 3] camera-frame ray directions with z = -1, so a hit at ray parameter t
  has z-depth t."""
  fx, fy, cx, cy = intrinsics(height, width)
  jj, ii = np.meshgrid(np.arange(width, dtype=np.float64), np.arange(height, dtype=np.float64))
  return np.stack([(jj - cx) / fx, -(ii - cy) / fy, -np.ones_like(jj)], axis=-1)


def _rot_x(a: float) -> np.ndarray:
  c, s = np.cos(a), np.sin(a)
  return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


def _rot_y(a: float) -> np.ndarray:
  c, s = np.cos(a), np.sin(a)
  return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def _rot_z(a: float) -> np.ndarray:
  c, s = np.cos(a), np.sin(a)
  return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def _unit(v) -> np.ndarray:
  v = np.asarray(v, np.float64)
  return v / np.linalg.norm(v)


# ---------------------------------------------------------------------------------------------
# Ray casting
# ---------------------------------------------------------------------------------------------

class _Hits:
  """Nearest hit per ray: t [N] (inf = none), world normal [N, 3], instance [N], surface [N]."""

  def __init__(self, n: int):
    self.t = np.full(n, np.inf)
    self.normal = np.zeros((n, 3))
    self.instance = np.full(n, -1, np.int32)
    self.surface = np.full(n, -1, np.int32)

  def take(self, idx, t, normal, instance, surface):
    self.t[idx] = t
    self.normal[idx] = normal
    self.instance[idx] = instance
    self.surface[idx] = surface


class _HitsSubset:
  """The rays `rows` of a _Hits, renumbered 0..len(rows)-1 (same interface)."""

  def __init__(self, hits: _Hits, rows: np.ndarray):
    self.hits, self.rows = hits, rows
    self.t = hits.t[rows]

  def take(self, idx, t, normal, instance, surface):
    self.hits.take(self.rows[idx], t, normal, instance, surface)


def _cast_room(room: np.ndarray, window: tuple | None, o: np.ndarray, d: np.ndarray,
               hits: _Hits) -> None:
  """Rays from inside the room leave it through one of its six planes (inward normals); a
  hit on the window rectangle (see Scene.window) belongs to the window instance."""
  n = len(d)
  with np.errstate(divide="ignore", invalid="ignore"):
    tb = np.where(d > 0, (room - o) / d, np.where(d < 0, -o / d, np.inf))
  axis = np.argmin(tb, axis=1)
  rows = np.arange(n)
  t = tb[rows, axis]
  positive = d[rows, axis] > 0
  instance = _ROOM_PLANE[axis, positive.astype(np.int64)]
  normal = np.zeros((n, 3))
  normal[rows, axis] = np.where(positive, -1.0, 1.0)
  if window is not None:
    wall, u0, u1, y0, y1 = window
    p = o + t[:, None] * d
    u = p[:, 2] if wall in (_WALL_X0_I, _WALL_X1_I) else p[:, 0]
    inside = (instance == wall) & (u >= u0) & (u <= u1) & (p[:, 1] >= y0) & (p[:, 1] <= y1)
    instance = np.where(inside, _WINDOW_I, instance)
  hits.take(rows, t, normal, instance, instance * _FACES)


def _cast_box(box: Box, o: np.ndarray, d: np.ndarray, hits) -> None:
  """Slab test in the box frame; the camera is always outside the box."""
  rot = _rot_y(box.yaw)  # box-to-world
  ol = (o - box.center) @ rot
  dl = d @ rot
  dl = np.where(np.abs(dl) < 1e-12, 1e-12, dl)
  inv = 1.0 / dl
  t1 = (-box.half - ol) * inv
  t2 = (box.half - ol) * inv
  tnear = np.minimum(t1, t2)
  axis = np.argmax(tnear, axis=1)
  tn = np.take_along_axis(tnear, axis[:, None], 1)[:, 0]
  tf = np.maximum(t1, t2).min(axis=1)
  idx = np.nonzero((tn <= tf) & (tn > _EPS) & (tn < hits.t))[0]
  if not len(idx):
    return
  ax = axis[idx]
  sign = -np.sign(dl[idx, ax])
  normal = np.zeros((len(idx), 3))
  normal[np.arange(len(idx)), ax] = sign
  face = ax * 2 + (sign > 0)
  hits.take(idx, tn[idx], normal @ rot.T, box.instance, box.prim * _FACES + face)


def _cast_sphere(sphere: Sphere, o: np.ndarray, d: np.ndarray, hits) -> None:
  oc = o - sphere.center
  a = np.einsum("ij,ij->i", d, d)
  b = 2.0 * (d @ oc)
  c = oc @ oc - sphere.radius ** 2
  disc = b * b - 4.0 * a * c
  t = (-b - np.sqrt(np.maximum(disc, 0.0))) / (2.0 * a)
  idx = np.nonzero((disc >= 0) & (t > _EPS) & (t < hits.t))[0]
  if not len(idx):
    return
  normal = (o + t[idx, None] * d[idx] - sphere.center) / sphere.radius
  hits.take(idx, t[idx], normal, sphere.instance, sphere.prim * _FACES)


def _cast_cylinder(cyl: Cylinder, o: np.ndarray, d: np.ndarray, hits) -> None:
  """Side and top cap of a vertical cylinder (its bottom stands on something)."""
  ox, oz = o[0] - cyl.center_xz[0], o[2] - cyl.center_xz[1]
  dx, dy, dz = d[:, 0], d[:, 1], d[:, 2]
  a = np.maximum(dx * dx + dz * dz, 1e-18)
  b = 2.0 * (ox * dx + oz * dz)
  c = ox * ox + oz * oz - cyl.radius ** 2
  disc = b * b - 4.0 * a * c
  t_side = (-b - np.sqrt(np.maximum(disc, 0.0))) / (2.0 * a)
  y = o[1] + t_side * dy
  side = (disc >= 0) & (t_side > _EPS) & (y >= cyl.y0) & (y <= cyl.y1)
  t = np.where(side, t_side, np.inf)
  face = np.zeros(len(d), np.int32)
  if o[1] > cyl.y1:
    with np.errstate(divide="ignore", invalid="ignore"):
      t_cap = (cyl.y1 - o[1]) / dy
    px, pz = ox + t_cap * dx, oz + t_cap * dz
    cap = (t_cap > _EPS) & (px * px + pz * pz <= cyl.radius ** 2) & (t_cap < t)
    t = np.where(cap, t_cap, t)
    face = cap.astype(np.int32)
  idx = np.nonzero(t < hits.t)[0]
  if not len(idx):
    return
  ti = t[idx]
  normal = np.zeros((len(idx), 3))
  normal[:, 0] = ox + ti * dx[idx]
  normal[:, 2] = oz + ti * dz[idx]
  normal /= cyl.radius
  is_cap = face[idx] == 1
  normal[is_cap] = (0.0, 1.0, 0.0)
  hits.take(idx, ti, normal, cyl.instance, cyl.prim * _FACES + face[idx])


def _bounding_sphere(prim) -> tuple:
  """(center [3], radius) of a sphere enclosing the primitive."""
  if isinstance(prim, Box):
    return prim.center, float(np.linalg.norm(prim.half))
  if isinstance(prim, Sphere):
    return prim.center, prim.radius
  center = np.array([prim.center_xz[0], (prim.y0 + prim.y1) / 2, prim.center_xz[1]])
  return center, float(np.hypot(prim.radius, (prim.y1 - prim.y0) / 2))


def _candidate_rays(prim, o: np.ndarray, d: np.ndarray, dd: np.ndarray) -> np.ndarray | None:
  """Indices of the rays that may hit `prim` (those meeting its bounding sphere in front of
  the camera), or None for all of them."""
  center, radius = _bounding_sphere(prim)
  radius = radius * 1.001 + 1e-6
  oc = center - o
  if oc @ oc <= radius * radius:
    return None
  dot = d @ oc
  return np.nonzero((dot > 0) & (oc @ oc - dot * dot / dd <= radius * radius))[0]


_CASTERS = {Box: _cast_box, Sphere: _cast_sphere, Cylinder: _cast_cylinder}


def cast_rays(scene: Scene, directions: np.ndarray) -> _Hits:
  """Nearest hit of rays from the camera centre along world `directions` [N, 3] (any length:
  a hit at parameter t is at cam_pos + t * direction)."""
  o = scene.cam_pos
  hits = _Hits(len(directions))
  _cast_room(scene.room, scene.window, o, directions, hits)
  dd = np.einsum("ij,ij->i", directions, directions)
  for prim in scene.boxes + scene.spheres + scene.cylinders:
    rows = _candidate_rays(prim, o, directions, dd)
    if rows is None:
      _CASTERS[type(prim)](prim, o, directions, hits)
    elif len(rows):
      _CASTERS[type(prim)](prim, o, directions[rows], _HitsSubset(hits, rows))
  return hits


# ---------------------------------------------------------------------------------------------
# Scene sampling
# ---------------------------------------------------------------------------------------------

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


# ---------------------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------------------

def _neighbour_pairs(shape: tuple):
  """Yields (a, b) index tuples of horizontally and vertically adjacent pixel pairs."""
  yield (slice(None), slice(None, -1)), (slice(None), slice(1, None))
  yield (slice(None, -1), slice(None)), (slice(1, None), slice(None))


def _edge_map(surface: np.ndarray) -> np.ndarray:
  """float32 [H, W]: 1 on both sides of every change of surface id, else 0."""
  edges = np.zeros(surface.shape, bool)
  for a, b in _neighbour_pairs(surface.shape):
    diff = surface[a] != surface[b]
    edges[a] |= diff
    edges[b] |= diff
  return edges.astype(np.float32)


def _silhouettes(instance: np.ndarray, depth: np.ndarray, is_object: np.ndarray) -> np.ndarray:
  """bool [H, W]: object pixels next to a pixel of another instance that is farther away
  (or has invalid depth): the occluding contours, which `semseg` ignores."""
  out = np.zeros(instance.shape, bool)
  far = np.where(depth > 0, depth, np.inf)
  for a, b in _neighbour_pairs(instance.shape):
    other = instance[a] != instance[b]
    out[a] |= other & is_object[a] & (far[b] > SILHOUETTE_JUMP * far[a])
    out[b] |= other & is_object[b] & (far[a] > SILHOUETTE_JUMP * far[b])
  return out


def _keypoint_map(scene: Scene, height: int, width: int) -> np.ndarray:
  """float32 [H, W]: max of Gaussian blobs at the visible projected scene keypoints."""
  heat = np.zeros((height, width), np.float32)
  if not len(scene.keypoints):
    return heat
  fx, fy, cx, cy = intrinsics(height, width)
  rel = scene.keypoints - scene.cam_pos
  cam = rel @ scene.cam_rot
  z = -cam[:, 2]
  front = z > 0.05
  u = cx + fx * cam[:, 0] / np.where(front, z, 1.0)
  v = cy - fy * cam[:, 1] / np.where(front, z, 1.0)
  inside = front & (u > -0.5) & (u < width - 0.5) & (v > -0.5) & (v < height - 0.5)
  if not inside.any():
    return heat
  # A keypoint is visible if nothing is hit before it on the ray from the camera (t = 1).
  visible = np.zeros_like(inside)
  visible[inside] = cast_rays(scene, rel[inside]).t >= 1.0 - 1e-3
  sigma = max(1.0, KEYPOINT_SIGMA * max(height, width))
  radius = int(np.ceil(3 * sigma))
  for uk, vk in zip(u[visible], v[visible]):
    j0, j1 = max(0, int(uk) - radius), min(width, int(uk) + radius + 2)
    i0, i1 = max(0, int(vk) - radius), min(height, int(vk) + radius + 2)
    jj, ii = np.arange(j0, j1) - uk, np.arange(i0, i1) - vk
    blob = np.exp(-(ii[:, None] ** 2 + jj[None, :] ** 2) / (2 * sigma * sigma))
    np.maximum(heat[i0:i1, j0:j1], blob.astype(np.float32), out=heat[i0:i1, j0:j1])
  return heat


def _texture(scene: Scene, hits: _Hits, points: np.ndarray, rays: np.ndarray,
             fx: float) -> np.ndarray:
  """[N] multiplicative texture: floor tiles and wall stripes, faded out where a pixel covers
  more than half a period (no aliasing)."""
  length = np.linalg.norm(rays, axis=1)
  cos = np.abs(np.einsum("ij,ij->i", hits.normal, rays)) / length
  footprint = hits.t * length / fx / np.maximum(cos, 0.05)  # metres per pixel on the surface
  tex = np.ones(len(rays))
  floor = hits.instance == _FLOOR_I
  p = scene.floor_period
  fade = np.clip(1.0 - 2.0 * footprint / p, 0.0, 1.0)
  tiles = np.tanh(3 * np.sin(2 * np.pi * points[:, 0] / p) * np.sin(2 * np.pi * points[:, 2] / p))
  tex[floor] += (0.15 * tiles * fade)[floor]
  wall = (hits.instance >= _WALL_X0_I) & (hits.instance <= _WALL_Z1_I)
  along = np.where(hits.instance <= _WALL_X1_I, points[:, 2], points[:, 0])
  p = scene.wall_period
  fade = np.clip(1.0 - 2.0 * footprint / p, 0.0, 1.0)
  tex[wall] += (0.07 * np.sin(2 * np.pi * along / p) * fade)[wall]
  return tex


def _shade(scene: Scene, hits: _Hits, normals: np.ndarray, tex: np.ndarray,
           rays_cam: np.ndarray) -> np.ndarray:
  """[N, 3] display-space colour in [0, 1] before noise."""
  albedo = scene.instance_colour[hits.instance]
  key = np.maximum(normals @ scene.key_light, 0.0)[:, None] * np.array([0.75, 0.72, 0.66])
  fill = np.maximum(normals @ scene.fill_light, 0.0)[:, None] * np.array([0.17, 0.19, 0.23])
  colour = albedo * (0.25 + key + fill) * tex[:, None]
  fog = np.exp(-hits.t / FOG_METRES)[:, None]
  colour = colour * fog + FOG_COLOUR * (1.0 - fog)
  window = hits.instance == _WINDOW_I
  sky = scene.instance_colour[_WINDOW_I] * (1.05 - 0.15 * rays_cam[:, 1:2].clip(-1, 1))
  return np.where(window[:, None], sky, colour) * scene.exposure


def render(scene: Scene, height: int, width: int,
           rng: np.random.Generator) -> tuple[np.ndarray, dict]:
  """Renders `scene` at height x width; `rng` only draws the pixel noise.

  Returns:
    (image, labels) as `render_scene`.
  """
  fx = intrinsics(height, width)[0]
  rays_cam = pixel_rays(height, width).reshape(-1, 3)
  rays = rays_cam @ scene.cam_rot.T
  hits = cast_rays(scene, rays)
  points = scene.cam_pos + hits.t[:, None] * rays
  normals = hits.normal @ scene.cam_rot
  normals /= np.linalg.norm(normals, axis=1, keepdims=True)
  valid = (hits.instance != _WINDOW_I) & (hits.t <= MAX_DEPTH)
  depth = np.where(valid, hits.t, 0.0)

  colour = _shade(scene, hits, normals, _texture(scene, hits, points, rays, fx), rays_cam)
  colour = colour.reshape(height, width, 3) + rng.normal(0.0, 0.015, (height, width, 3))
  image = np.clip(np.round(colour * 255.0), 0, 255).astype(np.uint8)

  shape = (height, width)
  instance = hits.instance.reshape(shape)
  depth = depth.reshape(shape)
  semseg = scene.instance_class[instance]
  semseg = np.where(_silhouettes(instance, depth, instance >= _ROOM_INSTANCES), UNLABELLED,
                    semseg)
  labels = {
      tasks_lib.SEMSEG: semseg.astype(np.int16),
      tasks_lib.DEPTH: depth[..., None].astype(np.float32),
      tasks_lib.NORMALS: np.where(valid[:, None], normals, 0.0).reshape(height, width, 3)
                         .astype(np.float32),
      tasks_lib.KEYPOINTS: _keypoint_map(scene, height, width)[..., None],
      tasks_lib.EDGES: _edge_map(hits.surface.reshape(shape))[..., None],
  }
  return image, labels


def render_scene(rng: np.random.Generator, height: int, width: int) -> tuple[np.ndarray, dict]:
  """Samples a random scene from `rng` and renders it.

  Returns:
    image: uint8 [H, W, 3] RGB.
    labels: semseg int16 [H, W] (class id, -1 ignore); depth float32 [H, W, 1] metres (0
      invalid); normals float32 [H, W, 3] unit, camera frame (0 invalid); keypoints float32
      [H, W, 1] in [0, 1]; edges float32 [H, W, 1] in {0, 1}.
  """
  return render(sample_scene(rng), height, width, rng)


def example_rng(seed: int, split: str, index: int) -> np.random.Generator:
  """The generator of example `index` of `split`: independent of every other example."""
  if seed < 0 or index < 0:
    raise ValueError(f"seed and index must be >= 0, got seed={seed}, index={index}")
  return np.random.Generator(np.random.PCG64(
      np.random.SeedSequence([int(seed), zlib.crc32(split.encode()), int(index)])))


def render_example(seed: int, split: str, index: int, height: int,
                   width: int) -> tuple[np.ndarray, dict]:
  """Example `index` of `split` of the dataset generated with `seed` (see render_scene)."""
  return render_scene(example_rng(seed, split, index), height, width)


# ---------------------------------------------------------------------------------------------
# Writing the dataset
# ---------------------------------------------------------------------------------------------

SPLITS = ("train", "val")
# Present while generate_dataset runs: a folder holding it is an interrupted generation.
INCOMPLETE_MARKER = ".synthetic-incomplete"


def _serialize(seed: int, split: str, index: int, height: int, width: int, tasks) -> bytes:
  image, labels = render_example(seed, split, index, height, width)
  # encode_example serializes deterministically: the same seed gives the same bytes in every
  # process (tested across processes by tests/test_synthetic.py).
  return schema.encode_example(f"{split}/{index:06d}", image, {t: labels[t] for t in tasks})


def _canonical_tasks(tasks) -> tuple:
  if isinstance(tasks, str):
    tasks = [t for t in tasks.split(",") if t]
  return tuple(s.name for s in tasks_lib.task_specs(tasks))


def generate_dataset(out_dir: str, num_train: int, num_val: int, height: int, width: int,
                     seed: int = 0, tasks=tasks_lib.ALL_TASKS,
                     num_shards: int = 2) -> schema.Manifest:
  """Renders the splits "train" and "val" into `out_dir` and writes its manifest.json.

  Only the labels of `tasks` are stored. Each split gets min(num_shards, its size) shards (at
  least one). An existing manifest is removed first and `INCOMPLETE_MARKER` marks the folder
  until the new manifest is written.
  Returns:
    The Manifest (dataset "synthetic", depth in metres, 13 classes, extra {"seed",
    "generator_version"}).
  """
  tasks = _canonical_tasks(tasks)
  counts = {"train": int(num_train), "val": int(num_val)}
  if min(counts.values()) < 0 or height < 2 or width < 2 or num_shards < 1:
    raise ValueError(f"bad synthetic dataset size: counts {counts}, {height}x{width}, "
                     f"num_shards {num_shards}")
  print(f"generating the synthetic dataset in {out_dir}: {counts['train']} train + "
        f"{counts['val']} val images of {height}x{width} (seed {seed})", file=sys.stderr,
        flush=True)
  os.makedirs(out_dir, exist_ok=True)
  marker = os.path.join(out_dir, INCOMPLETE_MARKER)
  with open(marker, "w") as f:
    f.write(f"seed={seed}\n")
  manifest_path = os.path.join(out_dir, schema.MANIFEST_NAME)
  if os.path.exists(manifest_path):
    os.remove(manifest_path)
  splits = {}
  for split, n in counts.items():
    bar = tqdm.tqdm(total=n, desc=f"synthetic {split}", unit="img", file=sys.stderr,
                    mininterval=1.0)
    def records(split=split, n=n, bar=bar):
      for i in range(n):
        yield _serialize(seed, split, i, height, width, tasks)
        bar.update(1)
    with bar:
      splits[split] = schema.write_split(out_dir, split, records(), max(1, min(num_shards, n)),
                                         num_examples=n)
  manifest = schema.Manifest(
      dataset=DATASET_NAME, height=int(height), width=int(width), tasks=tasks,
      num_classes=NUM_CLASSES, class_names=CLASS_NAMES, depth_unit="metres", splits=splits,
      extra={"seed": int(seed), "generator_version": GENERATOR_VERSION})
  schema.write_manifest(out_dir, manifest)
  os.remove(marker)
  return manifest


def _is_own_file(name: str) -> bool:
  """Whether `name` is something generate_dataset writes (shards, temporaries, manifest)."""
  if name in (schema.MANIFEST_NAME, schema.MANIFEST_NAME + ".tmp", INCOMPLETE_MARKER):
    return True
  return any(name.startswith(f"{s}-") and (name.endswith(".tfrecord") or
                                           name.endswith(".tfrecord.tmp")) for s in SPLITS)


def _differences(manifest: schema.Manifest, counts: dict, height: int, width: int, seed: int,
                 tasks: tuple) -> list:
  """Human-readable list of what `manifest` has that differs from the request."""
  diffs = []
  if manifest.dataset != DATASET_NAME:
    return [f"it holds the dataset {manifest.dataset!r}, not {DATASET_NAME!r}"]
  version = manifest.extra.get("generator_version")
  if version != GENERATOR_VERSION:
    diffs.append(f"generator_version {version} (current: {GENERATOR_VERSION})")
  if manifest.extra.get("seed") != seed:
    diffs.append(f"seed {manifest.extra.get('seed')} (requested {seed})")
  if (manifest.height, manifest.width) != (height, width):
    diffs.append(f"size {manifest.height}x{manifest.width} (requested {height}x{width})")
  for split, n in counts.items():
    have = manifest.num_examples(split) if split in manifest.splits else None
    if have != n:
      diffs.append(f"{have} {split} examples (requested {n})")
  missing = [t for t in tasks if t not in manifest.tasks]
  if missing:
    diffs.append(f"tasks {list(manifest.tasks)} lack {missing}")
  return diffs


def ensure_dataset(data_dir: str, num_train: int, num_val: int, height: int, width: int,
                   seed: int = 0, tasks=tasks_lib.ALL_TASKS,
                   num_shards: int = 2) -> schema.Manifest:
  """Returns the manifest of the synthetic dataset in `data_dir`, generating it if absent.

  A folder that is missing, empty, or left by an interrupted generate_dataset is (re)generated.
  One whose manifest matches the request (dataset "synthetic", generator version, seed, size,
  example counts, and tasks a superset of `tasks`; the shard count does not matter) is used
  as it is.
  Raises:
    ValueError naming the folder and what differs if it holds anything else: a user's data
    is never overwritten.
  """
  if not data_dir:
    raise ValueError("no data directory given for the synthetic dataset")
  tasks = _canonical_tasks(tasks)
  args = (data_dir, num_train, num_val, height, width, seed, tasks, num_shards)
  entries = os.listdir(data_dir) if os.path.isdir(data_dir) else []
  if os.path.exists(data_dir) and not os.path.isdir(data_dir):
    raise ValueError(f"data directory {data_dir!r} is a file, not a directory")
  if not entries:
    return generate_dataset(*args)
  if INCOMPLETE_MARKER in entries and all(_is_own_file(e) for e in entries):
    return generate_dataset(*args)
  if schema.MANIFEST_NAME not in entries:
    raise ValueError(f"data directory {data_dir!r} is not empty but holds no "
                     f"{schema.MANIFEST_NAME}; refusing to write the synthetic dataset there "
                     "(empty it or choose another directory)")
  try:
    manifest = schema.read_manifest(data_dir)
  except schema.SchemaError as e:
    raise ValueError(f"data directory {data_dir!r} holds an unreadable manifest: {e}") from e
  diffs = _differences(manifest, {"train": num_train, "val": num_val}, height, width, seed,
                       tasks)
  if diffs:
    raise ValueError(f"data directory {data_dir!r} does not hold the requested synthetic "
                     f"dataset: {'; '.join(diffs)}. Delete it or choose another directory.")
  for split in SPLITS:
    try:
      schema.shard_paths(data_dir, manifest, split)
    except FileNotFoundError as e:
      raise ValueError(f"data directory {data_dir!r} is incomplete: {e}") from e
  return manifest
