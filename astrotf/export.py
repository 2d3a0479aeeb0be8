"""Export a trained run as a TF Serving SavedModel plus ``metadata.json``.

Layout (TF Serving's model base path)::

    saved_models/NAME/
      1/                  SavedModel, signature ``serving_default``:
                            input  "image"    float32 [None, None, None, C]  (tiles, any H x W)
                            (input "noise_sigma", same shape: a noise-conditioned model's σ map)
                            output "denoised" float32 [None, None, None, C]
      model.keras         the same weights as a Keras model (fine-tuning, Python API)
      model.onnx          with ``formats`` including "onnx": the same graph for ONNX Runtime
                          (input "image" [and "noise_sigma"], output "denoised", dynamic N, H, W;
                          needs tf2onnx)
      model.fp16.plan     with "tensorrt": a TensorRT engine built from model.onnx for the GPU of
                          this machine (see :mod:`astrotf.backends.tensorrt`)
      metadata.json       channels, data domain, normalisation, tile, recipe, provenance, version
      2/                  a later ``--version``, beside the earlier ones
        assets.extra/astrotf/   (in every version but the newest) that version's model.keras,
                                model.onnx, engines and metadata.json

The top-level files always belong to the newest version, the one TF Serving serves. Exporting
``--version N`` into an existing model folder adds ``N/`` beside the others; an earlier newest
version's top-level files move into its own ``assets.extra/astrotf/``, where TF Serving ignores
them. ``--force`` replaces version N only. Nothing else is ever deleted, and each step is a rename,
so an export killed at any moment leaves every earlier version whole (:mod:`astrotf.model_folder`).

The export is always float32, whatever precision the run trained in.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from astrotf import __version__
from astrotf.constants import INPUT_NAME, LINEAR_NORMALIZATIONS, NOISE_INPUT_NAME, OUTPUT_NAME, SELF2SELF_SAMPLES
from astrotf.errors import AstroTFError
from astrotf.model_folder import VERSION_FILES, versions_in  # noqa: F401  (part of this module's API)
from astrotf.model_folder import INSTALLING, install_version, replace_folder, version_history

log = logging.getLogger(__name__)


#: What ``metadata.json`` says of a noise-conditioned model's second input.
NOISE_INPUT_NOTE = ("per-pixel noise sigma of the image, in its units, same shape: sigma^2 = max(x - offset, 0)/k"
                    " + (read_noise/k)^2 (astrotf.noise_model); astrotf infer takes gain and read noise from "
                    "--gain/--read-noise, the header (GAIN/EGAIN/CCDGAIN, RDNOISE/READNOIS/RON, EXPTIME, BUNIT) "
                    "or a fit of the frame")


def build_metadata(run: dict, name: str, version: int, noise_map: bool | None = None) -> dict:
    """What a user and :mod:`astrotf.infer` need to know about an exported model.

    ``noise_map``: whether the model takes a noise σ map (input ``noise_sigma``); None: as the recipe says.
    """
    recipe = run["recipe"]
    if recipe["model"].get("name") == "self2self":
        return _self2self_metadata(run, name, version)
    if noise_map is None:
        noise_map = bool(recipe["model"].get("noise_map", False))
    metadata = _denoiser_metadata(run, name, version)
    if recipe.get("train", {}).get("method") == "neighbor2neighbor":
        metadata["one_image_method"] = "neighbor2neighbor"
        train = recipe["train"]
        metadata["training"]["method"] = ("Neighbor2Neighbor on one image (Huang et al. 2021): sub-image pairs "
                                          f"{train.get('cell', 2) // 2} px apart in {train.get('cell', 2)} px cells, "
                                          f"flips, regulariser gamma = {train.get('gamma')}")
    metadata["noise_map"] = noise_map
    if noise_map:
        signature = metadata["signature"]
        metadata["signature"] = {"name": signature["name"], "inputs": [INPUT_NAME, NOISE_INPUT_NAME],
                                 **{k: v for k, v in signature.items() if k not in ("name", "input")}}
        metadata["noise_sigma"] = NOISE_INPUT_NOTE
    return metadata


def _denoiser_metadata(run: dict, name: str, version: int) -> dict:
    """Metadata of a ResUNet, NAFNet or Pix2Pix generator (one image input)."""
    recipe = run["recipe"]
    normalization = recipe["model"].get("normalization")
    linear = normalization in LINEAR_NORMALIZATIONS
    return {
        "name": name,
        "version": version,
        "astrotf_version": __version__,
        "exported": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "architecture": recipe["model"],
        "channels": recipe["model"]["channels"],
        "data_domain": "linear" if linear else "stretched",
        "input": _input_note(normalization, run.get("data", {})),
        "normalization": _normalization_note(recipe["model"]),
        "tile": recipe.get("data", {}).get("tile", 256),  # a one-image run has no [data]: infer's default
        "signature": {"name": "serving_default", "input": INPUT_NAME, "output": OUTPUT_NAME,
                      "shape": [None, None, None, recipe["model"]["channels"]], "dtype": "float32"},
        "recipe": recipe,
        "training": {
            "steps": run.get("step"),
            "epochs": run.get("epoch"),
            "best_val_loss": run.get("best_val_loss"),
            "wall_time_s": round(run.get("wall_time_s", 0.0), 1),
            "hardware": run.get("hardware"),
            "data": {k: v for k, v in run.get("data", {}).items() if k not in ("images",)},
            "started": run.get("started"),
            "finished": run.get("updated"),
            "earlier_phases": run.get("phases", []),
            "init": run.get("init"),
            "steps_including_init": _steps_including_init(run.get("step"), run.get("init")),
        },
    }


def _input_note(normalization: str | None, data: dict) -> str:
    """What the model takes, in words, for ``metadata.json``."""
    if normalization == "fixed":
        return (f"linear data in the units of the training image ({data.get('bunit') or 'unknown unit'}); "
                "NaN must be filled by the caller")
    if normalization == "background":
        return "linear data in any physical unit (electrons, ADU, ...); NaN must be filled by the caller"
    return "stretched (display) data scaled to [0, 1]"


def _normalization_note(model: dict) -> dict:
    """The model's data normalisation, for ``metadata.json``."""
    if model.get("normalization") == "fixed":
        return {"kind": "fixed", "inside_model": True, "offset": model["offset"], "scale": model["scale"],
                "formula": "y = a + s * f((x - a) / s), a = offset, s = scale"
                           + (f"; offset = median of the training image, scale = {model['scale_sigmas']} x its "
                              "MAD-sigma" if "scale_sigmas" in model else "")}
    if model.get("normalization") == "background":
        return {"kind": "background", "inside_model": True,
                "formula": "y = a + s * f((x - a) / s), a = tile median, s = 1.4826 * tile MAD"}
    return {"kind": "none", "range": [0.0, 1.0]}


