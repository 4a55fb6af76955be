# The training image of deploy/k8s/tfjob.yaml: `make image` (docker build -t sdmtcnn-tf:0.1.0 .).
# TensorFlow 2.21 with CUDA comes from the official image; `pip install .` adds the package and
# its pinned runtime dependencies (pyproject.toml, the pins of requirements.txt), as users
# install it. Run from /workspace, where configs/ sits (flagfiles include each other by
# relative path).
FROM tensorflow/tensorflow:2.21.0-gpu

WORKDIR /workspace
COPY pyproject.toml README.md requirements.txt ./
COPY sdmtcnn_tf ./sdmtcnn_tf
# (the source copy is removed: python -m sdmtcnn_tf.* runs the installed package)
RUN pip install --no-cache-dir . && rm -rf build sdmtcnn_tf sdmtcnn_tf.egg-info \
    && cd / && python -c "import sdmtcnn_tf.train, sdmtcnn_tf.launch"
COPY configs ./configs

ENV TF_CPP_MIN_LOG_LEVEL=2
ENTRYPOINT []
CMD ["python", "-m", "sdmtcnn_tf.train", "--helpfull"]
