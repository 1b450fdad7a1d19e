"""Compact stage-1 outputs: keypoint peaks and PAF line-integral scores, batched on the device.

Stage 1 ships these (a few KiB per image) instead of full heatmaps and part affinity
fields. Coordinates are heatmap pixels (pixel ``i`` has its centre at ``i``); the caller
maps them to image pixels (``model.codecs.coords``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from model.codecs.coords import pixels_to_grid
from model.codecs.heatmaps import subpixel_offsets
from model.keypoints import SKELETON

_LIMB_A = [a for a, _ in SKELETON]
_LIMB_B = [b for _, b in SKELETON]


def _max_3x3(maps: torch.Tensor) -> torch.Tensor:
    """3x3 neighbourhood maximum of ``[B, C, h, w]`` maps (same as ``max_pool2d(3, 1, 1)``).

    Separable shifts: on CPU ``max_pool2d`` with stride 1 is about 10x slower than this.
    """
    padded = F.pad(maps, (1, 1, 1, 1), value=float("-inf"))
    rows = torch.maximum(
        torch.maximum(padded[..., :, :-2], padded[..., :, 1:-1]), padded[..., :, 2:]
    )
    return torch.maximum(torch.maximum(rows[..., :-2, :], rows[..., 1:-1, :]), rows[..., 2:, :])


def extract_peaks(heatmaps: torch.Tensor, threshold: float, top_k: int) -> torch.Tensor:
    """Local maxima of keypoint heatmaps: 3x3 max-pool suppression, threshold, top-K per channel.

    Args:
        heatmaps: ``[B, 17, h, w]`` keypoint heatmaps.
        threshold: a peak needs at least this value (and more than 0).
        top_k: peaks kept per keypoint type, highest first.

    Returns:
        ``[B, 17, top_k, 3]`` float32 ``(x, y, score)`` in heatmap pixels, sub-pixel refined;
        unused slots are all zeros (score 0 marks padding).
    """
    batch, channels, height, width = heatmaps.shape
    out = torch.zeros((batch, channels, top_k, 3), device=heatmaps.device)
    k = min(top_k, height * width)
    if batch == 0 or k == 0:
        return out
    hm = heatmaps.float()
    pooled = _max_3x3(hm)
    is_peak = (hm == pooled) & (hm >= threshold) & (hm > 0)
    masked = torch.where(is_peak, hm, torch.full_like(hm, -1.0))
    scores, index = masked.reshape(batch, channels, -1).topk(k, dim=2)
    xs, ys = index % width, index // width
    coords = torch.stack([xs, ys], dim=-1).float() + subpixel_offsets(hm, xs, ys)
    valid = (scores > 0)[..., None]
    peaks = torch.cat([coords, scores[..., None]], dim=-1)
    out[:, :, :k] = torch.where(valid, peaks, torch.zeros_like(peaks))
    return out


def paf_limb_scores(
    pafs: torch.Tensor,
    peaks: torch.Tensor,
    num_samples: int = 10,
    min_sample_score: float = 0.05,
    min_fraction: float = 0.8,
    length_prior: float = 0.5,
) -> torch.Tensor:
    """PAF line integral between every candidate pair of peaks, for every limb (OpenPose's score).

    For limb ``l`` from keypoint ``a = SKELETON[l][0]`` to ``b = SKELETON[l][1]``, the field
    (channels ``2l, 2l+1``) is sampled bilinearly at ``num_samples`` points on the segment
    from peak ``i`` of ``a`` to peak ``j`` of ``b`` and projected on the segment's direction.
    The score is the mean projection, minus ``1 - length_prior * h / length`` for segments
    longer than ``length_prior`` of the heatmap height; a pair whose samples exceed
    ``min_sample_score`` less than ``min_fraction`` of the time scores 0.

    Args:
        pafs: ``[B, 38, h, w]`` part affinity fields (x, y unit-vector components per limb).
        peaks: ``[B, 17, K, 3]`` from :func:`extract_peaks` (same heatmap pixels).
        num_samples: points sampled along each candidate segment.
        min_sample_score: a sample "supports" the pair above this projection.
        min_fraction: fraction of supporting samples a pair needs.
        length_prior: limbs longer than this fraction of the heatmap height are penalised.

    Returns:
        ``[B, 19, K, K]`` float32 scores in ``[0, 1]`` (0: no connection, padding, or a
        zero-length pair).
    """
    batch, _, height, width = pafs.shape
    num_limbs, top_k = len(SKELETON), peaks.shape[2]
    if batch == 0 or top_k == 0:
        return torch.zeros((batch, num_limbs, top_k, top_k), device=pafs.device)
    peaks = peaks.float()
    start = peaks[:, _LIMB_A][:, :, :, None, :]  # [B, L, K, 1, 3]
    end = peaks[:, _LIMB_B][:, :, None, :, :]  # [B, L, 1, K, 3]
    delta = end[..., :2] - start[..., :2]  # [B, L, K, K, 2]
    length = delta.norm(dim=-1)
    unit = delta / length.clamp_min(1e-6)[..., None]
    steps = torch.linspace(0.0, 1.0, num_samples, device=pafs.device)
    points = start[..., None, :2] + steps[:, None] * delta[..., None, :]  # [B, L, K, K, S, 2]
    grid = pixels_to_grid(points, (height, width)).reshape(batch * num_limbs, -1, 1, 2)
    fields = pafs.float().reshape(batch * num_limbs, 2, height, width)
    sampled = F.grid_sample(
        fields, grid, mode="bilinear", padding_mode="zeros", align_corners=False
    )
    sampled = sampled.reshape(batch, num_limbs, 2, top_k, top_k, num_samples)
    projection = (sampled * unit.permute(0, 1, 4, 2, 3)[..., None]).sum(dim=2)  # [B, L, K, K, S]
    penalty = (length_prior * height / length.clamp_min(1e-6) - 1.0).clamp_max(0.0)
    score = projection.mean(dim=-1) + penalty
    support = (projection > min_sample_score).float().mean(dim=-1)
    valid = (start[..., 2] > 0) & (end[..., 2] > 0) & (length > 1e-6) & (support >= min_fraction)
    return torch.where(valid, score.clamp(0.0, 1.0), torch.zeros_like(score))
