"""Round trips and error messages of astrotf.io on tiny synthetic files."""

import gzip

import cv2
import numpy as np
import pytest
import tifffile
from astropy.io import fits

from astrotf.errors import AstroTFError
from astrotf.io import SUPPORTED_SUFFIXES, ImageInfo, ImageIOError, list_images, read_image, write_image

H, W = 5, 7


def _rng():
    return np.random.default_rng(0)


def _check_error(err, path):
    message = str(err.value)
    assert path.name in message
    assert "\n" not in message
    assert isinstance(err.value, AstroTFError)


def _round_trip(src, dst):
    data, info = read_image(src)
    write_image(dst, data, info)
    return data, info


# --- FITS -------------------------------------------------------------------------------------------

def test_fits_float_mono_round_trip_keeps_header_and_adds_history(tmp_path):
    image = _rng().normal(100.0, 5.0, (H, W)).astype(np.float32)
    header = fits.Header([("OBJECT", "M31"), ("EXPTIME", 300.0)])
    fits.PrimaryHDU(image, header).writeto(tmp_path / "in.fits")

    data, info = read_image(tmp_path / "in.fits")
    assert data.shape == (H, W, 1) and data.dtype == np.float32
    np.testing.assert_array_equal(data[..., 0], image)
    assert (info.format, info.dtype, info.channels, info.layout) == ("fits", np.float32, 1, "HW")
    assert info.scale == 1.0
    assert info.is_linear and not info.is_integer and info.header["OBJECT"] == "M31"

    write_image(tmp_path / "out.fits", data, info, history=["denoised by astrotf resunet"])
    with fits.open(tmp_path / "out.fits") as hdul:
        assert hdul[0].header["OBJECT"] == "M31" and hdul[0].header["EXPTIME"] == 300.0
        assert "denoised by astrotf resunet" in str(hdul[0].header["HISTORY"])
        assert hdul[0].header["BITPIX"] == -32
        np.testing.assert_array_equal(hdul[0].data, image)


def test_fits_rgb_cube_is_channels_last_and_written_back_as_cube(tmp_path):
    cube = _rng().random((3, H, W)).astype(np.float32)
    fits.PrimaryHDU(cube).writeto(tmp_path / "rgb.fits")
    data, info = _round_trip(tmp_path / "rgb.fits", tmp_path / "out.fits")
    assert data.shape == (H, W, 3) and (info.channels, info.layout) == (3, "CHW")
    np.testing.assert_array_equal(np.moveaxis(data, -1, 0), cube)
    np.testing.assert_array_equal(fits.getdata(tmp_path / "out.fits"), cube)


def test_fits_int16_bscale_bzero_round_trip(tmp_path):
    raw = _rng().integers(-32768, 32767, (H, W), dtype=np.int16)
    hdu = fits.PrimaryHDU(raw)
    hdu.header["BSCALE"], hdu.header["BZERO"] = 0.25, 1000.0
    hdu.writeto(tmp_path / "int.fits")

    data, info = _round_trip(tmp_path / "int.fits", tmp_path / "out.fits")
    assert info.dtype == np.int16 and info.is_integer and info.scale == 1.0 and info.step == 0.25
    np.testing.assert_allclose(data[..., 0], raw * 0.25 + 1000.0, atol=0.25 / 2)
    with fits.open(tmp_path / "out.fits", do_not_scale_image_data=True) as hdul:
        header = hdul[0].header
        assert (header["BITPIX"], header["BSCALE"], header["BZERO"]) == (16, 0.25, 1000.0)
        np.testing.assert_array_equal(hdul[0].data, raw)


