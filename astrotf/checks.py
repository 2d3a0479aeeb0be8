"""Checks of an input against the model and the restore asked for (no TensorFlow).

* :func:`unit_warning`: a magnetogram model given a frame whose ``BUNIT`` is not a magnetic
  field (Gauss, Mx/cm²) would treat its numbers as Gauss: the warning names both units.
* :func:`check_restore_threshold`: ``R`` below the data's quantisation step cannot be honoured
  other than by setting back every changed pixel, so it is refused.
"""

from __future__ import annotations

from astrotf.constants import MAGNETOGRAM_UNITS
from astrotf.errors import AstroTFError


def unit_warning(header, metadata: dict, model_name: str) -> str | None:
    """A one-line warning when a model trained on a magnetogram gets a FITS ``BUNIT`` that is not one.

    Parameters
    ----------
    header : mapping or None
        The input's FITS header (``io.ImageInfo.header``).
    metadata : dict
        The model's ``metadata.json`` (``training.data.bunit``: the units of its training image).
    model_name : str

    Returns
    -------
    str or None
        None when the model was not trained on a magnetogram, the input has no ``BUNIT``, or the
        unit is Gauss or Mx/cm².
    """
    expected = str(((metadata.get("training") or {}).get("data") or {}).get("bunit") or "")
    if expected.strip().lower() not in MAGNETOGRAM_UNITS or header is None or "BUNIT" not in header:
        return None
    unit = str(header["BUNIT"]).strip()
    if unit.lower() in MAGNETOGRAM_UNITS:
        return None
    return (f"BUNIT is {unit!r}, neither Gauss nor Mx/cm^2; model {model_name} expects {expected} "
            f"(the units of its training magnetogram): convert the data first, or the result is wrong")


def check_restore_threshold(threshold: float, step: float | None) -> None:
    """Refuse a restore threshold ``R`` below the quantisation step of the data.

    Raises
    ------
    AstroTFError
        If ``step`` is a positive number and ``threshold < step``.
    """
    if step is not None and step > 0 and threshold < step:
        msg = (f"restore R={threshold:.4g} is below the data's quantisation step {step:.4g}: any change would be "
               f"set back; use R >= {step:.4g}")
        raise AstroTFError(msg)
