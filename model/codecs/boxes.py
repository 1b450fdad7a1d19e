"""Box arithmetic in image pixels: IoU, clipping, and boxes made from keypoints (kpt2box).

Boxes are ``boxes_xyxy``: ``[N, 4]`` ``(x1, y1, x2, y2)`` with ``x1 <= x2``, ``y1 <= y2``.
Box edges, unlike keypoints, are continuous coordinates: an image of width ``W`` spans
``[0, W]`` for clipping, as in COCO and torchvision.
"""

from __future__ import annotations

import numpy as np


def box_areas(boxes_xyxy: np.ndarray) -> np.ndarray:
    """``[N]`` areas of ``[N, 4]`` boxes (0 for degenerate ones)."""
    boxes = np.asarray(boxes_xyxy, dtype=np.float64).reshape(-1, 4)
    return np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)


def box_iou(boxes_a_xyxy: np.ndarray, boxes_b_xyxy: np.ndarray) -> np.ndarray:
    """Pairwise IoU of ``[A, 4]`` and ``[B, 4]`` boxes; ``[A, B]``, 0 where both are empty."""
    a = np.asarray(boxes_a_xyxy, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(boxes_b_xyxy, dtype=np.float64).reshape(-1, 4)
    top_left = np.maximum(a[:, None, :2], b[None, :, :2])
    bottom_right = np.minimum(a[:, None, 2:], b[None, :, 2:])
    wh = np.clip(bottom_right - top_left, 0, None)
    inter = wh[..., 0] * wh[..., 1]
    union = box_areas(a)[:, None] + box_areas(b)[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def clip_boxes(boxes_xyxy: np.ndarray, image_wh: tuple[int, int]) -> np.ndarray:
    """Clip ``[N, 4]`` boxes to ``[0, W] x [0, H]``; same shape and dtype."""
    boxes = np.asarray(boxes_xyxy).reshape(-1, 4).copy()
    width, height = image_wh
    boxes[:, 0::2] = np.clip(boxes[:, 0::2], 0, width)
    boxes[:, 1::2] = np.clip(boxes[:, 1::2], 0, height)
    return boxes


def kpt2box(kpts_xys: np.ndarray, margin: float, min_size: float = 1.0) -> np.ndarray:
    """Boxes around poses: the extent of the found keypoints grown by ``margin`` on every side.

    Algorithm 1, line 9: the box of a person recovered from its keypoints alone. Keypoints do
    not reach the top of the head or the soles, hence the margin.

    Args:
        kpts_xys: ``[N, 17, 3]`` ``(x, y, score)``; keypoints with score ``> 0`` count.
        margin: fraction of the extent's width (height) added left and right (top and bottom).
        min_size: the extent is at least this wide and high before the margin (pixels), so a
            pose whose keypoints lie on a line still gets an area.

    Returns:
        ``[N, 4]`` float64 ``boxes_xyxy``; all zeros for poses without any keypoint.
    """
    kpts = np.asarray(kpts_xys, dtype=np.float64).reshape(-1, *np.shape(kpts_xys)[-2:])
    found = kpts[..., 2] > 0
    xs = np.where(found, kpts[..., 0], np.nan)
    ys = np.where(found, kpts[..., 1], np.nan)
    any_found = found.any(axis=1)
    boxes = np.zeros((len(kpts), 4))
    if not any_found.any():
        return boxes
    x1, x2 = np.nanmin(xs[any_found], axis=1), np.nanmax(xs[any_found], axis=1)
    y1, y2 = np.nanmin(ys[any_found], axis=1), np.nanmax(ys[any_found], axis=1)
    cx, cy = (x1 + x2) / 2.0, (y1 + y2) / 2.0
    half_w = np.maximum(x2 - x1, min_size) * (0.5 + margin)
    half_h = np.maximum(y2 - y1, min_size) * (0.5 + margin)
    boxes[any_found] = np.stack([cx - half_w, cy - half_h, cx + half_w, cy + half_h], axis=1)
    return boxes


def xywh_to_xyxy(boxes_xywh: np.ndarray) -> np.ndarray:
    """COCO ``[..., 4]`` (x, y, w, h) → (x1, y1, x2, y2), same units."""
    boxes_xywh = np.asarray(boxes_xywh, dtype=np.float64)
    return np.concatenate([boxes_xywh[..., :2], boxes_xywh[..., :2] + boxes_xywh[..., 2:]], -1)


def grow_boxes(boxes_xyxy: np.ndarray, margin: float) -> np.ndarray:
    """``[N, 4]`` boxes grown by ``margin`` of their width (height) on every side."""
    boxes = np.asarray(boxes_xyxy, dtype=np.float64).reshape(-1, 4)
    size = np.concatenate([boxes[:, 2:] - boxes[:, :2]] * 2, axis=1)
    return boxes + margin * size * np.array([-1.0, -1.0, 1.0, 1.0])
