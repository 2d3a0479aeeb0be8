"""kill -9 at named moments (tests/kill_child.py): training resumes, a batch completes, exports stay whole.

Each test kills a real ``astrotf`` process with SIGKILL just before a named function runs, then
continues in-process the way a user would (``--resume``, ``--skip-existing``, ``--force``).
``tools/kill_test.py`` repeats the same scenarios with random kill times.
"""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
from click.testing import CliRunner

from astrotf import checkpoints
from astrotf.cli import main
from tests.test_train_cli import TINY, tiny_recipe

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def killed(spec, *args):
    """Run ``astrotf ARGS`` and check it was SIGKILLed at ``spec`` (see tests/kill_child.py)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
           "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.run([sys.executable, "-m", "tests.kill_child", spec, *map(str, args)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == -signal.SIGKILL, proc.stdout + proc.stderr


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def test_training_killed_in_the_cache_and_between_a_checkpoint_and_its_state_file_resumes_to_the_end(rgb_folder, tmp_path):
    out = tmp_path / "run"
    start = ["train", "resunet", "--data", rgb_folder, "--out", out, "--config", tiny_recipe(tmp_path),
             "--epochs", "2", *TINY]
    killed("astrotf.data.pipeline:_write_cache@2", *start)  # one image of four cached, no checkpoint
    assert json.loads((out / "run.json").read_text())["status"] == "starting"
    assert all(f.with_suffix(".shape").is_file() for f in (out / "cache").glob("*.f32"))
    assert checkpoints.complete_checkpoints(out / "checkpoints") == []
    # resumed from no checkpoint, then killed after step 2's checkpoint files, before the state file
    killed("astrotf.checkpoints:write_state@2", "train", "resunet", "--out", out, "--resume", "-q")
    assert [p.name for p in checkpoints.complete_checkpoints(out / "checkpoints")] == ["ckpt-2", "ckpt-1"]
    assert (out / "checkpoints" / "checkpoint").read_text().startswith('model_checkpoint_path: "ckpt-1"')

    resumed = run("train", "resunet", "--out", out, "--resume", "-q")
    assert resumed.exit_code == 0, resumed.output
    state = json.loads((out / "run.json").read_text())
    assert state["status"] == "finished" and state["step"] == 4 and state["epoch"] == 2
    rows = (out / "history.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows] == ["epoch", "1", "2"]
    assert not [p for p in (out / "cache").iterdir() if p.name.startswith(".")]
    assert not [p for p in (out / "checkpoints").iterdir() if p.name.startswith(".")]


def test_self2self_killed_between_checkpoint_and_state_file_resumes(tmp_path):
    from astropy.io import fits

    fits.writeto(tmp_path / "a.fits", np.random.default_rng(0).normal(100, 5, (48, 48)).astype(np.float32))
    recipe = tmp_path / "tiny.toml"
    recipe.write_text("[model]\ndepth = 2\nbase_filters = 4\n[train]\ncheckpoint_every = 1\nlog_every = 1\n")
    out = tmp_path / "run"
    killed("astrotf.checkpoints:write_state@2", "train", "self2self", tmp_path / "a.fits", "--out", out,
           "--config", recipe, "--steps", "3", "--patch", "16", "--batch-size", "2", "-q")
    resumed = run("train", "self2self", "--out", out, "--resume", "-q")
    assert resumed.exit_code == 0, resumed.output
    state = json.loads((out / "run.json").read_text())
    assert state["status"] == "finished" and state["step"] == 3
    assert [r.split(",")[0] for r in (out / "history.csv").read_text().splitlines()] == ["step", "1", "2", "3"]


def test_batch_killed_between_files_completes_with_skip_existing(tmp_path):
    import keras

    from astrotf.models.resunet import ResUNet

    keras.utils.set_random_seed(0)
    model = tmp_path / "m.keras"
    ResUNet(channels=3, depth=2, base_filters=4, head_initializer="glorot_uniform").save(model)
    rng = np.random.default_rng(0)
    inputs = []
    for i in range(3):
        inputs.append(tmp_path / "in" / f"f{i}.tif")
        inputs[-1].parent.mkdir(exist_ok=True)
        tifffile.imwrite(inputs[-1], rng.integers(0, 255, (32, 32, 3), np.uint8), photometric="rgb")
    args = ["infer", *inputs, "--model", model, "--tile", "32", "-q"]
    killed("astrotf.batch:denoise_file@2", *args, "--out-dir", tmp_path / "out")
    assert [p.name for p in (tmp_path / "out").glob("*.tif")] == ["f0_denoised.tif"]
    again = run(*args, "--out-dir", tmp_path / "out", "--skip-existing")
    assert again.exit_code == 0, again.output
    assert run(*args, "--out-dir", tmp_path / "reference").exit_code == 0
    for src in inputs:
        name = src.name.replace(".tif", "_denoised.tif")
        np.testing.assert_array_equal(tifffile.imread(tmp_path / "out" / name),
                                      tifffile.imread(tmp_path / "reference" / name))
    lines = (tmp_path / "out" / "astrotf-manifest.jsonl").read_text().splitlines()
    assert [json.loads(line)["status"] for line in lines] == ["ok", "skipped", "ok", "ok"]


def test_export_killed_before_switching_the_top_level_keeps_version_1_and_force_finishes(tmp_path):
    from astrotf.export import VERSION_FILES, export_run
    from tests.test_export import two_runs

    first, second, _ = two_runs(tmp_path)
    out = tmp_path / "models" / "m"
    export_run(first, out)
    v1 = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    killed("astrotf.model_folder:_switch_top_level@1", "export", second, "--out", out, "--version", "2")
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == v1  # version 1 still served whole
    kept = out / "1" / VERSION_FILES
    assert {p.name: p.read_bytes() for p in kept.iterdir()} == v1
    again = run("export", second, "--out", out, "--version", "2", "--force")
    assert again.exit_code == 0, again.output
    assert json.loads((out / "metadata.json").read_text())["version"] == 2
    assert {p.name: p.read_bytes() for p in kept.iterdir()} == v1
    assert not [p for p in out.iterdir() if p.name.startswith(".")]
