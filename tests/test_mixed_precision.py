"""--mixed_precision: mixed_float16 scales the loss with a LossScaleOptimizer, mixed_bfloat16
needs no scaling; under both the variables and the outputs stay float32."""

from __future__ import annotations

import pytest

import keras
import numpy as np
import tensorflow as tf

from sdmtcnn_tf import distribute, experiment
from sdmtcnn_tf.config import ExperimentConfig
from sdmtcnn_tf.models.layers import L2Normalize
from tests.conftest import random_batch


@pytest.mark.slow
@pytest.mark.parametrize("policy,compute,scaled", [("mixed_float16", "float16", True),
                                                   ("mixed_bfloat16", "bfloat16", False)])
def test_mixed_precision_step_float32_outputs(policy, compute, scaled):
  cfg = ExperimentConfig.from_flat(height=32, width=32, width_multiplier=0.125, num_classes=5,
                                   mixed_precision=policy).validate()
  distribute.set_precision(cfg)
  try:
    network, model = experiment.build_model(cfg)
    experiment.compile_model(model, cfg)
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer) == scaled
    image, labels = random_batch(cfg, n=2)
    logs = model.train_on_batch(image, labels, return_dict=True)
    assert all(np.isfinite(v) for v in logs.values())
    outputs = model(image, training=False)
    assert all(v.dtype == tf.float32 for v in tf.nest.flatten(outputs))
    conv = network.model.get_layer("enc1_1_conv")
    assert conv.compute_dtype == compute and conv.kernel.dtype == "float32"
    # the normals are unit-normalised in float32 (a bf16 norm is good to 3 digits only)
    units = [l for l in network.model.layers if isinstance(l, L2Normalize)]
    assert units and all(l.compute_dtype == "float32" for l in units)
  finally:
    keras.mixed_precision.set_global_policy("float32")


def test_boolean_mixed_precision_of_old_runs_still_loads():
  on = ExperimentConfig.from_json({"mixed_precision": True})
  off = ExperimentConfig.from_json({"mixed_precision": False})
  assert (on.run.mixed_precision, off.run.mixed_precision) == ("mixed_float16", "off")


def test_unknown_precision_is_refused_naming_the_flag():
  with pytest.raises(ValueError, match="mixed_precision"):
    ExperimentConfig.from_flat(mixed_precision="float8").validate()
