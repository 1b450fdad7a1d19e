"""Batched decoding of the zoo networks' heads: the single-image tails cut off on import,
rewritten for whole batches.

All functions take NCHW head outputs (``[B, C, H, W]`` at the network's output stride)
and return coordinates NORMALISED to the network input (``0`` = its left/top edge, ``1`` =
its right/bottom edge), as MoveNet's own outputs are; ``model/codecs/coords.py`` maps them
to pixels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from model.keypoints import NUM_KEYPOINTS


def _grid(height: int, width: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Row and column index of every heatmap cell, ``[H, W]`` float32 each."""
    ys = torch.arange(height, device=device, dtype=torch.float32)
    xs = torch.arange(width, device=device, dtype=torch.float32)
    return ys[:, None].expand(height, width), xs[None, :].expand(height, width)


def _gather_cells(maps: torch.Tensor, flat_index: torch.Tensor) -> torch.Tensor:
    """``maps[b, :, cell]`` for each ``flat_index[b, j]``: ``[B, C, H, W]``, ``[B, J]`` → ``[B, J, C]``."""
    batch, channels = maps.shape[:2]
    flat = maps.reshape(batch, channels, -1)
    index = flat_index[:, None, :].expand(batch, channels, flat_index.shape[1])
    return flat.gather(2, index).transpose(1, 2)


def keypoints_near(
    heatmaps: torch.Tensor,
    offsets: torch.Tensor,
    regressed_yx: torch.Tensor,
    distance_bias: float,
    allowed: torch.Tensor | None = None,
) -> torch.Tensor:
    """MoveNet's keypoint pick: for each regressed keypoint, the heatmap cell maximising
    ``heat / (distance to the regressed point + distance_bias)``, plus that cell's offset.

    Args:
        heatmaps: ``[B, 17, H, W]`` keypoint heatmaps after the sigmoid.
        offsets: ``[B, 34, H, W]`` per-keypoint ``(dy, dx)`` offsets, in cells.
        regressed_yx: ``[B, J, 17, 2]`` regressed keypoints of ``J`` instances, in cells.
        distance_bias: added to the distance (MoveNet: 1.8 cells).
        allowed: optional ``[B, J, 17, H, W]`` bool: cells the pick may use.

    Returns:
        ``[B, J, 17, 3]``: ``(y, x)`` in cells and the heatmap value at the picked cell.
    """
    batch, _, height, width = heatmaps.shape
    ys, xs = _grid(height, width, heatmaps.device)
    ry = regressed_yx[..., 0, None, None]
    rx = regressed_yx[..., 1, None, None]
    distance = torch.sqrt((ys - ry) ** 2 + (xs - rx) ** 2)  # [B, J, 17, H, W]
    ranking = heatmaps[:, None] / (distance + distance_bias)
    if allowed is not None:
        ranking = torch.where(allowed, ranking, torch.full_like(ranking, -1.0))
    flat_index = ranking.flatten(3).argmax(dim=3)  # [B, J, 17]
    cell_y = torch.div(flat_index, width, rounding_mode="floor")
    cell_x = flat_index - cell_y * width
    kpt = torch.arange(NUM_KEYPOINTS, device=heatmaps.device)
    b = torch.arange(batch, device=heatmaps.device)[:, None, None]
    heat = heatmaps.flatten(2)[b, kpt, flat_index]
    offsets_flat = offsets.flatten(2)
    off_y = offsets_flat[b, 2 * kpt, flat_index]
    off_x = offsets_flat[b, 2 * kpt + 1, flat_index]
    return torch.stack([cell_y.float() + off_y, cell_x.float() + off_x, heat], dim=-1)


# How much less a centre peak outside the person's box counts than one inside it.
OUTSIDE_BOX_CENTRE_WEIGHT = 1e-3


