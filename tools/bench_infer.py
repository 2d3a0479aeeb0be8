"""Inference speed and memory of the shipped models: tiled (overlap 0.25) against one whole-frame call.

For each model, on a synthetic frame of the model's kind, in the same run:
  * Mpix/s of ``denoise_tiled`` at overlap 0.25 with the tiles ``astrotf infer`` picks for the
    frame (``TileOptions.for_frame``), with fixed 256 px tiles, and at overlap 0 (naive 256 px tiles),
  * Mpix/s of one call of the model on the whole frame (padded inside the model),
  * the ratio tiled / whole in time for both tilings (the overlap alone costs up to
    1 / (1 - 0.25)^2 = 1.78x; how the tiles fit the frame decides how much),
  * peak resident memory of a tiled run on a large mono frame, measured in a child process.

    python tools/bench_infer.py [--size 2048] [--big 10000] [--models resunet-rgb resunet-mono]
                                [--backends tensorflow onnxruntime] [--precisions float32 bfloat16]

With several backends, every engine runs the same exported model on the same frame in the same run
(ONNX Runtime needs the model folder's model.onnx: ``astrotf export RUN --format onnx``); the
largest difference from TensorFlow's output is printed beside the speed. ``--precisions float32
bfloat16`` adds TensorFlow rows with the network's convolutions in bfloat16 (what ``astrotf infer
--precision auto`` picks for stretched-data models on hardware with native bfloat16).

``ONEDNN_MAX_CPU_ISA=AVX2 python tools/bench_infer.py ...`` limits oneDNN's kernels to AVX2 on an
AVX-512 machine, an approximation of a CPU without AVX-512 (not compared with one); the header line
names the limit.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def frame(size: int, channels: int, linear: bool, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if linear:
        return rng.poisson(100.0, (size, size, channels)).astype(np.float32)
    return np.clip(rng.normal(0.2, 0.05, (size, size, channels)), 0, 1).astype(np.float32)


def seconds(fn, repeat: int = 2) -> float:
    fn()  # warm-up: tracing, first allocation
    best = np.inf
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def bench_model(name: str, size: int, batch: int | None, backend: str = "tensorflow", reference=None,
                precision: str = "float32") -> dict:
    from astrotf.backends import load_model, resolve_model_path
    from astrotf.infer import TileOptions, denoise_tiled

    if backend == "tensorrt":  # engines are built for this GPU, from the model's model.onnx
        import tempfile

        from astrotf.export import export_model_folder

        folder = Path(tempfile.mkdtemp(prefix="bench-trt-")) / name
        export_model_folder(resolve_model_path(name), folder)
        name = str(folder)
    model = load_model(name, backend=backend, precision=precision)
    image = frame(size, model.channels, model.domain == "linear")
    mpix = size * size / 1e6
    chosen = model.tile_options(image.shape, 0.25, batch_size=batch)
    sigma = None
    if model.noise_conditioned:  # its σ map: the frame's sky of 100 e- at gain 1 with Poisson's 10 e-
        from astrotf.noise_model import NoiseModel

        sigma = NoiseModel(gain=1.0, read_noise=0.0).sigma_map(image)
    extra = () if sigma is None else (sigma[None],)
    tiled = seconds(lambda: denoise_tiled(image, model.predict, chosen, noise_sigma=sigma))
    tiled256 = seconds(lambda: denoise_tiled(image, model.predict, TileOptions(256, 0.25, batch or 8),
                                             noise_sigma=sigma))
    naive = seconds(lambda: denoise_tiled(image, model.predict, TileOptions(256, 0.0, batch or 8), noise_sigma=sigma))
    whole = seconds(lambda: model.predict(image[None], *extra), repeat=2)  # best of 2, as the tiled runs
    out = np.asarray(model.predict(image[None, :512, :512], *(e[:, :512, :512] for e in extra)))
    row = {"model": model.name, "backend": backend, "precision": model.precision,
           "frame": f"{size}x{size}x{model.channels}",
           "tile": chosen.tile, "batch": chosen.batch_size,
           "tiled_mpix_s": mpix / tiled, "tiled256_mpix_s": mpix / tiled256, "naive_mpix_s": mpix / naive,
           "whole_mpix_s": mpix / whole, "tiled_over_whole": tiled / whole, "tiled256_over_whole": tiled256 / whole,
           "output": out}
    if reference is not None:
        row["max_abs_diff"] = float(np.abs(out - reference).max())
    return row


def peak_rss_child(name: str, size: int) -> float:
    """Peak RSS in GB of a child process that denoises a (size, size) mono frame tiled.

    Read from the child's own ``VmHWM`` (/proc/self/status): ``ru_maxrss`` would report the
    parent's peak, which Linux carries over through fork and exec. The frame is made in
    float32 directly (sky 100 e- with Gaussian noise of Poisson's sigma, 10 e-); a noise-conditioned
    model also gets the frame's σ map, which it holds beside the frame.
    """
    code = (
        "import numpy as np\n"
        "from astrotf.backends import load_model\n"
        "from astrotf.infer import adapt_channels, denoise_tiled\n"
        f"m = load_model({name!r})\n"
        f"x = np.random.default_rng(0).standard_normal(({size}, {size}, 1), dtype=np.float32)\n"
        "x *= 10.0\n"
        "x += 100.0\n"
        "options = m.tile_options(x.shape, 0.25)\n"
        "sigma = None\n"
        "if m.noise_conditioned:  # its σ map, as infer makes it: Poisson's σ at gain 1\n"
        "    from astrotf.noise_model import NoiseModel\n"
        "    sigma = NoiseModel(gain=1.0, read_noise=0.0).sigma_map(x)\n"
        "denoise_tiled(x, adapt_channels(m.predict, m.channels, 1), options, noise_sigma=sigma)\n"
        "print([line for line in open('/proc/self/status') if line.startswith('VmHWM')][0].split()[1])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return int(out.stdout.strip().splitlines()[-1]) / 1024**2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["resunet-rgb", "resunet-mono"])
    parser.add_argument("--size", type=int, default=2048, help="side of the speed-test frame (0: skip speed)")
    parser.add_argument("--big", type=int, default=0, help="side of the mono frame for peak RSS (0: skip)")
    parser.add_argument("--batch-size", type=int,
                        help="tiles per call (default: as astrotf infer, as many pixels as 8 tiles of 256 px)")
    parser.add_argument("--backends", nargs="+", default=["tensorflow"],
                        choices=["tensorflow", "onnxruntime", "tensorrt"],
                        help="tensorrt: an FP16 engine built in a temporary folder (needs a GPU; skipped without)")
    parser.add_argument("--precisions", nargs="+", default=["float32"], choices=["float32", "bfloat16"],
                        help="network arithmetic of the TensorFlow rows")
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args()
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
               platform.processor()) if os.path.exists("/proc/cpuinfo") else platform.processor()
    isa = os.environ.get("ONEDNN_MAX_CPU_ISA")  # e.g. AVX2: what a CPU without AVX-512 would run
    setup = {"date": time.strftime('%Y-%m-%d'),
             "machine": f"{cpu}{f' limited to {isa} (ONEDNN_MAX_CPU_ISA)' if isa else ''}, "
                        f"{len(os.sched_getaffinity(0))} cores",
             "frame": f"{args.size}x{args.size}", "batch": args.batch_size or "as astrotf infer"}
    print(", ".join(f"{k} {v}" if k in ("frame", "batch") else str(v) for k, v in setup.items()))
    rows = []
    if "tensorrt" in args.backends:
        from astrotf.backends.tensorrt import cuda_available

        if not cuda_available():
            print("tensorrt: skipped (no CUDA GPU with tensorrt and cuda-python here)")
            args.backends = [b for b in args.backends if b != "tensorrt"]
    for name in args.models if args.size else []:
        reference = None
        runs = [(b, p) for b in args.backends for p in (args.precisions if b == "tensorflow" else ["float32"])]
        for backend, precision in runs:
            row = bench_model(name, args.size, args.batch_size, backend, reference, precision)
            reference = row.pop("output") if reference is None else reference
            row.pop("output", None)
            rows.append(row)
    print("| model | backend | precision | frame | tiled 0.25 Mpix/s (tile x batch) | tiled 0.25, 256 px tiles "
          "| naive 256 px tiles | whole frame Mpix/s | tiled / whole time | 256 px tiles / whole "
          "| max abs diff vs first row |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        diff = f"{r['max_abs_diff']:.1e}" if "max_abs_diff" in r else "-"
        print(f"| {r['model']} | {r['backend']} | {r['precision']} | {r['frame']} | {r['tiled_mpix_s']:.2f} "
              f"({r['tile']} x {r['batch']}) | {r['tiled256_mpix_s']:.2f} | {r['naive_mpix_s']:.2f} | "
              f"{r['whole_mpix_s']:.2f} | {r['tiled_over_whole']:.2f} | {r['tiled256_over_whole']:.2f} | {diff} |")
    if args.big:
        for name in args.models:
            gb = peak_rss_child(name, args.big)
            rows.append({"model": name, "peak_rss_gb": gb, "big_frame": args.big})
            print(f"peak RSS, {name}, tiled {args.big}x{args.big} mono frame: {gb:.2f} GB")
    print(f"(this process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2:.2f} GB peak RSS)")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"setup": setup, "rows": rows}, fh, indent=2)


if __name__ == "__main__":
    main()
