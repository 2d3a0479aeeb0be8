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

A noise-conditioned model takes the frame's per-pixel noise σ map (``noise_sigma``, same shape)
beside it: the map is filled, reflected and cut exactly as the frame, so each tile goes to the
network with the σ of its own pixels. Where the frame has no data σ gets its channel's median: the
frame there holds its channel's median, and σ(x) rises with x, so that is σ of the filled value.

Models come from :func:`astrotf.backends.load_model` (a ``.keras`` file, a SavedModel,
ONNX Runtime, TensorRT or TF Serving: any :class:`~astrotf.backends.LoadedModel`).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from astrotf.constants import MAGNETOGRAM_UNITS
from astrotf.errors import AstroTFError
from astrotf.quantise import dither, resolve_step

if TYPE_CHECKING:
    from astrotf.backends import LoadedModel

log = logging.getLogger(__name__)


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
    noise_sigma: np.ndarray | None = None,
) -> np.ndarray:
    """Denoise a whole frame with overlapping, Gaussian-feathered tiles.

    Parameters
    ----------
    image : ndarray, shape (H, W, C), float32
        Any size, NaN allowed.
    predict : callable
        Maps a batch (N, T, T, C) float32 to (N, T, T, C); with ``noise_sigma``, called as
        ``predict(batch, sigma_batch)`` with the σ tiles of the same pixels.
    options : TileOptions
    progress : callable, optional
        Called as ``progress(done_tiles, total_tiles)``.
    keep_nonfinite : bool
        Give non-finite pixels to ``predict`` as they are, for a predictor that keeps them
        out of the network itself (a Self2Self ensemble drops them with its keep mask).
        By default they are filled with the channel's median, which a network without a
        mask input cannot tell from data.
    noise_sigma : ndarray, shape (H, W, C), optional
        Per-pixel noise σ of ``image`` in its units, for a noise-conditioned ``predict``; tiled
        with the image, its gaps filled by :func:`fill_sigma`.

    Returns
    -------
    ndarray, shape (H, W, C), float32
        The denoised frame; NaN where the input was non-finite.
    """
    if image.ndim != 3 or 0 in image.shape:
        msg = f"expected a non-empty (H, W, C) image. Received: shape={image.shape}"
        raise AstroTFError(msg)
    height, width, channels = image.shape
    t = options.tile
    filled, bad = fill_nonfinite(image.astype(np.float32, copy=False), "nan" if keep_nonfinite else "median")
    padded, has_finite = _pad_frame(filled, bad, t, options.border)
    sigma = None
    if noise_sigma is not None:
        sigma = _pad_frame(fill_sigma(noise_sigma, image.shape, bad, keep_nonfinite), None, t, options.border)[0]
    rows = tile_starts(padded.shape[0], t, options.step)
    cols = tile_starts(padded.shape[1], t, options.step)
    out = np.empty((height, width, channels), np.float32)
    weights = _TileWeights(options, len(rows), len(cols))
    band = _Band(out, t, padded.shape[1], options.border)
    total, done = len(rows) * len(cols), 0
    for i, r in enumerate(rows):
        band.move_to(r)
        used = _accumulate_row(band, weights, (padded, sigma), has_finite, predict, options.batch_size, i, r, cols)
        band.add_weights(weights, i, cols, used)
        done += len(cols)
        if progress:
            progress(done, total)
    band.finalize(t)
    if bad is not None:
        out[bad] = np.nan
    return out


def fill_sigma(noise_sigma: np.ndarray, shape: tuple[int, ...], bad: np.ndarray | None,
               keep_nonfinite: bool = False) -> np.ndarray:
    """The σ map as the network gets it, float32 and finite: where the frame is non-finite (``bad``)
    or σ is, the median of the channel's other σ values (0 if none). AstroTFError for a σ map not
    shaped like the frame (``shape``), or with ``keep_nonfinite`` (a masking predictor)."""
    if keep_nonfinite:
        msg = "a predictor that masks non-finite pixels itself (Self2Self) takes no noise sigma map"
        raise AstroTFError(msg)
    sigma = np.asarray(noise_sigma, dtype=np.float32)
    if sigma.shape != tuple(shape):
        msg = f"`noise_sigma` must have the image's shape {tuple(shape)}. Received: noise_sigma.shape={sigma.shape}"
        raise AstroTFError(msg)
    if bad is not None:
        sigma = np.where(bad, np.float32(np.nan), sigma)
    return fill_nonfinite(sigma, "median")[0]


def _pad_frame(filled: np.ndarray, bad: np.ndarray | None, tile: int,
               border: int) -> tuple[np.ndarray, np.ndarray | None]:
    """The frame reflected by ``border`` px (and out to one tile where it is smaller than a tile),
    and where the padded frame has a pixel with data in some channel (None: everywhere)."""
    height, width = filled.shape[:2]
    pads = (border, max(border, tile - height - border), border, max(border, tile - width - border))
    padded = _pad(filled, *pads) if any(pads) else filled
    has_finite = None if bad is None else ~_pad(bad.all(axis=-1)[..., None], *pads)[..., 0]
    return padded, has_finite


