"""Scoring of a denoised image against its noisy input, a clean reference and a star catalogue.

`evaluate` gathers the measures of `astrotf.metrics` into one `Evaluation` — noise in physical
units, what changed and at which spatial frequencies, fidelity to a reference, and star recovery
the way the Astro U-net paper reports it (TPR, false positives, precision, F1, flux error, SNR
gain) — `format_table` prints it and `write_plots` draws what a person should look at: the
residual map, histograms with their Gaussian fits, power spectra and flux error against flux.
No TensorFlow import (``astrotf evaluate`` scores outputs of any denoiser).

References
----------
Vojtekova et al. 2020, MNRAS 503, 3204, §4 (Astro U-net); TDR (Self2Self train-denoise-restore),
Figs. 2-4; ../shared/BENCHMARKS.md of the project workspace.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import warnings
from pathlib import Path

import numpy as np

from astrotf import metrics
from astrotf.errors import AstroTFError, check_fields

log = logging.getLogger(__name__)

COLUMNS = ("input", "output", "reference")


@dataclasses.dataclass(frozen=True)
class EvaluationOptions:
    """Settings of `evaluate`.

    Parameters
    ----------
    threshold_sigma : float
        Detection threshold in units of the noisy input's background sigma. The absolute value
        ``threshold_sigma * sigma_input`` is used for every image ("fixed" view); the "own" view
        uses ``threshold_sigma`` times each image's own background sigma (as SExtractor is run).
    radius : float
        Matching radius, pixels.
    aperture : float
        Aperture radius for fluxes and SNR, pixels.
    aperture_correction : float
        Fraction of a star's flux inside the aperture, (0, 1]; divides measured fluxes when they
        are compared with catalogue total fluxes (not for a reference's detections).
    min_flux : float
        Only catalogue stars brighter than this enter the flux error.
    noise_range : (float, float) or None
        Value range of the Gaussian histogram fit (noise level); default: the input's background
        median ± 5 background sigma.
    data_range : float or None
        Data range of PSNR/SSIM; default: max - min of the reference.
    tolerance : float
        Relative power difference at which two spectra "differ".
    strong : float or None
        Pixels whose input is more than this above or below the input's background level are
        "strong" (the output-vs-input slope over them is not diluted by noise); default 10
        background sigma. For magnetograms the TDR figure is 50 (G), with ``noise_range``.
    """

    threshold_sigma: float = 3.0
    radius: float = 2.0
    aperture: float = 5.0
    aperture_correction: float = 1.0
    min_flux: float = 0.0
    noise_range: tuple[float, float] | None = None
    data_range: float | None = None
    tolerance: float = 0.1
    strong: float | None = None

    def __post_init__(self):
        positive = ("threshold_sigma", "radius", "aperture", "tolerance")
        check_fields(self, [(n, _finite(getattr(self, n)) and getattr(self, n) > 0, "a finite number > 0")
                            for n in positive])
        check_fields(self, [
            ("aperture_correction", _finite(self.aperture_correction) and 0 < self.aperture_correction <= 1,
             "a number in (0, 1]"),
            ("min_flux", _finite(self.min_flux), "a finite number"),
            ("strong", self.strong is None or (_finite(self.strong) and self.strong >= 0), "None or a number >= 0"),
            ("noise_range", self.noise_range is None or (len(self.noise_range) == 2
                                                         and all(_finite(v) for v in self.noise_range)
                                                         and self.noise_range[0] < self.noise_range[1]),
             "None or (low, high) with low < high"),
            ("data_range", self.data_range is None or (_finite(self.data_range) and self.data_range > 0),
             "None or a finite number > 0"),
        ])


def _finite(value) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool) \
        and math.isfinite(value)


@dataclasses.dataclass(frozen=True)
class Evaluation:
    """Scores of one output.

    Attributes
    ----------
    scores : dict
        ``{quantity: {"input": v, "output": v, "reference": v}}`` (columns that do not apply are
        absent); quantities in display order, see `QUANTITIES`.
    options : EvaluationOptions
    planes : dict
        The 2-D planes scored (``input``, ``output``, ``reference``; luminance for colour
        images), for plots.
    noise_fits : dict
        `metrics.NoiseFit` per column (absent where the fit failed).
    spectra : dict
        ``(frequency, power)`` per column.
    stars : dict
        `metrics.StarRecovery` per column for the fixed-threshold view (``fixed``), the own-RMS
        view (``own``) and the matched view (``matched``: each image at the lowest threshold that
        gives no more false positives than the input at its own RMS threshold, see
        :func:`astrotf.metrics.recovery_at_false_positives`):
        ``{"fixed": {column: ...}, "own": {...}, "matched": {...}}``; empty without a catalogue.
    """

    scores: dict
    options: EvaluationOptions
    planes: dict = dataclasses.field(repr=False)
    noise_fits: dict = dataclasses.field(repr=False)
    spectra: dict = dataclasses.field(repr=False)
    stars: dict = dataclasses.field(repr=False)

    def to_dict(self) -> dict:
        """Scores and options as JSON-ready values (NaN and infinities as None)."""
        return {"options": to_jsonable(dataclasses.asdict(self.options)), "scores": to_jsonable(self.scores)}


def to_jsonable(value, skip: tuple = ()):
    """Nested dicts/lists of NumPy and Python scalars as JSON values: NaN and infinities become None.

    Dictionary keys in ``skip`` are left out (e.g. arrays kept for plots).
    """
    if isinstance(value, dict):
        return {k: to_jsonable(v, skip) for k, v in value.items() if k not in skip}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v, skip) for v in value]
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, (np.integer, np.bool_)):
        return value.item()
    return value


# (key, label, format) in display order; a table shows the rows that have values
QUANTITIES = [
    ("background_median", "background level (sigma-clipped median)", "{:.4g}"),
    ("background_sigma", "background noise (sigma-clipped MAD)", "{:.4g}"),
    ("noise_level", "noise level (Gaussian fit to histogram)", "{:.4g}"),
    ("max_abs_change", "max abs(output - input)", "{:.4g}"),
    ("pearson_input", "Pearson r with input", "{:.4f}"),
    ("slope_input", "slope of linear fit vs input", "{:.4f}"),
    ("spectra_differ_input", "spectrum differs from input above (cyc/px)", "{:.3f}"),
    ("slope_strong_input", "slope vs input over strong pixels", "{:.4f}"),
    ("n_strong", "strong pixels (|input - background| > strong)", "{:d}"),
    ("residual_structure", "structure in input - output above 10 px (1 = none)", "{:.2f}"),
    ("psnr", "PSNR vs reference (dB)", "{:.2f}"),
    ("ssim", "SSIM vs reference", "{:.4f}"),
    ("kl", "KL(reference, image) of pixel values", "{:.4g}"),
    ("pearson_reference", "Pearson r with reference", "{:.4f}"),
    ("slope_reference", "slope of linear fit vs reference", "{:.4f}"),
    ("spectra_differ_reference", "spectrum differs from reference above (cyc/px)", "{:.3f}"),
    ("n_truth", "catalogue sources", "{:d}"),
    ("threshold", "fixed detection threshold (data units)", "{:.4g}"),
    ("detected", "detections (fixed threshold)", "{:d}"),
    ("true_positives", "true positives (fixed)", "{:d}"),
    ("false_positives", "false positives (fixed)", "{:d}"),
    ("tpr", "TPR (fixed)", "{:.3f}"),
    ("precision", "precision (fixed)", "{:.3f}"),
    ("f1", "F1 (fixed)", "{:.3f}"),
    ("flux_error_mean", "mean rel. flux error (fixed)", "{:+.4f}"),
    ("flux_error_median", "median rel. flux error (fixed)", "{:+.4f}"),
    ("n_flux", "stars in flux error (fixed)", "{:d}"),
    ("detected_own", "detections (own RMS)", "{:d}"),
    ("true_positives_own", "true positives (own RMS)", "{:d}"),
    ("false_positives_own", "false positives (own RMS)", "{:d}"),
    ("tpr_own", "TPR (own RMS)", "{:.3f}"),
    ("precision_own", "precision (own RMS)", "{:.3f}"),
    ("f1_own", "F1 (own RMS)", "{:.3f}"),
    ("threshold_matched", "threshold at the input's FP (own sigmas)", "{:.3g}"),
    ("true_positives_matched", "true positives (input's FP)", "{:d}"),
    ("false_positives_matched", "false positives (input's FP)", "{:d}"),
    ("tpr_matched", "TPR (input's FP)", "{:.3f}"),
    ("snr_gain", "SNR gain vs input (eq. 28)", "{:.3f}"),
]


def _plane(image: np.ndarray) -> np.ndarray:
    """(H, W) float64: the image itself, its only channel, or the mean of its channels."""
    data = np.asarray(image, dtype=np.float64)
    if data.ndim == 3:
        data = data[..., 0] if data.shape[-1] == 1 else data.mean(axis=-1)
    return data


def _safe(func, *args, **kwargs):
    """``func(...)``, or None with a log line when the metric is undefined for these data.

    Warnings (an astropy fit that did not converge on a noise-free reference) go to the log.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            result = func(*args, **kwargs)
        except ValueError as err:
            log.info("%s skipped: %s", getattr(func, "__name__", func), err)
            result = None
    for warning in caught:
        log.info("%s: %s", getattr(func, "__name__", func), str(warning.message).strip().splitlines()[0])
    return result


def evaluate(
    output: np.ndarray,
    noisy: np.ndarray,
    reference: np.ndarray | None = None,
    stars: metrics.Catalogue | None = None,
    options: EvaluationOptions = EvaluationOptions(),
) -> Evaluation:
    """Score a denoised image against its noisy input (and a clean reference and a catalogue).

    Parameters
    ----------
    output, noisy : ndarray
        Denoised image and the noisy input it came from: (H, W) or (H, W, C), data units.
    reference : ndarray, optional
        Clean image of the same shape (long exposure, noise-free simulation).
    stars : metrics.Catalogue, optional
        Sources to recover. Without one but with a reference, the sources detected on the
        reference at the fixed threshold (with aperture fluxes) serve as the catalogue.
    options : EvaluationOptions

    Returns
    -------
    Evaluation

    Raises
    ------
    astrotf.errors.AstroTFError
        If the shapes differ.

    Notes
    -----
    Colour images: PSNR and SSIM use all channels; the other measures use the channel mean.
    """
    images = {"input": noisy, "output": output}
    if reference is not None:
        images["reference"] = reference
    shapes = {k: np.shape(v) for k, v in images.items()}
    if len(set(shapes.values())) != 1:
        raise AstroTFError("images differ in shape: " + ", ".join(f"{k} {v}" for k, v in shapes.items()))
    planes = {k: _plane(v) for k, v in images.items()}
    scores: dict = {}

    def put(key, column, value):
        if value is not None:
            scores.setdefault(key, {})[column] = value

    background = {k: _safe(metrics.background_noise, p) for k, p in planes.items()}
    if background["input"] is None:
        raise AstroTFError("input: too few finite pixels to measure the background noise")
    sigma_in = background["input"].sigma
    low, high = options.noise_range or (background["input"].median - 5 * sigma_in,
                                        background["input"].median + 5 * sigma_in)
    noise_fits, spectra = {}, {}
    for column, plane in planes.items():
        if background[column] is not None:
            put("background_median", column, background[column].median)
            put("background_sigma", column, background[column].sigma)
        fit = _safe(metrics.noise_level, plane, (low, high), 100) if high > low else None
        if fit is not None:
            noise_fits[column] = fit
            put("noise_level", column, fit.sigma)
        spectrum = _safe(metrics.power_spectrum, plane)
        if spectrum is not None:
            spectra[column] = spectrum

    out, inp = planes["output"], planes["input"]
    both = np.isfinite(out) & np.isfinite(inp)
    put("max_abs_change", "output", float(np.max(np.abs(out[both] - inp[both]))) if both.any() else None)
    fit = _safe(metrics.correlation, inp, out)
    if fit is not None:
        put("pearson_input", "output", fit.pearson)
        put("slope_input", "output", fit.slope)
    if min(out.shape) >= 8:
        put("spectra_differ_input", "output", metrics.divergence_frequency(inp, out, options.tolerance))
    strong = options.strong if options.strong is not None else 10 * sigma_in
    kept = metrics.strong_slope(inp, out, strong, background["input"].median)
    put("n_strong", "output", kept.n_pixels)
    if kept.n_pixels >= 10:
        put("slope_strong_input", "output", kept.slope)
    put("residual_structure", "output", _safe(metrics.residual_structure, inp - out))

    if reference is not None:
        ref = planes["reference"]
        channel_axis = -1 if np.ndim(reference) == 3 and np.shape(reference)[-1] > 1 else None
        for column in ("input", "output"):
            arr = np.asarray(images[column], np.float64)
            ref_arr = np.asarray(reference, np.float64)
            if channel_axis is None:
                arr, ref_arr = _plane(arr), _plane(ref_arr)
            put("psnr", column, _safe(metrics.psnr, ref_arr, arr, options.data_range))
            if min(ref.shape) >= 7:
                put("ssim", column, _safe(metrics.ssim, ref_arr, arr, options.data_range, channel_axis))
            put("kl", column, _safe(metrics.kl_divergence, ref, planes[column]))
            fit = _safe(metrics.correlation, ref, planes[column])
            if fit is not None:
                put("pearson_reference", column, fit.pearson)
                put("slope_reference", column, fit.slope)
            if min(ref.shape) >= 8:
                put("spectra_differ_reference", column,
                    metrics.divergence_frequency(ref, planes[column], options.tolerance))

    recoveries: dict = {}
    threshold = options.threshold_sigma * sigma_in
    correction = options.aperture_correction
    if stars is None and reference is not None:
        stars = _safe(metrics.reference_catalogue, planes["reference"], threshold, options.aperture)
        correction = 1.0
    if stars is not None and sigma_in > 0:
        recoveries = {"fixed": {}, "own": {}, "matched": {}}
        kwargs = {"radius": options.radius, "aperture": options.aperture, "aperture_correction": correction,
                  "min_flux": options.min_flux}
        for column, plane in planes.items():
            fixed = metrics.star_recovery(plane, stars, threshold, **kwargs)
            recoveries["fixed"][column] = fixed
            for key in ("n_truth", "threshold", "true_positives", "false_positives", "tpr", "precision", "f1",
                        "flux_error_mean", "flux_error_median"):
                put(key, column, getattr(fixed, key))
            put("detected", column, fixed.n_detected)
            put("n_flux", column, int(fixed.truth_flux.size))
            own_sigma = background[column].sigma if background[column] is not None else 0.0
            if own_sigma > 0:
                own = metrics.star_recovery(plane, stars, options.threshold_sigma * own_sigma, **kwargs)
                recoveries["own"][column] = own
                put("detected_own", column, own.n_detected)
                for key in ("true_positives", "false_positives", "tpr", "precision", "f1"):
                    put(f"{key}_own", column, getattr(own, key))
        budget = recoveries["own"].get("input")
        for column, plane in planes.items():  # every image at the input's false-positive count
            own_sigma = background[column].sigma if background[column] is not None else 0.0
            if budget is None or own_sigma <= 0 or column == "reference":
                continue
            matched = metrics.recovery_at_false_positives(
                plane, stars, budget.false_positives, own_sigma, radius=options.radius,
                aperture=options.aperture, aperture_correction=correction)
            recoveries["matched"][column] = matched
            put("threshold_matched", column, matched.threshold / own_sigma)
            for key in ("true_positives", "false_positives", "tpr"):
                put(f"{key}_matched", column, getattr(matched, key))
        found = recoveries["fixed"]["input"].matched
        put("snr_gain", "output", _safe(metrics.snr_gain, out, inp, stars.x[found], stars.y[found], options.aperture))
    ordered = {key: scores[key] for key, _, _ in QUANTITIES if key in scores}
    return Evaluation(scores=ordered, options=options, planes=planes, noise_fits=noise_fits, spectra=spectra,
                      stars=recoveries)


def format_table(evaluation: Evaluation) -> str:
    """The scores as an aligned markdown table: one row per quantity, one column per image."""
    columns = [c for c in COLUMNS if any(c in row for row in evaluation.scores.values())]
    formats = {key: (label, fmt) for key, label, fmt in QUANTITIES}
    rows = []
    for key, values in evaluation.scores.items():
        label, fmt = formats[key]
        cells = []
        for column in columns:
            value = values.get(column)
            if value is None or (isinstance(value, float) and math.isnan(value)):
                cells.append("–" if column not in values else "n/a")
            else:
                cells.append(fmt.format(int(value)) if fmt == "{:d}" else fmt.format(value))
        rows.append([label, *cells])
    header = ["quantity", *columns]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells):
        padded = [c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths))]
        return "| " + " | ".join(padded) + " |"

    sep = "|" + "|".join(("-" * (w + 1) + ":") if i else "-" * (w + 2) for i, w in enumerate(widths)) + "|"
    return "\n".join([line(header), sep, *(line(r) for r in rows)])


