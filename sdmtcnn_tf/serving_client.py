"""A client of a TF Serving model exported by `sdmtcnn_tf.export`:

  python -m sdmtcnn_tf.serving_client --server=HOST:PORT --model=NAME \\
      [--signature=serving_bytes|serving_default] [--grpc] --images=GLOB --out=DIR

sends each image (in batches of --batch_size images of one size) to the model and writes, per
image, `<out>/<image name>_<task>.png` for every task whose outputs come back (the colour
mapping is the task's: `Task.served_map` picks its map from the named outputs, `Task.colourise`
colours it) and, with --save_arrays, `<out>/<image name>.npz` of the outputs as returned.

REST (default; the standard library's urllib): `POST http://HOST:PORT/v1/models/NAME:predict`
with `{"signature_name": ..., "instances": [...]}`, TF Serving's documented row format: for
serving_bytes each instance is `{"b64": "<base64 of the file>"}` (the file as it is: the
model decodes it), for serving_default the RGB pixels as nested lists (decoded here with
Pillow). The answer's `{"predictions": [{output name: value}, ...]}` is read back; an
`{"error": ...}` answer is reported in one line.
gRPC (--grpc, port 8500 of TF Serving's image): a `tensorflow.serving.PredictionService/Predict`
call with a PredictRequest (serving_protos: tensorflow-serving-api's classes when installed,
else wire-compatible built-in ones) over grpcio.

Every error a user can cause (an unreadable or undecodable image, an unreachable server, an
error answer) is one `error:` line naming the file or the server (cli.py).
"""

from __future__ import annotations

import base64
import glob
import io
import json
import os
import queue
import time
import urllib.error
import urllib.request

from sdmtcnn_tf import cli  # first: it quiets TensorFlow's C++ logs before TF is imported

import numpy as np
from absl import flags

SIGNATURES = ("serving_bytes", "serving_default")
INPUTS = {"serving_default": "image", "serving_bytes": "image_bytes"}  # as export.INPUTS
# what tf.io.decode_image (serving_bytes) decodes, in Pillow's names
BYTES_FORMATS = ("PNG", "JPEG", "GIF", "BMP")
# Pillow modes of 8-bit samples, which become RGB as the model expects (grey, palette, alpha)
_EIGHT_BIT_MODES = ("1", "L", "LA", "P", "PA", "RGB", "RGBA", "RGBX", "CMYK", "YCbCr", "La")


class ServerError(ValueError):
  """The server answered with an error, or could not be reached."""


class ImageRefused(ValueError):
  """An image the model cannot take (the message names the file and why)."""


# ---- images ----------------------------------------------------------------------------------
def image_files(pattern: str) -> tuple:
  """(stems, paths) of the files matching the glob `pattern` (--images), sorted. One-line
  ValueError when none match, or when two share a stem (their outputs, named by stem, would
  overwrite each other in --out)."""
  paths = sorted(glob.glob(pattern))
  if not paths:
    raise ValueError(f"--images={pattern} matches no file")
  stems = [os.path.splitext(os.path.basename(p))[0] for p in paths]
  repeated = sorted({s for s in stems if stems.count(s) > 1})
  if repeated:
    raise ValueError(f"--images={pattern}: several images are named {repeated[0]!r}; their "
                     "outputs would overwrite each other in --out")
  return stems, paths


def read_image(path: str, formats: tuple = ()) -> tuple:
  """-> (the file's bytes, uint8 [H, W, 3] RGB). One-line ValueError for a file that is not
  a decodable image, not of one of `formats` (Pillow's names; empty: any), or whose samples
  are not 8-bit (16-bit PNG, float TIFF: the model takes uint8 RGB; convert it first)."""
  from PIL import Image
  try:
    with open(path, "rb") as f:
      data = f.read()
  except OSError as e:
    raise ValueError(f"{path}: cannot read it ({e.strerror or e})") from e
  try:
    with Image.open(io.BytesIO(data)) as image:
      image.load()
      mode = image.mode
      if formats and image.format not in formats:
        raise ImageRefused(f"{path}: a {image.format} image; the model decodes only "
                           f"{', '.join(formats)} (convert it, or send its pixels with "
                           "--signature=serving_default)")
      if mode not in _EIGHT_BIT_MODES:
        raise ImageRefused(f"{path}: a {mode!r} image ({image.format}, not 8-bit samples); "
                           "the model takes uint8 RGB images: convert it to 8-bit RGB first")
      pixels = np.asarray(image.convert("RGB"))
  except ImageRefused:
    raise
  except Exception as e:  # Pillow raises UnidentifiedImageError, OSError, SyntaxError, ...
    from PIL import UnidentifiedImageError
    why = ("no image format recognised" if isinstance(e, UnidentifiedImageError)
           else f"{type(e).__name__}: {_one_line(str(e))}")
    raise ValueError(f"{path}: not a decodable image ({why})") from e
  return data, check_image(pixels, path)


