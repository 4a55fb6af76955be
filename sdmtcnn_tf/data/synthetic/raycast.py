"""Camera geometry and ray casting for the synthetic dataset: the pinhole intrinsics, the per-pixel
ray directions, rotation matrices, and the analytic nearest-hit intersection of rays with the
room's planes (and window) and with every box, sphere and cylinder of a Scene (`cast_rays`),
vectorised over rays with numpy.
"""

from __future__ import annotations

import numpy as np

from sdmtcnn_tf.data.synthetic.scene import (
    _CEILING_I, _FLOOR_I, _WALL_X0_I, _WALL_X1_I, _WALL_Z0_I, _WALL_Z1_I, _WINDOW_I, Box,
    Cylinder, Scene, Sphere)

HFOV_DEGREES = 60.0

# Room plane hit along axis a, going in the negative (0) or positive (1) direction.
_ROOM_PLANE = np.array([[_WALL_X0_I, _WALL_X1_I], [_FLOOR_I, _CEILING_I],
                        [_WALL_Z0_I, _WALL_Z1_I]])
_EPS = 1e-6
_FACES = 8  # surface id = primitive * _FACES + face


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