# ----------------------------------------------------------------------------- catalogues
def load_catalogue(path: str | os.PathLike) -> tuple[metrics.Catalogue, dict]:
    """Read a star catalogue: CSV with columns x, y, flux (optional kind, fwhm), or a FITS table.

    FITS: the ``TRUTH`` extension if there is one (as in astrotf's simulated fields), else the
    first table extension. x is the column and y the row, 0-based, pixel centres at integers.

    Returns
    -------
    catalogue : metrics.Catalogue
    psf : dict
        What the file says of the PSF: ``fwhm`` (median of a ``fwhm`` column, or the FITS header
        keyword ``FWHM``) and ``beta`` (header ``BETA``, Moffat index), where known.

    Raises
    ------
    astrotf.errors.AstroTFError
        One line naming the file: missing, unreadable, no table, or missing columns.
    """
    from astropy.io import ascii as astropy_ascii
    from astropy.io import fits
    from astropy.table import Table

    path = Path(path)
    if not path.is_file():
        raise AstroTFError(f"{path}: no such catalogue file (--stars)")
    psf: dict = {}
    name = path.name.lower()
    try:
        if name.endswith((".fits", ".fit", ".fts", ".fits.gz")):
            with fits.open(path) as hdul:
                tables = [h for h in hdul if isinstance(h, (fits.BinTableHDU, fits.TableHDU))]
                truth = next((h for h in tables if h.name == "TRUTH"), tables[0] if tables else None)
                if truth is None:
                    raise AstroTFError(f"{path}: no table extension (expected TRUTH) in this FITS file (--stars)")
                table = Table.read(truth)
                for header in (hdul[0].header, truth.header):
                    for key in ("FWHM", "BETA"):
                        if key in header:
                            psf[key.lower()] = float(header[key])
        else:
            table = astropy_ascii.read(path, format="csv")
    except AstroTFError:
        raise
    except Exception as err:  # noqa: BLE001 - any parser failure is one line for the user
        text = str(err).strip().splitlines()
        raise AstroTFError(f"{path}: cannot read the catalogue ({text[0] if text else type(err).__name__})") from err
    try:
        catalogue = metrics.Catalogue.from_table(table)
    except ValueError as err:
        raise AstroTFError(f"{path}: {err}") from err
    if "fwhm" in table.colnames:
        values = np.asarray(table["fwhm"], dtype=np.float64)
        if np.isfinite(values).any():
            psf["fwhm"] = float(np.nanmedian(values))
    return catalogue, psf


