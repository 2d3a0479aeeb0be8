"""Model lookup and loading for inference: one :class:`LoadedModel` whatever runs the network.

A model is a shipped model's name (looked up in :func:`shipped_model_dirs`), an exported
model folder (TF Serving layout ``NAME/1/`` with ``model.keras`` and ``metadata.json``), a
SavedModel folder, a ``.keras`` file, a training run, an ``.onnx`` file or a TensorRT
``.plan``; the ``metadata.json`` beside it says what data the model expects.
:func:`load_model` hands it to one backend:

* :mod:`astrotf.backends.keras`: TensorFlow, float32 or bfloat16 (``.keras``, SavedModel);
* :mod:`astrotf.backends.onnx`: ONNX Runtime (``model.onnx``);
* :mod:`astrotf.backends.tensorrt`: a TensorRT engine built for this GPU;
* :mod:`astrotf.backends.serving`: a model behind TF Serving (:func:`astrotf.backends.serving.connect`).

Each returns a :class:`LoadedModel` whose ``predict`` maps (N, T, T, C) float32 tiles to
the same shape, for :func:`astrotf.infer.denoise_image`. A noise-conditioned model (inputs
``image`` and ``noise_sigma``, see :mod:`astrotf.noise_model`) is recognised by its graph's
inputs in every backend (``metadata["noise_map"]`` then says so); its ``predict`` takes
``(tiles, sigma_tiles)``. Importing this package never imports TensorFlow.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from astrotf.constants import INPUT_NAME, LINEAR_NORMALIZATIONS, NOISE_INPUT_NAME
from astrotf.errors import AstroTFError
from astrotf.infer import TileOptions
from astrotf.models.registry import TILE_DEPENDENT

#: The shipped model for each data domain (see :func:`astrotf.infer.guess_domain`).
DEFAULT_MODELS = {"stretched": "resunet-rgb-v2", "linear": "resunet-linear", "magnetogram": "self2self-hmi"}
BACKENDS = ("tensorflow", "onnxruntime", "tensorrt")
PRECISIONS = ("auto", "float32", "bfloat16")


def shipped_model_dirs() -> list[Path]:
    """Where shipped models are looked up, first match wins: ``$ASTROTF_MODELS``, then the
    package's own ``astrotf/saved_models/`` (package data, so an installed copy finds them too)."""
    dirs = [Path(os.environ["ASTROTF_MODELS"])] if os.environ.get("ASTROTF_MODELS") else []
    dirs.append(Path(__file__).resolve().parent.parent / "saved_models")
    return [d for d in dirs if d.is_dir()]


@dataclasses.dataclass(frozen=True)
class ModelCard:
    """What ``astrotf models`` says of a shipped model, read from its ``metadata.json``."""

    name: str
    path: Path
    domain: str
    channels: int
    architecture: str
    size_mb: float
    steps: int | None
    exported: str
    default_for: str | None
    bench: dict
    #: The model takes a noise σ map beside the image (``metadata["noise_map"]``).
    noise_conditioned: bool = False

    def summary(self) -> str:
        """The figures of ``metadata["bench"]`` in a few words (``tools/record_bench.py`` writes them), or ``-``."""
        b = self.bench
        if "rgb_psnr_db" in b:
            peer = f" vs {b['best_peer']} {b['best_peer_psnr_db']}" if "best_peer" in b else ""
            ident = f", identity {b['identity_mean_db']} dB" if "identity_mean_db" in b else ""
            return f"RGB {b['rgb_psnr_db']} dB{peer}{ident} ({b.get('date', '')})"
        return ", ".join(f"{k} {v}" for k, v in b.items() if k not in ("date", "machine", "command")) or "-"


