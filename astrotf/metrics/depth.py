"""Detection depth at matched contamination, the PSF matched-filter limit, and what a denoiser invents.

The fair view of what a denoiser gains (BENCHMARKS.md §2): every image, the noisy input and each
output alike, is put at its lowest detection threshold that yields at most a fixed number of false
sources per area (`matched_contamination`, 5 per 1024² by default), and scored there by its
completeness and its 50 % completeness magnitude (`completeness_magnitude`). The physical limit for
isolated point sources in one exposure is the PSF matched filter (`psf_matched_filter`, whose gain
in peak signal-to-noise is `matched_filter_gain`): a denoiser can reach it, not pass it. At each
image's own background (1.5 σ, as SExtractor is run) `precision_at_sigma` shows whether it invents
sources. `point_source_snr` is the true S/N of a star for the optimal (PSF-weighted) estimator.

Detections come from `sep` (:func:`astrotf.metrics.stars.detect_sources`) on background-subtracted
images and are matched 1-to-1 to the truth (:func:`astrotf.metrics.stars.match_sources`);
detections near known detector artefacts (cosmic rays, hot pixels) count neither as true nor false.
NumPy, SciPy and `sep` only.

References
----------
Vojtekova et al. 2020, "Learning to denoise astronomical images with U-nets", MNRAS 503, 3204, §4.3.
Bertin & Arnouts 1996, A&AS 117, 393 (SExtractor: detection on the image filtered with the PSF).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from astrotf.metrics.stars import detect_sources, finite_image, match_sources

#: False sources allowed per 1024 x 1024 px at matched contamination (about 1 % of the stars of a field).
FALSE_PER_MPIX = 5.0
_REFERENCE_AREA = 1024 * 1024
COARSE_STEP = 10  # grid points (about x1.5 in threshold) of the downward scan of `matched_contamination`


# ----------------------------------------------------------------------------- matched filter
def _unit_kernel(kernel: np.ndarray) -> np.ndarray:
    k = np.asarray(kernel, dtype=np.float64)
    if k.ndim != 2 or not np.all(np.isfinite(k)) or k.sum() <= 0 or k.shape[0] % 2 == 0 or k.shape[1] % 2 == 0:
        msg = ("`kernel` must be a finite 2-D array of odd sides with a positive sum. "
               f"Received: kernel.shape={k.shape}, sum={float(np.nansum(k)):.4g}")
        raise ValueError(msg)
    return k / k.sum()


def psf_matched_filter(image: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """The image correlated with its PSF (normalised to unit sum): the optimal point-source detector.

    For an isolated point source in white noise, thresholding the image filtered with its own PSF
    maximises the signal-to-noise of the detection (by `matched_filter_gain` in peak S/N). The
    kernel sums to 1, so the image keeps its units and total fluxes (sources get wider).

    Parameters
    ----------
    image : ndarray (H, W)
        Linear image in data units; non-finite pixels are replaced by the median of the finite ones
        before filtering and are NaN again after it.
    kernel : ndarray (h, w)
        Pixel-integrated PSF, odd sides, centred; any positive normalisation.

    Returns
    -------
    ndarray (H, W), float64.
    """
    from scipy.ndimage import correlate

    data, bad = finite_image(image)
    filled = np.where(bad, np.median(data[~bad]), data)
    out = correlate(filled, _unit_kernel(kernel), mode="reflect")
    out[bad] = np.nan
    return out


def matched_filter_gain(kernel: np.ndarray) -> float:
    """Peak S/N of a point source after `psf_matched_filter` over its peak S/N before, in white noise.

    With ``P`` the PSF normalised to unit sum, the filtered peak is ``F · ΣP²`` over a noise of
    ``σ · sqrt(ΣP²)``, against ``F · max P`` over ``σ`` before: a gain of ``sqrt(ΣP²) / max P``
    (``sqrt(π) · s`` for a well-sampled Gaussian of standard deviation ``s`` px).
    """
    p = _unit_kernel(kernel)
    return float(np.sqrt(np.sum(p * p)) / p.max())


def point_source_snr(flux: np.ndarray, background_variance: float, kernel: np.ndarray) -> np.ndarray:
    """True S/N of point sources for the optimal (PSF-weighted) flux estimator, in electrons.

    ``F / sqrt(F + N_eff · var_bg)`` with ``N_eff = 1 / ΣP²`` the noise-equivalent area of the PSF
    ``P`` (unit sum) and ``var_bg`` the per-pixel background variance (sky + read noise²), all in
    electrons of the exposure.
    """
    if not (np.isfinite(background_variance) and background_variance >= 0):
        msg = f"`background_variance` must be a finite number >= 0. Received: background_variance={background_variance}"
        raise ValueError(msg)
    p = _unit_kernel(kernel)
    flux = np.maximum(np.asarray(flux, dtype=np.float64), 0.0)
    n_eff = 1.0 / np.sum(p * p)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(flux > 0, flux / np.sqrt(flux + n_eff * background_variance), 0.0)


# ----------------------------------------------------------------------------- detections against a truth list
@dataclasses.dataclass(frozen=True)
class Detections:
    """Sources found in one image at one threshold, matched 1-to-1 to a truth list.

    Attributes
    ----------
    threshold : float
        Absolute threshold above the background, data units.
    found : ndarray of bool
        Per truth source: matched by a detection within the radius.
    n_detected, n_false, n_near, n_excluded : int
        All detections; unmatched detections with no truth source within the false radius (false
        sources: invented); unmatched detections within it (a blend or a second piece of a real
        source); unmatched detections near a known artefact. The last two are neither true nor false.
    """

    threshold: float
    found: np.ndarray = dataclasses.field(repr=False)
    n_detected: int
    n_false: int
    n_near: int
    n_excluded: int

    @property
    def true_positives(self) -> int:
        return int(self.found.sum())

    @property
    def precision(self) -> float:
        """``TP / (TP + false)``; NaN without detections."""
        tp = self.true_positives
        return tp / (tp + self.n_false) if tp + self.n_false else float("nan")


def detect_and_match(subtracted: np.ndarray, truth_xy: np.ndarray, threshold: float, *, radius: float = 2.0,
                     false_radius: float | None = None, near: np.ndarray | None = None,
                     exclude_xy: np.ndarray | None = None, exclude_radius: float = 2.0,
                     prefiltered: bool = False) -> Detections:
    """`sep` detection at an absolute threshold, 1-to-1 matching to ``truth_xy`` within ``radius``.

    Parameters
    ----------
    subtracted : ndarray (H, W)
        Background-subtracted image (:func:`astrotf.metrics.stars.subtract_background`).
    truth_xy : ndarray (N, 2)
        True source positions (x, y), px.
    threshold : float
        Absolute detection threshold, data units.
    radius : float
        Matching radius, px.
    false_radius : float, optional
        An unmatched detection is false only farther than this from every truth source (default
        ``radius``); e.g. one PSF FWHM, so that a blend of two stars or a star split in two by
        deblending is not taken for an invented source.
    near : ndarray of bool, optional
        The truth sources that excuse a detection within ``false_radius`` (default all): e.g. those
        bright enough to be detected, so that a crowd of invisible faint stars does not excuse every
        noise peak.
    exclude_xy : ndarray (M, 2), optional
        Positions of known artefacts (cosmic-ray and hot pixels): an unmatched detection within
        ``exclude_radius`` of one is not counted as false.
    exclude_radius : float
        px.
    prefiltered : bool
        The image is already filtered with its PSF (`psf_matched_filter`): no further `sep` filter,
        and a source is where the filtered image peaks (``xpeak``, ``ypeak``: the matched filter's
        position estimate) rather than the barycentre of its isophote, which noise drags by more
        than the matching radius on a blob as wide as the filtered PSF.

    Returns
    -------
    Detections
    """
    from scipy.spatial import cKDTree

    objects = detect_sources(subtracted, threshold, prefiltered=prefiltered)
    truth_xy = np.asarray(truth_xy, dtype=np.float64).reshape(-1, 2)
    detected = np.column_stack([objects["xpeak"], objects["ypeak"]] if prefiltered else [objects["x"], objects["y"]])
    ti, di = match_sources(truth_xy, detected, radius)
    found = np.zeros(len(truth_xy), dtype=bool)
    found[ti] = True
    unmatched = np.ones(len(detected), dtype=bool)
    unmatched[di] = False
    near_xy = truth_xy if near is None else truth_xy[np.asarray(near, dtype=bool)]
    close = np.zeros(len(detected), dtype=bool)
    if false_radius is not None and false_radius > radius and len(near_xy) and unmatched.any():
        close[unmatched] = cKDTree(near_xy).query(detected[unmatched], k=1)[0] <= false_radius
    excluded = np.zeros(len(detected), dtype=bool)
    rest = unmatched & ~close
    if exclude_xy is not None and len(exclude_xy) and rest.any():
        tree = cKDTree(np.asarray(exclude_xy, np.float64).reshape(-1, 2))
        excluded[rest] = tree.query(detected[rest], k=1)[0] <= exclude_radius
    return Detections(threshold=float(threshold), found=found, n_detected=len(detected),
                      n_false=int(np.sum(rest & ~excluded)), n_near=int(close.sum()), n_excluded=int(excluded.sum()))


def precision_at_sigma(subtracted: np.ndarray, truth_xy: np.ndarray, noise_sigma: float, k: float = 1.5,
                       **kwargs) -> Detections:
    """Detections at ``k`` × the image's OWN background σ (SExtractor's default is 1.5), for precision.

    A denoiser that smooths the sky lowers its own σ; at ``k`` σ of that, every residual bump it
    left (or painted) becomes a source: the precision there shows whether it invents sources.
    ``kwargs`` go to `detect_and_match`.
    """
    if not (np.isfinite(noise_sigma) and noise_sigma > 0 and k > 0):
        msg = f"`noise_sigma` and `k` must be finite numbers > 0. Received: noise_sigma={noise_sigma}, k={k}"
        raise ValueError(msg)
    return detect_and_match(subtracted, truth_xy, k * noise_sigma, **kwargs)


# ----------------------------------------------------------------------------- matched contamination
def false_allowance(shapes, per_reference: float = FALSE_PER_MPIX) -> int:
    """False sources allowed over images of ``shapes``: ``per_reference`` per 1024² px, scaled by area, floored."""
    area = sum(int(s[0]) * int(s[1]) for s in shapes)
    return int(np.floor(per_reference * area / _REFERENCE_AREA + 1e-9))


def matched_contamination(subtracted: list, truth_xy: list, noise_sigmas: list, max_false: int, *,
                          sigmas: np.ndarray | None = None, exclude_xy: list | None = None,
                          radius: float = 2.0, false_radius: float | list | None = None,
                          near: list | None = None, prefiltered: bool = False) -> tuple[float, list[Detections]]:
    """The lowest common threshold, in units of each image's own σ, with at most ``max_false`` false sources.

    A set of images (fields of one setting put through one method) is scored at one multiple ``k``
    of each image's own background σ, so the allowance pools over their area (5 per 1024² is less
    than one false source in a small field). ``k`` is found by bisection on the grid ``sigmas``
    scanning down from the top in steps of `COARSE_STEP` grid points to the first ``k`` that lets too
    many false sources through, then by bisection below the last one that did not: at the ``k``
    returned the total false count is at most ``max_false``, at the grid point below it is more, and
    the coarse steps above it passed. (Deep in the noise everything merges into a few huge
    detections, so the false count falls again there: the lowest passing ``k`` is not the one wanted.)

    Parameters
    ----------
    subtracted, truth_xy, noise_sigmas : list
        Per image: the background-subtracted image, the truth positions (N, 2) and its own background σ.
    max_false : int
        False sources allowed over all images (`false_allowance`).
    sigmas : ndarray, optional
        Increasing grid of ``k``; default 0.3 to 1000 in 200 geometric steps (4.1 %): `sep` thresholds the
        image after its 3×3 filter, which lowers white noise 2.7×, so a white-noise input reaches 5
        false sources per 1024² near 1σ.
    exclude_xy : list, optional
        Per image, artefact positions (see `detect_and_match`).
    radius, false_radius : float
        Matching radius and the distance beyond which an unmatched detection is false, px (see
        `detect_and_match`); ``false_radius`` may be a list, one per image (e.g. each field's FWHM).
    near : list, optional
        Per image, the truth sources that excuse a detection within ``false_radius``.
    prefiltered : bool
        The images are filtered with their PSF already (see `detect_and_match`).

    Returns
    -------
    k : float
        The multiple of own σ; the highest grid value if even that gives too many false sources.
    detections : list of Detections
        Per image, at ``k`` times its σ.
    """
    if max_false < 0:
        msg = f"`max_false` must be >= 0. Received: max_false={max_false}"
        raise ValueError(msg)
    if not len(subtracted) == len(truth_xy) == len(noise_sigmas) or not subtracted:
        msg = (f"`subtracted`, `truth_xy` and `noise_sigmas` must be non-empty lists of one length. "
               f"Received: lengths {len(subtracted)}, {len(truth_xy)}, {len(noise_sigmas)}")
        raise ValueError(msg)
    grid = np.geomspace(0.3, 1000.0, 200) if sigmas is None else np.sort(np.asarray(sigmas, np.float64))
    exclude_xy = exclude_xy or [None] * len(subtracted)
    false_radii = false_radius if isinstance(false_radius, (list, tuple)) else [false_radius] * len(subtracted)
    near = near or [None] * len(subtracted)
    cache: dict[int, list[Detections] | None] = {}

    def at(i: int) -> list[Detections] | None:
        if i not in cache:
            try:
                cache[i] = [detect_and_match(s, t, grid[i] * sigma, radius=radius, false_radius=f, near=n,
                                             exclude_xy=e, prefiltered=prefiltered)
                            for s, t, sigma, e, f, n in zip(subtracted, truth_xy, noise_sigmas, exclude_xy,
                                                            false_radii, near)]
            except Exception:  # noqa: BLE001 - sep gives up (pixel stack, deblending) only far too deep in the noise
                cache[i] = None
        return cache[i]

    def ok(i: int) -> bool:
        found = at(i)
        return found is not None and sum(d.n_false for d in found) <= max_false

    high = _lowest_passing(ok, len(grid))
    if at(high) is None:
        msg = f"`sep` failed at the highest threshold, {grid[high]:g} sigma."
        raise ValueError(msg)
    return float(grid[high]), at(high)


def _lowest_passing(ok, n: int) -> int:
    """Down from index ``n - 1`` in `COARSE_STEP` steps to the first failure of ``ok``, then bisection
    between it and the last success: the index to use (``n - 1`` if even the top fails).

    The false count is not monotonic at the bottom: deep in the noise everything merges into a few huge
    blobs (few detections, few false ones), so "the lowest threshold that passes" would land there.
    """
    high = n - 1
    if not ok(high):
        return high
    low = high
    while low > 0:
        low = max(low - COARSE_STEP, 0)
        if not ok(low):
            break
        high = low
    else:
        return high
    while high - low > 1:  # ok(high), not ok(low)
        middle = (low + high) // 2
        low, high = (low, middle) if ok(middle) else (middle, high)
    return high


def _non_increasing(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Isotonic (non-increasing) least-squares fit by pooling adjacent violators: block means and sizes."""
    means: list[float] = []
    sizes: list[int] = []
    for v in values:
        means.append(float(v))
        sizes.append(1)
        while len(means) > 1 and means[-1] > means[-2]:
            n = sizes[-1] + sizes[-2]
            means[-2] = (means[-2] * sizes[-2] + means[-1] * sizes[-1]) / n
            sizes[-2] = n
            means.pop()
            sizes.pop()
    return np.asarray(means), np.asarray(sizes)


def completeness_magnitude(magnitudes: np.ndarray, found: np.ndarray, level: float = 0.5) -> float:
    """The magnitude where the completeness (by true magnitude) falls to ``level``: m50 for 0.5.

    The completeness curve is the isotonic (non-increasing with magnitude) least-squares fit to the
    detected / missed flags of the sources sorted from bright to faint, so no binning is chosen and a
    few missed bright sources (saturated, blended) cannot end the curve early. Between the last block
    of the fit at or above ``level`` and the first below it, the magnitude is interpolated linearly
    between the blocks' mean magnitudes.

    Parameters
    ----------
    magnitudes : ndarray
        True magnitudes (brighter = smaller), e.g. ``-2.5 log10(flux)`` or ``-2.5 log10(S/N)``.
    found : ndarray of bool
        Detected or not, per source.

    Returns
    -------
    float
        NaN without sources; the brightest source's magnitude if even the brightest block is below
        ``level``; the faintest's if no block falls below it.
    """
    mag = np.asarray(magnitudes, dtype=np.float64).ravel()
    hit = np.asarray(found, dtype=bool).ravel()
    if mag.shape != hit.shape:
        msg = f"`magnitudes` and `found` must have one length. Received: {mag.size} and {hit.size}"
        raise ValueError(msg)
    keep = np.isfinite(mag)
    order = np.argsort(mag[keep], kind="stable")
    mag, hit = mag[keep][order], hit[keep][order]
    if mag.size == 0:
        return float("nan")
    means, sizes = _non_increasing(hit.astype(np.float64))
    ends = np.cumsum(sizes)
    centres = np.array([mag[e - n:e].mean() for e, n in zip(ends, sizes)])
    below = np.flatnonzero(means < level)
    if below.size == 0:
        return float(mag[-1])
    i = int(below[0])
    if i == 0:
        return float(mag[0])
    f0, f1 = means[i - 1], means[i]
    return float(centres[i - 1] + (f0 - level) / (f0 - f1) * (centres[i] - centres[i - 1]))


# ----------------------------------------------------------------------------- the matched-filter limit
@dataclasses.dataclass(frozen=True)
class MatchedFilterLimit:
    """The depth of the PSF matched filter for isolated point sources in white noise (`matched_filter_limit`).

    Attributes
    ----------
    m50 : float
        50 % completeness magnitude, ``-2.5 log10(S/N)`` with S/N the PSF-optimal one
        (`point_source_snr`): the magnitude scale of the star benchmarks.
    threshold_sigma : float
        The detection threshold in units of the filtered noise's σ at which the noise alone gives at
        most the allowed false sources.
    n_stars : int
        Injected stars scored.
    """

    m50: float
    threshold_sigma: float
    n_stars: int


def matched_filter_limit(kernel: np.ndarray, *, side: int = 512, realisations: int = 4, seed: int = 0,
                         per_reference: float = FALSE_PER_MPIX) -> MatchedFilterLimit:
    """What the PSF matched filter detects of isolated point sources in white noise: the depth limit.

    The limit a one-exposure denoiser can reach and not pass (BENCHMARKS.md §2), measured, not assumed,
    with the textbook detector: the local maxima (3 × 3) of the image filtered with its PSF
    (`psf_matched_filter`) above a threshold.

    1. ``realisations`` fields of white noise (σ = 1, ``side``²) are filtered; the threshold is the
       height of their highest local maxima that leaves at most ``per_reference`` false sources per
       1024² (in units of the filtered noise's σ, ``sqrt(ΣP²)``);
    2. the same fields get isolated point sources (the pixel-integrated PSF ``kernel`` at integer
       positions on a grid, their kernels 4 px apart) of S/N 1 to 12; a source is found when a local
       maximum above the threshold lies within 2 px of it. The completeness by S/N gives ``m50``.

    A star of S/N equal to the threshold is found about half the time, so ``m50`` sits near
    ``-2.5 log10(threshold_sigma)``; `sep` with its 5 connected pixels needs brighter stars than this.

    Parameters
    ----------
    kernel : ndarray (h, w)
        Pixel-integrated PSF, odd sides, centred (any positive normalisation).
    side, realisations, seed : int
        Size and number of the noise fields, and their seed.
    per_reference : float
        False sources allowed per 1024² px.

    Returns
    -------
    MatchedFilterLimit
    """
    from scipy.ndimage import maximum_filter
    from scipy.spatial import cKDTree

    p = _unit_kernel(kernel)
    rng = np.random.default_rng(seed)
    sigma_filtered = float(np.sqrt(np.sum(p * p)))
    spacing = max(max(p.shape) + 4, 16)
    grid = np.arange(spacing // 2, side - spacing // 2 + 1, spacing)
    yy, xx = (a.ravel() for a in np.meshgrid(grid, grid, indexing="ij"))
    noise = [rng.standard_normal((side, side)) for _ in range(realisations)]

    def peaks(image):
        filtered = psf_matched_filter(image, p) / sigma_filtered
        top = (filtered == maximum_filter(filtered, size=3, mode="nearest"))
        return np.argwhere(top), filtered[top]

    heights = np.sort(np.concatenate([peaks(n)[1] for n in noise]))[::-1]
    allowed = false_allowance([(side, side)] * realisations, per_reference)
    threshold = float(heights[allowed])  # above it: ``allowed`` noise peaks at most
    hy, hx = p.shape[0] // 2, p.shape[1] // 2
    snrs, found = [], []
    for n in noise:
        snr = rng.uniform(1.0, 12.0, yy.size)
        field = n.copy()
        for y, x, flux in zip(yy, xx, snr / sigma_filtered):  # S/N = flux · sqrt(ΣP²) / σ, σ = 1
            field[y - hy:y + hy + 1, x - hx:x + hx + 1] += flux * p
        where, height = peaks(field)
        above = where[height > threshold]
        distance = cKDTree(above).query(np.column_stack([yy, xx]))[0] if len(above) else np.full(yy.size, np.inf)
        snrs.append(snr)
        found.append(distance <= 2.0)
    snr, hit = np.concatenate(snrs), np.concatenate(found)
    return MatchedFilterLimit(completeness_magnitude(-2.5 * np.log10(snr), hit), threshold, int(snr.size))
