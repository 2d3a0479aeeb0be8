"""Denoise with a model served by TF Serving: tiles travel, blending stays local.

TF Serving (``tensorflow_model_server``) serves the SavedModels written by
:mod:`astrotf.export` — TF Serving's layout ``NAME/VERSION/``, signature
``serving_default``, input ``image`` float32 ``[N, H, W, C]``, output ``denoised``.
:class:`ServingClient` sends batches of tiles to such a server over gRPC
(``PredictionService/Predict``, tensorflow-serving-api) or REST (``/v1/models/NAME:predict``,
the JSON "columnar" format) and returns the denoised tiles, so that
:func:`astrotf.infer.denoise_tiled` cuts, pads and blends exactly as in local
inference: a served model gives the same output as the same model run locally. A
noise-conditioned model's signature has a second input, ``noise_sigma``: the client sends the
σ tiles with the image tiles in the same request.

    astrotf infer big.fits --server 127.0.0.1:8500 --model resunet-mono
    astrotf infer m31.tif --server 127.0.0.1:8501 --protocol rest --model resunet-rgb

What the model expects (data domain, channels, tile) is read from the local copy of the
model's ``metadata.json`` when one exists under that name (shipped models), else the
channels come from the served signature and the data domain from the data.
"""

from __future__ import annotations

import json
import logging
import time
import urllib.error
import urllib.request

import numpy as np

from astrotf.errors import AstroTFError
from astrotf.constants import INPUT_NAME, NOISE_INPUT_NAME, OUTPUT_NAME
from astrotf.backends import LoadedModel, find_metadata, record_inputs, resolve_model_path

log = logging.getLogger(__name__)

