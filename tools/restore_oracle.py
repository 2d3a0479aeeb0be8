"""What the paper's noise measure gives after a restore, for a PERFECT denoiser.

    python tools/restore_oracle.py [--noise 8.09] [--signal 0.5 1 2 3 4] [--k 0.6 1 2] [--pixels 2000000]

Pure numbers, no model: the "solar signal" is Gaussian with sigma ``--signal`` (G), the
noise white Gaussian with sigma ``--noise`` (the TDR paper's 8.09 G for 45-s HMI
magnetograms), and the denoiser returns the signal exactly. For each R = K x the input's
noise level, prints the noise level (sigma of the Gaussian fitted to the histogram in
[-20, 20] G, :func:`astrotf.metrics.noise_level`) over the input's, for the oracle's output,
after the paper's restore (abnormal pixels back to the input) and after ``--restore-mode
clip`` (to input ± R), and the restored fraction. Where about half of the pixels go back
to noisy values, the fitted Gaussian follows them rather than the denoised core: this
bounds what any denoiser can show under that measure.
"""

from __future__ import annotations

import argparse

import numpy as np

from astrotf.metrics import noise_level
from astrotf.restore import restore


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--noise", type=float, default=8.09, help="noise sigma (G)")
    parser.add_argument("--signal", type=float, nargs="+", default=[0.5, 1.0, 2.0, 3.0, 4.0],
                        help="sigmas of the Gaussian signal (G)")
    parser.add_argument("--k", type=float, nargs="+", default=[0.6, 1.0, 2.0], help="R = K x input noise level")
    parser.add_argument("--pixels", type=int, default=2_000_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    print(f"noise {args.noise:g} G, oracle denoiser (output = signal), {args.pixels} px; "
          f"ratio = noise level / input's (Gaussian fit in [-20, 20] G)")
    print(f"{'signal (G)':>10s} {'K':>4s} {'denoised':>8s} {'restored':>8s} {'clipped':>8s} {'fraction':>8s}")
    for sigma_s in args.signal:
        signal = rng.normal(0.0, sigma_s, args.pixels)
        noisy = signal + rng.normal(0.0, args.noise, args.pixels)
        sigma_in = noise_level(noisy).sigma
        ratio = noise_level(signal).sigma / sigma_in
        for k in args.k:
            hard = restore(signal, noisy, k * sigma_in)
            clip = restore(signal, noisy, k * sigma_in, "clip")
            print(f"{sigma_s:10g} {k:4g} {ratio:8.3f} {noise_level(hard.image).sigma / sigma_in:8.3f} "
                  f"{noise_level(clip.image).sigma / sigma_in:8.3f} {100 * hard.fraction:7.1f}%")


if __name__ == "__main__":
    main()
