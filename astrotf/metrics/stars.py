"""Star recovery: detection, 1-to-1 matching, aperture photometry and signal-to-noise gain.

`sep` detection at a fixed absolute threshold (`detect_sources` on `subtract_background`),
optimal 1-to-1 matching to a `Catalogue` (`match_sources`), TPR / false positives / precision /
F1 and relative flux error (`star_recovery`, `recovery_at_false_positives`, as a `StarRecovery`;
Astro U-net §4.3), and the signal-to-noise gain of the stars (`snr_gain`, Astro U-net eq. 28) with
empty-aperture noise (`empty_aperture_noise`).

References
----------
Vojtekova et al. 2020, "Learning to denoise astronomical images with U-nets", MNRAS 503, 3204, §4.3.
"""

from __future__ import annotations

import dataclasses

import numpy as np


# ----------------------------------------------------------------------------- star recovery
@dataclasses.dataclass(frozen=True)
class Catalogue:
    """Source positions and fluxes: a truth list, or detections on a reference image.

    Attributes
    ----------
    x, y : ndarray
        Column and row of each source centre, 0-based pixel coordinates (pixel centres at
        integers, as `sep` and NumPy index them).
    flux : ndarray
        Flux of each source, data units × pixels (electrons for a frame in electrons).
    star : ndarray of bool
        Sources whose flux enters the flux error (stars; False for galaxies, whose flux an
        aperture does not measure).
    """

    x: np.ndarray
    y: np.ndarray
    flux: np.ndarray
    star: np.ndarray

    def __post_init__(self):
        arrays = {name: np.atleast_1d(np.asarray(getattr(self, name))) for name in ("x", "y", "flux", "star")}
        sizes = {name: a.size for name, a in arrays.items()}
        if len(set(sizes.values())) != 1:
            msg = f"`x`, `y`, `flux` and `star` must have one length. Received: lengths {sizes}"
            raise ValueError(msg)
        for name in ("x", "y", "flux"):
            object.__setattr__(self, name, arrays[name].astype(np.float64).ravel())
        object.__setattr__(self, "star", arrays["star"].astype(bool).ravel())

    def __len__(self) -> int:
        return int(self.x.size)

    @classmethod
    def from_table(cls, table) -> Catalogue:
        """From a table with columns ``x``, ``y``, ``flux`` and optionally ``kind`` (``'star'`` rows).

        Raises
        ------
        ValueError
            If a required column is missing.
        """
        names = list(getattr(table, "colnames", None) or getattr(table, "columns", []))
        missing = [c for c in ("x", "y", "flux") if c not in names]
        if missing:
            msg = (f"Star catalogue must have columns x, y, flux; missing: {', '.join(missing)}. "
                   f"Received: columns={names}")
            raise ValueError(msg)
        if "kind" in names:
            star = np.char.strip(np.asarray(table["kind"]).astype(str)) == "star"
        else:
            star = np.ones(len(table["x"]), dtype=bool)
        return cls(np.asarray(table["x"]), np.asarray(table["y"]), np.asarray(table["flux"]), star)


