"""TF Serving exports and the serving client (issue 10, points 5-7).

TF Serving itself cannot be installed here: the slow tests serve the exported SavedModel from an
in-test HTTP server implementing TF Serving's documented REST predict API (and an in-test gRPC
server implementing PredictionService/Predict) by calling the loaded signature, and run
`python -m sdmtcnn_tf.serving_client` against it, so the client, the request encoding and the
signatures are tested together end to end. The fast tests cover the encodings and the refusals.
"""

from __future__ import annotations

import base64
import contextlib
import http.server
import io
import json
import os
import re
import socket
import threading
import urllib.request

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from sdmtcnn_tf import experiment, export, serving_client, serving_protos
from sdmtcnn_tf.config import ExperimentConfig
from sdmtcnn_tf import config as config_lib
from tests.conftest import make_task, run_module


# ---- in-test servers ---------------------------------------------------------------------------
class _PredictHandler(http.server.BaseHTTPRequestHandler):
  """TF Serving's REST predict API (row format) over `self.server.models` {name: loaded
  SavedModel}: POST /v1/models/NAME[/versions/N]:predict."""

  def do_POST(self):  # noqa: N802 (http.server's name)
    match = re.fullmatch(r"/v1/models/([^/:]+)(?:/versions/\d+)?:predict", self.path)
    if not match:
      return self._answer(404, {"error": f"Malformed request: POST {self.path}"})
    model = self.server.models.get(match.group(1))
    if model is None:
      return self._answer(404, {"error": f"Servable not found for request: "
                                         f"Latest({match.group(1)})"})
    try:
      body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
      name = body.get("signature_name", "serving_default")
      if name not in model.signatures:
        return self._answer(400, {"error": f'Serving signature name: "{name}" not found in '
                                           "signature def"})
      function = model.signatures[name]
      (input_name, spec), = function.structured_input_signature[1].items()
      values = [base64.b64decode(v["b64"]) if isinstance(v, dict) else v
                for v in body["instances"]]
      if spec.dtype == tf.string:
        array = np.array(values, object)
      else:
        array = np.asarray(values)
        if spec.dtype.is_integer and array.dtype.kind == "f":
          raise ValueError(f"input {input_name} expects {spec.dtype.name} values, got floats")
      outputs = function(**{input_name: tf.constant(array, dtype=spec.dtype)})
      rows = [{k: v[i].numpy().tolist() for k, v in outputs.items()}
              for i in range(len(values))]
      return self._answer(200, {"predictions": rows})
    except Exception as e:  # as TF Serving: the error text, HTTP 400
      return self._answer(400, {"error": " ".join(str(e).split())})

  def _answer(self, status: int, obj: dict):
    data = json.dumps(obj).encode()
    self.send_response(status)
    self.send_header("Content-Type", "application/json")
    self.send_header("Content-Length", str(len(data)))
    self.end_headers()
    self.wfile.write(data)

  def log_message(self, *args):
    pass


@contextlib.contextmanager
def rest_server(models: dict):
  server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _PredictHandler)
  server.models = models
  thread = threading.Thread(target=server.serve_forever, daemon=True)
  thread.start()
  try:
    yield f"127.0.0.1:{server.server_address[1]}"
  finally:
    server.shutdown()
    server.server_close()


@contextlib.contextmanager
def grpc_server(models: dict):
  """PredictionService/Predict over `models`, with the same request protos as the client."""
  from concurrent import futures

  import grpc
  protos = serving_protos.classes()

  def predict(request, context):
    model = models.get(request.model_spec.name)
    if model is None:
      context.abort(grpc.StatusCode.NOT_FOUND,
                    f"Servable not found for request: Latest({request.model_spec.name})")
    function = model.signatures[request.model_spec.signature_name or "serving_default"]
    outputs = function(**{k: tf.constant(serving_protos.to_array(v))
                          for k, v in request.inputs.items()})
    response = protos.PredictResponse()
    for k, v in outputs.items():
      serving_protos.set_tensor(response.outputs[k], v.numpy())
    return response

  handler = grpc.method_handlers_generic_handler(
      "tensorflow.serving.PredictionService",
      {"Predict": grpc.unary_unary_rpc_method_handler(
          predict, request_deserializer=protos.PredictRequest.FromString,
          response_serializer=lambda m: m.SerializeToString())})
  server = grpc.server(futures.ThreadPoolExecutor(max_workers=2),
                       options=[("grpc.max_receive_message_length", -1),
                                ("grpc.max_send_message_length", -1)])
  server.add_generic_rpc_handlers((handler,))
  port = server.add_insecure_port("127.0.0.1:0")
  server.start()
  try:
    yield f"127.0.0.1:{port}"
  finally:
    server.stop(None)


