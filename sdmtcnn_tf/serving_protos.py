"""TF Serving's request protos (`PredictRequest`, `PredictResponse`, `PredictionLog`) without
the tensorflow-serving-api package.

`tensorflow-serving-api` depends on the `tensorflow` wheel, which would install the CUDA build
beside our tensorflow-cpu (BUILD_NOTES.md). When it is importable its classes are used as they
are; otherwise `classes()` builds wire-compatible ones in a private descriptor pool from the
fields of `tensorflow_serving/apis/{model,predict,prediction_log}.proto` that we use (same
package, message names and field numbers; the fields we leave out are skipped by a parser
like any unknown field). The `TensorProto` inside them is TensorFlow's own
(`tensorflow/core/framework/tensor.proto`, copied into the private pool).

Used by the export (the `assets.extra/tf_serving_warmup_requests` records) and by
`serving_client --grpc` (PredictRequest/PredictResponse over grpcio, which TensorFlow itself
depends on).
"""

from __future__ import annotations

import functools
import types

import numpy as np

PREDICT_METHOD = "/tensorflow.serving.PredictionService/Predict"
_FILE = "sdmtcnn_tf/tensorflow_serving_apis_subset.proto"


@functools.lru_cache(maxsize=None)
def classes() -> types.SimpleNamespace:
  """Namespace of ModelSpec, PredictRequest, PredictResponse, PredictLog, PredictionLog and
  `source` ("tensorflow-serving-api" or "built-in")."""
  try:
    from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2
  except ImportError:
    return _built_in()
  return types.SimpleNamespace(
      ModelSpec=model_pb2.ModelSpec, PredictRequest=predict_pb2.PredictRequest,
      PredictResponse=predict_pb2.PredictResponse, PredictLog=prediction_log_pb2.PredictLog,
      PredictionLog=prediction_log_pb2.PredictionLog, source="tensorflow-serving-api")


def set_tensor(target, array) -> None:
  """Fills the TensorProto field `target` (e.g. `request.inputs["image"]`) with `array`
  (numpy; a list of bytes for a string tensor)."""
  import tensorflow as tf
  target.ParseFromString(tf.make_tensor_proto(array).SerializeToString())


def to_array(tensor_proto) -> np.ndarray:
  """A TensorProto of either pool -> numpy."""
  import tensorflow as tf
  from tensorflow.core.framework import tensor_pb2
  return tf.make_ndarray(tensor_pb2.TensorProto.FromString(tensor_proto.SerializeToString()))


def predict_request(model: str, signature: str, inputs: dict, protos=None):
  """A PredictRequest (of `protos`, default `classes()`) for `model`'s `signature` with
  {input name: numpy array}."""
  protos = protos or classes()
  request = protos.PredictRequest()
  request.model_spec.name = model
  request.model_spec.signature_name = signature
  for name, array in inputs.items():
    set_tensor(request.inputs[name], array)
  return request


@functools.lru_cache(maxsize=None)
def _built_in() -> types.SimpleNamespace:
  from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
  from tensorflow.core.framework import tensor_pb2

  pool = descriptor_pool.DescriptorPool()
  added = set()

  def add(file_descriptor):  # TensorFlow's tensor.proto and what it imports, deps first
    if file_descriptor.name in added:
      return
    for dependency in file_descriptor.dependencies:
      add(dependency)
    proto = descriptor_pb2.FileDescriptorProto()
    file_descriptor.CopyToProto(proto)
    pool.AddSerializedFile(proto.SerializeToString())
    added.add(file_descriptor.name)

  add(tensor_pb2.DESCRIPTOR)
  F = descriptor_pb2.FieldDescriptorProto
  f = descriptor_pb2.FileDescriptorProto(name=_FILE, package="tensorflow.serving",
                                         syntax="proto3")
  f.dependency.append(tensor_pb2.DESCRIPTOR.name)

  def message(name, fields, parent=None):
    m = (parent.nested_type if parent else f.message_type).add(name=name)
    for field_name, number, kind, type_name, label in fields:
      field = m.field.add(name=field_name, number=number, type=kind,
                          label=label or F.LABEL_OPTIONAL)
      if type_name:
        field.type_name = type_name
    return m

  def tensor_map(parent, field_name, number):
    entry = "".join(p.capitalize() for p in field_name.split("_")) + "Entry"
    m = message(entry, [("key", 1, F.TYPE_STRING, "", 0),
                        ("value", 2, F.TYPE_MESSAGE, ".tensorflow.TensorProto", 0)], parent)
    m.options.map_entry = True
    parent.field.add(name=field_name, number=number, type=F.TYPE_MESSAGE,
                     label=F.LABEL_REPEATED,
                     type_name=f".tensorflow.serving.{parent.name}.{entry}")

  message("ModelSpec", [("name", 1, F.TYPE_STRING, "", 0),
                        ("signature_name", 3, F.TYPE_STRING, "", 0)])
  request = message("PredictRequest", [
      ("model_spec", 1, F.TYPE_MESSAGE, ".tensorflow.serving.ModelSpec", 0),
      ("output_filter", 3, F.TYPE_STRING, "", F.LABEL_REPEATED)])
  tensor_map(request, "inputs", 2)
  response = message("PredictResponse", [
      ("model_spec", 2, F.TYPE_MESSAGE, ".tensorflow.serving.ModelSpec", 0)])
  tensor_map(response, "outputs", 1)
  message("PredictLog", [
      ("request", 1, F.TYPE_MESSAGE, ".tensorflow.serving.PredictRequest", 0),
      ("response", 2, F.TYPE_MESSAGE, ".tensorflow.serving.PredictResponse", 0)])
  log = message("PredictionLog", [])
  log.oneof_decl.add(name="log_type")
  log.field.add(name="predict_log", number=6, type=F.TYPE_MESSAGE, label=F.LABEL_OPTIONAL,
                type_name=".tensorflow.serving.PredictLog", oneof_index=0)
  pool.AddSerializedFile(f.SerializeToString())

  def cls(name):
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(f"tensorflow.serving.{name}"))

  return types.SimpleNamespace(
      ModelSpec=cls("ModelSpec"), PredictRequest=cls("PredictRequest"),
      PredictResponse=cls("PredictResponse"), PredictLog=cls("PredictLog"),
      PredictionLog=cls("PredictionLog"), source="built-in")
