"""Star catalogues for `astrotf evaluate`: CSV or a FITS table (astrotf's simulated fields' TRUTH)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from astrotf import metrics
from astrotf.errors import AstroTFError


def load_catalogue(path: str | os.PathLike) -> tuple[metrics.Catalogue, dict]:
    """Read a star catalogue: CSV with columns x, y, flux (optional kind, fwhm), or a FITS table.

    FITS: the ``TRUTH`` extension if there is one (as in astrotf's simulated fields), else the
    first table extension. x is the column and y the row, 0-based, pixel centres at integers.

    Returns
    -------
    catalogue : metrics.Catalogue
    psf : dict
        What the file says of the PSF: ``fwhm`` (median of a ``fwhm`` column, or the FITS header
        keyword ``FWHM``) and ``beta`` (header ``BETA``, Moffat index), where known.

    Raises
    ------
    astrotf.errors.AstroTFError
        One line naming the file: missing, unreadable, no table, or missing columns.
    """
    from astropy.io import ascii as astropy_ascii
    from astropy.io import fits
    from astropy.table import Table

    path = Path(path)
    if not path.is_file():
        raise AstroTFError(f"{path}: no such catalogue file (--stars)")
    psf: dict = {}
    name = path.name.lower()
    try:
        if name.endswith((".fits", ".fit", ".fts", ".fits.gz")):
            with fits.open(path) as hdul:
                tables = [h for h in hdul if isinstance(h, (fits.BinTableHDU, fits.TableHDU))]
                truth = next((h for h in tables if h.name == "TRUTH"), tables[0] if tables else None)
                if truth is None:
                    raise AstroTFError(f"{path}: no table extension (expected TRUTH) in this FITS file (--stars)")
                table = Table.read(truth)
                for header in (hdul[0].header, truth.header):
                    for key in ("FWHM", "BETA"):
                        if key in header:
                            psf[key.lower()] = float(header[key])
        else:
            table = astropy_ascii.read(path, format="csv")
    except AstroTFError:
        raise
    except Exception as err:  # noqa: BLE001 - any parser failure is one line for the user
        text = str(err).strip().splitlines()
        raise AstroTFError(f"{path}: cannot read the catalogue ({text[0] if text else type(err).__name__})") from err
    try:
        catalogue = metrics.Catalogue.from_table(table)
    except ValueError as err:
        raise AstroTFError(f"{path}: {err}") from err
    if "fwhm" in table.colnames:
        values = np.asarray(table["fwhm"], dtype=np.float64)
        if np.isfinite(values).any():
            psf["fwhm"] = float(np.nanmedian(values))
    return catalogue, psf
