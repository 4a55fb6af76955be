"""CityScapes converter: MTAN .npy layout and the official PNG layout, on tiny fixtures."""

from __future__ import annotations

import os

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from datasets import cityscapes
from datasets import reading
from sdmtcnn_tf.data import schema
from tests.records import read_split

H, W = 16, 24          # MTAN fixture size
SRC_H, SRC_W = 16, 32  # raw fixture size; converted to 8 x 16 (nearest picks odd pixels)
OUT_H, OUT_W = 8, 16

# The rows of cityscapesscripts.helpers.labels the raw fixture uses: (id, categoryId,
# category, ignoreInEval). Used only when the package is not installed.
MINI_TABLE = [(0, 0, "void", True), (7, 1, "flat", False), (9, 1, "flat", True),
              (11, 2, "construction", False), (17, 3, "object", False),
              (21, 4, "nature", False), (23, 5, "sky", False), (24, 6, "human", False),
              (26, 7, "vehicle", False), (-1, 7, "vehicle", True)]
FIXTURE_IDS = np.array([0, 7, 9, 11, 17, 21, 23, 24, 26])


# ---------------------------------------------------------------------------------------------
# MTAN layout
# ---------------------------------------------------------------------------------------------

def write_mtan(root, label_folder="label_7", seed=0):
  rng = np.random.default_rng(seed)
  arrays = {}
  for split, n in (("train", 2), ("val", 1)):
    for folder in ("image", label_folder, "depth"):
      os.makedirs(os.path.join(root, split, folder), exist_ok=True)
    for i in range(n):
      image = rng.random((H, W, 3)).astype(np.float32)
      label = rng.integers(-1, 7, (H, W)).astype(np.float32)
      depth = rng.uniform(0.0, 0.49, (H, W, 1)).astype(np.float32)
      depth[2, :5] = 0.0
      for folder, value in (("image", image), (label_folder, label), ("depth", depth)):
        np.save(os.path.join(root, split, folder, f"{i}.npy"), value)
      arrays[f"{split}/{i:06d}"] = (image, label, depth)
  return arrays


def convert(*args):
  return cityscapes.main(["cityscapes", "--num_workers=1", *args])


@pytest.mark.parametrize("label_folder", ["label_7", "label"])
def test_mtan_layout_roundtrip(tmp_path, label_folder):
  src, out = str(tmp_path / "src"), str(tmp_path / "out")
  arrays = write_mtan(src, label_folder)
  assert convert(f"--src={src}", f"--out_dir={out}", f"--height={H}", f"--width={W}",
                 f"--label_folder={label_folder}") == 0
  manifest = schema.read_manifest(out)
  assert manifest.class_names == cityscapes.CLASS_NAMES and manifest.num_classes == 7
  assert manifest.depth_unit == "disparity" and manifest.tasks == ("semseg", "depth")
  assert "depth_note" in manifest.extra
  records = {**read_split(out, "train"), **read_split(out, "val")}
  assert sorted(records) == sorted(arrays)
  for key, (image, labels) in records.items():
    ref_image, ref_label, ref_depth = arrays[key]
    np.testing.assert_array_equal(np.round(image * 255), np.round(ref_image * 255))
    np.testing.assert_array_equal(labels["semseg"], ref_label.astype(np.int32))
    np.testing.assert_array_equal(labels["depth"], ref_depth)


def test_mtan_label_out_of_range(tmp_path, capsys):
  src, out = str(tmp_path / "src"), str(tmp_path / "out")
  write_mtan(src)
  bad = os.path.join(src, "val", "label_7", "0.npy")
  np.save(bad, np.full((H, W), 7, np.float32))
  assert convert(f"--src={src}", f"--out_dir={out}", f"--height={H}", f"--width={W}") == 1
  assert bad in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# Official (raw) layout
# ---------------------------------------------------------------------------------------------

