"""XISF reading and writing in astrotf.io, on hand-built files (tests/xisf_files.py) and on its own output."""

import base64
import hashlib
import struct

import numpy as np
import pytest
from astropy.io import fits

from astrotf import io
from astrotf.errors import AstroTFError
from astrotf.io import ImageInfo, ImageIOError, read_image, write_image
from tests.xisf_files import build_xisf

H, W = 5, 7


def _rng():
    return np.random.default_rng(0)


def _block_of(path):
    """The attached image block of an XISF file written by astrotf, and its Image element's XML."""
    blob = path.read_bytes()
    (length,) = struct.unpack("<I", blob[8:12])
    xml = blob[16:16 + length].decode()
    location = xml.split('location="attachment:', 1)[1].split('"', 1)[0]
    position, size = (int(v) for v in location.split(":"))
    return blob[position:position + size], xml


def _uint16_rgb(tmp_path, storage):
    planes = _rng().integers(0, 65535, (3, H, W), endpoint=True, dtype=np.uint16)
    pixels = planes if storage == "Planar" else np.moveaxis(planes, 0, -1)
    attributes = f'geometry="{W}:{H}:3" sampleFormat="UInt16" colorSpace="RGB" pixelStorage="{storage}"'
    path = tmp_path / f"rgb_{storage}.xisf"
    path.write_bytes(build_xisf(attributes, pixels.astype("<u2").tobytes()))
    return path, planes


@pytest.mark.parametrize("storage", ["Planar", "Normal"])
def test_uint16_rgb_round_trip_is_exact(tmp_path, storage):
    path, planes = _uint16_rgb(tmp_path, storage)
    data, info = read_image(path)
    assert data.shape == (H, W, 3) and data.dtype == np.float32
    assert (info.format, info.dtype, info.channels, info.scale) == ("xisf", np.uint16, 3, 65535.0)
    assert info.layout == ("CHW" if storage == "Planar" else "HWC") and not info.is_linear
    np.testing.assert_array_equal(np.rint(np.moveaxis(data, -1, 0) * 65535), planes)
    write_image(tmp_path / "out.xisf", data, info)
    block, xml = _block_of(tmp_path / "out.xisf")
    assert f'pixelStorage="{storage}"' in xml and 'sampleFormat="UInt16"' in xml
    assert block == path.read_bytes()[-len(block):]
    back, _ = read_image(tmp_path / "out.xisf")
    np.testing.assert_array_equal(back, data)


def test_float32_mono_round_trip_is_exact_with_nan_and_bounds(tmp_path):
    image = _rng().normal(0.01, 0.002, (H, W)).astype(np.float32)
    image[1, 1] = np.nan
    attributes = f'geometry="{W}:{H}:1" sampleFormat="Float32" bounds="0:1" colorSpace="Gray"'
    (tmp_path / "in.xisf").write_bytes(build_xisf(attributes, image.astype("<f4").tobytes()))
    data, info = read_image(tmp_path / "in.xisf")
    assert (info.dtype, info.channels, info.layout, info.scale) == (np.float32, 1, "HW", 1.0)
    assert info.is_linear and info.step is None and info.extra["bounds"] == (0.0, 1.0)
    np.testing.assert_array_equal(data[..., 0], image)
    write_image(tmp_path / "out.xisf", data, info)
    back, back_info = read_image(tmp_path / "out.xisf")
    np.testing.assert_array_equal(back, data)
    assert back_info.extra["bounds"] == (0.0, 1.0) and back_info.extra["color_space"] == "Gray"


def test_float_bounds_widen_to_hold_the_data(tmp_path):
    info = ImageInfo(tmp_path / "x.xisf", "xisf", np.dtype(np.float32), 1, "HW", 1.0,
                     extra={"bounds": (0.0, 1.0)})
    data = np.linspace(-0.5, 2.0, H * W, dtype=np.float32).reshape(H, W)
    write_image(tmp_path / "out.xisf", data, info)
    assert read_image(tmp_path / "out.xisf")[1].extra["bounds"] == (-0.5, 2.0)


_CHILDREN = (
    "<FITSKeyword name=\"OBJECT\" value=\"'M 31'\" comment=\"target\"/>"
    '<FITSKeyword name="EXPTIME" value="300." comment="seconds"/>'
    '<FITSKeyword name="GAIN" value="139" comment=""/>'
    '<FITSKeyword name="ROWORDER" value="T" comment=""/>'
    '<FITSKeyword name="HISTORY" value="" comment="calibrated in PixInsight"/>'
    '<Property id="Observation:Object:Name" type="String">M 31</Property>'
    '<Property id="Instrument:ExposureTime" type="Float32" value="300"/>'
    '<Property id="PCL:Test:Vector" type="F64Vector" length="2" location="inline:base64">'
    + base64.b64encode(np.array([1.5, -2.0], "<f8").tobytes()).decode() + "</Property>"
    '<Resolution horizontal="72" vertical="72" unit="inch"/>'
)