def test_fits_uint16_pseudo_unsigned_round_trip_is_exact(tmp_path):
    raw = _rng().integers(0, 65535, (H, W), dtype=np.uint16)
    fits.PrimaryHDU(raw).writeto(tmp_path / "u16.fits")  # stored as int16 with BZERO = 32768
    data, info = _round_trip(tmp_path / "u16.fits", tmp_path / "out.fits")
    np.testing.assert_array_equal(data[..., 0], raw)
    assert info.dtype == np.int16 and info.extra["bzero"] == 32768
    np.testing.assert_array_equal(fits.getdata(tmp_path / "out.fits"), raw)


def test_fits_nan_is_kept(tmp_path):
    image = np.ones((H, W), np.float32)
    image[1, 2] = np.nan
    fits.PrimaryHDU(image).writeto(tmp_path / "nan.fits")
    data, _ = _round_trip(tmp_path / "nan.fits", tmp_path / "out.fits")
    assert np.isnan(data[1, 2, 0]) and np.isnan(data).sum() == 1
    assert np.isnan(fits.getdata(tmp_path / "out.fits")[1, 2])


def test_fits_blank_reads_as_nan_and_writes_back_as_blank(tmp_path):
    raw = np.arange(H * W, dtype=np.int16).reshape(H, W)
    raw[0, 0] = -999
    hdu = fits.PrimaryHDU(raw)
    hdu.header["BLANK"] = -999
    hdu.writeto(tmp_path / "blank.fits")
    data, _ = _round_trip(tmp_path / "blank.fits", tmp_path / "out.fits")
    assert np.isnan(data[0, 0, 0]) and np.isnan(data).sum() == 1
    with fits.open(tmp_path / "out.fits", do_not_scale_image_data=True) as hdul:
        np.testing.assert_array_equal(hdul[0].data, raw)


def test_fits_integer_nan_without_blank_is_written_as_float(tmp_path):
    fits.PrimaryHDU(np.zeros((H, W), np.int16)).writeto(tmp_path / "int.fits")
    data, info = read_image(tmp_path / "int.fits")
    data[2, 3] = np.nan
    write_image(tmp_path / "out.fits", data, info)
    with fits.open(tmp_path / "out.fits") as hdul:
        assert hdul[0].header["BITPIX"] == -32 and np.isnan(hdul[0].data[2, 3])
        assert "float32" in str(hdul[0].header["HISTORY"])


def test_fits_compressed_extension_is_read_and_kept_compressed(tmp_path):
    raw = _rng().integers(0, 4000, (H, W), dtype=np.int32)
    header = fits.Header([("TELESCOP", "SDO/HMI")])
    fits.HDUList([fits.PrimaryHDU(), fits.CompImageHDU(raw, header)]).writeto(tmp_path / "hmi.fits")
    data, info = _round_trip(tmp_path / "hmi.fits", tmp_path / "out.fits")
    assert info.hdu_index == 1 and info.header["TELESCOP"] == "SDO/HMI"
    np.testing.assert_array_equal(data[..., 0], raw)
    with fits.open(tmp_path / "out.fits") as hdul:
        assert isinstance(hdul[1], fits.CompImageHDU)
        np.testing.assert_array_equal(hdul[1].data, raw)


def test_fits_leading_degenerate_axes_are_dropped_and_restored(tmp_path):
    image = _rng().random((1, 1, H, W)).astype(np.float32)  # radio-style FREQ/STOKES axes
    fits.PrimaryHDU(image).writeto(tmp_path / "radio.fits")
    data, _ = _round_trip(tmp_path / "radio.fits", tmp_path / "out.fits")
    assert data.shape == (H, W, 1)
    np.testing.assert_array_equal(fits.getdata(tmp_path / "out.fits"), image)


def test_fits_gz_round_trip(tmp_path):
    image = _rng().random((H, W)).astype(np.float32)
    fits.PrimaryHDU(image).writeto(tmp_path / "in.fits.gz")
    _round_trip(tmp_path / "in.fits.gz", tmp_path / "out.fits.gz")
    assert (tmp_path / "out.fits.gz").read_bytes()[:2] == b"\x1f\x8b"
    np.testing.assert_array_equal(fits.getdata(tmp_path / "out.fits.gz"), image)


