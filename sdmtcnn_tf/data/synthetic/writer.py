"""Writing the synthetic dataset to disk: `generate_dataset` renders the "train" and "val" splits
into TFRecord shards and a manifest (deterministically: the same seed gives the same bytes), and
`ensure_dataset` reuses a matching existing dataset, (re)generates a missing or interrupted one,
and refuses to touch a folder holding anything else.
"""

from __future__ import annotations

import os
import sys

import tqdm

from sdmtcnn_tf import tasks as tasks_lib
from sdmtcnn_tf.data import schema
from sdmtcnn_tf.data.synthetic.render import render_example
from sdmtcnn_tf.data.synthetic.scene import CLASS_NAMES, NUM_CLASSES

DATASET_NAME = "synthetic"
GENERATOR_VERSION = 2  # 2: denser, bluer fog (a stronger per-pixel depth cue)

SPLITS = ("train", "val")
# Present while generate_dataset runs: a folder holding it is an interrupted generation.
INCOMPLETE_MARKER = ".synthetic-incomplete"


def _serialize(seed: int, split: str, index: int, height: int, width: int, tasks) -> bytes:
  image, labels = render_example(seed, split, index, height, width)
  # encode_example serializes deterministically: the same seed gives the same bytes in every
  # process (tested across processes by tests/test_synthetic.py).
  return schema.encode_example(f"{split}/{index:06d}", image, {t: labels[t] for t in tasks})


def _canonical_tasks(tasks) -> tuple:
  """`tasks` (names, or a comma-separated string) in ALL_TASKS order: the generator renders
  exactly the built-in tasks. ValueError on an unknown or repeated name."""
  if isinstance(tasks, str):
    tasks = [t for t in tasks.split(",") if t]
  names = list(tasks)
  unknown = [n for n in names if n not in tasks_lib.ALL_TASKS]
  if unknown:
    raise ValueError(f"unknown task(s) {unknown}; expected names from "
                     f"{', '.join(tasks_lib.ALL_TASKS)}")
  if len(set(names)) != len(names):
    raise ValueError(f"duplicate task in {names}")
  return tuple(n for n in tasks_lib.ALL_TASKS if n in names)


def generate_dataset(out_dir: str, num_train: int, num_val: int, height: int, width: int,
                     seed: int = 0, tasks=tasks_lib.ALL_TASKS,
                     num_shards: int = 2) -> schema.Manifest:
  """Renders the splits "train" and "val" into `out_dir` and writes its manifest.json.

  Only the labels of `tasks` are stored. Each split gets min(num_shards, its size) shards (at
  least one). An existing manifest is removed first and `INCOMPLETE_MARKER` marks the folder
  until the new manifest is written.
  Returns:
    The Manifest (dataset "synthetic", depth in metres, 13 classes, extra {"seed",
    "generator_version"}).
  """
  tasks = _canonical_tasks(tasks)
  counts = {"train": int(num_train), "val": int(num_val)}
  if min(counts.values()) < 0 or height < 2 or width < 2 or num_shards < 1:
    raise ValueError(f"bad synthetic dataset size: counts {counts}, {height}x{width}, "
                     f"num_shards {num_shards}")
  print(f"generating the synthetic dataset in {out_dir}: {counts['train']} train + "
        f"{counts['val']} val images of {height}x{width} (seed {seed})", file=sys.stderr,
        flush=True)
  os.makedirs(out_dir, exist_ok=True)
  marker = os.path.join(out_dir, INCOMPLETE_MARKER)
  with open(marker, "w") as f:
    f.write(f"seed={seed}\n")
  manifest_path = os.path.join(out_dir, schema.MANIFEST_NAME)
  if os.path.exists(manifest_path):
    os.remove(manifest_path)
  splits = {}
  for split, n in counts.items():
    bar = tqdm.tqdm(total=n, desc=f"synthetic {split}", unit="img", file=sys.stderr,
                    mininterval=1.0)
    def records(split=split, n=n, bar=bar):
      for i in range(n):
        yield _serialize(seed, split, i, height, width, tasks)
        bar.update(1)
    with bar:
      splits[split] = schema.write_split(out_dir, split, records(), max(1, min(num_shards, n)),
                                         num_examples=n)
  manifest = schema.Manifest(
      dataset=DATASET_NAME, height=int(height), width=int(width), tasks=tasks,
      num_classes=NUM_CLASSES, class_names=CLASS_NAMES, depth_unit="metres", splits=splits,
      extra={"seed": int(seed), "generator_version": GENERATOR_VERSION})
  schema.write_manifest(out_dir, manifest)
  os.remove(marker)
  return manifest


