"""Trainers, one module each, every one a small loop on top of :mod:`astrotf.runs`.

* :func:`train` (:mod:`astrotf.train.resunet`): image-to-image denoisers on a data folder
  (AstroPics §2.6).
* :func:`train_pix2pix` (:mod:`astrotf.train.pix2pix`): the enhanced Pix2Pix GAN on a data folder
  (Xu §3–4), its alternating step in :mod:`astrotf.train.gan`.
* :func:`train_self2self` (:mod:`astrotf.train.self2self`): one noisy image (TDR), by Self2Self or,
  with ``[train] method = "neighbor2neighbor"``, by Neighbor2Neighbor (:mod:`astrotf.train.neighbor2neighbor`).

:func:`load_run` and :class:`TrainingInterrupted` are :mod:`astrotf.runs`'s, named here too.
"""

from __future__ import annotations

from astrotf.runs import TrainingInterrupted, load_run
from astrotf.train.pix2pix import train_pix2pix
from astrotf.train.resunet import train
from astrotf.train.self2self import train_self2self

__all__ = ["TrainingInterrupted", "load_run", "train", "train_pix2pix", "train_self2self"]
