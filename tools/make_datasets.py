"""Build the training folders of the shipped models and the bundled sample images.

Run from the repository root::

    python tools/make_datasets.py stellarium --out datasets/stellarium-rgb [--src DIR] [--reserved-out DIR]
    python tools/make_datasets.py starfields --out datasets/starfields --n 200 --size 512 --seed 0
    python tools/make_datasets.py starfields --prior --out datasets/prior-fields --n 1500 --size 256 --seed 7
    python tools/make_datasets.py sample

Nothing is downloaded except, for ``stellarium`` without ``--src``, Debian's ``stellarium-data`` package
(``apt-get download`` + ``dpkg-deb -x``). Nebula images whose name hashes to c-f are reserved for
evaluation (see the repository's benchmark rules) and never written to the training folder.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import click
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from astrotf.data.simulate import StarFieldConfig, simulate_star_field  # noqa: E402

NEBULAE = Path("usr/share/stellarium/nebulae/default")
DOCS = Path("usr/share/doc/stellarium-data")
MIN_SIDE = 256  # px, both sides
GREY_TOLERANCE = 3  # max |R-G|, |G-B| (8-bit) at which an RGB image still counts as grey
RESERVED_PREFIXES = "cdef"
SAMPLE_SEED = 2020
SAMPLE_RATIO = 4.0  # exposure-time ratio of the noisy sample
SAMPLE_READ_NOISE = 5.0  # electrons


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _write_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _empty_dir(path: Path) -> Path:
    if path.exists() and any(path.iterdir()):
        raise click.UsageError(f"{path} is not empty; remove it first.")
    path.mkdir(parents=True, exist_ok=True)
    return path


def is_reserved(name: str) -> bool:
    """True if the SHA-256 hex digest of ``name`` with or without its extension starts with c, d, e or f."""
    return any(hashlib.sha256(n.encode()).hexdigest()[0] in RESERVED_PREFIXES for n in (name, Path(name).stem))


def _to_rgb(image) -> np.ndarray | None:
    """8-bit RGB array of a PIL image, or None if it is grey. Alpha is composited over black."""
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in ("1", "L", "LA", "I", "I;16", "F"):
        return None
    if image.mode == "RGBA":
        rgba = np.asarray(image).astype(np.float64)
        rgb = np.rint(rgba[..., :3] * rgba[..., 3:] / 255.0).astype(np.uint8)
    else:
        rgb = np.asarray(image.convert("RGB"))
    if np.abs(np.diff(rgb.astype(np.int16), axis=-1)).max() <= GREY_TOLERANCE:
        return None
    return rgb


def _package_version(src: Path) -> str:
    changelog = src / DOCS / "changelog.Debian.gz"
    if changelog.exists():
        match = re.match(r"\S+ \(([^)]+)\)", gzip.open(changelog, "rt", encoding="utf-8").readline())
        if match:
            return match.group(1)
    return "unknown"


def _credits(src: Path, version: str) -> dict:
    """Package version, licence summary and the per-image credits of textures.json."""
    text = (src / NEBULAE / "textures.json").read_text(encoding="utf-8")
    text = re.sub(r"(?<![\w.])(-?)\.(\d)", r"\g<1>0.\2", text)  # the file has numbers like -.98 (not JSON)
    images = {}
    for tile in json.loads(text)["subTiles"]:
        credit = {k.lower(): v for k, v in tile.get("imageCredits", {}).items()}
        images[tile["imageUrl"]] = {"credit": credit.get("short"), "info_url": credit.get("infourl")}
    copyright_text = (src / DOCS / "copyright").read_text(encoding="utf-8")
    package_licence = re.search(r"^License:\s*(\S+)", copyright_text, re.MULTILINE)
    graphics = ""
    if (src / DOCS / "CREDITS.md.gz").exists():
        credits_md = gzip.open(src / DOCS / "CREDITS.md.gz", "rt", encoding="utf-8").read()
        match = re.search(r"^4\. Graphics\n(.*?)^## ", credits_md, re.MULTILINE | re.DOTALL)
        graphics = match.group(1).expandtabs(8).rstrip() if match else ""
    return {
        "source": {
            "package": "stellarium-data",
            "version": version,
            "archive": "Debian (apt-get download stellarium-data; dpkg-deb -x)",
            "path": str(NEBULAE),
        },
        "licence_summary": (
            f"The stellarium-data package is licensed {package_licence.group(1) if package_licence else '?'} "
            "(debian/copyright, 'Files: *'). The nebula photographs keep their authors' terms, listed per "
            "author in section 4 'Graphics' of Stellarium's CREDITS.md (below, and in LICENSES/) and section 8 "
            "of debian/copyright: Creative Commons BY / BY-SA (2.5-4.0), CC0 and public domain (NASA, ESA/Hubble, "
            "several amateurs), GFDL, and permissions to use freely with credit (e.g. Grasslands Observatory). "
            "Credit each image's author (see 'images') wherever the images or derived data are redistributed."
        ),
        "licence_files": ["LICENSES/stellarium-data.copyright", "LICENSES/CREDITS.md"],
        "graphics_credits": graphics,
        "images": images,
    }


def _write_credits(folder: Path, src: Path, credits: dict, names: list[str]) -> None:
    (folder / "LICENSES").mkdir(exist_ok=True)
    shutil.copyfile(src / DOCS / "copyright", folder / "LICENSES/stellarium-data.copyright")
    if (src / DOCS / "CREDITS.md.gz").exists():
        (folder / "LICENSES/CREDITS.md").write_bytes(gzip.open(src / DOCS / "CREDITS.md.gz").read())
    _write_json(folder / "CREDITS.json", {**credits, "images": {n: credits["images"].get(n) for n in names}})


@click.group()
def main():
    """Build astrotf's training folders and bundled samples."""


