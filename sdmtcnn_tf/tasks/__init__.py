"""Tasks: one class per dense prediction task (see base.Task), and their registry.

    from sdmtcnn_tf import tasks
    task = tasks.task_class("depth").from_config(cfg)
    task.loss(label, prediction)      # (sum, count)
    task.metrics("teacher")           # metric objects with .role and .task

Label conventions (the TFRecord schema decodes to these, see data/schema.py):
  semseg     int32 [H, W], class ids 0..C-1, IGNORE_LABEL (-1) = not labelled.
  depth      float32 [H, W, 1], metres or disparity (the manifest says which), 0 = invalid.
  normals    float32 [H, W, 3], unit vectors (x right, y up, z towards the camera), 0 = invalid.
  keypoints  float32 [H, W, 1], keypoint heat map in [0, 1].
  edges      float32 [H, W, 1], edge strength in [0, 1].
"""

from sdmtcnn_tf.tasks import registry
from sdmtcnn_tf.tasks.base import (IGNORE_LABEL, ConstantFit, RegressionTask, Task,
                                   ZeroMarksInvalid)
from sdmtcnn_tf.tasks.depth import Depth
from sdmtcnn_tf.tasks.edges import Edges
from sdmtcnn_tf.tasks.keypoints import Keypoints
from sdmtcnn_tf.tasks.normals import SurfaceNormals
from sdmtcnn_tf.tasks.registry import (canonical, from_config, names, register, task_class,
                                       unregister)
from sdmtcnn_tf.tasks.semseg import SemanticSegmentation

for _cls in (SemanticSegmentation, Depth, SurfaceNormals, Keypoints, Edges):
  register(_cls)

SEMSEG, DEPTH, NORMALS, KEYPOINTS, EDGES = (SemanticSegmentation.name, Depth.name,
                                            SurfaceNormals.name, Keypoints.name, Edges.name)
ALL_TASKS = (SEMSEG, DEPTH, NORMALS, KEYPOINTS, EDGES)  # the built-in tasks