def decode_single_pose(
    centre_logits: torch.Tensor,
    heatmap_logits: torch.Tensor,
    regress: torch.Tensor,
    offsets: torch.Tensor,
    centre_weight: torch.Tensor,
    distance_bias: float,
    cell_to_normalised: torch.Tensor,
    guide_yx: torch.Tensor | None = None,
    guide_found: torch.Tensor | None = None,
    box_yx: torch.Tensor | None = None,
) -> torch.Tensor:
    """MoveNet SinglePose decoding for a batch of person crops.

    The person is the centre-heatmap peak after weighting by ``centre_weight`` (MoveNet's
    fixed preference for the middle of the crop); its keypoints are regressed from there and
    snapped to nearby heatmap peaks (:func:`keypoints_near`).

    With a guide (the person's coarse pose from stage 1, in cells), the crop's person is the
    one that pose names, not the most salient body near the middle: the centre peak is
    weighted the same way around the middle of the guide's found keypoints, and each found
    guide keypoint, not the regressed one, is where that keypoint's peak is looked for.
    Crops whose guide found no keypoint decode as without a guide. With a box, keypoints are
    taken inside it only, and a centre inside it is preferred.

    Args:
        centre_logits: ``[B, 1, H, W]``.
        heatmap_logits: ``[B, 17, H, W]``.
        regress: ``[B, 34, H, W]`` keypoint ``(dy, dx)`` from a centre, in cells.
        offsets: ``[B, 34, H, W]``.
        centre_weight: ``[H, W]`` weights of the centre heatmap.
        distance_bias: see :func:`keypoints_near`.
        cell_to_normalised: ``[2]`` (y, x) factors from cells to normalised coordinates
            (the graph's own float16 constants, about ``1 / H`` and ``1 / W``).
        guide_yx: ``[B, 17, 2]`` guide keypoints ``(y, x)`` in cells, or ``None``.
        guide_found: ``[B, 17]`` bool, the guide keypoints to use.
        box_yx: ``[B, 4]`` the person's box ``(y1, x1, y2, x2)`` in cells, or ``None``.

    Returns:
        ``[B, 17, 3]``: ``(y, x)`` normalised to the input, and the keypoint score.
    """
    batch, _, height, width = centre_logits.shape
    ys, xs = _grid(height, width, centre_logits.device)
    weight = centre_weight.expand(batch, height, width)
    guided = None
    if guide_yx is not None and guide_found is not None:
        found = guide_found.to(torch.float32)
        guided = found.sum(dim=1) > 0  # [B]
        middle = (guide_yx * found[..., None]).sum(dim=1) / found.sum(dim=1).clamp(min=1)[:, None]
        distance = torch.sqrt(
            (ys - middle[:, 0, None, None]) ** 2 + (xs - middle[:, 1, None, None]) ** 2
        )
        weight = torch.where(guided[:, None, None], 1.0 / (distance + distance_bias), weight)
    weighted = torch.sigmoid(centre_logits[:, 0]) * weight
    inside = None
    if box_yx is not None:
        inside = (
            (ys >= box_yx[:, 0, None, None])
            & (ys <= box_yx[:, 2, None, None])
            & (xs >= box_yx[:, 1, None, None])
            & (xs <= box_yx[:, 3, None, None])
        )  # [B, H, W]
        # Outside the box a centre still counts, far less: a crop whose box holds no centre
        # peak keeps MoveNet's own choice instead of an arbitrary cell.
        weighted = torch.where(inside, weighted, weighted * OUTSIDE_BOX_CENTRE_WEIGHT)
    centre = weighted.flatten(1).argmax(dim=1, keepdim=True)  # [B, 1]
    centre_y = torch.div(centre, width, rounding_mode="floor")
    centre_x = centre - centre_y * width
    reg = _gather_cells(regress, centre).reshape(batch, 1, NUM_KEYPOINTS, 2)
    regressed = torch.stack(
        [centre_y[..., None].float() + reg[..., 0], centre_x[..., None].float() + reg[..., 1]], -1
    )
    if guided is not None:
        use_guide = (guide_found & guided[:, None])[:, None, :, None]
        regressed = torch.where(use_guide, guide_yx[:, None].to(regressed.dtype), regressed)
    allowed = None if inside is None else inside[:, None, None].expand(-1, 1, NUM_KEYPOINTS, -1, -1)
    picked = keypoints_near(
        torch.sigmoid(heatmap_logits), offsets, regressed, distance_bias, allowed
    )[:, 0]
    scale = cell_to_normalised.reshape(2).to(picked.device, torch.float32)
    return torch.cat([picked[..., :2] * scale, picked[..., 2:]], dim=-1)


