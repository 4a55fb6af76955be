"""mixed_float16: the loss is scaled by a LossScaleOptimizer and outputs stay float32."""

from __future__ import annotations

import pytest

import keras
import numpy as np
import tensorflow as tf

from sdmtcnn_tf import distribute, experiment
from sdmtcnn_tf.config import ExperimentConfig
from tests.conftest import random_batch


@pytest.mark.slow
def test_mixed_precision_step_uses_loss_scaling_and_float32_outputs():
  cfg = ExperimentConfig.from_flat(height=32, width=32, width_multiplier=0.125, num_classes=5,
                                   mixed_precision=True).validate()
  distribute.set_precision(cfg)
  try:
    network, model = experiment.build_model(cfg)
    experiment.compile_model(model, cfg)
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    image, labels = random_batch(cfg, n=2)
    logs = model.train_on_batch(image, labels, return_dict=True)
    assert all(np.isfinite(v) for v in logs.values())
    outputs = model(image, training=False)
    assert all(v.dtype == tf.float32 for v in tf.nest.flatten(outputs))
    conv = network.model.get_layer("enc1_1_conv")
    assert conv.compute_dtype == "float16" and conv.kernel.dtype == "float32"
  finally:
    keras.mixed_precision.set_global_policy("float32")