# --- TIFF -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
@pytest.mark.parametrize("shape", [(H, W), (H, W, 3)])
def test_tiff_round_trip_is_exact(tmp_path, dtype, shape):
    if np.dtype(dtype).kind == "u":
        pixels = _rng().integers(0, np.iinfo(dtype).max, shape, endpoint=True, dtype=dtype)
    else:
        pixels = _rng().normal(0.1, 0.05, shape).astype(dtype)
    tifffile.imwrite(tmp_path / "in.tif", pixels, photometric="rgb" if len(shape) == 3 else "minisblack")
    data, info = _round_trip(tmp_path / "in.tif", tmp_path / "out.tif")
    assert data.shape == (H, W, 1 if len(shape) == 2 else 3) and info.dtype == dtype
    assert info.is_linear == (np.dtype(dtype).kind == "f")
    if info.is_integer:
        assert data.min() >= 0.0 and data.max() <= 1.0
        assert info.step == 1 / np.iinfo(dtype).max  # the spacing of the values read
        levels = data.astype(np.float64) / info.step
        np.testing.assert_allclose(levels, np.rint(levels), atol=1e-2)
    else:
        assert info.step is None
    out = tifffile.imread(tmp_path / "out.tif")
    assert out.dtype == dtype
    np.testing.assert_array_equal(out, pixels)


def test_tiff_rgba_alpha_is_kept_aside_and_written_back(tmp_path):
    pixels = _rng().integers(0, 65535, (H, W, 4), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "in.tif", pixels, photometric="rgb", extrasamples=["unassalpha"])
    data, info = _round_trip(tmp_path / "in.tif", tmp_path / "out.tif")
    assert data.shape == (H, W, 3) and info.channels == 3
    np.testing.assert_array_equal(info.alpha, pixels[..., 3])
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "out.tif"), pixels)


def test_tiff_planar_layout_and_compression_are_kept(tmp_path):
    planes = _rng().integers(0, 255, (3, H, W), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "in.tif", planes, photometric="rgb", planarconfig="separate",
                     compression="zlib")
    data, info = _round_trip(tmp_path / "in.tif", tmp_path / "out.tif")
    assert info.layout == "CHW" and data.shape == (H, W, 3)
    np.testing.assert_array_equal(data[..., 0] * 255, planes[0])
    with tifffile.TiffFile(tmp_path / "out.tif") as tif:
        page = tif.pages[0]
        assert page.planarconfig == tifffile.PLANARCONFIG.SEPARATE
        assert page.compression == tifffile.COMPRESSION.ADOBE_DEFLATE
        np.testing.assert_array_equal(page.asarray(), planes)


def test_tiff_compression_without_codec_falls_back_to_none(tmp_path):
    pixels = _rng().integers(0, 255, (H, W), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "in.tif", pixels)
    data, info = read_image(tmp_path / "in.tif")
    info.extra["compression"] = tifffile.COMPRESSION.LZW  # writable only with imagecodecs installed
    write_image(tmp_path / "out.tif", data, info)
    with tifffile.TiffFile(tmp_path / "out.tif") as tif:
        assert tif.pages[0].compression in (tifffile.COMPRESSION.LZW, tifffile.COMPRESSION.NONE)
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "out.tif"), pixels)


def test_tiff_only_first_page_is_read(tmp_path, caplog):
    stack = np.stack([np.full((H, W), i, np.uint8) for i in range(3)])
    tifffile.imwrite(tmp_path / "stack.tif", stack, photometric="minisblack")
    data, _ = read_image(tmp_path / "stack.tif")
    assert data.shape == (H, W, 1) and np.all(data == 0)
    assert "only the first" in caplog.text


