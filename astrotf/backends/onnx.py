"""ONNX Runtime backend: an exported ``model.onnx`` on the best available execution provider.

A noise-conditioned graph has two inputs, ``image`` and ``noise_sigma``; its ``predict`` takes both.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from astrotf.backends import LoadedModel, record_inputs
from astrotf.constants import INPUT_NAME, NOISE_INPUT_NAME
from astrotf.errors import AstroTFError


def load_onnx(path: Path, metadata: dict) -> LoadedModel:
    """An ONNX Runtime session on ``path`` (a .onnx file or a folder holding model.onnx)."""
    onnx_file = path if path.suffix == ".onnx" else path / "model.onnx"
    if not onnx_file.is_file():
        raise AstroTFError(f"{path}: no model.onnx; export it with `astrotf export RUN --format onnx`")
    try:
        import onnxruntime as ort
    except ImportError:
        raise AstroTFError('the onnxruntime backend needs onnxruntime: pip install "astrotf[onnx]"') from None
    try:
        session = ort.InferenceSession(str(onnx_file), providers=ort.get_available_providers())
    except Exception as err:  # onnxruntime raises its own exception types for a bad file
        raise AstroTFError(f"{onnx_file}: cannot be loaded by ONNX Runtime ({str(err).splitlines()[0]})") from None
    inputs = {i.name: i for i in session.get_inputs()}
    image = inputs.get(INPUT_NAME) or next(iter(inputs.values()))
    if "channels" not in metadata and isinstance(image.shape[-1], int):
        metadata["channels"] = image.shape[-1]
    # a lone input is the image whatever its name (older exports); two are image and noise_sigma
    if record_inputs(metadata, list(inputs) if len(inputs) > 1 else [INPUT_NAME], onnx_file):
        def predict(batch, sigma):
            return session.run(None, {INPUT_NAME: np.ascontiguousarray(batch, np.float32),
                                      NOISE_INPUT_NAME: np.ascontiguousarray(sigma, np.float32)})[0]
    else:
        def predict(batch):
            return session.run(None, {image.name: np.ascontiguousarray(batch, np.float32)})[0]

    return LoadedModel(metadata.get("name", onnx_file.parent.name), predict, metadata)