def _png(pixels: np.ndarray, fmt: str = "PNG") -> bytes:
  buffer = io.BytesIO()
  Image.fromarray(pixels).save(buffer, format=fmt)
  return buffer.getvalue()


def _error_line(proc) -> str:
  """The client's stderr must end with exactly one `error:` line; returns it."""
  assert proc.returncode == 1, (proc.stdout, proc.stderr)
  lines = [line for line in proc.stderr.splitlines() if line.strip()]
  errors = [line for line in lines if line.startswith("error:")]
  assert len(errors) == 1 and lines[-1] == errors[0], proc.stderr
  return errors[0]


# ---- fast: encodings, protos, refusals ---------------------------------------------------------
def test_rest_body_is_tf_servings_row_format():
  files = [b"\x89PNG fake", b"\xff\xd8 other"]
  body = json.loads(serving_client.rest_body("serving_bytes", files))
  assert body == {"signature_name": "serving_bytes",
                  "instances": [{"b64": base64.b64encode(f).decode()} for f in files]}
  pixels = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
  body = json.loads(serving_client.rest_body("serving_default", [pixels]))
  assert body["signature_name"] == "serving_default"
  assert np.array_equal(np.asarray(body["instances"], np.uint8), pixels[None])
  assert serving_client.rest_url("host:8501", "teacher") == (
      "http://host:8501/v1/models/teacher:predict")


def test_parse_predictions_rows_columns_single_output_and_error():
  rows = serving_client.parse_predictions(json.dumps(
      {"predictions": [{"depth": [[1.5]], "semseg_labels": [[2]]},
                       {"depth": [[0.5]], "semseg_labels": [[0]]}]}).encode())
  assert [r["depth"].tolist() for r in rows] == [[[1.5]], [[0.5]]]
  assert rows[1]["semseg_labels"].tolist() == [[0]]
  cols = serving_client.parse_predictions(json.dumps(
      {"outputs": {"depth": [[[1.0]], [[2.0]]]}}).encode())
  assert [c["depth"].tolist() for c in cols] == [[[1.0]], [[2.0]]]
  # one output: TF Serving leaves its name out; the caller then asks the model's metadata
  with pytest.raises(serving_client.ServerError, match="single output"):
    serving_client.parse_predictions(b'{"predictions": [[[1.0]]]}')
  assert serving_client.parse_predictions(b'{"predictions": [[[1.0]]]}',
                                          ["depth"])[0]["depth"].tolist() == [[1.0]]
  with pytest.raises(serving_client.ServerError, match=r"^bad input: line 2$"):
    serving_client.parse_predictions(b'{"error": "bad input:\\n line 2"}')


def test_batches_hold_consecutive_images_of_one_size():
  sizes = [(4, 4, 3), (4, 4, 3), (4, 4, 3), (8, 4, 3), (4, 4, 3)]
  assert serving_client.batches(list("abcde"), sizes, 2) == [[0, 1], [2], [3], [4]]
  assert serving_client.batches(list("abcde"), sizes, 1) == [[0], [1], [2], [3], [4]]


