"""sdmtcnn_tf: SD-MTCNN, the self-distilled multi-task CNN, in TensorFlow/Keras.

Importing the package first hides TensorFlow's start-up log lines (`logs.py`;
`SDMTCNN_TF_VERBOSE=1` shows them).
"""

from sdmtcnn_tf import logs as _logs

_logs.silence_tensorflow_startup()
