"""Exposure of dark photos: measured from each image's own pixels, corrected before the networks.

What hurts a dark photo is less its dimness (MoveNet copes with it) than the sensor noise
that comes with it, which brightening only amplifies (docs/evaluation.md, "Crowds"). So a dark image is
denoised when it is noisy, and brightened only when almost no signal is left.

Numpy and Pillow only, so the decode tasks that call it stay free of torch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFilter

# Rec. 601 luma weights of R, G, B.
LUMA_WEIGHTS = (0.299, 0.587, 0.114)
# Mean and percentiles of luma are taken on every this-many-th pixel per axis: cheap, enough.
LUMA_STRIDE = 4
# Measured on the real crowd set's low-light copies and its real dark frames (docs/evaluation.md,
# "Crowds"): a 1-pixel Gaussian blur of a noisy dark photo found the most people; clean dim
# photos (noise 2.8-3.5 grey levels) lose a little from it, the low-light copies (5.7-8.7)
# gain; brightening helped only frames whose brightest percent stays under 6 % luma.
DENOISE_RADIUS = 1.0
NOISY_ABOVE = 4.0
BLACK_BELOW = 0.06
BRIGHT_TARGET = 0.5
MAX_GAIN = 32.0


@dataclass(frozen=True)
class Exposure:
    """What :func:`correct_exposure` measured and did to one image."""

    luma: float  # mean luma in [0, 1] of the image as decoded
    noise: float | None  # estimated noise, grey levels of luma after any gain; None: not dark
    denoised: bool  # blurred as a noisy dark image
    gain: float  # brightness gain applied (1: none)


def luma_of(image_rgb: np.ndarray, stride: int = LUMA_STRIDE) -> np.ndarray:
    """Rec. 601 luma in ``[0, 1]`` of every ``stride``-th pixel of ``[H, W, 3]`` uint8 RGB."""
    pixels = np.asarray(image_rgb)[::stride, ::stride].astype(np.float32)
    return pixels @ (np.asarray(LUMA_WEIGHTS, np.float32) / 255.0)


def noise_sigma(luma: np.ndarray) -> float:
    """Standard deviation of white noise in a full-resolution luma image, in its own units.

    Immerkær's estimator ("Fast noise variance estimation", 1996): the mean absolute response
    to the difference of two Laplacians, which cancels smooth image content, times
    ``sqrt(pi / 2) / 6``. Edges and texture add to it, so on a bright detailed photo it
    overestimates; it is only read on dark ones, whose content has little contrast.
    """
    x = np.asarray(luma, np.float64)
    if min(x.shape) < 3:
        return 0.0
    response = (
        x[:-2, :-2] - 2 * x[:-2, 1:-1] + x[:-2, 2:]
        - 2 * x[1:-1, :-2] + 4 * x[1:-1, 1:-1] - 2 * x[1:-1, 2:]
        + x[2:, :-2] - 2 * x[2:, 1:-1] + x[2:, 2:]
    )  # fmt: skip
    return float(np.sqrt(np.pi / 2.0) * np.abs(response).mean() / 6.0)


def correct_exposure(
    image_rgb: np.ndarray,
    dark_below: float,
    denoise_radius: float = DENOISE_RADIUS,
    noisy_above: float = NOISY_ABOVE,
    black_below: float = BLACK_BELOW,
    bright_target: float = BRIGHT_TARGET,
    max_gain: float = MAX_GAIN,
) -> tuple[np.ndarray, Exposure]:
    """A dark photo made easier for the networks; any other photo untouched.

    An image whose mean luma is below ``dark_below`` is dark. When even its brightest percent
    is below ``black_below`` (almost no signal left) it is brightened by the gain that lifts
    that percent to ``bright_target`` (at most ``max_gain``). Then, when its noise (after that
    gain) is above ``noisy_above`` grey levels, it is denoised with a Gaussian blur of
    ``denoise_radius`` pixels.

    Args:
        image_rgb: ``[H, W, 3]`` uint8 RGB.
        dark_below: mean luma in ``[0, 1]`` under which an image counts as dark.
        denoise_radius: Gaussian blur radius (pixels) of a noisy dark image.
        noisy_above: noise (grey levels of luma, :func:`noise_sigma`) above which a dark
            image is denoised.
        black_below: 99th-percentile luma under which a dark image is brightened.
        bright_target: what that percentile becomes.
        max_gain: the largest gain applied.

    Returns:
        ``(image, exposure)``: the image to use (the input itself when untouched).
    """
    luma = luma_of(image_rgb)
    mean = float(luma.mean())
    if mean >= dark_below:
        return image_rgb, Exposure(mean, None, False, 1.0)
    image = image_rgb
    brightest = float(np.percentile(luma, 99))
    gain = 1.0
    if brightest < black_below:
        gain = float(min(max_gain, bright_target / max(brightest, 1.0 / 255.0)))
        image = np.clip(image.astype(np.float32) * gain, 0.0, 255.0).round().astype(np.uint8)
    noise = noise_sigma(luma_of(image, stride=1) * 255.0)
    denoised = noise > noisy_above
    if denoised:
        image = np.asarray(Image.fromarray(image).filter(ImageFilter.GaussianBlur(denoise_radius)))
    return image, Exposure(mean, noise, denoised, gain)