def local_maxima(scores: torch.Tensor, kernel: int) -> torch.Tensor:
    """``scores`` where a cell is the maximum of its ``kernel``×``kernel`` window, else 0."""
    pooled = F.max_pool2d(scores, kernel, stride=1, padding=kernel // 2)
    return torch.where(scores == pooled, scores, torch.zeros_like(scores))


# MoveNet MultiPose's decoding constants (read off its graph; fixed by the model, not tuned here).
MULTIPOSE_PEAK_KERNEL = 5  # centre peaks: cells equal to the max of their 5x5 window
MULTIPOSE_PEAK_TOLERANCE = 1.0132789611816406e-06  # "equal" = closer than this
MULTIPOSE_GAUSSIAN_SCALE = 0.300048828125  # candidate weight exp(-d^2 / (this * min(H, W)))
MULTIPOSE_KEYPOINT_THRESHOLD = 0.126953125  # keypoints above this count in the instance score


def decode_multi_pose(
    centre_logits: torch.Tensor,
    box_scale: torch.Tensor,
    box_offset: torch.Tensor,
    heatmap_logits: torch.Tensor,
    regress: torch.Tensor,
    offsets: torch.Tensor,
    max_instances: int,
    min_centre_score: float = 0.0,
) -> dict[str, torch.Tensor]:
    """MoveNet MultiPose decoding for a batch of images, ``max_instances`` people each.

    Instances are the highest centre-heatmap peaks, without any box NMS. Each has a box
    (size and offset regressed at its centre) and 17 keypoints regressed from its centre,
    each moved to the heatmap cell with the highest Gaussian-weighted heat inside the box.
    With ``max_instances=6`` this is exactly the model's own single-image tail (on images with
    at least 6 centre peaks; cells that are no peak, and centres scoring below
    ``min_centre_score``, become all-zero instances here).

    Returns:
        ``keypoints`` ``[B, K, 17, 3]`` (y, x normalised; score), ``boxes`` ``[B, K, 4]``
        (y1, x1, y2, x2 normalised), ``centre_scores`` ``[B, K]`` and ``scores`` ``[B, K]``
        (centre score times the mean score of the keypoints above the threshold).
    """
    batch, _, height, width = centre_logits.shape
    centre = torch.sigmoid(centre_logits)
    pooled = F.max_pool2d(centre, MULTIPOSE_PEAK_KERNEL, 1, MULTIPOSE_PEAK_KERNEL // 2)
    peaks = centre * ((centre - pooled).abs() < MULTIPOSE_PEAK_TOLERANCE)
    # Stable sort: ties go to the lower cell index, as TF's TopK does.
    order = torch.sort(peaks.flatten(1), dim=1, descending=True, stable=True)
    wanted = min(max_instances, height * width)
    # Cells that are no peak at all score exactly 0, and an instance never scores above its
    # centre: decoding centres scoring 0 or below ``min_centre_score`` is wasted work (the
    # K x 17 x H x W weighting dominates the cost), so they become all-zero instances.
    kept = (order.values[:, :wanted] > 0) & (order.values[:, :wanted] >= min_centre_score)
    k = max(1, min(wanted, int(kept.sum(dim=1).max())))
    centre_scores, cell = order.values[:, :k], order.indices[:, :k]  # [B, K]
    # An image decodes only its own kept centres, whatever the other images of the batch
    # keep (sorted scores make them a prefix), so batching never changes a result.
    own = (torch.arange(k, device=cell.device) < kept.sum(dim=1, keepdim=True)).float()
    cy = torch.div(cell, width, rounding_mode="floor")
    cx = cell - cy * width
    cyx = torch.stack([cy, cx], -1).float()  # [B, K, 2]

    reg = _gather_cells(regress, cell).reshape(batch, k, NUM_KEYPOINTS, 2)
    regressed = cyx[:, :, None, :] + reg  # [B, K, 17, 2]
    size = _gather_cells(box_scale, cell).clamp(min=0.0)  # (h, w) in cells
    middle = cyx + _gather_cells(box_offset, cell)
    limits = torch.tensor([height, width], device=cell.device, dtype=torch.float32)
    low = torch.minimum(middle - size / 2, limits).clamp(min=0.0)
    high = torch.minimum(middle + size / 2, limits).clamp(min=0.0)

    ys, xs = _grid(height, width, centre.device)
    ry = regressed[..., 0, None, None]
    rx = regressed[..., 1, None, None]
    weight = torch.exp(
        -((ys - ry) ** 2 + (xs - rx) ** 2) / (min(height, width) * MULTIPOSE_GAUSSIAN_SCALE)
    )  # [B, K, 17, H, W]
    inside = (
        (ys >= low[..., 0, None, None])
        & (ys < high[..., 0, None, None])
        & (xs >= low[..., 1, None, None])
        & (xs < high[..., 1, None, None])
    )  # [B, K, H, W]
    weighted = torch.sigmoid(heatmap_logits)[:, None] * weight * inside[:, :, None]
    weighted = weighted * own[:, :, None, None, None]
    best_cell = weighted.flatten(3).argmax(dim=3)  # [B, K, 17]
    # A keypoint's score: the highest weighted heat any instance gives its cell.
    best_any = weighted.amax(dim=1).flatten(2)  # [B, 17, H*W]
    kpt = torch.arange(NUM_KEYPOINTS, device=cell.device)
    b = torch.arange(batch, device=cell.device)[:, None, None]
    score = best_any[b, kpt, best_cell]
    ky = torch.div(best_cell, width, rounding_mode="floor")
    kx = best_cell - ky * width
    offsets_flat = offsets.flatten(2)
    y = (ky.float() + offsets_flat[b, 2 * kpt, best_cell]) / height
    x = (kx.float() + offsets_flat[b, 2 * kpt + 1, best_cell]) / width

    counted = score > MULTIPOSE_KEYPOINT_THRESHOLD
    mean_score = torch.where(counted, score, 0).sum(-1) / counted.sum(-1).clamp(min=1)
    boxes = torch.cat([low / limits, high / limits], dim=-1).clamp(0.0, 1.0)
    decoded = {
        "keypoints": torch.stack([y, x, score], dim=-1) * own[..., None, None],
        "boxes": boxes * own[..., None],
        "centre_scores": centre_scores * own,
        "scores": centre_scores * mean_score * own,
    }
    return {key: _pad_instances(value, wanted) for key, value in decoded.items()}


def _pad_instances(values: torch.Tensor, count: int) -> torch.Tensor:
    """``[B, K, ...]`` → ``[B, count, ...]``, the added instances all zeros."""
    missing = count - values.shape[1]
    if missing <= 0:
        return values
    return torch.cat([values, values.new_zeros((values.shape[0], missing, *values.shape[2:]))], 1)