def _kind(index: int, count: int) -> int:
    """0: first, 1: inner, 2: last (or only) tile along an axis: all a tile's weight depends on."""
    return 2 if index == count - 1 else min(index, 1)


class _TileWeights:
    """Feathering weights of a frame's tiles, made once per kind of tile (first, inner or last
    along each axis) and once per kind of full row of tiles."""

    def __init__(self, options: TileOptions, n_rows: int, n_cols: int):
        self.options, self.n_rows, self.n_cols = options, n_rows, n_cols
        self.col_profiles = [self._profile(j, n_cols) for j in range(n_cols)]
        self.tiles: dict = {}  # (row kind, col kind) -> (t, t, 1) float64 holding float32 values
        self.rows: dict = {}  # row kind -> the summed weights of a full row of tiles

    def _profile(self, index: int, count: int) -> np.ndarray:
        o = self.options
        return feather_profile(o.tile, o.overlap, o.edge, first=index == 0, last=index == count - 1)

    def tile(self, i: int, j: int) -> np.ndarray:
        """Weight of the tile in row ``i`` and column ``j`` of tiles, (t, t, 1) float64."""
        key = (_kind(i, self.n_rows), _kind(j, self.n_cols))
        if key not in self.tiles:
            w = np.outer(self._profile(i, self.n_rows), self.col_profiles[j]).astype(np.float32)
            self.tiles[key] = w[..., None].astype(np.float64)
        return self.tiles[key]

    def row(self, i: int, cols: list[int], like: np.ndarray) -> np.ndarray:
        """Summed weights of every tile of row ``i``, shaped like the band's weight map ``like``."""
        key = _kind(i, self.n_rows)
        if key not in self.rows:
            self.rows[key] = np.zeros_like(like)
            t = self.options.tile
            for j, c in enumerate(cols):
                self.rows[key][:, c:c + t] += self.tile(i, j)
        return self.rows[key]


class _Band:
    """Rolling band of ``tile`` padded rows starting at ``top``: the weighted sum of the tiles
    (``acc``) and of their weights. Rows above the next row of tiles are final and go to ``out``.

    float64 sums make ``final = sum(w * x) / sum(w)`` exact for an identity model (w is
    float32-valued, and products of two float32 are exact in float64).
    """

    def __init__(self, out: np.ndarray, tile: int, padded_width: int, border: int):
        self.out, self.tile, self.border = out, tile, border
        channels = out.shape[-1]
        self.acc = np.zeros((tile, padded_width, channels), np.float64)
        self.weight = np.zeros((tile, padded_width, 1), np.float64)
        self.product = np.empty((tile, tile, channels), np.float64)
        self.top = 0

    def finalize(self, n_rows: int) -> None:
        """Write padded rows [top, top + n_rows) that lie in the frame to ``out``."""
        b, (height, width) = self.border, self.out.shape[:2]
        lo, hi = max(self.top, b), min(self.top + n_rows, b + height)
        if hi > lo:
            with np.errstate(invalid="ignore", divide="ignore"):  # divided in float64, stored as float32
                np.divide(self.acc[lo - self.top:hi - self.top, b:b + width],
                          self.weight[lo - self.top:hi - self.top, b:b + width],
                          out=self.out[lo - b:hi - b], casting="same_kind")

    def move_to(self, row: int) -> None:
        """Finish the rows above padded row ``row`` and start the band there."""
        shift = row - self.top
        if shift:
            self.finalize(shift)
            t = self.tile
            for buf in (self.acc, self.weight):
                buf[:t - shift] = buf[shift:]
                buf[t - shift:] = 0.0
            self.top = row

    def add_tile(self, tile_out: np.ndarray, weight: np.ndarray, col: int) -> None:
        """Add a denoised tile, times its weight, at padded column ``col``."""
        np.multiply(tile_out, weight, out=self.product)
        self.acc[:, col:col + self.tile] += self.product

    def add_weights(self, weights: _TileWeights, i: int, cols: list[int], used: list[int]) -> None:
        """Add the weights of the tiles ``used`` (column indices) of row ``i`` of tiles."""
        if len(used) == len(cols):
            self.weight += weights.row(i, cols, self.weight)
        else:
            for j0 in used:
                self.weight[:, cols[j0]:cols[j0] + self.tile] += weights.tile(i, j0)


