"""``astrotf models``, ``astrotf export`` and ``astrotf evaluate``: the shipped models, models out of runs,
and scores of results."""

from __future__ import annotations

from pathlib import Path

import click

from astrotf.cli._common import friendly_errors, unsafe_model_option


@click.command("models")
@friendly_errors
def models() -> None:
    """List the shipped models: data, channels, architecture, size, training steps, bench figures
    (and whether a model takes a noise sigma map: see `astrotf infer --gain`)."""
    from astrotf.backends import shipped_models

    cards = shipped_models()
    if not cards:
        click.echo("no shipped models found (set ASTROTF_MODELS to a folder of exported models)", err=True)
        return
    click.echo(f"{'name':<16} {'data':<11} {'ch':>2} {'architecture':<14} {'MB':>5} {'steps':>6} {'exported':<10} "
               "default for / bench")
    for c in cards:
        note = f"default for {c.default_for} data" if c.default_for else ""
        noise = "noise-conditioned (takes a noise sigma map)" if c.noise_conditioned else ""
        bench = c.summary() if c.bench else ""
        click.echo(f"{c.name:<16} {c.domain:<11} {c.channels:>2} {c.architecture:<14} {c.size_mb:>5.1f} "
                   f"{c.steps if c.steps is not None else '-':>6} {c.exported:<10} "
                   f"{'; '.join(filter(None, [note, noise, bench]))}")
    click.echo(f"(from {', '.join(sorted({str(c.path.parent) for c in cards}))})")


@click.command()
@click.argument("run_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Model folder, e.g. saved_models/NAME (SavedModel goes to NAME/VERSION/).")
@click.option("--version", "version", type=click.IntRange(min=1), default=1, show_default=True,
              help="TF Serving model version.")
@click.option("--checkpoint", type=click.Choice(["best", "last"]), default="best", show_default=True)
@click.option("--credits", "credits_file", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="JSON file with data credits and licences to record in metadata.json.")
@click.option("--format", "formats", type=click.Choice(["savedmodel", "onnx", "tensorrt"]), multiple=True,
              help="Also write model.onnx with 'onnx', and a TensorRT engine for this machine's GPU with "
                   "'tensorrt' (repeatable). The SavedModel is always written.")
@click.option("--trt-precision", type=click.Choice(["fp16", "fp32"]), default="fp16", show_default=True,
              help="TensorRT: FP16 network body with the data path in FP32, or FP32 throughout.")
@click.option("--trt-tile", type=click.IntRange(min=16), default=256, show_default=True,
              help="TensorRT: tile size the engine is tuned for (it takes 16 px up to twice this).")
@click.option("--trt-max-batch", type=click.IntRange(min=1), default=16, show_default=True,
              help="TensorRT: largest batch of tiles the engine takes (tuned for 8, or this if smaller).")
@click.option("--strength", type=click.FloatRange(0.0, 1.0), metavar="S",
              help="Record S as the model's default --strength (output = S x denoised + (1 - S) x input), a "
                   "residual calibrated by a benchmark; astrotf infer applies it unless told otherwise.")
@click.option("--force", is_flag=True, help="Replace this --version of an existing export (the others are kept).")
@unsafe_model_option
@friendly_errors
def export(run_dir, out, version, checkpoint, credits_file, formats, trt_precision, trt_tile, trt_max_batch,
           strength, force):
    """Export a training run as a TF Serving SavedModel with metadata.json (ONNX, TensorRT).

    RUN_DIR may also be an exported model folder (a shipped model): it is copied to --out
    with what --format names rebuilt from its model.keras (savedmodel, onnx) or added
    (tensorrt: an engine for this machine's GPU).
    """
    import json

    from astrotf.export import export_model

    credits = json.loads(credits_file.read_text()) if credits_file else None
    _, summary = export_model(run_dir, out, formats=formats, version=version, checkpoint=checkpoint, credits=credits,
                              force=force, trt_fp16=trt_precision == "fp16", trt_tile=trt_tile,
                              trt_max_batch=trt_max_batch, strength=strength)
    click.echo(summary)


@click.command()
@click.argument("output", type=click.Path(path_type=Path))
@click.option("--input", "noisy", required=True, type=click.Path(path_type=Path),
              help="The noisy image OUTPUT was made from.")
@click.option("--reference", type=click.Path(path_type=Path),
              help="Clean image (long exposure, noise-free simulation): PSNR, SSIM, KL; its detections "
                   "are the star list when --stars is not given.")
@click.option("--stars", type=click.Path(path_type=Path),
              help="Truth catalogue: CSV with columns x, y, flux (0-based pixels; optional kind, fwhm), "
                   "or a FITS file with a TRUTH table (astrotf's simulated fields).")
@click.option("--threshold", type=click.FloatRange(min=0, min_open=True), default=3.0, show_default=True,
              help="Detection threshold in units of the INPUT's background sigma (the same absolute "
                   "value for every image).")
@click.option("--radius", type=click.FloatRange(min=0, min_open=True), default=2.0, show_default=True,
              help="Matching radius in px.")
@click.option("--aperture", type=click.FloatRange(min=0, min_open=True),
              help="Aperture radius in px for fluxes and SNR. [2.5 x the catalogue's FWHM, else 5]")
@click.option("--noise-range", type=(float, float), metavar="LOW HIGH",
              help="Value range of the Gaussian histogram fit, e.g. -20 20 for magnetograms in G. "
                   "[input background ± 5 sigma]")
@click.option("--data-range", type=click.FloatRange(min=0, min_open=True),
              help="Data range of PSNR/SSIM (1 for images in [0, 1]). [max - min of the reference]")
@click.option("--strong", type=click.FloatRange(min=0), metavar="LEVEL",
              help="Pixels more than LEVEL from the input's background are strong: the slope of output vs input "
                   "is fitted over them (50 for magnetograms in G). [10 x the input's background sigma]")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Write every score to this JSON file.")
@click.option("--plots", "plots_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Write residual map, histograms, power spectra and flux-error plots (PNG) here.")
@friendly_errors
def evaluate(output, noisy, reference, stars, threshold, radius, aperture, noise_range, data_range, strong,
             json_path, plots_dir):
    """Score a denoised OUTPUT against its noisy --input: noise, changes, stars.

    Prints a table (input | output | reference columns): background noise (sigma-clipped MAD)
    and Gaussian-fit noise level, max change, correlation and slope (over all pixels and over the
    strong ones), structure in the residual above 10 px, where the power spectra
    start to differ, PSNR/SSIM/KL against --reference, and star recovery at a FIXED threshold
    tied to the input's noise (TPR, false positives, precision, F1, flux error) and at each
    image's own RMS, with the SNR gain (Astro U-net eq. 28).
    """
    from astrotf.evaluate import evaluate_files, format_table, write_json, write_plots

    result, notes = evaluate_files(output, noisy, reference, stars, threshold=threshold, radius=radius,
                                   aperture=aperture, noise_range=noise_range, data_range=data_range,
                                   strong=strong)
    click.echo(format_table(result))
    click.echo(notes)
    if json_path is not None:
        click.echo(f"wrote {write_json(result, json_path, output, noisy, reference, stars)}", err=True)
    if plots_dir is not None:
        for path in write_plots(result, plots_dir):
            click.echo(f"wrote {path}", err=True)
