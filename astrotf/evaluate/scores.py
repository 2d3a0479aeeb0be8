"""The scores of `astrotf evaluate`: one `Evaluation` of a denoised image against its noisy input,
a clean reference and a star catalogue, and `format_table` to print it. No TensorFlow import.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import warnings

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
    scores = _Scores()
    background = {k: _safe(metrics.background_noise, p) for k, p in planes.items()}
    if background["input"] is None:
        raise AstroTFError("input: too few finite pixels to measure the background noise")
    noise_fits, spectra = _noise_scores(scores, planes, background, options)
    _change_scores(scores, planes, background["input"], options)
    if reference is not None:
        _reference_scores(scores, images, planes, options)
    recoveries = _star_scores(scores, planes, background, stars, options)
    ordered = {key: scores[key] for key, _, _ in QUANTITIES if key in scores}
    return Evaluation(scores=ordered, options=options, planes=planes, noise_fits=noise_fits, spectra=spectra,
                      stars=recoveries)


class _Scores(dict):
    """``{quantity: {column: value}}``; :meth:`put` leaves out values that are None."""

    def put(self, key: str, column: str, value) -> None:
        if value is not None:
            self.setdefault(key, {})[column] = value


def _noise_scores(scores: _Scores, planes: dict, background: dict, options: EvaluationOptions) -> tuple[dict, dict]:
    """Background level and noise, the Gaussian-fit noise level and the power spectrum of each image."""
    sigma_in = background["input"].sigma
    low, high = options.noise_range or (background["input"].median - 5 * sigma_in,
                                        background["input"].median + 5 * sigma_in)
    noise_fits, spectra = {}, {}
    for column, plane in planes.items():
        if background[column] is not None:
            scores.put("background_median", column, background[column].median)
            scores.put("background_sigma", column, background[column].sigma)
        fit = _safe(metrics.noise_level, plane, (low, high), 100) if high > low else None
        if fit is not None:
            noise_fits[column] = fit
            scores.put("noise_level", column, fit.sigma)
        spectrum = _safe(metrics.power_spectrum, plane)
        if spectrum is not None:
            spectra[column] = spectrum
    return noise_fits, spectra


def _change_scores(scores: _Scores, planes: dict, sky, options: EvaluationOptions) -> None:
    """What the output changed of the input: largest change, correlation, spectra, strong pixels, structure."""
    out, inp = planes["output"], planes["input"]
    both = np.isfinite(out) & np.isfinite(inp)
    scores.put("max_abs_change", "output", float(np.max(np.abs(out[both] - inp[both]))) if both.any() else None)
    fit = _safe(metrics.correlation, inp, out)
    if fit is not None:
        scores.put("pearson_input", "output", fit.pearson)
        scores.put("slope_input", "output", fit.slope)
    if min(out.shape) >= 8:
        scores.put("spectra_differ_input", "output", metrics.divergence_frequency(inp, out, options.tolerance))
    strong = options.strong if options.strong is not None else 10 * sky.sigma
    kept = metrics.strong_slope(inp, out, strong, sky.median)
    scores.put("n_strong", "output", kept.n_pixels)
    if kept.n_pixels >= 10:
        scores.put("slope_strong_input", "output", kept.slope)
    scores.put("residual_structure", "output", _safe(metrics.residual_structure, inp - out))


def _reference_scores(scores: _Scores, images: dict, planes: dict, options: EvaluationOptions) -> None:
    """PSNR, SSIM, KL, correlation and spectra of the input and the output against the reference."""
    reference, ref = images["reference"], planes["reference"]
    channel_axis = -1 if np.ndim(reference) == 3 and np.shape(reference)[-1] > 1 else None
    for column in ("input", "output"):
        arr = np.asarray(images[column], np.float64)
        ref_arr = np.asarray(reference, np.float64)
        if channel_axis is None:
            arr, ref_arr = _plane(arr), _plane(ref_arr)
        scores.put("psnr", column, _safe(metrics.psnr, ref_arr, arr, options.data_range))
        if min(ref.shape) >= 7:
            scores.put("ssim", column, _safe(metrics.ssim, ref_arr, arr, options.data_range, channel_axis))
        scores.put("kl", column, _safe(metrics.kl_divergence, ref, planes[column]))
        fit = _safe(metrics.correlation, ref, planes[column])
        if fit is not None:
            scores.put("pearson_reference", column, fit.pearson)
            scores.put("slope_reference", column, fit.slope)
        if min(ref.shape) >= 8:
            scores.put("spectra_differ_reference", column,
                       metrics.divergence_frequency(ref, planes[column], options.tolerance))


def _star_scores(scores: _Scores, planes: dict, background: dict, stars, options: EvaluationOptions) -> dict:
    """Star recovery at the fixed threshold, at each image's own RMS and at the input's false
    positives, and the SNR gain; the catalogue is the reference's detections when none is given."""
    sigma_in = background["input"].sigma
    threshold = options.threshold_sigma * sigma_in
    correction = options.aperture_correction
    if stars is None and "reference" in planes:
        stars = _safe(metrics.reference_catalogue, planes["reference"], threshold, options.aperture)
        correction = 1.0
    if stars is None or not sigma_in > 0:
        return {}
    recoveries: dict = {"fixed": {}, "own": {}, "matched": {}}
    kwargs = {"radius": options.radius, "aperture": options.aperture, "aperture_correction": correction,
              "min_flux": options.min_flux}
    for column, plane in planes.items():
        fixed = metrics.star_recovery(plane, stars, threshold, **kwargs)
        recoveries["fixed"][column] = fixed
        for key in ("n_truth", "threshold", "true_positives", "false_positives", "tpr", "precision", "f1",
                    "flux_error_mean", "flux_error_median"):
            scores.put(key, column, getattr(fixed, key))
        scores.put("detected", column, fixed.n_detected)
        scores.put("n_flux", column, int(fixed.truth_flux.size))
        own_sigma = background[column].sigma if background[column] is not None else 0.0
        if own_sigma > 0:
            own = metrics.star_recovery(plane, stars, options.threshold_sigma * own_sigma, **kwargs)
            recoveries["own"][column] = own
            scores.put("detected_own", column, own.n_detected)
            for key in ("true_positives", "false_positives", "tpr", "precision", "f1"):
                scores.put(f"{key}_own", column, getattr(own, key))
    _matched_scores(scores, planes, background, stars, recoveries, correction, options)
    found = recoveries["fixed"]["input"].matched
    scores.put("snr_gain", "output", _safe(metrics.snr_gain, planes["output"], planes["input"], stars.x[found],
                                           stars.y[found], options.aperture))
    return recoveries


def _matched_scores(scores: _Scores, planes: dict, background: dict, stars, recoveries: dict, correction: float,
                    options: EvaluationOptions) -> None:
    """Every image at the lowest threshold that gives no more false positives than the input at its own RMS."""
    budget = recoveries["own"].get("input")
    for column, plane in planes.items():
        own_sigma = background[column].sigma if background[column] is not None else 0.0
        if budget is None or own_sigma <= 0 or column == "reference":
            continue
        matched = metrics.recovery_at_false_positives(
            plane, stars, budget.false_positives, own_sigma, radius=options.radius,
            aperture=options.aperture, aperture_correction=correction)
        recoveries["matched"][column] = matched
        scores.put("threshold_matched", column, matched.threshold / own_sigma)
        for key in ("true_positives", "false_positives", "tpr"):
            scores.put(f"{key}_matched", column, getattr(matched, key))


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
