"""Taskonomy converter on a tiny fixture of two buildings written by the test."""

from __future__ import annotations

import os

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from datasets import checks
from datasets import taskonomy
from sdmtcnn_tf.data import schema
from tests.records import read_split

# The release's folder and file names, written out (not taken from the converter) so the
# fixtures cannot drift with it: StanfordVL/taskonomy's sample building
# (alexsax/taskonomy-sample-model-1) holds e.g. rgb/point_0_view_0_domain_rgb.png and
# segment_semantic/point_0_view_0_domain_segmentsemantic.png (folder with an underscore, file
# suffix without).
REAL_NAMES = {"image": ("rgb", "rgb"), "semseg": ("segment_semantic", "segmentsemantic"),
              "depth": ("depth_zbuffer", "depth_zbuffer"), "normals": ("normal", "normal"),
              "keypoints": ("keypoints2d", "keypoints2d"),
              "edges": ("edge_texture", "edge_texture")}
S = 16      # source size (square, like Taskonomy's 512)
OUT = 8     # converted size; nearest-neighbour then picks the odd source pixels
VIEWS = ("point_0_view_0", "point_2_view_1", "point_10_view_0")


def folder_path(root, layout, building, folder):
  parts = {"building_task": (building, folder), "task_building": (folder, building),
           "omnidata": (folder, "taskonomy", building)}[layout]
  return os.path.join(root, *parts)


def real_path(root, layout, building, role, stem):
  folder, suffix = REAL_NAMES[role]
  return os.path.join(folder_path(root, layout, building, folder),
                      f"{stem}_domain_{suffix}.png")


def view_files(root, layout, building):
  dirs = {role: folder_path(root, layout, building, folder)
          for role, (folder, _) in REAL_NAMES.items()}
  for d in dirs.values():
    os.makedirs(d, exist_ok=True)
  return dirs


def write_tree(root, layout="building_task", buildings=("bA", "bB"), seed=0):
  """Writes every task folder of every building with the release's file names.

  Returns raw arrays by example key suffix ("<building>/<stem>").
  """
  rng = np.random.default_rng(seed)
  arrays = {}
  for building in buildings:
    view_files(root, layout, building)
    for stem in VIEWS:
      raw = {
          "image": rng.integers(0, 256, (S, S, 3), dtype=np.uint8),
          "semseg": rng.integers(0, 18, (S, S)).astype(np.uint8),
          "depth": rng.integers(0, 40000, (S, S)).astype(np.uint16),
          "normals": rng.integers(0, 256, (S, S, 3), dtype=np.uint8),
          "keypoints": rng.integers(0, 2000, (S, S)).astype(np.uint16),
          "edges": rng.integers(0, 65536, (S, S)).astype(np.uint16),
      }
      raw["depth"][1, :6] = 65535                     # missing depth
      raw["normals"][3, :4] = 128                      # grey fill: decodes to ~0 -> invalid
      for role, value in raw.items():
        Image.fromarray(value).save(real_path(root, layout, building, role, stem))
      arrays[f"{building}/{stem}"] = raw
  return arrays


def convert(src, out, *extra):
  return taskonomy.main(["taskonomy", f"--src={src}", f"--out_dir={out}", f"--height={OUT}",
                         f"--width={OUT}", "--num_workers=1", *extra])


def expected_labels(raw):
  odd = (slice(1, None, 2), slice(1, None, 2))
  depth = np.where(raw["depth"] == 65535, 0, raw["depth"] / 512.0)[odd]
  normals = raw["normals"].astype(np.float32) / 255 * 2 - 1
  norm = np.linalg.norm(normals, axis=-1, keepdims=True)
  normals = np.where(norm >= 0.5, normals / norm, 0)[odd]
  normals = np.where((depth > 0)[..., None], normals, 0)
  heat = lambda v: checks.resize_float_bilinear(v / 65535.0, OUT, OUT)
  return {"semseg": raw["semseg"].astype(np.int32)[odd] - 1, "depth": depth[..., None],
          "normals": normals, "keypoints": heat(raw["keypoints"])[..., None],
          "edges": heat(raw["edges"])[..., None]}


@pytest.fixture()
def tree(tmp_path):
  src = str(tmp_path / "src")
  return src, write_tree(src)