def test_read_image_refusals_are_one_line(tmp_path):
  grey = tmp_path / "grey.png"
  Image.fromarray(np.full((5, 7), 9, np.uint8)).save(grey)
  data, pixels = serving_client.read_image(str(grey))
  assert pixels.shape == (5, 7, 3) and pixels.dtype == np.uint8 and data == grey.read_bytes()
  broken = tmp_path / "broken.png"
  broken.write_bytes(grey.read_bytes()[:30])
  for path, pattern in ((broken, "not a decodable image"),):
    with pytest.raises(ValueError, match=pattern) as info:
      serving_client.read_image(str(path))
    assert "\n" not in str(info.value) and str(path) in str(info.value)
  deep = tmp_path / "deep.png"
  Image.fromarray(np.full((5, 7), 40000, np.uint16)).save(deep)
  with pytest.raises(ValueError, match="not 8-bit samples.*convert it to 8-bit RGB"):
    serving_client.read_image(str(deep))
  tiff = tmp_path / "picture.tiff"
  Image.fromarray(np.zeros((5, 7, 3), np.uint8)).save(tiff)
  with pytest.raises(ValueError, match="a TIFF image; the model decodes only PNG"):
    serving_client.read_image(str(tiff), serving_client.BYTES_FORMATS)
  for bad, what in ((np.zeros((5, 7), np.uint8), r"uint8 and shape \[5, 7\]"),
                    (np.zeros((5, 7, 3), np.float32), r"float32 and shape \[5, 7, 3\]"),
                    (np.zeros((1, 5, 7, 3), np.uint8), r"shape \[1, 5, 7, 3\]")):
    with pytest.raises(ValueError, match=what + ".*takes uint8 \\[height, width, 3\\]"):
      serving_client.check_image(bad, "x.png")


def test_built_in_protos_are_tf_servings_wire_format():
  protos = serving_protos._built_in()
  image = np.arange(2 * 3 * 4 * 3, dtype=np.uint8).reshape(2, 3, 4, 3)
  log = protos.PredictionLog()
  log.predict_log.request.CopyFrom(serving_protos.predict_request(
      "teacher", "serving_default", {"image": image}, protos))
  data = log.SerializeToString()
  # the wire format by hand: PredictionLog.predict_log = 6, PredictLog.request = 1,
  # PredictRequest.model_spec = 1 (name = 1, signature_name = 3), inputs = 2
  assert data[:1] == bytes([6 << 3 | 2])
  parsed = protos.PredictionLog.FromString(data)
  assert parsed.WhichOneof("log_type") == "predict_log"
  request = parsed.predict_log.request
  assert (request.model_spec.name, request.model_spec.signature_name) == (
      "teacher", "serving_default")
  assert np.array_equal(serving_protos.to_array(request.inputs["image"]), image)
  spec = protos.ModelSpec(name="m", signature_name="s").SerializeToString()
  assert spec == b"\x0a\x01m\x1a\x01s"
  strings = serving_protos.predict_request(
      "m", "serving_bytes", {"image_bytes": np.array([b"\x00ab"], object)}, protos)
  assert serving_protos.to_array(strings.inputs["image_bytes"]).tolist() == [b"\x00ab"]


def test_models_config_names_each_exported_role(tmp_path):
  for role in ("teacher", "student"):
    (tmp_path / role / "1").mkdir(parents=True)
  (tmp_path / "other" / "1").mkdir(parents=True)
  text = export.models_config(str(tmp_path))
  assert re.findall(r'name: "(\w+)"\s+base_path: "([^"]+)"', text) == [
      ("teacher", "/models/teacher"), ("student", "/models/student")]
  assert text.count("config {") == 2 and 'model_platform: "tensorflow"' in text
  (tmp_path / "student" / "1").rmdir()
  assert '"student"' not in export.models_config(str(tmp_path))


def test_export_of_a_run_without_checkpoint_is_one_line(tmp_path):
  model_dir = tmp_path / "run"
  model_dir.mkdir()
  config_lib.save(ExperimentConfig.from_flat(model_dir=str(model_dir)), str(model_dir))
  proc = run_module("sdmtcnn_tf.export", f"--model_dir={model_dir}",
                    f"--serving_dir={tmp_path / 'serving'}", check=False)
  line = _error_line(proc)
  assert "is missing" in line and "has not finished an epoch" in line, line
  assert not (tmp_path / "serving").exists()