@dataclasses.dataclass(frozen=True)
class StarRecovery:
    """How many catalogued sources an image keeps at a detection threshold, and their fluxes.

    Attributes
    ----------
    threshold : float
        Absolute detection threshold above the background, data units.
    n_truth, n_detected : int
        Catalogue sources; sources `sep` found in the image.
    true_positives, false_positives, false_negatives : int
        1-to-1 matches within the radius; detections without a catalogue source; catalogue
        sources without a detection.
    tpr, precision, f1 : float
        Recall ``TP / n_truth``, ``TP / (TP + FP)`` and their harmonic mean (Astro U-net
        eqs. 22-24); NaN where undefined (0 / 0).
    flux_error_mean, flux_error_median : float
        Mean and median relative flux error ``(F_measured - F_true) / F_true`` of matched stars
        (the negative of Astro U-net eq. 25: negative = flux lost); NaN without matched stars.
    truth_flux, measured_flux : ndarray
        Fluxes of the matched stars behind the flux error (for flux-error-against-flux plots).
    matched : ndarray of int
        Catalogue indices of the true positives.
    """

    threshold: float
    n_truth: int
    n_detected: int
    true_positives: int
    false_positives: int
    false_negatives: int
    tpr: float
    precision: float
    f1: float
    flux_error_mean: float
    flux_error_median: float
    truth_flux: np.ndarray = dataclasses.field(repr=False)
    measured_flux: np.ndarray = dataclasses.field(repr=False)
    matched: np.ndarray = dataclasses.field(repr=False)

    def summary(self) -> dict:
        """The scalar fields, for tables and JSON."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.repr}


def finite_image(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``image`` as a C-contiguous float64 2-D array and its mask of non-finite pixels.

    Raises
    ------
    ValueError
        If ``image`` is not 2-D or has no finite pixel.
    """
    data = np.ascontiguousarray(image, dtype=np.float64)
    if data.ndim != 2:
        msg = f"`image` must be 2-D. Received: image.shape={data.shape}"
        raise ValueError(msg)
    bad = ~np.isfinite(data)
    if bad.all():
        msg = "`image` has no finite pixel."
        raise ValueError(msg)
    return data, bad


def subtract_background(image: np.ndarray, box: int = 64) -> np.ndarray:
    """The image minus a `sep` background map (``box``-pixel mesh); NaN pixels are masked and set to 0.

    Parameters
    ----------
    image : ndarray (H, W)
    box : int
        Background mesh size in pixels (capped at the image size).

    Returns
    -------
    ndarray (H, W), float64, C-contiguous.
    """
    import sep

    data, bad = finite_image(image)
    data = np.where(bad, 0.0, data)
    size = max(8, min(box, *data.shape))
    background = sep.Background(data, mask=bad if bad.any() else None, bw=size, bh=size)
    return np.ascontiguousarray(np.where(bad, 0.0, data - background.back()))


def detect_sources(subtracted: np.ndarray, threshold: float, minarea: int = 5, prefiltered: bool = False) -> np.ndarray:
    """`sep.extract` at an ABSOLUTE threshold on a background-subtracted image.

    Parameters
    ----------
    subtracted : ndarray (H, W)
        Output of `subtract_background`.
    threshold : float
        Detection threshold in data units above the background (e.g. 3 × the noisy input's
        background sigma, the same for every image compared).
    minarea : int
        Minimum connected pixels above the threshold (after `sep`'s default 3×3 filter).
    prefiltered : bool
        The image is already filtered (e.g. with its PSF, :func:`astrotf.metrics.depth.psf_matched_filter`):
        threshold it as it is, without `sep`'s 3×3 filter.

    Returns
    -------
    ndarray
        `sep`'s structured array of objects (fields ``x``, ``y``, ``flux``, ...).
    """
    import sep

    if not (np.isfinite(threshold) and threshold > 0):
        msg = f"`threshold` must be a finite number > 0. Received: threshold={threshold}"
        raise ValueError(msg)
    sep.set_extract_pixstack(max(300_000, 2 * subtracted.size))
    sep.set_sub_object_limit(4096)
    kwargs = {"filter_kernel": None} if prefiltered else {}
    return sep.extract(np.ascontiguousarray(subtracted, dtype=np.float64), float(threshold), minarea=minarea, **kwargs)


