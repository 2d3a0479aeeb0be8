"""``astrotf infer``: denoise files with overlapping, feathered tiles (and restore, report)."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

import click

from astrotf.cli._common import friendly_errors, unsafe_model_option


@click.command()
@click.argument("images", nargs=-1, type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="Output file (one input only). Default: <stem>_denoised.<ext> beside the input.")
@click.option("--out-dir", type=click.Path(file_okay=False, path_type=Path), help="Folder for the outputs.")
@click.option("--model", "model_name", metavar="NAME_OR_PATH",
              help="Shipped model name, .keras file or SavedModel folder. Default: chosen from the data.")
@click.option("--overlap", type=click.FloatRange(0.0, 0.9), default=0.25, show_default=True,
              help="Fraction of a tile shared with its neighbours; 0 = naive tiling.")
@click.option("--tile", type=click.IntRange(min=16),
              help="Tile size in px. [per frame: the multiple of 16 from 256 (or the model's training tile if "
                   "larger) up to 720 that needs the fewest network pixels]")
@click.option("--batch-size", type=click.IntRange(min=1),
              help="Tiles per model call. [as many pixels as 8 tiles of 256 px]")
@click.option("--backend", type=click.Choice(["tensorflow", "onnxruntime", "tensorrt"]), default="tensorflow",
              show_default=True, help="Engine that runs the model (onnxruntime needs the model's model.onnx, "
                                      "tensorrt an engine from `astrotf export --format tensorrt`).")
@click.option("--precision", type=click.Choice(["auto", "float32", "bfloat16"]), default="auto", show_default=True,
              help="Arithmetic of the network: auto = bfloat16 for stretched-data models where the hardware has "
                   "native bfloat16 (GPU, AVX512-BF16/AMX CPU; input, residual and output stay float32), "
                   "else float32. Linear-data models keep float32 unless asked.")
@click.option("--force", is_flag=True, help="Overwrite existing outputs and noise maps (never the input). It does not "
                                           "override a refused noise model: see --trust-noise-model.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
@click.option("--server", metavar="HOST:PORT",
              help="Run the model on a TF Serving endpoint (gRPC port, or REST with --protocol rest); "
                   "--model names the served model. Tiling and blending stay local.")
@click.option("--protocol", type=click.Choice(["grpc", "rest"]), default="grpc", show_default=True,
              help="How to talk to --server.")
@click.option("--from-list", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="Text file of input paths, one per line (for archives too large for a command line).")
@click.option("--skip-existing", is_flag=True,
              help="Skip inputs whose output exists (outputs are written atomically, so they are complete): "
                   "run the same command again after a crash to resume.")
@click.option("--manifest", type=click.Path(dir_okay=False, path_type=Path),
              help="JSON-lines log of every input's result, timing and error, appended. "
                   "[default with --out-dir: DIR/astrotf-manifest.jsonl]")
@click.option("--shard", metavar="I/N", help="Process only the I-th of N interleaved shares of the sorted inputs "
                                               "(e.g. $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT).")
@click.option("--samples", type=click.IntRange(min=1),
              help="Self2Self: ensemble members averaged (TDR eq. 4). [model's metadata: 16]")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the Self2Self masks and dropout.")
@click.option("--average", type=click.Choice(["dropped", "all"]), default="dropped", show_default=True,
              help="Self2Self: average each pixel over the members that dropped it, or over all (eq. 4).")
@click.option("--restore", "restore_r", type=click.FloatRange(min=0), metavar="R",
              help="Set back every pixel that moved by more than R (data units): max |out - in| <= R.")
@click.option("--restore-sigma", type=click.FloatRange(min=0), metavar="K",
              help="As --restore with R = K x the input's noise level (Gaussian fit, see --noise-range).")
@click.option("--restore-mode", type=click.Choice(["input", "clip"]), default="input", show_default=True,
              help="--restore: set an abnormal pixel back to its input value (TDR), or clip its change to "
                   "[-R, R] (input ± R: the same bound, keeping the change that is allowed).")
@click.option("--soft-restore/--no-soft-restore", default=None,
              help="Give each pixel back the part of its change that is more than noise (local Wiener "
                   "shrinkage of input - denoised; applied before --restore). Keeps strong structure the "
                   "network cut, e.g. sunspot peaks; every pixel stays between its denoised and input values. "
                   "[on for one-image models (Self2Self, Neighbor2Neighbor), which learnt without clean data, and "
                   "for noise-conditioned models, whose science output must keep every source's flux; off for "
                   "others]")
@click.option("--soft-width", type=click.FloatRange(min=0, min_open=True), default=1.0, show_default=True,
              metavar="PX", help="--soft-restore: Gaussian sigma (px) of the window measuring the residual's power.")
@click.option("--strength", type=click.FloatRange(0.0, 1.0), default=None, metavar="S",
              help="Output = S x denoised + (1 - S) x input, before any restore (0 returns the input). "
                   "[the model's default: 1, or the calibrated value its metadata.json names]")
@click.option("--sky-level/--no-sky-level", default=True, show_default=True,
              help="Noise-conditioned models: give the output the input's sky level on scales above 32 px "
                   "(the mean of input - output over source-free sky, smoothed, added back), before --strength.")
@click.option("--report", is_flag=True, help="Print the noise level before and after (and the restored fraction).")
@click.option("--noise-range", type=(float, float), default=None, metavar="LOW HIGH",
              help="Value range whose histogram gives the noise level (--report, --restore-sigma, "
                   "--soft-restore). "
                   "[-20 20 for magnetograms (G), else the input's background ± 5 sigma]")
@click.option("--gain", type=float, metavar="E_PER_ADU",
              help="Noise-conditioned models: detector gain in e-/ADU, instead of the header's GAIN/EGAIN/CCDGAIN/ATODGAIN "
                   "or a fit of the frame. Refused for other models.")
@click.option("--read-noise", type=float, metavar="E",
              help="Noise-conditioned models: read noise in e- rms, instead of the header's RDNOISE/READNOIS/RON/READNSE "
                   "or a fit of the frame. Refused for other models.")
@click.option("--write-noise-map", is_flag=True,
              help="Noise-conditioned models: also write the noise sigma map the model was given, as float32 FITS "
                   "<input stem>_noise.fits beside the output (the input's header, HISTORY of the noise model). "
                   "Refused for other models.")
@click.option("--trust-noise-model", is_flag=True,
              help="Noise-conditioned models: use a noise model from the header or a fit, or the file's "
                   "uncertainty extension, even where the frame's own noise contradicts it (by default the "
                   "file fails with the reason); the disagreement is recorded in the HISTORY. Giving both "
                   "--gain and --read-noise vouches for them likewise.")
@click.option("--no-uncertainty", "use_uncertainty", is_flag=True, flag_value=False, default=True,
              help="Noise-conditioned models: ignore the FITS file's ERR/VAR/IVAR extension (its per-pixel "
                   "uncertainty, by default the sigma map when there is one) and use the gain and read-noise "
                   "model. --gain or --read-noise does so too. Refused for other models.")
@unsafe_model_option
@friendly_errors
def infer(images, output, out_dir, model_name, overlap, tile, batch_size, backend, precision, force, quiet,
          server, protocol, from_list, skip_existing, manifest, shard, samples, seed, average, restore_r,
          restore_sigma, restore_mode, soft_restore, soft_width, strength, sky_level, report, noise_range, gain,
          read_noise, write_noise_map, trust_noise_model, use_uncertainty):
    """Denoise IMAGES with overlapping, Gaussian-feathered tiles.

    The result keeps the input's format, dtype, channel layout and header (plus a
    HISTORY card). Over many files, a bad one is reported and the rest go on; the
    exit status is then 1.

    A noise-conditioned model also gets the frame's noise sigma map: the FITS file's
    own uncertainty (an ERR, VAR or IVAR extension) when it has one, else a noise model
    whose gain and read noise come from --gain/--read-noise, else the header, else a fit
    of the frame. Either is checked against the frame's own noise first (see
    --trust-noise-model).
    """
    from astrotf import batch
    from astrotf.noise_map import NoiseOptions
    from astrotf.restore import RestoreOptions

    noise = NoiseOptions(gain=gain, read_noise=read_noise, write_map=write_noise_map, trust=trust_noise_model,
                         uncertainty=use_uncertainty)
    images = batch.collect_inputs(images, from_list, batch.parse_shard(shard))
    batch.check_outputs(len(images), output, out_dir, skip_existing, force)
    restore = RestoreOptions(threshold=restore_r, sigmas=restore_sigma, mode=restore_mode, soft=soft_restore,
                             soft_width=soft_width, report=report, noise_range=noise_range,
                             strength=strength, sky_level=sky_level)
    options = batch.InferOptions(model=model_name, overlap=overlap, tile=tile, batch_size=batch_size, backend=backend,
                                 precision=precision, server=server, protocol=protocol, samples=samples, seed=seed,
                                 average=average, restore=restore, noise=noise)
    result = batch.run(images, options, output=output, out_dir=out_dir, force=force, skip_existing=skip_existing,
                       manifest=manifest, echo=click.echo, progress=None if quiet else _progress_bar)
    if result.exit_status:
        sys.exit(result.exit_status)


@contextlib.contextmanager
def _progress_bar(label: str):
    """A click progress bar on stderr, as ``update(done, total)`` for :func:`astrotf.batch.run`."""
    with click.progressbar(length=1, label=label, file=sys.stderr) as bar:
        def update(done: int, total: int) -> None:
            bar.length = total
            bar.update(done - bar.pos)

        yield update
