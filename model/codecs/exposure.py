"""Exposure of dark photos: measured from each image's own luma, corrected before the networks.

Numpy and Pillow only, so the decode tasks that call it stay free of torch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFilter

# Rec. 601 luma weights of R, G, B.
LUMA_WEIGHTS = (0.299, 0.587, 0.114)
# Luma is measured on every this-many-th pixel per axis: enough for its statistics, and cheap.
LUMA_STRIDE = 4
# Measured on the real crowd set's low-light copies and real dark frames (README, "Crowds"):
# a 1-pixel Gaussian blur of a dark photo found the most people; brightening helped only
# frames whose brightest percent stays under 6 % luma (near-black), lifted to 50 %.
DENOISE_RADIUS = 1.0
BLACK_BELOW = 0.06
BRIGHT_TARGET = 0.5
MAX_GAIN = 32.0


@dataclass(frozen=True)
class Exposure:
    """What :func:`correct_exposure` measured and did to one image."""

    mean_luma: float  # in [0, 1], of the image as decoded
    corrected: bool  # denoised (and perhaps brightened) as a dark image
    gain: float  # brightness gain applied (1: none)


def luma_of(image_rgb: np.ndarray) -> np.ndarray:
    """Rec. 601 luma in ``[0, 1]`` of every ``LUMA_STRIDE``-th pixel of ``[H, W, 3]`` uint8."""
    pixels = np.asarray(image_rgb)[::LUMA_STRIDE, ::LUMA_STRIDE].astype(np.float32)
    return pixels @ (np.asarray(LUMA_WEIGHTS, np.float32) / 255.0)


def correct_exposure(
    image_rgb: np.ndarray,
    dark_below: float,
    denoise_radius: float = DENOISE_RADIUS,
    black_below: float = BLACK_BELOW,
    bright_target: float = BRIGHT_TARGET,
    max_gain: float = MAX_GAIN,
) -> tuple[np.ndarray, Exposure]:
    """A dark photo made easier for the networks; any other photo untouched.

    What hurts a dark photo is less the dimness (MoveNet copes with it) than the sensor's
    noise, which brightening only amplifies (README, "Crowds"). So an image whose mean luma
    is below ``dark_below`` is denoised with a Gaussian blur of ``denoise_radius`` pixels;
    only when even its brightest percent is below ``black_below`` (almost no signal left)
    is it also brightened, by the gain that lifts that percent to ``bright_target`` (at
    most ``max_gain``).

    Args:
        image_rgb: ``[H, W, 3]`` uint8 RGB.
        dark_below: mean luma in ``[0, 1]`` under which an image counts as dark.
        denoise_radius: Gaussian blur radius (pixels) of a dark image.
        black_below: 99th-percentile luma under which a dark image is also brightened.
        bright_target: what that percentile becomes.
        max_gain: the largest gain applied.

    Returns:
        ``(image, exposure)``: the image to use (the input itself when untouched).
    """
    luma = luma_of(image_rgb)
    mean = float(luma.mean())
    if mean >= dark_below:
        return image_rgb, Exposure(mean, False, 1.0)
    image = np.asarray(Image.fromarray(image_rgb).filter(ImageFilter.GaussianBlur(denoise_radius)))
    brightest = float(np.percentile(luma, 99))
    gain = 1.0
    if brightest < black_below:
        gain = float(min(max_gain, bright_target / max(brightest, 1.0 / 255.0)))
        image = np.clip(image.astype(np.float32) * gain, 0.0, 255.0).round().astype(np.uint8)
    return image, Exposure(mean, True, gain)
