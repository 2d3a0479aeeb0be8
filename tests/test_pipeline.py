"""tf.data pipeline: paired geometry, reproducibility, split, masks delivered with the target."""

import numpy as np
import pytest
import tifffile

from astrotf.data import pipeline
from astrotf.data.pipeline import DataConfig
from astrotf.errors import AstroTFError
from tests.conftest import synthetic_sky


def paired_folder(tmp_path, n=3, size=40):
    rng = np.random.default_rng(0)
    for side in ("noisy", "clean"):
        (tmp_path / "pairs" / side).mkdir(parents=True)
    for i in range(n):
        clean = synthetic_sky(rng, size)
        # the "noisy" image is a fixed affine function of the clean one: any geometric
        # mismatch between the two crops breaks the relation
        tifffile.imwrite(tmp_path / "pairs" / "clean" / f"p{i}.tif", clean, photometric="rgb")
        tifffile.imwrite(tmp_path / "pairs" / "noisy" / f"p{i}.tif", 0.5 * clean + 0.25, photometric="rgb")
    return tmp_path / "pairs"


def take(ds, n=1):
    return [tuple(np.asarray(t) for t in batch) for batch in ds.take(n)]


def test_paired_crops_flips_and_rotations_are_identical_for_both_images(tmp_path):
    cfg = DataConfig(mode="paired", noise="none", tile=16, batch_size=4, crops_per_image=4, shuffle_buffer=4)
    samples = pipeline.prepare_samples(paired_folder(tmp_path), cfg, tmp_path / "cache")
    for x, y, mask in take(pipeline.make_dataset(samples, cfg, training=True), 5):
        np.testing.assert_allclose(x, 0.5 * y + 0.25, atol=1e-6)
        assert x.shape == (4, 16, 16, 3) and mask.shape == (4, 16, 16, 1)


def test_augmentation_uses_all_orientations(tmp_path):
    cfg = DataConfig(mode="paired", noise="none", tile=40, batch_size=1, crops_per_image=1, shuffle_buffer=1)
    samples = pipeline.prepare_samples(paired_folder(tmp_path, n=1), cfg, tmp_path / "cache")
    original = tifffile.imread(tmp_path / "pairs" / "clean" / "p0.tif")
    variants = {np.rot90(f, k).tobytes() for f in (original, original[:, ::-1]) for k in range(4)}
    seen = {y[0].tobytes() for _, y, _ in take(pipeline.make_dataset(samples, cfg, training=True), 60)}
    assert seen <= variants and len(seen) >= 6


def test_same_seed_same_stream_and_epochs_differ(rgb_folder, tmp_path):
    cfg = DataConfig(tile=32, batch_size=2, crops_per_image=2, shuffle_buffer=4)
    samples = pipeline.prepare_samples(rgb_folder, cfg, tmp_path / "cache")
    a = take(pipeline.make_dataset(samples, cfg, training=True, epoch=0), 3)
    b = take(pipeline.make_dataset(samples, cfg, training=True, epoch=0), 3)
    c = take(pipeline.make_dataset(samples, cfg, training=True, epoch=1), 3)
    for batch_a, batch_b in zip(a, b):
        for ta, tb in zip(batch_a, batch_b):
            np.testing.assert_array_equal(ta, tb)
    assert not np.array_equal(a[0][0], c[0][0])


def test_clean_only_adds_noise_and_mask_marks_stars(rgb_folder, tmp_path):
    from astrotf.data.noise import AstroPicsNoiseConfig

    noise = AstroPicsNoiseConfig(identity_prob=0.0, low_noise_prob=0.0, gaussian_sigma=(0.05, 0.05),
                                 chroma_prob=0.0, banding_prob=0.0, clip=False)
    cfg = DataConfig(tile=32, batch_size=8, crops_per_image=2, shuffle_buffer=4, astropics=noise)
    samples = pipeline.prepare_samples(rgb_folder, cfg, tmp_path / "cache")
    x, y, mask = take(pipeline.make_dataset(samples, cfg, training=True))[0]
    assert abs(np.std(x - y) - 0.05) < 0.005
    assert 0.0 <= mask.min() and mask.max() <= 1.0
    assert mask[y.max(axis=-1, keepdims=True) > 0.8].mean() > 0.9  # star cores
    assert mask[y.max(axis=-1, keepdims=True) < 0.3].mean() < 0.5