@main.command()
@click.option("--out", type=click.Path(path_type=Path), default=Path("datasets/stellarium-rgb"), show_default=True)
@click.option("--src", type=click.Path(path_type=Path, exists=True, file_okay=False),
              help="Extracted stellarium-data package (the root that holds usr/); downloaded if omitted.")
@click.option("--reserved-out", type=click.Path(path_type=Path),
              help="Folder for the reserved evaluation images (not written if omitted).")
def stellarium(out: Path, src: Path | None, reserved_out: Path | None):
    """Nebula photographs of Debian's stellarium-data as 8-bit RGB PNGs, reserved images held out."""
    from PIL import Image

    with tempfile.TemporaryDirectory() as tmp:
        if src is None:
            subprocess.run(["apt-get", "download", "stellarium-data"], cwd=tmp, check=True)
            (deb,) = Path(tmp).glob("stellarium-data_*.deb")
            src = Path(tmp) / "x"
            subprocess.run(["dpkg-deb", "-x", str(deb), str(src)], check=True)
        if not (src / NEBULAE).is_dir():
            raise click.BadParameter(f"no {NEBULAE} under {src}", param_hint="--src")
        clean = _empty_dir(out / "clean")
        reserved_dir = _empty_dir(reserved_out) if reserved_out else None
        credits = _credits(src, _package_version(src))

        entries, written = [], {"clean": [], "reserved": []}
        for path in sorted((src / NEBULAE).glob("*.png")):
            with Image.open(path) as image:
                entry = {"name": path.name, "width": image.width, "height": image.height, "mode": image.mode,
                         "source_bytes": path.stat().st_size, "source_sha256": _sha256(path),
                         "reserved": is_reserved(path.name), "excluded_by": None, "written": None}
                if min(image.size) < MIN_SIDE:
                    entry["excluded_by"] = "too_small"
                elif (rgb := _to_rgb(image)) is None:
                    entry["excluded_by"] = "grey"
            folder = reserved_dir if entry["reserved"] else clean
            if entry["excluded_by"] is None and folder is not None:
                target = folder / path.name
                Image.fromarray(rgb, mode="RGB").save(target)
                written["reserved" if entry["reserved"] else "clean"].append(path.name)
                entry.update(written=str(Path("clean") / path.name) if folder is clean else str(target),
                             bytes=target.stat().st_size, sha256=_sha256(target))
            entries.append(entry)

        def count(reserved: bool) -> dict:
            group = [e for e in entries if e["reserved"] == reserved]
            return {"total": len(group), "written": sum(e["written"] is not None for e in group),
                    "too_small": sum(e["excluded_by"] == "too_small" for e in group),
                    "grey": sum(e["excluded_by"] == "grey" for e in group)}

        counts = {"source_images": len(entries), "training": count(False), "reserved": count(True)}
        _write_credits(out, src, credits, written["clean"])
        if reserved_dir is not None:
            _write_credits(reserved_dir, src, credits, written["reserved"])
        _write_json(out / "MANIFEST.json", {
            "source": credits["source"],
            "rules": {
                "reserved": "SHA-256 hex digest of the file name, with or without extension, starts with c, d, e "
                            "or f: held out for evaluation (never in clean/)",
                "too_small": f"width or height < {MIN_SIDE} px",
                "grey": f"grey mode (L, LA, I, F) or max |R-G|, |G-B| <= {GREY_TOLERANCE} at every pixel",
                "conversion": "palette expanded; alpha composited over black; saved as 8-bit RGB PNG",
            },
            "counts": counts,
            "files": entries,
        })
    click.echo(json.dumps(counts))


