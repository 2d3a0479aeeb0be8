"""TensorRT engines for NVIDIA GPUs: ONNX → mixed-FP16 ONNX → engine, and a runner for them.

TF-TRT is disabled in TensorFlow builds since 2.18, so the path is the exported
``model.onnx`` (see :func:`astrotf.export.export_onnx`) built into a TensorRT engine
with the ``tensorrt`` Python API, with one optimisation profile over batch and tile
size (dynamic N, H, W).

Precision. TensorRT 11 builds *strongly typed* networks only (the FP16 builder flag
of TensorRT 10 is gone): the ONNX graph itself must say which tensors are FP16.
:func:`mixed_fp16_onnx` converts the network body — the convolutions, activations,
pooling, concatenations and residual-block sums of the encoder, bottleneck and
decoder — to FP16 and keeps everything that touches the data in FP32, as Keras'
mixed precision does: the input, the per-tile background normalisation of linear
models (fluxes up to 65504 and beyond would overflow FP16), padding, the upsampling
index arithmetic, the last 1×1 convolution, the global residual sum and the
denormalisation. The same graph is built by TensorRT 10 with its STRONGLY_TYPED flag.

Engines are specific to a GPU model and a TensorRT version: build them on the machine
that runs them (``astrotf export MODEL --out DIR --format tensorrt``); a mismatch is
reported when the engine is loaded.

A noise-conditioned model's graph has two inputs, ``image`` and ``noise_sigma`` (its σ map, kept
FP32 like the image); the profile gives both the same shapes, and :class:`EngineRunner` takes
``(batch, sigma)``.

Needs ``pip install "astrotf[tensorrt]"`` (tensorrt, cuda-python, onnxconverter-common)
and a CUDA GPU; :func:`mixed_fp16_onnx` alone runs anywhere. :func:`load_tensorrt` is the
inference backend (``astrotf infer --backend tensorrt``).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import tempfile
import warnings
from pathlib import Path

import numpy as np

from astrotf.backends import LoadedModel, file_in_folder, record_inputs
from astrotf.constants import INPUT_NAME
from astrotf.errors import AstroTFError

log = logging.getLogger(__name__)

INSTALL_HINT = 'pip install "astrotf[tensorrt]" on a machine with an NVIDIA GPU and its driver'

#: Keras layers of the ResUNet / Self2Self body whose ONNX nodes may run in FP16.
BODY_SCOPE = re.compile(r"/(stem|enc\d+|down\d+|bottleneck|up\d+|skip\d+|dec\d+)(_\d+)?/")
#: Operators of those layers converted to FP16 (the upsampling's index arithmetic stays FP32).
FP16_OPS = frozenset({"Conv", "Relu", "LeakyRelu", "MaxPool", "Concat", "Add"})


def mixed_fp16_onnx(onnx_file: str | os.PathLike, out_file: str | os.PathLike | None = None):
    """The network body of an exported model in FP16, its data path in FP32 (see the module docstring).

    Parameters
    ----------
    onnx_file : path
        A model exported by :func:`astrotf.export.export_onnx`.
    out_file : path, optional
        Where to save the converted model.

    Returns
    -------
    onnx.ModelProto
        The inputs (``image``, and ``noise_sigma`` if any) and output ``denoised`` stay float32.

    Raises
    ------
    AstroTFError
        If onnxconverter-common is missing or the graph has no FP16-able body.
    """
    try:
        import onnx
        from onnxconverter_common import float16
    except ImportError:
        raise AstroTFError(f"FP16 engines need onnx and onnxconverter-common: {INSTALL_HINT}") from None
    model = onnx.load(str(onnx_file))
    body = [n.name for n in model.graph.node if BODY_SCOPE.search(n.name) and n.op_type in FP16_OPS]
    if not body:
        raise AstroTFError(f"{onnx_file}: no network body found to convert to FP16 (not an astrotf export?)")
    keep = [n.name for n in model.graph.node if n.name not in set(body)]
    with warnings.catch_warnings(record=True) as caught:  # one warning per FP16-subnormal weight
        warnings.simplefilter("always")
        converted = float16.convert_float_to_float16(model, keep_io_types=True, node_block_list=keep)
    if caught:
        log.info("FP16: %d weight value(s) below FP16's range were clamped", len(caught))
    _float32_outputs(converted)
    onnx.checker.check_model(converted)
    if out_file is not None:
        onnx.save(converted, str(out_file))
    log.info("FP16 body: %d of %d ONNX nodes", len(body), len(model.graph.node))
    return converted


def _float32_outputs(model) -> None:
    """Make every graph output float32 again.

    With a node block list, onnxconverter-common 1.16 ends the graph with a Cast *to*
    FP16 even under ``keep_io_types`` (here after the FP32 residual sum): that final
    rounding is turned back into a Cast to FP32, or one is appended.
    """
    from onnx import TensorProto, helper

    producers = {out: node for node in model.graph.node for out in node.output}
    for output in model.graph.output:
        if output.type.tensor_type.elem_type != TensorProto.FLOAT16:
            continue
        node = producers.get(output.name)
        if node is not None and node.op_type == "Cast":
            for attribute in node.attribute:
                if attribute.name == "to":
                    attribute.i = TensorProto.FLOAT
        else:
            inner = f"{output.name}_fp16"
            if node is not None:
                node.output[:] = [inner if o == output.name else o for o in node.output]
            model.graph.node.append(helper.make_node("Cast", [inner], [output.name], to=TensorProto.FLOAT,
                                                     name=f"{output.name}_to_float32"))
        output.type.tensor_type.elem_type = TensorProto.FLOAT


@dataclasses.dataclass(frozen=True)
class EngineProfile:
    """The shapes a TensorRT engine accepts: batches of square-or-not tiles of C channels.

    ``opt_*`` is what the builder tunes for (the inference defaults: batch 8 of 256 px
    tiles); calls may use any batch in ``[1, max_batch]`` and any tile side in
    ``[min_tile, max_tile]``.
    """

    channels: int
    min_tile: int = 16
    opt_tile: int = 256
    max_tile: int = 512
    opt_batch: int = 8
    max_batch: int = 16

    def __post_init__(self):
        if not 1 <= self.min_tile <= self.opt_tile <= self.max_tile:
            msg = ("tile sizes must satisfy 1 <= min_tile <= opt_tile <= max_tile. Received: "
                   f"{self.min_tile}, {self.opt_tile}, {self.max_tile}")
            raise AstroTFError(msg)
        if not 1 <= self.opt_batch <= self.max_batch:
            msg = f"batches must satisfy 1 <= opt_batch <= max_batch. Received: {self.opt_batch}, {self.max_batch}"
            raise AstroTFError(msg)

    def shapes(self) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
        """(min, opt, max) NHWC shapes of each input (the image, and the σ map of a noise-conditioned model)."""
        c = self.channels
        return ((1, self.min_tile, self.min_tile, c), (self.opt_batch, self.opt_tile, self.opt_tile, c),
                (self.max_batch, self.max_tile, self.max_tile, c))


def _tensorrt():
    try:
        import tensorrt as trt
    except (ImportError, OSError) as err:  # OSError: the wheel is there but its CUDA libraries are not
        raise AstroTFError(f"the TensorRT backend needs the tensorrt package ({err}): {INSTALL_HINT}") from None
    return trt


def _cudart():
    try:
        from cuda.bindings import runtime as cudart  # cuda-python >= 12.6
    except ImportError:
        try:
            from cuda import cudart
        except ImportError:
            raise AstroTFError(f"the TensorRT backend needs cuda-python: {INSTALL_HINT}") from None
    return cudart


def _check(result):
    """Unpack a cuda-python call's ``(error, *values)``; raise on a CUDA error."""
    cudart = _cudart()
    err, *values = result if isinstance(result, tuple) else (result,)
    if err != cudart.cudaError_t.cudaSuccess:
        raise AstroTFError(f"CUDA error {err}: {cudart.cudaGetErrorString(err)[1].decode(errors='replace')}")
    return values[0] if len(values) == 1 else values


