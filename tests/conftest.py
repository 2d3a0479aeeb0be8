"""Shared fixtures: tiny synthetic images on disk, TensorFlow kept quiet and single-policy."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402


def synthetic_sky(rng, size, channels=3, n_stars=6):
    """A stretched-looking sky in [0, 1]: faint gradient, a blob 'nebula' and Gaussian stars."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    sky = 0.08 + 0.04 * xx / size
    sky = sky + 0.15 * np.exp(-((xx - size * 0.6) ** 2 + (yy - size * 0.4) ** 2) / (2 * (size / 5) ** 2))
    for _ in range(n_stars):
        cx, cy = rng.uniform(3, size - 3, 2)
        sky = sky + 0.9 * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * 1.2**2))
    img = np.clip(sky, 0, 1)[..., None] * np.array([1.0, 0.9, 0.8][:channels], np.float32)
    return img.astype(np.float32)


def write_png(path, img):
    """Write a float image in [0, 1] as 8-bit PNG (RGB or grey)."""
    data = (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)
    if data.shape[-1] == 3:
        data = cv2.cvtColor(data, cv2.COLOR_RGB2BGR)
    cv2.imwrite(str(path), data.squeeze())


@pytest.fixture
def rgb_folder(tmp_path):
    """DIR/clean with four 48x48 RGB PNGs."""
    rng = np.random.default_rng(0)
    clean = tmp_path / "data" / "clean"
    clean.mkdir(parents=True)
    for i in range(4):
        write_png(clean / f"sky{i}.png", synthetic_sky(rng, 48))
    return tmp_path / "data"


@pytest.fixture
def electron_folder(tmp_path):
    """DIR/clean with four 64x64 noise-free fields in electrons (FITS), drawn from the broad training prior."""
    from astropy.io import fits

    from astrotf.data.prior import training_prior
    from astrotf.data.simulate import simulate_star_field

    clean = tmp_path / "fields" / "clean"
    clean.mkdir(parents=True)
    for i in range(4):
        image, _ = simulate_star_field(training_prior((64, 64)).field, seed=i)
        fits.PrimaryHDU(image).writeto(clean / f"field{i}.fits")
    return tmp_path / "fields"


@pytest.fixture(autouse=True)
def _float32_policy():
    """Inference may set a global dtype policy; put it back after every test."""
    yield
    import sys

    if "keras" in sys.modules:
        sys.modules["keras"].mixed_precision.set_global_policy("float32")