def test_roundtrip_all_five_tasks(tree, tmp_path):
  src, arrays = tree
  out = str(tmp_path / "out")
  assert convert(src, out, "--train_buildings=bA", "--val_buildings=bB") == 0
  manifest = schema.read_manifest(out)
  assert manifest.tasks == ("semseg", "depth", "normals", "keypoints", "edges")
  assert manifest.num_classes == 17 and manifest.class_names[0] == "background"
  assert manifest.depth_unit == "metres"
  assert manifest.extra["buildings"] == {"train": ["bA"], "val": ["bB"]}
  train = read_split(out, "train")
  # Natural stem order: point_2 before point_10.
  assert list(train) == [f"train/bA/{v}" for v in VIEWS]
  records = {**train, **read_split(out, "val")}
  for key, (image, labels) in records.items():
    raw = arrays[key.split("/", 1)[1]]
    expected_image = np.asarray(Image.fromarray(raw["image"]).resize(
        (OUT, OUT), Image.Resampling.BILINEAR))
    np.testing.assert_array_equal(np.round(image * 255), expected_image)
    want = expected_labels(raw)
    np.testing.assert_array_equal(labels["semseg"], want["semseg"])
    np.testing.assert_allclose(labels["depth"], want["depth"], rtol=1e-6)
    np.testing.assert_allclose(labels["normals"], want["normals"], atol=2e-3)
    np.testing.assert_allclose(labels["keypoints"], want["keypoints"], atol=1e-3)
    np.testing.assert_allclose(labels["edges"], want["edges"], atol=1e-3)
    assert labels["semseg"].min() >= -1 and labels["semseg"].max() <= 16
    assert np.all(labels["depth"][0, :3] == 0)    # source row 1, columns 0..5: missing depth
    assert np.all(labels["normals"][0, :3] == 0)  # ... so the normals there are invalid too
    assert np.all(labels["normals"][1, :2] == 0)  # grey fill


def test_task_first_layout_with_split_file_and_normals_depth_mask(tmp_path):
  src = str(tmp_path / "src")
  arrays = write_tree(src, layout="task_building")
  split_file = tmp_path / "splits.csv"
  split_file.write_text("# building,split\nbA,train\n\nbB, val\n")
  out = str(tmp_path / "out")
  # depth is not stored, but depth_zbuffer still masks the normals.
  assert convert(src, out, f"--split_file={split_file}", "--tasks=semseg,normals",
                 "--max_per_building=2") == 0
  manifest = schema.read_manifest(out)
  assert manifest.extra["params"]["layout"] == "task_building"
  assert manifest.num_examples("train") == 2 and manifest.num_examples("val") == 2
  _, labels = read_split(out, "val")["val/bB/point_0_view_0"]
  assert set(labels) == {"semseg", "normals"}
  want = expected_labels(arrays["bB/point_0_view_0"])
  np.testing.assert_allclose(labels["normals"], want["normals"], atol=2e-3)


def test_split_flags_are_checked(tree, tmp_path, capsys):
  src, _ = tree
  out = str(tmp_path / "out")
  assert convert(src, out) == 1
  assert "--train_buildings" in capsys.readouterr().err
  split_file = tmp_path / "s.csv"
  split_file.write_text("bA,train\n")
  assert convert(src, out, f"--split_file={split_file}", "--train_buildings=bA") == 1
  assert "not both" in capsys.readouterr().err
  assert convert(src, out, "--train_buildings=bA", "--val_buildings=bA") == 1
  assert "more than one split" in capsys.readouterr().err
  split_file.write_text("bA train extra\n")
  assert convert(src, out, f"--split_file={split_file}") == 1
  assert str(split_file) in capsys.readouterr().err


def _break(src, case):
  """Damages building bB (val); returns the path the error must name."""
  def path(role, stem="point_2_view_1"):
    return real_path(src, "building_task", "bB", role, stem)
  if case == "missing_folder":
    folder = os.path.join(src, "bB", "edge_texture")
    for n in os.listdir(folder):
      os.remove(os.path.join(folder, n))
    os.rmdir(folder)
    return folder
  if case == "missing_partner":
    os.remove(path("keypoints"))
    return path("keypoints")
  if case == "corrupt":
    with open(path("normals"), "wb") as f:
      f.write(b"\x89PNG\r\n\x1a\ntruncated")
    return path("normals")
  if case == "wrong_shape":
    Image.fromarray(np.zeros((S, S - 4), np.uint16)).save(path("depth"))
    return path("depth")
  if case == "wrong_dtype":  # 8-bit depth: its unit would be wrong
    Image.fromarray(np.zeros((S, S), np.uint8)).save(path("depth"))
    return path("depth")
  if case == "label_range":
    Image.fromarray(np.full((S, S), 18, np.uint8)).save(path("semseg"))
    return path("semseg")
  raise ValueError(case)


@pytest.mark.parametrize("case", ["missing_folder", "missing_partner", "corrupt", "wrong_shape",
                                  "wrong_dtype", "label_range"])
def test_bad_input_stops_naming_the_file(tree, tmp_path, capsys, case):
  src, _ = tree
  bad = _break(src, case)
  out = str(tmp_path / "out")
  assert convert(src, out, "--train_buildings=bA", "--val_buildings=bB") == 1
  err = capsys.readouterr().err
  assert bad in err, err
  assert not os.path.exists(os.path.join(out, schema.MANIFEST_NAME))


