"""Neighbor2Neighbor training on one noisy image (TDR's rule with a blind-spot-free network).

Neighbor2Neighbor (Huang et al. 2021) learns from the noisy image alone. Every 2×2 cell of a
training patch ``y`` gives two neighbouring pixels, drawn at random among the 8 ordered pairs
of horizontal or vertical neighbours, one to each of two half-resolution sub-images
``g1(y)`` and ``g2(y)``. Their noise is independent where the image's noise is independent
between pixels, while their signal differs only by the half-pixel gap, so the network learns
``f(g1(y)) ≈ g2(y)``. The regulariser ``γ · ||f(g1(y)) − g2(y) − (g1(f(y)) − g2(f(y)))||²``
closes that gap: ``f(y)``, the network on the whole patch (no gradient), shows how the signal
itself differs between the two sub-images. Both terms are means over the finite pixels of
``g2``, in the units of the model's fixed normalisation.

``[train] cell = 4`` (or 6, 8) takes the two pixels ``cell / 2`` apart in ``cell × cell`` cells
instead, for noise that is correlated between adjacent pixels (the network then learns on a grid
``cell`` times coarser than the one it is applied to).

The network is a :class:`astrotf.models.resunet.ResUNet` with ``normalization="fixed"``: the
offset and scale (median and ``scale_sigmas`` × MAD-sigma of the training image) are stored in
the model, which takes and returns the data's units. Unlike Self2Self it sees every pixel and
is deterministic, so one pass denoises a frame (Self2Self averages a dropout ensemble), and it
exports like any single-input denoiser (SavedModel, ONNX, and TensorRT from the ONNX file). Because it does see the
pixel it predicts, :mod:`astrotf.infer` runs the soft restore after it by default.

Everything else (the run folder, patches and flips, NaN handling, checkpoints, resume, Ctrl-C,
``--init``) is :mod:`astrotf.train.self2self`'s, selected by ``[train] method``.
"""

from __future__ import annotations

import numpy as np

from astrotf import runs
from astrotf.train import self2self

#: The ResUNet constructor arguments that ``init`` takes from its base model.
INIT_ARGUMENTS = ("depth", "base_filters", "activation", "normalization", "space_to_depth", "offset", "scale")

def cell_pairs(cell: int = 2) -> np.ndarray:
    """The ordered pairs ``(first, second)`` of pixel indices (row-major) in a ``cell × cell`` cell whose
    pixels lie ``cell / 2`` apart in a row or a column: ``2 · cell²`` pairs. For ``cell = 2`` they are the 8
    ordered pairs of horizontally or vertically adjacent pixels, Neighbor2Neighbor's own; a larger cell
    spaces the two pixels further apart, for noise that is correlated between neighbours."""
    half = cell // 2
    pairs = []
    for r in range(cell):
        for c in range(cell):
            pairs.append((r * cell + c, r * cell + (c + half) % cell))
            pairs.append((r * cell + c, ((r + half) % cell) * cell + c))
    return np.array(pairs, np.int32)


def cells(x, cell: int = 2):
    """``(B, H, W, C)`` -> ``(B, H/cell, W/cell, C, cell²)``: the pixels of every cell (row-major)."""
    import tensorflow as tf

    shape = tf.shape(x)
    b, h, w, c = shape[0], shape[1], shape[2], shape[3]
    x = tf.reshape(x, [b, h // cell, cell, w // cell, cell, c])
    return tf.reshape(tf.transpose(x, [0, 1, 3, 5, 2, 4]), [b, h // cell, w // cell, c, cell * cell])


def subsample_pair(seed, *images, cell: int = 2):
    """Neighbor2Neighbor's sub-images: for each image, ``(g1, g2)`` of shape ``(B, H/cell, W/cell, C)``,
    with one pair of :func:`cell_pairs` per cell drawn at random (seeded) and shared by all ``images``."""
    import tensorflow as tf

    table = cell_pairs(cell)
    pairs = tf.constant(table, tf.int32)
    split = [cells(x, cell) for x in images]
    choice = tf.gather(pairs, tf.random.stateless_uniform(tf.shape(split[0])[:4], seed, 0, len(table), tf.int32))
    return [(tf.gather(c, choice[..., 0], axis=-1, batch_dims=4), tf.gather(c, choice[..., 1], axis=-1, batch_dims=4))
            for c in split]


def make_train_step(model, optimizer, tcfg, offset: float, scale: float):
    """The compiled step ``(patches, valid, seed) -> loss``: seeded sub-image pairs, the
    Neighbor2Neighbor loss with weight ``tcfg.gamma`` on its regulariser, one Adam update."""
    import tensorflow as tf

    scale = np.float32(scale)
    gamma = np.float32(tcfg.gamma)

    @tf.function
    def train_step(y, valid_px, seed):
        fy = tf.stop_gradient(model(y, training=False))
        (g1, g2), (f1, f2), (_, v2) = subsample_pair(seed, y, fy, valid_px, cell=tcfg.cell)
        weight = v2 / tf.maximum(tf.reduce_sum(v2), 1.0)
        with tf.GradientTape() as tape:
            out = model(g1, training=True)
            error = (out - g2) / scale
            gap = (f1 - f2) / scale
            loss = tf.reduce_sum(weight * tf.square(error)) + gamma * tf.reduce_sum(weight * tf.square(error - gap))
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    return train_step


class Session(self2self.Session):
    """A one-image session whose previews show the deterministic network."""

    def preview(self, step: int) -> None:
        """``previews/step-NNNNNN.png``: noisy | residual (noisy − denoised, around the median) |
        denoised | finite-pixel mask, all three on the denoised patch's stretch: structure in the
        residual is signal the network took away."""
        out = np.asarray(self.model(self.preview_x, training=False))
        residual = np.median(self.preview_x) + (self.preview_x - out)
        runs.write_preview(self.record.dir / "previews" / f"step-{step:06d}.png", self.preview_x, residual, out,
                           self.preview_valid, linear=True)
