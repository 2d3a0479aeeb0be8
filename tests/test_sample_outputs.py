"""The bundled samples denoise to the recorded outputs: a restructuring of the package must not change a pixel.

``tests/data/sample_outputs.json`` holds, per sample, the SHA-256 of the float32 pixels that
``astrotf infer SAMPLE --precision float32`` wrote (read back), with a few statistics. On a CPU of
the recorded instruction-set class the pixels must be bit-identical; elsewhere (oneDNN picks other
kernels, whose sums round differently) the statistics must agree to 1e-5 of the data range.

When a shipped model is retrained on purpose, record the new outputs with
``python tests/test_sample_outputs.py`` and commit the JSON with the model.
"""

import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from astrotf import io
from astrotf.cli import main

RECORD = Path(__file__).parent / "data" / "sample_outputs.json"
SAMPLES = Path(__file__).resolve().parents[1] / "astrotf" / "samples"


def isa_class() -> str:
    """The widest of AVX512-BF16 / AVX-512 / AVX2 this CPU has (what oneDNN's kernels depend on)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "unknown"
    flags = set(text.split("flags", 1)[1].split("\n", 1)[0].split()) if "flags" in text else set()
    return next((name for name in ("avx512_bf16", "avx512f", "avx2") if name in flags), "other")


def denoised(sample: str, tmp_path: Path) -> np.ndarray:
    out = tmp_path / f"out-{sample}"
    result = CliRunner().invoke(main, ["infer", str(SAMPLES / sample), "-o", str(out), "--precision", "float32",
                                       "-q"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return io.read_image(out)[0]


def summary(data: np.ndarray) -> dict:
    finite = data[np.isfinite(data)].astype(np.float64)
    return {"sha256": hashlib.sha256(np.ascontiguousarray(data).tobytes()).hexdigest(), "shape": list(data.shape),
            "quantiles": [float(q) for q in np.quantile(finite, [0.01, 0.1, 0.5, 0.9, 0.99])],
            "mean": float(finite.mean()), "std": float(finite.std())}


@pytest.mark.slow
@pytest.mark.parametrize("sample", ["hubble_deep_field.tif", "starfield.fits"])
def test_bundled_sample_denoises_to_the_recorded_output(sample, tmp_path):
    record = json.loads(RECORD.read_text())
    want = record["samples"][sample]
    got = summary(denoised(sample, tmp_path))
    assert got["shape"] == want["shape"]
    if isa_class() == record["isa"]:
        assert got["sha256"] == want["sha256"], "the output changed (see the module docstring)"
    else:
        span = want["quantiles"][-1] - want["quantiles"][0]
        np.testing.assert_allclose(got["quantiles"], want["quantiles"], atol=1e-5 * span)
        np.testing.assert_allclose([got["mean"], got["std"]], [want["mean"], want["std"]], atol=1e-5 * span)


def record(tmp_path: Path) -> None:
    """Write ``sample_outputs.json`` from this machine's outputs."""
    samples = {s: summary(denoised(s, tmp_path)) for s in ("hubble_deep_field.tif", "starfield.fits")}
    RECORD.write_text(json.dumps({"isa": isa_class(), "precision": "float32", "samples": samples}, indent=1) + "\n")


if __name__ == "__main__":  # pragma: no cover
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        record(Path(folder))
    sys.exit(0)