def test_skip_bad_never_substitutes(tree, tmp_path):
  src, _ = tree
  partner = _break(src, "missing_partner")
  corrupt = _break(src, "corrupt")  # the same view: listed once, for its missing partner
  label = real_path(src, "building_task", "bA", "semseg", "point_10_view_0")
  Image.fromarray(np.full((S, S), 30, np.uint8)).save(label)
  out = str(tmp_path / "out")
  assert convert(src, out, "--train_buildings=bA", "--val_buildings=bB", "--skip_bad") == 0
  manifest = schema.read_manifest(out)
  skipped = {s["path"]: s["reason"] for s in manifest.extra["skipped"]}
  assert label in skipped and "outside 0..17" in skipped[label]
  assert any(partner in reason for reason in skipped.values())
  assert corrupt not in skipped
  assert sorted(read_split(out, "train")) == ["train/bA/point_0_view_0", "train/bA/point_2_view_1"]
  assert sorted(read_split(out, "val")) == ["val/bB/point_0_view_0", "val/bB/point_10_view_0"]


def test_omnidata_download_layout_is_detected(tmp_path):
  """`omnitools.download ... --components taskonomy --dest <src>`: <folder>/taskonomy/<building>."""
  src = str(tmp_path / "src")
  arrays = write_tree(src, layout="omnidata")
  assert os.path.isfile(os.path.join(src, "segment_semantic", "taskonomy", "bA",
                                     "point_0_view_0_domain_segmentsemantic.png"))
  out = str(tmp_path / "out")
  assert convert(src, out, "--train_buildings=bA", "--val_buildings=bB") == 0
  manifest = schema.read_manifest(out)
  assert manifest.extra["params"]["layout"] == "omnidata"
  assert manifest.num_examples("train") == 3 and manifest.num_examples("val") == 3
  _, labels = read_split(out, "val")["val/bB/point_10_view_0"]
  want = expected_labels(arrays["bB/point_10_view_0"])
  np.testing.assert_array_equal(labels["semseg"], want["semseg"])
  np.testing.assert_allclose(labels["depth"], want["depth"], rtol=1e-6)


def test_explicit_layout_that_does_not_match_names_the_missing_folder(tmp_path, capsys):
  src = str(tmp_path / "src")
  write_tree(src, layout="omnidata")
  out = str(tmp_path / "out")
  assert convert(src, out, "--train_buildings=bA", "--val_buildings=bB",
                 "--layout=task_building") == 1
  err = capsys.readouterr().err
  assert err.count("\n") == 1 and err.startswith("error: ")
  assert os.path.join(src, "rgb", "bA") in err


def test_old_wrong_semseg_name_is_reported_naming_the_expected_file(tree, tmp_path, capsys):
  """`..._domain_segment_semantic.png` is not the release's name: stop, name the right one."""
  src, _ = tree
  right = real_path(src, "building_task", "bB", "semseg", "point_2_view_1")
  wrong = right.replace("_domain_segmentsemantic.png", "_domain_segment_semantic.png")
  os.rename(right, wrong)
  out = str(tmp_path / "out")
  assert convert(src, out, "--train_buildings=bA", "--val_buildings=bB") == 1
  err = capsys.readouterr().err
  assert err.count("\n") == 1 and err.startswith("error: "), err
  assert f"missing {right}" in err, err
  assert os.path.basename(wrong) in err and "*_domain_segmentsemantic.png" in err
  # The image whose partner is missing is the file named first.
  assert err.startswith("error: " + real_path(src, "building_task", "bB", "image",
                                              "point_2_view_1"))
  assert not os.path.exists(os.path.join(out, schema.MANIFEST_NAME))


def test_corrupt_manifest_stops_unless_overwrite(tree, tmp_path, capsys):
  src, _ = tree
  out = str(tmp_path / "out")
  args = ("--train_buildings=bA", "--val_buildings=bB", "--tasks=semseg,depth")
  assert convert(src, out, *args) == 0
  manifest_path = os.path.join(out, schema.MANIFEST_NAME)
  with open(manifest_path, "w") as f:
    f.write('{"dataset": "taskonomy", "height": ')  # truncated
  capsys.readouterr()
  assert convert(src, out, *args) == 1
  err = capsys.readouterr().err
  assert err.count("\n") == 1 and err.startswith(f"error: {manifest_path}: corrupt manifest")
  assert "--overwrite" in err
  with open(manifest_path) as f:  # left as it was
    assert f.read() == '{"dataset": "taskonomy", "height": '
  assert convert(src, out, *args, "--overwrite") == 0
  assert schema.read_manifest(out).num_examples("val") == 3
