"""Real linear frames without truth: what each method does to the sky, the noise and the sources.

Used by ``tools/bench_quality.py --real DIR`` (issue #21 item 5; BENCHMARKS.md, "Real linear images").
``DIR`` is what ``tools/real_frames.py`` writes: FITS frames and a ``CREDITS.json`` naming each one's
source, licence and notes. Every method runs on each frame (NaN pixels filled with the sky's median
first and NaN again after); a noise-conditioned model gets the σ map ``astrotf infer`` makes
(:func:`astrotf.noise_map.frame_noise`: the frame's ERR / VAR plane where it has one, else the
noise model from the header keywords or a fit of the frame), and is skipped, with the reason, on a
frame whose noise cannot be had. It runs even where ``astrotf infer`` would refuse that σ map after
checking it against the frame's own noise (:func:`astrotf.noise_map.distrust`): the report names
those frames and the reason, so their rows show what ``--trust-noise-model`` gives. No truth, so every measure is against the input:

* **sky shift**: ``median(output - input) / σ_in`` over the input's sky (outside the sources `sep`
  finds at 1.5 σ, grown by 3 px; :func:`astrotf.metrics.sky_bias`): 0 for a method that leaves the
  sky level alone;
* **background σ ratio**: sigma-clipped MAD σ of the output over the input's, both after `sep`'s
  background is taken off (< 1: smoother);
* **source-flux ratio**: median over the input's bright, unblended sources (aperture S/N ≥ 20) of
  the aperture flux after / before (:func:`astrotf.metrics.source_flux_ratio`);
* **max |Δ| / σ**: the largest change of any pixel, in units of σ_in;
* **residual structure**: of ``input - output`` above 10 px (:func:`astrotf.metrics.residual_structure`;
  1 = white noise, more = the method took structure out with the noise).

Each frame also gets a PNG: the input and every output (one asinh stretch) above their residuals
(``input - output``, ±3 σ_in), for a person to look at.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from astrotf import metrics
from bench_report import fmt, progress, save_png, table

INPUT = "noisy input"


def load_frames(folder: Path, crop: int) -> list[dict]:
    """The frames of ``folder`` (see `tools/real_frames.py`), centre-cropped to at most ``crop``², with
    their uncertainty plane where they have one."""
    from astrotf import io

    credits_path = folder / "CREDITS.json"
    if not credits_path.is_file():
        raise SystemExit(f"--real {folder}: no CREDITS.json (make the folder with tools/real_frames.py)")
    frames = []
    for entry in json.loads(credits_path.read_text())["frames"]:
        path = folder / entry["file"]
        if not path.is_file():
            progress(f"real frame {entry['file']}: missing in {folder}; skipped")
            continue
        image, info = io.read_image(path)  # the first image HDU, as astrotf infer reads it
        data, header, uncertainty = np.asarray(image[..., 0], np.float64), io.inherited_header(info), None
        h, w = data.shape
        top, left = max((h - crop) // 2, 0), max((w - crop) // 2, 0)
        window = (slice(top, top + crop), slice(left, left + crop))
        if (found := io.read_uncertainty(info)) is not None:  # an ERR / VAR plane kept by real_frames.py
            uncertainty = io.Uncertainty(np.ascontiguousarray(found.values[window]), found.kind, found.source)
        frames.append({"name": entry["name"], "data": np.ascontiguousarray(data[window]), "uncertainty": uncertainty,
                       "header": header, "credits": entry})
    if not frames:
        raise SystemExit(f"--real {folder}: none of the frames named in CREDITS.json is there")
    return frames


class _SigmaMap:
    """The σ map of a frame, offered to the methods as a noise model's ``sigma_map`` (any shape of its size)."""

    def __init__(self, sigma: np.ndarray):
        self.sigma = np.asarray(sigma, np.float32)

    def sigma_map(self, x: np.ndarray) -> np.ndarray:
        return self.sigma.reshape(np.shape(x))