def match_sources(truth_xy: np.ndarray, detected_xy: np.ndarray, radius: float = 2.0) -> tuple[np.ndarray, np.ndarray]:
    """Optimal 1-to-1 matching of detections to catalogue sources within ``radius``.

    Candidate pairs come from a `scipy.spatial.cKDTree`; `scipy.optimize.linear_sum_assignment`
    then picks the largest set of pairs (each source and each detection used at most once) with
    the smallest total distance, so a detection between two sources cannot steal the match of
    the other one as greedy matching can.

    Parameters
    ----------
    truth_xy, detected_xy : ndarray (N, 2), (M, 2)
        Positions (x, y) in pixels.
    radius : float
        Largest distance of a match, pixels.

    Returns
    -------
    truth_index, detected_index : ndarray of int
        Matched pairs, sorted by catalogue index.
    """
    from scipy.optimize import linear_sum_assignment
    from scipy.spatial import cKDTree

    if not radius > 0:
        msg = f"`radius` must be > 0. Received: radius={radius}"
        raise ValueError(msg)
    truth_xy = np.asarray(truth_xy, dtype=np.float64).reshape(-1, 2)
    detected_xy = np.asarray(detected_xy, dtype=np.float64).reshape(-1, 2)
    empty = (np.zeros(0, int), np.zeros(0, int))
    if len(truth_xy) == 0 or len(detected_xy) == 0:
        return empty
    pairs = cKDTree(truth_xy).sparse_distance_matrix(cKDTree(detected_xy), radius, output_type="ndarray")
    if pairs.size == 0:
        return empty
    rows, row_of = np.unique(pairs["i"], return_inverse=True)
    cols, col_of = np.unique(pairs["j"], return_inverse=True)
    # a non-pair costs more than any set of real pairs, so the number of matches is maximised first
    big = (radius + 1.0) * (min(len(rows), len(cols)) + 1)
    cost = np.full((len(rows), len(cols)), big)
    cost[row_of, col_of] = pairs["v"]
    r, c = linear_sum_assignment(cost)
    real = cost[r, c] < big
    ti, di = rows[r[real]], cols[c[real]]
    order = np.argsort(ti)
    return ti[order].astype(int), di[order].astype(int)


def aperture_flux(subtracted: np.ndarray, x: np.ndarray, y: np.ndarray, radius: float) -> np.ndarray:
    """Sum of a background-subtracted image in circles of ``radius`` px at (x, y) (`sep.sum_circle`)."""
    import sep

    if not radius > 0:
        msg = f"`radius` must be > 0. Received: radius={radius}"
        raise ValueError(msg)
    x = np.asarray(x, dtype=np.float64)
    if x.size == 0:
        return np.zeros(0)
    flux, _, _ = sep.sum_circle(np.ascontiguousarray(subtracted, dtype=np.float64), x,
                                np.asarray(y, dtype=np.float64), float(radius), subpix=5)
    return np.asarray(flux, dtype=np.float64)


def moffat_enclosed_fraction(radius: float, fwhm: float, beta: float) -> float:
    """Fraction of a Moffat profile's flux inside a circle: ``1 - (1 + (r / gamma)²)^(1 - beta)``."""
    gamma = fwhm / (2.0 * np.sqrt(2.0 ** (1.0 / beta) - 1.0))
    return float(1.0 - (1.0 + (radius / gamma) ** 2) ** (1.0 - beta))


def _ratio(num: float, den: float) -> float:
    return float(num / den) if den else float("nan")


def star_recovery(
    image: np.ndarray,
    truth: Catalogue,
    threshold: float,
    *,
    radius: float = 2.0,
    aperture: float = 5.0,
    aperture_correction: float = 1.0,
    min_flux: float = 0.0,
) -> StarRecovery:
    """Detect sources at a fixed absolute threshold and match them 1-to-1 to a catalogue.

    Astro U-net §4.3 with `sep` in place of SExtractor: the background is subtracted, sources are
    found above ``threshold`` (data units, NOT a multiple of this image's own noise: a smoothed
    image then cannot gain detections by lowering its own noise estimate), matched to ``truth``
    within ``radius``; matched stars get an aperture flux at the detected centre, divided by
    ``aperture_correction`` (the fraction of a star's flux inside the aperture; 1 when
    ``truth`` fluxes were measured with the same aperture).

    Parameters
    ----------
    image : ndarray (H, W)
        Linear image in data units.
    truth : Catalogue
        Sources to recover.
    threshold : float
        Absolute detection threshold above the background, data units.
    radius : float
        Matching radius, pixels.
    aperture : float
        Aperture radius for fluxes, pixels.
    aperture_correction : float
        Enclosed-flux fraction of the aperture, in (0, 1].
    min_flux : float
        Only stars with catalogue flux above this enter the flux error.

    Returns
    -------
    StarRecovery
    """
    if not 0 < aperture_correction <= 1:
        msg = f"`aperture_correction` must be in (0, 1]. Received: aperture_correction={aperture_correction}"
        raise ValueError(msg)
    return _recovery(subtract_background(image), truth, threshold, radius, aperture, aperture_correction, min_flux)