@pytest.fixture()
def label_table(monkeypatch):
  """The real table when cityscapesscripts is installed, else MINI_TABLE."""
  try:
    return cityscapes.cityscapes_label_table()
  except reading.ConversionError:
    monkeypatch.setattr(cityscapes, "cityscapes_label_table", lambda: MINI_TABLE)
    return MINI_TABLE


# The official names (mcordts/cityscapesScripts README, "Dataset Structure"):
# {root}/{type}/{split}/{city}/{city}_{seq:0>6}_{frame:0>6}_{type}{ext}; written out here, not
# taken from the converter.
RAW_TYPES = {"image": ("leftImg8bit", "_leftImg8bit.png"),
             "semseg": ("gtFine", "_gtFine_labelIds.png"),
             "depth": ("disparity", "_disparity.png")}


def write_raw(root, seed=0, zip_folders=False):
  """leftImg8bit / gtFine labelIds / disparity PNGs for 2 train (2 cities) + 1 val images.

  zip_folders: put each type under a folder named after its zip
  (`leftImg8bit_trainvaltest/leftImg8bit/...`) instead of directly under `root`.
  """
  rng = np.random.default_rng(seed)
  arrays = {}
  for split, city, frame in (("train", "aachen", 19), ("train", "bremen", 5), ("val", "lindau", 7)):
    stem = f"{city}_000000_{frame:06d}"
    top = lambda t: os.path.join(root, f"{t}_trainvaltest", t) if zip_folders else os.path.join(
        root, t)
    folders = {role: os.path.join(top(t), split, city) for role, (t, _) in RAW_TYPES.items()}
    for d in folders.values():
      os.makedirs(d, exist_ok=True)
    image = rng.integers(0, 256, (SRC_H, SRC_W, 3), dtype=np.uint8)
    ids = rng.choice(FIXTURE_IDS, (SRC_H, SRC_W)).astype(np.uint8)
    disparity = rng.integers(0, 30000, (SRC_H, SRC_W)).astype(np.uint16)
    disparity[0, :] = 0
    for role, value in (("image", image), ("semseg", ids), ("depth", disparity)):
      Image.fromarray(value).save(os.path.join(folders[role], stem + RAW_TYPES[role][1]))
    # Other files of the release beside them are ignored.
    Image.fromarray(ids).save(os.path.join(folders["semseg"], stem + "_gtFine_labelTrainIds.png"))
    with open(os.path.join(folders["semseg"], stem + "_gtFine_polygons.json"), "w") as f:
      f.write("{}")
    arrays[f"{split}/{stem}"] = (image, ids, disparity)
  return arrays


def raw_convert(src, out, *extra):
  return convert("--layout=raw", f"--src={src}", f"--out_dir={out}", f"--height={OUT_H}",
                 f"--width={OUT_W}", *extra)


def test_category_lut_from_a_table():
  lut = cityscapes.category_lut(MINI_TABLE, ignore_in_eval=False)
  assert lut[0] == -1 and lut[7] == 0 and lut[9] == 0 and lut[26] == 6 and lut[23] == 4
  assert lut[40] == cityscapes.NOT_A_LABEL_ID
  assert cityscapes.category_lut(MINI_TABLE, ignore_in_eval=True)[9] == -1


def test_real_label_table_maps_ids_to_categories():
  pytest.importorskip("cityscapesscripts.helpers.labels",
                      reason=f"needs {cityscapes.CITYSCAPESSCRIPTS_PIN} (pip --no-deps)")
  lut = cityscapes.category_lut(cityscapes.cityscapes_label_table(), ignore_in_eval=False)
  assert lut[:34].tolist() == ([-1] * 7 + [0] * 4 + [1] * 6 + [2] * 4 + [3] * 2 + [4]
                               + [5] * 2 + [6] * 8)
  assert np.all(lut[34:] == cityscapes.NOT_A_LABEL_ID)