def _frame_noise(frame: dict, filled: np.ndarray):
    """``(σ map, what it is, reason)`` as :func:`astrotf.noise_map.frame_noise` makes it for ``astrotf infer``
    (the uncertainty plane first, else the noise model), used as with ``--trust-noise-model``; what it is
    names why ``astrotf infer`` would refuse it without that option. ``(None, None, reason)`` without one."""
    from astrotf.errors import AstroTFError
    from astrotf.noise_map import NoiseOptions, frame_noise

    try:
        found = frame_noise(filled[..., None], frame["header"], NoiseOptions(trust=True), frame.get("uncertainty"))
    except AstroTFError as err:
        return None, None, str(err)
    try:
        frame_noise(filled[..., None], frame["header"], NoiseOptions(), frame.get("uncertainty"))
        refused = []
    except AstroTFError as err:
        refused = [str(err)]
    if found.uncertainty is not None:
        what = {"uncertainty": found.uncertainty}
    else:
        model = found.models[0]
        what = {"gain": model.gain, "read_noise": model.read_noise, "unit": model.unit, "exptime": model.exptime,
                "gain_from": model.gain_from, "read_noise_from": model.read_noise_from}
    return _SigmaMap(found.sigma[..., 0]), {**what, "refused_by_infer": refused}, None


def run_on_frame(frame: dict, methods: dict) -> tuple[dict, dict]:
    """``({name: (output, seconds)}, {name: why skipped})`` for one frame; NaN filled and restored."""
    data = frame["data"]
    bad = ~np.isfinite(data)
    filled = np.where(bad, np.nanmedian(data), data).astype(np.float32)
    outputs, skipped = {INPUT: (data, 0.0)}, {}
    noise_model, what, why = None, None, None
    for name, method in methods.items():
        conditioned = getattr(method, "noise_conditioned", False)
        if conditioned and noise_model is None and why is None:
            noise_model, what, why = _frame_noise(frame, filled)
        if conditioned and noise_model is None:
            skipped[name] = f"no noise model: {why}"
            continue
        if hasattr(method, "prepare"):
            method.prepare(filled.shape)
        start = time.perf_counter()
        try:
            out = method(filled, noise_model) if conditioned else method(filled)
        except Exception as err:  # noqa: BLE001 - one broken method must not end the benchmark
            skipped[name] = f"{type(err).__name__}: {err}"
            continue
        out = np.asarray(out, np.float64)
        out[bad] = np.nan
        outputs[name] = (out, time.perf_counter() - start)
    if what is not None:
        frame["noise_model"] = what
    return outputs, skipped


def score_frame(inp: np.ndarray, out: np.ndarray, sky: np.ndarray, sigma_in: float) -> dict:
    """The no-truth measures of one output (see the module docstring)."""
    sub_out = metrics.subtract_background(out)
    flux = metrics.source_flux_ratio(inp, out)
    residual = inp - out
    return {"sky_shift": metrics.sky_bias(out, inp, sigma_in, sky),
            "bkg_sigma_ratio": metrics.background_noise(sub_out[np.isfinite(out)]).sigma / sigma_in,
            "flux_ratio": flux.ratio, "n_sources": flux.n_sources, "n_sharp": flux.n_sharp,
            "max_change": float(np.nanmax(np.abs(residual))) / sigma_in,
            "residual_structure": metrics.residual_structure(np.where(np.isfinite(residual), residual, np.nan))}


def bench_real(frames: list[dict], methods: dict, out_dir: Path | None = None) -> dict:
    """Every method on every frame: ``{"frames": {name: {...}}, "plots": [...]}``."""
    report: dict = {"frames": {}, "plots": []}
    for frame in frames:
        inp = frame["data"]
        sigma_in = metrics.background_noise(metrics.subtract_background(inp)[np.isfinite(inp)]).sigma
        sky = ~metrics.source_mask(inp)
        outputs, skipped = run_on_frame(frame, methods)
        scores = {}
        for name, (out, seconds) in outputs.items():
            scores[name] = {**score_frame(inp, out, sky, sigma_in), "s_per_mpix": seconds / (inp.size / 1e6)}
        scores[INPUT]["s_per_mpix"] = None
        report["frames"][frame["name"]] = {
            "shape": list(inp.shape), "sigma_in": sigma_in, "sky_median": float(np.nanmedian(inp[sky])),
            "bunit": str(frame["header"].get("BUNIT", "")), "source": frame["credits"].get("source"),
            "noise_model": frame.get("noise_model"), "skipped": skipped, "methods": scores}
        progress(f"  real frame {frame['name']}: {len(outputs) - 1} methods" +
                 (f", skipped: {', '.join(skipped)}" if skipped else ""))
        if out_dir is not None:
            report["plots"].append(str(residual_png(frame["name"], outputs, sigma_in, out_dir)))
    return report