def test_client_refuses_an_undecodable_file_before_sending(tmp_path):
  (tmp_path / "good.png").write_bytes(_png(np.zeros((4, 4, 3), np.uint8)))
  (tmp_path / "notes.png").write_text("not an image")
  proc = run_module("sdmtcnn_tf.serving_client", "--server=127.0.0.1:9", "--model=teacher",
                    f"--images={tmp_path}/*.png", f"--out={tmp_path / 'out'}", check=False)
  line = _error_line(proc)
  assert "notes.png: not a decodable image" in line, line
  assert not (tmp_path / "out").exists()


def test_client_prints_the_servers_error_in_one_line(tmp_path):
  class NoSignatures:
    signatures: dict = {}

  (tmp_path / "a.png").write_bytes(_png(np.zeros((4, 4, 3), np.uint8)))
  with rest_server({"teacher": NoSignatures()}) as server:
    common = (f"--server={server}", f"--images={tmp_path}/*.png", f"--out={tmp_path / 'out'}")
    proc = run_module("sdmtcnn_tf.serving_client", "--model=teacher", *common, check=False)
    line = _error_line(proc)
    assert f"the server {server} answered HTTP 400" in line, line
    assert 'Serving signature name: "serving_bytes" not found in signature def' in line
    with pytest.raises(serving_client.ServerError,
                       match="HTTP 404.*Servable not found for request: Latest\\(nope\\)"):
      serving_client.run(server, "nope", f"{tmp_path}/*.png", str(tmp_path / "out"))
  with pytest.raises(serving_client.ServerError, match=f"cannot reach the server {server}"):
    serving_client.run(server, "teacher", f"{tmp_path}/*.png", str(tmp_path / "out"))


def _free_port() -> int:
  """A localhost port nothing listens on (bound and released: free when the test runs)."""
  with socket.socket() as probe:
    probe.bind(("127.0.0.1", 0))
    return probe.getsockname()[1]


def test_grpc_client_with_nothing_listening_says_it_cannot_reach_the_server(tmp_path):
  (tmp_path / "a.png").write_bytes(_png(np.zeros((4, 4, 3), np.uint8)))
  server = f"127.0.0.1:{_free_port()}"
  proc = run_module("sdmtcnn_tf.serving_client", f"--server={server}", "--model=teacher",
                    "--grpc", f"--images={tmp_path}/*.png", f"--out={tmp_path / 'out'}",
                    check=False)
  line = _error_line(proc)
  # no server answered: not "the server ... answered UNAVAILABLE"
  assert f"cannot reach the server {server} over gRPC" in line, line
  assert "is TF Serving running" in line and "Connection refused" in line, line
  assert "answered" not in line, line
  # a server that is not a gRPC one (TF Serving's REST port given to --grpc): not reached either
  with rest_server({}) as rest:
    with pytest.raises(serving_client.ServerError,
                       match=f"^cannot reach the server {re.escape(rest)} over gRPC"):
      serving_client.grpc_predict(rest, "teacher", "serving_bytes", [b"png"], timeout=10)


# ---- an untrained SD-MTCNN's exports: variables and empty requests -----------------------------
@pytest.fixture(scope="module")
def tiny_exports(tmp_path_factory):
  """An untrained SD-MTCNN at 32x32 whose teacher and student are exported by
  export.export_role: {role: (Keras role model, SavedModel path)}."""
  cfg = ExperimentConfig.from_flat(
      height=32, width=32, width_multiplier=0.125, student_channels=16, num_classes=5, seed=3,
      method="sd_mtcnn", distill="eq5").validate()
  network, _ = experiment.build_model(cfg)
  folder = tmp_path_factory.mktemp("tiny_exports")
  return {role: (getattr(network, role), export.export_role(
      getattr(network, role), cfg, str(folder / role / "1"))) for role in export.ROLES}