def test_raw_layout_roundtrip(tmp_path, label_table):
  src, out = str(tmp_path / "src"), str(tmp_path / "out")
  arrays = write_raw(src)
  assert raw_convert(src, out) == 0
  manifest = schema.read_manifest(out)
  assert manifest.depth_unit == "disparity" and (manifest.height, manifest.width) == (8, 16)
  assert "pixels" in manifest.extra["depth_note"]
  lut = cityscapes.category_lut(label_table, ignore_in_eval=False)
  records = {**read_split(out, "train"), **read_split(out, "val")}
  assert sorted(records) == sorted(arrays)
  for key, (image, labels) in records.items():
    ref_image, ids, disparity = arrays[key]
    expected_image = np.asarray(Image.fromarray(ref_image).resize(
        (OUT_W, OUT_H), Image.Resampling.BILINEAR))
    np.testing.assert_array_equal(np.round(image * 255), expected_image)
    np.testing.assert_array_equal(labels["semseg"], lut[ids][1::2, 1::2])
    d = disparity[1::2, 1::2].astype(np.float64)
    expected = np.where(d > 0, (d - 1) / 256 * (OUT_W / SRC_W), 0)
    np.testing.assert_allclose(labels["depth"][..., 0], expected, rtol=1e-6)


def test_raw_layout_in_zip_named_folders(tmp_path, label_table):
  src, out = str(tmp_path / "src"), str(tmp_path / "out")
  arrays = write_raw(src, zip_folders=True)
  assert raw_convert(src, out) == 0
  records = {**read_split(out, "train"), **read_split(out, "val")}
  assert sorted(records) == sorted(arrays) == [
      "train/aachen_000000_000019", "train/bremen_000000_000005", "val/lindau_000000_000007"]


def _break_raw(src, case):
  stem = "bremen_000000_000005"
  image = os.path.join(src, "leftImg8bit", "train", "bremen", stem + "_leftImg8bit.png")
  label = os.path.join(src, "gtFine", "train", "bremen", stem + "_gtFine_labelIds.png")
  if case == "missing_folder":
    path = os.path.join(src, "disparity", "val")
    for dirpath, _, names in os.walk(path):
      for n in names:
        os.remove(os.path.join(dirpath, n))
    os.rmdir(os.path.join(path, "lindau"))
    os.rmdir(path)
    return path
  if case == "missing_partner":
    os.remove(label)
    return label  # named as the missing partner; the message names the image too
  if case == "corrupt":
    with open(image, "wb") as f:
      f.write(b"\x89PNG\r\n\x1a\n not really")
    return image
  if case == "wrong_shape":
    Image.fromarray(np.full((SRC_H, SRC_W - 2), 7, np.uint8)).save(label)
    return label
  if case == "label_range":
    Image.fromarray(np.full((SRC_H, SRC_W), 40, np.uint8)).save(label)
    return label
  if case == "wrong_dtype":
    Image.fromarray(np.full((SRC_H, SRC_W), 7, np.uint16)).save(label)
    return label
  raise ValueError(case)


@pytest.mark.parametrize("case", ["missing_folder", "missing_partner", "corrupt", "wrong_shape",
                                  "label_range", "wrong_dtype"])
def test_raw_bad_input_stops_naming_the_file(tmp_path, label_table, capsys, case):
  src, out = str(tmp_path / "src"), str(tmp_path / "out")
  write_raw(src)
  path = _break_raw(src, case)
  assert raw_convert(src, out) == 1
  err = capsys.readouterr().err
  assert path in err, err
  assert not os.path.exists(os.path.join(out, schema.MANIFEST_NAME))


def test_raw_skip_bad(tmp_path, label_table):
  src, out = str(tmp_path / "src"), str(tmp_path / "out")
  write_raw(src)
  bad = _break_raw(src, "label_range")
  assert raw_convert(src, out, "--skip_bad") == 0
  manifest = schema.read_manifest(out)
  assert manifest.num_examples("train") == 1 and manifest.num_examples("val") == 1
  assert [s["path"] for s in manifest.extra["skipped"]] == [bad]
  assert "40" in manifest.extra["skipped"][0]["reason"]
