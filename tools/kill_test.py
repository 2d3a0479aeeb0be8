"""Kill astrotf with SIGKILL at random moments and check that nothing is lost.

    python tools/kill_test.py --runs 10 [--scenarios train batch export] [--seed 0] [--keep DIR]

Each run starts a real ``astrotf`` process on tiny data, sends it SIGKILL after a random delay
(uniform between 0 and the time an uninterrupted run took, measured first), then continues the way
a user would and checks the result:

train   ``astrotf train resunet`` (2 epochs of 2 steps, a checkpoint every step); ``--resume`` must
        finish the run: status finished, step 4, one history row per epoch.
batch   ``astrotf infer --out-dir`` on 12 frames; a rerun with ``--skip-existing`` must succeed, every
        output equal to an uninterrupted run's, every manifest line valid JSON, no temporary file left.
export  ``astrotf export --version 2`` into a folder holding version 1; version 1 must stay whole
        (its SavedModel, and its files at the top level or in ``1/assets.extra/astrotf/``), and
        ``--force`` must then finish version 2.

Prints the pass count of each scenario; exits 1 if any run failed. The deterministic kill points
are the tests of ``tests/test_kill.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
RECIPE = ("[model]\nchannels = 3\ndepth = 2\nbase_filters = 4\n[data]\nchannels = 3\ncrops_per_image = 2\n"
          "shuffle_buffer = 4\n[train]\ncheckpoint_every = 1\nwarmup_steps = 0\n")
FRAMES = 12
TINY = ["--tile", "32", "--batch-size", "2", "--steps-per-epoch", "2", "--precision", "float32", "-q"]


def astrotf(*args, kill_after: float | None = None) -> tuple[int, str]:
    """Run ``astrotf ARGS``; with ``kill_after``, SIGKILL it after that many seconds if still running."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
           "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.Popen([sys.executable, "-m", "astrotf.cli", *map(str, args)], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        output, _ = proc.communicate(timeout=kill_after if kill_after is not None else 1800)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGKILL)
        output, _ = proc.communicate()
    return proc.returncode, output


def python(code: str, *args) -> None:
    """Run Python ``code`` with ``args`` in a child process (TensorFlow's start-up lines kept quiet)."""
    proc = subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "3"})
    if proc.returncode != 0:
        raise SystemExit(proc.stderr)


def timed(*args) -> float:
    start = time.perf_counter()
    code, output = astrotf(*args)
    if code != 0:
        raise SystemExit(f"an uninterrupted run failed:\n{output}")
    return time.perf_counter() - start


# ----------------------------------------------------------------------------- scenarios
class Train:
    def __init__(self, work: Path):
        import cv2

        self.data, self.recipe = work / "data" / "clean", work / "tiny.toml"
        self.data.mkdir(parents=True)
        rng = np.random.default_rng(0)
        for i in range(4):
            cv2.imwrite(str(self.data / f"sky{i}.png"), rng.integers(0, 255, (48, 48, 3), np.uint8))
        self.recipe.write_text(RECIPE)
        self.work = work
        self.duration = timed(*self.command(work / "calibration"))

    def command(self, out: Path) -> list:
        return ["train", "resunet", "--data", self.data.parent, "--out", out, "--config", self.recipe,
                "--epochs", "2", *TINY]

    def run(self, n: int, delay: float) -> tuple[bool, str]:
        out = self.work / f"run{n}"
        astrotf(*self.command(out), kill_after=delay)
        code, output = astrotf(*self.command(out), "--resume")
        if code != 0:
            return False, output.strip().splitlines()[-1] if output.strip() else f"exit {code}"
        state = json.loads((out / "run.json").read_text())
        rows = (out / "history.csv").read_text().splitlines()
        ok = state["status"] == "finished" and state["step"] == 4 and [r.split(",")[0] for r in rows] == [
            "epoch", "1", "2"]
        return ok, f"status {state['status']}, step {state['step']}, history {len(rows) - 1} row(s)"


