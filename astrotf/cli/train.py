"""``astrotf train``: a denoiser on a data folder (ResUNet, NAFNet; the enhanced Pix2Pix GAN), or Self2Self or
Neighbor2Neighbor on one image (TDR)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from astrotf.cli._common import friendly_errors, unsafe_model_option
from astrotf.errors import AstroTFError


@click.group()
def train() -> None:
    """Train a model (see pipelines/ for recipes)."""


def _resolve_recipe(config: str | None) -> Path | None:
    """The recipe file of ``--config`` (a path or a shipped recipe's name); TensorFlow-free."""
    from astrotf.config import resolve_recipe_path

    return resolve_recipe_path(config)


def _data_and_run_options(func):
    """The options ``train resunet`` and ``train pix2pix`` share: data, run folder, length, precision, resume."""
    options = [
        click.option("--data", type=click.Path(file_okay=False, path_type=Path),
                     help="Folder of training images: DIR/clean (+ DIR/noisy with --paired), or images directly."),
        click.option("--paired/--clean-only", "paired", default=None,
                     help="Aligned DIR/noisy + DIR/clean pairs, or clean images with synthetic noise. [recipe]"),
        click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path),
                     help="Run directory, e.g. runs/NAME (checkpoints, logs, previews)."),
        click.option("--epochs", type=click.IntRange(min=1), help="Number of epochs. [recipe]"),
        click.option("--steps-per-epoch", type=click.IntRange(min=1), help="Training steps per epoch. [recipe]"),
        click.option("--batch-size", type=click.IntRange(min=1), help="Tiles per batch. [recipe]"),
        click.option("--tile", type=click.IntRange(min=8), help="Tile size in px. [recipe]"),
        click.option("--lr", type=click.FloatRange(min=0, max=1, min_open=True, max_open=True),
                     help="Peak learning rate of Adam. [recipe]"),
        click.option("--seed", type=int, help="Seed of data split, crops, noise and weights. [recipe: 0]"),
        click.option("--ema", type=click.FloatRange(min=0, max=1, max_open=True),
                     help="Decay of a moving average of the weights, validated and saved instead of them "
                          "(0.999: about the last thousand steps; 0: none). [recipe: 0]"),
        click.option("--precision", type=click.Choice(["auto", "float32", "mixed_bfloat16", "mixed_float16"]),
                     help="Keras dtype policy; auto = mixed_bfloat16 where the hardware has native bfloat16 "
                          "(GPU, AVX512-BF16/AMX CPU), else float32. [recipe: auto]"),
        click.option("--resume", is_flag=True, help="Continue the run in --out from its last checkpoint."),
        click.option("--init", "init", metavar="MODEL",
                     help="Start from the weights of a trained model of the same architecture: a shipped model's "
                          "name (resunet-rgb), a model folder, a .keras file or a run (fine-tuning on your own data)."),
        click.option("--strategy", type=click.Choice(["default", "mirrored", "multiworker"]), default="default",
                     show_default=True,
                     help="tf.distribute: one device; all GPUs of this machine; or the machines of TF_CONFIG. "
                          "--batch-size is the global batch. Checkpoints work across strategies."),
        click.option("-q", "--quiet", is_flag=True, help="One line per epoch instead of a progress bar."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _load_recipe(config, resume, out, default, load, from_dict):
    """The recipe of ``--config`` (a file or a shipped recipe's name), or on ``--resume`` without it the
    run's own; validated before TensorFlow is imported, so a typo answers at once."""
    recipe_path = _resolve_recipe(config)
    if resume and recipe_path is None and (out / "run.json").is_file():
        from astrotf.runs import load_run

        # continue with the run's own settings; options given now still override them
        return from_dict(load_run(out)["recipe"], str(out / "run.json"))
    if recipe_path is None and default is None:
        return from_dict({}, "the default recipe")
    return load(recipe_path or _resolve_recipe(default))


def _common_overrides(paired, batch_size, tile, seed, epochs, steps_per_epoch, lr, ema, precision) -> dict:
    mode = None if paired is None else ("paired" if paired else "clean-only")
    return dict(data__mode=mode, data__batch_size=batch_size, data__tile=tile, data__seed=seed,
                data__noise="none" if paired else None, train__epochs=epochs,
                train__steps_per_epoch=steps_per_epoch, train__lr=lr, train__seed=seed, train__ema=ema,
                train__precision=precision)


def _check_data_and_init(data, resume, init, out):
    """``--data`` present and a folder (or a run in ``out`` to resume); ``--init`` as a path (a shipped
    model's name resolved)."""
    if not resume and data is None:
        raise AstroTFError("--data is required to start a training run (or pass --resume)")
    if data is None and not (out / "run.json").is_file():
        raise AstroTFError(f"{out}: no run to resume (no run.json); pass --data to start one")
    if data is not None and not data.is_dir():
        raise AstroTFError(f"{data}: data folder does not exist (--data)")
    if init is not None and not Path(init).exists():
        from astrotf.backends import resolve_model_path

        init = resolve_model_path(init)  # a shipped model's name
    return init


def _run(trainer, recipe, data, out, resume, quiet, strategy, init) -> dict:
    from astrotf.runs import TrainingInterrupted

    try:
        return trainer(recipe, data, out, resume=resume, verbose=2 if quiet else 1, strategy=strategy, init=init)
    except TrainingInterrupted as stop:
        click.echo(f"Interrupted: {stop}", err=True)
        sys.exit(130)


@train.command("resunet")
@_data_and_run_options
@click.option("--config", "config", metavar="TOML",
              help="Recipe: a pipelines/*.toml file or its name (resunet-rgb, resunet-mono-linear). "
                   "[default: resunet-rgb]")
@click.option("--space-to-depth", type=click.Choice(["1", "2", "4"]),
              help="Fold B x B pixel blocks into channels before the U-Net: 2 runs it at half resolution, "
                   "several times faster. [recipe: 1]")
@unsafe_model_option
@friendly_errors
def train_resunet(data, paired, out, config, epochs, steps_per_epoch, batch_size, tile, space_to_depth, lr, seed,
                  ema, precision, resume, init, strategy, quiet):
    """Train an image-to-image denoiser: the AstroPics ResUNet, or the recipe's [model] (nafnet).

    Stop with Ctrl-C at any time: the run is checkpointed and continues with --resume, which also
    continues a run whose process was killed (from its last checkpoint).
    """
    from astrotf.config import DEFAULT_RESUNET_RECIPE, load_recipe, override, recipe_from_dict

    recipe = _load_recipe(config, resume, out, DEFAULT_RESUNET_RECIPE, load_recipe, recipe_from_dict)
    recipe = override(recipe, model__space_to_depth=None if space_to_depth is None else int(space_to_depth),
                      **_common_overrides(paired, batch_size, tile, seed, epochs, steps_per_epoch, lr, ema, precision))
    init = _check_data_and_init(data, resume, init, out)

    from astrotf.train import train as run_training

    state = _run(run_training, recipe, data, out, resume, quiet, strategy, init)
    click.echo(f"Finished {state['epoch']} epoch(s), {state['step']} steps, best validation loss "
               f"{state['best_val_loss']:.5f}; model: {Path(out) / 'model_best.keras'}")


@train.command("pix2pix")
@_data_and_run_options
@click.option("--config", "config", metavar="TOML",
              help="Recipe: a pipelines/*.toml file or its name (pix2pix-rgb, pix2pix-rgb-small). "
                   "[default: pix2pix-rgb]")
@click.option("--reconstruction", type=click.Choice(["l1", "astropics"]),
              help="The generator's reconstruction term: the paper's L1, or the composite star-aware loss of "
                   "the recipe's [loss]. [recipe: l1]")
@click.option("--l1-weight", type=click.FloatRange(min=0, min_open=True),
              help="Weight of the reconstruction term against the adversarial one (lambda). [recipe: 100]")
@unsafe_model_option
@friendly_errors
def train_pix2pix_command(data, paired, out, config, reconstruction, l1_weight, epochs, steps_per_epoch, batch_size,
                          tile, lr, seed, ema, precision, resume, init, strategy, quiet):
    """Train the enhanced Pix2Pix (a GAN: generator + PatchGAN discriminator) on a data folder.

    The same tiles as train resunet; the generator is what is saved, exported and denoises. Stop
    with Ctrl-C at any time: both networks are checkpointed and continue with --resume.
    """
    from astrotf.config import DEFAULT_PIX2PIX_RECIPE, load_pix2pix_recipe, override, pix2pix_recipe_from_dict

    recipe = _load_recipe(config, resume, out, DEFAULT_PIX2PIX_RECIPE, load_pix2pix_recipe, pix2pix_recipe_from_dict)
    recipe = override(recipe, gan__reconstruction=reconstruction, gan__l1_weight=l1_weight,
                      **_common_overrides(paired, batch_size, tile, seed, epochs, steps_per_epoch, lr, ema, precision))
    init = _check_data_and_init(data, resume, init, out)

    from astrotf.train import train_pix2pix

    state = _run(train_pix2pix, recipe, data, out, resume, quiet, strategy, init)
    click.echo(f"Finished {state['epoch']} epoch(s), {state['step']} steps, best validation reconstruction loss "
               f"{state['best_val_loss']:.5f}; generator: {Path(out) / 'model_best.keras'}")


def _one_image_options(func):
    """The options ``train self2self`` and ``train neighbor2neighbor`` share."""
    options = [
        click.argument("image", required=False, type=click.Path(dir_okay=False, path_type=Path)),
        click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path),
                     help="Run directory, e.g. runs/NAME (checkpoints, history, previews)."),
        click.option("--steps", type=click.IntRange(min=1), help="Training steps. [recipe]"),
        click.option("--patch", type=click.IntRange(min=16), help="Patch size in px. [recipe]"),
        click.option("--batch-size", type=click.IntRange(min=1), help="Patches per step. [recipe: 8]"),
        click.option("--lr", type=click.FloatRange(min=0, max=1, min_open=True, max_open=True),
                     help="Adam learning rate (cosine decay). [recipe: 1e-3]"),
        click.option("--seed", type=int, help="Seed of weights, patches, flips and masks. [recipe: 0]"),
        click.option("--init", "init", type=click.Path(exists=True, path_type=Path), metavar="RUN",
                     help="Fine-tune from a run, exported model folder or .keras file of the same method "
                          "(keeps its normalisation)."),
        click.option("--resume", is_flag=True, help="Continue the run in --out from its last checkpoint."),
        click.option("-q", "--quiet", is_flag=True, help="Log lines instead of a progress bar."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _train_one_image(method, default, image, out, config, init, resume, quiet, **overrides):
    """Check the arguments, load and override the recipe, run :func:`astrotf.train.train_self2self`."""
    from astrotf.config import load_self2self_recipe, override, self2self_recipe_from_dict

    if not resume and image is None:
        raise AstroTFError(f"IMAGE is required to start a {method} run (or pass --resume)")
    if image is not None and not image.is_file():
        raise AstroTFError(f"{image}: no such file (IMAGE)")
    if resume and init is not None:
        raise AstroTFError("--init starts a new run; it cannot be combined with --resume")
    if resume and image is None and _resolve_recipe(config) is None and not (out / "run.json").is_file():
        raise AstroTFError(f"{out}: no run to resume (no run.json); IMAGE is required to start one")
    recipe = _load_recipe(config, resume, out, default, load_self2self_recipe, self2self_recipe_from_dict)
    if recipe.train.method != method:
        raise AstroTFError(f"{config or default or out / 'run.json'}: a {recipe.train.method} recipe; train it with "
                           f"astrotf train {recipe.train.method}")
    recipe = override(recipe, **{f"train__{k}": v for k, v in overrides.items()})

    from astrotf.runs import TrainingInterrupted
    from astrotf.train import train_self2self

    try:
        state = train_self2self(recipe, image, out, init=init, resume=resume, verbose=2 if quiet else 1)
    except TrainingInterrupted as stop:
        click.echo(f"Interrupted: {stop}", err=True)
        sys.exit(130)
    click.echo(f"Finished {state['step']} steps in {state['wall_time_s']:.0f} s; model: {Path(out)} "
               f"(denoise with: astrotf infer IMAGE --model {out}; export with: astrotf export {out} --out ...)")


@train.command("self2self")
@_one_image_options
@click.option("--config", "config", metavar="TOML",
              help="Recipe: a pipelines/*.toml file or its name. [self2self-hmi's model, 2000 steps]")
@click.option("--keep-prob", type=click.FloatRange(0, 1, min_open=True, max_open=True),
              help="Bernoulli probability p that a pixel is given to the network. [recipe: 0.7]")
@click.option("--mask-block", type=click.IntRange(1, 8),
              help="Drop pixels in B x B blocks (for noise correlated between neighbours). [recipe: 1]")
@unsafe_model_option
@friendly_errors
def train_self2self_command(image, out, steps, patch, batch_size, lr, seed, init, resume, quiet, config, keep_prob,
                            mask_block):
    """Train Self2Self on the single noisy IMAGE (TDR: train, then denoise others of its kind).

    Loss on the dropped pixels only (eq. 3), random flips, NaN pixels ignored. Stop
    with Ctrl-C at any time: the run is checkpointed and continues with --resume.
    """
    _train_one_image("self2self", None, image, out, config, init, resume, quiet, steps=steps, keep_prob=keep_prob,
                     mask_block=mask_block, patch=patch, batch_size=batch_size, lr=lr, seed=seed)


@train.command("neighbor2neighbor")
@_one_image_options
@click.option("--config", "config", metavar="TOML",
              help="Recipe: a pipelines/*.toml file or its name. [neighbor2neighbor-hmi]")
@click.option("--gamma", type=click.FloatRange(0, 100),
              help="Weight of the regulariser that closes the sub-images' half-pixel gap. [recipe: 1]")
@click.option("--cell", type=click.Choice(["2", "4", "6", "8"]),
              help="Take the two pixels of a pair CELL/2 apart in CELL x CELL cells (2: neighbours; more for "
                   "noise correlated between neighbours). [recipe: 2]")
@click.option("--precision", type=click.Choice(["auto", "float32", "mixed_bfloat16"]),
              help="Keras dtype policy; auto = mixed_bfloat16 where the hardware has native bfloat16 "
                   "(GPU, AVX512-BF16/AMX CPU), else float32. [recipe: auto]")
@unsafe_model_option
@friendly_errors
def train_neighbor2neighbor_command(image, out, steps, patch, batch_size, lr, seed, init, resume, quiet, config,
                                    gamma, cell, precision):
    """Train a Neighbor2Neighbor ResUNet on the single noisy IMAGE (TDR's rule: train, then denoise
    others of its kind, one deterministic pass each).

    Pairs of neighbouring sub-images of every patch teach the network without clean data;
    NaN pixels are ignored. Stop with Ctrl-C at any time: the run is checkpointed and
    continues with --resume.
    """
    _train_one_image("neighbor2neighbor", "neighbor2neighbor-hmi", image, out, config, init, resume, quiet,
                     steps=steps, gamma=gamma, cell=None if cell is None else int(cell), patch=patch,
                     batch_size=batch_size, lr=lr, seed=seed, precision=precision)