def require_gpu() -> None:
    """Raise a one-line :class:`AstroTFError` unless tensorrt, cuda-python and a CUDA device are here."""
    _tensorrt()
    cudart = _cudart()
    try:
        err, count = cudart.cudaGetDeviceCount()
    except (OSError, RuntimeError) as error:  # no driver library
        raise AstroTFError(f"TensorRT needs an NVIDIA GPU and its driver ({error})") from None
    if err != cudart.cudaError_t.cudaSuccess or count == 0:
        raise AstroTFError("TensorRT needs an NVIDIA GPU: CUDA finds none on this machine")


def cuda_available() -> bool:
    """Whether tensorrt and cuda-python import and a CUDA device answers."""
    try:
        require_gpu()
    except AstroTFError:
        return False
    return True


def build_engine(onnx_file: str | os.PathLike, engine_file: str | os.PathLike, profile: EngineProfile, *,
                 fp16: bool = True, workspace_gb: float = 4.0) -> dict:
    """Build a TensorRT engine from an exported ``model.onnx``; written atomically.

    Parameters
    ----------
    onnx_file : path
    engine_file : path
        The serialized engine (``.plan``).
    profile : EngineProfile
        Batch and tile sizes the engine accepts.
    fp16 : bool
        Convert the network body to FP16 first (:func:`mixed_fp16_onnx`); else FP32
        throughout (TF32 on GPUs that have it).
    workspace_gb : float
        Scratch memory the builder's tactics may use.

    Returns
    -------
    dict
        What ``metadata.json`` records of the engine: file, precision, profile,
        TensorRT version, GPU.

    Raises
    ------
    AstroTFError
        No TensorRT / CUDA, a graph TensorRT cannot parse, or a failed build.
    """
    trt = _tensorrt()
    engine_file = Path(engine_file)
    source = Path(onnx_file)
    with tempfile.TemporaryDirectory() as tmp:
        if fp16:
            source = Path(tmp) / "model.fp16.onnx"
            mixed_fp16_onnx(onnx_file, source)
        logger = trt.Logger(trt.Logger.WARNING)
        builder = trt.Builder(logger)
        flag = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)  # TensorRT 10; 11: always
        network = builder.create_network(0 if flag is None else 1 << int(flag))
        parser = trt.OnnxParser(network, logger)
        if not parser.parse_from_file(str(source)):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise AstroTFError(f"{onnx_file}: TensorRT cannot parse it ({errors})")
        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gb * 2**30))
        optimization = builder.create_optimization_profile()
        for index in range(network.num_inputs):  # the image, and the σ map of a noise-conditioned model
            optimization.set_shape(network.get_input(index).name, *profile.shapes())
        config.add_optimization_profile(optimization)
        serialized = builder.build_serialized_network(network, config)
        if serialized is None:
            raise AstroTFError(f"{onnx_file}: TensorRT could not build an engine (see the messages above)")
    engine_file.parent.mkdir(parents=True, exist_ok=True)
    partial = engine_file.with_name(f".{engine_file.name}.partial")
    partial.write_bytes(bytes(serialized))
    os.replace(partial, engine_file)
    cudart = _cudart()
    props = _check(cudart.cudaGetDeviceProperties(_check(cudart.cudaGetDevice())))
    return {"file": engine_file.name, "precision": "fp16 body, fp32 data path" if fp16 else "fp32",
            "profile": dataclasses.asdict(profile), "tensorrt_version": trt.__version__,
            "gpu": props.name.decode(errors="replace") if isinstance(props.name, bytes) else str(props.name)}