def test_keywords_and_properties_survive_and_history_is_added(tmp_path):
    image = np.zeros((H, W), "<u2")
    attributes = f'geometry="{W}:{H}:1" sampleFormat="UInt16" id="integration" imageType="Light"'
    (tmp_path / "in.xisf").write_bytes(build_xisf(attributes, image.tobytes(), _CHILDREN))
    data, info = read_image(tmp_path / "in.xisf")
    header = info.header
    assert (header["OBJECT"], header["EXPTIME"], header["GAIN"], header["ROWORDER"]) == ("M 31", 300.0, 139, True)
    assert header.comments["EXPTIME"] == "seconds" and "calibrated in PixInsight" in str(header["HISTORY"])
    write_image(tmp_path / "out.xisf", data, info, history=["denoised by astrotf resunet"])
    _, back = read_image(tmp_path / "out.xisf")
    assert [c.image for c in back.header.cards] == [c.image for c in header.cards] + [
        fits.Card("HISTORY", "denoised by astrotf resunet").image]
    assert back.extra["elements"] == info.extra["elements"]
    assert back.extra["attributes"] == {"id": "integration", "imageType": "Light"}
    vector = next(e for e in back.extra["elements"] if e["attributes"]["id"] == "PCL:Test:Vector")
    np.testing.assert_array_equal(np.frombuffer(vector["data"], "<f8"), [1.5, -2.0])
    name = next(e for e in back.extra["elements"] if e["attributes"].get("id") == "Observation:Object:Name")
    assert name["text"] == "M 31"


def test_keywords_cross_to_fits_and_back(tmp_path):
    image = np.ones((H, W), "<f4")
    attributes = f'geometry="{W}:{H}:1" sampleFormat="Float32" bounds="0:1"'
    (tmp_path / "in.xisf").write_bytes(build_xisf(attributes, image.tobytes(), _CHILDREN))
    data, info = read_image(tmp_path / "in.xisf")
    write_image(tmp_path / "out.fits", data, info, history=["denoised"])
    with fits.open(tmp_path / "out.fits") as hdul:
        assert hdul[0].header["OBJECT"] == "M 31" and hdul[0].header["GAIN"] == 139
        assert "denoised" in str(hdul[0].header["HISTORY"])
    data, info = read_image(tmp_path / "out.fits")
    write_image(tmp_path / "back.xisf", data, info)
    _, back = read_image(tmp_path / "back.xisf")
    assert back.header["OBJECT"] == "M 31" and "BITPIX" not in back.header and "NAXIS1" not in back.header


def test_big_endian_embedded_and_inline_blocks_are_read(tmp_path):
    pixels = _rng().integers(0, 65535, (H, W), dtype=np.uint16)
    attributes = f'geometry="{W}:{H}:1" sampleFormat="UInt16" byteOrder="big"'
    (tmp_path / "big.xisf").write_bytes(build_xisf(attributes, pixels.astype(">u2").tobytes()))
    encoded = base64.b64encode(pixels.astype("<u2").tobytes()).decode()
    embedded = f'geometry="{W}:{H}:1" sampleFormat="UInt16" location="embedded"'
    (tmp_path / "embedded.xisf").write_bytes(
        build_xisf(embedded, b"", f'<Data encoding="base64">{encoded}</Data>'))
    inline = f'geometry="{W}:{H}:1" sampleFormat="UInt16" location="inline:hex"'
    (tmp_path / "inline.xisf").write_bytes(build_xisf(inline, b"", pixels.astype("<u2").tobytes().hex()))
    for name in ("big.xisf", "embedded.xisf", "inline.xisf"):
        data, _ = read_image(tmp_path / name)
        np.testing.assert_array_equal(np.rint(data[..., 0] * 65535), pixels)


def test_checksum_is_verified(tmp_path):
    block = np.arange(H * W, dtype="<u2").tobytes()
    digest = hashlib.sha1(block).hexdigest()
    attributes = f'geometry="{W}:{H}:1" sampleFormat="UInt16" checksum="sha1:{digest}"'
    (tmp_path / "ok.xisf").write_bytes(build_xisf(attributes, block))
    assert read_image(tmp_path / "ok.xisf")[0].shape == (H, W, 1)
    (tmp_path / "bad.xisf").write_bytes(build_xisf(attributes, block[:-1] + b"\x01"))
    with pytest.raises(ImageIOError, match="checksum mismatch"):
        read_image(tmp_path / "bad.xisf")


def test_rgba_alpha_is_kept(tmp_path):
    planes = _rng().random((4, H, W)).astype("<f4")
    attributes = f'geometry="{W}:{H}:4" sampleFormat="Float32" bounds="0:1" colorSpace="RGB"'
    (tmp_path / "in.xisf").write_bytes(build_xisf(attributes, planes.tobytes()))
    data, info = read_image(tmp_path / "in.xisf")
    assert data.shape == (H, W, 3) and info.channels == 3
    np.testing.assert_array_equal(info.alpha, planes[3])
    write_image(tmp_path / "out.xisf", data, info)
    assert _block_of(tmp_path / "out.xisf")[0] == planes.tobytes()


