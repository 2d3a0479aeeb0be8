"""Full-frame denoising: overlapping tiles with Gaussian feathering (AstroPics §3).

Tiles of ``tile`` px overlap their neighbours by at least ``overlap`` (nominal step
``tile * (1 - overlap)``, spread evenly so that the first tile starts at the frame's
first pixel and the last ends at its last); they go through the model in batches, are
multiplied by a 2-D Gaussian weight and summed into an accumulator and a weight map;
``final = accumulator / weight``. The weight tapers only towards a neighbouring tile: on
a side that is the frame border it stays at its peak, so border pixels need no padding
beyond a thin reflected ``border`` (8 px): without it, the network's zero padding at the
frame edge cost 1.5 and 2.8 dB in the outermost 16 px of two reserved RGB test images;
4-8 px of reflection recover it (32 px were 0.8-1 dB worse than 8).
:meth:`TileOptions.for_frame` picks the tile size that needs the fewest network pixels
for a frame (the overlap's cost depends on how the tiles fit).

Memory stays bounded: tiles are produced one row of tiles at a time and never held
all at once, and the float64 accumulator and weight map cover a single band of
``tile`` rows; finished rows go straight to the output. The full-size buffers are
the (border-padded) input and the output. NaN pixels (off-disk,
masked) are filled before the network and come back as NaN; tiles with no finite pixel
are skipped.

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

from astrotf.constants import SELF2SELF_KEEP_PROB, SELF2SELF_SAMPLES
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
    """Start offsets of tiles of size ``tile``, at most ``step`` px apart, covering ``[0, length)``.

    As few tiles as the nominal ``step`` allows, spread evenly: the first starts at 0 and
    the last ends at ``length`` (so no tile nearly repeats its neighbour, and every gap is
    at most ``step``). A frame not larger than a tile gets one tile at 0.
    """
    if length <= tile:
        return [0]
    n = -(-(length - tile) // step) + 1
    return [int(round(i * (length - tile) / (n - 1))) for i in range(n)]


def feather_profile(tile: int, overlap: float, edge: int = 0, first: bool = False,
                    last: bool = False) -> np.ndarray:
    """1-D feathering weight along one axis of a tile, float32, peak 1 at the centre.

    A Gaussian with ``sigma = tile / 4`` (about 0.14 at the edges, so a neighbouring
    tile's centre dominates there); the outermost ``edge`` px towards a neighbour are
    zero, because a network's output is least reliable where its receptive field leaves
    the tile, and with ``2 * edge`` not above the overlap another tile covers them. On a
    side where the tile touches the frame border (``first``: its start, ``last``: its end)
    there is no neighbour to hand over to, and the weight stays 1 from the centre out.
    With ``overlap == 0`` the weight is flat: the naive tiling of §4.2.
    """
    if overlap == 0:
        return np.ones(tile, np.float32)
    centre = (tile - 1) / 2
    g = np.exp(-0.5 * ((np.arange(tile) - centre) / (tile / 4)) ** 2)
    if edge > 0:
        g[:edge] = 0.0
        g[-edge:] = 0.0
    if first:  # every position up to the centre
        g[:int(np.floor(centre)) + 1] = 1.0
    if last:  # every position from the centre on
        g[int(np.ceil(centre)):] = 1.0
    return g.astype(np.float32)


def gaussian_weight(tile: int, overlap: float, edge: int = 0) -> np.ndarray:
    """2-D feathering weight (tile, tile) of a tile with neighbours on all four sides."""
    g = feather_profile(tile, overlap, edge)
    return np.outer(g, g)


def _tile_count(length: int, tile: int, step: int) -> int:
    return len(tile_starts(length, tile, step))


@dataclasses.dataclass(frozen=True)
class TileOptions:
    """How a frame is cut into tiles.

    Parameters
    ----------
    tile : int
        Tile size in px (the model's training tile is a good choice; see :meth:`for_frame`).
    overlap : float
        Least fraction of a tile shared with its neighbour, in [0, 0.9]; 0 is naive tiling.
    batch_size : int
        Tiles per model call.
    border : int
        Reflect padding around the frame in px, so that border pixels are not at the
        network's zero-padded tile edge.
    """

    tile: int = 256
    overlap: float = 0.25
    batch_size: int = 8
    border: int = 8

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
        if not (isinstance(self.border, int) and 0 <= self.border < self.tile):
            msg = f"`border` must be an integer in [0, tile). Received: border={self.border!r}"
            raise AstroTFError(msg)

    @property
    def step(self) -> int:
        """Nominal (largest) distance between tile starts."""
        return max(1, int(round(self.tile * (1.0 - self.overlap))))

    @property
    def edge(self) -> int:
        """Pixels at a tile edge towards a neighbour that get zero weight (a quarter of the overlap)."""
        return (self.tile - self.step) // 4

    @classmethod
    def for_frame(cls, shape: tuple[int, ...], overlap: float = 0.25, preferred: int = 256,
                  batch_size: int | None = None, largest: int | None = None,
                  multiple: int = 16, border: int = 8) -> TileOptions:
        """The tile size that needs the fewest network pixels for a frame of ``shape``.

        How many tiles a frame needs jumps with the tile size: a 2048 px side (2064 with
        its border) takes 11 tiles of 256 px at overlap 0.25 (1.38x its length) but 5 of
        528 px (1.29x). Candidates are multiples of ``multiple`` from ``preferred`` (or
        the frame's longer side, if that is smaller) up to ``largest``, by default the
        largest tile that fits the pixels of 8 tiles of ``preferred`` px (724 px for 256).
        Ties go to the smaller tile. Without ``batch_size``, a batch holds at most as
        many pixels as 8 tiles of ``preferred`` px, so memory stays the same.
        """
        height, width = (int(n) + 2 * border for n in shape[:2])
        budget = 8 * preferred * preferred
        if largest:
            preferred = min(preferred, largest)
        else:
            largest = int(np.sqrt(budget)) // multiple * multiple
        smallest = min(preferred, max(multiple, -(-max(height, width) // multiple) * multiple))
        best = None
        for tile in range(smallest, max(smallest, largest) + 1, multiple):
            step = cls(tile, overlap, border=min(border, tile - 1)).step
            cost = (_tile_count(max(height, tile), tile, step) * _tile_count(max(width, tile), tile, step)
                    * tile * tile)
            if best is None or cost < best[0]:
                best = (cost, tile)
        tile = best[1]
        if batch_size is None:
            batch_size = max(1, budget // (tile * tile))
        return cls(tile, overlap, batch_size, border=min(border, tile - 1))


def _pad(image: np.ndarray, top: int, bottom: int, left: int, right: int) -> np.ndarray:
    widths = ((top, bottom), (left, right), (0, 0))
    # reflect needs the pad to be smaller than the side; symmetric handles tiny frames
    mode = "reflect" if min(image.shape[:2]) > max(top, bottom, left, right) else "symmetric"
    return np.pad(image, widths, mode=mode)


def fill_nonfinite(image: np.ndarray, fill: str = "median") -> tuple[np.ndarray, np.ndarray | None]:
    """Replace NaN/Inf by the median of the finite pixels of each channel (``fill="median"``)
    or by NaN (``fill="nan"``: one marker of "no data" for a predictor that masks it).

    Returns the filled copy (or the input itself when all pixels are finite) and the
    boolean mask of non-finite pixels (None when there are none).
    """
    bad = ~np.isfinite(image)
    if not bad.any():
        return image, None
    if fill == "nan":
        return np.where(bad, np.asarray(np.nan, image.dtype), image), bad
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
    *,
    keep_nonfinite: bool = False,
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
    keep_nonfinite : bool
        Give non-finite pixels to ``predict`` as they are, for a predictor that keeps them
        out of the network itself (a Self2Self ensemble drops them with its keep mask).
        By default they are filled with the channel's median, which a network without a
        mask input cannot tell from data.

    Returns
    -------
    ndarray, shape (H, W, C), float32
        The denoised frame; NaN where the input was non-finite.
    """
    if image.ndim != 3 or 0 in image.shape:
        msg = f"expected a non-empty (H, W, C) image. Received: shape={image.shape}"
        raise AstroTFError(msg)
    height, width, channels = image.shape
    t, b = options.tile, options.border
    filled, bad = fill_nonfinite(image.astype(np.float32, copy=False), "nan" if keep_nonfinite else "median")
    pads = (b, max(b, t - height - b), b, max(b, t - width - b))
    padded = _pad(filled, *pads) if any(pads) else filled
    has_finite = None if bad is None else ~_pad(bad.all(axis=-1)[..., None], *pads)[..., 0]
    rows = tile_starts(padded.shape[0], t, options.step)
    cols = tile_starts(padded.shape[1], t, options.step)
    out = np.empty((height, width, channels), np.float32)

    def profile(index: int, count: int) -> np.ndarray:
        return feather_profile(t, options.overlap, options.edge, first=index == 0, last=index == count - 1)

    col_profiles = [profile(j, len(cols)) for j in range(len(cols))]
    tile_weights: dict = {}  # (row kind, col kind) -> (t, t, 1) float64 holding float32 values

    def kind(index: int, count: int) -> int:
        """0: first, 1: inner, 2: last (or only) tile along an axis: all a weight depends on."""
        return 2 if index == count - 1 else min(index, 1)

    def tile_weight(i: int, j: int) -> np.ndarray:
        key = (kind(i, len(rows)), kind(j, len(cols)))
        if key not in tile_weights:
            w = np.outer(profile(i, len(rows)), col_profiles[j]).astype(np.float32)
            tile_weights[key] = w[..., None].astype(np.float64)
        return tile_weights[key]

    # Rolling band of t padded rows starting at `top`: rows above the next tile row are final
    # and go to `out`. float64 sums make final = sum(w * x) / sum(w) exact for an identity
    # model (w is float32-valued, and products of two float32 are exact in float64).
    acc = np.zeros((t, padded.shape[1], channels), np.float64)
    weight = np.zeros((t, padded.shape[1], 1), np.float64)
    top = 0

    def finalize(n_rows: int) -> None:
        """Write padded rows [top, top + n_rows) that lie in the frame to `out`."""
        lo, hi = max(top, b), min(top + n_rows, b + height)
        if hi > lo:
            with np.errstate(invalid="ignore", divide="ignore"):  # divided in float64, stored as float32
                np.divide(acc[lo - top:hi - top, b:b + width], weight[lo - top:hi - top, b:b + width],
                          out=out[lo - b:hi - b], casting="same_kind")

    row_weights: dict = {}  # the weights of a full row of tiles, by row kind: summed once each
    product = np.empty((t, t, channels), np.float64)

    total, done = len(rows) * len(cols), 0
    for i, r in enumerate(rows):
        shift = r - top
        if shift:
            finalize(shift)
            for buf in (acc, weight):
                buf[:t - shift] = buf[shift:]
                buf[t - shift:] = 0.0
            top = r
        batch, where, used = [], [], []
        for j, c in enumerate(cols):
            if has_finite is None or has_finite[r:r + t, c:c + t].any():  # skip masked-only tiles
                batch.append(padded[r:r + t, c:c + t])
                where.append(j)
            if batch and (len(batch) == options.batch_size or j == len(cols) - 1):
                result = np.asarray(predict(np.stack(batch)), np.float32)
                for j0, tile_out in zip(where, result):
                    np.multiply(tile_out, tile_weight(i, j0), out=product)
                    acc[:, cols[j0]:cols[j0] + t] += product
                used += where
                batch, where = [], []
        if len(used) == len(cols):
            key = kind(i, len(rows))
            if key not in row_weights:
                row_weights[key] = np.zeros_like(weight)
                for j, c in enumerate(cols):
                    row_weights[key][:, c:c + t] += tile_weight(i, j)
            weight += row_weights[key]
        else:
            for j0 in used:
                weight[:, cols[j0]:cols[j0] + t] += tile_weight(i, j0)
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
    #: Largest tile side the model takes (a TensorRT engine's profile); None: any.
    largest_tile: int | None = None
    #: ``predict`` takes NaN pixels and keeps them out of the network itself (Self2Self ensembles).
    masks_nonfinite: bool = False

    @property
    def channels(self) -> int:
        return int(self.metadata.get("channels", 3))

    @property
    def domain(self) -> str:
        return self.metadata.get("data_domain", "stretched")

    @property
    def tile(self) -> int:
        return int(self.metadata.get("tile", 256))

    @property
    def normalises_tiles(self) -> bool:
        """Whether the network scales each tile by its median and MAD (``normalization = "background"``)."""
        normalization = self.metadata.get("normalization")
        return isinstance(normalization, dict) and normalization.get("kind") == "background"

    def tile_options(self, shape: tuple[int, ...], overlap: float = 0.25, tile: int | None = None,
                     batch_size: int | None = None) -> TileOptions:
        """Tiling of a frame of ``shape`` for this model, as ``astrotf infer`` does it.

        Without ``tile``, :meth:`TileOptions.for_frame` picks the size (from the model's
        training tile or 256 px, up to :attr:`largest_tile`); with it, tiles of that size
        in batches of ``batch_size`` (default 8).

        Raises
        ------
        AstroTFError
            If ``tile`` is larger than the model takes (a TensorRT engine's profile).
        """
        if tile is None:
            return TileOptions.for_frame(shape, overlap, preferred=max(256, self.tile), batch_size=batch_size,
                                         largest=self.largest_tile)
        if self.largest_tile is not None and tile > self.largest_tile:
            raise AstroTFError(f"{self.name}: tile {tile} px is larger than the model takes "
                               f"({self.largest_tile} px, the TensorRT engine's profile)")
        return TileOptions(tile=tile, overlap=overlap, batch_size=batch_size or 8)


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
    entry = metadata.get("tensorrt", {})
    return LoadedModel(name, runner, metadata, precision=entry.get("precision", "tensorrt"),
                       largest_tile=entry.get("profile", {}).get("max_tile"))


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
        metadata.setdefault("normalization", {"kind": "background", "inside_model": True})
    fn = tf.function(lambda x: model(x, training=False), reduce_retracing=True)

    def predict(batch):
        return fn(tf.constant(batch, tf.float32)).numpy()

    name = metadata.get("name", path.parent.name if path.name == "model.keras" else path.stem)
    return LoadedModel(name, predict, metadata, precision=precision)


def _self2self_loaded(name: str, sample: Callable, metadata: dict, reseed=None) -> LoadedModel:
    metadata.setdefault("data_domain", "linear")
    loaded = LoadedModel(name, sample, metadata, sample=sample, reseed=reseed)
    return with_ensemble(loaded, samples=int(metadata.get("ensemble", {}).get("samples", SELF2SELF_SAMPLES)))


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
        run = json.loads((path.parent / "run.json").read_text())
        train = run["recipe"].get("train", {})
        metadata.setdefault("training", {"data": run.get("data") or {}})  # its units, for the BUNIT check
        metadata["ensemble"] = {"keep_prob": train.get("keep_prob", SELF2SELF_KEEP_PROB),
                                "mask_block": train.get("mask_block", 1),
                                "samples": SELF2SELF_SAMPLES}
        metadata.setdefault("tile", 256)
    metadata.setdefault("ensemble", {"keep_prob": SELF2SELF_KEEP_PROB, "samples": SELF2SELF_SAMPLES})
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
    keep_prob = float(ensemble.get("keep_prob", SELF2SELF_KEEP_PROB))
    predict = ensemble_predictor(model.sample, samples=samples, keep_prob=keep_prob,
                                 seed=seed, average=average, mask_block=int(ensemble.get("mask_block", 1)))
    return dataclasses.replace(model, predict=predict, masks_nonfinite=True)


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


def denoise_image(data: np.ndarray, model: LoadedModel, options: TileOptions, progress=None,
                  step: float | str | None = "auto") -> np.ndarray:
    """Denoise a (H, W, C) frame with a loaded model, handling channels and data range.

    ``step``: spacing of quantised input values (``io.ImageInfo.step``); ``"auto"`` finds it from the
    values (:func:`astrotf.metrics.value_grid`), None means continuous. A model that normalises each
    tile by its median and MAD (:attr:`LoadedModel.normalises_tiles`) gets a quantised frame dithered
    by one step first (:func:`dither`, seeded): on integer frames whose noise is a few steps, it
    otherwise leaves up to 10 times more background noise (``tools/bench_quantised.py``).
    """
    from astrotf.quantise import dither, resolve_step

    step = resolve_step(data, step) if model.normalises_tiles else None
    if step is not None:
        data = dither(data, step)
    predict = adapt_channels(model.predict, model.channels, data.shape[-1])
    if model.domain == "stretched":
        finite = data[np.isfinite(data)]
        if finite.size and (finite.min() < -1e-3 or finite.max() > 1 + 1e-3):
            log.warning("data outside [0, 1] given to a model for stretched data; values are clipped")
            data = np.clip(data, 0.0, 1.0)
    return denoise_tiled(data, predict, options, progress, keep_nonfinite=model.masks_nonfinite)