def _recovery(sub: np.ndarray, truth: Catalogue, threshold: float, radius: float, aperture: float,
              aperture_correction: float, min_flux: float) -> StarRecovery:
    """:func:`star_recovery` on an already background-subtracted image."""
    objects = detect_sources(sub, threshold)
    ti, di = match_sources(np.column_stack([truth.x, truth.y]), np.column_stack([objects["x"], objects["y"]]),
                           radius)
    tp, n_truth, n_detected = len(ti), len(truth), len(objects)
    fp, fn = n_detected - tp, n_truth - tp
    tpr, precision = _ratio(tp, n_truth), _ratio(tp, tp + fp)
    f1 = _ratio(2 * tp, 2 * tp + fp + fn)
    use = truth.star[ti] & (truth.flux[ti] > min_flux) & (truth.flux[ti] > 0)
    measured = aperture_flux(sub, objects["x"][di[use]], objects["y"][di[use]], aperture) / aperture_correction
    true_flux = truth.flux[ti[use]]
    errors = measured / true_flux - 1.0
    return StarRecovery(
        threshold=float(threshold), n_truth=n_truth, n_detected=n_detected, true_positives=tp,
        false_positives=fp, false_negatives=fn, tpr=tpr, precision=precision, f1=f1,
        flux_error_mean=float(np.mean(errors)) if errors.size else float("nan"),
        flux_error_median=float(np.median(errors)) if errors.size else float("nan"),
        truth_flux=true_flux, measured_flux=measured, matched=ti)


def recovery_at_false_positives(
    image: np.ndarray,
    truth: Catalogue,
    max_false_positives: int,
    noise_sigma: float,
    *,
    sigmas: np.ndarray | None = None,
    radius: float = 2.0,
    aperture: float = 5.0,
    aperture_correction: float = 1.0,
) -> StarRecovery:
    """Star recovery at the lowest threshold that gives no more than ``max_false_positives``.

    One point of each image's free-response ROC curve: denoisers are compared at a matched
    false-positive count (the noisy input's, say) rather than at one threshold, so a
    method can neither win by detecting deeper into its own noise nor lose by having its
    noise estimate move. Thresholds are ``sigmas × noise_sigma`` (this image's own
    background σ), scanned upwards (default 1σ to 1000σ in 160 geometric steps of 4.4 %:
    a denoiser's own σ can be 30× below its input's, and its artefacts far above it).

    Returns
    -------
    StarRecovery
        At the chosen threshold; ``threshold`` says which. If even the highest threshold
        gives too many false positives, the result at the highest.
    """
    if max_false_positives < 0:
        msg = f"`max_false_positives` must be >= 0. Received: max_false_positives={max_false_positives}"
        raise ValueError(msg)
    if not (np.isfinite(noise_sigma) and noise_sigma > 0):
        msg = f"`noise_sigma` must be a finite number > 0. Received: noise_sigma={noise_sigma}"
        raise ValueError(msg)
    sigmas = np.geomspace(1.0, 1000.0, 160) if sigmas is None else np.sort(np.asarray(sigmas, float))
    sub = subtract_background(image)
    result = None
    for k in sigmas:
        result = _recovery(sub, truth, k * noise_sigma, radius, aperture, aperture_correction, 0.0)
        if result.false_positives <= max_false_positives:
            break
    return result


def reference_catalogue(reference: np.ndarray, threshold: float, aperture: float = 5.0) -> Catalogue:
    """Sources detected on a clean reference image at ``threshold``, with aperture fluxes.

    For `star_recovery` without a truth list: the fluxes are measured with the same aperture as
    the compared image's, so no aperture correction is needed.
    """
    sub = subtract_background(reference)
    objects = detect_sources(sub, threshold)
    flux = aperture_flux(sub, objects["x"], objects["y"], aperture)
    return Catalogue(objects["x"], objects["y"], flux, np.ones(len(objects), dtype=bool))


