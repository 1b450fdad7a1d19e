"""Training targets: Gaussian keypoint heatmaps and part affinity fields.

Coordinates are in pixels of the target map itself (``coords_hm``), pixel ``i`` centred at
``i``. Map image or crop coordinates there with :func:`model.codecs.coords.scale_affine` or
:func:`model.codecs.coords.input_to_heatmap`.
"""

from __future__ import annotations

import numpy as np
import torch

from model.keypoints import LIMB_TRIPLETS, SKELETON


def gaussian_heatmaps(
    kpts_hm_xy: np.ndarray, weights: np.ndarray, out_hw: tuple[int, int], sigma: float
) -> torch.Tensor:
    """One Gaussian per labelled keypoint; persons overlapping in a channel take the maximum.

    Args:
        kpts_hm_xy: ``[P, K, 2]`` keypoints in heatmap pixels.
        weights: ``[P, K]``; keypoints with weight ``<= 0`` draw nothing.
        out_hw: heatmap ``(height, width)``.
        sigma: Gaussian std in heatmap pixels.

    Returns:
        ``[K, H, W]`` float32 maps in ``[0, 1]``; exactly 1 where a keypoint sits on a pixel centre.
    """
    kpts = torch.as_tensor(np.asarray(kpts_hm_xy, dtype=np.float64)).reshape(
        -1, np.shape(kpts_hm_xy)[-2], 2
    )
    present = torch.as_tensor(np.asarray(weights)).reshape(kpts.shape[:2]) > 0
    height, width = out_hw
    ys = torch.arange(height, dtype=torch.float64)[:, None]
    xs = torch.arange(width, dtype=torch.float64)[None, :]
    dx2 = (xs[None, None] - kpts[..., 0, None, None]) ** 2  # [P, K, 1, W]
    dy2 = (ys[None, None] - kpts[..., 1, None, None]) ** 2  # [P, K, H, 1]
    maps = torch.exp(-(dx2 + dy2) / (2.0 * sigma**2)) * present[..., None, None]
    if maps.shape[0] == 0:
        return torch.zeros((kpts.shape[1], height, width), dtype=torch.float32)
    return maps.amax(dim=0).float()


def paf_targets(
    kpts_hm_xy: np.ndarray,
    weights: np.ndarray,
    out_hw: tuple[int, int],
    limb_width: float,
    limbs: tuple[tuple[int, int], ...] = SKELETON,
) -> torch.Tensor:
    """Part affinity fields (Cao et al.): the unit vector along each limb near the limb.

    A pixel is on a limb when its projection falls on the segment and its distance from the
    segment's line is at most ``limb_width``. Where limbs of several persons overlap the
    vectors are averaged.

    Args:
        kpts_hm_xy: ``[P, K, 2]`` keypoints in map pixels.
        weights: ``[P, K]``; a limb is drawn when both its ends have weight ``> 0``.
        out_hw: map ``(height, width)``.
        limb_width: half-width of a limb in map pixels.
        limbs: ``L`` keypoint index pairs ``(from, to)``.

    Returns:
        ``[2L, H, W]`` float32; channels ``2l, 2l + 1`` are ``(x, y)`` of limb ``l``.
    """
    kpts = torch.as_tensor(np.asarray(kpts_hm_xy, dtype=np.float64)).reshape(
        -1, np.shape(kpts_hm_xy)[-2], 2
    )
    present = torch.as_tensor(np.asarray(weights)).reshape(kpts.shape[:2]) > 0
    height, width = out_hw
    out = torch.zeros((2 * len(limbs), height, width), dtype=torch.float64)
    if kpts.shape[0] == 0:
        return out.float()
    ys, xs = torch.meshgrid(
        torch.arange(height, dtype=torch.float64),
        torch.arange(width, dtype=torch.float64),
        indexing="ij",
    )
    for l_idx, (a, b) in enumerate(limbs):
        both = present[:, a] & present[:, b]
        vec = kpts[:, b] - kpts[:, a]  # [P, 2]
        length = vec.norm(dim=1)
        valid = both & (length > 1e-6)
        if not valid.any():
            continue
        unit = vec[valid] / length[valid, None]  # [V, 2]
        start = kpts[valid, a]
        px = xs[None] - start[:, 0, None, None]
        py = ys[None] - start[:, 1, None, None]
        along = px * unit[:, 0, None, None] + py * unit[:, 1, None, None]
        across = (px * unit[:, 1, None, None] - py * unit[:, 0, None, None]).abs()
        on = (
            (along >= 0) & (along <= length[valid, None, None]) & (across <= limb_width)
        )  # [V, H, W]
        count = on.sum(dim=0).clamp(min=1)
        out[2 * l_idx] = (on * unit[:, 0, None, None]).sum(dim=0) / count
        out[2 * l_idx + 1] = (on * unit[:, 1, None, None]).sum(dim=0) / count
    return out.float()


