"""FITS through astropy: the first HDU with image data (primary, image or tile-compressed extension).

An ``ERR`` / ``VAR`` / ``IVAR`` extension beside it is the image's per-pixel uncertainty
(:func:`read_uncertainty`), which noise-conditioned models take as their σ map.

Data stay in physical units: BSCALE/BZERO applied, BLANK and NaN pixels as NaN. Writing keeps the
header, BITPIX, BSCALE/BZERO/BLANK, tile compression, checksums and the file's other extensions.
"""

from __future__ import annotations

import logging
import pathlib

import numpy as np
from astropy.io import fits

from astrotf.io._common import ImageInfo, ImageIOError, Uncertainty, one_line
from astrotf.quantise import to_fits_integers

logger = logging.getLogger(__name__)

FITS_DTYPES = {8: np.uint8, 16: np.int16, 32: np.int32, 64: np.int64, -32: np.float32, -64: np.float64}
#: ``EXTNAME`` of the extensions that hold an image's per-pixel uncertainty, and what they hold.
UNCERTAINTY_EXTNAMES = {"ERR": "sigma", "ERROR": "sigma", "SIGMA": "sigma", "STDDEV": "sigma", "UNCERT": "sigma",
                        "VAR": "variance", "VARIANCE": "variance", "IVAR": "inverse variance",
                        "INVVAR": "inverse variance"}
#: ``EXTNAME`` of image extensions that describe an image rather than hold one (never denoised).
AUXILIARY_EXTNAMES = frozenset({"DQ", "MASK", "BPM", "FLAGS", "WHT", "WEIGHT", "EXP", "EXPMAP", "CTX", "CON", "SAMP",
                                "TIME", "SKYFIT", "OBJMASK"})
# Cards astropy derives from the data, or that would be wrong once the data change.
FITS_STRUCTURAL = {"SIMPLE", "XTENSION", "BITPIX", "EXTEND", "PCOUNT", "GCOUNT", "GROUPS",
                   "BSCALE", "BZERO", "BLANK", "CHECKSUM", "DATASUM"}


def read_fits(path: pathlib.Path, hdu: int | None = None) -> tuple[np.ndarray, ImageInfo]:
    """``(data, info)`` of the first HDU with image data (or of HDU ``hdu``); ``data`` (H, W) or (H, W, C),
    physical units."""
    found = None
    try:
        with fits.open(path, memmap=False) as hdul:
            offsets = set()
            for index, item in enumerate(hdul):
                # A header whose sizes add up to a negative data size makes astropy read the same
                # corrupted HDU again and again, without end: stop at the first repeat.
                offset = getattr(item, "_header_offset", None)
                if offset is not None and offset in offsets:
                    raise ImageIOError(f"{path}: corrupted FITS header of HDU {index - 1} (at byte {offset})")
                offsets.add(offset)
                if hdu is not None and index != hdu:
                    continue
                if item.is_image and item.header.get("NAXIS", 0) > 0:
                    # Copy before touching .data: astropy rewrites BITPIX/BSCALE/BZERO once it scales.
                    header = item.header.copy()
                    if item.data is None:
                        continue
                    compression = None
                    if isinstance(item, fits.CompImageHDU):
                        compression = {"compression_type": item.compression_type,
                                       "quantize_level": item.quantize_level,
                                       "quantize_method": item.quantize_method}
                    primary = hdul[0].header.copy() if index > 0 else None
                    found = index, header, item.data, compression
                    break
    except ImageIOError:
        raise
    except (OSError, ValueError, TypeError, IndexError, KeyError, EOFError) as exc:
        msg = f"{path}: not a valid FITS file or truncated ({one_line(exc)})"
        raise ImageIOError(msg) from exc
    if found is None:
        raise ImageIOError(f"{path}: no image data in " + (f"HDU {hdu}" if hdu is not None else "any HDU"))
    index, header, raw, compression = found
    bitpix = header["BITPIX"]
    bscale, bzero, blank = header.get("BSCALE", 1.0), header.get("BZERO", 0.0), header.get("BLANK")
    data = raw.astype(np.float32)
    if raw.dtype.kind in "iu" and blank is not None:
        # astropy maps BLANK to NaN itself, except for pseudo-unsigned data (BZERO = 2**(n-1)).
        data[raw == int(blank) + int(bzero)] = np.nan

    data, layout, lead_axes = _planes(data, path)
    extra = {"bitpix": bitpix, "bscale": bscale, "bzero": bzero, "blank": blank, "lead_axes": lead_axes,
             "compression": compression, "checksum": "CHECKSUM" in header, "primary_header": primary}
    channels = 1 if data.ndim == 2 else data.shape[2]
    info = ImageInfo(path, "fits", np.dtype(FITS_DTYPES[bitpix]), channels, layout, 1.0, header, index,
                     extra=extra)
    return data, info