def _is_own_file(name: str) -> bool:
  """Whether `name` is something generate_dataset writes (shards, temporaries, manifest)."""
  if name in (schema.MANIFEST_NAME, schema.MANIFEST_NAME + ".tmp", INCOMPLETE_MARKER):
    return True
  return any(name.startswith(f"{s}-") and (name.endswith(".tfrecord") or
                                           name.endswith(".tfrecord.tmp")) for s in SPLITS)


def _differences(manifest: schema.Manifest, counts: dict, height: int, width: int, seed: int,
                 tasks: tuple) -> list:
  """Human-readable list of what `manifest` has that differs from the request."""
  diffs = []
  if manifest.dataset != DATASET_NAME:
    return [f"it holds the dataset {manifest.dataset!r}, not {DATASET_NAME!r}"]
  version = manifest.extra.get("generator_version")
  if version != GENERATOR_VERSION:
    diffs.append(f"generator_version {version} (current: {GENERATOR_VERSION})")
  if manifest.extra.get("seed") != seed:
    diffs.append(f"seed {manifest.extra.get('seed')} (requested {seed})")
  if (manifest.height, manifest.width) != (height, width):
    diffs.append(f"size {manifest.height}x{manifest.width} (requested {height}x{width})")
  for split, n in counts.items():
    have = manifest.num_examples(split) if split in manifest.splits else None
    if have != n:
      diffs.append(f"{have} {split} examples (requested {n})")
  missing = [t for t in tasks if t not in manifest.tasks]
  if missing:
    diffs.append(f"tasks {list(manifest.tasks)} lack {missing}")
  return diffs


def ensure_dataset(data_dir: str, num_train: int, num_val: int, height: int, width: int,
                   seed: int = 0, tasks=tasks_lib.ALL_TASKS,
                   num_shards: int = 2) -> schema.Manifest:
  """Returns the manifest of the synthetic dataset in `data_dir`, generating it if absent.

  A folder that is missing, empty, or left by an interrupted generate_dataset is (re)generated.
  One whose manifest matches the request (dataset "synthetic", generator version, seed, size,
  example counts, and tasks a superset of `tasks`; the shard count does not matter) is used
  as it is.
  Raises:
    ValueError naming the folder and what differs if it holds anything else: a user's data
    is never overwritten.
  """
  if not data_dir:
    raise ValueError("no data directory given for the synthetic dataset")
  tasks = _canonical_tasks(tasks)
  args = (data_dir, num_train, num_val, height, width, seed, tasks, num_shards)
  entries = os.listdir(data_dir) if os.path.isdir(data_dir) else []
  if os.path.exists(data_dir) and not os.path.isdir(data_dir):
    raise ValueError(f"data directory {data_dir!r} is a file, not a directory")
  if not entries:
    return generate_dataset(*args)
  if INCOMPLETE_MARKER in entries and all(_is_own_file(e) for e in entries):
    return generate_dataset(*args)
  if schema.MANIFEST_NAME not in entries:
    raise ValueError(f"data directory {data_dir!r} is not empty but holds no "
                     f"{schema.MANIFEST_NAME}; refusing to write the synthetic dataset there "
                     "(empty it or choose another directory)")
  try:
    manifest = schema.read_manifest(data_dir)
  except schema.SchemaError as e:
    raise ValueError(f"data directory {data_dir!r} holds an unreadable manifest: {e}") from e
  diffs = _differences(manifest, {"train": num_train, "val": num_val}, height, width, seed,
                       tasks)
  if diffs:
    raise ValueError(f"data directory {data_dir!r} does not hold the requested synthetic "
                     f"dataset: {'; '.join(diffs)}. Delete it or choose another directory.")
  for split in SPLITS:
    try:
      schema.shard_paths(data_dir, manifest, split)
    except FileNotFoundError as e:
      raise ValueError(f"data directory {data_dir!r} is incomplete: {e}") from e
  return manifest