PROTOCOLS = ("grpc", "rest")
SIGNATURE = "serving_default"
#: Answers worth another try: the server is starting, restarting, overloaded or too slow.
RETRIED_HTTP = (502, 503, 504)
RETRIED_GRPC = ("UNAVAILABLE", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED")


class _Transient(Exception):
    """A failure that another try may not have (connection refused, timeout, 503)."""


class ServingClient:
    """Predict tiles with a model behind a TF Serving endpoint.

    Parameters
    ----------
    address : str
        ``HOST:PORT`` of the gRPC port (8500 by default in TF Serving) or the REST
        port (8501).
    model : str
        The served model's name (``--model_name`` of ``tensorflow_model_server``).
    protocol : {"grpc", "rest"}
    version : int, optional
        A model version; the server's latest when None.
    timeout : float
        Seconds to wait for one request.
    retries : int
        Further tries of a request that failed for a reason that may pass (connection refused or
        reset, timeout, HTTP 502/503/504, gRPC UNAVAILABLE/DEADLINE_EXCEEDED/RESOURCE_EXHAUSTED).
    backoff : float
        Seconds before the first retry, doubled before each next one.

    Raises
    ------
    AstroTFError
        Bad address or protocol, server down (after the retries), unknown model, a request that fails.
    """

    def __init__(self, address: str, model: str, protocol: str = "grpc", version: int | None = None,
                 timeout: float = 120.0, retries: int = 3, backoff: float = 0.5):
        if protocol not in PROTOCOLS:
            msg = f"`protocol` must be one of {PROTOCOLS}. Received: protocol={protocol!r}"
            raise AstroTFError(msg)
        host, _, port = address.rpartition(":")
        if not host or not port.isdigit():
            raise AstroTFError(f"--server must be HOST:PORT. Received: --server={address}")
        self.address, self.model, self.protocol = address, model, protocol
        self.version, self.timeout, self.retries, self.backoff = version, timeout, retries, backoff
        self.input_name, self.output_name = INPUT_NAME, OUTPUT_NAME
        #: The signature's inputs: the image's name, and ``noise_sigma`` for a noise-conditioned model.
        self.input_names = [INPUT_NAME]
        if protocol == "grpc":
            try:
                import grpc
                from tensorflow_serving.apis import prediction_service_pb2_grpc
            except ImportError:
                raise AstroTFError('gRPC needs tensorflow-serving-api: pip install "astrotf[serving]"') from None
            self._channel = grpc.insecure_channel(address, options=[
                ("grpc.max_send_message_length", 1 << 30), ("grpc.max_receive_message_length", 1 << 30)])
            self._stub = prediction_service_pb2_grpc.PredictionServiceStub(self._channel)
        self.channels = self._signature_channels()

    # ------------------------------------------------------------------ metadata
    def _url(self, verb: str = "") -> str:
        version = f"/versions/{self.version}" if self.version else ""
        return f"http://{self.address}/v1/models/{self.model}{version}{verb}"

    def _retried(self, attempt):
        """``attempt()``, tried again after a :class:`_Transient` failure with exponential backoff."""
        for n in range(self.retries + 1):
            try:
                return attempt()
            except _Transient as err:
                last = err
                if n < self.retries:
                    delay = self.backoff * 2**n
                    log.warning("%s: %s; retrying in %.1f s (%d of %d)", self.address, err, delay, n + 1, self.retries)
                    time.sleep(delay)
        raise AstroTFError(f"{self.address}: TF Serving is down or not answering ({last}) after {self.retries + 1} "
                           f"tries; is tensorflow_model_server running on this {self.protocol} port?")

    def _rest(self, url: str, body: dict | None = None) -> dict:
        data = None if body is None else json.dumps(body).encode()

        def attempt():
            request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    return json.loads(response.read())
            except urllib.error.HTTPError as err:
                detail = err.read().decode(errors="replace")[:200]
                if err.code in RETRIED_HTTP:
                    raise _Transient(f"HTTP {err.code}") from None
                raise AstroTFError(f"{url}: TF Serving answered {err.code}: {detail}") from None
            except (urllib.error.URLError, OSError) as err:
                reason = getattr(err, "reason", None) or err
                raise _Transient(str(getattr(reason, "strerror", None) or reason)) from None

        return self._retried(attempt)

    def _grpc_call(self, method, request):
        import grpc

        def attempt():
            try:
                return method(request, timeout=self.timeout)
            except grpc.RpcError as err:
                if err.code().name in RETRIED_GRPC:
                    raise _Transient(f"gRPC {err.code().name}: {(err.details() or '').splitlines()[0][:200]}") from None
                raise AstroTFError(f"{self.address}: TF Serving gRPC {err.code().name}: {err.details()}") from None

        return self._retried(attempt)

    def _names(self, inputs, outputs) -> None:
        """The signature's input and output names: one input (the image, whatever its name), or
        ``image`` and ``noise_sigma``."""
        names = list(inputs)
        (self.output_name,) = outputs
        self.input_name = INPUT_NAME if len(names) > 1 else names[0]
        self.input_names = [INPUT_NAME, NOISE_INPUT_NAME] if len(names) > 1 else names
        if len(names) > 1 and sorted(names) != sorted(self.input_names):
            raise AstroTFError(f"{self.address}: served model {self.model} has inputs {names}; expected one "
                               f"image input or {self.input_names}")

    def _signature_channels(self) -> int | None:
        """Channels of the served signature's input (and its input/output names)."""
        if self.protocol == "rest":
            meta = self._rest(self._url("/metadata"))
            signature = meta["metadata"]["signature_def"]["signature_def"][SIGNATURE]
            inputs, outputs = signature["inputs"], signature["outputs"]
            self._names(inputs.keys(), outputs.keys())
            dims = inputs[self.input_name]["tensor_shape"]["dim"]
            size = int(dims[-1]["size"])
        else:
            from tensorflow_serving.apis import get_model_metadata_pb2

            request = get_model_metadata_pb2.GetModelMetadataRequest()
            self._spec(request.model_spec)
            request.metadata_field.append("signature_def")
            response = self._grpc_call(self._stub.GetModelMetadata, request)
            signatures = get_model_metadata_pb2.SignatureDefMap()
            response.metadata["signature_def"].Unpack(signatures)
            signature = signatures.signature_def[SIGNATURE]
            self._names(signature.inputs.keys(), signature.outputs.keys())
            size = signature.inputs[self.input_name].tensor_shape.dim[-1].size
        return size if size > 0 else None

    def _spec(self, spec) -> None:
        spec.name = self.model
        spec.signature_name = SIGNATURE
        if self.version:
            spec.version.value = self.version

    # ------------------------------------------------------------------ predict
    def predict(self, batch: np.ndarray, *sigma: np.ndarray) -> np.ndarray:
        """Denoised tiles for a batch ``(N, H, W, C)`` float32 (and, for a noise-conditioned model,
        its σ tiles of the same shape)."""
        arrays = [np.ascontiguousarray(a, np.float32) for a in (batch, *sigma)]
        if len(arrays) != len(self.input_names):
            raise AstroTFError(f"{self.address}: served model {self.model} takes the inputs {self.input_names}; "
                               f"{len(arrays)} given")
        if self.protocol == "rest":
            inputs = {name: a.tolist() for name, a in zip(self.input_names, arrays)}
            reply = self._rest(self._url(":predict"), {"signature_name": SIGNATURE, "inputs": inputs})
            outputs = reply["outputs"]
            if isinstance(outputs, dict):  # several outputs come back by name
                outputs = outputs[self.output_name]
            return np.asarray(outputs, np.float32)
        import tensorflow as tf
        from tensorflow_serving.apis import predict_pb2

        request = predict_pb2.PredictRequest()
        self._spec(request.model_spec)
        for name, array in zip(self.input_names, arrays):
            request.inputs[name].CopyFrom(tf.make_tensor_proto(array))
        request.output_filter.append(self.output_name)
        response = self._grpc_call(self._stub.Predict, request)
        return tf.make_ndarray(response.outputs[self.output_name]).astype(np.float32, copy=False)


def connect(address: str, model: str, protocol: str = "grpc", version: int | None = None) -> LoadedModel:
    """A :class:`~astrotf.backends.LoadedModel` whose predictions come from TF Serving.

    The metadata (data domain, tile) are taken from a local model of the same name
    when there is one (the shipped models), else only the channels are known.
    """
    client = ServingClient(address, model, protocol, version)
    try:
        metadata = find_metadata(resolve_model_path(model))
    except AstroTFError:
        metadata = {}
    if client.channels is not None:
        if metadata.get("channels", client.channels) != client.channels:
            raise AstroTFError(f"{address}: served model {model} takes {client.channels} channel(s), the local "
                               f"metadata of {model} says {metadata['channels']}")
        metadata["channels"] = client.channels
    record_inputs(metadata, client.input_names if len(client.input_names) > 1 else [INPUT_NAME], address)
    log.info("TF Serving %s (%s): model %s, input %s -> output %s", address, protocol, model,
             ", ".join(client.input_names), client.output_name)
    return LoadedModel(f"{model}@{address}", client.predict, metadata)
