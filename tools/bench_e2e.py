"""`astrotf infer` end to end on a camera-sized 16-bit RGB TIFF, against scikit-image's fast NLM in the same run.

For each model, as a user runs it: the whole command in a child process, from its start to the written
file (imports, model load, tracing, reading, tiling, writing), its peak resident memory, and the fixed
cost (the same command on a 64 x 64 crop: imports, model load and the first trace). Beside it, in the
same run, scikit-image's `denoise_nl_means` (fast mode, patch 5, distance 6, h = 0.8 sigma with sigma
from `estimate_sigma`) on the same image, read and written the same way. The ratio of the two times is
the figure: both share the machine at the same moment.

    python tools/bench_e2e.py [--width 6000 --height 4000] [--models resunet-rgb resunet-rgb-v2]
                              [--precision auto] [--json docs/bench-e2e.json]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

NLM = """
import sys, time, numpy as np, tifffile
from skimage.restoration import denoise_nl_means, estimate_sigma
start = time.perf_counter()
x = tifffile.imread(sys.argv[1]).astype(np.float32) / 65535
sigma = float(np.mean(estimate_sigma(x, channel_axis=-1)))
y = denoise_nl_means(x, h=0.8 * sigma, sigma=sigma, fast_mode=True, patch_size=5, patch_distance=6,
                     channel_axis=-1)
tifffile.imwrite(sys.argv[2], np.rint(np.clip(y, 0, 1) * 65535).astype(np.uint16), photometric="rgb")
"""


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            return next(line.split(":", 1)[1].strip() for line in fh if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def synthetic_tiff(path: Path, width: int, height: int, seed: int = 0) -> None:
    """A stretched-looking 16-bit RGB frame: smooth nebulosity, stars, Gaussian noise (no file is needed)."""
    import tifffile

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    sky = 0.12 + 0.08 * np.sin(xx / 700.0) * np.cos(yy / 500.0)
    image = np.repeat(sky[..., None], 3, axis=-1) * np.array([1.0, 0.9, 1.1], np.float32)
    for x, y, f in zip(rng.uniform(0, width, 3000), rng.uniform(0, height, 3000), rng.uniform(0.05, 0.8, 3000)):
        x0, y0 = int(x), int(y)
        cut = (slice(max(y0 - 4, 0), y0 + 5), slice(max(x0 - 4, 0), x0 + 5))
        r2 = (yy[cut] - y) ** 2 + (xx[cut] - x) ** 2
        image[cut] += (f * np.exp(-r2 / 3.0))[..., None]
    image += rng.normal(0.0, 0.03, image.shape).astype(np.float32)
    tifffile.imwrite(path, np.rint(np.clip(image, 0, 1) * 65535).astype(np.uint16), photometric="rgb")


def timed(cmd: list[str]) -> tuple[float, float]:
    """Wall seconds and peak resident memory (GB) of one child process (its own rusage, from wait4)."""
    start = time.perf_counter()
    with tempfile.TemporaryFile() as err:
        child = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err)
        _, status, usage = os.wait4(child.pid, 0)
        seconds = time.perf_counter() - start
        child.returncode = os.waitstatus_to_exitcode(status)
        if child.returncode:
            err.seek(0)
            raise SystemExit(f"{' '.join(cmd)} failed:\n{err.read().decode(errors='replace')}")
    return seconds, usage.ru_maxrss / 1024**2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=6000)
    parser.add_argument("--height", type=int, default=4000)
    parser.add_argument("--models", nargs="+", default=["resunet-rgb"])
    parser.add_argument("--precision", default="auto", choices=["auto", "float32", "bfloat16"])
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-e2e-"))
    frame, small = work / "frame.tif", work / "small.tif"
    synthetic_tiff(frame, args.width, args.height)
    synthetic_tiff(small, 64, 64, seed=1)
    mpix = args.width * args.height / 1e6
    print(f"{datetime.date.today()}, {cpu_name()}, {len(os.sched_getaffinity(0))} cores; "
          f"{args.width} x {args.height} 16-bit RGB TIFF ({mpix:.1f} Mpix)", flush=True)
    rows = []
    nlm_s, nlm_peak = timed([sys.executable, "-c", NLM, str(frame), str(work / "nlm.tif")])
    print(f"scikit-image fast NLM: {nlm_s:.1f} s, peak RSS {nlm_peak:.2f} GB", flush=True)
    for model in args.models:
        base = [sys.executable, "-m", "astrotf.cli", "infer", "--model", model, "--precision", args.precision, "-q",
                "--force"]
        fixed_s, _ = timed([*base, str(small), "-o", str(work / "small_out.tif")])
        total_s, peak = timed([*base, str(frame), "-o", str(work / f"{model}.tif")])
        row = {"model": model, "precision": args.precision, "seconds": round(total_s, 1),
               "fixed_seconds": round(fixed_s, 1), "mpix_s": round(mpix / total_s, 3),
               "over_nlm": round(total_s / nlm_s, 3), "peak_rss_gb": round(peak, 2)}
        rows.append(row)
        print(f"{model}: {total_s:.1f} s end to end ({row['mpix_s']} Mpix/s), {total_s / nlm_s:.2f} x NLM's time; "
              f"fixed cost {fixed_s:.1f} s; peak RSS {peak:.2f} GB", flush=True)
    if args.json:
        record = {"date": datetime.date.today().isoformat(), "cpu": cpu_name(),
                  "cores": len(os.sched_getaffinity(0)), "frame": [args.height, args.width, 3],
                  "nlm_seconds": round(nlm_s, 1), "rows": rows}
        args.json.write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
