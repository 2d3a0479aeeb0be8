"""Read astronomical images as float32 arrays and write results back in the form they came in.

Data contract
-------------
:func:`read_image` returns ``(data, info)``:

* ``data`` is a C-contiguous float32 array shaped ``(H, W, C)`` with ``C`` 1 (mono) or 3 (RGB, in that
  order). Row 0 is the first row stored in the file; nothing is flipped, FITS included.
* 8- and 16-bit samples (TIFF, PNG, JPEG, XISF) are divided by ``info.scale`` (255 or 65535), so display
  images lie in [0, 1]. They are usually stretched, non-linear data (``info.is_linear`` is False).
  (XISF UInt32 samples likewise, by 2**32 - 1.)
* FITS data stay in physical units: BSCALE/BZERO applied, BLANK and NaN pixels as NaN, no normalisation
  (``info.scale`` is 1.0). Float TIFF and XISF samples are kept as they are. These count as linear data.
* An alpha plane is never part of ``data``: it is kept in ``info.alpha`` and written back unchanged.
* A FITS image's per-pixel uncertainty (an ``ERR``, ``VAR`` or ``IVAR`` extension of the same
  ``EXTVER``) is read on request, by :func:`read_uncertainty`, as an :class:`Uncertainty`.

:func:`write_image` undoes this with the :class:`ImageInfo`: same sample dtype and channel layout, and as
much of the format's metadata as the libraries can write (FITS header, BSCALE/BZERO/BLANK and tile
compression; TIFF planar configuration, compression, resolution and ICC profile; XISF FITS keywords,
properties, color space, bounds and pixel storage). Integer samples are
clipped to [0, 1] before scaling. Writes are atomic: a temporary file in the destination folder is
renamed over the target.

Every failure a user can cause raises :class:`ImageIOError`, whose message is one line
``"<path>: <problem>"``: a damaged file never escapes as a decoding library's own exception
(MemoryError excepted). This module does not import TensorFlow, so the CLI can use it before loading it.
"""

from __future__ import annotations

import logging
import os
import pathlib
import re
import secrets
import socket
from functools import partial

import numpy as np

from astrotf.io._common import ImageInfo, ImageIOError, Uncertainty, one_line
from astrotf.io.fits import (AUXILIARY_EXTNAMES, UNCERTAINTY_EXTNAMES, inherited_header, read_fits, read_uncertainty,
                              science_hdus, write_fits)
from astrotf.io.raster import read_cv2, read_tiff, write_cv2, write_tiff
from astrotf.io.xisf import read_xisf, write_xisf

__all__ = ["AUXILIARY_EXTNAMES", "SUPPORTED_SUFFIXES", "UNCERTAINTY_EXTNAMES", "ImageIOError", "ImageInfo",
           "Uncertainty", "format_of", "inherited_header", "list_images", "read_image", "read_uncertainty",
           "remove_stale_temporaries", "science_hdus", "write_image"]

logger = logging.getLogger(__name__)

_FORMATS = {
    ".fits": "fits", ".fit": "fits", ".fts": "fits", ".fits.gz": "fits", ".fit.gz": "fits",
    ".tif": "tiff", ".tiff": "tiff", ".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg", ".xisf": "xisf",
}
SUPPORTED_SUFFIXES: tuple[str, ...] = tuple(_FORMATS)
"""File name endings :func:`read_image` understands (matched case-insensitively)."""
_READERS = {"fits": read_fits, "tiff": read_tiff, "png": partial(read_cv2, fmt="png"),
            "jpeg": partial(read_cv2, fmt="jpeg"), "xisf": read_xisf}


def _suffix_of(path: pathlib.Path) -> str | None:
    """The supported suffix ``path`` ends with, lower-case, or None."""
    name = path.name.lower()
    return next((s for s in SUPPORTED_SUFFIXES if name.endswith(s) and len(name) > len(s)), None)


def format_of(path: str | os.PathLike) -> str | None:
    """The format a file of this name is read and written in (``"fits"``, ``"tiff"``, ``"png"``,
    ``"jpeg"``, ``"xisf"``), from its suffix; None for an unsupported one."""
    suffix = _suffix_of(pathlib.Path(path))
    return _FORMATS[suffix] if suffix else None


