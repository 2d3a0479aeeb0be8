"""TIFF through tifffile, PNG and JPEG through OpenCV: 8/16-bit display data and float TIFF.

8- and 16-bit samples are divided by 255 or 65535; float TIFF samples are kept. An alpha plane is set
aside in ``info.alpha``. Writing keeps the TIFF planar configuration, compression, resolution and ICC
profile, and the RGB order (OpenCV's BGR is undone on reading and redone on writing).
"""

from __future__ import annotations

import logging
import math
import pathlib

import cv2
import numpy as np
import tifffile

from astrotf.io._common import ImageInfo, ImageIOError, alpha_for, one_line, samples_for
from astrotf.quantise import to_integers

logger = logging.getLogger(__name__)

TIFF_DTYPES = {np.dtype(t) for t in (np.uint8, np.uint16, np.float16, np.float32, np.float64)}
_TIFF_COLOURS = {tifffile.PHOTOMETRIC.MINISBLACK: 1, tifffile.PHOTOMETRIC.RGB: 3}
_JPEG_QUALITY = 95


def read_tiff(path: pathlib.Path) -> tuple[np.ndarray, ImageInfo]:
    """``(data, info)`` of the first page; integer samples divided by their maximum."""
    try:
        with tifffile.TiffFile(path) as tif:
            if len(tif.pages) > 1:
                logger.warning("%s: %d pages, only the first is used", path, len(tif.pages))
            page = tif.pages[0]
            _check_segments(path, page)
            data = page.asarray()
    except ImageIOError:
        raise
    except (tifffile.TiffFileError, OSError, ValueError, KeyError, IndexError) as exc:
        # KeyError: a codec (LZW, JPEG...) that needs the optional imagecodecs package.
        raise ImageIOError(f"{path}: cannot be read as TIFF ({one_line(exc)})") from exc
    if data.dtype not in TIFF_DTYPES:
        raise ImageIOError(f"{path}: unsupported dtype {data.dtype}")
    colours = _TIFF_COLOURS.get(page.photometric)
    if colours is None:
        raise ImageIOError(f"{path}: unsupported photometric interpretation {page.photometric.name}")
    samples = page.samplesperpixel
    if samples - colours not in (0, 1):
        msg = f"{path}: unsupported {samples} samples per pixel with photometric {page.photometric.name}"
        raise ImageIOError(msg)
    planar = samples > 1 and page.planarconfig == tifffile.PLANARCONFIG.SEPARATE
    if planar:
        data = np.moveaxis(data, 0, -1)
    if data.ndim != (2 if samples == 1 else 3):
        raise ImageIOError(f"{path}: unsupported layout, got shape {page.shape}")
    alpha = data[..., colours].copy() if samples > colours else None
    if samples > 1:
        data = data[..., :colours]
    extra = {"photometric": page.photometric, "planarconfig": page.planarconfig,
             "compression": page.compression, "extrasamples": page.extrasamples,
             "resolution": page.resolution, "resolutionunit": page.resolutionunit,
             "iccprofile": page.iccprofile}
    scale = float(np.iinfo(data.dtype).max) if data.dtype.kind == "u" else 1.0
    layout = "CHW" if planar else "HWC" if samples > 1 else "HW"
    info = ImageInfo(path, "tiff", data.dtype, colours, layout, scale, alpha=alpha, extra=extra)
    return data / np.float32(scale) if scale != 1.0 else data, info


def _check_segments(path: pathlib.Path, page: tifffile.TiffPage) -> None:
    """Refuse a page with fewer strips or tiles than its size needs (tifffile would fill each missing one
    with zeros, one at a time: tens of millions for a damaged ImageLength), or uncompressed pixels larger
    than the file or compressed beyond any codec (a damaged size that asks for gigabytes)."""
    size = path.stat().st_size
    stored = sum(page.databytecounts)
    # compressed: no codec packs real data 100000:1 (a constant frame can; we do not denoise those)
    if page.nbytes > (size if page.compression == tifffile.COMPRESSION.NONE else max(100_000 * stored, 1 << 28)):
        msg = (f"{path}: truncated or damaged TIFF, a {page.imagewidth} x {page.imagelength} image of "
               f"{page.nbytes} bytes from {stored} bytes of pixel data")
        raise ImageIOError(msg)
    needed = math.prod(page.chunked)
    if min(len(page.dataoffsets), len(page.databytecounts)) < needed:
        msg = (f"{path}: truncated or damaged TIFF, {len(page.dataoffsets)} of the {needed} strips or tiles "
               f"a {page.imagewidth} x {page.imagelength} image needs")
        raise ImageIOError(msg)


