"""Numbers that more than one stage relies on, named once.

Importing this module imports nothing else, so the configuration and the CLI can use it
before TensorFlow is loaded.
"""

from __future__ import annotations

#: Scale of the median absolute deviation that gives the standard deviation of a Gaussian,
#: ``1 / Φ⁻¹(3/4)``.
MAD_TO_SIGMA = 1.482602218505602

#: Values of a magnetogram, in Gauss, whose histogram is dominated by noise: the TDR paper fits
#: its noise Gaussian over this range (§3).
MAGNETOGRAM_NOISE_RANGE_G = (-20.0, 20.0)

#: ``BUNIT`` values of a magnetic field (lower case): such a frame is a magnetogram.
MAGNETOGRAM_UNITS = ("gauss", "g", "mx/cm^2", "mx cm^-2", "mx/cm2")

#: Self2Self Bernoulli keep probability p of TDR eq. 2, in training and in the ensemble.
SELF2SELF_KEEP_PROB = 0.7

#: Dropout passes averaged by the Self2Self ensemble at inference (TDR eq. 4).
SELF2SELF_SAMPLES = 16

#: ``normalization`` values of a denoiser (ResUNet, NAFNet, Pix2Pix) that takes linear data in physical
#: units: per-tile median / MAD, or one fixed offset and scale.
LINEAR_NORMALIZATIONS = ("background", "fixed")

#: Names of the serving signature's image input and denoised output (SavedModel, ONNX, TF Serving).
INPUT_NAME = "image"
OUTPUT_NAME = "denoised"

#: Name of the second input of a noise-conditioned model: the per-pixel noise σ map, shaped like the image.
NOISE_INPUT_NAME = "noise_sigma"