class EngineRunner:
    """Runs a serialized TensorRT engine on float32 NHWC batches (host arrays in and out).

    ``runner(batch)``, or ``runner(batch, sigma)`` for an engine with a second input of the same
    shape (a noise-conditioned model's σ map). Device buffers are allocated for the largest batch
    seen and reused; one CUDA stream; calls are synchronous.

    Raises
    ------
    AstroTFError
        The engine was built for another GPU or TensorRT version, or a batch lies
        outside its profile.
    """

    def __init__(self, engine_file: str | os.PathLike):
        trt = _tensorrt()
        self._cudart = _cudart()
        self.path = Path(engine_file)
        self._runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self._engine = self._runtime.deserialize_cuda_engine(self.path.read_bytes())
        if self._engine is None:
            raise AstroTFError(f"{self.path}: cannot be loaded; engines are specific to a GPU model and a TensorRT "
                               "version: rebuild it here with `astrotf export MODEL --out DIR --format tensorrt`")
        self._context = self._engine.create_execution_context()
        names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
        inputs = [n for n in names if self._engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if n not in inputs]
        if len(inputs) not in (1, 2) or len(outputs) != 1:
            raise AstroTFError(f"{self.path}: expected one input (or image and noise_sigma) and one output "
                               f"tensor, found {inputs} -> {outputs}")
        # the image first: a lone input whatever its name, else by name (the σ map second)
        self.input_names = sorted(inputs, key=lambda n: n != INPUT_NAME) if len(inputs) == 2 else inputs
        self.input_name, self.output_name = self.input_names[0], outputs[0]
        self._max_shape = tuple(self._engine.get_tensor_profile_shape(self.input_name, 0)[2])
        self.channels = int(self._max_shape[-1])
        self._stream = _check(self._cudart.cudaStreamCreate())
        self._buffers: dict[str, tuple[int, int]] = {}  # name -> (pointer, bytes)

    def _device(self, name: str, nbytes: int) -> int:
        pointer, size = self._buffers.get(name, (0, 0))
        if size < nbytes:
            if pointer:
                _check(self._cudart.cudaFree(pointer))
            pointer, size = int(_check(self._cudart.cudaMalloc(nbytes))), nbytes
            self._buffers[name] = (pointer, size)
        return pointer

    def __call__(self, batch: np.ndarray, *more: np.ndarray) -> np.ndarray:
        arrays = [np.ascontiguousarray(a, np.float32) for a in (batch, *more)]
        batch = arrays[0]
        if len(arrays) != len(self.input_names) or any(a.shape != batch.shape for a in arrays):
            raise AstroTFError(f"{self.path}: the engine takes {len(self.input_names)} input(s) "
                               f"{self.input_names} of one shape. Received: {[a.shape for a in arrays]}")
        if batch.ndim != 4 or any(b > m for b, m in zip(batch.shape, self._max_shape)) or \
                batch.shape[-1] != self.channels:
            raise AstroTFError(f"{self.path}: batch of shape {batch.shape} outside the engine's profile "
                               f"(at most {self._max_shape}); rebuild with a larger --trt-max-tile/--trt-max-batch")
        cudart = self._cudart
        for name, array in zip(self.input_names, arrays):
            if not self._context.set_input_shape(name, array.shape):
                raise AstroTFError(f"{self.path}: the engine rejects input shape {array.shape}")
            pointer = self._device(f"in:{name}", array.nbytes)
            self._context.set_tensor_address(name, pointer)
            _check(cudart.cudaMemcpyAsync(pointer, array.ctypes.data, array.nbytes,
                                          cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, self._stream))
        out = np.empty(tuple(self._context.get_tensor_shape(self.output_name)), np.float32)
        d_out = self._device("out", out.nbytes)
        self._context.set_tensor_address(self.output_name, d_out)
        if not self._context.execute_async_v3(self._stream):
            raise AstroTFError(f"{self.path}: TensorRT execution failed")
        _check(cudart.cudaMemcpyAsync(out.ctypes.data, d_out, out.nbytes,
                                      cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost, self._stream))
        _check(cudart.cudaStreamSynchronize(self._stream))
        return out

    def close(self) -> None:
        for pointer, _ in self._buffers.values():
            self._cudart.cudaFree(pointer)
        self._buffers.clear()

    def __del__(self):
        try:
            self.close()
        except Exception:  # interpreter shutdown: CUDA may be gone already
            pass


def load_tensorrt(path: Path, metadata: dict) -> LoadedModel:
    """A TensorRT engine: a ``.plan`` file, or the one a model folder's metadata.json names."""
    if path.suffix == ".plan":
        engine = path
    else:
        entry = metadata.get("tensorrt")
        if not entry:
            raise AstroTFError(f"{path}: no TensorRT engine; build one for this GPU with "
                               f"`astrotf export {path} --out DIR --format tensorrt`")
        engine = file_in_folder(path, entry.get("file", ""), "TensorRT engine")
    if not engine.is_file():
        raise AstroTFError(f"{engine}: TensorRT engine missing")
    require_gpu()
    runner = EngineRunner(engine)
    metadata.setdefault("channels", runner.channels)
    record_inputs(metadata, runner.input_names if len(runner.input_names) > 1 else [INPUT_NAME], engine)
    name = metadata.get("name", engine.parent.name)
    entry = metadata.get("tensorrt", {})
    return LoadedModel(name, runner, metadata, precision=entry.get("precision", "tensorrt"),
                       largest_tile=entry.get("profile", {}).get("max_tile"))

