"""Does a ResUNet learn faster when its last convolution starts at zero (the identity)?

    python tools/bench_head_init.py [--steps 192] [--images 128] [--lr 2e-3]

Trains ResUNets (depth 3, 16 filters) at full and at half resolution (``space_to_depth``
1 and 2) with the last convolution zero-initialised or Glorot-uniform (the Keras default),
for the same steps on the same toy task, in one run: smoothed random 64² RGB images
(Gaussian, σ = 2 px) with Gaussian noise σ = 0.05, MSE loss, Adam. Prints PSNR of the
noisy input and of each network's output on 32 of the training images, and the time.
A few hundred steps are far from a trained model; the point is which start learns.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
from scipy.ndimage import gaussian_filter  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=192)
    parser.add_argument("--images", type=int, default=128)
    parser.add_argument("--lr", type=float, default=2e-3)
    args = parser.parse_args()

    import keras

    from astrotf.metrics import psnr
    from astrotf.models.resunet import ResUNet

    rng = np.random.default_rng(0)
    clean = np.stack([gaussian_filter(rng.random((64, 64, 3)), (2, 2, 0)) for _ in range(args.images)])
    clean = ((clean - clean.min()) / (clean.max() - clean.min())).astype(np.float32)
    noisy = (clean + rng.normal(0.0, 0.05, clean.shape)).astype(np.float32)
    batch = 8
    epochs = max(1, round(args.steps * batch / args.images))
    print(f"{epochs * -(-args.images // batch)} steps of batch {batch}, lr {args.lr}; "
          f"noisy input PSNR {psnr(clean[:32], noisy[:32], data_range=1.0):.2f} dB")
    print("| space_to_depth | last convolution | PSNR out (dB) | train s |")
    print("|---|---|---|---|")
    for s2d in (1, 2):
        for init in ("zeros", "glorot_uniform"):
            keras.utils.set_random_seed(0)
            model = ResUNet(channels=3, depth=3, base_filters=16, space_to_depth=s2d, head_initializer=init)
            model.compile(keras.optimizers.Adam(args.lr), "mse")
            start = time.perf_counter()
            model.fit(noisy, clean, batch_size=batch, epochs=epochs, verbose=0)
            seconds = time.perf_counter() - start
            out = model.predict(noisy[:32], verbose=0)
            print(f"| {s2d} | {init} | {psnr(clean[:32], out, data_range=1.0):.2f} | {seconds:.0f} |")


if __name__ == "__main__":
    main()