def _steps_including_init(steps: int | None, init: dict | None) -> int | None:
    """Training steps of a model and of the chain of models it was fine-tuned from (``--init``)."""
    total = steps or 0
    while init and init.get("training"):
        training = init["training"]
        total += training.get("steps_including_init") or training.get("steps") or 0
        if training.get("steps_including_init"):
            break  # an exported model already counts its own chain
        init = training.get("init")
    return total or None


def _self2self_metadata(run: dict, name: str, version: int) -> dict:
    """Metadata of a Self2Self run (see :mod:`astrotf.train.self2self`)."""
    recipe = run["recipe"]
    model, train, data = recipe["model"], recipe["train"], run.get("data", {})
    channels = int(data.get("shape", [1])[-1])
    return {
        "name": name,
        "version": version,
        "astrotf_version": __version__,
        "exported": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "one_image_method": "self2self",
        "architecture": {**model, "channels": channels},
        "channels": channels,
        "data_domain": "linear",
        "input": f"linear data in the units of the training image ({data.get('bunit') or 'unknown unit'}); "
                 "keep mask: 1 = pixel given to the network",
        "normalization": {"kind": "fixed", "inside_model": True, "offset": model["offset"], "scale": model["scale"],
                          "formula": "f((x - offset) / scale) * scale + offset; offset = median of the training "
                                     f"image, scale = {model['scale_sigmas']} x its MAD-sigma"},
        "ensemble": {"keep_prob": train["keep_prob"], "mask_block": train.get("mask_block", 1),
                     "samples": SELF2SELF_SAMPLES,
                     "average": "dropped",
                     "note": "each call is one dropout sample on B*y; average many (TDR eq. 4)"},
        "tile": 256,
        "signature": {"name": "serving_default", "inputs": [INPUT_NAME, "mask"], "output": OUTPUT_NAME,
                      "shape": [None, None, None, channels], "dtype": "float32"},
        "recipe": recipe,
        "training": {
            "method": "Self2Self on one image (TDR eq. 3), flips, Bernoulli masks",
            "steps": run.get("step"),
            "wall_time_s": round(run.get("wall_time_s", 0.0), 1),
            "hardware": run.get("hardware"),
            "data": data,
            "init": run.get("init"),
            "started": run.get("started"),
            "finished": run.get("updated"),
        },
    }


