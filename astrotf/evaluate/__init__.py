"""Scoring of a denoised image against its noisy input, a clean reference and a star catalogue.

`evaluate` gathers the measures of `astrotf.metrics` into one `Evaluation` — noise in physical
units, what changed and at which spatial frequencies, fidelity to a reference, and star recovery
the way the Astro U-net paper reports it (TPR, false positives, precision, F1, flux error, SNR
gain) — `format_table` prints it and `write_plots` draws what a person should look at: the
residual map, histograms with their Gaussian fits, power spectra and flux error against flux.
No TensorFlow import (``astrotf evaluate`` scores outputs of any denoiser).

Modules: :mod:`~astrotf.evaluate.scores` (the measures and the table),
:mod:`~astrotf.evaluate.catalogue` (star catalogues), :mod:`~astrotf.evaluate.plots`,
:mod:`~astrotf.evaluate.files` (the command's files and JSON record) and
:mod:`~astrotf.evaluate.infer_report` (the lines of ``astrotf infer --report``).

References
----------
Vojtekova et al. 2020, MNRAS 503, 3204, §4 (Astro U-net); TDR (Self2Self train-denoise-restore),
Figs. 2-4; ../shared/BENCHMARKS.md of the project workspace.
"""

from astrotf.evaluate.catalogue import load_catalogue
from astrotf.evaluate.files import evaluate_files, write_json
from astrotf.evaluate.plots import write_plots
from astrotf.evaluate.scores import (QUANTITIES, Evaluation, EvaluationOptions, evaluate, format_table,
                                     to_jsonable)

__all__ = ["QUANTITIES", "Evaluation", "EvaluationOptions", "evaluate", "evaluate_files", "format_table",
           "load_catalogue", "to_jsonable", "write_json", "write_plots"]