# ----------------------------------------------------------------------------- plots
def write_plots(evaluation: Evaluation, directory: str | os.PathLike, dpi: int = 90) -> list[Path]:
    """Residual map, histograms with Gaussian fits, power spectra and flux error against flux.

    PNG files in ``directory`` (created): ``residual.png``, ``histograms.png``,
    ``power_spectra.png`` and, with stars, ``flux_error.png``. Matplotlib's Agg backend: no
    display needed.

    Returns
    -------
    list of pathlib.Path
        The files written.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    planes, scores = evaluation.planes, evaluation.scores
    sigma = scores["background_sigma"]["input"] or 1.0
    written = []
    colours = {"input": "tab:grey", "output": "tab:blue", "reference": "tab:green"}

    # residual maps
    panels = [("output - input", planes["output"] - planes["input"])]
    if "reference" in planes:
        panels.append(("output - reference", planes["output"] - planes["reference"]))
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4.6), squeeze=False)
    for ax, (title, residual) in zip(axes[0], panels):
        im = ax.imshow(residual, origin="lower", cmap="RdBu_r", vmin=-3 * sigma, vmax=3 * sigma,
                       interpolation="nearest")
        ax.set_title(f"{title} (±3σ_input)")
        fig.colorbar(im, ax=ax, fraction=0.046)
    written.append(_save(fig, directory / "residual.png", dpi))

    # histograms with the Gaussian fits
    fig, ax = plt.subplots(figsize=(6, 4.2))
    for column, fit in evaluation.noise_fits.items():
        ax.step(fit.centers, fit.counts, where="mid", color=colours[column], alpha=0.7, label=f"{column}")
        ax.plot(fit.centers, fit.model(fit.centers), color=colours[column], ls="--",
                label=f"Gaussian fit σ = {fit.sigma:.3g}")
    ax.set_yscale("log")
    ax.set_ylim(bottom=0.5)
    ax.set_xlabel("pixel value")
    ax.set_ylabel("pixels per bin")
    ax.set_title("pixel-value histograms and Gaussian fits (noise level)")
    ax.legend(fontsize=8)
    written.append(_save(fig, directory / "histograms.png", dpi))

    # power spectra
    fig, ax = plt.subplots(figsize=(6, 4.2))
    for column, (freq, power) in evaluation.spectra.items():
        ax.loglog(freq, power, color=colours[column], label=column)
    f_diff = scores.get("spectra_differ_input", {}).get("output")
    if f_diff is not None:
        ax.axvline(f_diff, color="k", ls="--", lw=1, label=f"output differs from input above {f_diff:.3f}")
    ax.set_xlabel("spatial frequency (cycles / pixel)")
    ax.set_ylabel("power")
    ax.set_title("azimuthally averaged power spectra")
    ax.legend(fontsize=8)
    written.append(_save(fig, directory / "power_spectra.png", dpi))

    # flux error against flux
    fixed = evaluation.stars.get("fixed", {})
    if any(r.truth_flux.size for r in fixed.values()):
        fig, ax = plt.subplots(figsize=(6, 4.2))
        for column, rec in fixed.items():
            if rec.truth_flux.size:
                ax.scatter(rec.truth_flux, rec.measured_flux / rec.truth_flux - 1.0, s=8, alpha=0.6,
                           color=colours[column], label=f"{column} (median {rec.flux_error_median:+.3f})")
        ax.axhline(0.0, color="k", lw=0.8)
        ax.set_xscale("log")
        ax.set_xlabel("catalogue flux")
        ax.set_ylabel("relative flux error (F - F_true) / F_true")
        ax.set_ylim(-1, 1)
        ax.set_title("flux error of matched stars (fixed threshold)")
        ax.legend(fontsize=8)
        written.append(_save(fig, directory / "flux_error.png", dpi))
    return written


def _save(fig, path: Path, dpi: int) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path
