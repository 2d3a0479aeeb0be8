"""tf.data datasets of (noisy, clean, star_mask) tiles for training (AstroPics §2.1–2.3, §2.6).

Files are read once with :mod:`astrotf.io` (any supported format), checked, and
cached as raw float32 next to the run; everything after that — reading, random
crops, flips and 90° rotations applied identically to both images of a pair,
synthetic noise and soft star masks — runs as pure TensorFlow ops in graph mode,
so it parallelises and prefetches without the Python lock (the paper used
``tf.py_function``; ``tools/bench_data.py`` measures the difference).

Randomness is stateless: every tile's seed is ``fold_in((seed, epoch), counter)``,
so a run is reproducible and a resumed run sees the same stream per epoch.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
from pathlib import Path

import numpy as np
import tensorflow as tf

from astrotf import io
from astrotf.config.data import DataConfig
from astrotf.data.masks import star_mask
from astrotf.data.noise import add_astropics_noise, add_detector_noise, add_physical_noise
from astrotf.errors import AstroTFError

log = logging.getLogger(__name__)

@dataclasses.dataclass(frozen=True)
class Sample:
    """One training image (or pair) decoded to the raw float32 cache."""

    name: str
    clean: Path
    noisy: Path | None
    height: int
    width: int


def find_images(data_dir: str | os.PathLike, mode: str) -> list[tuple[str, Path, Path | None]]:
    """``(name, clean_path, noisy_path)`` for every image of a data folder.

    Raises
    ------
    AstroTFError
        Missing or empty folders, or (paired) names present on one side only.
    """
    root = Path(data_dir)
    if not root.is_dir():
        raise AstroTFError(f"{root}: data folder does not exist")
    if mode == "paired":
        noisy_dir, clean_dir = root / "noisy", root / "clean"
        for sub in (noisy_dir, clean_dir):
            if not sub.is_dir():
                raise AstroTFError(f"{sub}: missing; --paired needs DIR/noisy and DIR/clean")
        noisy = {_stem(p): p for p in io.list_images(noisy_dir)}
        clean = {_stem(p): p for p in io.list_images(clean_dir)}
        if not clean:
            raise AstroTFError(f"{clean_dir}: no supported images ({', '.join(io.SUPPORTED_SUFFIXES)})")
        unpaired = sorted(set(noisy) ^ set(clean))
        if unpaired:
            side = "noisy" if unpaired[0] in noisy else "clean"
            shown = ", ".join(unpaired[:3]) + (" ..." if len(unpaired) > 3 else "")
            raise AstroTFError(
                f"{root / side}: {len(unpaired)} image(s) without a partner of the same name: {shown}"
            )
        return [(name, clean[name], noisy[name]) for name in sorted(clean)]
    folder = root / "clean" if (root / "clean").is_dir() else root
    files = io.list_images(folder)
    if not files:
        raise AstroTFError(f"{folder}: no supported images ({', '.join(io.SUPPORTED_SUFFIXES)})")
    return [(_stem(p), p, None) for p in files]


def _stem(path: Path) -> str:
    name = path.name
    for suffix in sorted(io.SUPPORTED_SUFFIXES, key=len, reverse=True):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def _load_checked(path: Path, config: DataConfig) -> np.ndarray:
    data, _ = io.read_image(path)
    height, width, channels = data.shape
    if channels != config.channels:
        raise AstroTFError(
            f"{path}: has {channels} channel(s) but the recipe expects {config.channels} (data.channels)"
        )
    if height < config.tile or width < config.tile:
        raise AstroTFError(
            f"{path}: {height} x {width} px is smaller than the {config.tile} px tile (use a smaller --tile)"
        )
    bad = int(np.size(data) - np.count_nonzero(np.isfinite(data)))
    if bad:
        raise AstroTFError(f"{path}: {bad} non-finite pixel(s) (NaN/Inf); training needs finite data")
    if config.noise == "detector" and data.min() < 0:
        raise AstroTFError(f"{path}: minimum {data.min():.4g} < 0; noise = 'detector' takes clean frames in "
                           "electrons (>= 0)")
    return data


def _cache_file(path: Path, cache_dir: Path) -> Path:
    stat = path.stat()
    key = hashlib.sha1(f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    return cache_dir / f"{_stem(path)}-{key}.f32"


def _write_cache(data: np.ndarray, target: Path) -> None:
    """The shape sidecar, then the raw data, each through a temporary file: a cached file whose
    writing was killed is missing, never half there or without its shape."""
    for path, write in ((target.with_suffix(".shape"), lambda tmp: tmp.write_text(" ".join(map(str, data.shape)))),
                        (target, np.ascontiguousarray(data, dtype="<f4").tofile)):
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        write(tmp)
        os.replace(tmp, path)


def prepare_samples(data_dir, config: DataConfig, cache_dir: str | os.PathLike) -> list[Sample]:
    """Check every image of ``data_dir`` and decode it once into ``cache_dir``.

    Raises
    ------
    AstroTFError
        Naming the file: unreadable, wrong channel count, smaller than the tile,
        non-finite pixels, or a pair whose two images differ in size.
    """
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    for stale in cache_dir.glob(".*.tmp-*"):  # left by a process killed while caching (one per run folder)
        stale.unlink(missing_ok=True)
    samples = []
    for name, clean_path, noisy_path in find_images(data_dir, config.mode):
        cached = []
        shape = None
        for path in (clean_path, noisy_path):
            if path is None:
                cached.append(None)
                continue
            target = _cache_file(path, cache_dir)
            if target.exists():
                # the cache key covers path, size and mtime; the shape comes from a sidecar
                shape = tuple(int(v) for v in target.with_suffix(".shape").read_text().split())
            else:
                data = _load_checked(path, config)
                if shape is not None and data.shape != shape:
                    raise AstroTFError(
                        f"{path}: {data.shape[0]} x {data.shape[1]} px but its clean partner is "
                        f"{shape[0]} x {shape[1]} px"
                    )
                shape = data.shape
                _write_cache(data, target)
            cached.append(target)
        samples.append(Sample(name, cached[0], cached[1], shape[0], shape[1]))
    log.info("%d image(s) ready in %s", len(samples), cache_dir)
    return samples


def split_samples(samples: list[Sample], val_fraction: float, seed: int) -> tuple[list, list]:
    """Deterministic train / validation split by file (§2.6: about 80 / 20).

    With one image only, it is used for both (and a warning says so).
    """
    if len(samples) == 1 or val_fraction == 0:
        if val_fraction > 0:
            log.warning("only one training image: validating on the training image")
        return list(samples), list(samples)
    order = np.random.default_rng(seed).permutation(len(samples))
    n_val = min(max(1, round(val_fraction * len(samples))), len(samples) - 1)
    val = sorted((samples[i] for i in order[:n_val]), key=lambda s: s.name)
    train = sorted((samples[i] for i in order[n_val:]), key=lambda s: s.name)
    return train, val


def _augment(stack, seed):
    """Flip and rotate a (T, T, K) stack by one random element of the dihedral group."""
    seeds = tf.random.experimental.stateless_split(seed, 3)
    stack = tf.image.stateless_random_flip_left_right(stack, seeds[0])
    stack = tf.image.stateless_random_flip_up_down(stack, seeds[1])
    k = tf.random.stateless_uniform([], seeds[2], minval=0, maxval=4, dtype=tf.int32)
    return tf.image.rot90(stack, k)


def _read_raw(path, height, width, channels):
    raw = tf.io.decode_raw(tf.io.read_file(path), tf.float32)
    return tf.reshape(raw, tf.stack([height, width, channels]))


def _synthetic_noisy(clean: tf.Tensor, config: DataConfig, seed) -> tf.Tensor:
    """The input made from a clean tile: ``config.noise`` added with ``seed`` (unchanged for "none")."""
    if config.noise == "astropics":
        return add_astropics_noise(clean, config.astropics, seed)
    if config.noise == "physical":
        return add_physical_noise(clean, config.physical, seed)
    return clean


def _mask_adder(config: DataConfig):
    """``(x, y) -> (x, y, star_mask)`` for a batch (the mask ops run much faster on a batch than tile by tile).

    The absolute threshold (stretched data) applies to the clean target as in §2.3; the sigma
    threshold (linear data) needs a noise scale, which a noise-free target lacks (its MAD is ~0), so
    there the cores are the k-sigma detections in the noisy input. With a σ map (noise = "detector")
    the mask is the noise-free target's sources above ``threshold_sigma`` times the input's noise, and
    the sky the science loss scores is where it is 0.
    """
    from_noisy = config.star_mask.threshold_sigma is not None

    def with_mask(x, y):
        if config.noise == "detector":
            return x, y, star_mask(y[0], config.star_mask, noise_sigma=x[1])
        return x, y, star_mask(x if from_noisy else y, config.star_mask)

    return with_mask


def make_dataset(samples: list[Sample], config: DataConfig, *, training: bool, epoch: int = 0):
    """Batched ``(noisy, clean, star_mask)`` tiles; infinite when ``training``.

    Parameters
    ----------
    samples : list of Sample
        From :func:`prepare_samples` / :func:`split_samples`.
    config : DataConfig
    training : bool
        Random, shuffled, endless stream when True; a fixed, finite set (every image
        once, ``crops_per_image`` tiles each, the same noise every time) when False.
    epoch : int
        Mixed into the seed so that every epoch — also after a resume — draws its own
        reproducible tiles.

    Returns
    -------
    tf.data.Dataset
        Elements ``(x, y, mask)`` shaped (B, T, T, C), (B, T, T, C), (B, T, T, 1); with
        ``noise = "detector"`` ``x`` is the pair ``(noisy, noise_sigma)``, the two inputs of a
        noise-conditioned model, and ``y`` the pair ``(target, target_sigma)``: the noise-free short
        exposure in ADU and the true noise around it (see :func:`astrotf.data.noise.add_detector_noise`).
    """
    if not samples:
        raise AstroTFError("no images to make tiles from")
    c, t, k = config.channels, config.tile, config.crops_per_image
    paired = config.mode == "paired"
    table = (
        tf.constant([str(s.clean) for s in samples]),
        tf.constant([str(s.noisy or s.clean) for s in samples]),
        tf.constant([s.height for s in samples], tf.int32),
        tf.constant([s.width for s in samples], tf.int32),
    )
    base_seed = tf.constant([config.seed, epoch if training else -1], tf.int64)

    def crops(counter, clean_path, noisy_path, height, width):
        image = _read_raw(clean_path, height, width, c)
        if paired:
            image = tf.concat([image, _read_raw(noisy_path, height, width, c)], axis=-1)
        depth = 2 * c if paired else c
        seed = tf.random.experimental.stateless_fold_in(base_seed, counter)
        seeds = tf.random.experimental.stateless_split(seed, 2 * k)
        tiles = [
            _augment(tf.image.stateless_random_crop(image, [t, t, depth], seeds[2 * i]), seeds[2 * i + 1])
            for i in range(k)
        ]
        return tf.data.Dataset.from_tensor_slices(tf.stack(tiles))

    def to_example(counter, stack):
        seed = tf.random.experimental.stateless_fold_in(base_seed + 7919, counter)
        clean = stack[..., :c]
        if config.noise == "detector":
            noisy, target, sigma, target_sigma = add_detector_noise(clean, config.detector, seed)
            return (noisy, sigma), (target, target_sigma)
        return (stack[..., c:] if paired else _synthetic_noisy(clean, config, seed)), clean

    files = tf.data.Dataset.from_tensor_slices(table)
    if training:
        files = files.shuffle(len(samples), seed=config.seed * 1000003 + epoch).repeat()
    tiles = files.enumerate().interleave(
        lambda i, row: crops(i, *row),
        cycle_length=min(4, len(samples)),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )
    if training:
        tiles = tiles.shuffle(config.shuffle_buffer, seed=config.seed + epoch)
    tiles = tiles.enumerate().map(to_example, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    batches = tiles.batch(config.batch_size, drop_remainder=training)
    batches = batches.map(_mask_adder(config), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    if not training:
        batches = batches.cache()
    return batches.prefetch(tf.data.AUTOTUNE)