def shipped_models() -> list[ModelCard]:
    """Every model folder with a ``metadata.json`` in :func:`shipped_model_dirs` (first name wins)."""
    cards: dict[str, ModelCard] = {}
    defaults = {name: domain for domain, name in DEFAULT_MODELS.items()}
    for folder in shipped_model_dirs():
        for path in sorted(p for p in folder.iterdir() if (p / "metadata.json").is_file()):
            if path.name in cards:
                continue
            meta = json.loads((path / "metadata.json").read_text())
            arch = meta.get("architecture", {})
            width = arch.get("base_filters", arch.get("width", arch.get("filters")))
            training = meta.get("training", {})
            size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 1e6
            cards[path.name] = ModelCard(
                name=path.name, path=path, domain=meta.get("data_domain", "?"), channels=int(meta.get("channels", 0)),
                architecture=f"{arch.get('name', '?')}" + (f"-{width}" if width else ""), size_mb=round(size, 1),
                steps=training.get("steps_including_init", training.get("steps")),
                exported=str(meta.get("exported", ""))[:10], default_for=defaults.get(path.name),
                bench=meta.get("bench", {}), noise_conditioned=bool(meta.get("noise_map", arch.get("noise_map"))))
    return list(cards.values())


@dataclasses.dataclass
class LoadedModel:
    """A model ready for tiles: ``predict`` maps (N, T, T, C) float32 to the same shape.

    A noise-conditioned model (:attr:`noise_conditioned`) is called as ``predict(tiles, sigma_tiles)``,
    the second the per-pixel noise σ of the first, same shape.
    """

    name: str
    predict: Callable[[np.ndarray], np.ndarray]
    metadata: dict
    #: Self2Self models: one stochastic pass ``sample(batch, keep_mask)``; see :func:`with_ensemble`.
    sample: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None
    #: Self2Self models loaded from .keras: ``reseed(seed)`` restarts the dropout draws.
    reseed: Callable[[int], None] | None = None
    #: Arithmetic of the network's convolutions: ``float32`` or ``bfloat16`` (see :func:`load_model`).
    precision: str = "float32"
    #: Largest tile side the model takes (a TensorRT engine's profile); None: any.
    largest_tile: int | None = None
    #: ``predict`` takes NaN pixels and keeps them out of the network itself (Self2Self ensembles).
    masks_nonfinite: bool = False

    @property
    def channels(self) -> int:
        return int(self.metadata.get("channels", 3))

    @property
    def domain(self) -> str:
        return self.metadata.get("data_domain", "stretched")

    @property
    def tile(self) -> int:
        return int(self.metadata.get("tile", 256))

    @property
    def default_strength(self) -> float:
        """The blend with the input the model is measured and meant to be used at (``metadata.json``
        ``"default_strength"``, e.g. a calibrated residual that keeps false sources rare; 1: none),
        what ``--strength`` defaults to."""
        return float(self.metadata.get("default_strength", 1.0))

    @property
    def architecture(self) -> str | None:
        """The registry name of the network (``resunet``, ``nafnet``, ``pix2pix`` ...), if recorded."""
        arch = self.metadata.get("architecture")
        return arch.get("name") if isinstance(arch, dict) else None

    @property
    def noise_conditioned(self) -> bool:
        """Whether the network takes a noise σ map beside the image (input ``noise_sigma``)."""
        return bool(self.metadata.get("noise_map", False))

    @property
    def one_image_method(self) -> str | None:
        """How a one-image (TDR) model learnt without clean data (``"self2self"``,
        ``"neighbor2neighbor"``), None for a model trained on a data folder."""
        return self.metadata.get("one_image_method")

    @property
    def normalises_tiles(self) -> bool:
        """Whether the network scales each tile by its median and MAD (``normalization = "background"``)."""
        normalization = self.metadata.get("normalization")
        return isinstance(normalization, dict) and normalization.get("kind") == "background"

    def tile_options(self, shape: tuple[int, ...], overlap: float = 0.25, tile: int | None = None,
                     batch_size: int | None = None) -> TileOptions:
        """Tiling of a frame of ``shape`` for this model, as ``astrotf infer`` does it.

        Without ``tile``, :meth:`TileOptions.for_frame` picks the size (from the model's
        training tile or 256 px, up to :attr:`largest_tile`), except for architectures whose
        output depends on the whole tile (:data:`astrotf.models.registry.TILE_DEPENDENT`: global
        attention or pooling), which get their training tile; with ``tile``, tiles of that size
        in batches of ``batch_size`` (default 8).

        Raises
        ------
        AstroTFError
            If ``tile`` is larger than the model takes (a TensorRT engine's profile).
        """
        if tile is None and self.architecture in TILE_DEPENDENT and "tile" in self.metadata:
            tile = min(self.tile, self.largest_tile or self.tile)
            return TileOptions(tile=tile, overlap=overlap, batch_size=batch_size or max(1, 8 * 256**2 // tile**2))
        if tile is None:
            return TileOptions.for_frame(shape, overlap, preferred=max(256, self.tile), batch_size=batch_size,
                                         largest=self.largest_tile)
        if self.largest_tile is not None and tile > self.largest_tile:
            raise AstroTFError(f"{self.name}: tile {tile} px is larger than the model takes "
                               f"({self.largest_tile} px, the TensorRT engine's profile)")
        return TileOptions(tile=tile, overlap=overlap, batch_size=batch_size or 8)


def resolve_model_path(name_or_path: str | os.PathLike) -> Path:
    """A shipped model's name (``resunet-rgb``), a ``.keras`` file or a SavedModel folder."""
    path = Path(name_or_path)
    if path.exists():
        return path
    for folder in shipped_model_dirs():
        if (folder / str(name_or_path)).exists():
            return folder / str(name_or_path)
    names = sorted({p.name for d in shipped_model_dirs() for p in d.iterdir() if p.is_dir()})
    raise AstroTFError(f"{name_or_path}: no such model file or folder; shipped models: {', '.join(names) or 'none'}")


def file_in_folder(folder: Path, name: str, what: str) -> Path:
    """``folder / name`` for a file that a model folder's ``metadata.json`` names.

    Raises
    ------
    AstroTFError
        If ``name`` is not a plain relative name inside ``folder`` (``..``, an absolute path, a
        symbolic link leading out): a model folder cannot make astrotf open files elsewhere.
    """
    candidate = folder / str(name)
    inside = folder.resolve()
    if Path(str(name)).is_absolute() or inside not in candidate.resolve().parents:
        raise AstroTFError(f"{folder / 'metadata.json'}: {what} {name!r} points outside the model folder")
    return candidate


def record_inputs(metadata: dict, names, where: Path | str) -> bool:
    """Set ``metadata["noise_map"]`` from the names of a loaded graph's inputs; returns it.

    ``names``: the graph's input names (``image``, or ``image`` and ``noise_sigma``). The graph
    decides; a ``metadata.json`` that says otherwise is refused rather than believed.

    Raises
    ------
    AstroTFError
        Inputs other than those two, or a ``noise_map`` in the metadata that the graph contradicts.
    """
    names = sorted(str(n).split(":")[0] for n in names)
    if names not in ([INPUT_NAME], sorted([INPUT_NAME, NOISE_INPUT_NAME])):
        raise AstroTFError(f"{where}: expected the input {INPUT_NAME!r} (and {NOISE_INPUT_NAME!r} for a "
                           f"noise-conditioned model). Received: inputs={names}")
    conditioned = NOISE_INPUT_NAME in names
    if "noise_map" in metadata and bool(metadata["noise_map"]) != conditioned:
        raise AstroTFError(f"{where}: metadata.json says noise_map={metadata['noise_map']} but the model's "
                           f"inputs are {names}")
    metadata["noise_map"] = conditioned
    return conditioned


def find_metadata(path: Path) -> dict:
    for candidate in (path / "metadata.json", path.parent / "metadata.json",
                      path.with_suffix(".json"), path.parent.parent / "metadata.json"):
        if candidate.is_file():
            return json.loads(candidate.read_text())
    return {}


def resolve_inference_precision(precision: str, metadata: dict, backend: str = "tensorflow") -> str:
    """The arithmetic ``precision`` stands for with this model, backend and machine.

    ``auto`` is ``bfloat16`` only for models of stretched data run by TensorFlow on
    hardware that computes bfloat16 natively (a GPU, or a CPU with AVX512-BF16 / AMX;
    see :func:`astrotf.config.resolve_precision`): the convolutions then run about
    1.8x faster while the input, the global residual sum and the output stay float32,
    so the change to the data is the correction's bfloat16 rounding (measured: about
    60 dB below the signal on [0, 1] data). Models of linear data (fluxes,
    magnetograms) keep float32 unless ``bfloat16`` is asked for.

    Raises
    ------
    AstroTFError
        Unknown precision, or bfloat16 asked of a backend that does not run it.
    """
    if precision not in PRECISIONS:
        raise AstroTFError(f"unknown precision {precision!r}; expected one of {list(PRECISIONS)}")
    if precision == "auto":
        if backend != "tensorflow" or metadata.get("data_domain") != "stretched":
            return "float32"  # unknown data stay in float32 too
        from astrotf.config import resolve_precision

        import tensorflow as tf

        native = resolve_precision("auto", bool(tf.config.list_physical_devices("GPU"))) == "mixed_bfloat16"
        return "bfloat16" if native else "float32"
    if precision == "bfloat16" and backend != "tensorflow":
        raise AstroTFError(f"--precision bfloat16 runs on the tensorflow backend only, not {backend}")
    return precision


def _keras_domain(path: Path) -> str | None:
    """The data domain of a ``.keras`` file (or a run's best model) from its config, without loading it."""
    import zipfile

    if path.is_dir():
        path = path / "model_best.keras"
    if path.suffix != ".keras" or not path.is_file():
        return None
    try:
        with zipfile.ZipFile(path) as archive:
            config = json.loads(archive.read("config.json"))
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        return None
    if config.get("class_name") == "Self2Self":
        return "linear"
    if config.get("class_name") in ("ResUNet", "NAFNet", "Pix2PixGenerator"):
        return "linear" if config.get("config", {}).get("normalization") in LINEAR_NORMALIZATIONS else "stretched"
    return None


def load_model(name_or_path: str | os.PathLike, backend: str = "tensorflow",
               precision: str = "float32") -> LoadedModel:
    """Load a model for inference, in float32 (or bfloat16) whatever precision it was trained in.

    Parameters
    ----------
    name_or_path : str or path
        A shipped model's name, an exported model folder, a SavedModel folder, a
        ``.keras`` file or (ONNX Runtime) a ``.onnx`` file.
    backend : {"tensorflow", "onnxruntime", "tensorrt"}
        ``onnxruntime`` runs the folder's ``model.onnx`` (see :func:`astrotf.export.export_onnx`)
        on the best available execution provider (CUDA, TensorRT, else CPU); ``tensorrt``
        the engine that ``astrotf export --format tensorrt`` built for this GPU (a folder
        whose metadata.json names it, or a ``.plan`` file).
    precision : {"float32", "bfloat16", "auto"}
        Arithmetic of the convolutions (see :func:`resolve_inference_precision`);
        bfloat16 builds the network from the model's ``.keras`` file under Keras'
        ``mixed_bfloat16`` policy, so the input, residual sum and output stay float32.

    Raises
    ------
    AstroTFError
        Unknown name or backend, or a file/folder that is not a model.
    """
    if backend not in BACKENDS:
        raise AstroTFError(f"unknown backend {backend!r}; expected one of {list(BACKENDS)}")
    path = resolve_model_path(name_or_path)
    if (path / ".installing").is_file():  # astrotf.export.INSTALLING
        raise AstroTFError(f"{path}: an export into this folder was interrupted; run it again with --force")
    metadata = find_metadata(path)
    if "data_domain" not in metadata and precision == "auto":
        domain = _keras_domain(path)
        if domain:
            metadata["data_domain"] = domain
    requested, precision = precision, resolve_inference_precision(precision, metadata, backend)
    if requested == "auto" and path.is_dir() and not (path / "model.keras").is_file() \
            and not (path / "run.json").is_file():
        precision = "float32"  # a bare SavedModel: its graph is fixed in float32
    if backend == "onnxruntime":
        from astrotf.backends.onnx import load_onnx

        return load_onnx(path, metadata)
    if backend == "tensorrt":
        from astrotf.backends.tensorrt import load_tensorrt

        return load_tensorrt(path, metadata)
    from astrotf.backends.keras import load_tensorflow

    return load_tensorflow(path, metadata, precision)