@main.command()
@click.option("--out", type=click.Path(path_type=Path), default=Path("datasets/starfields"), show_default=True)
@click.option("--n", type=click.IntRange(1, 999_999), default=200, show_default=True, help="Number of fields.")
@click.option("--size", type=click.IntRange(16), default=512, show_default=True, help="Field side in px.")
@click.option("--seed", type=click.IntRange(0), default=0, show_default=True,
              help="Field i uses seed * 1000000 + i.")
@click.option("--prior", is_flag=True,
              help="Draw the fields from the broad training prior of the noise-conditioned linear models "
                   "(astrotf.data.prior.training_prior) instead of the default StarFieldConfig.")
def starfields(out: Path, n: int, size: int, seed: int, prior: bool):
    """Noise-free simulated star fields (float32 FITS, electrons) with truth catalogues (CSV)."""
    from astropy.io import fits

    from astrotf.data.prior import training_prior

    clean = _empty_dir(out / "clean")
    config = training_prior((size, size)).field if prior else StarFieldConfig(shape=(size, size))
    files = []
    for i in range(n):
        field_seed = seed * 1_000_000 + i
        image, catalogue = simulate_star_field(config, seed=field_seed)
        header = _field_header(config, catalogue)
        fits_path, csv_path = clean / f"field_{i:05d}.fits", clean / f"field_{i:05d}.csv"
        fits.PrimaryHDU(image, header=header).writeto(fits_path)
        catalogue.write(csv_path, format="ascii.csv")
        files.append({"name": fits_path.name, "bytes": fits_path.stat().st_size, "sha256": _sha256(fits_path),
                      "catalogue": csv_path.name, "catalogue_sha256": _sha256(csv_path), "seed": field_seed,
                      "n_stars": header["NSTARS"], "n_galaxies": header["NGALAXY"],
                      "fwhm": header["FWHM"], "sky": header["SKY"]})
    _write_json(out / "MANIFEST.json", {
        "generator": "astrotf.data.simulate.simulate_star_field (tools/make_datasets.py starfields"
                     + (" --prior)" if prior else ")"),
        "units": "electron", "noise": "none", "seed": seed, "config": dataclasses.asdict(config),
        "counts": {"fields": n}, "files": files,
    })
    click.echo(json.dumps({"fields": n, "out": str(out)}))


def _field_header(config: StarFieldConfig, catalogue):
    """FITS header describing a simulated field: units, seed, realised parameters and the full config."""
    from astropy.io import fits

    meta = catalogue.meta
    header = fits.Header()
    header["SIMUNITS"] = ("electron", "units of the simulated pixel values")
    header["BUNIT"] = "electron"
    header["SEED"] = (meta["seed"], "seed of simulate_star_field")
    header["NSTARS"] = (int(np.sum(catalogue["kind"] == "star")), "number of stars")
    header["NGALAXY"] = (int(np.sum(catalogue["kind"] == "galaxy")), "number of Sersic galaxies")
    header["FWHM"] = (meta["fwhm"], "[px] Moffat PSF FWHM")
    header["BETA"] = (meta["moffat_beta"], "Moffat power index")
    header["SKY"] = (meta["sky"], "[electron] sky level per pixel")
    header["SKYGRAD"] = (meta["sky_gradient"], "sky peak-to-peak change / sky level")
    header["SIMCONF"] = json.dumps(dataclasses.asdict(config))
    return header


