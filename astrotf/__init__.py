"""astrotf: denoising of astronomical images without damaging the science in them.

Stages, imports flowing one way (``tests/test_layout.py`` checks it)::

    io -> config -> data -> models / losses -> train -> export
       -> infer -> backends -> restore / evaluate -> batch -> api -> cli

``astrotf.denoise`` and ``astrotf.Denoiser`` (from :mod:`astrotf.api`) are the Python entry
point; they are imported on first use, so ``import astrotf`` stays light.
"""

__version__ = "0.1.0"

__all__ = ["Denoiser", "__version__", "denoise"]


def __getattr__(name: str):
    if name in ("denoise", "Denoiser"):
        from astrotf import api

        return getattr(api, name)
    msg = f"module 'astrotf' has no attribute {name!r}"
    raise AttributeError(msg)
