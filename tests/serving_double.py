"""Test doubles for TF Serving (whose model server binary is not on PyPI).

Both serve one SavedModel on 127.0.0.1 the way ``tensorflow_model_server`` does:
gRPC ``PredictionService`` (Predict, GetModelMetadata) and the REST API
(``GET /v1/models/NAME[/versions/V]/metadata``, ``POST /v1/models/NAME:predict``
in the columnar ``inputs`` format). Each request runs the SavedModel's
``serving_default`` signature with ``tf.saved_model.load``.
"""

from __future__ import annotations

import json
import re
import threading
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import tensorflow as tf


class _Served:
    def __init__(self, saved_model_dir, name):
        self.name = name
        self.signature = tf.saved_model.load(str(saved_model_dir)).signatures["serving_default"]
        self.inputs = self.signature.structured_input_signature[1]
        self.outputs = self.signature.structured_outputs

    def run(self, **inputs):
        return {k: v.numpy() for k, v in self.signature(**{k: tf.constant(v) for k, v in inputs.items()}).items()}


def start_grpc(saved_model_dir, name):
    """Serve over gRPC on a free port; returns (server, "127.0.0.1:PORT")."""
    import grpc
    from tensorflow.core.protobuf import meta_graph_pb2
    from tensorflow_serving.apis import get_model_metadata_pb2, predict_pb2, prediction_service_pb2_grpc

    served = _Served(saved_model_dir, name)

    class Servicer(prediction_service_pb2_grpc.PredictionServiceServicer):
        def _check(self, spec, context):
            if spec.name != served.name:
                context.abort(grpc.StatusCode.NOT_FOUND, f"Servable not found for request: Latest({spec.name})")

        def Predict(self, request, context):  # noqa: N802 (gRPC method name)
            self._check(request.model_spec, context)
            inputs = {k: tf.make_ndarray(v) for k, v in request.inputs.items()}
            response = predict_pb2.PredictResponse()
            for key, value in served.run(**inputs).items():
                response.outputs[key].CopyFrom(tf.make_tensor_proto(value))
            return response

        def GetModelMetadata(self, request, context):  # noqa: N802
            self._check(request.model_spec, context)
            signature = meta_graph_pb2.SignatureDef(method_name="tensorflow/serving/predict")
            for key, spec in served.inputs.items():
                info = signature.inputs[key]
                info.name, info.dtype = f"serving_default_{key}:0", spec.dtype.as_datatype_enum
                info.tensor_shape.CopyFrom(spec.shape.as_proto())
            for key, spec in served.outputs.items():
                info = signature.outputs[key]
                info.name, info.dtype = f"{key}:0", spec.dtype.as_datatype_enum
                info.tensor_shape.CopyFrom(spec.shape.as_proto())
            signatures = get_model_metadata_pb2.SignatureDefMap()
            signatures.signature_def["serving_default"].CopyFrom(signature)
            response = get_model_metadata_pb2.GetModelMetadataResponse()
            response.model_spec.name = served.name
            response.metadata["signature_def"].Pack(signatures)
            return response

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(Servicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, f"127.0.0.1:{port}"


def start_rest(saved_model_dir, name):
    """Serve the REST API on a free port; returns (server, "127.0.0.1:PORT"); stop with server.shutdown()."""
    served = _Served(saved_model_dir, name)
    route = re.compile(rf"^/v1/models/{re.escape(name)}(/versions/\d+)?(?P<verb>/metadata|:predict)$")

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):  # keep test output clean
            pass

        def _reply(self, code, body):
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):  # noqa: N802
            match = route.match(self.path)
            if not match or match["verb"] != "/metadata":
                return self._reply(404, {"error": f"Servable not found: {self.path}"})

            def shape(spec):
                return {"dim": [{"size": str(-1 if d is None else d)} for d in spec.shape]}

            signature = {"inputs": {k: {"dtype": "DT_FLOAT", "tensor_shape": shape(v)} for k, v in served.inputs.items()},
                         "outputs": {k: {"dtype": "DT_FLOAT", "tensor_shape": shape(v)}
                                     for k, v in served.outputs.items()}}
            return self._reply(200, {"model_spec": {"name": name},
                                     "metadata": {"signature_def": {"signature_def": {"serving_default": signature}}}})

        def do_POST(self):  # noqa: N802
            match = route.match(self.path)
            if not match or match["verb"] != ":predict":
                return self._reply(404, {"error": f"Servable not found: {self.path}"})
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            inputs = {k: np.asarray(v, np.float32) for k, v in body["inputs"].items()}
            outputs = served.run(**inputs)
            if len(outputs) == 1:  # TF Serving's columnar format: a lone output comes back unnamed
                return self._reply(200, {"outputs": next(iter(outputs.values())).tolist()})
            return self._reply(200, {"outputs": {k: v.tolist() for k, v in outputs.items()}})

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"127.0.0.1:{server.server_address[1]}"
