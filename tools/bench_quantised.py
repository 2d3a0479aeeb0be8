"""Integer frames: what quantisation does to a model that normalises tiles by their MAD, with and without dither.

    python tools/bench_quantised.py [--model resunet-mono] [--size 512] [--gains 1 4 10 20] [--seed 3]

A simulated star field (``astrotf.data.simulate``, Poisson + 5 e- read noise, sky at 100 ADU) is
written in ADU at several gains (electrons per ADU), so the sky noise runs from about 10 ADU down to
half an ADU. For each gain the model denoises, side by side in one run, the float frame, the same
frame rounded to integers (what a 16-bit camera FITS holds), and the integer frame dithered by one
step (what ``astrotf infer`` does for integer inputs of such models, ``denoise_image(..., step=)``).
Printed: the RMS error against the noise-free field and the noise left in the background (sigma-
clipped MAD of output - truth), in ADU.
"""

from __future__ import annotations

import argparse

import numpy as np

from astrotf.data.simulate import StarFieldConfig, simulate_star_field
from astrotf.backends import load_model
from astrotf.infer import denoise_image
from astrotf.metrics import background_noise


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resunet-mono")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--gains", type=float, nargs="+", default=[1.0, 4.0, 10.0, 20.0])
    parser.add_argument("--seed", type=int, default=3)
    args = parser.parse_args()
    model = load_model(args.model)
    print(f"model {args.model} (normalises tiles by their MAD: {model.normalises_tiles}), "
          f"{args.size}² px star field, seed {args.seed}")
    clean, _ = simulate_star_field(StarFieldConfig(shape=(args.size, args.size)), seed=args.seed)
    rng = np.random.default_rng(args.seed)
    options = model.tile_options((args.size, args.size, 1), 0.25)
    print(f"{'gain e-/ADU':>11s} {'sky sigma':>9s} | {'RMS error (ADU): float':>22s} {'integer':>8s} {'dithered':>8s} "
          f"| {'background left: float':>23s} {'integer':>8s} {'dithered':>8s}")
    for gain in args.gains:
        electrons = rng.poisson(np.clip(clean, 0, None)).astype(np.float64) + rng.normal(0, 5, clean.shape)
        truth = clean / gain + 100.0
        frame = electrons / gain + 100.0
        integer = np.rint(frame)
        runs = {"float": (frame, None), "integer": (integer, None), "dithered": (integer, 1.0)}
        rms, left = {}, {}
        for name, (image, step) in runs.items():
            out = denoise_image(image.astype(np.float32)[..., None], model, options, step=step)[..., 0]
            rms[name] = float(np.sqrt(np.mean((out - truth) ** 2)))
            left[name] = background_noise(out - truth).sigma
        print(f"{gain:11g} {background_noise(frame).sigma:9.2f} | {rms['float']:22.3f} {rms['integer']:8.3f} "
              f"{rms['dithered']:8.3f} | {left['float']:23.3f} {left['integer']:8.3f} {left['dithered']:8.3f}")


if __name__ == "__main__":
    main()
