"""Read astronomical images as float32 arrays and write results back in the form they came in.

Data contract
-------------
:func:`read_image` returns ``(data, info)``:

* ``data`` is a C-contiguous float32 array shaped ``(H, W, C)`` with ``C`` 1 (mono) or 3 (RGB, in that
  order). Row 0 is the first row stored in the file; nothing is flipped, FITS included.
* 8- and 16-bit samples (TIFF, PNG, JPEG) are divided by ``info.scale`` (255 or 65535), so display images
  lie in [0, 1]. They are usually stretched, non-linear data (``info.is_linear`` is False).
* FITS data stay in physical units: BSCALE/BZERO applied, BLANK and NaN pixels as NaN, no normalisation
  (``info.scale`` is 1.0). Float TIFF samples are kept as they are. Both count as linear data.
* An alpha plane is never part of ``data``: it is kept in ``info.alpha`` and written back unchanged.

:func:`write_image` undoes this with the :class:`ImageInfo`: same sample dtype and channel layout, and as
much of the format's metadata as the libraries can write (FITS header, BSCALE/BZERO/BLANK and tile
compression; TIFF planar configuration, compression, resolution and ICC profile). Integer samples are
clipped to [0, 1] before scaling. Writes are atomic: a temporary file in the destination folder is
renamed over the target.

Every failure a user can cause raises :class:`ImageIOError`, whose message is one line
``"<path>: <problem>"``. This module does not import TensorFlow, so the CLI can use it before loading it.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import pathlib
import secrets

import cv2
import numpy as np
import tifffile
from astropy.io import fits

from astrotf.errors import AstroTFError
from astrotf.quantise import to_fits_integers, to_integers

logger = logging.getLogger(__name__)

_FORMATS = {
    ".fits": "fits", ".fit": "fits", ".fts": "fits", ".fits.gz": "fits", ".fit.gz": "fits",
    ".tif": "tiff", ".tiff": "tiff", ".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg",
}
SUPPORTED_SUFFIXES: tuple[str, ...] = tuple(_FORMATS)
"""File name endings :func:`read_image` understands (matched case-insensitively)."""

_FITS_DTYPES = {8: np.uint8, 16: np.int16, 32: np.int32, 64: np.int64, -32: np.float32, -64: np.float64}
# Cards astropy derives from the data, or that would be wrong once the data change.
_FITS_STRUCTURAL = {"SIMPLE", "XTENSION", "BITPIX", "EXTEND", "PCOUNT", "GCOUNT", "GROUPS",
                    "BSCALE", "BZERO", "BLANK", "CHECKSUM", "DATASUM"}
_TIFF_DTYPES = {np.dtype(t) for t in (np.uint8, np.uint16, np.float16, np.float32, np.float64)}
_TIFF_COLOURS = {tifffile.PHOTOMETRIC.MINISBLACK: 1, tifffile.PHOTOMETRIC.RGB: 3}
_JPEG_QUALITY = 95


class ImageIOError(AstroTFError):
    """An image file cannot be read or written; the message is one line ``"<path>: <problem>"``."""


@dataclasses.dataclass
class ImageInfo:
    """What :func:`read_image` learnt about a file: enough to write a result back in the same form.

    Attributes
    ----------
    path : pathlib.Path
        The file that was read.
    format : str
        ``"fits"``, ``"tiff"``, ``"png"`` or ``"jpeg"``.
    dtype : numpy.dtype
        Sample dtype on disk (for FITS the BITPIX type, before BSCALE/BZERO).
    channels : int
        Colour channels in the returned array, 1 or 3; alpha excluded.
    layout : str
        How the colour axis sits on disk: ``"HW"`` (2-D), ``"HWC"`` (interleaved) or ``"CHW"``
        (FITS cube, planar TIFF).
    scale : float
        Divisor that mapped integer samples to [0, 1] (255, 65535); 1.0 for float data and for all FITS.
    header : astropy.io.fits.Header or None
        Copy of the FITS header of the image HDU, as stored (before astropy applies BSCALE/BZERO).
    hdu_index : int
        Index of the HDU that held the image.
    alpha : numpy.ndarray or None
        Alpha plane, shape (H, W), in its on-disk dtype.
    extra : dict
        Format details needed to write back: FITS ``bitpix``, ``bscale``, ``bzero``, ``blank``,
        ``lead_axes``, ``compression``, ``checksum``; TIFF ``photometric``, ``planarconfig``,
        ``compression``, ``extrasamples``, ``resolution``, ``resolutionunit``, ``iccprofile``.
    """

    path: pathlib.Path
    format: str
    dtype: np.dtype
    channels: int
    layout: str
    scale: float
    header: fits.Header | None = None
    hdu_index: int = 0
    alpha: np.ndarray | None = None
    extra: dict = dataclasses.field(default_factory=dict)

    @property
    def is_integer(self) -> bool:
        """Whether the samples on disk are integers (FITS: before BSCALE/BZERO)."""
        return bool(np.issubdtype(self.dtype, np.integer))

    @property
    def step(self) -> float | None:
        """Spacing of the values :func:`read_image` returned, for integer samples: BSCALE (FITS) or
        ``1 / scale`` (8/16-bit); None for float samples."""
        if not self.is_integer:
            return None
        if self.format == "fits":
            return float(abs(self.extra.get("bscale", 1.0))) or None
        return 1.0 / self.scale

    @property
    def is_linear(self) -> bool:
        """Guess of the data domain: True for FITS and float TIFF (linear physical data), False for
        8/16-bit display formats (stretched)."""
        return self.format == "fits" or (self.format == "tiff" and not self.is_integer)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _suffix_of(path: pathlib.Path) -> str | None:
    """The supported suffix ``path`` ends with, lower-case, or None."""
    name = path.name.lower()
    return next((s for s in SUPPORTED_SUFFIXES if name.endswith(s) and len(name) > len(s)), None)


def format_of(path: str | os.PathLike) -> str | None:
    """The format a file of this name is read and written in (``"fits"``, ``"tiff"``, ``"png"``,
    ``"jpeg"``), from its suffix; None for an unsupported one."""
    suffix = _suffix_of(pathlib.Path(path))
    return _FORMATS[suffix] if suffix else None


def read_image(path: str | os.PathLike) -> tuple[np.ndarray, ImageInfo]:
    """Read an image as float32 ``(H, W, C)`` data plus what is needed to write it back.

    Parameters
    ----------
    path : str or os.PathLike
        A FITS (``.fits``, ``.fit``, ``.fts``, optionally ``.gz``), TIFF, PNG or JPEG file. For FITS the
        first HDU with image data is used (primary, image or tile-compressed extension).

    Returns
    -------
    data : numpy.ndarray
        float32, shape (H, W, C) with C in {1, 3}, RGB order. Integer formats divided by ``info.scale``
        into [0, 1]; FITS in physical units with NaN for blank pixels; float TIFF as stored.
    info : ImageInfo
        Format, on-disk dtype and layout, FITS header, alpha plane and other write-back details.

    Raises
    ------
    ImageIOError
        If the file is missing, is a directory, has an unsupported suffix, cannot be decoded, is empty,
        or has an unsupported dtype or shape.
    """
    path = pathlib.Path(path)
    suffix = _suffix_of(path)
    if suffix is None:
        msg = f"{path}: unsupported file type, expected one of {' '.join(SUPPORTED_SUFFIXES)}"
        raise ImageIOError(msg)
    if not path.exists():
        raise ImageIOError(f"{path}: no such file")
    if path.is_dir():
        raise ImageIOError(f"{path}: is a directory, not an image file")
    fmt = _FORMATS[suffix]
    if fmt == "fits":
        data, info = _read_fits(path)
    else:
        data, info = _read_tiff(path) if fmt == "tiff" else _read_cv2(path, fmt)
    if data.shape[0] == 0 or data.shape[1] == 0:
        raise ImageIOError(f"{path}: empty image ({data.shape[0]} x {data.shape[1]})")
    if data.ndim == 2:
        data = data[..., None]
    return np.ascontiguousarray(data, dtype=np.float32), info


def _read_fits(path: pathlib.Path) -> tuple[np.ndarray, ImageInfo]:
    found = None
    try:
        with fits.open(path, memmap=False) as hdul:
            for index, hdu in enumerate(hdul):
                if hdu.is_image and hdu.header.get("NAXIS", 0) > 0:
                    # Copy before touching .data: astropy rewrites BITPIX/BSCALE/BZERO once it scales.
                    header = hdu.header.copy()
                    if hdu.data is None:
                        continue
                    compression = None
                    if isinstance(hdu, fits.CompImageHDU):
                        compression = {"compression_type": hdu.compression_type,
                                       "quantize_level": hdu.quantize_level,
                                       "quantize_method": hdu.quantize_method}
                    found = index, header, hdu.data, compression
                    break
    except (OSError, ValueError, TypeError, IndexError, KeyError, EOFError) as exc:
        msg = f"{path}: not a valid FITS file or truncated ({_one_line(exc)})"
        raise ImageIOError(msg) from exc
    if found is None:
        raise ImageIOError(f"{path}: no image data in any HDU")
    index, header, raw, compression = found
    bitpix = header["BITPIX"]
    bscale, bzero, blank = header.get("BSCALE", 1.0), header.get("BZERO", 0.0), header.get("BLANK")
    data = raw.astype(np.float32)
    if raw.dtype.kind in "iu" and blank is not None:
        # astropy maps BLANK to NaN itself, except for pseudo-unsigned data (BZERO = 2**(n-1)).
        data[raw == int(blank) + int(bzero)] = np.nan

    lead_axes = ()
    if data.ndim > 3 and all(n == 1 for n in data.shape[:-3]):  # e.g. radio (1, 1, H, W)
        lead_axes, data = data.shape[:-3], data.reshape(data.shape[-3:])
    if data.ndim == 2:
        layout = "HW"
    elif data.ndim == 3 and data.shape[0] in (1, 3):
        layout, data = "CHW", np.moveaxis(data, 0, -1)
    else:
        msg = f"{path}: unsupported layout, expected 2-D or a 3-plane cube, got shape {raw.shape}"
        raise ImageIOError(msg)
    extra = {"bitpix": bitpix, "bscale": bscale, "bzero": bzero, "blank": blank, "lead_axes": lead_axes,
             "compression": compression, "checksum": "CHECKSUM" in header}
    channels = 1 if data.ndim == 2 else data.shape[2]
    info = ImageInfo(path, "fits", np.dtype(_FITS_DTYPES[bitpix]), channels, layout, 1.0, header, index,
                     extra=extra)
    return data, info


def _read_tiff(path: pathlib.Path) -> tuple[np.ndarray, ImageInfo]:
    try:
        with tifffile.TiffFile(path) as tif:
            if len(tif.pages) > 1:
                logger.warning("%s: %d pages, only the first is used", path, len(tif.pages))
            page = tif.pages[0]
            data = page.asarray()
    except (tifffile.TiffFileError, OSError, ValueError, KeyError, IndexError) as exc:
        # KeyError: a codec (LZW, JPEG...) that needs the optional imagecodecs package.
        raise ImageIOError(f"{path}: cannot be read as TIFF ({_one_line(exc)})") from exc
    if data.dtype not in _TIFF_DTYPES:
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


def _read_cv2(path: pathlib.Path, fmt: str) -> tuple[np.ndarray, ImageInfo]:
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


def write_image(
    path: str | os.PathLike,
    data: np.ndarray,
    info: ImageInfo,
    *,
    history: list[str] | None = None,
    overwrite: bool = False,
) -> pathlib.Path:
    """Write float data in the format, sample dtype and layout that ``info`` describes.

    Parameters
    ----------
    path : str or os.PathLike
        Destination. Its suffix chooses the format when it is a supported one, otherwise ``info.format``
        is used. Writing to another format than the one read uses that format's natural dtype (float32
        FITS, 8-bit JPEG, 16-bit PNG unless the source was 8-bit).
    data : numpy.ndarray
        Floating point, shape (H, W) or (H, W, C) with C in {1, 3}: the contract of :func:`read_image`
        (integer formats are clipped to [0, 1] then scaled; NaN becomes 0, or BLANK for integer FITS).
    info : ImageInfo
        From :func:`read_image` of the source image.
    history : list of str, optional
        Lines recorded as FITS HISTORY cards (ignored by other formats).
    overwrite : bool
        Replace an existing file. Default False.

    Returns
    -------
    pathlib.Path
        The written file.

    Raises
    ------
    ImageIOError
        If the file exists and ``overwrite`` is False, the folder is missing, ``data`` has the wrong
        shape or dtype, or the write fails.
    """
    path = pathlib.Path(path)
    data = np.asarray(data)
    shape = data.shape
    if data.ndim == 2:
        data = data[..., None]
    if data.ndim != 3 or data.shape[2] not in (1, 3) or not np.issubdtype(data.dtype, np.floating):
        msg = (f"{path}: cannot write data of shape {shape} and dtype {data.dtype}, "
               "expected float (H, W) or (H, W, C) with C 1 or 3")
        raise ImageIOError(msg)
    if info.alpha is not None and info.alpha.shape != data.shape[:2]:
        msg = f"{path}: alpha plane of shape {info.alpha.shape} does not match data of shape {shape}"
        raise ImageIOError(msg)
    if path.is_dir():
        raise ImageIOError(f"{path}: is a directory")
    if path.exists() and not overwrite:
        raise ImageIOError(f"{path}: already exists (use --force to overwrite)")
    if not path.parent.is_dir():
        raise ImageIOError(f"{path}: folder {path.parent} does not exist")

    suffix = _suffix_of(path)
    fmt = _FORMATS[suffix] if suffix else info.format
    ending = path.name[len(path.name) - len(suffix):] if suffix else path.suffix
    tmp = path.with_name(f".{path.name[:len(path.name) - len(ending)]}.tmp-{secrets.token_hex(4)}{ending}")
    try:
        if fmt == "fits":
            _write_fits(tmp, data, info, list(history or []))
        elif fmt == "tiff":
            _write_tiff(tmp, data, info)
        else:
            _write_cv2(tmp, data, info, fmt)
        os.replace(tmp, path)
    except OSError as exc:
        raise ImageIOError(f"{path}: cannot be written ({_one_line(exc)})") from exc
    finally:
        tmp.unlink(missing_ok=True)
    logger.info("wrote %s", path)
    return path


def _alpha_for(info: ImageInfo, dtype: np.dtype) -> np.ndarray | None:
    """info.alpha if it can go into a file of sample ``dtype``, else None (with a warning)."""
    if info.alpha is not None and info.alpha.dtype != dtype:
        logger.warning("%s: alpha plane of dtype %s not written (output samples are %s)",
                       info.path, info.alpha.dtype, dtype)
        return None
    return info.alpha


def _write_fits(tmp: pathlib.Path, data: np.ndarray, info: ImageInfo, history: list[str]) -> None:
    extra = info.extra if info.format == "fits" else {}
    header = info.header.copy() if info.header is not None else fits.Header()
    for key in {k for k in header if k in _FITS_STRUCTURAL or k.startswith("NAXIS")}:
        header.remove(key, remove_all=True)
    pixels = np.moveaxis(data, -1, 0)
    if pixels.shape[0] == 1 and info.layout != "CHW":
        pixels = pixels[0]
    elif extra.get("lead_axes"):
        pixels = pixels.reshape(extra["lead_axes"] + pixels.shape)

    bitpix = extra.get("bitpix", -64 if info.dtype == np.float64 else -32)
    scaling = {}
    if bitpix > 0:
        bscale, bzero, blank = extra["bscale"], extra["bzero"], extra["blank"]
        if blank is None and np.isnan(pixels).any():
            note = f"astrotf: NaN pixels and no BLANK, written as float32 instead of BITPIX = {bitpix}"
            logger.warning("%s: %s", info.path, note)
            history.append(note)
            bitpix = -32
        else:
            pixels = to_fits_integers(pixels, _FITS_DTYPES[bitpix], bscale, bzero, blank)
            if blank is not None:
                scaling["BLANK"] = blank
            if (bscale, bzero) != (1, 0):
                scaling.update(BSCALE=bscale, BZERO=bzero)
    pixels = pixels.astype(_FITS_DTYPES[bitpix], copy=False)
    for line in history:
        header.add_history(line)

    compression = extra.get("compression")
    hdu = fits.CompImageHDU(pixels, header, **compression) if compression else fits.PrimaryHDU(pixels, header)
    # Set after construction: astropy drops scaling cards passed in with the header, and then writes
    # the integer array as the raw stored values.
    for key, value in scaling.items():
        hdu.header[key] = value
    hdul = fits.HDUList([fits.PrimaryHDU(), hdu] if compression else [hdu])
    hdul.extend(_other_extensions(info))
    hdul.writeto(tmp, output_verify="silentfix", checksum=extra.get("checksum", False))


def _other_extensions(info: ImageInfo) -> list:
    """Copies of the source file's extensions other than the image (tables, masks, weights).

    Nothing of the input is lost: a catalogue or a data-quality extension travels to the output.
    """
    if info.format != "fits" or not info.path.is_file():
        return []
    try:
        with fits.open(info.path, lazy_load_hdus=False) as source:
            return [h.copy() for i, h in enumerate(source)
                    if i != info.hdu_index and i > 0 and not (isinstance(h, fits.CompImageHDU) and i == 1)]
    except (OSError, ValueError) as err:
        logger.warning("%s: extensions not copied to the output (%s)", info.path, _one_line(err))
        return []


def _write_tiff(tmp: pathlib.Path, data: np.ndarray, info: ImageInfo) -> None:
    extra = info.extra if info.format == "tiff" else {}
    dtype = info.dtype if info.dtype in _TIFF_DTYPES else np.dtype(np.float32)
    if dtype.kind == "u":
        scale = info.scale if dtype == info.dtype else float(np.iinfo(dtype).max)
        pixels = to_integers(data, dtype, scale)
    else:
        pixels = data.astype(dtype)
    alpha = _alpha_for(info, dtype)
    if alpha is not None:
        pixels = np.concatenate([pixels, alpha[..., None]], axis=-1)
    planar = pixels.shape[2] > 1 and extra.get("planarconfig") == tifffile.PLANARCONFIG.SEPARATE
    pixels = np.moveaxis(pixels, -1, 0) if planar else pixels[..., 0] if pixels.shape[2] == 1 else pixels
    options = {
        "photometric": "rgb" if data.shape[2] == 3 else "minisblack",
        "planarconfig": "separate" if planar else "contig",
        "extrasamples": (extra.get("extrasamples") or ("unassalpha",)) if alpha is not None else None,
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
                           info.path, compression.name, _one_line(exc))
    tifffile.imwrite(tmp, pixels, **options)


def _write_cv2(tmp: pathlib.Path, data: np.ndarray, info: ImageInfo, fmt: str) -> None:
    dtype = np.dtype(np.uint8 if fmt == "jpeg" or info.dtype == np.uint8 else np.uint16)
    pixels = to_integers(data, dtype, info.scale if dtype == info.dtype else float(np.iinfo(dtype).max))
    alpha = _alpha_for(info, dtype) if fmt == "png" else None
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


def list_images(folder: str | os.PathLike) -> list[pathlib.Path]:
    """Supported image files in ``folder`` (not recursive), sorted by name; hidden files skipped.

    Parameters
    ----------
    folder : str or os.PathLike
        Folder to list.

    Returns
    -------
    list of pathlib.Path
        Files whose name ends with one of :data:`SUPPORTED_SUFFIXES` (any case).

    Raises
    ------
    ImageIOError
        If ``folder`` is not an existing directory.
    """
    folder = pathlib.Path(folder)
    if not folder.is_dir():
        raise ImageIOError(f"{folder}: not a folder")
    return sorted((p for p in folder.iterdir()
                   if not p.name.startswith(".") and _suffix_of(p) and p.is_file()), key=lambda p: p.name)
