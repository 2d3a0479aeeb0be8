"""XISF, PixInsight's Extensible Image Serialization Format (specification "XISF Version 1.0").

Our own reader and writer, on the standard library (``xml.etree``, ``struct``, ``base64``, ``hashlib``)
and NumPy: the ``xisf`` package on PyPI is GPL-3, which this BSD-3-Clause package cannot depend on.

What is read: a monolithic file (signature ``XISF0100``) with one 2-D image, grey or RGB plus at most
one alpha channel, samples UInt8, UInt16, UInt32, Float32 or Float64, planar (the default) or normal
pixel storage, in either byte order, its data block attached (``location="attachment:POS:SIZE"``),
inline (base64 or hex) or embedded, uncompressed; a ``checksum`` attribute is verified. Integer samples
are divided by their maximum (65535 for UInt16), as for 16-bit TIFF; float samples are kept as stored.

What is kept for writing back: the ``FITSKeyword`` elements (in ``info.header``, an astropy Header),
the image's other attributes (``id``, ``imageType``, ...), ``colorSpace``, ``bounds``, the pixel storage
and the image's other child elements (``Property``, ``Resolution``, ``ICCProfile``, ...) with their data
blocks, which are written back inline in base64. Output is little-endian and uncompressed, the image
block attached at a 4096-byte boundary.

Refused with an :class:`~astrotf.io.ImageIOError`: compressed blocks, more or fewer than one Image
element, 3-D images, complex or 64-bit integer samples, CIE L*a*b* colour, data outside the file, a bad
signature, a truncated header or data block, a checksum mismatch.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import hashlib
import logging
import pathlib
import struct
import warnings
import xml.etree.ElementTree as ET

import numpy as np
from astropy.io import fits
from astropy.io.fits.verify import VerifyWarning

from astrotf import __version__
from astrotf.io._common import ImageInfo, ImageIOError, samples_for
from astrotf.io.fits import FITS_STRUCTURAL

logger = logging.getLogger(__name__)

SIGNATURE = b"XISF0100"
NAMESPACE = "http://www.pixinsight.com/xisf"
_SAMPLE_FORMATS = {"UInt8": np.uint8, "UInt16": np.uint16, "UInt32": np.uint32,
                   "Float32": np.float32, "Float64": np.float64}
_FORMAT_NAMES = {np.dtype(t): name for name, t in _SAMPLE_FORMATS.items()}
_COLOURS = {"Gray": 1, "RGB": 3}
_CHECKSUMS = {"sha1": "sha1", "sha-1": "sha1", "sha256": "sha256", "sha-256": "sha256", "sha512": "sha512",
              "sha-512": "sha512", "sha3-256": "sha3_256", "sha3-512": "sha3_512"}
# Image attributes derived from the data or from how this writer stores it.
_DERIVED = {"geometry", "sampleFormat", "bounds", "colorSpace", "pixelStorage", "location", "byteOrder",
            "compression", "checksum", "subblocks"}
_ALIGNMENT = 4096


def _local(tag: str) -> str:
    """An element's tag without its ``{namespace}``."""
    return tag.rsplit("}", 1)[-1]


def read_xisf(path: pathlib.Path) -> tuple[np.ndarray, ImageInfo]:
    """``(data, info)`` of the file's one image: ``data`` (H, W) or (H, W, C), integers divided by their
    maximum, floats as stored."""
    with open(path, "rb") as file:
        root = _read_header(path, file)
        image = _the_image(path, root)
        width, height, channels, colours = _geometry(path, image)
        name = image.get("sampleFormat")
        if name not in _SAMPLE_FORMATS:
            raise ImageIOError(f"{path}: unsupported XISF sample format {name}")
        dtype = np.dtype(_SAMPLE_FORMATS[name])
        storage = image.get("pixelStorage", "Planar")
        if storage not in ("Planar", "Normal"):
            raise ImageIOError(f"{path}: unsupported XISF pixel storage {storage}")
        order = image.get("byteOrder", "little")
        if order not in ("little", "big"):
            raise ImageIOError(f"{path}: unsupported XISF byte order {order}")
        block = _data_block(path, file, image, width * height * channels * dtype.itemsize)
        elements = [_kept_element(path, file, child) for child in image
                    if _local(child.tag) not in ("FITSKeyword", "Data")]
    samples = np.frombuffer(block, dtype.newbyteorder(">" if order == "big" else "<"))
    samples = samples.astype(dtype)
    if storage == "Planar":
        samples = np.moveaxis(samples.reshape(channels, height, width), 0, -1)
    else:
        samples = samples.reshape(height, width, channels)
    alpha = samples[..., colours].copy() if channels > colours else None
    data = samples[..., 0] if colours == 1 else samples[..., :3]
    extra = {"color_space": image.get("colorSpace", "Gray"), "bounds": _bounds(path, image.get("bounds")),
             "pixel_storage": storage, "elements": [e for e in elements if e is not None],
             "attributes": {k: v for k, v in image.attrib.items() if k not in _DERIVED}}
    scale = float(np.iinfo(dtype).max) if dtype.kind == "u" else 1.0
    layout = "HW" if channels == 1 else "CHW" if storage == "Planar" else "HWC"
    info = ImageInfo(path, "xisf", dtype, colours, layout, scale, _keywords(path, image), alpha=alpha, extra=extra)
    return data / np.float32(scale) if scale != 1.0 else data, info


