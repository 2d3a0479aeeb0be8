"""Before/after figure for the README, made with the shipped models on the bundled samples.

Row 1: a 256 px crop of the bundled Hubble XDF TIFF with AstroPics noise added (seeded) | denoised by
the default model for stretched data | the original crop. Row 2: the bundled simulated linear FITS frame
(Poisson + read noise at exposure ratio 4) | denoised by the default model for linear data, as
``astrotf infer`` runs it (noise model from the header, default strength) | difference, all with one
asinh stretch.

    python tools/make_readme_figure.py [--out docs/before_after.jpg]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

from astrotf import io
from astrotf.backends import DEFAULT_MODELS, load_model
from astrotf.batch import InferOptions, denoise_frame

SAMPLES = Path(__file__).resolve().parent.parent / "astrotf" / "samples"


def asinh_stretch(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    return np.clip(np.arcsinh(np.clip(x - lo, 0, None) / (hi - lo) * 10) / np.arcsinh(10), 0, 1)


def label(panel: np.ndarray, text: str) -> np.ndarray:
    panel = (np.clip(panel, 0, 1) * 255).astype(np.uint8).copy()
    cv2.putText(panel, text, (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
    return panel


def main() -> None:
    import tensorflow as tf

    from astrotf.data.noise import AstroPicsNoiseConfig, add_astropics_noise

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/before_after.jpg"))
    args = parser.parse_args()

    rgb, _ = io.read_image(SAMPLES / "hubble_deep_field.tif")
    crop = rgb[300:556, 400:656]
    cfg = AstroPicsNoiseConfig(identity_prob=0.0, low_noise_prob=0.0)
    noisy = np.asarray(add_astropics_noise(tf.constant(crop), cfg, tf.constant([7, 7], tf.int64)))
    rgb_model, mono_model = DEFAULT_MODELS["stretched"], DEFAULT_MODELS["linear"]
    options = InferOptions(tile=256, overlap=0.25, precision="float32")
    clean_out = denoise_frame(noisy, options, domain="stretched", model=load_model(rgb_model), step=None).data
    row1 = [label(noisy, "XDF + AstroPics noise"), label(clean_out, f"astrotf {rgb_model}"),
            label(crop, "original")]

    mono, info = io.read_image(SAMPLES / "starfield.fits")
    window = mono[128:384, 128:384]
    frame = denoise_frame(window, options, domain="linear", model=load_model(mono_model), header=info.header,
                          step=None)
    mono_out = frame.data
    strength = f", strength {frame.model.default_strength:g}" if frame.model.default_strength != 1 else ""
    lo, hi = np.percentile(window, [5, 99.7])
    diff = window - mono_out
    row2 = [label(np.repeat(asinh_stretch(window, lo, hi), 3, -1), "linear FITS, ratio 4"),
            label(np.repeat(asinh_stretch(mono_out, lo, hi), 3, -1), f"astrotf {mono_model}{strength}"),
            label(np.repeat(np.clip(0.5 + diff / (8 * np.std(diff)), 0, 1), 3, -1), "input - output")]
    gap_v = np.full((256, 4, 3), 255, np.uint8)
    rows = [np.concatenate([row[0], gap_v, row[1], gap_v, row[2]], axis=1) for row in (row1, row2)]
    grid = np.concatenate([rows[0], np.full((4, rows[0].shape[1], 3), 255, np.uint8), rows[1]], axis=0)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(args.out), cv2.cvtColor(grid, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 92])
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