@pytest.mark.slow  # exporting two roles takes about a minute on 2 cores
def test_exports_store_each_weight_once_and_expose_the_models_variables(tiny_exports):
  for role, (model, path) in tiny_exports.items():
    # the checkpoint holds each weight once (not twice, as with Keras' ExportArchive.track)
    stored = [shape for name, shape in tf.train.list_variables(
        os.path.join(path, "variables", "variables")) if not name.startswith("_CHECKPOINTABLE")]
    assert len(stored) == len(model.weights), role
    assert sum(int(np.prod(shape)) for shape in stored) == sum(
        int(np.prod(w.shape)) for w in model.weights), role
    # ... and the loaded SavedModel exposes them, in the model's order
    loaded = tf.saved_model.load(path)
    for collection in ("variables", "trainable_variables", "non_trainable_variables"):
      expected = getattr(model, collection)
      exposed = list(getattr(loaded, collection))
      assert len(exposed) == len(expected) > 0, (role, collection)
      for got, want in zip(exposed, expected):
        assert got.shape == tuple(want.shape) and got.trainable == want.trainable, want.path
        assert np.array_equal(got.numpy(), np.asarray(want.numpy())), want.path
    assert len(loaded.trainable_variables) + len(loaded.non_trainable_variables) == len(
        loaded.variables)
    # the signatures compute with these very variables: changing one changes the outputs
    image = tf.constant(np.full((1, 32, 32, 3), 100, np.uint8))
    before = loaded.signatures[export.SIGNATURE](image=image)["semseg_logits"].numpy()
    for variable in loaded.trainable_variables:  # (an untrained student's heads start at 0)
      variable.assign_add(tf.fill(variable.shape, 0.1))
    after = loaded.signatures[export.SIGNATURE](image=image)["semseg_logits"].numpy()
    assert not np.array_equal(before, after), role


@pytest.mark.slow  # exporting two roles takes about a minute on 2 cores
def test_a_request_of_no_images_is_refused_saying_so(tiny_exports):
  message = re.escape("the request holds no images (batch of 0); send at least one")
  for role, (_, path) in tiny_exports.items():
    signatures = tf.saved_model.load(path).signatures
    for size in ((32, 32), (40, 24)):  # the training size and another one
      with pytest.raises(tf.errors.InvalidArgumentError, match=f"serving_default: {message}"):
        signatures["serving_default"](image=tf.zeros((0, *size, 3), tf.uint8))
    with pytest.raises(tf.errors.InvalidArgumentError, match=f"serving_bytes: {message}"):
      signatures["serving_bytes"](image_bytes=tf.constant([], tf.string))
    # one image still passes
    out = signatures["serving_bytes"](image_bytes=tf.constant([_png(np.zeros((40, 24, 3),
                                                                             np.uint8))]))
    assert out["depth"].shape == (1, 40, 24), role


# ---- slow: a real export served end to end -----------------------------------------------------
@pytest.fixture(scope="module")
def served(smoke_run, tmp_path_factory):
  """The smoke run exported with --role=all into a serving folder: (cfg, folder, loaded)."""
  serving_dir = str(tmp_path_factory.mktemp("serving"))
  proc = run_module("sdmtcnn_tf.export", f"--model_dir={smoke_run}",
                    f"--serving_dir={serving_dir}", "--role=all")
  assert "exported the teacher to" in proc.stdout
  cfg = config_lib.load(smoke_run)
  return cfg, serving_dir, tf.saved_model.load(os.path.join(serving_dir, "teacher", "1"))