def check_image(pixels: np.ndarray, where: str) -> np.ndarray:
  """`pixels` if it is one uint8 [H, W, 3] image, else a one-line ValueError naming what is
  wrong (serving_default's input is a batch of such images)."""
  pixels = np.asarray(pixels)
  if pixels.dtype != np.uint8 or pixels.ndim != 3 or pixels.shape[-1] != 3:
    raise ValueError(f"{where}: an image of dtype {pixels.dtype} and shape "
                     f"{list(pixels.shape)}; serving_default takes uint8 [height, width, 3] "
                     "RGB images")
  return pixels


def batches(paths: list, sizes: list, batch_size: int) -> list:
  """Consecutive indices into `paths` grouped into batches of at most `batch_size` images of
  one size (the signatures take one size per request)."""
  groups = []
  for i, size in enumerate(sizes):
    if groups and len(groups[-1]) < batch_size and sizes[groups[-1][0]] == size:
      groups[-1].append(i)
    else:
      groups.append([i])
  return groups


# ---- REST ------------------------------------------------------------------------------------
def rest_url(server: str, model: str, verb: str = ":predict") -> str:
  base = server if "://" in server else f"http://{server}"
  return f"{base.rstrip('/')}/v1/models/{model}{verb}"


def rest_body(signature: str, images: list) -> bytes:
  """The predict request's JSON (row format) for a batch: encoded files (bytes) for
  serving_bytes, uint8 [H, W, 3] arrays for serving_default."""
  if signature == "serving_bytes":
    instances = [{"b64": base64.b64encode(data).decode("ascii")} for data in images]
  else:
    instances = [check_image(pixels, "image").tolist() for pixels in images]
  return json.dumps({"signature_name": signature, "instances": instances}).encode()


def parse_predictions(body: bytes, output_names: list | None = None) -> list:
  """The JSON of a predict answer -> one {output name: numpy array} per instance.

  Row format: `{"predictions": [...]}`, a list of objects when the signature has several
  outputs; with a single output TF Serving leaves the name out (then `output_names`, its one
  name, is needed). Columnar `{"outputs": ...}` is accepted too. An `{"error": ...}` answer
  raises ServerError with the server's message."""
  answer = json.loads(body)
  if "error" in answer:
    raise ServerError(_one_line(str(answer["error"])))
  if "predictions" in answer:
    rows = answer["predictions"]
  elif "outputs" in answer:
    outputs = answer["outputs"]
    if not isinstance(outputs, dict):
      outputs = {_only(output_names): outputs}
    count = len(next(iter(outputs.values())))
    rows = [{k: v[i] for k, v in outputs.items()} for i in range(count)]
  else:
    raise ServerError(f"an answer without predictions: {_one_line(str(answer))[:200]}")
  return [{k: _array(v) for k, v in row.items()} if isinstance(row, dict)
          else {_only(output_names): _array(row)} for row in rows]


def rest_predict(server: str, model: str, signature: str, images: list,
                 timeout: float = 60.0) -> list:
  request = urllib.request.Request(rest_url(server, model), data=rest_body(signature, images),
                                   headers={"Content-Type": "application/json"}, method="POST")
  body = _http(request, server, timeout)
  try:
    return parse_predictions(body)
  except _SingleOutput:
    return parse_predictions(body, rest_output_names(server, model, signature, timeout))


def rest_output_names(server: str, model: str, signature: str, timeout: float) -> list:
  """The output names of `signature` from `GET /v1/models/NAME/metadata`."""
  body = _http(urllib.request.Request(rest_url(server, model, "/metadata")), server, timeout)
  try:
    defs = json.loads(body)["metadata"]["signature_def"]["signature_def"]
    return sorted(defs[signature]["outputs"])
  except (KeyError, TypeError, ValueError) as e:
    raise ServerError(f"{server}: the model's metadata names no outputs of {signature}") from e