def _planes(data: np.ndarray, path: pathlib.Path) -> tuple[np.ndarray, str, tuple]:
    """``(data as (H, W) or (H, W, C), layout, lead_axes)`` of an HDU's array."""
    lead_axes = ()
    if data.ndim > 3 and all(n == 1 for n in data.shape[:-3]):  # e.g. radio (1, 1, H, W)
        lead_axes, data = data.shape[:-3], data.reshape(data.shape[-3:])
    if data.ndim == 2:
        return data, "HW", lead_axes
    if data.ndim == 3 and data.shape[0] in (1, 3):
        return np.moveaxis(data, 0, -1), "CHW", lead_axes
    msg = f"{path}: unsupported layout, expected 2-D or a 3-plane cube, got shape {data.shape}"
    raise ImageIOError(msg)


def science_hdus(info: ImageInfo) -> list[int]:
    """Indices of the HDUs of the file ``info`` was read from that hold images to denoise, in file order.

    The ``SCI`` extensions where the file names any (HST, JWST, Gemini: one per chip), else every image
    HDU with data whose ``EXTNAME`` does not mark an uncertainty (:data:`UNCERTAINTY_EXTNAMES`) or a map
    of quality, weights or exposure (:data:`AUXILIARY_EXTNAMES`): the CCDs of a mosaic camera. Only
    images of ``info``'s number of axes are counted. ``[info.hdu_index]`` for a file of another format.

    Raises
    ------
    ImageIOError
        The file cannot be read again (one line naming it).
    """
    if info.format != "fits":
        return [info.hdu_index]
    try:
        with fits.open(info.path, memmap=False) as hdul:
            images = [(index, str(h.header.get("EXTNAME", "")).strip().upper()) for index, h in enumerate(hdul)
                      if h.is_image and h.header.get("NAXIS", 0) == info.header.get("NAXIS")]
    except (OSError, ValueError, TypeError, IndexError, KeyError, EOFError) as exc:
        raise ImageIOError(f"{info.path}: not a valid FITS file or truncated ({one_line(exc)})") from exc
    if any(name == "SCI" for _, name in images):
        return [index for index, name in images if name == "SCI"]
    return [index for index, name in images if name not in UNCERTAINTY_EXTNAMES and name not in AUXILIARY_EXTNAMES]


def inherited_header(info: ImageInfo):
    """The image's header with the keywords of the file's primary header that it lacks (the FITS
    ``INHERIT`` convention), or the image's own header where there is nothing to inherit.

    In a multi-extension file the instrument keywords often live in the primary header only: HST's
    ``CCDGAIN``, ``ATODGAIN``, ``READNSE`` and ``EXPTIME``, for instance. An extension with
    ``INHERIT = F`` inherits nothing.
    """
    primary = info.extra.get("primary_header") if info.format == "fits" else None
    if primary is None or info.header is None or info.header.get("INHERIT", True) is False:
        return info.header
    merged = fits.Header([card for card in primary.cards if card.keyword not in FITS_STRUCTURAL
                          and not card.keyword.startswith("NAXIS") and card.keyword not in ("COMMENT", "HISTORY", "")])
    merged.update(info.header)
    return merged


def read_uncertainty(info: ImageInfo) -> Uncertainty | None:
    """The per-pixel uncertainty stored beside the image of a FITS file, or None.

    It is the first image extension whose ``EXTNAME`` is a key of :data:`UNCERTAINTY_EXTNAMES` (``ERR``
    of HST, ``VAR`` of Gemini, ``IVAR`` ...), with the image's ``EXTVER`` (1 when absent) and shape.
    An extension of that name but another shape is skipped with a logged line.

    Returns
    -------
    Uncertainty or None
        ``values`` (H, W, C) float32, laid out like the image :func:`read_fits` returned.

    Raises
    ------
    ImageIOError
        The file cannot be read again (one line naming it).
    """
    if info.format != "fits":
        return None
    extver = (info.header or {}).get("EXTVER", 1)
    try:
        with fits.open(info.path, memmap=False) as hdul:
            shape = hdul[info.hdu_index].shape
            for index, hdu in enumerate(hdul):
                name = str(hdu.header.get("EXTNAME", "")).strip().upper()
                if index == info.hdu_index or name not in UNCERTAINTY_EXTNAMES or not hdu.is_image:
                    continue
                if hdu.header.get("EXTVER", 1) != extver:
                    continue
                if hdu.shape != shape:
                    logger.warning("%s: %s extension (HDU %d) is shaped %s, the image %s; not used", info.path,
                                   name, index, hdu.shape, shape)
                    continue
                values, _, _ = _planes(np.asarray(hdu.data, dtype=np.float32), info.path)
                values = values if values.ndim == 3 else values[..., None]
                source = f"{name} extension (HDU {index}" + (f", EXTVER {extver})" if "EXTVER" in hdu.header else ")")
                return Uncertainty(values, UNCERTAINTY_EXTNAMES[name], source)
    except (OSError, ValueError, TypeError, IndexError, KeyError, EOFError) as exc:
        raise ImageIOError(f"{info.path}: uncertainty extension not readable ({one_line(exc)})") from exc
    return None


