"""The synthetic dataset's scene description: the class names and ids, the fixed instance ids of
the room (floor, ceiling, four walls, window), and the Box / Sphere / Cylinder primitives and the
Scene that `sampling` draws and `raycast` / `render` consume. Data only, no behaviour.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from sdmtcnn_tf import tasks as tasks_lib

CLASS_NAMES = ("floor", "wall", "ceiling", "window", "painting", "bed", "table", "cabinet",
               "sofa", "chair", "box", "bin", "ball")
NUM_CLASSES = len(CLASS_NAMES)
(FLOOR, WALL, CEILING, WINDOW, PAINTING, BED, TABLE, CABINET, SOFA, CHAIR, BOX, BIN,
 BALL) = range(NUM_CLASSES)
UNLABELLED = tasks_lib.IGNORE_LABEL

# Fixed instance (and primitive) ids of the room: index = instance id.
_FLOOR_I, _CEILING_I, _WALL_X0_I, _WALL_X1_I, _WALL_Z0_I, _WALL_Z1_I, _WINDOW_I = range(7)
_ROOM_INSTANCES = 7


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
