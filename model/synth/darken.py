"""Low-light copies of real photos: less light, and the noise a sensor adds to what is left.

To measure how DetPose copes with dark photos, whose labelled examples are rare, a real photo
is re-exposed as if it had received ``1 / stops_factor`` of its light. Its sRGB values are
linearised (gamma 2.2), scaled down, turned into photo-electrons of a sensor whose full well
holds ``full_well`` electrons (Poisson shot noise) plus Gaussian read noise, and encoded back
to sRGB. The labels do not move. Deterministic for a seed.
"""

from __future__ import annotations

import numpy as np

# sRGB is close to a 2.2 power law; exact enough for simulated exposure.
SRGB_GAMMA = 2.2
# A small sensor's full well and read noise, in electrons: at 1/12 of the light a mid-grey
# pixel collects about 10 electrons, so shot noise dominates as in a real dark frame.
FULL_WELL_ELECTRONS = 600.0
READ_NOISE_ELECTRONS = 3.0


def darken(
    image_rgb: np.ndarray,
    light_fraction: float,
    seed: int,
    full_well: float = FULL_WELL_ELECTRONS,
    read_noise: float = READ_NOISE_ELECTRONS,
) -> np.ndarray:
    """A low-light copy of ``[H, W, 3]`` uint8 RGB that received ``light_fraction`` of its light.

    Args:
        image_rgb: the photo.
        light_fraction: in ``(0, 1]``: e.g. 1/12 (about 3.6 stops darker) or 1/40.
        seed: the noise's seed.
        full_well: electrons of a pixel at full scale.
        read_noise: standard deviation of the read noise, in electrons.

    Returns:
        ``[H, W, 3]`` uint8 RGB.
    """
    if not 0.0 < light_fraction <= 1.0:
        raise ValueError(f"got light_fraction={light_fraction}; expected 0 < light_fraction <= 1")
    rng = np.random.default_rng(seed)
    linear = (np.asarray(image_rgb, np.float64) / 255.0) ** SRGB_GAMMA * light_fraction
    electrons = rng.poisson(linear * full_well) + rng.normal(0.0, read_noise, linear.shape)
    encoded = np.clip(electrons / full_well, 0.0, 1.0) ** (1.0 / SRGB_GAMMA)
    return np.round(encoded * 255.0).astype(np.uint8)
