"""Heatmap decoding for the refiner (stage 3): argmax, sub-pixel refinement, flip test.

Coordinates follow ``model.codecs.coords``: pixel ``i`` has its centre at ``i`` in heatmaps,
crops and images alike. ``coords_hm`` are heatmap pixels; back to image pixels with
:func:`model.codecs.coords.crop_heatmap_to_image`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from model.keypoints import flip_permutation

# Heatmap values are clamped to this before the log (zeros and negatives occur in net outputs).
_LOG_FLOOR = 1e-10
# A Gaussian's maximum pixel is the nearest one, so a sound offset is at most half a pixel.
_MAX_OFFSET = 0.5


def _gather_hw(flat: torch.Tensor, ys: torch.Tensor, xs: torch.Tensor, width: int) -> torch.Tensor:
    """Values of ``flat [B, C, h*w]`` at integer ``(ys, xs) [B, C, K]``; returns ``[B, C, K]``."""
    return torch.gather(flat, 2, ys * width + xs)


def subpixel_offsets(heatmaps: torch.Tensor, xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
    """Sub-pixel offsets of local maxima by a second-order Taylor step on the log heatmap.

    This is DARK's refinement (Zhang et al., CVPR 2020) without the blur: for a Gaussian
    peak the log is exactly quadratic, so one Newton step from the integer maximum lands on
    the true centre. Maxima on the border or where the log is not concave get offset 0.

    Args:
        heatmaps: ``[B, C, h, w]`` heatmaps.
        xs: ``[B, C, K]`` integer column of each maximum (heatmap pixels).
        ys: ``[B, C, K]`` integer row of each maximum.

    Returns:
        ``[B, C, K, 2]`` offsets ``(dx, dy)`` in heatmap pixels, each in ``[-0.5, 0.5]``.
    """
    batch, channels, height, width = heatmaps.shape
    logs = torch.log(heatmaps.float().clamp_min(_LOG_FLOOR)).reshape(batch, channels, -1)
    if width < 3 or height < 3:
        return torch.zeros((*xs.shape, 2), device=heatmaps.device)
    xs, ys = xs.long(), ys.long()
    inside = (xs >= 1) & (xs <= width - 2) & (ys >= 1) & (ys <= height - 2)
    x0, y0 = xs.clamp(1, width - 2), ys.clamp(1, height - 2)

    def at(dy: int, dx: int) -> torch.Tensor:
        return _gather_hw(logs, y0 + dy, x0 + dx, width)

    centre = at(0, 0)
    gx = (at(0, 1) - at(0, -1)) / 2.0
    gy = (at(1, 0) - at(-1, 0)) / 2.0
    hxx = at(0, 1) - 2.0 * centre + at(0, -1)
    hyy = at(1, 0) - 2.0 * centre + at(-1, 0)
    hxy = (at(1, 1) - at(-1, 1) - at(1, -1) + at(-1, -1)) / 4.0
    det = hxx * hyy - hxy * hxy
    concave = (hxx < 0) & (det > 1e-12)
    safe_det = torch.where(concave, det, torch.ones_like(det))
    dx = -(hyy * gx - hxy * gy) / safe_det
    dy = -(hxx * gy - hxy * gx) / safe_det
    offsets = torch.stack([dx, dy], dim=-1).clamp(-_MAX_OFFSET, _MAX_OFFSET)
    return torch.where((inside & concave)[..., None], offsets, torch.zeros_like(offsets))


def decode_heatmaps(heatmaps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel maximum of heatmaps with sub-pixel refinement.

    Args:
        heatmaps: ``[N, 17, h, w]`` heatmaps (any device).

    Returns:
        ``coords_hm``: ``[N, 17, 2]`` float32 ``(x, y)`` in heatmap pixels;
        ``maxvals``: ``[N, 17]`` the maximum values (the keypoint scores).
    """
    num, channels, height, width = heatmaps.shape
    if num == 0 or height == 0 or width == 0:
        return (
            torch.zeros((num, channels, 2), device=heatmaps.device),
            torch.zeros((num, channels), device=heatmaps.device),
        )
    maxvals, index = heatmaps.reshape(num, channels, -1).max(dim=2)
    xs, ys = index % width, index // width
    coords = torch.stack([xs, ys], dim=-1).float()
    offsets = subpixel_offsets(heatmaps, xs[..., None], ys[..., None])[:, :, 0]
    coords = coords + torch.where((maxvals > 0)[..., None], offsets, torch.zeros_like(offsets))
    return coords, maxvals.float()


def flip_heatmaps_back(
    heatmaps_of_flipped_input: torch.Tensor, flip_pairs: Sequence[tuple[int, int]]
) -> torch.Tensor:
    """Map heatmaps predicted for a horizontally mirrored crop back to the unmirrored crop.

    Mirror the width axis and swap left/right channels. With the pixel-centre convention
    and crop width == stride * heatmap width, mirroring the crop (``torch.flip(crops, [-1])``)
    mirrors the heatmap exactly, so no one-pixel shift is needed.

    Args:
        heatmaps_of_flipped_input: ``[N, C, h, w]``.
        flip_pairs: channel pairs swapped by the mirror, e.g. ``model.keypoints.FLIP_PAIRS``.

    Returns:
        ``[N, C, h, w]`` heatmaps aligned with the original crop (average them with its own).
    """
    perm = flip_permutation(heatmaps_of_flipped_input.shape[1], flip_pairs)
    index = torch.as_tensor(perm, device=heatmaps_of_flipped_input.device)
    return torch.flip(heatmaps_of_flipped_input, dims=[-1])[:, index]
