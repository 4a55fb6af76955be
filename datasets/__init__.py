"""The dataset converters (`python -m datasets.<name>`): real releases → sharded TFRecords.

Importing the package first hides TensorFlow's start-up log lines, as `sdmtcnn_tf` does.
"""

import sdmtcnn_tf  # noqa: F401  (sdmtcnn_tf/logs.py)
