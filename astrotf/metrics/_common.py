"""Private helpers shared by the metrics modules."""

from __future__ import annotations

import numpy as np


def float_pair(reference, image, names=("reference", "image")) -> tuple[np.ndarray, np.ndarray]:
    """Two float64 arrays of one shape, or a ValueError naming both shapes."""
    a = np.asarray(reference, dtype=np.float64)
    b = np.asarray(image, dtype=np.float64)
    if a.shape != b.shape:
        msg = (f"`{names[0]}` and `{names[1]}` must have the same shape. "
               f"Received: {names[0]}.shape={a.shape}, {names[1]}.shape={b.shape}")
        raise ValueError(msg)
    return a, b