def _http(request, server: str, timeout: float) -> bytes:
  try:
    with urllib.request.urlopen(request, timeout=timeout) as response:
      return response.read()
  except urllib.error.HTTPError as e:
    raw = e.read()
    try:
      message = json.loads(raw)["error"]
    except (ValueError, KeyError, TypeError):
      message = raw.decode("utf-8", "replace") or e.reason
    raise ServerError(f"the server {server} answered HTTP {e.code} to {request.full_url}: "
                      f"{_one_line(str(message))}") from e
  except (urllib.error.URLError, OSError) as e:
    reason = getattr(e, "reason", e)
    raise ServerError(f"cannot reach the server {server} ({request.full_url}): {reason}") from e


class _SingleOutput(ServerError):
  pass


def _only(output_names):
  if not output_names or len(output_names) != 1:
    raise _SingleOutput("the answer leaves out the name of its single output")
  return output_names[0]


def _array(value) -> np.ndarray:
  return np.asarray(value)


# ---- gRPC ------------------------------------------------------------------------------------
def grpc_predict(server: str, model: str, signature: str, images: list,
                 timeout: float = 60.0) -> list:
  """A PredictionService/Predict call over grpcio -> one {output name: array} per image."""
  try:
    import grpc
  except ImportError as e:
    raise ValueError("--grpc needs the grpcio package (TensorFlow's own dependency; "
                     "pip install grpcio), or leave --grpc out to use REST") from e
  from sdmtcnn_tf import serving_protos
  protos = serving_protos.classes()
  if signature == "serving_bytes":
    batch = np.array(list(images), dtype=object)
  else:
    batch = np.stack([check_image(p, "image") for p in images])
  request = serving_protos.predict_request(model, signature, {INPUTS[signature]: batch})
  deadline = time.monotonic() + timeout
  with grpc.insecure_channel(server, options=[("grpc.max_receive_message_length", -1),
                                              ("grpc.max_send_message_length", -1)]) as channel:
    connected = _connect(grpc, channel, server, timeout)
    call = channel.unary_unary(serving_protos.PREDICT_METHOD,
                               request_serializer=lambda m: m.SerializeToString(),
                               response_deserializer=protos.PredictResponse.FromString)
    try:
      # not connected: the call fails at once with the channel's reason (refused, DNS, ...)
      response = call(request, timeout=max(deadline - time.monotonic(), 0.001))
    except grpc.RpcError as e:
      if not connected:
        raise ServerError(f"{_unreachable(server)}: {_one_line(e.details() or '')}") from e
      if e.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
        raise ServerError(f"the server {server} did not answer Predict of model {model!r} "
                          f"within {timeout:g} s (--timeout)") from e
      raise ServerError(f"the server {server} answered {e.code().name} to Predict of model "
                        f"{model!r}: {_one_line(e.details() or '')}") from e
  outputs = {k: serving_protos.to_array(v) for k, v in response.outputs.items()}
  return [{k: v[i] for k, v in outputs.items()} for i in range(len(images))]


def _connect(grpc, channel, server: str, timeout: float) -> bool:
  """Waits for `channel` to connect: True once it is connected to a gRPC server, False when
  the connection failed (nothing listening, an unknown host, a server that does not speak
  gRPC); a one-line ServerError when neither happened within `timeout` seconds. Knowing this
  before the call tells "no server" from a server answering an error status: a failed
  connection's call fails with UNAVAILABLE, which TF Serving itself answers too (e.g. when its
  batching queue is full)."""
  states = queue.Queue()
  channel.subscribe(states.put, try_to_connect=True)  # the current state, then each change
  deadline = time.monotonic() + timeout
  try:
    while True:
      try:
        state = states.get(timeout=max(deadline - time.monotonic(), 0))
      except queue.Empty:
        raise ServerError(f"{_unreachable(server)}: no connection within {timeout:g} s "
                          "(--timeout)") from None
      if state == grpc.ChannelConnectivity.READY:
        return True
      if state in (grpc.ChannelConnectivity.TRANSIENT_FAILURE,
                   grpc.ChannelConnectivity.SHUTDOWN):
        return False
  finally:
    channel.unsubscribe(states.put)


def _unreachable(server: str) -> str:
  return (f"cannot reach the server {server} over gRPC (is TF Serving running there, and is "
          "this its gRPC port, 8500 by default? REST is 8501, without --grpc)")