def _accumulate_row(band: _Band, weights: _TileWeights, frames: tuple[np.ndarray, np.ndarray | None],
                    has_finite: np.ndarray | None, predict: Callable[..., np.ndarray], batch_size: int, i: int,
                    r: int, cols: list[int]) -> list[int]:
    """Denoise the tiles of row ``i`` (padded row ``r``) in batches into ``band``; returns the
    indices of the tiles that held data (tiles with no finite pixel are skipped).

    ``frames`` is the padded frame and its padded σ map (None for a model without one): both are
    cut at the same places and given to ``predict`` together."""
    t = band.tile
    padded, sigma = frames
    batch, sigmas, where, used = [], [], [], []
    for j, c in enumerate(cols):
        if has_finite is None or has_finite[r:r + t, c:c + t].any():  # skip masked-only tiles
            batch.append(padded[r:r + t, c:c + t])
            if sigma is not None:
                sigmas.append(sigma[r:r + t, c:c + t])
            where.append(j)
        if batch and (len(batch) == batch_size or j == len(cols) - 1):
            extra = (np.stack(sigmas),) if sigma is not None else ()
            result = np.asarray(predict(np.stack(batch), *extra), np.float32)
            for j0, tile_out in zip(where, result):
                band.add_tile(tile_out, weights.tile(i, j0), cols[j0])
            used += where
            batch, sigmas, where = [], [], []
    return used


# ----------------------------------------------------------------------------- domain
def guess_domain(data: np.ndarray, info) -> str:
    """``"linear"``, ``"stretched"`` or ``"magnetogram"`` from format, header, dtype and values.

    Integer display formats (8/16-bit TIFF, PNG, JPEG) are stretched; FITS is linear;
    a float TIFF or XISF is linear unless it lies in [0, 1] with a bright median (> 0.05), as
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
    if info.format in ("tiff", "xisf") and looks_stretched(data):
        return "stretched"
    return "linear"


def looks_stretched(data: np.ndarray) -> bool:
    """Float values in [0, 1] with a bright median (> 0.05): a stretched export, not linear data."""
    finite = data[np.isfinite(data)]
    return bool(finite.size and finite.min() >= 0 and finite.max() <= 1 and np.median(finite) > 0.05)


def adapt_channels(predict: Callable, model_channels: int, image_channels: int) -> Callable:
    """Run a mono model on each channel of a colour image, or a colour model on a mono image.

    A σ-map batch after the image batch (``predict(batch, sigma)``) is split or repeated alike.
    """
    if model_channels == image_channels:
        return predict
    if model_channels == 1:
        def per_channel(batch, *sigma):
            n, h, w, c = batch.shape

            def planes(a):
                return np.moveaxis(a, -1, 1).reshape(n * c, h, w, 1)

            out = np.asarray(predict(planes(batch), *map(planes, sigma))).reshape(n, c, h, w)
            return np.moveaxis(out, 1, -1)

        return per_channel
    if image_channels == 1:
        def via_colour(batch, *sigma):
            out = np.asarray(predict(*(np.repeat(a, model_channels, axis=-1) for a in (batch, *sigma))))
            return out.mean(axis=-1, keepdims=True)

        return via_colour
    raise AstroTFError(f"cannot run a {model_channels}-channel model on a {image_channels}-channel image")


def denoise_image(data: np.ndarray, model: LoadedModel, options: TileOptions, progress=None,
                  step: float | str | None = "auto", noise_sigma: np.ndarray | None = None) -> np.ndarray:
    """Denoise a (H, W, C) frame with a loaded model, handling channels and data range.

    ``noise_sigma``: the frame's per-pixel noise σ (same shape, data units) that a noise-conditioned
    model needs and any other refuses (:func:`astrotf.noise_map.frame_noise` makes it).

    ``step``: spacing of quantised input values (``io.ImageInfo.step``); ``"auto"`` finds it from the
    values (:func:`astrotf.quantise.value_grid`), None means continuous. A model that normalises each
    tile by its median and MAD (:attr:`LoadedModel.normalises_tiles`) gets a quantised frame dithered
    by one step first (:func:`astrotf.quantise.dither`, seeded): on integer frames whose noise is a
    few steps, it otherwise leaves up to 10 times more background noise (``tools/bench_quantised.py``).
    """
    if model.noise_conditioned != (noise_sigma is not None):
        msg = (f"model {model.name} is noise-conditioned: it needs the frame's noise sigma map (noise_sigma)"
               if model.noise_conditioned else f"model {model.name} is not noise-conditioned: it takes no noise_sigma")
        raise AstroTFError(msg)
    step = resolve_step(data, step) if model.normalises_tiles else None
    if step is not None:
        data = dither(data, step)
    predict = adapt_channels(model.predict, model.channels, data.shape[-1])
    if model.domain == "stretched":
        finite = data[np.isfinite(data)]
        if finite.size and (finite.min() < -1e-3 or finite.max() > 1 + 1e-3):
            log.warning("data outside [0, 1] given to a model for stretched data; values are clipped")
            data = np.clip(data, 0.0, 1.0)
    return denoise_tiled(data, predict, options, progress, keep_nonfinite=model.masks_nonfinite,
                         noise_sigma=noise_sigma)
