"""Model names used by recipes and the CLI, mapped to their classes."""

from __future__ import annotations

from astrotf.models.nafnet import NAFNet
from astrotf.models.resunet import ResUNet
from astrotf.models.self2self import Self2Self

MODELS = {"resunet": ResUNet, "nafnet": NAFNet, "self2self": Self2Self}


def build_model(name: str, **kwargs):
    """Instantiate a registered model by name (``"resunet"``) with its constructor arguments."""
    if name not in MODELS:
        msg = f"Unknown model name. Expected one of {sorted(MODELS)}. Received: name={name!r}"
        raise ValueError(msg)
    return MODELS[name](**kwargs)
