"""astrotf: denoising of astronomical images without damaging the science in them.

Pipeline stages, one module each, imports flowing one way::

    io -> data -> models / losses -> train -> export -> infer -> evaluate -> cli
"""

__version__ = "0.1.0"
