"""Tiles per second of astrotf's pure-TF data pipeline against a tf.py_function (NumPy/OpenCV) one.

The AstroPics paper (§2.6) made noise, star masks and crops in ``tf.py_function``; astrotf does
the same work in TF graph ops. Both pipelines here read the same cached images and do the same
steps per tile — random crop, flip/rotation, random-variance Gaussian noise, chroma blotches,
banding, soft star mask — and are timed one after the other in the same run.

    python tools/bench_data.py [--data DIR] [--tiles 800] [--tile 256]

Without --data a folder of synthetic 1024² RGB skies is generated in a temp dir.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import tensorflow as tf

from astrotf.data import pipeline
from astrotf.data.pipeline import DataConfig


def numpy_tile(image: np.ndarray, tile: int, rng: np.random.Generator, cfg: DataConfig):
    """The same steps as astrotf's graph pipeline, in NumPy/OpenCV, for one tile."""
    h, w, c = image.shape
    r, q = rng.integers(0, h - tile + 1), rng.integers(0, w - tile + 1)
    y = image[r:r + tile, q:q + tile]
    if rng.random() < 0.5:
        y = y[:, ::-1]
    if rng.random() < 0.5:
        y = y[::-1]
    y = np.ascontiguousarray(np.rot90(y, rng.integers(0, 4)))
    noise = cfg.astropics
    x = y + rng.normal(0, rng.uniform(*noise.gaussian_sigma), y.shape).astype(np.float32)
    if rng.random() < noise.chroma_prob:
        block = int(rng.integers(noise.chroma_block[0], noise.chroma_block[1] + 1))
        cells = rng.normal(0, rng.uniform(*noise.chroma_sigma), (-(-tile // block), -(-tile // block), c))
        x = x + cv2.resize(cells.astype(np.float32), (tile, tile), interpolation=cv2.INTER_LINEAR)
    if rng.random() < noise.banding_prob:
        bands = rng.normal(0, rng.uniform(*noise.banding_sigma), tile).astype(np.float32)
        x = x + (bands[:, None, None] if rng.random() < 0.5 else bands[None, :, None])
    x = np.clip(x, 0, 1)
    lum = y @ np.array([0.2126, 0.7152, 0.0722], np.float32)
    core = (lum > cfg.star_mask.threshold).astype(np.float32)
    k = 2 * cfg.star_mask.dilation + 1
    core = cv2.dilate(core, np.ones((k, k), np.uint8))
    mask = np.clip(cv2.GaussianBlur(core, (0, 0), cfg.star_mask.blur_sigma), 0, 1)[..., None]
    return x, y, mask


def py_function_dataset(samples, cfg: DataConfig, seed: int = 0):
    images = [np.fromfile(s.clean, "<f4").reshape(s.height, s.width, cfg.channels) for s in samples]
    rng = np.random.default_rng(seed)

    def make(index):
        return numpy_tile(images[int(index) % len(images)], cfg.tile, rng, cfg)

    def wrapped(index):
        x, y, m = tf.py_function(make, [index], [tf.float32, tf.float32, tf.float32])
        t, c = cfg.tile, cfg.channels
        return tf.ensure_shape(x, [t, t, c]), tf.ensure_shape(y, [t, t, c]), tf.ensure_shape(m, [t, t, 1])

    ds = tf.data.Dataset.range(10**9).map(wrapped, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.batch(cfg.batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)


def tiles_per_second(ds, n_batches: int, batch_size: int) -> float:
    it = iter(ds)
    for _ in range(3):  # warm-up: tracing, first file reads
        next(it)
    start = time.perf_counter()
    for _ in range(n_batches):
        next(it)
    return n_batches * batch_size / (time.perf_counter() - start)


def synthetic_folder(root: Path, n: int = 6, size: int = 1024) -> Path:
    rng = np.random.default_rng(0)
    (root / "clean").mkdir(parents=True)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    for i in range(n):
        sky = 0.1 + 0.05 * xx / size
        for cx, cy in rng.uniform(0, size, (300, 2)):
            sky += 0.9 * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / 2.0) if rng.random() < 0.05 else 0
        img = (np.clip(sky, 0, 1)[..., None] * [1.0, 0.9, 0.8] * 255).astype(np.uint8)
        cv2.imwrite(str(root / "clean" / f"sky{i}.png"), img)
    return root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, help="folder of clean RGB images (DIR or DIR/clean)")
    parser.add_argument("--tiles", type=int, default=800)
    parser.add_argument("--tile", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = args.data or synthetic_folder(Path(tmp) / "data")
        cfg = DataConfig(tile=args.tile, batch_size=args.batch_size, crops_per_image=8, shuffle_buffer=64)
        samples = pipeline.prepare_samples(data, cfg, Path(tmp) / "cache")
        n_batches = max(1, args.tiles // args.batch_size)
        graph = tiles_per_second(pipeline.make_dataset(samples, cfg, training=True), n_batches, cfg.batch_size)
        eager = tiles_per_second(py_function_dataset(samples, cfg), n_batches, cfg.batch_size)
    print(f"images: {len(samples)}  tile: {cfg.tile}  batch: {cfg.batch_size}  tiles timed: {n_batches * cfg.batch_size}")
    print(f"pure-TF graph pipeline : {graph:8.1f} tiles/s")
    print(f"tf.py_function (NumPy) : {eager:8.1f} tiles/s")
    print(f"ratio graph / py_function: {graph / eager:.2f}x  (target >= 2x)")


if __name__ == "__main__":
    main()
