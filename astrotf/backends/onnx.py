"""ONNX Runtime backend: an exported ``model.onnx`` on the best available execution provider."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from astrotf.backends import LoadedModel
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
    (inp,) = session.get_inputs()
    if "channels" not in metadata and isinstance(inp.shape[-1], int):
        metadata["channels"] = inp.shape[-1]

    def predict(batch):
        return session.run(None, {inp.name: np.ascontiguousarray(batch, np.float32)})[0]

    return LoadedModel(metadata.get("name", onnx_file.parent.name), predict, metadata)

