"""Plots of an `Evaluation`: residual map, histograms with Gaussian fits, power spectra, flux error."""

from __future__ import annotations

import os
from pathlib import Path

from astrotf.evaluate.scores import Evaluation


def write_plots(evaluation: Evaluation, directory: str | os.PathLike, dpi: int = 90) -> list[Path]:
    """Residual map, histograms with Gaussian fits, power spectra and flux error against flux.

    PNG files in ``directory`` (created): ``residual.png``, ``histograms.png``,
    ``power_spectra.png`` and, with stars, ``flux_error.png``. Matplotlib's Agg backend: no
    display needed.

    Returns
    -------
    list of pathlib.Path
        The files written.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    planes, scores = evaluation.planes, evaluation.scores
    sigma = scores["background_sigma"]["input"] or 1.0
    written = []
    colours = {"input": "tab:grey", "output": "tab:blue", "reference": "tab:green"}

    # residual maps
    panels = [("output - input", planes["output"] - planes["input"])]
    if "reference" in planes:
        panels.append(("output - reference", planes["output"] - planes["reference"]))
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4.6), squeeze=False)
    for ax, (title, residual) in zip(axes[0], panels):
        im = ax.imshow(residual, origin="lower", cmap="RdBu_r", vmin=-3 * sigma, vmax=3 * sigma,
                       interpolation="nearest")
        ax.set_title(f"{title} (±3σ_input)")
        fig.colorbar(im, ax=ax, fraction=0.046)
    written.append(_save(fig, directory / "residual.png", dpi))

    # histograms with the Gaussian fits
    fig, ax = plt.subplots(figsize=(6, 4.2))
    for column, fit in evaluation.noise_fits.items():
        ax.step(fit.centers, fit.counts, where="mid", color=colours[column], alpha=0.7, label=f"{column}")
        ax.plot(fit.centers, fit.model(fit.centers), color=colours[column], ls="--",
                label=f"Gaussian fit σ = {fit.sigma:.3g}")
    ax.set_yscale("log")
    ax.set_ylim(bottom=0.5)
    ax.set_xlabel("pixel value")
    ax.set_ylabel("pixels per bin")
    ax.set_title("pixel-value histograms and Gaussian fits (noise level)")
    ax.legend(fontsize=8)
    written.append(_save(fig, directory / "histograms.png", dpi))

    # power spectra
    fig, ax = plt.subplots(figsize=(6, 4.2))
    for column, (freq, power) in evaluation.spectra.items():
        ax.loglog(freq, power, color=colours[column], label=column)
    f_diff = scores.get("spectra_differ_input", {}).get("output")
    if f_diff is not None:
        ax.axvline(f_diff, color="k", ls="--", lw=1, label=f"output differs from input above {f_diff:.3f}")
    ax.set_xlabel("spatial frequency (cycles / pixel)")
    ax.set_ylabel("power")
    ax.set_title("azimuthally averaged power spectra")
    ax.legend(fontsize=8)
    written.append(_save(fig, directory / "power_spectra.png", dpi))

    # flux error against flux
    fixed = evaluation.stars.get("fixed", {})
    if any(r.truth_flux.size for r in fixed.values()):
        fig, ax = plt.subplots(figsize=(6, 4.2))
        for column, rec in fixed.items():
            if rec.truth_flux.size:
                ax.scatter(rec.truth_flux, rec.measured_flux / rec.truth_flux - 1.0, s=8, alpha=0.6,
                           color=colours[column], label=f"{column} (median {rec.flux_error_median:+.3f})")
        ax.axhline(0.0, color="k", lw=0.8)
        ax.set_xscale("log")
        ax.set_xlabel("catalogue flux")
        ax.set_ylabel("relative flux error (F - F_true) / F_true")
        ax.set_ylim(-1, 1)
        ax.set_title("flux error of matched stars (fixed threshold)")
        ax.legend(fontsize=8)
        written.append(_save(fig, directory / "flux_error.png", dpi))
    return written


def _save(fig, path: Path, dpi: int) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path
