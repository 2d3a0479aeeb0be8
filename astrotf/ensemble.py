"""Self2Self ensemble prediction (TDR eq. 4): average of dropout-sampled predictions
of randomly re-masked inputs.

Each ensemble member is one call of the network (its dropout layers always sample)
on ``B_i · y`` with a fresh Bernoulli mask ``B_i``. Two averages are offered:

* ``"dropped"`` (default): each pixel is averaged over the members in which it was
  dropped, i.e. where the network *predicted* it from its neighbours — exactly the
  outputs that training constrains (eq. 3). A pixel never dropped in any member falls
  back to the plain average.
* ``"all"``: the plain mean over all members at every pixel, as written in eq. 4.

Masks are drawn from a NumPy generator seeded by ``seed``; with the model's dropout
seeded too (:func:`keras.utils.set_random_seed` before loading), a run is
reproducible. :func:`with_ensemble` puts the ensemble into a loaded Self2Self model.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from astrotf.constants import SELF2SELF_KEEP_PROB
from astrotf.errors import AstroTFError

if TYPE_CHECKING:
    from astrotf.backends import LoadedModel

AVERAGES = ("dropped", "all")


def block_keep_mask(rng: np.random.Generator, shape: tuple, keep_prob: float, block: int = 1) -> np.ndarray:
    """Bernoulli keep mask (1 = kept) drawn per ``block × block`` pixel block, float32 of ``shape`` (N, H, W, C).

    ``block = 1`` is the per-pixel mask of eq. 2. Larger blocks hide a pixel's immediate
    neighbours with it, so noise correlated over a few pixels cannot be predicted from them.
    """
    n, h, w, c = shape
    small = rng.random((n, -(-h // block), -(-w // block), c), dtype=np.float32) < keep_prob
    if block > 1:
        small = np.repeat(np.repeat(small, block, axis=1), block, axis=2)[:, :h, :w]
    return small.astype(np.float32)


def ensemble_predictor(call: Callable[[np.ndarray, np.ndarray], np.ndarray], *, samples: int, keep_prob: float,
                       seed: int = 0, average: str = "dropped", mask_block: int = 1) -> Callable[[np.ndarray], np.ndarray]:
    """Wrap ``call(x, mask) -> prediction`` into ``predict(batch) -> ensemble mean``.

    Parameters
    ----------
    call : callable
        One stochastic network pass on a batch (N, H, W, C) and its keep mask.
    samples : int
        Ensemble members N (>= 1).
    keep_prob : float
        Bernoulli keep probability of the masks (the training value).
    seed : int
        Seed of the masks.
    average : {"dropped", "all"}
        See the module docstring.
    mask_block : int
        Masks drawn per block of ``mask_block`` × ``mask_block`` pixels (the training value; 1 = per pixel).

    Returns
    -------
    callable
        ``predict(batch)`` for :func:`astrotf.infer.denoise_tiled`.
    """
    if not (isinstance(samples, int) and samples >= 1):
        msg = f"`samples` must be an integer >= 1. Received: samples={samples!r}"
        raise ValueError(msg)
    if not 0.0 < keep_prob < 1.0:
        msg = f"`keep_prob` must be in (0, 1). Received: keep_prob={keep_prob!r}"
        raise ValueError(msg)
    if average not in AVERAGES:
        msg = f"`average` must be one of {AVERAGES}. Received: average={average!r}"
        raise ValueError(msg)
    rng = np.random.default_rng(seed)

    def predict(batch: np.ndarray) -> np.ndarray:
        batch = np.asarray(batch, np.float32)
        finite = np.isfinite(batch)
        if not finite.all():  # no data (off-disk): never given to the network, as in training
            batch = np.where(finite, batch, np.float32(0.0))
        total = np.zeros(batch.shape, np.float64)
        dropped_sum = np.zeros(batch.shape, np.float64)
        dropped_n = np.zeros(batch.shape, np.float64)
        for _ in range(samples):
            keep = block_keep_mask(rng, batch.shape, keep_prob, mask_block) * finite
            pred = np.asarray(call(batch, keep), np.float64)
            total += pred
            if average == "dropped":
                dropped_sum += (1.0 - keep) * pred
                dropped_n += 1.0 - keep
        mean = total / samples
        if average == "all":
            return mean.astype(np.float32)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(dropped_n > 0, dropped_sum / dropped_n, mean).astype(np.float32)

    return predict


def with_ensemble(model: LoadedModel, samples: int, seed: int = 0, average: str = "dropped") -> LoadedModel:
    """A Self2Self model whose ``predict`` is the mean of ``samples`` dropout passes on
    re-masked inputs (TDR eq. 4, :func:`astrotf.ensemble.ensemble_predictor`), seeded.

    Raises
    ------
    AstroTFError
        If ``model`` is not a Self2Self model.
    """
    if model.sample is None:
        raise AstroTFError(f"{model.name}: --samples needs a Self2Self model (this one is deterministic)")
    if model.reseed is not None:
        model.reseed(seed)
    ensemble = model.metadata.get("ensemble", {})
    keep_prob = float(ensemble.get("keep_prob", SELF2SELF_KEEP_PROB))
    predict = ensemble_predictor(model.sample, samples=samples, keep_prob=keep_prob,
                                 seed=seed, average=average, mask_block=int(ensemble.get("mask_block", 1)))
    return dataclasses.replace(model, predict=predict, masks_nonfinite=True)