def read_cv2(path: pathlib.Path, fmt: str) -> tuple[np.ndarray, ImageInfo]:
    """``(data, info)`` of a PNG or JPEG (``fmt``), RGB order, divided by 255 or 65535."""
    try:  # imdecode of the bytes, not imread: works with non-ASCII paths on every platform
        data = cv2.imdecode(np.fromfile(path, np.uint8), cv2.IMREAD_UNCHANGED)
    except (cv2.error, OSError):  # cv2.error: empty file
        data = None
    if data is None:
        raise ImageIOError(f"{path}: cannot be read (not an image or corrupt)")
    if data.dtype not in (np.uint8, np.uint16):
        raise ImageIOError(f"{path}: unsupported dtype {data.dtype}")
    alpha = None
    if data.ndim == 3:  # OpenCV gives BGR or BGRA (grey + alpha PNG comes as BGRA)
        if data.shape[2] == 4:
            alpha = data[..., 3].copy()
        data = data[..., 2::-1]
    scale = float(np.iinfo(data.dtype).max)
    channels, layout = (3, "HWC") if data.ndim == 3 else (1, "HW")
    info = ImageInfo(path, fmt, data.dtype, channels, layout, scale, alpha=alpha)
    return data / np.float32(scale), info


def write_tiff(tmp: pathlib.Path, data: np.ndarray, info: ImageInfo) -> None:
    """Write (H, W, C) float ``data`` to ``tmp`` as TIFF in the dtype and layout of ``info``."""
    extra = info.extra if info.format == "tiff" else {}
    dtype = info.dtype if info.dtype in TIFF_DTYPES else np.dtype(np.float32)
    pixels = samples_for(data, info, dtype)
    with_alpha = pixels.shape[2] > data.shape[2]
    planar = pixels.shape[2] > 1 and extra.get("planarconfig") == tifffile.PLANARCONFIG.SEPARATE
    pixels = np.moveaxis(pixels, -1, 0) if planar else pixels[..., 0] if pixels.shape[2] == 1 else pixels
    options = {
        "photometric": "rgb" if data.shape[2] == 3 else "minisblack",
        "planarconfig": "separate" if planar else "contig",
        "extrasamples": (extra.get("extrasamples") or ("unassalpha",)) if with_alpha else None,
        "resolution": extra.get("resolution"),
        "resolutionunit": extra.get("resolutionunit"),
        "iccprofile": extra.get("iccprofile"),
        "metadata": None,
    }
    compression = extra.get("compression", tifffile.COMPRESSION.NONE)
    if compression != tifffile.COMPRESSION.NONE:
        try:
            tifffile.imwrite(tmp, pixels, compression=compression, **options)
            return
        except (KeyError, ValueError, ImportError) as exc:  # codec missing (imagecodecs) or not for dtype
            logger.warning("%s: cannot write %s compression (%s), output uncompressed",
                           info.path, compression.name, one_line(exc))
    tifffile.imwrite(tmp, pixels, **options)


def write_cv2(tmp: pathlib.Path, data: np.ndarray, info: ImageInfo, fmt: str) -> None:
    """Write (H, W, C) float ``data`` to ``tmp`` as PNG (8 or 16-bit, alpha kept) or 8-bit JPEG."""
    dtype = np.dtype(np.uint8 if fmt == "jpeg" or info.dtype == np.uint8 else np.uint16)
    pixels = to_integers(data, dtype, info.scale if dtype == info.dtype else float(np.iinfo(dtype).max))
    alpha = alpha_for(info, dtype) if fmt == "png" else None
    if info.alpha is not None and fmt == "jpeg":
        logger.warning("%s: alpha plane not written (JPEG has no alpha channel)", info.path)
    if alpha is not None and pixels.shape[2] == 1:  # OpenCV cannot write grey + alpha
        pixels = np.repeat(pixels, 3, axis=2)
    pixels = pixels[..., ::-1] if pixels.shape[2] == 3 else pixels[..., 0]  # RGB -> BGR
    if alpha is not None:
        pixels = np.concatenate([pixels, alpha[..., None]], axis=-1)
    params = [cv2.IMWRITE_JPEG_QUALITY, _JPEG_QUALITY] if fmt == "jpeg" else []
    ok, buffer = cv2.imencode(".jpg" if fmt == "jpeg" else ".png", np.ascontiguousarray(pixels), params)
    if not ok:
        raise OSError(f"OpenCV could not encode {fmt}")
    buffer.tofile(tmp)