def num_association_channels(structure_loss: str) -> int:
    """Extra heatmap channels of a structure-loss mode: the skeleton pairs and limb triplets
    for ``'associations'`` (``M* - M``), none otherwise."""
    return len(SKELETON) + len(LIMB_TRIPLETS) if structure_loss == "associations" else 0


def _segment_distance2(
    xs: torch.Tensor, ys: torch.Tensor, start: torch.Tensor, end: torch.Tensor
) -> torch.Tensor:
    """Squared distance of every pixel centre to each segment ``start -> end``.

    Args:
        xs: ``[1, W]`` and ys ``[H, 1]`` pixel-centre coordinates.
        start, end: ``[..., 2]`` segment ends.

    Returns:
        ``[..., H, W]``.
    """
    vec = (end - start)[..., None, None, :]  # [..., 1, 1, 2]
    length2 = (vec**2).sum(dim=-1).clamp(min=1e-12)
    px = xs - start[..., 0, None, None]
    py = ys - start[..., 1, None, None]
    t = ((px * vec[..., 0] + py * vec[..., 1]) / length2).clamp(0.0, 1.0)
    return (px - t * vec[..., 0]) ** 2 + (py - t * vec[..., 1]) ** 2


def association_heatmaps(
    kpts_hm_xy: np.ndarray,
    weights: np.ndarray,
    out_hw: tuple[int, int],
    sigma: float,
    pairs: tuple[tuple[int, ...], ...] = SKELETON,
    triplets: tuple[tuple[int, ...], ...] = LIMB_TRIPLETS,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The structure-aware loss's extra channels (paper §III-C3: ``M* > M`` heatmaps).

    An association of adjacent keypoints is drawn as a Gaussian ridge along the chain that
    links them: ``exp(-d^2 / 2 sigma^2)`` with ``d`` the distance to the nearest segment of the
    chain (one segment for a pair, two for a shoulder-elbow-wrist or hip-knee-ankle triplet).
    It is drawn only where every keypoint of the chain is labelled; persons overlapping in a
    channel take the maximum, as in :func:`gaussian_heatmaps`.

    Args:
        kpts_hm_xy: ``[P, K, 2]`` keypoints in heatmap pixels.
        weights: ``[P, K]``; keypoints with weight ``<= 0`` are unlabelled.
        out_hw: map ``(height, width)``.
        sigma: ridge std in map pixels.
        pairs: ``E`` keypoint pairs; triplets: ``T`` keypoint chains of three.

    Returns:
        ``([E + T, H, W] float32 maps in [0, 1], [E + T] float32 channel weights)``; a channel's
        weight is 1 when some person has the whole chain labelled (for one person: when this
        person has), else 0.
    """
    kpts = torch.as_tensor(np.asarray(kpts_hm_xy, dtype=np.float64)).reshape(
        -1, np.shape(kpts_hm_xy)[-2], 2
    )
    present = torch.as_tensor(np.asarray(weights)).reshape(kpts.shape[:2]) > 0
    height, width = out_hw
    chains = (*pairs, *triplets)
    # Every segment of every chain at once: chain c's segments are j -> j + 1 of its joints.
    seg_chain = torch.tensor([c for c, ch in enumerate(chains) for _ in range(len(ch) - 1)])
    seg_from = torch.tensor([ch[j] for ch in chains for j in range(len(ch) - 1)])
    seg_to = torch.tensor([ch[j + 1] for ch in chains for j in range(len(ch) - 1)])
    labelled = torch.stack([present[:, list(ch)].all(dim=1) for ch in chains], dim=1)  # [P, C]
    ys = torch.arange(height, dtype=torch.float64)[:, None]
    xs = torch.arange(width, dtype=torch.float64)[None, :]
    d2 = _segment_distance2(xs, ys, kpts[:, seg_from], kpts[:, seg_to])  # [P, S, H, W]
    # A chain's distance is its nearest segment's; unlabelled chains are infinitely far.
    chain_d2 = torch.full((kpts.shape[0], len(chains), height, width), torch.inf, dtype=d2.dtype)
    chain_d2 = chain_d2.scatter_reduce(
        1, seg_chain[None, :, None, None].expand_as(d2), d2, reduce="amin"
    )
    chain_d2 = chain_d2.masked_fill(~labelled[..., None, None], torch.inf)
    maps = torch.exp(-chain_d2 / (2.0 * sigma**2))
    if maps.shape[0] == 0:
        return torch.zeros((len(chains), height, width)), torch.zeros(len(chains))
    return maps.amax(dim=0).float(), labelled.any(dim=0).float()
