"""Byte-level fuzzing of astrotf.io: damaged files must read, or fail with a one-line ImageIOError.

    python tools/fuzz_io.py --n 5000 [--seed S] [--files F ...] [--show 3] [--keep DIR]

Each of ``--n`` mutants is a seed file (default: the bundled ``astrotf/samples/*`` images plus small
generated FITS, TIFF, PNG, JPEG and XISF files) cut short, with bytes flipped, overwritten, inserted or
deleted, or a number in its header replaced. A mutant is read with :func:`astrotf.io.read_image`; one
that reads is written back in its own format and read again (equal to the first read where the format is
lossless). Outcomes:

* ``read``: read (and written back); ``write-error``: read, but the write gave a one-line ImageIOError;
* ``error``: a one-line ImageIOError naming the file;
* ``traceback``: any other exception, or an ImageIOError message that is not one line naming the file;
* ``mismatch``: read data off the contract (float32 (H, W, 1|3)) or a lossless round trip not equal;
* ``partial``: a failed write left a file behind, or the input file changed;
* ``hang``: read and write back took longer than ``--timeout`` seconds.

Prints the counts and the first ``--show`` tracebacks; exits 1 on any traceback, mismatch, partial or
hang. What the decoding libraries print themselves (libpng, libjpeg) goes to /dev/null unless
``--verbose``.
``tests/test_io_fuzz.py`` draws the same mutations (:func:`mutate`) with Hypothesis and applies :func:`check`.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import pathlib
import re
import os
import shutil
import signal
import sys
import tempfile
import traceback
import warnings

import cv2
import numpy as np
import tifffile
from astropy.io import fits

from astrotf import io

SAMPLES = pathlib.Path(__file__).resolve().parents[1] / "astrotf" / "samples"
OPERATIONS = ("truncate", "flip", "set", "run", "insert", "delete", "number")
OUTCOMES = ("read", "write-error", "error", "traceback", "mismatch", "partial", "hang")
FAILURES = ("traceback", "mismatch", "partial", "hang")


class _Hang(BaseException):
    """Raised by the alarm in :func:`check`; a BaseException so that no ``except Exception`` stops it."""


@dataclasses.dataclass
class Result:
    """How one file went through read (and write back): ``outcome`` from OUTCOMES, ``detail`` text."""

    outcome: str
    detail: str = ""


def mutate(blob: bytes, operation: str, position: int, value: int, length: int = 1) -> bytes:
    """``blob`` changed by ``operation`` at ``position`` (taken modulo the size): ``truncate`` there,
    ``flip`` bit ``value % 8``, ``set`` the byte to ``value``, overwrite a ``run`` of ``length`` bytes,
    ``insert`` or ``delete`` ``length`` bytes, or replace a ``number`` (the ``position``-th run of ASCII
    digits in the first 64 KiB: FITS cards, XISF geometry and locations) by ``value``."""
    data = bytearray(blob)
    at = position % max(len(data), 1)
    byte = value % 256
    if operation == "truncate":
        return bytes(data[:at])
    if operation == "number":
        runs = list(re.finditer(rb"\d+", bytes(data[:65536])))
        if not runs:
            return bytes(data)
        run = runs[position % len(runs)]
        return bytes(data[:run.start()]) + str(value).encode() + bytes(data[run.end():])
    if not data:
        return bytes(data)
    if operation == "flip":
        data[at] ^= 1 << (value % 8)
    elif operation == "set":
        data[at] = byte
    elif operation == "run":
        data[at:at + length] = bytes([byte]) * len(data[at:at + length])
    elif operation == "insert":
        data[at:at] = bytes([byte]) * length
    elif operation == "delete":
        del data[at:at + length]
    else:
        msg = f"`operation` must be one of {OPERATIONS}. Received: operation={operation!r}"
        raise ValueError(msg)
    return bytes(data)


def _suffix(path: pathlib.Path) -> str:
    name = path.name.lower()
    return max((s for s in io.SUPPORTED_SUFFIXES if name.endswith(s)), key=len, default=path.suffix)


def _named_error(err: io.ImageIOError, path: pathlib.Path) -> bool:
    message = str(err)
    return message.startswith(f"{path}: ") and len(message.splitlines()) == 1


def _lossless(info: io.ImageInfo) -> bool:
    lossy_fits = info.format == "fits" and info.extra.get("compression") and not info.is_integer
    return info.format != "jpeg" and not lossy_fits


def check(path: pathlib.Path, out_dir: pathlib.Path, timeout: int = 0) -> Result:
    """Read ``path``; if it reads, write it back into the empty folder ``out_dir`` and read that.
    ``timeout``: seconds before giving up with outcome ``hang`` (0: none; Unix only)."""
    before = path.read_bytes()
    if timeout:
        signal.signal(signal.SIGALRM, _raise_hang)
        signal.alarm(timeout)
    try:
        result = _read_write(path, out_dir)
    except _Hang:
        result = Result("hang", f"{path}: more than {timeout} s")
    finally:
        if timeout:
            signal.alarm(0)
    leftovers = sorted(p.name for p in out_dir.iterdir())
    written = result.outcome in ("read", "mismatch", "hang")
    if path.read_bytes() != before:
        return Result("partial", f"{path}: input changed")
    if leftovers and (not written or len(leftovers) > 1):
        return Result("partial", f"{path}: left {leftovers} after outcome {result.outcome} ({result.detail})")
    return result


def _raise_hang(signum, frame):
    raise _Hang


def _read_write(path: pathlib.Path, out_dir: pathlib.Path) -> Result:
    try:
        data, info = io.read_image(path)
    except io.ImageIOError as err:
        return Result("error", str(err)) if _named_error(err, path) else Result("traceback", repr(str(err)))
    except Exception:  # noqa: BLE001 - what the fuzzer is looking for
        return Result("traceback", traceback.format_exc())
    if data.dtype != np.float32 or data.ndim != 3 or data.shape[2] not in (1, 3) or not data.flags.c_contiguous:
        return Result("mismatch", f"{path}: read {data.dtype} {data.shape}")
    out = out_dir / f"back{_suffix(path)}"
    try:
        io.write_image(out, data, info)
        back, _ = io.read_image(out)
    except io.ImageIOError as err:
        named = _named_error(err, out)
        return Result("write-error" if named else "traceback", str(err) if named else repr(str(err)))
    except Exception:  # noqa: BLE001
        return Result("traceback", traceback.format_exc())
    if _lossless(info) and not np.array_equal(back, data, equal_nan=True):
        return Result("mismatch", f"{path}: {info.format} {info.dtype} round trip changed the data")
    return Result("read")


# ----------------------------------------------------------------------------- seed files
def make_seeds(folder: pathlib.Path) -> list[pathlib.Path]:
    """Small valid files of every format and the layouts the readers know, written into ``folder``."""
    rng = np.random.default_rng(1)
    h, w = 9, 11
    image = rng.normal(100.0, 5.0, (h, w)).astype(np.float32)
    image[2, 3] = np.nan
    header = fits.Header([("OBJECT", "M31"), ("EXPTIME", 300.0), ("GAIN", 139)])
    fits.PrimaryHDU(image, header).writeto(folder / "float.fits")
    fits.PrimaryHDU(image).writeto(folder / "float.fits.gz")
    fits.PrimaryHDU(rng.random((3, h, w)).astype(np.float32)).writeto(folder / "cube.fits")
    scaled = fits.PrimaryHDU(rng.integers(-200, 30000, (h, w), dtype=np.int16), header)
    scaled.header.update(BSCALE=0.5, BZERO=100.0, BLANK=-32768)
    scaled.writeto(folder / "int16_bscale.fits")
    fits.PrimaryHDU(rng.integers(0, 65535, (h, w), dtype=np.uint16)).writeto(folder / "u16.fits")
    counts = rng.integers(0, 4000, (16, 16), dtype=np.int32)
    fits.HDUList([fits.PrimaryHDU(), fits.CompImageHDU(counts, compression_type="RICE_1")]).writeto(
        folder / "rice.fits")
    fits.HDUList([fits.PrimaryHDU(), fits.CompImageHDU(image, compression_type="GZIP_2")]).writeto(
        folder / "gzip_float.fits")

    planes = rng.integers(0, 65535, (3, h, w), dtype=np.uint16)
    tifffile.imwrite(folder / "rgb16_planar.tif", planes, photometric="rgb", planarconfig="separate",
                     compression="zlib")
    tifffile.imwrite(folder / "float32.tif", image)
    tifffile.imwrite(folder / "rgba8.tif", rng.integers(0, 255, (h, w, 4), dtype=np.uint8), photometric="rgb",
                     extrasamples=["unassalpha"])
    tifffile.imwrite(folder / "pages.tif", rng.integers(0, 255, (2, h, w), dtype=np.uint8),
                     photometric="minisblack")
    cv2.imencode(".png", rng.integers(0, 65535, (h, w), dtype=np.uint16))[1].tofile(folder / "grey16.png")
    cv2.imencode(".png", rng.integers(0, 255, (h, w, 4), dtype=np.uint8))[1].tofile(folder / "rgba8.png")
    cv2.imencode(".jpg", rng.integers(0, 255, (h, w, 3), dtype=np.uint8))[1].tofile(folder / "rgb.jpg")

    mono = io.ImageInfo(folder / "f.xisf", "xisf", np.dtype(np.float32), 1, "HW", 1.0, header,
                        extra={"bounds": (0.0, 1.0)})
    io.write_image(folder / "mono_f32.xisf", image / 200, mono, history=["seed"])
    rgb = io.ImageInfo(folder / "r.xisf", "xisf", np.dtype(np.uint16), 3, "HWC", 65535.0, header,
                       extra={"pixel_storage": "Normal", "elements": [
                           {"tag": "Property", "attributes": {"id": "Observation:Object:Name", "type": "String"},
                            "text": "M31", "data": None}]})
    io.write_image(folder / "rgb16_normal.xisf", np.moveaxis(planes, 0, -1) / 65535.0, rgb)
    return sorted(p for p in folder.iterdir() if io.format_of(p))


def _run(files: list[pathlib.Path], n: int, seed: int, show: int, timeout: int,
         keep: pathlib.Path | None = None) -> dict[str, int]:
    rng = np.random.default_rng(seed)
    counts = dict.fromkeys(OUTCOMES, 0)
    shown = 0
    blobs = [(path, path.read_bytes()) for path in files]
    with tempfile.TemporaryDirectory(prefix="astrotf-fuzz-") as work:
        source, out_dir = pathlib.Path(work) / "in", pathlib.Path(work) / "out"
        source.mkdir()
        out_dir.mkdir()
        for i in range(n):
            path, blob = blobs[int(rng.integers(len(blobs)))]
            operation = OPERATIONS[int(rng.integers(len(OPERATIONS)))]
            value = int(rng.integers(0, 256)) if rng.random() < 0.7 else int(rng.integers(0, 2**40))
            mutant = source / f"mutant{i}{_suffix(path)}"
            mutant.write_bytes(mutate(blob, operation, int(rng.integers(0, 2**31)), value,
                                      int(rng.integers(1, 64))))
            result = check(mutant, out_dir, timeout)
            counts[result.outcome] += 1
            if result.outcome in FAILURES and shown < show:
                shown += 1
                print(f"--- {result.outcome}: {path.name}, {operation} (mutant {i})\n{result.detail}", flush=True)
            if result.outcome in FAILURES and keep is not None:
                shutil.copy(mutant, keep / mutant.name)
            mutant.unlink()
            shutil.rmtree(out_dir)
            out_dir.mkdir()
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1000, help="number of mutants (default 1000)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--files", nargs="+", type=pathlib.Path,
                        help="seed files (default: astrotf/samples/* and generated small files)")
    parser.add_argument("--show", type=int, default=3, help="tracebacks to print (default 3)")
    parser.add_argument("--timeout", type=int, default=30, help="seconds per mutant before 'hang' (default 30)")
    parser.add_argument("--keep", type=pathlib.Path, help="folder to copy the failing mutants into")
    parser.add_argument("--verbose", action="store_true", help="let the libraries' own messages through")
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")
    logging.disable(logging.CRITICAL)
    if not args.verbose:  # libpng and libjpeg write to file descriptor 2 themselves
        os.dup2(os.open(os.devnull, os.O_WRONLY), 2)
    with tempfile.TemporaryDirectory(prefix="astrotf-seeds-") as seeds:
        files = args.files or [p for p in sorted(SAMPLES.iterdir()) if io.format_of(p)] + make_seeds(
            pathlib.Path(seeds))
        missing = [str(p) for p in files if not p.is_file()]
        if missing:
            parser.error(f"no such file: {' '.join(missing)}")
        counts = _run(files, args.n, args.seed, args.show, args.timeout, args.keep)
    print(f"{args.n} mutants of {len(files)} files (seed {args.seed}): "
          + ", ".join(f"{name} {count}" for name, count in counts.items()))
    return 1 if any(counts[name] for name in FAILURES) else 0


if __name__ == "__main__":
    sys.exit(main())
