"""Model construction: parameter counts, output names and shapes."""

import numpy as np
import pytest

from sdmtcnn_tf.config import ExperimentConfig
from sdmtcnn_tf.models.build import build_network, count_params


def test_shared_decoder_segnet_matches_mtan_parameter_count():
  cfg = ExperimentConfig.from_flat(decoder="shared", height=64, width=64).validate()
  assert count_params(build_network(cfg).teacher) == 25_055_185


def test_outputs_and_shapes_for_all_five_tasks():
  cfg = ExperimentConfig.from_flat(tasks=("semseg", "depth", "normals", "keypoints", "edges"),
                                   num_classes=5, height=32, width=64, width_multiplier=0.125,
                                   method="sd_mtcnn", distill="eq5", full=True).validate()
  net = build_network(cfg)
  image = np.random.default_rng(0).random((2, 32, 64, 3)).astype("float32")
  out = net.model(image)
  assert set(out) == {"teacher", "student", "hints"}
  assert out["teacher"]["semseg"].shape == (2, 32, 64, 5)
  assert out["student"]["normals"].shape == (2, 32, 64, 3)
  norms = np.linalg.norm(out["teacher"]["normals"], axis=-1)
  np.testing.assert_allclose(norms[norms > 1e-6], 1.0, atol=1e-4)  # 0 only for a zero vector
  for task in cfg.data.tasks:
    for level in range(1, 6):
      pair = out["hints"][f"{task}_l{level}"]
      assert pair["student"].shape == pair["teacher"].shape
      assert pair["student"].shape[1] == 32 // 2 ** (level - 1)
  assert set(net.student(image)) == set(cfg.data.tasks)


def test_sd_vanilla_exits_follow_the_encoder_stages():
  cfg = ExperimentConfig.from_flat(num_classes=5, height=32, width=64, width_multiplier=0.125,
                                   method="sd_vanilla", distill="eq6",
                                   student_exits=(2, 4)).validate()
  out = build_network(cfg).model(np.zeros((1, 32, 64, 3), "float32"))
  assert set(out["exits"]) == {"e2", "e4"}
  assert out["exits"]["e2"]["semseg"].shape == (1, 32, 64, 5)
  # the bottleneck output after stage l is at 1/2^l and is hinted by the pooled dec1
  pair = out["hints"]["depth_e2"]
  assert pair["student"].shape == pair["teacher"].shape == (1, 8, 16, 8)
  # the reported student is the deepest exit
  np.testing.assert_array_equal(out["student"]["depth"], out["exits"]["e4"]["depth"])


@pytest.mark.parametrize("backbone", ["segnet", "unet"])
def test_student_is_lighter_than_teacher(backbone):
  cfg = ExperimentConfig.from_flat(height=32, width=32, width_multiplier=0.25, method="sd_mtcnn",
                                   distill="eq5", backbone=backbone).validate()
  net = build_network(cfg)
  assert 0 < count_params(net.student) < count_params(net.teacher)


def test_bad_sizes_are_rejected_naming_the_flag():
  with pytest.raises(ValueError, match="--height"):
    ExperimentConfig.from_flat(height=30).validate()
  with pytest.raises(ValueError, match="--tasks|unknown task"):
    ExperimentConfig.from_flat(tasks=("semseg", "sky")).validate()