def write_fits(tmp: pathlib.Path, data: np.ndarray, info: ImageInfo, history: list[str], more: tuple = ()) -> None:
    """Write (H, W, C) float ``data`` to ``tmp`` as FITS with the BITPIX, scaling and header of ``info``.

    The file has every HDU of ``info``'s source file, in its order, with the image at ``info.hdu_index``
    replaced; ``more`` holds ``(data, info, history)`` of further images of that file to replace (the
    chips of a mosaic). Without a readable source the images follow an empty primary HDU, or the one
    image (uncompressed) is the primary HDU.
    """
    parts = [(data, info, history), *more]
    hdus = _source_hdus(info, {part.hdu_index for _, part, _ in parts})
    if hdus:
        places = [part.hdu_index for _, part, _ in parts]
    else:  # nothing to copy: one uncompressed image is the primary HDU, else the images follow an empty one
        compressed = info.format == "fits" and info.extra.get("compression")
        places = [1 if compressed else 0] if len(parts) == 1 else list(range(1, len(parts) + 1))
        hdus = [None if places[0] == 0 else fits.PrimaryHDU()] + [None] * max(places)
    for (pixels, part, lines), index in zip(parts, places):
        hdus[index] = _image_hdu(pixels, part, lines, primary=index == 0)
    checksum = info.format == "fits" and info.extra.get("checksum", False)
    fits.HDUList(hdus).writeto(tmp, output_verify="silentfix", checksum=checksum)


def _image_hdu(data: np.ndarray, info: ImageInfo, history: list[str], primary: bool):
    """The HDU of one image: ``info``'s header (structural cards made anew), BITPIX, scaling, compression."""
    extra = info.extra if info.format == "fits" else {}
    header = info.header.copy() if info.header is not None else fits.Header()
    for key in {k for k in header if k in FITS_STRUCTURAL or k.startswith("NAXIS")}:
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
            pixels = to_fits_integers(pixels, FITS_DTYPES[bitpix], bscale, bzero, blank)
            if blank is not None:
                scaling["BLANK"] = blank
            if (bscale, bzero) != (1, 0):
                scaling.update(BSCALE=bscale, BZERO=bzero)
    pixels = pixels.astype(FITS_DTYPES[bitpix], copy=False)
    for line in history:
        header.add_history(line)
    compression = extra.get("compression")
    if compression:
        hdu = fits.CompImageHDU(pixels, header, **compression)
    else:
        hdu = fits.PrimaryHDU(pixels, header) if primary else fits.ImageHDU(pixels, header)
    # Set after construction: astropy drops scaling cards passed in with the header, and then writes
    # the integer array as the raw stored values.
    for key, value in scaling.items():
        hdu.header[key] = value
    return hdu


def _source_hdus(info: ImageInfo, replaced: set[int]) -> list:
    """Copies of every HDU of the source file, in their order, None at the indices in ``replaced`` (the
    caller's images: never read again); an empty list for a source that is not a readable FITS file,
    or for ``info.extra["standalone"]`` (a file of its own, such as a noise map, which copies nothing).

    Nothing of the input is lost: the primary header of an image read from an extension (an HST or
    compressed file), an uncertainty, a data-quality plane or a catalogue all travel to the output,
    where they were.
    """
    if info.format != "fits" or not info.path.is_file() or info.extra.get("standalone"):
        return []
    try:
        with fits.open(info.path, lazy_load_hdus=False) as source:
            return [None if index in replaced else h.copy() for index, h in enumerate(source)]
    except (OSError, ValueError) as err:
        logger.warning("%s: extensions not copied to the output (%s)", info.path, one_line(err))
        return []
