"""Do the shipped models beat classical denoisers? Quality on held-out data, peers in the same run.

    python tools/eval_shipped.py [--rgb-model resunet-rgb] [--mono-model resunet-mono]
                                 [--n-rgb 8] [--n-fields 6] [--out docs/eval]

1. RGB (AstroPics setting): the first ``--n-rgb`` reserved Stellarium images (sorted by name, centre
   crops of at most 512²) with AstroPics noise (no identity / low-noise variants) and with plain
   Gaussian noise (sigma 0.03, not clipped, the peers' own noise model). Mean PSNR / SSIM against
   the clean image for the model, BM3D, non-local means, wavelet BayesShrink and TV, plus the
   identity case (clean in, PSNR of the output against it; pass at >= 40 dB).
2. Mono linear star fields (Astro U-net setting): simulated 512² fields (seeds 10000+, far from the
   training seeds 0..119) with Poisson + read noise at an exposure ratio r = 4. Sources found with
   ``sep`` and matched 1-to-1 to the truth within 2 px at (a) a fixed threshold, 3x the noisy input's
   background RMS, and (b) 3x each image's own background RMS; aperture flux error of bright stars.

The reserved images are only evaluated on: nothing here is tuned on them (the peers' settings are
fixed in advance). Writes ``OUT/eval.md`` (the tables printed) and ``OUT/eval.json`` (every number).
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import bm3d  # noqa: E402
import numpy as np  # noqa: E402
import sep  # noqa: E402
from astropy.stats import sigma_clipped_stats  # noqa: E402
from scipy.ndimage import gaussian_filter  # noqa: E402
from scipy.spatial import cKDTree  # noqa: E402
from skimage.metrics import peak_signal_noise_ratio, structural_similarity  # noqa: E402
from skimage.restoration import (  # noqa: E402
    denoise_nl_means,
    denoise_tv_chambolle,
    denoise_wavelet,
    estimate_sigma,
)

from astrotf.infer import TileOptions, denoise_image, load_model, resolve_model_path  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESERVED = ROOT / "datasets" / "stellarium-reserved"
CROP = 512
GAUSSIAN_SIGMA = 0.03
TV_WEIGHT = 0.08  # fixed in advance, not tuned on the reserved images
RATIO, READ_NOISE = 4.0, 3.0  # exposure-time ratio and read noise (electrons) of the mono fields
FIELD_SEED = 10_000
MATCH_RADIUS = 2.0  # px
THRESH_SIGMA = 3.0
BRIGHT = 20.0  # stars with truth flux > BRIGHT x background RMS get a flux error
APERTURE = 2.5  # aperture radius in units of the field's FWHM
TILES = TileOptions(tile=256, overlap=0.25)
UNTIMED = ("noisy input", "noise-free truth")  # rows without a speed

sep.set_extract_pixstack(10_000_000)
sep.set_sub_object_limit(4096)


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- denoisers
def bm3d_denoise(x: np.ndarray, sigma: float) -> np.ndarray:
    """BM3D (``bm3d_rgb`` for (H, W, 3), ``bm3d`` for (H, W)) at noise standard deviation ``sigma``."""
    out = bm3d.bm3d_rgb(x, sigma_psd=sigma) if x.ndim == 3 else bm3d.bm3d(x, sigma_psd=sigma)
    return np.reshape(out, x.shape)


def nlm(x: np.ndarray, sigma: float) -> np.ndarray:
    """scikit-image fast non-local means, h = 0.8 sigma, 5 px patches, 6 px search distance."""
    return denoise_nl_means(x, h=0.8 * sigma, sigma=sigma, fast_mode=True, patch_size=5, patch_distance=6,
                            channel_axis=-1 if x.ndim == 3 else None)


def wavelet(x: np.ndarray) -> np.ndarray:
    """Wavelet BayesShrink, soft thresholds, in YCbCr (sigma estimated inside)."""
    return denoise_wavelet(x, method="BayesShrink", mode="soft", rescale_sigma=True, channel_axis=-1,
                           convert2ycbcr=True)


def tv(x: np.ndarray) -> np.ndarray:
    """Chambolle total variation with a fixed weight."""
    return denoise_tv_chambolle(x, weight=TV_WEIGHT, channel_axis=-1)


def with_estimated_sigma(denoise):
    """Give ``denoise(x, sigma)`` the wavelet-MAD sigma of an RGB image in [0, 1] (`estimate_sigma`)."""
    return lambda x: denoise(x, float(estimate_sigma(x, channel_axis=-1, average_sigmas=True)))


def in_noise_units(denoise):
    """Run ``denoise(z, 1.0)`` on a linear frame scaled to unit background noise, and scale back.

    ``z = (x - median) / sigma`` with the sigma-clipped MAD sigma of ``x`` (the background noise).
    """
    def wrapped(x):
        _, median, sigma = sigma_clipped_stats(x, sigma=3.0, stdfunc="mad_std")
        return median + sigma * denoise((x - median) / sigma, 1.0)

    return wrapped


def model_denoiser(model):
    """The model on an (H, W, C) or (H, W) frame, tiled at 256 px with overlap 0.25."""
    def run(x):
        return denoise_image(x, model, TILES) if x.ndim == 3 else denoise_image(x[..., None], model, TILES)[..., 0]

    return run


def run_methods(noisy: np.ndarray, methods: dict, label: str) -> dict:
    """Apply every method to ``noisy``; returns ``{name: (output float32, seconds)}``."""
    results = {}
    for name, method in methods.items():
        start = time.perf_counter()
        out = np.asarray(method(noisy), np.float32)
        results[name] = (out, time.perf_counter() - start)
        progress(f"  {label}: {name} {results[name][1]:.1f} s")
    return results


# ----------------------------------------------------------------------------- reporting
def table(headers: list[str], rows: list[list]) -> str:
    """A markdown table; floats get 3 significant decimals unless already formatted."""
    def cell(v):
        return f"{v:.3f}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def speed(s_per_mpix) -> str:
    return "–" if s_per_mpix is None else f"{s_per_mpix:.2f}"


def model_info(name: str, model) -> dict:
    """Name, path and training steps (``metadata.json``, or ``run.json`` beside a run's ``.keras``)."""
    path = resolve_model_path(name)
    steps = model.metadata.get("training", {}).get("steps")
    source = "metadata.json"
    if steps is None and path.is_file() and (path.parent / "run.json").is_file():
        steps, source = json.loads((path.parent / "run.json").read_text()).get("step"), "run.json (not exported)"
    return {"name": name, "path": str(path), "training_steps": steps, "steps_from": source if steps else None}


def model_label(name: str) -> str:
    """Row label: ``astrotf NAME`` for a shipped model, ``astrotf STEM`` for a file or folder."""
    return f"astrotf {Path(name).stem if Path(name).exists() else name}"


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return f"{line.split(':', 1)[1].strip()} ({os.cpu_count()} cores)"
    return "unknown"


# ----------------------------------------------------------------------------- RGB
def reserved_images(n: int) -> list[tuple[str, np.ndarray]]:
    """The first ``n`` reserved Stellarium PNGs by name, centre-cropped to at most 512², RGB in [0, 1]."""
    from astrotf.io import read_image

    images = []
    for path in sorted(RESERVED.glob("*.png"))[:n]:
        data = read_image(path)[0][..., :3]
        h, w = data.shape[:2]
        top, left = (h - min(h, CROP)) // 2, (w - min(w, CROP)) // 2
        images.append((path.name, np.ascontiguousarray(data[top:top + CROP, left:left + CROP])))
    if len(images) < n:
        raise SystemExit(f"only {len(images)} reserved images in {RESERVED}")
    return images


def astropics_noise(clean: np.ndarray, index: int) -> np.ndarray:
    """AstroPics noise (default mix without identity / low-noise variants) at seed (2024, index)."""
    import tensorflow as tf

    from astrotf.data.noise import AstroPicsNoiseConfig, add_astropics_noise

    config = AstroPicsNoiseConfig(identity_prob=0.0, low_noise_prob=0.0)
    return add_astropics_noise(tf.constant(clean), config, tf.constant([2024, index], tf.int64)).numpy()


def gaussian_noise(clean: np.ndarray, index: int) -> np.ndarray:
    """White Gaussian noise of sigma 0.03, not clipped, at seed (2025, index)."""
    rng = np.random.default_rng([2025, index])
    return (clean + rng.normal(0.0, GAUSSIAN_SIGMA, clean.shape)).astype(np.float32)


def evaluate_rgb(images, model_name: str, model) -> dict:
    """PSNR / SSIM / speed of the model and the peers on both noise cases, and the identity case.

    Parameters
    ----------
    images : list of (str, ndarray)
        Names and clean (H, W, 3) images in [0, 1].
    model_name : str
        Row label of the model.
    model : astrotf.infer.LoadedModel

    Returns
    -------
    dict
        ``{"cases": {case: {method: {"psnr", "ssim", "s_per_mpix", "per_image"}}}, "identity": {...}}``.
        Every output (the noisy input's row included) is clipped to [0, 1] before it is scored.
    """
    run_model = model_denoiser(model)
    methods = {"noisy input": lambda x: x, model_name: run_model,
               "BM3D": with_estimated_sigma(bm3d_denoise), "NLM (fast)": with_estimated_sigma(nlm),
               "wavelet BayesShrink": wavelet, f"TV (weight {TV_WEIGHT})": tv}
    run_model(images[0][1])  # warm-up: graph tracing is not timed
    mpix = sum(clean.shape[0] * clean.shape[1] for _, clean in images) / 1e6
    report = {"cases": {}}
    for case, make_noisy in (("AstroPics noise", astropics_noise), (f"Gaussian σ={GAUSSIAN_SIGMA}", gaussian_noise)):
        scores = {name: {"psnr": [], "ssim": [], "seconds": 0.0} for name in methods}
        for i, (name, clean) in enumerate(images):
            outputs = run_methods(make_noisy(clean, i), methods, f"{case} {i + 1}/{len(images)} {name}")
            for method, (out, seconds) in outputs.items():
                out = np.clip(out, 0.0, 1.0)
                scores[method]["psnr"].append(peak_signal_noise_ratio(clean, out, data_range=1.0))
                scores[method]["ssim"].append(structural_similarity(clean, out, data_range=1.0, channel_axis=-1))
                scores[method]["seconds"] += seconds
        report["cases"][case] = {
            method: {"psnr": float(np.mean(s["psnr"])), "ssim": float(np.mean(s["ssim"])),
                     "s_per_mpix": s["seconds"] / mpix if method not in UNTIMED else None,
                     "per_image": {"psnr": s["psnr"], "ssim": s["ssim"]}}
            for method, s in scores.items()}
    identity = [peak_signal_noise_ratio(clean, np.clip(run_model(clean), 0.0, 1.0), data_range=1.0)
                for _, clean in images]
    report["identity"] = {"mean_psnr": float(np.mean(identity)), "min_psnr": float(np.min(identity)),
                          "per_image": identity, "pass": bool(np.min(identity) >= 40.0)}
    report["images"] = [name for name, _ in images]
    return report


def rgb_markdown(report: dict, model_name: str) -> str:
    parts = []
    for case, rows in report["cases"].items():
        parts.append(f"### {case} ({len(report['images'])} reserved images)\n")
        parts.append(table(["method", "PSNR (dB)", "SSIM", "s / Mpix"],
                           [[m, f"{r['psnr']:.2f}", f"{r['ssim']:.4f}", speed(r["s_per_mpix"])]
                            for m, r in rows.items()]))
        peers = {m: r for m, r in rows.items() if m not in ("noisy input", model_name)}
        best = max(peers, key=lambda m: peers[m]["psnr"])
        gain = rows[model_name]["psnr"] - peers[best]["psnr"]
        dssim = rows[model_name]["ssim"] - max(r["ssim"] for r in peers.values())
        parts.append(f"\nModel vs best peer ({best}): {gain:+.2f} dB PSNR; vs best peer SSIM: {dssim:+.4f}.\n")
    ident = report["identity"]
    parts.append(f"**Identity** (clean in): PSNR(output, input) mean {ident['mean_psnr']:.2f} dB, "
                 f"min {ident['min_psnr']:.2f} dB → {'PASS' if ident['pass'] else 'FAIL'} (≥ 40 dB)\n")
    return "\n".join(parts)


# ----------------------------------------------------------------------------- mono
def star_field(index: int):
    """Noise-free field, truth catalogue and noisy short exposure (Poisson(img / r) * r + N(0, ron) * r)."""
    from astrotf.data.simulate import StarFieldConfig, simulate_star_field

    clean, truth = simulate_star_field(StarFieldConfig(shape=(512, 512)), seed=FIELD_SEED + index)
    rng = np.random.default_rng(20_000 + index)
    noisy = rng.poisson(np.maximum(clean, 0.0) / RATIO) * RATIO + rng.normal(0.0, READ_NOISE, clean.shape) * RATIO
    return clean, truth, noisy.astype(np.float32)


def match(truth_xy: np.ndarray, det_xy: np.ndarray, radius: float = MATCH_RADIUS):
    """Greedy 1-to-1 matching by increasing distance within ``radius``; returns (truth index, detection index)."""
    if len(truth_xy) == 0 or len(det_xy) == 0:
        return np.zeros(0, int), np.zeros(0, int)
    pairs = cKDTree(truth_xy).sparse_distance_matrix(cKDTree(det_xy), radius, output_type="ndarray")
    used_t, used_d, ti, di = set(), set(), [], []
    for k in np.argsort(pairs["v"], kind="stable"):
        i, j = int(pairs["i"][k]), int(pairs["j"][k])
        if i not in used_t and j not in used_d:
            used_t.add(i), used_d.add(j), ti.append(i), di.append(j)
    return np.array(ti, int), np.array(di, int)


def aperture_errors(sub: np.ndarray, objects, truth, ti, di, min_flux: float) -> list[float]:
    """Relative flux error of matched bright stars: aperture of 2.5 FWHM at the detected centroid.

    The aperture sum is divided by the fraction of a Moffat profile inside the aperture, so the
    noise-free image scores about 0 apart from blending.
    """
    fwhm, beta = truth.meta["fwhm"], truth.meta["moffat_beta"]
    gamma = fwhm / (2.0 * np.sqrt(2.0 ** (1.0 / beta) - 1.0))
    radius = APERTURE * fwhm
    enclosed = 1.0 - (1.0 + (radius / gamma) ** 2) ** (1.0 - beta)
    keep = (truth["kind"][ti] == "star") & (truth["flux"][ti] > min_flux)
    if not keep.any():
        return []
    flux = sep.sum_circle(sub, objects["x"][di[keep]], objects["y"][di[keep]], radius)[0]
    return list(flux / enclosed / truth["flux"][ti[keep]] - 1.0)


def detect_and_score(image: np.ndarray, truth, input_rms: float) -> dict:
    """``sep`` detection at the fixed threshold (a) and at 3x the image's own RMS (b), matched to the truth.

    Parameters
    ----------
    image : ndarray (H, W)
        Linear frame.
    truth : astropy.table.Table
        Catalogue of `simulate_star_field` (stars and galaxies).
    input_rms : float
        Global background RMS of the noisy input: view (a) uses ``3 * input_rms`` for every image.

    Returns
    -------
    dict
        ``bkg_rms``, ``n_truth`` and per view ``detections``, ``tp``, ``fp``; ``flux_rel_err`` (view a).
    """
    data = np.ascontiguousarray(image, np.float64)
    background = sep.Background(data)
    sub = data - background.back()
    truth_xy = np.column_stack([truth["x"], truth["y"]])
    result = {"bkg_rms": float(background.globalrms), "n_truth": len(truth)}
    views = {"a": (THRESH_SIGMA * input_rms, None), "b": (THRESH_SIGMA, background.globalrms)}
    for view, (thresh, err) in views.items():
        objects = sep.extract(sub, thresh, err=err)
        ti, di = match(truth_xy, np.column_stack([objects["x"], objects["y"]]))
        result[view] = {"detections": len(objects), "tp": len(ti), "fp": len(objects) - len(ti)}
        if view == "a":
            result["flux_rel_err"] = aperture_errors(sub, objects, truth, ti, di, BRIGHT * input_rms)
    return result


def evaluate_mono(n_fields: int, model_name: str, model) -> dict:
    """Star recovery, false sources and flux error of the model and the peers on simulated fields.

    Returns
    -------
    dict
        ``{method: {"per_field": [...], "tpr_a", "fp_a", "precision_a", "f1_a", ... "s_per_mpix"}}``,
        counts summed over the fields.
    """
    methods = {"noisy input": lambda x: x, model_name: model_denoiser(model),
               "Gaussian blur σ=1 px": lambda x: gaussian_filter(x, 1.0),
               "BM3D": in_noise_units(bm3d_denoise), "NLM (fast)": in_noise_units(nlm)}
    per_method = {"noise-free truth": [], **{m: [] for m in methods}}
    seconds = dict.fromkeys(methods, 0.0)
    fields = []
    for i in range(n_fields):
        clean, truth, noisy = star_field(i)
        if i == 0:
            methods[model_name](noisy)  # warm-up: graph tracing is not timed
        input_rms = float(sep.Background(np.ascontiguousarray(noisy, np.float64)).globalrms)
        fields.append({"seed": FIELD_SEED + i, "fwhm": truth.meta["fwhm"], "sky": truth.meta["sky"],
                       "n_truth": len(truth), "input_rms": input_rms})
        per_method["noise-free truth"].append(detect_and_score(clean, truth, input_rms))
        for method, (out, sec) in run_methods(noisy, methods, f"field {i + 1}/{n_fields}").items():
            per_method[method].append(detect_and_score(out, truth, input_rms))
            seconds[method] += sec
    report = {"fields": fields, "methods": {}}
    for method, scores in per_method.items():
        n_truth = sum(s["n_truth"] for s in scores)
        row = {"per_field": scores, "bkg_rms": float(np.mean([s["bkg_rms"] for s in scores]))}
        for view in "ab":
            tp, fp = sum(s[view]["tp"] for s in scores), sum(s[view]["fp"] for s in scores)
            tpr, precision = tp / n_truth, tp / max(tp + fp, 1)
            row.update({f"tp_{view}": tp, f"fp_{view}": fp, f"tpr_{view}": tpr, f"precision_{view}": precision,
                        f"f1_{view}": 2 * precision * tpr / max(precision + tpr, 1e-12)})
        errors = np.concatenate([s["flux_rel_err"] for s in scores])
        row.update({"n_flux": int(errors.size),
                    "flux_abs_err_median": float(np.median(np.abs(errors))) if errors.size else float("nan"),
                    "flux_bias_median": float(np.median(errors)) if errors.size else float("nan"),
                    "s_per_mpix": seconds[method] / (n_fields * 512 * 512 / 1e6) if method not in UNTIMED else None})
        report["methods"][method] = row
    noisy_row, model_row = report["methods"]["noisy input"], report["methods"][model_name]
    report["pass"] = bool(model_row["tp_b"] > noisy_row["tp_b"] and model_row["fp_b"] <= noisy_row["fp_b"])
    return report


def mono_markdown(report: dict, model_name: str) -> str:
    n_truth = sum(f["n_truth"] for f in report["fields"])

    def view(r, v):
        return [f"{r[f'tpr_{v}']:.3f} ({r[f'tp_{v}']})", r[f"fp_{v}"],
                f"{r[f'precision_{v}']:.3f}", f"{r[f'f1_{v}']:.3f}"]

    rows = [[method, f"{r['bkg_rms']:.2f}", *view(r, "a"), *view(r, "b"), f"{r['flux_abs_err_median']:.3f}",
             f"{r['flux_bias_median']:+.3f}", r["n_flux"], speed(r["s_per_mpix"])]
            for method, r in report["methods"].items()]
    headers = ["method", "bkg RMS (e⁻)", "TPR (a)", "FP (a)", "prec (a)", "F1 (a)",
               "TPR (b)", "FP (b)", "prec (b)", "F1 (b)", "med abs(Δf/f)", "med Δf/f", "n flux", "s / Mpix"]
    m, n = report["methods"][model_name], report["methods"]["noisy input"]
    verdict = (f"Model vs noisy input, view (b): true sources {m['tp_b']} vs {n['tp_b']}, false positives "
               f"{m['fp_b']} vs {n['fp_b']} → {'PASS' if report['pass'] else 'FAIL'} (more true, no more false)")
    return "\n".join([
        f"### Mono linear star fields ({len(report['fields'])} × 512², r = {RATIO:g}, read noise "
        f"{READ_NOISE:g} e⁻, {n_truth} truth sources)\n",
        f"(a) fixed threshold {THRESH_SIGMA:g} × the noisy input's background RMS; (b) {THRESH_SIGMA:g} × each "
        f"image's own RMS (about 0 for the noise-free image: what a perfect denoiser would find). "
        f"`sep` defaults (3×3 smoothing kernel, min. area 5 px); matching 1-to-1 within {MATCH_RADIUS:g} px. "
        f"Flux: matched stars of view (a) with truth flux > {BRIGHT:g} × input RMS, aperture "
        f"{APERTURE:g} × FWHM, Moffat aperture correction.\n",
        table(headers, rows), "", verdict, ""])


# ----------------------------------------------------------------------------- main
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--rgb-model", default="resunet-rgb", help="shipped model name, .keras or SavedModel")
    parser.add_argument("--mono-model", default="resunet-mono", help="shipped model name, .keras or SavedModel")
    parser.add_argument("--n-rgb", type=int, default=8, help="reserved RGB images (0 skips part 1)")
    parser.add_argument("--n-fields", type=int, default=6, help="simulated mono fields (0 skips part 2)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "eval")
    args = parser.parse_args(argv)
    logging.getLogger("astrotf.infer").setLevel(logging.ERROR)  # Gaussian case: the model clips its input
    start = time.perf_counter()

    header = {"date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"), "cpu": cpu_name(),
              "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]) if argv is None else str(argv)}
    results, sections = {"header": header}, []
    parts = [("rgb", args.n_rgb, args.rgb_model), ("mono", args.n_fields, args.mono_model)]
    models = {part: load_model(name) for part, n, name in parts if n > 0}
    header["models"] = {part: model_info(name, models[part]) for part, n, name in parts if n > 0}
    if args.n_rgb > 0:
        label = model_label(args.rgb_model)
        results["rgb"] = evaluate_rgb(reserved_images(args.n_rgb), label, models["rgb"])
        sections.append(rgb_markdown(results["rgb"], label))
    if args.n_fields > 0:
        label = model_label(args.mono_model)
        results["mono"] = evaluate_mono(args.n_fields, label, models["mono"])
        sections.append(mono_markdown(results["mono"], label))
    header["run_time_s"] = round(time.perf_counter() - start, 1)

    lines = ["# astrotf shipped models against classical denoisers\n", f"- date: {header['date']}",
             f"- CPU: {header['cpu']}", f"- command: `{header['command']}`"]
    lines += [f"- {part} model: `{m['name']}` ({m['path']}), training steps: "
              + (f"{m['training_steps']} (from {m['steps_from']})" if m["steps_from"] else "unknown")
              for part, m in header["models"].items()]
    lines += [f"- run time: {header['run_time_s']} s", ""]
    text = "\n".join(lines + sections)
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "eval.md").write_text(text + "\n", encoding="utf-8")
    (args.out / "eval.json").write_text(json.dumps(results, indent=1, default=float) + "\n", encoding="utf-8")
    progress(f"wrote {args.out / 'eval.md'} and {args.out / 'eval.json'} in {header['run_time_s']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
