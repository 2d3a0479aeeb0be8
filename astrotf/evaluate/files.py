"""`astrotf evaluate` on files: read the images and the catalogue, score, write the JSON record."""

from __future__ import annotations

import json
import os
from pathlib import Path

from astrotf.errors import AstroTFError
from astrotf.evaluate.catalogue import load_catalogue
from astrotf.evaluate.scores import Evaluation, EvaluationOptions, evaluate


def evaluate_files(output: str | os.PathLike, noisy: str | os.PathLike, reference: str | os.PathLike | None = None,
                   stars: str | os.PathLike | None = None, *, threshold: float = 3.0, radius: float = 2.0,
                   aperture: float | None = None, noise_range: tuple[float, float] | None = None,
                   data_range: float | None = None, strong: float | None = None) -> tuple[Evaluation, str]:
    """Score the denoised file ``output`` against the noisy file ``noisy`` it was made from.

    Parameters
    ----------
    output, noisy, reference : path
        Images (any format :func:`astrotf.io.read_image` reads); ``reference`` is a clean one.
    stars : path, optional
        Truth catalogue (see :func:`astrotf.evaluate.load_catalogue`).
    threshold, radius, noise_range, data_range, strong
        As :class:`EvaluationOptions` (``threshold``: its ``threshold_sigma``).
    aperture : float, optional
        Aperture radius in px; default 2.5 x the catalogue's FWHM, else 5. With a Moffat PSF
        in the catalogue (FWHM and BETA > 1), fluxes get its aperture correction.

    Returns
    -------
    evaluation : Evaluation
    notes : str
        One line saying where the stars came from and the detection settings.

    Raises
    ------
    AstroTFError
        Unreadable files, a bad option value (named), shapes that differ.
    """
    from astrotf import io
    from astrotf.metrics import moffat_enclosed_fraction

    catalogue, psf = load_catalogue(stars) if stars is not None else (None, {})
    data = {"output": io.read_image(output)[0], "input": io.read_image(noisy)[0]}
    if reference is not None:
        data["reference"] = io.read_image(reference)[0]
    if aperture is None:
        aperture = 2.5 * psf["fwhm"] if "fwhm" in psf else 5.0
    correction = 1.0
    if "fwhm" in psf and "beta" in psf and psf["beta"] > 1:
        correction = moffat_enclosed_fraction(aperture, psf["fwhm"], psf["beta"])
    try:
        options = EvaluationOptions(threshold_sigma=threshold, radius=radius, aperture=aperture,
                                    aperture_correction=correction, noise_range=noise_range,
                                    data_range=data_range, strong=strong)
    except ValueError as err:
        raise AstroTFError(str(err)) from err
    result = evaluate(data["output"], data["input"], data.get("reference"), catalogue, options)
    if stars or reference:
        notes = [f"stars: {stars}" if stars else "stars: detections on the reference",
                 f"threshold {threshold:g} x input sigma, match radius {radius:g} px, aperture {aperture:.3g} px"
                 + (f" (Moffat aperture correction {correction:.3f})" if correction != 1.0 else "")]
    else:
        notes = ["no star recovery: give --stars or --reference"]
    return result, "; ".join(notes)


def write_json(evaluation: Evaluation, path: str | os.PathLike, output: str | os.PathLike,
               noisy: str | os.PathLike, reference: str | os.PathLike | None = None,
               stars: str | os.PathLike | None = None) -> Path:
    """Write the file names, options and every score to ``path`` as JSON (NaN as null)."""
    record = {"output": str(output), "input": str(noisy), "reference": str(reference) if reference else None,
              "stars": str(stars) if stars else None, **evaluation.to_dict()}
    path = Path(path)
    path.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    return path