@main.command()
@click.option("--out", type=click.Path(path_type=Path), default=ROOT / "astrotf/samples", show_default=True)
def sample(out: Path):
    """Bundled demo images: the Hubble XDF as 16-bit RGB TIFF and a noisy simulated star field (FITS)."""
    import skimage.data
    import tifffile
    from astropy.io import fits
    from astropy.table import Table

    out.mkdir(parents=True, exist_ok=True)
    hdf = skimage.data.hubble_deep_field().astype(np.uint16) * 257
    tifffile.imwrite(out / "hubble_deep_field.tif", hdf, photometric="rgb", compression="zlib")

    config = StarFieldConfig()
    clean, catalogue = simulate_star_field(config, seed=SAMPLE_SEED)
    rng = np.random.default_rng(SAMPLE_SEED + 1)
    r = SAMPLE_RATIO
    noisy = rng.poisson(clean.astype(np.float64) / r) * r + rng.normal(0.0, SAMPLE_READ_NOISE, clean.shape) * r
    header = _field_header(config, catalogue)
    header["OBJECT"] = ("Simulated star field", "astrotf.data.simulate, see samples/README.md")
    header["EXPRATIO"] = (r, "exposure-time ratio, truth / noisy frame")
    # the short exposure's electrons times r: data units of 1/r electron, i.e. ADU at a gain of 1/r
    header["BUNIT"] = ("adu", "electrons of the short exposure x EXPRATIO")
    header["GAIN"] = (1.0 / r, "[electron/adu] of the short exposure")
    header["RDNOISE"] = (SAMPLE_READ_NOISE, "[electron] read noise of the short exposure")
    header["NOISESD"] = (SAMPLE_SEED + 1, "seed of the noise generator")
    header.add_comment(f"data = Poisson(truth / {r:g}) * {r:g} + N(0, RDNOISE) * {r:g}: a 1/{r:g} exposure")
    header.add_comment("scaled back to the truth's level (Vojtekova et al. 2020, eq. 4).")
    header.add_comment("Extension TRUTH: source catalogue, x = column, y = row (0-based).")
    truth = fits.table_to_hdu(Table(catalogue, meta={}))
    truth.name = "TRUTH"
    fits.HDUList([fits.PrimaryHDU(noisy.astype(np.float32), header=header), truth]).writeto(
        out / "starfield.fits", overwrite=True)
    (out / "README.md").write_text(SAMPLES_README.format(seed=SAMPLE_SEED, ratio=r, ron=SAMPLE_READ_NOISE),
                                   encoding="utf-8")
    for path in sorted(out.iterdir()):
        click.echo(f"{path.name}\t{path.stat().st_size} bytes")


SAMPLES_README = """\
# astrotf sample images

Written by `python tools/make_datasets.py sample`; do not edit by hand.

## hubble_deep_field.tif

The Hubble eXtreme Deep Field (HubbleSite news release 2012-37), 1000 x 872 px, as shipped with
scikit-image (`skimage.data.hubble_deep_field()`, 8-bit RGB), stored as a 16-bit RGB TIFF (value x 257,
zlib) so that the quickstart exercises the 16-bit path. It is a stretched, non-linear colour image.

Credit: NASA, ESA, G. Illingworth, D. Magee and P. Oesch (University of California, Santa Cruz),
R. Bouwens (Leiden University) and the HUDF09 Team. Public domain as NASA imagery (scikit-image's note:
"captured by NASA and may be freely used in the public domain").

## starfield.fits

A 512 x 512 linear mono star field simulated by `astrotf.data.simulate.simulate_star_field` with the
default `StarFieldConfig` (seed {seed}): Moffat stars, PSF-convolved Sersic galaxies, flat sky, in
electrons. Noise as in the Astro U-net paper (Vojtekova et al. 2020, eq. 4) at exposure-time ratio
{ratio:g}: `poisson(truth / {ratio:g}) * {ratio:g} + normal(0, {ron:g} e-) * {ratio:g}` (noise seed {seed} + 1).
The data are thus the short exposure's electrons times {ratio:g}, which the header states as a noise
model: `BUNIT = 'adu'`, `GAIN = 1/{ratio:g}` e-/ADU, `RDNOISE = {ron:g}` e-. The header lists the simulation parameters; the `TRUTH` extension holds the source catalogue
(x = column, y = row, 0-based pixel centres; flux in electrons). The noise-free field is
`simulate_star_field(StarFieldConfig(), seed={seed})`.

Licence: generated by astrotf, same licence as astrotf (BSD-3-Clause).
"""


if __name__ == "__main__":
    main()