def test_tiff_integer_write_clips_and_maps_nan_to_zero(tmp_path):
    tifffile.imwrite(tmp_path / "in.tif", np.zeros((H, W), np.uint8))
    data, info = read_image(tmp_path / "in.tif")
    data[0, 0], data[0, 1], data[0, 2] = np.nan, 2.0, -1.0
    write_image(tmp_path / "out.tif", data, info)
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "out.tif")[0, :3], [0, 255, 0])


# --- PNG / JPEG -------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
@pytest.mark.parametrize("shape", [(H, W), (H, W, 3)])
def test_png_round_trip_is_exact(tmp_path, dtype, shape):
    pixels = _rng().integers(0, np.iinfo(dtype).max, shape, endpoint=True, dtype=dtype)
    cv2.imwrite(str(tmp_path / "in.png"), pixels)
    data, info = _round_trip(tmp_path / "in.png", tmp_path / "out.png")
    assert info.dtype == dtype and not info.is_linear and info.step == 1 / np.iinfo(dtype).max
    np.testing.assert_array_equal(cv2.imread(str(tmp_path / "out.png"), cv2.IMREAD_UNCHANGED), pixels)


def test_png_channel_order_is_rgb(tmp_path):
    red = np.zeros((H, W, 3), np.float32)
    red[..., 0] = 1.0
    info = ImageInfo(tmp_path / "red.png", "png", np.dtype(np.uint8), 3, "HWC", 255.0)
    write_image(tmp_path / "red.png", red, info)
    np.testing.assert_array_equal(cv2.imread(str(tmp_path / "red.png"))[0, 0], [0, 0, 255])  # OpenCV BGR
    data, _ = read_image(tmp_path / "red.png")
    np.testing.assert_array_equal(data[0, 0], [1.0, 0.0, 0.0])


def test_png_rgba_alpha_is_kept(tmp_path):
    bgra = _rng().integers(0, 255, (H, W, 4), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "in.png"), bgra)
    data, info = _round_trip(tmp_path / "in.png", tmp_path / "out.png")
    assert data.shape == (H, W, 3)
    np.testing.assert_array_equal(info.alpha, bgra[..., 3])
    np.testing.assert_array_equal(cv2.imread(str(tmp_path / "out.png"), cv2.IMREAD_UNCHANGED), bgra)


def test_jpeg_round_trip_is_close(tmp_path):
    yy, xx = np.mgrid[0:32, 0:32]
    pixels = np.stack([xx * 8, yy * 8, np.full_like(xx, 128)], axis=-1).astype(np.uint8)
    cv2.imwrite(str(tmp_path / "in.jpg"), pixels[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 100])
    data, info = _round_trip(tmp_path / "in.jpg", tmp_path / "out.jpeg")
    assert info.format == "jpeg" and data.shape == (32, 32, 3)
    assert np.abs(data * 255 - pixels).mean() < 3
    back, _ = read_image(tmp_path / "out.jpeg")
    assert np.abs(back - data).mean() < 3 / 255


def test_non_ascii_path(tmp_path):
    pixels = np.full((H, W), 7, np.uint8)
    path = tmp_path / "Orion_Nébuleuse_星雲.png"
    ok, buffer = cv2.imencode(".png", pixels)
    buffer.tofile(path)
    data, info = _round_trip(path, tmp_path / "sortie_é.png")
    np.testing.assert_array_equal(data[..., 0] * 255, pixels)


def test_destination_suffix_chooses_the_format(tmp_path):
    fits.PrimaryHDU(np.full((H, W), 0.5, np.float32)).writeto(tmp_path / "in.fits")
    data, info = read_image(tmp_path / "in.fits")
    write_image(tmp_path / "out.tif", data, info)
    out = tifffile.imread(tmp_path / "out.tif")
    assert out.dtype == np.float32 and np.all(out == 0.5)


# --- errors -----------------------------------------------------------------------------------------

def test_missing_file(tmp_path):
    path = tmp_path / "absent.fits"
    with pytest.raises(ImageIOError, match="no such file") as err:
        read_image(path)
    _check_error(err, path)