def empty_aperture_noise(subtracted: np.ndarray, aperture: float, avoid_xy: np.ndarray | None = None,
                         avoid_radius: float = 0.0) -> float:
    """Noise of an aperture sum, from apertures laid on a regular grid over the image.

    The MAD standard deviation of the sums in circles of radius ``aperture`` centred every
    ``2 * aperture + 1`` px (so they do not overlap), leaving out those centred within
    ``avoid_radius`` of a known source; the MAD ignores the few that still fall on sources.
    Unlike ``sigma_pixel * sqrt(N_pixels)`` it includes the pixel-to-pixel correlation that any
    smoothing or denoising leaves in the noise.

    Parameters
    ----------
    subtracted : ndarray (H, W)
        Background-subtracted image (`subtract_background`).
    aperture : float
        Aperture radius, pixels.
    avoid_xy : ndarray (N, 2), optional
        Source positions (x, y) to keep apertures away from.
    avoid_radius : float
        Distance, pixels, from ``avoid_xy`` inside which no aperture is centred.

    Returns
    -------
    float
        Standard deviation of an empty aperture's sum, data units × pixels.

    Raises
    ------
    ValueError
        If fewer than 10 apertures remain.
    """
    from astropy.stats import mad_std
    from scipy.spatial import cKDTree

    step = 2.0 * aperture + 1.0
    height, width = subtracted.shape
    ys, xs = np.meshgrid(np.arange(aperture, height - aperture, step), np.arange(aperture, width - aperture, step),
                         indexing="ij")
    centres = np.column_stack([xs.ravel(), ys.ravel()])
    if avoid_xy is not None and len(avoid_xy) and avoid_radius > 0 and len(centres):
        near = cKDTree(np.asarray(avoid_xy, np.float64).reshape(-1, 2)).query(centres, k=1)[0] < avoid_radius
        centres = centres[~near]
    if len(centres) < 10:
        msg = (f"Too few empty apertures ({len(centres)}, at least 10 needed) for aperture={aperture} px "
               f"in an image of shape {subtracted.shape}.")
        raise ValueError(msg)
    return float(mad_std(aperture_flux(subtracted, centres[:, 0], centres[:, 1], aperture)))


def snr_gain(output: np.ndarray, noisy: np.ndarray, x: np.ndarray, y: np.ndarray, aperture: float = 5.0) -> float:
    """Signal-to-noise gain of the stars at (x, y): ``SNR_output / SNR_input`` (Astro U-net eq. 28).

    Per image, ``SNR = mean_i F_i / sigma_ap`` (eq. 26, background-limited): ``F_i`` the aperture
    flux of star i after background subtraction and ``sigma_ap`` the empty-aperture noise
    (`empty_aperture_noise`) of the same aperture, away from the stars measured (farther than
    3 apertures). The same positions and aperture are used in
    both images. ``sigma_ap`` is measured, not ``sigma_pixel * sqrt(N)``: a denoiser correlates the
    noise it leaves, and the per-pixel formula would then overstate the gain (a Gaussian blur of
    1.5 px would "gain" about 5×).

    Parameters
    ----------
    output, noisy : ndarray (H, W)
        Denoised and noisy images, data units.
    x, y : ndarray
        Star positions, e.g. catalogue stars detected in the noisy input.
    aperture : float
        Aperture radius, pixels.

    Returns
    -------
    float
        The gain; NaN without stars or with a non-positive mean input flux.
    """
    if np.size(x) == 0:
        return float("nan")
    snr = []
    for image in (output, noisy):
        sub = subtract_background(image)
        flux = float(np.mean(aperture_flux(sub, x, y, aperture)))
        noise = empty_aperture_noise(sub, aperture, np.column_stack([x, y]), 3.0 * aperture)
        snr.append(flux / noise if noise > 0 else float("inf"))
    return snr[0] / snr[1] if snr[1] > 0 else float("nan")