def residual_png(name: str, outputs: dict, sigma_in: float, out_dir: Path, crop: int = 192) -> Path:
    """Input and outputs (top, one asinh stretch) over their residuals ``input - output`` (bottom, ±3 σ_in),
    on the central ``crop``² pixels so that a person sees single pixels."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    h, w = outputs[INPUT][0].shape
    top, left = max((h - crop) // 2, 0), max((w - crop) // 2, 0)
    window = np.s_[top:top + crop, left:left + crop]
    outputs = {label: (image[window], seconds) for label, (image, seconds) in outputs.items()}
    inp = outputs[INPUT][0]
    sky = float(np.nanmedian(inp))
    low, high = sky - 2.0 * sigma_in, sky + 60.0 * sigma_in  # asinh: the noise visible, the stars not clipped
    n = len(outputs)
    fig, axes = plt.subplots(2, n, figsize=(2.6 * n, 5.4), squeeze=False)
    for j, (label, (image, _)) in enumerate(outputs.items()):
        stretched = np.arcsinh(np.clip(image - low, 0, None) / (high - low) * 100) / np.arcsinh(100)
        axes[0, j].imshow(stretched, cmap="gray", origin="lower", vmin=0, vmax=1, interpolation="nearest")
        axes[0, j].set_title(label, fontsize=6)
        residual = (inp - image) / sigma_in
        axes[1, j].imshow(residual, cmap="RdBu_r", origin="lower", vmin=-3, vmax=3, interpolation="nearest")
        axes[1, j].set_title("input − output (±3σ)" if j else "", fontsize=6)
        for ax in axes[:, j]:
            ax.axis("off")
    fig.suptitle(f"{name} (central {crop}² px)", fontsize=8)
    fig.tight_layout()
    path = out_dir / f"real_{''.join(c if c.isalnum() or c in '-_' else '_' for c in name)}.png"
    save_png(fig, path)
    return path


def real_markdown(report: dict) -> str:
    parts = []
    for name, frame in report["frames"].items():
        rows = [[m, fmt(r["sky_shift"], "+.3f"), fmt(r["bkg_sigma_ratio"], ".3f"), fmt(r["flux_ratio"], ".3f"),
                 fmt(r["max_change"], ".1f"), fmt(r["residual_structure"], ".2f"), fmt(r["s_per_mpix"], ".2f")]
                for m, r in frame["methods"].items()]
        model = frame.get("noise_model")
        note = ""
        if model and model.get("uncertainty"):
            note = f"; σ map from the file's {model['uncertainty']}"
        elif model:
            note = (f"; noise model gain {model['gain']:.3g} ({model['gain_from']}), read noise "
                    f"{model['read_noise']:.3g} e⁻ ({model['read_noise_from']}), unit {model['unit']}")
        n_src, n_sharp = frame["methods"][INPUT]["n_sources"], frame["methods"][INPUT].get("n_sharp", 0)
        parts += [f"### Real frame: {name} ({frame['shape'][0]}×{frame['shape'][1]}, BUNIT '{frame['bunit']}', "
                  f"σ_in {frame['sigma_in']:.4g}, {n_src} bright sources, {n_sharp} sharper ones left out{note})\n",
                  f"Source: {frame['source']}\n",
                  table(["method", "sky shift (σ)", "bkg σ / input", "source flux ratio", "max abs Δ / σ",
                         "residual structure", "s / Mpix"], rows), ""]
        for method, why in frame["skipped"].items():
            parts.append(f"- {method}: not run ({why})")
        if model and model.get("refused_by_infer"):
            parts.append(f"- `astrotf infer` refuses this frame's noise unless `--trust-noise-model` is given: "
                         f"{'; '.join(model['refused_by_infer'])}. The noise-conditioned rows show what that "
                         "option gives.")
        parts.append("")
    parts.append("No truth: *sky shift*: median(output − input) / σ_in over the input's sky (outside sep's sources "
                 "at 1.5σ, grown 3 px); *bkg σ / input*: sigma-clipped MAD after sep's background; *source flux "
                 "ratio*: median after/before aperture flux of the input's unblended sources of S/N ≥ 20, leaving out "
                 "those with over half their flux in one pixel (cosmic rays, hot pixels); *max abs "
                 "Δ / σ*: largest change of a pixel; *residual structure*: of input − output above 10 px (1 = "
                 "white). Residual images: " + ", ".join(f"[{Path(p).name}]({Path(p).name})" for p in report["plots"])
                 + "\n")
    return "\n".join(parts)