def test_directory_is_refused(tmp_path):
    path = tmp_path / "folder.fits"
    path.mkdir()
    with pytest.raises(ImageIOError, match="directory") as err:
        read_image(path)
    _check_error(err, path)


@pytest.mark.parametrize("name", ["garbage.fits", "garbage.png", "garbage.tif", "empty.fits", "empty.png"])
def test_garbage_bytes(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(b"" if name.startswith("empty") else b"this is not an image\n" * 50)
    with pytest.raises(ImageIOError, match="not a|cannot be read") as err:
        read_image(path)
    _check_error(err, path)


@pytest.mark.filterwarnings("ignore:File may have been truncated")
def test_truncated_fits(tmp_path):
    fits.PrimaryHDU(np.ones((100, 100), np.float32)).writeto(tmp_path / "full.fits")
    path = tmp_path / "cut.fits"
    path.write_bytes((tmp_path / "full.fits").read_bytes()[:20000])
    with pytest.raises(ImageIOError, match="truncated") as err:
        read_image(path)
    _check_error(err, path)


def test_damaged_tile_compressed_fits(tmp_path):
    """Issue #20: astropy's CfitsioException from a damaged tile became a traceback."""
    raw = _rng().integers(0, 4000, (64, 64), dtype=np.int32)
    fits.HDUList([fits.PrimaryHDU(), fits.CompImageHDU(raw, compression_type="RICE_1")]).writeto(
        tmp_path / "good.fits")
    with fits.open(tmp_path / "good.fits") as hdul:
        start, size = hdul[1]._data_offset, hdul[1]._data_size
    damaged = bytearray((tmp_path / "good.fits").read_bytes())
    damaged[start + size // 2:start + size - 200] = b"\xff" * (size - 200 - size // 2)
    path = tmp_path / "damaged.fits"
    path.write_bytes(bytes(damaged))
    with pytest.raises(ImageIOError, match="cannot be read as FITS") as err:
        read_image(path)
    _check_error(err, path)


@pytest.mark.filterwarnings("ignore")
def test_gzipped_fits_with_unparsable_cards_does_not_hang(tmp_path):
    """astropy reads such an HDU again and again (its data size comes out negative): found by fuzzing."""
    cards = ["SIMPLE  =                    Tam", "BITPIX  =                  -32", "NAXIS   =                    2",
             "NAXIS1  =                   11", "NAXIS2  =                    9", "END"]
    path = tmp_path / "cards.fits.gz"
    path.write_bytes(gzip.compress(b"".join(c.ljust(80).encode() for c in cards).ljust(2880) + bytes(2880)))
    with pytest.raises(ImageIOError, match="corrupted FITS header of HDU 0") as err:
        read_image(path)
    _check_error(err, path)


def test_fits_without_image_data(tmp_path):
    path = tmp_path / "header_only.fits"
    fits.PrimaryHDU().writeto(path)
    with pytest.raises(ImageIOError, match="no image data in any HDU") as err:
        read_image(path)
    _check_error(err, path)


def test_fits_zero_size_image(tmp_path):
    path = tmp_path / "zero.fits"
    fits.PrimaryHDU(np.zeros((0, 12), np.float32)).writeto(path)
    with pytest.raises(ImageIOError, match=r"empty image \(0 x 12\)") as err:
        read_image(path)
    _check_error(err, path)


def test_fits_4d_is_refused(tmp_path):
    path = tmp_path / "hyper.fits"
    fits.PrimaryHDU(np.zeros((4, 5, 6, 7), np.float32)).writeto(path)
    with pytest.raises(ImageIOError, match=r"unsupported layout.*\(4, 5, 6, 7\)") as err:
        read_image(path)
    _check_error(err, path)


def test_tiff_with_damaged_image_length_is_refused_quickly(tmp_path):
    """A huge ImageLength made tifffile zero-fill tens of millions of missing strips: found by fuzzing."""
    path = tmp_path / "tall.tif"
    tifffile.imwrite(path, np.zeros((9, 11), np.uint8), rowsperstrip=9)
    with tifffile.TiffFile(path) as tif:
        tag = tif.pages[0].tags["ImageLength"]
        offset, dtype = tag.valueoffset, {3: "<u2", 4: "<u4"}[int(tag.dtype)]
    blob = bytearray(path.read_bytes())
    blob[offset:offset + np.dtype(dtype).itemsize] = np.array(60000 if dtype == "<u2" else 690563337, dtype).tobytes()
    path.write_bytes(bytes(blob))
    with pytest.raises(ImageIOError, match="truncated or damaged TIFF") as err:
        read_image(path)
    _check_error(err, path)


@pytest.mark.parametrize("dtype", [np.complex64, np.int64])
def test_tiff_unsupported_dtype(tmp_path, dtype):
    path = tmp_path / "odd.tif"
    tifffile.imwrite(path, np.zeros((H, W), dtype))
    with pytest.raises(ImageIOError, match=f"unsupported dtype {np.dtype(dtype)}") as err:
        read_image(path)
    _check_error(err, path)


def test_unsupported_suffix(tmp_path):
    path = tmp_path / "image.bmp"
    path.write_bytes(b"BM")
    with pytest.raises(ImageIOError, match="unsupported file type") as err:
        read_image(path)
    _check_error(err, path)


def test_overwrite_is_refused_without_flag(tmp_path):
    tifffile.imwrite(tmp_path / "in.tif", np.zeros((H, W), np.uint8))
    data, info = read_image(tmp_path / "in.tif")
    path = tmp_path / "out.tif"
    path.write_bytes(b"keep me")
    with pytest.raises(ImageIOError, match="--force") as err:
        write_image(path, data, info)
    _check_error(err, path)
    assert path.read_bytes() == b"keep me"
    write_image(path, data, info, overwrite=True)
    np.testing.assert_array_equal(tifffile.imread(path), np.zeros((H, W), np.uint8))


def test_write_rejects_bad_shape(tmp_path):
    info = ImageInfo(tmp_path / "x.png", "png", np.dtype(np.uint8), 3, "HWC", 255.0)
    path = tmp_path / "out.png"
    with pytest.raises(ImageIOError, match=r"\(2, 5, 7\)") as err:
        write_image(path, np.zeros((2, H, W), np.float32), info)
    _check_error(err, path)


def test_atomic_write_leaves_no_temp_file(tmp_path, monkeypatch):
    tifffile.imwrite(tmp_path / "in.tif", np.zeros((H, W), np.uint8))
    data, info = read_image(tmp_path / "in.tif")
    write_image(tmp_path / "out.tif", data, info)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.tif", "out.tif"]

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(tifffile, "imwrite", disk_full)
    with pytest.raises(ImageIOError, match="No space left") as err:
        write_image(tmp_path / "failed.tif", data, info)
    _check_error(err, tmp_path / "failed.tif")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.tif", "out.tif"]


# --- list_images ------------------------------------------------------------------------------------

def test_list_images_sorts_and_filters(tmp_path):
    for name in ["b.fits", "a.TIF", "c.fits.gz", "d.png", ".hidden.fits", "notes.txt", "e.jpeg", "x.gz"]:
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "sub.fits").mkdir()
    assert [p.name for p in list_images(tmp_path)] == ["a.TIF", "b.fits", "c.fits.gz", "d.png", "e.jpeg"]


def test_list_images_needs_a_folder(tmp_path):
    with pytest.raises(ImageIOError, match="not a folder"):
        list_images(tmp_path / "nowhere")


def test_supported_suffixes():
    assert set(SUPPORTED_SUFFIXES) == {".fits", ".fit", ".fts", ".fits.gz", ".fit.gz",
                                       ".tif", ".tiff", ".png", ".jpg", ".jpeg", ".xisf"}


def test_fits_extensions_other_than_the_image_are_kept(tmp_path):
    from astropy.table import Table

    src = tmp_path / "field.fits"
    image = np.arange(12, dtype=np.float32).reshape(3, 4)
    table = fits.table_to_hdu(Table({"x": [1.5, 2.5], "flux": [10.0, 20.0]}))
    table.name = "TRUTH"
    fits.HDUList([fits.PrimaryHDU(image), table]).writeto(src)
    data, info = read_image(src)
    write_image(tmp_path / "out.fits", data * 2, info)
    with fits.open(tmp_path / "out.fits") as hdul:
        assert [h.name for h in hdul] == ["PRIMARY", "TRUTH"]
        np.testing.assert_array_equal(hdul["TRUTH"].data["flux"], [10.0, 20.0])
        np.testing.assert_array_equal(hdul[0].data, image * 2)


def test_fits_image_read_from_an_extension_goes_back_there_after_the_primary_header(tmp_path):
    src = tmp_path / "flt.fits"
    image = np.arange(12, dtype=np.float32).reshape(3, 4)
    fits.HDUList([fits.PrimaryHDU(header=fits.Header([("TELESCOP", "HST"), ("EXPTIME", 150.0)])),
                  fits.ImageHDU(image, name="SCI"), fits.ImageHDU(image / 10, name="ERR")]).writeto(src)
    data, info = read_image(src)
    write_image(tmp_path / "out.fits", data * 2, info, history=["astrotf test"])
    with fits.open(tmp_path / "out.fits") as hdul:
        assert [h.name for h in hdul] == ["PRIMARY", "SCI", "ERR"]
        assert hdul[0].header["TELESCOP"] == "HST" and hdul[0].header["EXPTIME"] == 150.0
        np.testing.assert_array_equal(hdul["SCI"].data, image * 2)
        np.testing.assert_array_equal(hdul["ERR"].data, image / 10)
        assert "astrotf test" in str(hdul["SCI"].header["HISTORY"])
    again, info_again = read_image(tmp_path / "out.fits")  # the output reads like the input
    assert info_again.hdu_index == 1
    np.testing.assert_array_equal(again, data * 2)


def test_an_extension_inherits_the_primary_header_keywords_it_lacks_unless_inherit_is_false(tmp_path):
    from astrotf.io import inherited_header

    primary = fits.Header([("TELESCOP", "HST"), ("CCDGAIN", 2.0), ("READNSE", 4.5), ("EXPTIME", 100.0)])
    image = np.ones((4, 5), np.float32)
    sci = fits.Header([("BUNIT", "COUNTS"), ("EXPTIME", 50.0)])
    fits.HDUList([fits.PrimaryHDU(header=primary), fits.ImageHDU(image, sci, name="SCI")]).writeto(tmp_path / "a.fits")
    _, info = read_image(tmp_path / "a.fits")
    merged = inherited_header(info)
    assert merged["CCDGAIN"] == 2.0 and merged["READNSE"] == 4.5 and merged["BUNIT"] == "COUNTS"
    assert merged["EXPTIME"] == 50.0 and merged["EXTNAME"] == "SCI"  # the extension's own value wins
    assert "CCDGAIN" not in info.header  # what is written back is the extension's header, unchanged
    sci["INHERIT"] = False
    fits.HDUList([fits.PrimaryHDU(header=primary), fits.ImageHDU(image, sci)]).writeto(tmp_path / "b.fits")
    _, info = read_image(tmp_path / "b.fits")
    assert "CCDGAIN" not in inherited_header(info)
    fits.PrimaryHDU(image, primary).writeto(tmp_path / "c.fits")
    _, info = read_image(tmp_path / "c.fits")
    assert inherited_header(info) is info.header
