"""The command line as a user sees it: nothing on stderr but our own lines."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from astrotf.cli._common import NATIVE_LOG

SAMPLES = Path(__file__).resolve().parents[1] / "astrotf" / "samples"


@pytest.mark.parametrize("line,dropped", [
    (b"I0000 00:00:1796287215.694361   22530 cudart_stub.cc:31] Could not find cuda drivers", True),
    (b"E0000 00:00:1796284632.436139    4360 cuda_platform.cc:52] failed call to cuInit: INTERNAL", True),
    (b"W0000 00:00:1.5 1 port.cc:153] oneDNN custom operations are on.", True),
    (b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR", True),
    (b"F0000 00:00:1.5 1 check.cc:9] Check failed: a crash must stay visible", False),
    (b"Error: m31.fits: not a FITS file", False),
    (b"I0000 is how a user may name a file", False),
])
def test_native_log_lines_are_told_from_everything_else(line, dropped):
    assert bool(NATIVE_LOG.match(line)) == dropped


@pytest.mark.slow
def test_infer_writes_nothing_to_stderr_beyond_our_own_lines(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("TF_CPP")}
    sample, out = SAMPLES / "hubble_deep_field.tif", tmp_path / "hdf.tif"

    def infer(*flags):
        done = subprocess.run([sys.executable, "-m", "astrotf.cli", *flags, "infer", str(sample), "-o", str(out),
                               "-q", "--force"], capture_output=True, text=True, env=env, timeout=300)
        assert done.returncode == 0 and done.stdout == "", done.stderr
        return done.stderr.splitlines()

    (line,) = infer()
    assert line.startswith(f"{sample} -> {out} (resunet-rgb-v2, ") and line.endswith(" s)"), line
    # -vv shows TensorFlow's own log (here at least its CPU/oneDNN notices)
    assert any(NATIVE_LOG.match(text.encode()) for text in infer("-vv"))


def test_models_lists_the_shipped_models_from_their_metadata(tmp_path, monkeypatch):
    import json
    import shutil

    from click.testing import CliRunner

    from astrotf.cli import main

    shipped = Path(__file__).resolve().parents[1] / "astrotf" / "saved_models" / "resunet-mono"
    extra = tmp_path / "my-model"
    extra.mkdir()
    meta = json.loads((shipped / "metadata.json").read_text()) | {"bench": {"psnr_db": 33.1}}
    (extra / "metadata.json").write_text(json.dumps(meta))
    shutil.copy(shipped / "model.keras", extra / "model.keras")
    monkeypatch.setenv("ASTROTF_MODELS", str(tmp_path))
    result = CliRunner().invoke(main, ["models"])
    assert result.exit_code == 0, result.output
    rows = {line.split()[0]: line for line in result.output.splitlines()[1:] if line and not line.startswith("(")}
    assert set(rows) >= {"my-model", "resunet-rgb", "resunet-rgb-v2", "resunet-mono", "self2self-hmi"}
    assert "stretched" in rows["resunet-rgb"] and "default for stretched data" in rows["resunet-rgb-v2"]
    assert "default for" not in rows["resunet-rgb"]
    assert " 1 resunet-16" in rows["my-model"] and "psnr_db 33.1" in rows["my-model"]
    assert "default for" not in rows["my-model"]