def _read_header(path: pathlib.Path, file) -> ET.Element:
    """The root element of the XML header, after the signature and length are checked."""
    start = file.read(16)
    if len(start) < 16 or start[:8] != SIGNATURE:
        raise ImageIOError(f"{path}: not a monolithic XISF 1.0 file (bad signature)")
    (length,) = struct.unpack("<I", start[8:12])
    if 16 + length > path.stat().st_size:
        raise ImageIOError(f"{path}: truncated XISF header ({length} bytes announced)")
    text = file.read(length)
    try:
        root = ET.fromstring(text)
    except ET.ParseError as exc:
        raise ImageIOError(f"{path}: invalid XISF header XML ({exc})") from exc
    if _local(root.tag) != "xisf":
        raise ImageIOError(f"{path}: XISF header root element is <{_local(root.tag)}>, not <xisf>")
    return root


def _the_image(path: pathlib.Path, root: ET.Element) -> ET.Element:
    """The one Image element (more than one, or none, is refused)."""
    images = [child for child in root if _local(child.tag) == "Image"]
    if len(images) != 1:
        what = "no Image element" if not images else f"{len(images)} Image elements, only one is supported"
        raise ImageIOError(f"{path}: XISF file with {what}")
    return images[0]


def _geometry(path: pathlib.Path, image: ET.Element) -> tuple[int, int, int, int]:
    """``(width, height, channels, colour channels)`` from ``geometry`` and ``colorSpace``."""
    geometry = image.get("geometry", "")
    try:
        sizes = [int(n) for n in geometry.split(":")]
    except ValueError:
        sizes = []
    if len(sizes) != 3 or min(sizes) < 1:
        msg = f"{path}: unsupported XISF geometry {geometry!r}, expected width:height:channels (2-D image)"
        raise ImageIOError(msg)
    space = image.get("colorSpace", "Gray")
    if space not in _COLOURS:
        raise ImageIOError(f"{path}: unsupported XISF color space {space}")
    colours = _COLOURS[space]
    if sizes[2] - colours not in (0, 1):
        raise ImageIOError(f"{path}: unsupported {sizes[2]} channels in XISF color space {space}")
    return sizes[0], sizes[1], sizes[2], colours


def _bounds(path: pathlib.Path, text: str | None) -> tuple[float, float] | None:
    if text is None:
        return None
    try:
        low, high = (float(v) for v in text.split(":"))
    except ValueError:
        raise ImageIOError(f"{path}: invalid XISF bounds {text!r}") from None
    return low, high