def export_saved_model(model, path: str | os.PathLike) -> None:
    """Write a Keras model as a SavedModel with a named ``serving_default`` signature.

    Self2Self models take two inputs, ``image`` and ``mask`` (1 = kept pixel); each
    call of their signature is one dropout sample. Noise-conditioned models take
    ``image`` and ``noise_sigma`` (its per-pixel σ, same shape).
    """
    import keras
    import tensorflow as tf

    archive = keras.export.ExportArchive()
    archive.track(model)
    if getattr(model, "noise_map", False):
        spec = [None, None, None, int(model.inputs[0].shape[-1])]
        archive.add_endpoint(
            name="serving_default",
            fn=lambda image, noise_sigma: {OUTPUT_NAME: model([image, noise_sigma], training=False)},
            input_signature=[tf.TensorSpec(spec, tf.float32, name=INPUT_NAME),
                             tf.TensorSpec(spec, tf.float32, name=NOISE_INPUT_NAME)],
        )
        archive.write_out(str(path), verbose=False)
        return
    if isinstance(model.input, (list, tuple)) and len(model.input) == 2:
        channels = int(model.input[0].shape[-1])
        spec = [None, None, None, channels]
        archive.add_endpoint(
            name="serving_default",
            fn=lambda image, mask: {OUTPUT_NAME: model([image, mask])},
            input_signature=[tf.TensorSpec(spec, tf.float32, name=INPUT_NAME), tf.TensorSpec(spec, tf.float32, name="mask")],
        )
        archive.write_out(str(path), verbose=False)
        return
    channels = int(model.input_shape[-1])
    archive.add_endpoint(
        name="serving_default",
        fn=lambda image: {OUTPUT_NAME: model(image, training=False)},
        input_signature=[tf.TensorSpec([None, None, None, channels], tf.float32, name=INPUT_NAME)],
    )
    archive.write_out(str(path), verbose=False)


ONNX_OPSET = 17
FORMATS = ("savedmodel", "onnx", "tensorrt")


def engine_file_name(fp16: bool) -> str:
    return "model.fp16.plan" if fp16 else "model.fp32.plan"


def add_tensorrt_engine(folder: Path, metadata: dict, profile=None, fp16: bool = True) -> None:
    """Build ``folder/model.{fp16,fp32}.plan`` from ``folder/model.onnx``; record it in ``metadata``."""
    from astrotf.backends.tensorrt import EngineProfile, build_engine

    if not (folder / "model.onnx").is_file():
        raise AstroTFError(f"{folder}: no model.onnx to build a TensorRT engine from (export with --format onnx)")
    if metadata.get("ensemble") is not None:
        raise AstroTFError(f"{folder}: Self2Self models (image + mask inputs) have no TensorRT path yet")
    profile = profile or EngineProfile(channels=int(metadata["channels"]))
    metadata["tensorrt"] = build_engine(folder / "model.onnx", folder / engine_file_name(fp16), profile, fp16=fp16)


