"""Rendering of the synthetic dataset: the label maps (edges, keypoints, occluding silhouettes), the
floor and wall textures, the shading with fog, `render` (one Scene to an image and its labels),
and the per-example entry points `render_scene`, `example_rng` and `render_example`, by which an
example depends only on (seed, split, index).
"""

from __future__ import annotations

import zlib

import numpy as np

from sdmtcnn_tf import tasks as tasks_lib
from sdmtcnn_tf.data.synthetic.raycast import _Hits, cast_rays, intrinsics, pixel_rays
from sdmtcnn_tf.data.synthetic.sampling import sample_scene
from sdmtcnn_tf.data.synthetic.scene import (
    _FLOOR_I, _ROOM_INSTANCES, _WALL_X0_I, _WALL_X1_I, _WALL_Z1_I, _WINDOW_I, UNLABELLED, Scene)

MAX_DEPTH = 10.0  # metres; farther pixels get depth 0 (invalid)
FOG_METRES = 4.0
KEYPOINT_SIGMA = 0.01  # Gaussian sigma as a fraction of max(H, W), at least 1 pixel
SILHOUETTE_JUMP = 1.05  # an object pixel is ignored next to a pixel this much farther
FOG_COLOUR = np.array([0.35, 0.45, 0.65])


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