def _data_block(path: pathlib.Path, file, element: ET.Element, expected: int | None) -> bytes:
    """The bytes of ``element``'s data block (attached, inline or embedded), checked against
    ``expected`` (a size in bytes, or None) and the ``checksum`` attribute."""
    location = element.get("location", "")
    if element.get("compression"):
        msg = f"{path}: compressed XISF data blocks are not supported (compression={element.get('compression')})"
        raise ImageIOError(msg)
    kind, _, rest = location.partition(":")
    if kind == "attachment":
        try:
            position, size = (int(v) for v in rest.split(":"))
        except ValueError:
            raise ImageIOError(f"{path}: invalid XISF data block location {location!r}") from None
        if position < 0 or size < 0:
            raise ImageIOError(f"{path}: invalid XISF data block location {location!r}")
        if expected is not None and size != expected:
            raise ImageIOError(f"{path}: XISF data block of {size} bytes, the geometry needs {expected}")
        if position + size > path.stat().st_size:
            raise ImageIOError(f"{path}: truncated XISF data block (ends at {position + size} bytes)")
        file.seek(position)
        block = file.read(size)
    elif kind == "inline":
        block = _decode(path, element.text or "", rest)
    elif kind == "embedded":
        data = [child for child in element if _local(child.tag) == "Data"]
        if len(data) != 1:
            raise ImageIOError(f"{path}: embedded XISF data block without one <Data> element")
        block = _decode(path, data[0].text or "", data[0].get("encoding", ""))
    else:
        raise ImageIOError(f"{path}: unsupported XISF data block location {location!r}")
    if expected is not None and len(block) != expected:
        raise ImageIOError(f"{path}: XISF data block of {len(block)} bytes, the geometry needs {expected}")
    _verify(path, block, element.get("checksum"))
    return block


def _decode(path: pathlib.Path, text: str, encoding: str) -> bytes:
    try:
        if encoding == "base64":
            return base64.b64decode("".join(text.split()), validate=True)
        if encoding in ("hex", "base16"):
            return bytes.fromhex("".join(text.split()))
    except (binascii.Error, ValueError) as exc:
        raise ImageIOError(f"{path}: invalid {encoding} data in the XISF header ({exc})") from exc
    raise ImageIOError(f"{path}: unsupported XISF data block encoding {encoding!r}")


def _verify(path: pathlib.Path, block: bytes, checksum: str | None) -> None:
    if not checksum:
        return
    algorithm, _, digest = checksum.partition(":")
    if algorithm.lower() not in _CHECKSUMS:
        raise ImageIOError(f"{path}: unsupported XISF checksum algorithm {algorithm!r}")
    if hashlib.new(_CHECKSUMS[algorithm.lower()], block).hexdigest() != digest.strip().lower():
        raise ImageIOError(f"{path}: XISF data block checksum mismatch ({algorithm})")


def _kept_element(path: pathlib.Path, file, element: ET.Element) -> dict | None:
    """An Image child element (Property, Resolution, ICCProfile...) as ``{"tag", "attributes", "text",
    "data"}``, its data block read; None, with a warning, for one with nested elements."""
    tag = _local(element.tag)
    nested = [child for child in element if _local(child.tag) != "Data"]
    if nested:
        logger.warning("%s: XISF <%s> element with nested elements not kept", path, tag)
        return None
    data = _data_block(path, file, element, None) if element.get("location") else None
    attributes = {k: v for k, v in element.attrib.items() if k not in ("location", "compression", "checksum")}
    text = None if data is not None or element.text is None or not element.text.strip() else element.text
    return {"tag": tag, "attributes": attributes, "text": text, "data": data}


def _keywords(path: pathlib.Path, image: ET.Element) -> fits.Header:
    """The Image's ``FITSKeyword`` elements as a Header; a keyword astropy refuses is left out."""
    header = fits.Header()
    for element in (e for e in image if _local(e.tag) == "FITSKeyword"):
        name = element.get("name", "").strip().upper()
        value, comment = element.get("value", ""), element.get("comment", "")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", VerifyWarning)
            try:
                if name in ("HISTORY", "COMMENT", ""):
                    header.append(fits.Card(name, comment or _parse_value(value) or ""))
                else:
                    header.append(fits.Card(name, _parse_value(value), comment))
            except (ValueError, TypeError, KeyError) as exc:
                logger.warning("%s: FITS keyword %r not kept (%s)", path, name, exc)
    return header


def _parse_value(text: str):
    """A FITS keyword value as written in XISF (``'M31'``, ``T``, ``300``, ``1.5E3``) as a Python value."""
    text = text.strip()
    if text.startswith("'"):
        inner = text[1:-1] if len(text) > 1 and text.endswith("'") else text[1:]
        return inner.replace("''", "'").rstrip()
    if text in ("T", "F"):
        return text == "T"
    if not text:
        return None
    for kind in (int, float):
        try:
            return kind(text.replace("D", "E") if kind is float else text)
        except ValueError:
            continue
    return text