# ---- outputs ---------------------------------------------------------------------------------
def client_tasks() -> list:
  """Every registered task as a default-constructed object (only its served_map and colourise
  are used, which need no configuration)."""
  from sdmtcnn_tf.tasks import registry
  return [registry.task_class(name)() for name in registry.names()]


def write_outputs(out_dir: str, stem: str, outputs: dict, tasks, save_arrays: bool = False):
  """Writes `<out_dir>/<stem>_<task>.png` for each task with outputs (and `<stem>.npz` of the
  outputs when `save_arrays`); returns the paths written."""
  from PIL import Image
  from sdmtcnn_tf import atomic
  written = []
  for task in tasks:
    value = task.served_map(outputs)
    if value is None:
      continue
    buffer = io.BytesIO()
    Image.fromarray(task.colourise(value)).save(buffer, format="PNG")
    path = os.path.join(out_dir, f"{stem}_{task.name}.png")
    with atomic.replacing(path, "png", buffer.tell()) as tmp:
      with open(tmp, "wb") as f:
        f.write(buffer.getvalue())
    written.append(path)
  if save_arrays:
    path = os.path.join(out_dir, f"{stem}.npz")
    atomic.write_npz(path, "npz", **outputs)
    written.append(path)
  return written


def run(server: str, model: str, images: str, out: str, signature: str = "serving_bytes",
        use_grpc: bool = False, batch_size: int = 1, save_arrays: bool = False,
        timeout: float = 60.0) -> list:
  """Sends every file matching the glob `images` and writes the outputs; returns the paths."""
  stems, paths = image_files(images)
  if batch_size < 1:
    raise ValueError(f"--batch_size={batch_size}: must be at least 1")
  # an undecodable file is refused before anything is sent
  read = [read_image(p, BYTES_FORMATS if signature == "serving_bytes" else ()) for p in paths]
  predict = grpc_predict if use_grpc else rest_predict
  task_list = client_tasks()
  written = []
  for group in batches(paths, [pixels.shape for _, pixels in read], batch_size):
    sent = [read[i][0] if signature == "serving_bytes" else read[i][1] for i in group]
    results = predict(server, model, signature, sent, timeout)
    if len(results) != len(group):
      raise ServerError(f"the server {server} answered {len(results)} predictions for "
                        f"{len(group)} images")
    for i, outputs in zip(group, results):
      files = write_outputs(out, stems[i], outputs, task_list, save_arrays)
      if not any(f.endswith(".png") for f in files):
        raise ServerError(f"the answer for {paths[i]} holds no output of a known task (outputs "
                          f"{sorted(outputs)})")
      written += files
  return written


def _one_line(text: str) -> str:
  return " ".join(text.split())


def main(argv):
  cli.check_no_arguments(argv)
  FLAGS = flags.FLAGS
  for name in ("server", "model", "images", "out"):
    if not FLAGS[name].value:
      raise ValueError(f"--{name} is required")
  written = run(FLAGS.server, FLAGS.model, FLAGS.images, FLAGS.out, FLAGS.signature, FLAGS.grpc,
                FLAGS.batch_size, FLAGS.save_arrays, FLAGS.timeout)
  print(f"wrote {len(written)} files to {FLAGS.out}")


if __name__ == "__main__":
  flags.DEFINE_string("server", "", "HOST:PORT of the model server (TF Serving: REST 8501, "
                      "gRPC 8500).")
  flags.DEFINE_string("model", "", "The served model's name (e.g. teacher or student with "
                      "the export's models.config, or MODEL_NAME of the docker command).")
  flags.DEFINE_enum("signature", "serving_bytes", list(SIGNATURES),
                    "serving_bytes sends the encoded files; serving_default sends the pixels.")
  flags.DEFINE_bool("grpc", False, "Send gRPC PredictRequests instead of REST.")
  flags.DEFINE_string("images", "", "Glob of the images to send (PNG or JPEG).")
  flags.DEFINE_string("out", "", "Folder for <image name>_<task>.png (created).")
  flags.DEFINE_integer("batch_size", 1, "Images per request (consecutive images of one size).")
  flags.DEFINE_bool("save_arrays", False, "Also write <image name>.npz of the outputs.")
  flags.DEFINE_float("timeout", 60.0, "Seconds to wait for each answer.")
  cli.run(main)
