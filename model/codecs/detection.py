"""Anchor-free person proposals: target encoding and top-K decoding without NMS.

Encoding (all maps at the output grid, ``stride`` input pixels per cell): a box centre
``(cx, cy)`` in stage-1 input pixels lies at grid coordinate ``g = input_to_heatmap(c, stride)``
(``model.codecs.coords``); its cell is ``nearest_pixel(g)``.

* ``centre``: a Gaussian per box peaking at 1 on its cell (std ``max(min(w, h) / 6, 1)`` cells);
* ``size``: box ``(w, h)`` in cells (input pixels / stride), at the centre cell;
* ``offset``: ``g - round(g)`` in cells, in ``[-0.5, 0.5]``, at the centre cell;
* ``reg_mask``: 1 at centre cells, where size and offset are supervised.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from model.codecs.coords import heatmap_to_input, input_to_heatmap, nearest_pixel

# Smallest centre Gaussian std, in grid cells.
_MIN_CENTRE_SIGMA = 1.0


class DetectionTargets(NamedTuple):
    """Dense detection targets for one image; ``h x w`` is the output grid."""

    centre: torch.Tensor  # [1, h, w]
    size: torch.Tensor  # [2, h, w]
    offset: torch.Tensor  # [2, h, w]
    reg_mask: torch.Tensor  # [1, h, w]


def encode_detection_targets(
    boxes_xyxy: np.ndarray, out_hw: tuple[int, int], stride: int
) -> DetectionTargets:
    """Encode person boxes as centre / size / offset maps.

    Args:
        boxes_xyxy: ``[P, 4]`` boxes in stage-1 input pixels. Boxes whose centre falls outside
            the grid, or with no area, are skipped.
        out_hw: grid ``(h, w)``.
        stride: input pixels per grid cell.

    Returns:
        :class:`DetectionTargets`.
    """
    height, width = out_hw
    centre = torch.zeros((1, height, width))
    size = torch.zeros((2, height, width))
    offset = torch.zeros((2, height, width))
    reg_mask = torch.zeros((1, height, width))
    boxes = np.asarray(boxes_xyxy, dtype=np.float64).reshape(-1, 4)
    ys = torch.arange(height, dtype=torch.float64)[:, None]
    xs = torch.arange(width, dtype=torch.float64)[None, :]
    for x1, y1, x2, y2 in boxes:
        w_cells, h_cells = (x2 - x1) / stride, (y2 - y1) / stride
        if w_cells <= 0 or h_cells <= 0:
            continue
        gx, gy = input_to_heatmap([(x1 + x2) / 2, (y1 + y2) / 2], stride)
        col, row = nearest_pixel([gx, gy]).tolist()
        if not (0 <= col < width and 0 <= row < height):
            continue
        sigma = max(min(w_cells, h_cells) / 6.0, _MIN_CENTRE_SIGMA)
        gauss = torch.exp(-((xs - col) ** 2 + (ys - row) ** 2) / (2 * sigma**2)).float()
        centre[0] = torch.maximum(centre[0], gauss)
        size[:, row, col] = torch.tensor([w_cells, h_cells])
        offset[:, row, col] = torch.tensor([gx - col, gy - row])
        reg_mask[0, row, col] = 1.0
    return DetectionTargets(centre=centre, size=size, offset=offset, reg_mask=reg_mask)


def decode_proposals(
    centre_logits: torch.Tensor,
    size: torch.Tensor,
    offset: torch.Tensor,
    top_k: int,
    stride: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-K local maxima of the centre map as scored boxes (no NMS).

    Args:
        centre_logits: ``[B, 1, h, w]`` centre logits.
        size: ``[B, 2, h, w]`` box ``(w, h)`` in cells.
        offset: ``[B, 2, h, w]`` centre offset in cells.
        top_k: proposals per image (``min(top_k, h * w)`` are returned).
        stride: input pixels per cell.

    Returns:
        ``boxes_xyxy [B, K, 4]`` in stage-1 input pixels and ``scores [B, K]`` in ``[0, 1]``,
        sorted by decreasing score. Non-maxima get score 0 but still fill the K slots.
    """
    batch, _, height, width = centre_logits.shape
    heat = torch.sigmoid(centre_logits.float())
    peaks = heat * (F.max_pool2d(heat, 3, stride=1, padding=1) == heat)
    k = min(top_k, height * width)
    scores, index = peaks.flatten(1).topk(k, dim=1)  # [B, K]
    rows = torch.div(index, width, rounding_mode="floor").float()
    cols = (index % width).float()

    def gather(maps: torch.Tensor) -> torch.Tensor:
        flat = maps.float().flatten(2)  # [B, 2, h*w]
        return flat.gather(2, index[:, None, :].expand(-1, 2, -1))  # [B, 2, K]

    box_wh = gather(size).clamp(min=0.0) * stride
    off = gather(offset)
    cx = heatmap_to_input(cols + off[:, 0], stride)
    cy = heatmap_to_input(rows + off[:, 1], stride)
    boxes = torch.stack(
        [
            cx - box_wh[:, 0] / 2,
            cy - box_wh[:, 1] / 2,
            cx + box_wh[:, 0] / 2,
            cy + box_wh[:, 1] / 2,
        ],
        dim=-1,
    )
    return boxes, scores