def export_onnx(model, path: str | os.PathLike, opset: int = ONNX_OPSET) -> dict:
    """Write a Keras model as ONNX with input ``image`` and output ``denoised`` (dynamic N, H, W).

    A noise-conditioned model gets its second input, ``noise_sigma``, of the image's shape.

    Returns what ``metadata.json`` records of it: file, opset, input and output names.

    Keras converts through tf2onnx; the model is called once first, as Keras requires.

    Raises
    ------
    AstroTFError
        If tf2onnx / onnx are not installed (``pip install "astrotf[onnx]"``).
    """
    import numpy as np

    try:
        import onnx
        import tf2onnx  # noqa: F401
    except ImportError:
        msg = 'ONNX export needs tf2onnx and onnx: pip install "astrotf[onnx]"'
        raise AstroTFError(msg) from None
    import tensorflow as tf

    channels = int(model.inputs[0].shape[-1])
    names = [INPUT_NAME, NOISE_INPUT_NAME] if getattr(model, "noise_map", False) else [INPUT_NAME]
    zeros = [np.zeros((1, 32, 32, channels), np.float32) for _ in names]
    model(zeros if len(names) > 1 else zeros[0])
    specs = [tf.TensorSpec([None, None, None, channels], tf.float32, name=name) for name in names]
    signature = [specs] if len(names) > 1 else specs  # one argument: the list of a two-input model's inputs
    model.export(str(path), format="onnx", input_signature=signature, opset_version=opset, verbose=False)
    graph = onnx.load(str(path))
    (output,) = graph.graph.output
    for node in graph.graph.node:  # tf2onnx names the output after the TF tensor ("Identity:0")
        node.output[:] = [OUTPUT_NAME if name == output.name else name for name in node.output]
    output.name = OUTPUT_NAME
    onnx.checker.check_model(graph)
    onnx.save(graph, str(path))
    inputs = {"inputs": names} if len(names) > 1 else {"input": INPUT_NAME}
    return {"file": Path(path).name, "opset": opset, **inputs, "output": OUTPUT_NAME}


@contextlib.contextmanager
def failed_writes(out: Path):
    """A write that fails (a full disk, a read-only folder, a file in the way) as one line naming ``out``."""
    try:
        yield
    except OSError as err:
        raise AstroTFError(f"{out}: cannot be written ({err.strerror or err})") from None
    except Exception as err:
        tf = sys.modules.get("tensorflow")
        if tf is None or not isinstance(err, tf.errors.OpError):
            raise
        raise AstroTFError(f"{out}: cannot be written ({(err.message or str(err)).splitlines()[0]})") from None