class Batch:
    def __init__(self, work: Path):
        import tifffile

        self.work, self.model = work, work / "m.keras"
        self._save_model()
        rng = np.random.default_rng(0)
        self.inputs = []
        for i in range(FRAMES):  # big enough that most kills land while files are being denoised
            self.inputs.append(work / "in" / f"f{i}.tif")
            self.inputs[-1].parent.mkdir(exist_ok=True)
            tifffile.imwrite(self.inputs[-1], rng.integers(0, 65535, (256, 256, 3), np.uint16), photometric="rgb")
        self.duration = timed(*self.command(work / "reference"))

    def _save_model(self):
        code = ("import keras, sys; from astrotf.models.resunet import ResUNet; keras.utils.set_random_seed(0); "
                "ResUNet(channels=3, depth=2, base_filters=4, head_initializer='glorot_uniform').save(sys.argv[1])")
        python(code, self.model)

    def command(self, out: Path) -> list:
        return ["infer", *self.inputs, "--out-dir", out, "--model", self.model, "--tile", "32", "-q"]

    def run(self, n: int, delay: float) -> tuple[bool, str]:
        out = self.work / f"run{n}"
        astrotf(*self.command(out), kill_after=delay)
        code, output = astrotf(*self.command(out), "--skip-existing")
        if code != 0:
            return False, output.strip().splitlines()[-1]
        import tifffile

        same = all(np.array_equal(tifffile.imread(out / p.name), tifffile.imread(p))
                   for p in (self.work / "reference").glob("*.tif"))
        try:
            lines = [json.loads(x) for x in (out / "astrotf-manifest.jsonl").read_text().splitlines()]
        except ValueError:
            return False, "a manifest line is not JSON"
        hidden = [p.name for p in out.iterdir() if p.name.startswith(".")]
        ok = same and len(list(out.glob("*.tif"))) == FRAMES and not hidden
        skipped = sum(r["status"] == "skipped" for r in lines)
        return ok, f"outputs {'identical' if same else 'DIFFER'}, {skipped} skipped on rerun, temporary files {hidden}"


class Export:
    def __init__(self, work: Path):
        self.work = work
        self.runs = [self._fake_run(work / f"train{i}", filters) for i, filters in ((1, 4), (2, 6))]
        self.v1 = work / "v1"
        code, output = astrotf("export", self.runs[0], "--out", self.v1)
        if code != 0:
            raise SystemExit(output)
        self.v1_files = self._files(self.v1, top_level=True)
        self.v1_saved = self._files(self.v1 / "1")
        shutil.copytree(self.v1, work / "calibration")
        self.duration = timed("export", self.runs[1], "--out", work / "calibration", "--version", "2")

    @staticmethod
    def _fake_run(run: Path, filters: int) -> Path:
        code = ("import json, sys; from pathlib import Path; from astrotf.models.resunet import ResUNet; "
                "run = Path(sys.argv[1]); run.mkdir(parents=True); f = int(sys.argv[2]); "
                "ResUNet(channels=3, depth=2, base_filters=f).save(run / 'model_best.keras'); "
                "recipe = {'model': {'name': 'resunet', 'channels': 3, 'depth': 2, 'base_filters': f}, "
                "'data': {'tile': 32}, 'loss': {}, 'train': {}}; "
                "(run / 'run.json').write_text(json.dumps({'recipe': recipe, 'step': 1, 'data': {}}))")
        python(code, run, filters)
        return run

    @staticmethod
    def _files(folder: Path, top_level: bool = False) -> dict:
        paths = folder.iterdir() if top_level else folder.rglob("*")
        return {p.relative_to(folder).as_posix(): p.read_bytes() for p in paths
                if p.is_file() and "assets.extra" not in p.parts}

    def run(self, n: int, delay: float) -> tuple[bool, str]:
        out = self.work / f"run{n}"
        shutil.copytree(self.v1, out)
        astrotf("export", self.runs[1], "--out", out, "--version", "2", kill_after=delay)
        top = self._files(out, top_level=True)
        kept = out / "1" / "assets.extra" / "astrotf"
        own = {p.name: p.read_bytes() for p in kept.iterdir()} if kept.is_dir() else {}
        intact = self._files(out / "1") == self.v1_saved and (top == self.v1_files or own == self.v1_files)
        code, output = astrotf("export", self.runs[1], "--out", out, "--version", "2", "--force")
        if code != 0:
            return False, output.strip().splitlines()[-1]
        own = {p.name: p.read_bytes() for p in kept.iterdir()} if kept.is_dir() else {}
        version = json.loads((out / "metadata.json").read_text())["version"]
        ok = intact and own == self.v1_files and version == 2
        return ok, f"version 1 {'intact' if intact else 'DAMAGED'} after the kill; top level version {version}"


SCENARIOS = {"train": Train, "batch": Batch, "export": Export}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--scenarios", nargs="+", choices=list(SCENARIOS), default=list(SCENARIOS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", type=Path, help="Work in this folder and keep it (default: a temporary one).")
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    work = args.keep or Path(tempfile.mkdtemp(prefix="astrotf-kill-"))
    failed = 0
    try:
        for name in args.scenarios:
            (work / name).mkdir(parents=True)
            scenario = SCENARIOS[name](work / name)
            passed = 0
            for n in range(args.runs):
                delay = rng.uniform(0.0, scenario.duration)
                ok, detail = scenario.run(n, delay)
                passed += ok
                print(f"{name} run {n + 1}: killed after {delay:.1f} s of {scenario.duration:.1f} s: "
                      f"{'pass' if ok else 'FAIL'} ({detail})", flush=True)
            failed += args.runs - passed
            print(f"{name}: {passed}/{args.runs} passed", flush=True)
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
