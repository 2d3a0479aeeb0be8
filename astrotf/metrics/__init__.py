"""Image-quality and science metrics: the measures astronomers trust, on NumPy arrays.

No TensorFlow import: metrics run on the outputs of any denoiser. Every name is importable from
``astrotf.metrics``; each section lives in its own module:

``noise.py`` — noise in physical units
    `noise_level` (Gaussian fitted to the histogram, TDR; `NoiseFit`) and `background_noise`
    (sigma-clipped MAD, astropy; `Background`); both handle quantised data
    (`astrotf.quantise.value_grid`, re-exported here). `block_statistics`: signal and noise
    variance in small cells of a linear frame (`BlockStatistics`, `cell_blocks`).
``similarity.py`` — fidelity to a reference and agreement between two images
    `psnr`, `ssim` (scikit-image, data-range and NaN aware), `kl_divergence` of the pixel
    distributions (Astro U-net eq. 9), `correlation` (Pearson r and linear-fit slope, TDR Fig. 2;
    `LinearFit`), `power_spectrum` and `divergence_frequency` (where two spectra start to differ,
    TDR Fig. 4).
``fields.py`` — what a denoiser kept
    `strong_slope` (output against input over strong pixels only; `StrongSlope`),
    `residual_structure` (structure in input - output above ~10 px; 1 = white), and for real frames
    without truth `source_mask` and `source_flux_ratio` (`FluxRatio`).
``stars.py`` — star recovery
    `star_recovery` and `recovery_at_false_positives` (`sep` detection at a fixed absolute
    threshold, 1-to-1 matching, TPR / false positives / precision / F1, relative flux error;
    Astro U-net §4.3; `StarRecovery`), their pieces (`subtract_background`, `detect_sources`,
    `match_sources`, `aperture_flux`, `moffat_enclosed_fraction`, `Catalogue`,
    `reference_catalogue`) and `snr_gain` (Astro U-net eq. 28) with `empty_aperture_noise`.
``depth.py`` — detection depth
    `psf_matched_filter` and `matched_filter_gain`, `matched_filter_limit` (the depth the matched
    filter reaches for isolated point sources in white noise, `MatchedFilterLimit`), `point_source_snr`,
    `detect_and_match` (`Detections`, artefacts excluded), `precision_at_sigma` (at k × own σ),
    `matched_contamination` with `false_allowance` (5 false sources per 1024², pooled over
    fields) and `completeness_magnitude` (m50).
``_common.py``
    Private helpers shared by the modules above.

References
----------
Vojtekova et al. 2020, "Learning to denoise astronomical images with U-nets", MNRAS 503, 3204, §4.
TDR (Self2Self train-denoise-restore), Methods: the noise level of a magnetogram is the
standard deviation of a Gaussian fitted to the histogram of its pixel values in
[-20, 20] G.
"""

from __future__ import annotations

from astrotf.metrics.depth import (Detections, MatchedFilterLimit, completeness_magnitude, detect_and_match,
                                   false_allowance, matched_contamination, matched_filter_gain, matched_filter_limit,
                                   point_source_snr, precision_at_sigma, psf_matched_filter)
from astrotf.metrics.fields import (FluxRatio, StrongSlope, residual_structure, source_flux_ratio, source_mask,
                                    strong_slope)
from astrotf.metrics.noise import (Background, BlockStatistics, NoiseFit, background_noise, block_statistics,
                                   cell_blocks, noise_level, sky_bias)
from astrotf.metrics.similarity import (LinearFit, correlation, divergence_frequency, kl_divergence,
                                        power_spectrum, psnr, ssim)
from astrotf.metrics.stars import (Catalogue, StarRecovery, aperture_flux, detect_sources, empty_aperture_noise,
                                   match_sources, moffat_enclosed_fraction, recovery_at_false_positives,
                                   reference_catalogue, snr_gain, star_recovery, subtract_background)
from astrotf.quantise import value_grid

__all__ = [
    # noise.py
    "NoiseFit", "noise_level", "Background", "background_noise", "value_grid", "sky_bias", "BlockStatistics",
    "block_statistics", "cell_blocks",
    # similarity.py
    "psnr", "ssim", "power_spectrum", "divergence_frequency", "LinearFit", "correlation", "kl_divergence",
    # fields.py
    "StrongSlope", "strong_slope", "residual_structure", "source_mask", "FluxRatio", "source_flux_ratio",
    # stars.py
    "Catalogue", "StarRecovery", "subtract_background", "detect_sources", "match_sources", "aperture_flux",
    "moffat_enclosed_fraction", "star_recovery", "recovery_at_false_positives", "reference_catalogue",
    "empty_aperture_noise", "snr_gain",
    # depth.py
    "psf_matched_filter", "matched_filter_gain", "matched_filter_limit", "MatchedFilterLimit", "point_source_snr",
    "Detections", "detect_and_match",
    "precision_at_sigma", "false_allowance", "matched_contamination", "completeness_magnitude",
]