def test_validation_set_is_fixed_and_finite(rgb_folder, tmp_path):
    cfg = DataConfig(tile=32, batch_size=3, crops_per_image=2)
    samples = pipeline.prepare_samples(rgb_folder, cfg, tmp_path / "cache")
    ds = pipeline.make_dataset(samples, cfg, training=False)
    first, second = take(ds, 10), take(ds, 10)
    assert sum(b[0].shape[0] for b in first) == 2 * len(samples)
    np.testing.assert_array_equal(first[0][0], second[0][0])


def test_split_is_deterministic_by_file_and_80_20():
    samples = [pipeline.Sample(f"im{i:02d}", None, None, 64, 64) for i in range(10)]
    train, val = pipeline.split_samples(samples, 0.2, seed=3)
    assert len(val) == 2 and len(train) == 8
    assert not {s.name for s in train} & {s.name for s in val}
    assert pipeline.split_samples(samples, 0.2, seed=3) == (train, val)
    assert pipeline.split_samples(samples, 0.2, seed=4) != (train, val)


def test_paired_size_mismatch_is_reported(tmp_path):
    root = paired_folder(tmp_path, n=1)
    tifffile.imwrite(root / "noisy" / "p0.tif", np.zeros((44, 40, 3), np.float32), photometric="rgb")
    cfg = DataConfig(mode="paired", noise="none", tile=16)
    with pytest.raises(AstroTFError, match="p0.tif: 44 x 40 px but its clean partner is 40 x 40"):
        pipeline.prepare_samples(root, cfg, tmp_path / "cache")


def test_detector_noise_gives_the_input_its_sigma_map_and_the_target_in_adu(electron_folder, tmp_path):
    from astrotf.config.data import DetectorNoiseConfig, StarMaskConfig
    from astrotf.noise_model import NoiseModel

    detector = DetectorNoiseConfig(gain=(2.0, 2.0), read_noise=(4.0, 4.0), exposure_ratio=(5.0, 5.0),
                                   hot_pixel_rate=(0.0, 0.0), cosmic_ray_rate=(0.0, 0.0))
    cfg = DataConfig(tile=32, batch_size=4, channels=1, noise="detector", crops_per_image=2, shuffle_buffer=4,
                     detector=detector, star_mask=StarMaskConfig(threshold_sigma=0.5, dilation=1, blur_sigma=0.0))
    samples = pipeline.prepare_samples(electron_folder, cfg, tmp_path / "cache")
    (noisy, sigma), (target, target_sigma), mask = next(iter(pipeline.make_dataset(samples, cfg, training=True)))
    noisy, sigma, target, target_sigma, mask = (np.asarray(a) for a in (noisy, sigma, target, target_sigma, mask))
    np.testing.assert_allclose(sigma, NoiseModel(2.0, 4.0).sigma_map(noisy), rtol=1e-5)
    np.testing.assert_allclose(target_sigma, NoiseModel(2.0, 4.0).sigma_map(target), rtol=1e-5)
    z = (noisy - target) / target_sigma  # the true sigma of the short exposure
    assert abs(z.mean()) < 0.1 and abs(z.std() - 1.0) < 0.1
    assert set(np.unique(mask)) <= {0.0, 1.0} and 0 < mask.mean() < 1


def test_detector_noise_refuses_negative_electrons(tmp_path):
    from astropy.io import fits

    (tmp_path / "neg").mkdir()
    fits.PrimaryHDU(np.full((40, 40), -1.0, np.float32)).writeto(tmp_path / "neg" / "a.fits")
    cfg = DataConfig(tile=32, channels=1, noise="detector")
    with pytest.raises(AstroTFError, match="a.fits.*electrons"):
        pipeline.prepare_samples(tmp_path / "neg", cfg, tmp_path / "cache")