def read_image(path: str | os.PathLike, hdu: int | None = None) -> tuple[np.ndarray, ImageInfo]:
    """Read an image as float32 ``(H, W, C)`` data plus what is needed to write it back.

    Parameters
    ----------
    path : str or os.PathLike
        A FITS (``.fits``, ``.fit``, ``.fts``, optionally ``.gz``), TIFF, PNG, JPEG or XISF file. For FITS the
        first HDU with image data is used (primary, image or tile-compressed extension).
    hdu : int, optional
        FITS only: the index of the HDU to read instead (:func:`science_hdus` lists a file's images).

    Returns
    -------
    data : numpy.ndarray
        float32, shape (H, W, C) with C in {1, 3}, RGB order. Integer formats divided by ``info.scale``
        into [0, 1]; FITS in physical units with NaN for blank pixels; float TIFF and XISF as stored.
    info : ImageInfo
        Format, on-disk dtype and layout, FITS header, alpha plane and other write-back details.

    Raises
    ------
    ImageIOError
        If the file is missing, is a directory, has an unsupported suffix, cannot be decoded, is empty,
        or has an unsupported dtype or shape. Any exception of a decoding library on a damaged file
        becomes this error; only MemoryError passes through.
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
    if hdu is not None and fmt != "fits":
        raise ImageIOError(f"{path}: only FITS files have HDUs (asked for HDU {hdu})")
    try:
        data, info = read_fits(path, hdu) if hdu is not None else _READERS[fmt](path)
    except (ImageIOError, MemoryError):
        raise
    except Exception as exc:  # whatever a decoder raises on a damaged file (CfitsioException, zlib.error...)
        msg = f"{path}: cannot be read as {fmt.upper()} ({type(exc).__name__}: {one_line(exc)})"
        raise ImageIOError(msg) from exc
    if data.shape[0] == 0 or data.shape[1] == 0:
        raise ImageIOError(f"{path}: empty image ({data.shape[0]} x {data.shape[1]})")
    if data.ndim == 2:
        data = data[..., None]
    return np.ascontiguousarray(data, dtype=np.float32), info


def write_image(
    path: str | os.PathLike,
    data: np.ndarray,
    info: ImageInfo,
    *,
    history: list[str] | None = None,
    overwrite: bool = False,
    more: tuple = (),
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
        Lines recorded as FITS HISTORY cards (FITS, and XISF FITSKeyword elements; ignored by other
        formats).
    overwrite : bool
        Replace an existing file. Default False.
    more : tuple of (data, ImageInfo, history)
        FITS only: further images of the same source file, each written to its own HDU (the chips of
        a mosaic, read with ``read_image(path, hdu)``); one file, written atomically.

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
    data = _writable(path, data, info)
    more = tuple((_writable(path, d, i), i, list(h or [])) for d, i, h in more)
    if path.is_dir():
        raise ImageIOError(f"{path}: is a directory")
    if path.exists() and not overwrite:
        raise ImageIOError(f"{path}: already exists (use --force to overwrite)")
    if not path.parent.is_dir():
        raise ImageIOError(f"{path}: folder {path.parent} does not exist")

    suffix = _suffix_of(path)
    fmt = _FORMATS[suffix] if suffix else info.format
    if more and fmt != "fits":
        raise ImageIOError(f"{path}: only a FITS file holds several images")
    ending = path.name[len(path.name) - len(suffix):] if suffix else path.suffix
    tmp = path.with_name(f".{path.name[:len(path.name) - len(ending)]}.tmp-{_owner()}-{secrets.token_hex(4)}{ending}")
    try:
        _encode(fmt, tmp, data, info, list(history or []), more)
        os.replace(tmp, path)
    except OSError as exc:
        raise ImageIOError(f"{path}: cannot be written ({one_line(exc)})") from exc
    except (ImageIOError, MemoryError):
        raise
    except Exception as exc:  # an encoder refusing the data or metadata (tifffile, astropy, OpenCV)
        msg = f"{path}: cannot be written as {fmt.upper()} ({type(exc).__name__}: {one_line(exc)})"
        raise ImageIOError(msg) from exc
    finally:
        tmp.unlink(missing_ok=True)
    logger.info("wrote %s", path)
    return path


def _writable(path: pathlib.Path, data, info: ImageInfo) -> np.ndarray:
    """``data`` as float (H, W, C), C 1 or 3, matching ``info``'s alpha plane; else ImageIOError naming ``path``."""
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
    return data


def _owner() -> str:
    """``HOST-PID`` of this process, in the names of its temporary files."""
    return f"{re.sub(r'[^A-Za-z0-9]', '', socket.gethostname())}-{os.getpid()}"


def remove_stale_temporaries(folder: str | os.PathLike) -> int:
    """Delete the temporary files that :func:`write_image` calls of this machine left in ``folder``
    when their process was killed (a process that is still running keeps its own); returns how many."""
    host = _owner().rsplit("-", 1)[0]
    pattern = re.compile(rf"^\..*\.tmp-{re.escape(host)}-(\d+)-[0-9a-f]{{8}}")
    removed = 0
    for path in pathlib.Path(folder).iterdir() if pathlib.Path(folder).is_dir() else ():
        match = pattern.match(path.name)
        if match and not _running(int(match[1])):
            path.unlink(missing_ok=True)
            removed += 1
    return removed


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _encode(fmt: str, tmp: pathlib.Path, data: np.ndarray, info: ImageInfo, history: list[str], more: tuple) -> None:
    """Write (H, W, C) float ``data`` to ``tmp`` in format ``fmt``; ``history`` goes to FITS and XISF."""
    if fmt == "fits":
        write_fits(tmp, data, info, history, more)
    elif fmt == "tiff":
        write_tiff(tmp, data, info)
    elif fmt == "xisf":
        write_xisf(tmp, data, info, history)
    else:
        write_cv2(tmp, data, info, fmt)


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
