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

The package: `scene` (class ids, primitives, Scene), `raycast` (camera geometry, ray casting),
`sampling` (random scenes), `render` (images and labels of one example) and `writer` (the
dataset on disk). The names below are its public interface.
"""

from sdmtcnn_tf.data.synthetic.raycast import HFOV_DEGREES, cast_rays, intrinsics, pixel_rays
from sdmtcnn_tf.data.synthetic.render import (
    FOG_COLOUR, FOG_METRES, KEYPOINT_SIGMA, MAX_DEPTH, SILHOUETTE_JUMP, example_rng, render,
    render_example, render_scene)
from sdmtcnn_tf.data.synthetic.sampling import BASE_COLOURS, sample_scene
from sdmtcnn_tf.data.synthetic.scene import (
    BALL, BED, BIN, BOX, CABINET, CEILING, CHAIR, CLASS_NAMES, FLOOR, NUM_CLASSES, PAINTING,
    SOFA, TABLE, UNLABELLED, WALL, WINDOW, Box, Cylinder, Scene, Sphere)
from sdmtcnn_tf.data.synthetic.writer import (
    DATASET_NAME, GENERATOR_VERSION, INCOMPLETE_MARKER, SPLITS, ensure_dataset,
    generate_dataset)

__all__ = [
    "BALL", "BASE_COLOURS", "BED", "BIN", "BOX", "Box", "CABINET", "CEILING", "CHAIR",
    "CLASS_NAMES", "Cylinder", "DATASET_NAME", "FLOOR", "FOG_COLOUR", "FOG_METRES",
    "GENERATOR_VERSION", "HFOV_DEGREES", "INCOMPLETE_MARKER", "KEYPOINT_SIGMA", "MAX_DEPTH",
    "NUM_CLASSES", "PAINTING", "SILHOUETTE_JUMP", "SOFA", "SPLITS", "Scene", "Sphere", "TABLE",
    "UNLABELLED", "WALL", "WINDOW", "cast_rays", "ensure_dataset", "example_rng",
    "generate_dataset", "intrinsics", "pixel_rays", "render", "render_example", "render_scene",
    "sample_scene",
]
