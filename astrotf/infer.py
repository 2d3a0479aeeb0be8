"""Full-frame denoising: overlapping tiles with Gaussian feathering (AstroPics §3).

The frame is reflect-padded so that every pixel — the borders included — lies well
inside some tile; tiles of ``tile`` px are taken every ``step = tile * (1 - overlap)``
px, sent through the model in batches, multiplied by a 2-D Gaussian weight and summed
into an accumulator and a weight map; ``final = accumulator / weight``.

Memory stays bounded: tiles are produced one row of tiles at a time and never held
all at once, and the float64 accumulator and weight map cover a single band of
``tile`` rows; finished rows go straight to the output. The full-size buffers are
the (padded) input and the output. NaN pixels (off-disk, masked) are filled before the network and
come back as NaN; bands with no finite pixel are skipped.

Models are loaded from a ``.keras`` file, a SavedModel directory (TF Serving layout
``NAME/1/`` or the version folder itself), or a shipped model's name; the
``metadata.json`` beside it says what data the model expects.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

from astrotf.errors import AstroTFError

log = logging.getLogger(__name__)


def shipped_model_dirs() -> list[Path]:
    """Where shipped models are looked up, first match wins: ``$ASTROTF_MODELS``, the
    source checkout's ``saved_models/``, and ``<prefix>/share/astrotf/saved_models`` of an
    installed package."""
    dirs = [Path(os.environ["ASTROTF_MODELS"])] if os.environ.get("ASTROTF_MODELS") else []
    dirs.append(Path(__file__).resolve().parent.parent / "saved_models")
    dirs.append(Path(sys.prefix) / "share" / "astrotf" / "saved_models")
    return [d for d in dirs if d.is_dir()]

DEFAULT_MODELS = {"stretched": "resunet-rgb", "linear": "resunet-mono", "magnetogram": "self2self-hmi"}
MAGNETOGRAM_UNITS = ("gauss", "g", "mx/cm^2", "mx cm^-2", "mx/cm2")


# ----------------------------------------------------------------------------- tiling
def tile_starts(length: int, tile: int, step: int) -> list[int]:
    """Start offsets of tiles of size ``tile`` every ``step`` px covering ``[0, length)``.

    The last tile is aligned with the end, so nothing is left uncovered; requires
    ``length >= tile``.
    """
    if length <= tile:
        return [0]
    starts = list(range(0, length - tile, step))
    starts.append(length - tile)
    return starts


def gaussian_weight(tile: int, overlap: float, edge: int = 0) -> np.ndarray:
    """2-D Gaussian feathering weight (tile, tile), peak 1 at the centre (§3).

    ``sigma = tile / 4``: the weight falls to about 0.14 at the edges, so a
    neighbouring tile's centre dominates there. The outermost ``edge`` px are set to
    zero: a network's output is least reliable where its receptive field leaves the
    tile, and with ``2 * edge`` not above the overlap another tile always covers those
    pixels. With ``overlap == 0`` the weight is flat: the naive tiling of §4.2.
    """
    if overlap == 0:
        return np.ones((tile, tile), np.float32)
    centre = (tile - 1) / 2
    g = np.exp(-0.5 * ((np.arange(tile) - centre) / (tile / 4)) ** 2)
    if edge > 0:
        g[:edge] = 0.0
        g[-edge:] = 0.0
    return np.outer(g, g).astype(np.float32)


@dataclasses.dataclass(frozen=True)
class TileOptions:
    """How a frame is cut into tiles.

    Parameters
    ----------
    tile : int
        Tile size in px (the model's training tile is a good choice).
    overlap : float
        Fraction of a tile shared with its neighbour, in [0, 0.9]; 0 is naive tiling.
    batch_size : int
        Tiles per model call.
    """

    tile: int = 256
    overlap: float = 0.25
    batch_size: int = 8

    def __post_init__(self):
        if not (isinstance(self.tile, int) and self.tile >= 16):
            msg = f"`tile` must be an integer >= 16. Received: tile={self.tile!r}"
            raise AstroTFError(msg)
        if not 0.0 <= self.overlap <= 0.9:
            msg = f"`overlap` must be in [0, 0.9]. Received: overlap={self.overlap!r}"
            raise AstroTFError(msg)
        if not (isinstance(self.batch_size, int) and self.batch_size >= 1):
            msg = f"`batch_size` must be an integer >= 1. Received: batch_size={self.batch_size!r}"
            raise AstroTFError(msg)

    @property
    def step(self) -> int:
        return max(1, int(round(self.tile * (1.0 - self.overlap))))

    @property
    def margin(self) -> int:
        """Reflect padding on each side so that frame borders sit inside a tile, not on its edge."""
        return (self.tile - self.step) // 2

    @property
    def edge(self) -> int:
        """Pixels at each tile edge that get zero weight (half the margin)."""
        return self.margin // 2


def _pad(image: np.ndarray, top: int, bottom: int, left: int, right: int) -> np.ndarray:
    widths = ((top, bottom), (left, right), (0, 0))
    # reflect needs the pad to be smaller than the side; symmetric handles tiny frames
    mode = "reflect" if min(image.shape[:2]) > max(top, bottom, left, right) else "symmetric"
    return np.pad(image, widths, mode=mode)


def fill_nonfinite(image: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """Replace NaN/Inf by the median of the finite pixels of each channel.

    Returns the filled copy (or the input itself when all pixels are finite) and the
    boolean mask of non-finite pixels (None when there are none).
    """
    bad = ~np.isfinite(image)
    if not bad.any():
        return image, None
    filled = image.copy()
    for c in range(image.shape[-1]):
        finite = image[..., c][~bad[..., c]]
        filled[..., c][bad[..., c]] = np.median(finite) if finite.size else 0.0
    return filled, bad


def denoise_tiled(
    image: np.ndarray,
    predict: Callable[[np.ndarray], np.ndarray],
    options: TileOptions = TileOptions(),
    progress: Callable[[int, int], None] | None = None,
) -> np.ndarray:
    """Denoise a whole frame with overlapping, Gaussian-feathered tiles.

    Parameters
    ----------
    image : ndarray, shape (H, W, C), float32
        Any size, NaN allowed.
    predict : callable
        Maps a batch (N, T, T, C) float32 to (N, T, T, C).
    options : TileOptions
    progress : callable, optional
        Called as ``progress(done_tiles, total_tiles)``.

    Returns
    -------
    ndarray, shape (H, W, C), float32
        The denoised frame; NaN where the input was non-finite.
    """
    if image.ndim != 3 or 0 in image.shape:
        msg = f"expected a non-empty (H, W, C) image. Received: shape={image.shape}"
        raise AstroTFError(msg)
    height, width, channels = image.shape
    t, m = options.tile, options.margin
    filled, bad = fill_nonfinite(image.astype(np.float32, copy=False))
    pads = (m, max(m, t - height - m), m, max(m, t - width - m))
    padded = _pad(filled, *pads)
    has_finite = None if bad is None else ~_pad(bad.all(axis=-1)[..., None], *pads)[..., 0]
    rows = tile_starts(padded.shape[0], t, options.step)
    cols = tile_starts(padded.shape[1], t, options.step)
    weight_tile = gaussian_weight(t, options.overlap, options.edge)[..., None].astype(np.float64)
    out = np.empty((height, width, channels), np.float32)

    # Rolling band of t padded rows starting at `top`: rows above the next tile row are final
    # and go to `out`. float64 sums make final = sum(w * x) / sum(w) exact for an identity
    # model (products of two float32 are exact in float64).
    acc = np.zeros((t, padded.shape[1], channels), np.float64)
    weight = np.zeros((t, padded.shape[1], 1), np.float64)
    top = 0

    def finalize(n_rows: int) -> None:
        """Write padded rows [top, top + n_rows) that lie in the frame to `out`."""
        lo, hi = max(top, m), min(top + n_rows, m + height)
        if hi > lo:
            with np.errstate(invalid="ignore", divide="ignore"):  # divided in float64, stored as float32
                np.divide(acc[lo - top:hi - top, m:m + width], weight[lo - top:hi - top, m:m + width],
                          out=out[lo - m:hi - m], casting="same_kind")

    # the weights of a full row of tiles are the same for every row: summed once
    row_weight = np.zeros_like(weight)
    for c in cols:
        row_weight[:, c:c + t] += weight_tile
    product = np.empty((t, t, channels), np.float64)

    total, done = len(rows) * len(cols), 0
    for r in rows:
        shift = r - top
        if shift:
            finalize(shift)
            for buf in (acc, weight):
                buf[:t - shift] = buf[shift:]
                buf[t - shift:] = 0.0
            top = r
        batch, where, used = [], [], []
        for i, c in enumerate(cols):
            if has_finite is None or has_finite[r:r + t, c:c + t].any():  # skip masked-only tiles
                batch.append(padded[r:r + t, c:c + t])
                where.append(c)
            if batch and (len(batch) == options.batch_size or i == len(cols) - 1):
                result = np.asarray(predict(np.stack(batch)), np.float32)
                for c0, tile_out in zip(where, result):
                    np.multiply(tile_out, weight_tile, out=product)
                    acc[:, c0:c0 + t] += product
                used += where
                batch, where = [], []
        if len(used) == len(cols):
            weight += row_weight
        else:
            for c0 in used:
                weight[:, c0:c0 + t] += weight_tile
        done += len(cols)
        if progress:
            progress(done, total)
    finalize(t)
    if bad is not None:
        out[bad] = np.nan
    return out


# ----------------------------------------------------------------------------- models
@dataclasses.dataclass
class LoadedModel:
    """A model ready for tiles: ``predict`` maps (N, T, T, C) float32 to the same shape."""

    name: str
    predict: Callable[[np.ndarray], np.ndarray]
    metadata: dict
    #: Self2Self models: one stochastic pass ``sample(batch, keep_mask)``; see :func:`with_ensemble`.
    sample: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None
    #: Self2Self models loaded from .keras: ``reseed(seed)`` restarts the dropout draws.
    reseed: Callable[[int], None] | None = None
    #: Arithmetic of the network's convolutions: ``float32`` or ``bfloat16`` (see :func:`load_model`).
    precision: str = "float32"

    @property
    def channels(self) -> int:
        return int(self.metadata.get("channels", 3))

    @property
    def domain(self) -> str:
        return self.metadata.get("data_domain", "stretched")

    @property
    def tile(self) -> int:
        return int(self.metadata.get("tile", 256))


def resolve_model_path(name_or_path: str | os.PathLike) -> Path:
    """A shipped model's name (``resunet-rgb``), a ``.keras`` file or a SavedModel folder."""
    path = Path(name_or_path)
    if path.exists():
        return path
    for folder in shipped_model_dirs():
        if (folder / str(name_or_path)).exists():
            return folder / str(name_or_path)
    names = sorted({p.name for d in shipped_model_dirs() for p in d.iterdir() if p.is_dir()})
    raise AstroTFError(f"{name_or_path}: no such model file or folder; shipped models: {', '.join(names) or 'none'}")


def _find_metadata(path: Path) -> dict:
    for candidate in (path / "metadata.json", path.parent / "metadata.json",
                      path.with_suffix(".json"), path.parent.parent / "metadata.json"):
        if candidate.is_file():
            return json.loads(candidate.read_text())
    return {}


def _saved_model_dir(path: Path) -> Path | None:
    if (path / "saved_model.pb").is_file():
        return path
    versions = sorted((p for p in path.iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name))
    if versions and (versions[-1] / "saved_model.pb").is_file():
        return versions[-1]
    return None


BACKENDS = ("tensorflow", "onnxruntime", "tensorrt")
PRECISIONS = ("auto", "float32", "bfloat16")


def resolve_inference_precision(precision: str, metadata: dict, backend: str = "tensorflow") -> str:
    """The arithmetic ``precision`` stands for with this model, backend and machine.

    ``auto`` is ``bfloat16`` only for models of stretched data run by TensorFlow on
    hardware that computes bfloat16 natively (a GPU, or a CPU with AVX512-BF16 / AMX;
    see :func:`astrotf.recipes.resolve_precision`): the convolutions then run about
    1.8x faster while the input, the global residual sum and the output stay float32,
    so the change to the data is the correction's bfloat16 rounding (measured: about
    60 dB below the signal on [0, 1] data). Models of linear data (fluxes,
    magnetograms) keep float32 unless ``bfloat16`` is asked for.

    Raises
    ------
    AstroTFError
        Unknown precision, or bfloat16 asked of a backend that does not run it.
    """
    if precision not in PRECISIONS:
        raise AstroTFError(f"unknown precision {precision!r}; expected one of {list(PRECISIONS)}")
    if precision == "auto":
        if backend != "tensorflow" or metadata.get("data_domain") != "stretched":
            return "float32"  # unknown data stay in float32 too
        from astrotf.recipes import resolve_precision

        import tensorflow as tf

        native = resolve_precision("auto", bool(tf.config.list_physical_devices("GPU"))) == "mixed_bfloat16"
        return "bfloat16" if native else "float32"
    if precision == "bfloat16" and backend != "tensorflow":
        raise AstroTFError(f"--precision bfloat16 runs on the tensorflow backend only, not {backend}")
    return precision


def _load_onnx(path: Path, metadata: dict) -> LoadedModel:
    """An ONNX Runtime session on ``path`` (a .onnx file or a folder holding model.onnx)."""
    onnx_file = path if path.suffix == ".onnx" else path / "model.onnx"
    if not onnx_file.is_file():
        raise AstroTFError(f"{path}: no model.onnx; export it with `astrotf export RUN --format onnx`")
    try:
        import onnxruntime as ort
    except ImportError:
        raise AstroTFError('the onnxruntime backend needs onnxruntime: pip install "astrotf[onnx]"') from None
    try:
        session = ort.InferenceSession(str(onnx_file), providers=ort.get_available_providers())
    except Exception as err:  # onnxruntime raises its own exception types for a bad file
        raise AstroTFError(f"{onnx_file}: cannot be loaded by ONNX Runtime ({str(err).splitlines()[0]})") from None
    (inp,) = session.get_inputs()
    if "channels" not in metadata and isinstance(inp.shape[-1], int):
        metadata["channels"] = inp.shape[-1]

    def predict(batch):
        return session.run(None, {inp.name: np.ascontiguousarray(batch, np.float32)})[0]

    return LoadedModel(metadata.get("name", onnx_file.parent.name), predict, metadata)


def _keras_domain(path: Path) -> str | None:
    """The data domain of a ``.keras`` file (or a run's best model) from its config, without loading it."""
    import zipfile

    if path.is_dir():
        path = path / "model_best.keras"
    if path.suffix != ".keras" or not path.is_file():
        return None
    try:
        with zipfile.ZipFile(path) as archive:
            config = json.loads(archive.read("config.json"))
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        return None
    if config.get("class_name") == "Self2Self":
        return "linear"
    if config.get("class_name") == "ResUNet":
        return "linear" if config.get("config", {}).get("normalization") == "background" else "stretched"
    return None


def _load_tensorrt(path: Path, metadata: dict) -> LoadedModel:
    """A TensorRT engine: a ``.plan`` file, or the one a model folder's metadata.json names."""
    from astrotf.tensorrt_engine import EngineRunner, require_gpu

    if path.suffix == ".plan":
        engine = path
    else:
        entry = metadata.get("tensorrt")
        if not entry:
            raise AstroTFError(f"{path}: no TensorRT engine; build one for this GPU with "
                               f"`astrotf export {path} --out DIR --format tensorrt`")
        engine = path / entry["file"]
    if not engine.is_file():
        raise AstroTFError(f"{engine}: TensorRT engine missing")
    require_gpu()
    runner = EngineRunner(engine)
    metadata.setdefault("channels", runner.channels)
    name = metadata.get("name", engine.parent.name)
    return LoadedModel(name, runner, metadata, precision=metadata.get("tensorrt", {}).get("precision", "tensorrt"))


def load_model(name_or_path: str | os.PathLike, backend: str = "tensorflow",
               precision: str = "float32") -> LoadedModel:
    """Load a model for inference, in float32 (or bfloat16) whatever precision it was trained in.

    Parameters
    ----------
    name_or_path : str or path
        A shipped model's name, an exported model folder, a SavedModel folder, a
        ``.keras`` file or (ONNX Runtime) a ``.onnx`` file.
    backend : {"tensorflow", "onnxruntime", "tensorrt"}
        ``onnxruntime`` runs the folder's ``model.onnx`` (see :func:`astrotf.export.export_onnx`)
        on the best available execution provider (CUDA, TensorRT, else CPU); ``tensorrt``
        the engine that ``astrotf export --format tensorrt`` built for this GPU (a folder
        whose metadata.json names it, or a ``.plan`` file).
    precision : {"float32", "bfloat16", "auto"}
        Arithmetic of the convolutions (see :func:`resolve_inference_precision`);
        bfloat16 builds the network from the model's ``.keras`` file under Keras'
        ``mixed_bfloat16`` policy, so the input, residual sum and output stay float32.

    Raises
    ------
    AstroTFError
        Unknown name or backend, or a file/folder that is not a model.
    """
    if backend not in BACKENDS:
        raise AstroTFError(f"unknown backend {backend!r}; expected one of {list(BACKENDS)}")
    path = resolve_model_path(name_or_path)
    metadata = _find_metadata(path)
    if "data_domain" not in metadata and precision == "auto":
        domain = _keras_domain(path)
        if domain:
            metadata["data_domain"] = domain
    requested, precision = precision, resolve_inference_precision(precision, metadata, backend)
    if requested == "auto" and path.is_dir() and not (path / "model.keras").is_file() \
            and not (path / "run.json").is_file():
        precision = "float32"  # a bare SavedModel: its graph is fixed in float32
    if backend == "onnxruntime":
        return _load_onnx(path, metadata)
    if backend == "tensorrt":
        return _load_tensorrt(path, metadata)
    import tensorflow as tf

    if path.is_dir() and (path / "model.keras").is_file() and (
            _saved_model_dir(path) is None or precision == "bfloat16"):
        path = path / "model.keras"
    if path.is_dir() and (path / "run.json").is_file() and (path / "model_best.keras").is_file():
        path = path / "model_best.keras"  # a training run directory
    if path.is_dir() and precision == "bfloat16":
        raise AstroTFError(f"{path}: bfloat16 needs the model's .keras file (none here); use --precision float32")
    if path.is_dir():
        saved = _saved_model_dir(path)
        if saved is None:
            raise AstroTFError(f"{path}: neither a SavedModel (saved_model.pb) nor a folder with model.keras")
        loaded = tf.saved_model.load(str(saved))
        serve = loaded.signatures["serving_default"]
        if "mask" in serve.structured_input_signature[1]:  # Self2Self: image + keep mask
            return _self2self_saved_model(serve, path, metadata)
        (input_name,) = serve.structured_input_signature[1].keys()
        (output_name,) = serve.structured_outputs.keys()

        def predict(batch):
            return serve(**{input_name: tf.constant(batch, tf.float32)})[output_name].numpy()

        if "channels" not in metadata:
            metadata["channels"] = int(serve.structured_input_signature[1][input_name].shape[-1])
        return LoadedModel(metadata.get("name", path.name), predict, metadata)

    import keras

    import astrotf.models.registry  # noqa: F401  (registers the custom objects)

    if path.suffix != ".keras":
        raise AstroTFError(f"{path}: not a model (expected a .keras file or a SavedModel folder)")
    # The models' configs hold no dtype: the layers take the global policy at load time.
    keras.mixed_precision.set_global_policy("mixed_bfloat16" if precision == "bfloat16" else "float32")
    try:
        model = keras.saving.load_model(path, compile=False)
    except Exception as err:  # keras raises many types for a bad archive
        raise AstroTFError(f"{path}: cannot be loaded as a Keras model ({str(err).splitlines()[0]})") from None
    finally:
        keras.mixed_precision.set_global_policy("float32")
    if type(model).__name__ == "Self2Self":
        if precision != "float32":
            raise AstroTFError(f"{path}: Self2Self models run in float32 only (--precision)")
        return _self2self_keras(model, path, metadata)
    metadata.setdefault("channels", int(model.input_shape[-1]))
    if getattr(model, "normalization", "none") == "background":
        metadata.setdefault("data_domain", "linear")
    fn = tf.function(lambda x: model(x, training=False), reduce_retracing=True)

    def predict(batch):
        return fn(tf.constant(batch, tf.float32)).numpy()

    name = metadata.get("name", path.parent.name if path.name == "model.keras" else path.stem)
    return LoadedModel(name, predict, metadata, precision=precision)


def _self2self_loaded(name: str, sample: Callable, metadata: dict, reseed=None) -> LoadedModel:
    metadata.setdefault("data_domain", "linear")
    loaded = LoadedModel(name, sample, metadata, sample=sample, reseed=reseed)
    return with_ensemble(loaded, samples=int(metadata.get("ensemble", {}).get("samples", 16)))


def _self2self_saved_model(serve, path: Path, metadata: dict) -> LoadedModel:
    import tensorflow as tf

    (output_name,) = serve.structured_outputs.keys()
    metadata.setdefault("channels", int(serve.structured_input_signature[1]["image"].shape[-1]))

    def sample(batch, mask):
        return serve(image=tf.constant(batch, tf.float32), mask=tf.constant(mask, tf.float32))[output_name].numpy()

    states = sorted((v for v in serve.variables if "seed_generator_state" in v.name), key=lambda v: v.name)

    def reseed(seed: int) -> None:
        _reseed_states(states, seed)

    return _self2self_loaded(metadata.get("name", path.name), sample, metadata, reseed if states else None)


def _reseed_states(states, seed: int) -> None:
    """Restart the dropout draws of a Self2Self model: one independent stream per dropout layer.

    A Keras seed generator's state is ``[seed, counter]`` and each draw increments the
    counter, so every layer gets its own first element (drawn from ``seed``) and counter 0.
    """
    firsts = np.random.default_rng(seed).integers(1, 2**31 - 1, len(states))
    for state, first in zip(states, firsts):
        state.assign(np.array([first, 0]).astype(state.dtype.as_numpy_dtype if hasattr(state.dtype, "as_numpy_dtype")
                                                   else state.dtype))


def _self2self_keras(model, path: Path, metadata: dict) -> LoadedModel:
    import tensorflow as tf

    from astrotf.layers.mc_dropout import MCDropout

    metadata.setdefault("channels", model.channels)
    if "ensemble" not in metadata and (path.parent / "run.json").is_file():  # a training run's model
        train = json.loads((path.parent / "run.json").read_text())["recipe"].get("train", {})
        metadata["ensemble"] = {"keep_prob": train.get("keep_prob", 0.7), "mask_block": train.get("mask_block", 1),
                                "samples": 16}
        metadata.setdefault("tile", 256)
    metadata.setdefault("ensemble", {"keep_prob": 0.7, "samples": 16})
    fn = tf.function(lambda x, m: model([x, m]), reduce_retracing=True)

    def sample(batch, mask):
        return fn(tf.constant(batch, tf.float32), tf.constant(mask, tf.float32)).numpy()

    def reseed(seed: int) -> None:
        states = [layer.seed_generator.state for layer in model.layers if isinstance(layer, MCDropout)]
        _reseed_states(states, seed)

    return _self2self_loaded(metadata.get("name", path.stem), sample, metadata, reseed)


def with_ensemble(model: LoadedModel, samples: int, seed: int = 0, average: str = "dropped") -> LoadedModel:
    """A Self2Self model whose ``predict`` is the mean of ``samples`` dropout passes on
    re-masked inputs (TDR eq. 4, :func:`astrotf.ensemble.ensemble_predictor`), seeded.

    Raises
    ------
    AstroTFError
        If ``model`` is not a Self2Self model.
    """
    from astrotf.ensemble import ensemble_predictor

    if model.sample is None:
        raise AstroTFError(f"{model.name}: --samples needs a Self2Self model (this one is deterministic)")
    if model.reseed is not None:
        model.reseed(seed)
    ensemble = model.metadata.get("ensemble", {})
    predict = ensemble_predictor(model.sample, samples=samples, keep_prob=float(ensemble.get("keep_prob", 0.7)),
                                 seed=seed, average=average, mask_block=int(ensemble.get("mask_block", 1)))
    return dataclasses.replace(model, predict=predict)


# ----------------------------------------------------------------------------- domain
def guess_domain(data: np.ndarray, info) -> str:
    """``"linear"``, ``"stretched"`` or ``"magnetogram"`` from format, header, dtype and values.

    Integer display formats (8/16-bit TIFF, PNG, JPEG) are stretched; FITS is linear;
    a float TIFF is linear unless it lies in [0, 1] with a bright median (> 0.05), as
    a stretched export from an image processor would. A mono FITS whose ``BUNIT`` is a
    magnetic field (Gauss, Mx/cm²) or whose ``CONTENT`` says magnetogram is a
    magnetogram: signed data that a model for photon counts would damage.
    """
    if not info.is_linear:
        return "stretched"
    header = info.header
    if header is not None and data.shape[-1] == 1:
        unit = str(header.get("BUNIT", "")).strip().lower()
        content = str(header.get("CONTENT", "")).lower()
        if unit in MAGNETOGRAM_UNITS or "magnetogram" in content:
            return "magnetogram"
    if info.format == "tiff":
        finite = data[np.isfinite(data)]
        if finite.size and finite.min() >= 0 and finite.max() <= 1 and np.median(finite) > 0.05:
            return "stretched"
    return "linear"


def adapt_channels(predict: Callable, model_channels: int, image_channels: int) -> Callable:
    """Run a mono model on each channel of a colour image, or a colour model on a mono image."""
    if model_channels == image_channels:
        return predict
    if model_channels == 1:
        def per_channel(batch):
            n, h, w, c = batch.shape
            planes = np.moveaxis(batch, -1, 1).reshape(n * c, h, w, 1)
            out = np.asarray(predict(planes)).reshape(n, c, h, w)
            return np.moveaxis(out, 1, -1)

        return per_channel
    if image_channels == 1:
        def via_colour(batch):
            out = np.asarray(predict(np.repeat(batch, model_channels, axis=-1)))
            return out.mean(axis=-1, keepdims=True)

        return via_colour
    raise AstroTFError(f"cannot run a {model_channels}-channel model on a {image_channels}-channel image")


def denoise_image(data: np.ndarray, model: LoadedModel, options: TileOptions, progress=None) -> np.ndarray:
    """Denoise a (H, W, C) frame with a loaded model, handling channels and data range."""
    predict = adapt_channels(model.predict, model.channels, data.shape[-1])
    if model.domain == "stretched":
        finite = data[np.isfinite(data)]
        if finite.size and (finite.min() < -1e-3 or finite.max() > 1 + 1e-3):
            log.warning("data outside [0, 1] given to a model for stretched data; values are clipped")
            data = np.clip(data, 0.0, 1.0)
    return denoise_tiled(data, predict, options, progress)