def test_export_layout_warmup_sizes_and_refusals(served):
  cfg, serving_dir, loaded = served
  H, W = cfg.data.height, cfg.data.width
  assert sorted(os.listdir(serving_dir)) == ["models.config", "teacher"]  # vanilla: no student
  with open(os.path.join(serving_dir, "models.config")) as f:
    assert re.findall(r'name: "(\w+)"\s+base_path: "([^"]+)"', f.read()) == [
        ("teacher", "/models/teacher")]
  assert {"serving_default", "serving_bytes"} <= set(loaded.signatures)

  # each weight stored once: the checkpoint holds exactly the teacher's weights (Keras 3.15's
  # ExportArchive.track would store them twice)
  network, _ = experiment.build_model(cfg)
  stored = sum(int(np.prod(shape)) for name, shape in tf.train.list_variables(
      os.path.join(serving_dir, "teacher", "1", "variables", "variables"))
      if not name.startswith("_CHECKPOINTABLE"))
  assert stored == sum(int(np.prod(w.shape)) for w in network.teacher.weights)
  assert len(loaded.variables) == len(network.teacher.weights)  # exposed, as stored

  # warmup: a TFRecord of PredictionLogs, one per signature, each answered by its signature
  protos = serving_protos.classes()
  path = os.path.join(serving_dir, "teacher", "1", "assets.extra", "tf_serving_warmup_requests")
  logs = [protos.PredictionLog.FromString(r.numpy()) for r in tf.data.TFRecordDataset(path)]
  assert [log.predict_log.request.model_spec.signature_name for log in logs] == [
      "serving_default", "serving_bytes"]
  for log in logs:
    request = log.predict_log.request
    assert request.model_spec.name == "teacher"
    inputs = {k: tf.constant(serving_protos.to_array(v)) for k, v in request.inputs.items()}
    out = loaded.signatures[request.model_spec.signature_name](**inputs)
    assert out["depth"].shape == (1, H, W)

  # any size: outputs come back at the input's size; labels follow the resized logits
  rng = np.random.default_rng(0)
  image = rng.integers(0, 256, (2, H + 8, W - 16, 3), dtype=np.uint8)
  out = loaded.signatures["serving_default"](image=tf.constant(image))
  assert set(out) == {name for t in cfg.task_specs  # the named outputs of today
                      for name in t.serving_outputs(tf.zeros((1, 1, 1, t.channels)))}
  for name, value in out.items():
    assert value.shape[:3] == (2, H + 8, W - 16), name
  assert np.array_equal(out["semseg_labels"].numpy(),
                        np.argmax(out["semseg_logits"].numpy(), -1))
  norms = np.linalg.norm(out["normals"].numpy(), axis=-1)
  assert np.allclose(norms, 1.0, atol=1e-4)
  # serving_bytes decodes in the graph: the same image as PNG gives the same outputs
  by_bytes = loaded.signatures["serving_bytes"](image_bytes=tf.constant(
      [_png(image[0]), _png(image[1])]))
  for name, value in out.items():
    assert np.allclose(by_bytes[name].numpy(), value.numpy(), atol=1e-5), name

  # refusals, each naming what was wrong
  rank = re.escape(f"Shape of tensor image [{H + 8},{W - 16},3] is not compatible with "
                   "expected shape [?,?,?,3]")
  with pytest.raises(tf.errors.InvalidArgumentError, match=rank):  # no batch axis
    loaded.signatures["serving_default"](image=tf.constant(image[0]))
  with pytest.raises(tf.errors.InvalidArgumentError, match="expected shape \\[\\?,\\?,\\?,3\\]"):
    loaded.signatures["serving_default"](image=tf.constant(image[..., :2]))  # 2 channels
  with pytest.raises(tf.errors.InvalidArgumentError,
                     match="expected to be a uint8 tensor but is a float tensor"):
    loaded.signatures["serving_default"](image=tf.constant(image, tf.float32))
  with pytest.raises(tf.errors.InvalidArgumentError, match="same height and width"):
    loaded.signatures["serving_bytes"](image_bytes=tf.constant(
        [_png(image[0]), _png(image[0, :H])]))
  with pytest.raises(tf.errors.InvalidArgumentError, match="Unknown image file format"):
    loaded.signatures["serving_bytes"](image_bytes=tf.constant([b"not an image"]))


