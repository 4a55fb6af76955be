"""--jit_compile (issue 10 point 4): a SegNet's steps compile under XLA and agree with the
uncompiled ones within float32 round-off; what cannot be compiled is an error saying so.
(Timings are not tested: on CPU XLA is no faster, BUILD_NOTES.md.)"""

from __future__ import annotations

import keras
import numpy as np
import pytest

from tests.conftest import random_batch

from sdmtcnn_tf import experiment
from sdmtcnn_tf.config import ExperimentConfig

TINY = dict(method="vanilla", decoder="shared", tasks=("semseg", "depth"), height=32, width=64,
            width_multiplier=1 / 16)


def _compiled(jit: bool):
  cfg = ExperimentConfig.from_flat(**TINY, jit_compile=jit).validate()
  keras.backend.clear_session()
  _, model = experiment.build_model(cfg)  # seeded: both models start from the same weights
  experiment.compile_model(model, cfg)
  return cfg, model


@pytest.mark.slow  # two SegNet traces, one by XLA: 85 s of CPU, 220 s on the shared machine
def test_jit_compiled_segnet_agrees_with_the_uncompiled_one():
  results = {}
  for jit in (False, True):
    cfg, model = _compiled(jit)
    assert model.jit_compile is jit
    image, labels = random_batch(cfg, 2)
    predicted = model.predict_on_batch(image)
    logs = model.train_on_batch(image, labels, return_dict=True)  # losses before the update
    results[jit] = (predicted, logs)
  (plain_pred, plain_logs), (xla_pred, xla_logs) = results[False], results[True]
  for name in ("semseg", "depth"):
    np.testing.assert_allclose(xla_pred["teacher"][name], plain_pred["teacher"][name],
                               rtol=1e-4, atol=1e-5)
  assert set(xla_logs) == set(plain_logs)
  for name, value in plain_logs.items():
    np.testing.assert_allclose(float(xla_logs[name]), float(value), rtol=1e-5, err_msg=name)


def test_jit_compile_names_a_layer_without_an_xla_kernel():
  cfg = ExperimentConfig.from_flat(**TINY, jit_compile=True).validate()
  _, model = experiment.build_model(cfg)
  model.net.get_layer("enc3_pool").supports_jit = False  # as a layer without XLA kernel declares
  with pytest.raises(ValueError, match="--jit_compile: 1 layer.*enc3_pool"):
    experiment.compile_model(model, cfg)