def _format_value(value) -> str:
    """A FITS header value as XISF writes it into a ``FITSKeyword`` element."""
    if isinstance(value, (bool, np.bool_)):
        return "T" if value else "F"
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return repr(float(value)).upper()
    if isinstance(value, (complex, np.complexfloating)):
        return f"({value.real!r}, {value.imag!r})".upper()
    return ""  # undefined value


def write_xisf(tmp: pathlib.Path, data: np.ndarray, info: ImageInfo, history: list[str]) -> None:
    """Write (H, W, C) float ``data`` to ``tmp`` as a monolithic XISF file in the sample format, pixel
    storage and metadata of ``info`` (float32 for a source whose dtype XISF has not)."""
    extra = info.extra if info.format == "xisf" else {}
    dtype = info.dtype if info.dtype in _FORMAT_NAMES else np.dtype(np.float32)
    pixels = samples_for(data, info, dtype)
    storage = extra.get("pixel_storage", "Planar")
    block = np.ascontiguousarray(np.moveaxis(pixels, -1, 0) if storage == "Planar" else pixels)
    block = block.astype(dtype.newbyteorder("<"), copy=False).tobytes()
    attributes = dict(extra.get("attributes", {}))
    attributes.update(geometry=f"{pixels.shape[1]}:{pixels.shape[0]}:{pixels.shape[2]}",
                      sampleFormat=_FORMAT_NAMES[dtype], colorSpace="RGB" if data.shape[2] == 3 else "Gray",
                      pixelStorage=storage)
    bounds = _bounds_for(data, dtype, extra.get("bounds"))
    if bounds is not None:
        attributes["bounds"] = f"{bounds[0]!r}:{bounds[1]!r}"
    header = info.header.copy() if info.header is not None else fits.Header()
    for key in {k for k in header if k in FITS_STRUCTURAL or k.startswith("NAXIS")}:
        header.remove(key, remove_all=True)
    for line in history:
        header.add_history(line)
    position = _ALIGNMENT
    while True:  # the header's length depends on the digits of the position it announces
        attributes["location"] = f"attachment:{position}:{len(block)}"
        xml = _header_xml(attributes, header, extra.get("elements", []))
        needed = -(-(16 + len(xml)) // _ALIGNMENT) * _ALIGNMENT
        if needed <= position:
            break
        position = needed
    with open(tmp, "wb") as file:
        file.write(SIGNATURE + struct.pack("<II", len(xml), 0) + xml)
        file.write(b"\0" * (position - 16 - len(xml)))
        file.write(block)


def _bounds_for(data: np.ndarray, dtype: np.dtype, bounds: tuple[float, float] | None):
    """The ``bounds`` to write: the source's for integers; for floats (where XISF requires them) the
    source's, [0, 1] or the data's range, widened to hold every finite sample."""
    if dtype.kind == "u":
        return bounds
    finite = data[np.isfinite(data)]
    low, high = bounds if bounds is not None else (0.0, 1.0)
    if finite.size:
        low, high = min(low, float(finite.min())), max(high, float(finite.max()))
    return low, high


def _header_xml(attributes: dict, header: fits.Header, elements: list[dict]) -> bytes:
    """The XML header: the Image element with its keywords and kept elements, and the file Metadata."""
    root = ET.Element("xisf", {"version": "1.0", "xmlns": NAMESPACE})
    image = ET.SubElement(root, "Image", attributes)
    for card in header.cards:
        if card.keyword in ("HISTORY", "COMMENT", ""):
            value, comment = "", str(card.value)
        else:
            value, comment = _format_value(card.value), card.comment
        ET.SubElement(image, "FITSKeyword", {"name": card.keyword, "value": value, "comment": comment})
    for kept in elements:
        element = ET.SubElement(image, kept["tag"], kept["attributes"])
        if kept["data"] is not None:
            element.set("location", "inline:base64")
            element.text = base64.b64encode(kept["data"]).decode("ascii")
        elif kept["text"] is not None:
            element.text = kept["text"]
    metadata = ET.SubElement(root, "Metadata")
    now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")
    ET.SubElement(metadata, "Property", {"id": "XISF:CreationTime", "type": "TimePoint", "value": now})
    creator = ET.SubElement(metadata, "Property", {"id": "XISF:CreatorApplication", "type": "String"})
    creator.text = f"astrotf {__version__}"
    return b'<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="utf-8",
                                                                    xml_declaration=False)