def test_client_rest_and_grpc_end_to_end(served, tmp_path):
  cfg, _, loaded = served
  H, W = cfg.data.height, cfg.data.width
  rng = np.random.default_rng(1)
  images = {"a": rng.integers(0, 256, (H + 8, W - 16, 3), dtype=np.uint8),   # not the
            "b": rng.integers(0, 256, (H + 8, W - 16, 3), dtype=np.uint8),   # training size
            "c": rng.integers(0, 256, (H, W, 3), dtype=np.uint8)}
  folder = tmp_path / "images"
  folder.mkdir()
  for stem, pixels in images.items():
    (folder / f"{stem}.png").write_bytes(_png(pixels))
  tasks = serving_client.client_tasks()

  def check_outputs(out, stem, pixels, direct):
    with np.load(out / f"{stem}.npz") as returned:
      assert set(returned.files) == set(direct)
      for name, value in direct.items():  # JSON carries float32 exactly
        assert np.array_equal(returned[name].astype(value.dtype), value), (stem, name)
        assert value.shape[:2] == pixels.shape[:2]
    for task in tasks:
      expected = task.served_map(direct)
      png = out / f"{stem}_{task.name}.png"
      if expected is None:
        assert not png.exists()
      else:
        assert np.array_equal(np.asarray(Image.open(png)), task.colourise(expected))
  with rest_server({"teacher": loaded}) as server:
    for signature in ("serving_bytes", "serving_default"):
      out = tmp_path / signature
      run_module("sdmtcnn_tf.serving_client", f"--server={server}", "--model=teacher",
                 f"--signature={signature}", f"--images={folder}/*.png", f"--out={out}",
                 "--batch_size=2", "--save_arrays")
      for group in (["a", "b"], ["c"]):  # the client's batches: consecutive, one size
        sent = tf.constant([(folder / f"{stem}.png").read_bytes() for stem in group]
                           if signature == "serving_bytes" else np.stack([images[s] for s in group]))
        answer = loaded.signatures[signature](**{export.INPUTS[signature]: sent})
        for i, stem in enumerate(group):
          check_outputs(out, stem, images[stem], {k: v.numpy()[i] for k, v in answer.items()})
      assert {p.name for p in out.glob("a_*.png")} == {
          f"a_{t}.png" for t in cfg.data.tasks}
    # one image without its batch axis (rank 3): the signature refuses it, the server answers
    # HTTP 400 with the signature's message, the client reports it in one line
    body = json.dumps({"signature_name": "serving_default",
                       "instances": images["c"].tolist()}).encode()
    request = urllib.request.Request(serving_client.rest_url(server, "teacher"), data=body,
                                     method="POST")
    with pytest.raises(serving_client.ServerError,
                       match=r"answered HTTP 400.*expected shape \[\?,\?,\?,3\]") as info:
      serving_client._http(request, server, 60)
    assert "\n" not in str(info.value)

  with grpc_server({"teacher": loaded}) as server:
    out = tmp_path / "grpc"
    run_module("sdmtcnn_tf.serving_client", f"--server={server}", "--model=teacher", "--grpc",
               f"--images={folder}/a.png", f"--out={out}", "--save_arrays")
    direct = loaded.signatures["serving_bytes"](
        image_bytes=tf.constant([(folder / "a.png").read_bytes()]))
    with np.load(out / "a.npz") as returned:
      for name, value in direct.items():
        assert np.array_equal(returned[name], value.numpy()[0]), name
    line = _error_line(run_module(
        "sdmtcnn_tf.serving_client", f"--server={server}", "--model=nope", "--grpc",
        f"--images={folder}/a.png", f"--out={out}", check=False))
    assert "answered NOT_FOUND" in line and "Latest(nope)" in line, line


def test_image_globs_matching_nothing_or_repeating_a_name_are_refused(tmp_path):
  (tmp_path / "a.png").write_bytes(b"")
  (tmp_path / "a.jpg").write_bytes(b"")
  (tmp_path / "b.png").write_bytes(b"")
  with pytest.raises(ValueError, match=r"--images=.*matches no file"):
    serving_client.image_files(str(tmp_path / "*.gif"))
  with pytest.raises(ValueError, match="several images are named 'a'"):
    serving_client.image_files(str(tmp_path / "*"))
  assert serving_client.image_files(str(tmp_path / "*.png")) == (
      ["a", "b"], [str(tmp_path / "a.png"), str(tmp_path / "b.png")])