def test_other_formats_write_xisf_in_their_dtype(tmp_path):
    image = _rng().random((H, W)).astype(np.float32)
    fits.PrimaryHDU(image, fits.Header([("OBJECT", "NGC 7000")])).writeto(tmp_path / "in.fits")
    data, info = read_image(tmp_path / "in.fits")
    write_image(tmp_path / "out.xisf", data, info)
    back, back_info = read_image(tmp_path / "out.xisf")
    assert back_info.dtype == np.float32 and back_info.header["OBJECT"] == "NGC 7000"
    np.testing.assert_array_equal(back[..., 0], image)


def test_suffix_and_format(tmp_path):
    assert ".xisf" in io.SUPPORTED_SUFFIXES and io.format_of("M31.XISF") == "xisf"
    (tmp_path / "a.xisf").write_bytes(b"")
    assert [p.name for p in io.list_images(tmp_path)] == ["a.xisf"]


def _raw_header(xml):
    return b"XISF0100" + struct.pack("<II", len(xml), 0) + xml


def _bad(name):
    """Each case: (file name, bytes, expected message)."""
    block = np.zeros((H, W), "<u2").tobytes()
    mono = f'geometry="{W}:{H}:1" sampleFormat="UInt16"'
    cases = {
        "signature": (build_xisf(mono, block, signature=b"XISF0200"), "bad signature"),
        "compressed": (build_xisf(mono + ' compression="zlib:70"', block), r"compressed .*compression=zlib:70"),
        "two_images": (build_xisf(mono, block, images=2), "2 Image elements"),
        "no_image": (_raw_header(b"<xisf version='1.0'/>"), "no Image element"),
        "complex": (build_xisf(f'geometry="{W}:{H}:1" sampleFormat="Complex32"', block * 4),
                    "unsupported XISF sample format Complex32"),
        "uint64": (build_xisf(f'geometry="{W}:{H}:1" sampleFormat="UInt64"', block * 4),
                   "unsupported XISF sample format UInt64"),
        "truncated_block": (build_xisf(mono, block)[:-10], "truncated XISF data block"),
        "truncated_header": (build_xisf(mono, block)[:100], "truncated XISF header"),
        "block_size": (build_xisf(mono, block, size=len(block) - 2), "geometry needs 70"),
        "three_d": (build_xisf(f'geometry="{W}:{H}:2:1" sampleFormat="UInt16"', block * 2),
                    "unsupported XISF geometry"),
        "cielab": (build_xisf(f'geometry="{W}:{H}:3" sampleFormat="UInt16" colorSpace="CIELab"', block * 3),
                   "unsupported XISF color space CIELab"),
        "channels": (build_xisf(f'geometry="{W}:{H}:2" sampleFormat="UInt16" colorSpace="RGB"', block * 2),
                     "unsupported 2 channels"),
        "external": (build_xisf(mono + ' location="path(@header_dir/x.xisb):0:70"', b""),
                     "unsupported XISF data block location"),
        "encoding": (build_xisf(mono + ' location="inline:base85"', b"", "abc"), "encoding 'base85'"),
        "xml": (_raw_header(b"<xisf><Im"), "invalid XISF header XML"),
        "storage": (build_xisf(mono + ' pixelStorage="Tiled"', block), "pixel storage Tiled"),
    }
    return cases[name]


@pytest.mark.parametrize("name", ["signature", "compressed", "two_images", "no_image", "complex", "uint64",
                                  "truncated_block", "truncated_header", "block_size", "three_d", "cielab",
                                  "channels", "external", "encoding", "xml", "storage"])
def test_unsupported_or_damaged_xisf(tmp_path, name):
    blob, message = _bad(name)
    path = tmp_path / f"{name}.xisf"
    path.write_bytes(blob)
    with pytest.raises(ImageIOError, match=message) as err:
        read_image(path)
    assert str(err.value).startswith(f"{path}: ") and "\n" not in str(err.value)
    assert isinstance(err.value, AstroTFError)


def test_failed_write_leaves_nothing(tmp_path, monkeypatch):
    info = ImageInfo(tmp_path / "x.xisf", "xisf", np.dtype(np.uint16), 1, "HW", 65535.0)

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(io.xisf, "_header_xml", disk_full)
    with pytest.raises(ImageIOError, match="No space left"):
        write_image(tmp_path / "out.xisf", np.zeros((H, W), np.float32), info)
    assert list(tmp_path.iterdir()) == []


def test_uint32_white_stays_white(tmp_path):
    """float32 scaling turned 1.0 into 2**32 and the cast into 0: found by tests/test_io_fuzz.py."""
    pixels = np.array([[0, 1, 2**31, 2**32 - 1]], "<u4")
    (tmp_path / "in.xisf").write_bytes(build_xisf('geometry="4:1:1" sampleFormat="UInt32"', pixels.tobytes()))
    data, info = read_image(tmp_path / "in.xisf")
    write_image(tmp_path / "out.xisf", data, info)
    block, _ = _block_of(tmp_path / "out.xisf")
    np.testing.assert_array_equal(np.frombuffer(block, "<u4"), pixels[0])
