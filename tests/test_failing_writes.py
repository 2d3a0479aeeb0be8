"""Writes that fail: a full disk, a read-only folder, an output that is a directory, and two
processes sharing an output folder. Each gets one line, no partial output and an untouched input.

The batches run in child processes (RLIMIT_FSIZE and a dropped user apply to a whole process)
with a NumPy model, so no TensorFlow is imported.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import tifffile

from astrotf import batch
from astrotf.backends import LoadedModel

REPO = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, resource, signal, sys
from pathlib import Path
from astrotf import batch
from astrotf.backends import LoadedModel
from astrotf.errors import AstroTFError
spec = json.loads(sys.argv[1])
if spec.get("fsize"):  # a full disk: writes past this size fail with EFBIG (SIGXFSZ would kill)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (spec["fsize"], spec["fsize"]))
batch._load = lambda name, options, domain: LoadedModel(name, lambda b: b * 0.5, {"channels": 3})
lines = []
try:
    result = batch.run([Path(p) for p in spec["inputs"]], batch.InferOptions(model="halve", tile=32),
                       out_dir=Path(spec["out_dir"]), manifest=spec.get("manifest") and Path(spec["manifest"]),
                       skip_existing=spec.get("skip", False), echo=lambda m, err=False: lines.append(m))
    print(json.dumps({"failures": list(result.failures), "lines": lines}))
except AstroTFError as err:
    print(json.dumps({"error": str(err)}))
"""


def child(spec, unprivileged=False):
    """Run a batch in a child process; ``unprivileged``: as root, without the capabilities that let
    root write into a read-only folder (``setpriv``)."""
    command = [sys.executable, "-c", CHILD, json.dumps(spec, default=str)]
    if unprivileged and os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("root writes into read-only folders; setpriv is needed to drop that")
        command = ["setpriv", "--bounding-set=-all", "--inh-caps=-all",
                   "--securebits=+noroot,+noroot_locked,+no_setuid_fixup", *command]
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONDONTWRITEBYTECODE": "1"}
    proc = subprocess.run(command, capture_output=True, text=True, env=env, cwd="/", timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture
def folder():
    """A fresh folder, made writable again before it is removed."""
    path = Path(tempfile.mkdtemp(prefix="astrotf-writes-"))
    path.chmod(0o755)
    yield path
    for sub in path.rglob("*"):
        if sub.is_dir():
            sub.chmod(0o755)
    shutil.rmtree(path)


def frames(folder, n, size=64):
    rng = np.random.default_rng(0)
    paths = []
    (folder / "in").mkdir(mode=0o755)
    for i in range(n):
        paths.append(folder / "in" / f"f{i}.tif")
        tifffile.imwrite(paths[-1], rng.integers(0, 65535, (size, size, 3), np.uint16), photometric="rgb")
        paths[-1].chmod(0o644)
    return paths


def snapshot(paths):
    return {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in paths}


def test_a_full_disk_fails_each_file_in_one_line_without_partial_outputs(folder):
    inputs = frames(folder, 3)
    before = snapshot(inputs)
    got = child({"inputs": inputs, "out_dir": folder / "out", "fsize": 8192})
    assert len(got["failures"]) == 3
    for line, src in zip(got["failures"], inputs):
        assert "\n" not in line  # tifffile reports the short write ("12288 requested and 3984 written")
        assert line.startswith(f"{folder / 'out' / src.name.replace('.tif', '_denoised.tif')}: cannot be written (")
    assert [p.name for p in (folder / "out").iterdir()] == ["astrotf-manifest.jsonl"]  # no temporary file left
    statuses = [json.loads(x)["status"] for x in (folder / "out" / "astrotf-manifest.jsonl").read_text().splitlines()]
    assert statuses == ["error"] * 3
    assert snapshot(inputs) == before


def test_a_read_only_output_folder_is_one_line_and_nothing_is_written(folder):
    inputs = frames(folder, 2)
    before = snapshot(inputs)
    (folder / "out").mkdir(mode=0o555)
    (folder / "out").chmod(0o555)
    got = child({"inputs": inputs, "out_dir": folder / "out"}, unprivileged=True)
    assert got["error"] == f"{folder / 'out' / 'astrotf-manifest.jsonl'}: cannot write the manifest (Permission denied)"
    logs = folder / "logs"
    logs.mkdir(mode=0o777)
    logs.chmod(0o777)
    got = child({"inputs": inputs, "out_dir": folder / "out", "manifest": logs / "m.jsonl"}, unprivileged=True)
    assert len(got["failures"]) == 2 and all("Permission denied" in line for line in got["failures"])
    assert list((folder / "out").iterdir()) == [] and snapshot(inputs) == before


def test_an_output_path_that_is_a_directory_is_named(tmp_path, monkeypatch):
    (src,) = frames(tmp_path, 1)
    (tmp_path / "out" / "f0_denoised.tif").mkdir(parents=True)
    monkeypatch.setattr(batch, "_load", lambda name, options, domain: LoadedModel(name, lambda b: b, {"channels": 3}))
    for skip in (False, True):
        result = batch.run([src], batch.InferOptions(model="any", tile=32), out_dir=tmp_path / "out",
                           skip_existing=skip)
        assert result.failures == (f"{tmp_path / 'out' / 'f0_denoised.tif'}: output is a directory",)
    from astrotf.io import ImageIOError, read_image, write_image

    with pytest.raises(ImageIOError, match="is a directory"):
        write_image(tmp_path / "out" / "f0_denoised.tif", *read_image(src), overwrite=True)


def test_two_processes_sharing_an_out_dir_never_corrupt_outputs_or_manifest_lines(folder):
    inputs = frames(folder, 10, size=128)
    specs = [{"inputs": inputs[:7], "out_dir": folder / "out", "skip": True},
             {"inputs": inputs[3:][::-1], "out_dir": folder / "out", "skip": True}]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [subprocess.Popen([sys.executable, "-c", CHILD, json.dumps(s, default=str)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for s in specs]
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0 and json.loads(out.splitlines()[-1])["failures"] == [], err
    for src in inputs:
        got = tifffile.imread(folder / "out" / src.name.replace(".tif", "_denoised.tif"))
        want = np.round(tifffile.imread(src) / 65535 * 0.5 * 65535)
        assert np.abs(got.astype(float) - want).max() <= 1
    records = [json.loads(x) for x in (folder / "out" / "astrotf-manifest.jsonl").read_text().splitlines()]
    assert len(records) == 14 and {r["status"] for r in records} <= {"ok", "skipped"}
    assert sorted({r["input"] for r in records if r["status"] == "ok"}) == sorted(map(str, inputs))
    assert not [p for p in (folder / "out").iterdir() if p.name.startswith(".")]