def _staging_folder(out: Path) -> Path:
    """An empty folder beside ``out`` to write an export into before it is moved into place."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    tmp.chmod(0o755)  # mkdtemp's 0700 would hide a shared model from other users
    return tmp


def export_model_folder(source: str | os.PathLike, out: str | os.PathLike, *,
                        formats: tuple[str, ...] = ("tensorrt",), force: bool = False,
                        trt_profile=None, trt_fp16: bool = True) -> Path:
    """Copy an exported model folder (a shipped model, say) to ``out`` and rebuild what ``formats`` name.

    ``"savedmodel"`` and ``"onnx"`` are written anew from the folder's ``model.keras`` by
    this version of astrotf (the weights are the same; graphs of older exports may hold
    operators TensorRT cannot import); ``"tensorrt"`` adds an engine for this machine's
    GPU — engines are built where they run, so users build them from the shipped
    ``model.onnx``. ``metadata.json`` is kept and says what was re-exported. Written into
    a temporary folder and moved into place.
    """
    source, out = Path(source), Path(out)
    if out.resolve() == source.resolve():
        raise AstroTFError(f"{out}: --out must differ from the model folder it is built from")
    if out.exists() and not force:
        raise AstroTFError(f"{out}: already exists; pass --force")
    unknown = sorted(set(formats) - set(FORMATS))
    if unknown:
        raise AstroTFError(f"unknown export format(s) {unknown}; expected some of {list(FORMATS)}")
    metadata = json.loads((source / "metadata.json").read_text())
    if "tensorrt" in formats:
        from astrotf.backends.tensorrt import require_gpu

        require_gpu()
    tmp = _staging_folder(out)
    try:
        shutil.copytree(source, tmp, dirs_exist_ok=True)
        if {"savedmodel", "onnx"} & set(formats):
            from astrotf.models.registry import load_model

            model = load_model(tmp / "model.keras", dtype="float32")
            if "savedmodel" in formats:
                version = tmp / str(metadata.get("version", 1))
                shutil.rmtree(version, ignore_errors=True)
                export_saved_model(model, version)
            if "onnx" in formats:
                if metadata.get("ensemble") is not None:
                    raise AstroTFError(f"{source}: Self2Self models (image + mask inputs) have no ONNX export")
                metadata["onnx"] = export_onnx(model, tmp / "model.onnx")
        if "tensorrt" in formats:
            add_tensorrt_engine(tmp, metadata, trt_profile, trt_fp16)
        metadata.setdefault("re_exports", []).append(
            {"formats": list(formats), "astrotf_version": __version__, "date": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
        (tmp / "metadata.json").write_text(json.dumps(metadata, indent=2, default=str))
        replace_folder(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("%s re-exported to %s (%s)", source, out, ", ".join(formats))
    return out


def export_run(run_dir: str | os.PathLike, out: str | os.PathLike, *, version: int = 1,
               checkpoint: str = "best", credits: dict | None = None, force: bool = False,
               formats: tuple[str, ...] = ("savedmodel",), trt_profile=None, trt_fp16: bool = True,
               strength: float | None = None) -> Path:
    """Export ``run_dir/model_{checkpoint}.keras`` to ``out`` (see the module docstring).

    ``strength`` is recorded as the model's ``default_strength``: the blend with the input that
    ``astrotf infer`` applies unless ``--strength`` is given (a residual calibrated by a benchmark).

    The SavedModel, ``model.keras`` and ``metadata.json`` are always written;
    ``formats`` containing ``"onnx"`` adds ``model.onnx``, ``"tensorrt"`` also a
    TensorRT engine (``trt_profile``: :class:`astrotf.backends.tensorrt.EngineProfile`;
    ``trt_fp16``: FP16 network body). Written into a temporary folder beside ``out``
    and moved into place, so a failed export never leaves half a model behind.
    """
    if "tensorrt" in formats:
        from astrotf.backends.tensorrt import require_gpu

        require_gpu()  # before the slow part
        formats = tuple(dict.fromkeys((*formats, "onnx")))
    unknown = sorted(set(formats) - set(FORMATS))
    if unknown:
        raise AstroTFError(f"unknown export format(s) {unknown}; expected some of {list(FORMATS)}")
    from astrotf.runs import load_run

    run_dir, out = Path(run_dir), Path(out)
    run = load_run(run_dir)
    if run.get("recipe", {}).get("model", {}).get("name") == "self2self" and {"onnx", "tensorrt"} & set(formats):
        raise AstroTFError(f"{run_dir}: Self2Self models (image + mask inputs, test-time dropout) are exported as "
                           f"SavedModel and .keras only; drop --format onnx / tensorrt")
    source = run_dir / f"model_{checkpoint}.keras"
    if not source.is_file():
        raise AstroTFError(f"{source}: missing; has the run finished an epoch?")
    if (out / INSTALLING).exists() and not force:
        raise AstroTFError(f"{out}: an export into it was interrupted; pass --force with its --version to finish it")
    if (out / str(version)).exists() and not force:
        raise AstroTFError(f"{out / str(version)}: already exists; pass --force to replace this version "
                           f"(the others are kept) or another --version")
    if out.exists() and not out.is_dir():
        raise AstroTFError(f"{out}: exists and is not a model folder")

    from astrotf.models.registry import load_model

    model = load_model(source, dtype="float32")
    with failed_writes(out):
        _write_version(model, run, out, version, formats, credits, trt_profile, trt_fp16, strength)
    log.info("exported %s to %s (version %d)", source, out, version)
    return out


def _write_version(model, run: dict, out: Path, version: int, formats, credits, trt_profile, trt_fp16,
                   strength: float | None = None) -> None:
    """Stage the export of ``model`` beside ``out`` and install it as ``version`` (see :func:`export_run`)."""
    tmp = _staging_folder(out)
    try:
        export_saved_model(model, tmp / str(version))
        model.save(tmp / "model.keras")
        metadata = build_metadata(run, out.name, version, noise_map=bool(getattr(model, "noise_map", False)))
        if "onnx" in formats:
            metadata["onnx"] = export_onnx(model, tmp / "model.onnx")
        if "tensorrt" in formats:
            add_tensorrt_engine(tmp, metadata, trt_profile, trt_fp16)
        if credits:
            metadata["credits"] = credits
        if strength is not None:
            metadata["default_strength"] = strength
        metadata["versions"] = version_history(out, version, metadata)
        (tmp / "metadata.json").write_text(json.dumps(metadata, indent=2, default=str))
        install_version(tmp, out, version)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def trt_profile(channels: int, tile: int = 256, max_batch: int = 16):
    """The TensorRT optimisation profile of ``astrotf export``: tiles of 16 px up to twice ``tile``,
    tuned for ``tile``; batches up to ``max_batch``, tuned for 8 (or ``max_batch`` if smaller)."""
    from astrotf.backends.tensorrt import EngineProfile

    return EngineProfile(channels, min_tile=16, opt_tile=tile, max_tile=2 * tile, opt_batch=min(8, max_batch),
                         max_batch=max_batch)


def export_model(source: str | os.PathLike, out: str | os.PathLike, *, formats: tuple[str, ...] = (),
                 version: int = 1, checkpoint: str = "best", credits: dict | None = None, force: bool = False,
                 trt_fp16: bool = True, trt_tile: int = 256, trt_max_batch: int = 16,
                 strength: float | None = None) -> tuple[Path, str]:
    """``astrotf export``: a training run (:func:`export_run`) or an exported model folder
    (:func:`export_model_folder`, which needs ``formats``) to ``out``.

    The SavedModel is always written for a run; ``formats`` adds ``"onnx"`` and ``"tensorrt"``
    (an engine for this GPU, profile :func:`trt_profile` of ``trt_tile`` and ``trt_max_batch``).

    Returns
    -------
    path : Path
        The model folder written.
    summary : str
        One line saying what was exported.

    Raises
    ------
    AstroTFError
        A model folder without ``formats``, and whatever the export itself refuses.
    """
    source = Path(source)
    formats = tuple(dict.fromkeys(formats))
    if not (source / "run.json").is_file() and (source / "metadata.json").is_file():
        if not formats:
            raise AstroTFError(f"{source}: an exported model folder, not a training run; name what to rebuild "
                               "from its model.keras with --format (savedmodel, onnx, tensorrt)")
        channels = int(json.loads((source / "metadata.json").read_text()).get("channels", 3))
        profile = trt_profile(channels, trt_tile, trt_max_batch) if "tensorrt" in formats else None
        with failed_writes(Path(out)):
            path = export_model_folder(source, out, formats=formats, force=force, trt_profile=profile,
                                       trt_fp16=trt_fp16)
        return path, f"{source} -> {path} ({', '.join(formats)} rebuilt)"
    profile = None
    if "tensorrt" in formats:
        from astrotf.train import load_run

        channels = int(load_run(source)["recipe"].get("model", {}).get("channels", 1))
        profile = trt_profile(channels, trt_tile, trt_max_batch)
    formats = tuple(dict.fromkeys(("savedmodel",) + formats))
    path = export_run(source, out, version=version, checkpoint=checkpoint, credits=credits, force=force,
                      formats=formats, trt_profile=profile, trt_fp16=trt_fp16, strength=strength)
    extra = "".join(f" + {name}" for fmt, name in (("onnx", "model.onnx"), ("tensorrt", "TensorRT engine"))
                    if fmt in formats)
    inputs = json.loads((path / "metadata.json").read_text()).get("signature", {}).get("inputs", ["image"])
    return path, f"exported {source} -> {path} (serving_default: {' + '.join(inputs)} -> denoised){extra}"
