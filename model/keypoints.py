"""COCO-17 keypoint definitions and Object Keypoint Similarity (OKS).

Everything here is plain numpy; shapes are in the docstrings. Keypoint arrays are
``kpts_xyv``: ``[..., 17, 3]`` with columns ``(x, y, v)`` in image pixels, where ``v``
is a visibility flag (ground truth: 0 unlabelled, 1 occluded, 2 visible) or a score
(predictions: > 0 means present).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

NUM_KEYPOINTS = 17

KEYPOINT_NAMES: tuple[str, ...] = (
    "nose",
    "left_eye",
    "right_eye",
    "left_ear",
    "right_ear",
    "left_shoulder",
    "right_shoulder",
    "left_elbow",
    "right_elbow",
    "left_wrist",
    "right_wrist",
    "left_hip",
    "right_hip",
    "left_knee",
    "right_knee",
    "left_ankle",
    "right_ankle",
)

# COCO's skeleton, 0-based (the JSON stores it 1-based). These 19 pairs are also the
# limbs of the part affinity fields, in this order.
SKELETON: tuple[tuple[int, int], ...] = (
    (15, 13), (13, 11), (16, 14), (14, 12), (11, 12), (5, 11), (6, 12), (5, 6), (5, 7),
    (6, 8), (7, 9), (8, 10), (1, 2), (0, 1), (0, 2), (1, 3), (2, 4), (3, 5), (4, 6),
)  # fmt: skip

# The three-joint chains of the structure-aware loss (paper §III-C3, Fig. 7, red lines):
# shoulder-elbow-wrist and hip-knee-ankle, left then right; the middle joint is the elbow or
# knee whose loss gets the three-way term.
LIMB_TRIPLETS: tuple[tuple[int, int, int], ...] = (
    (5, 7, 9),
    (6, 8, 10),
    (11, 13, 15),
    (12, 14, 16),
)

# Left/right pairs swapped by a horizontal flip.
FLIP_PAIRS: tuple[tuple[int, int], ...] = (
    (1, 2), (3, 4), (5, 6), (7, 8), (9, 10), (11, 12), (13, 14), (15, 16),
)  # fmt: skip

# pycocotools' per-keypoint OKS sigmas (COCOeval.Params.setKpParams), same order as the names.
OKS_SIGMAS = (
    np.array(
        [.26, .25, .25, .35, .35, .79, .79, .72, .72, .62, .62, 1.07, 1.07, .87, .87, .89, .89],
        dtype=np.float64,
    )
    / 10.0
)  # fmt: skip


def flip_permutation(
    num: int = NUM_KEYPOINTS, flip_pairs: Sequence[tuple[int, int]] = FLIP_PAIRS
) -> np.ndarray:
    """Index permutation ``perm`` such that ``kpts[perm]`` swaps left and right labels. Shape [num]."""
    perm = np.arange(num)
    for left, right in flip_pairs:
        perm[left], perm[right] = right, left
    return perm


def oks(
    kpts_gt_xyv: np.ndarray,
    area_gt: float,
    kpts_dt_xy: np.ndarray,
    sigmas: np.ndarray = OKS_SIGMAS,
    box_gt_xywh: np.ndarray | None = None,
) -> np.ndarray:
    """OKS between one ground-truth pose and many detected poses, as pycocotools computes it.

    Args:
        kpts_gt_xyv: ``[K, 3]`` ground truth ``(x, y, v)``; keypoints with ``v > 0`` count.
        area_gt: the ground truth's area (COCO ``area``), in square pixels.
        kpts_dt_xy: ``[D, K, 2]`` (or ``[D, K, 3]``, the third column ignored) detections.
        sigmas: ``[K]`` per-keypoint falloff constants.
        box_gt_xywh: the ground truth's box ``(x, y, w, h)``. Only needed when no keypoint is
            labelled: pycocotools then measures distances to a box twice the size of this one.

    Returns:
        ``[D]`` OKS in ``[0, 1]``.
    """
    kpts_gt_xyv = np.asarray(kpts_gt_xyv, dtype=np.float64)
    dt = np.asarray(kpts_dt_xy, dtype=np.float64)[..., :2]
    if dt.ndim == 2:
        dt = dt[None]
    num_kpts = kpts_gt_xyv.shape[0]
    if dt.shape[1] != num_kpts or sigmas.shape[0] != num_kpts:
        raise ValueError(
            f"keypoint counts differ: ground truth {num_kpts}, detections {dt.shape[1]}, "
            f"sigmas {sigmas.shape[0]}"
        )
    variances = (2.0 * sigmas) ** 2
    visible = kpts_gt_xyv[:, 2] > 0
    if visible.any():
        dx = dt[:, :, 0] - kpts_gt_xyv[None, :, 0]
        dy = dt[:, :, 1] - kpts_gt_xyv[None, :, 1]
    else:
        if box_gt_xywh is None:
            raise ValueError("a ground truth without labelled keypoints needs box_gt_xywh")
        x, y, w, h = np.asarray(box_gt_xywh, dtype=np.float64)
        x0, x1, y0, y1 = x - w, x + 2 * w, y - h, y + 2 * h
        dx = np.maximum(0.0, x0 - dt[:, :, 0]) + np.maximum(0.0, dt[:, :, 0] - x1)
        dy = np.maximum(0.0, y0 - dt[:, :, 1]) + np.maximum(0.0, dt[:, :, 1] - y1)
    e = (dx**2 + dy**2) / variances[None, :] / (area_gt + np.spacing(1)) / 2.0
    if visible.any():
        e = e[:, visible]
    return np.exp(-e).sum(axis=1) / e.shape[1]


def oks_matrix(
    kpts_a_xyv: np.ndarray,
    areas_a: np.ndarray,
    kpts_b_xy: np.ndarray,
    sigmas: np.ndarray = OKS_SIGMAS,
) -> np.ndarray:
    """Pairwise OKS of poses ``a`` (treated as reference) against poses ``b``.

    Used for duplicate tests between predicted poses, where ``a``'s third column is a
    keypoint score: keypoints with score ``> 0`` count. A reference pose with no keypoint
    gets OKS 0 against everything.

    Args:
        kpts_a_xyv: ``[A, K, 3]`` reference poses.
        areas_a: ``[A]`` reference areas (square pixels).
        kpts_b_xy: ``[B, K, 2|3]`` other poses.

    Returns:
        ``[A, B]`` OKS.
    """
    kpts_a_xyv = np.asarray(kpts_a_xyv, dtype=np.float64)
    kpts_b = np.asarray(kpts_b_xy, dtype=np.float64)[..., :2]
    variances = (2.0 * sigmas) ** 2
    d2 = ((kpts_a_xyv[:, None, :, :2] - kpts_b[None, :, :, :]) ** 2).sum(-1)  # [A, B, K]
    areas = np.asarray(areas_a, dtype=np.float64)[:, None, None]
    sim = np.exp(-d2 / variances[None, None, :] / (areas + np.spacing(1)) / 2.0)
    present = (kpts_a_xyv[:, None, :, 2] > 0).astype(np.float64)  # [A, 1, K]
    counts = present.sum(-1)
    out = (sim * present).sum(-1) / np.maximum(counts, 1.0)
    return np.where(counts > 0, out, 0.0)


def pose_oks(
    kpts_a_xys: np.ndarray, kpts_b_xys: np.ndarray, sigmas: np.ndarray = OKS_SIGMAS
) -> np.ndarray:
    """Symmetric OKS between predicted poses: the same value whichever pose is the reference.

    Only keypoints that both poses found (score ``> 0``) count, and distances are scaled by
    the larger of the two poses' keypoint-extent areas. So a fragment of a person (a pose
    that lacks most keypoints) scores high against that person's whole pose: its missing
    keypoints are not compared, and the whole pose sets the scale. Pairs without a keypoint
    in common score 0.

    Args:
        kpts_a_xys: ``[A, K, 3]`` poses ``(x, y, score)``.
        kpts_b_xys: ``[B, K, 3]`` poses ``(x, y, score)``.
        sigmas: ``[K]`` per-keypoint falloff constants.

    Returns:
        ``[A, B]`` OKS in ``[0, 1]``.
    """
    from model.codecs.boxes import box_areas, kpt2box

    a = np.asarray(kpts_a_xys, dtype=np.float64).reshape(-1, len(sigmas), 3)
    b = np.asarray(kpts_b_xys, dtype=np.float64).reshape(-1, len(sigmas), 3)
    areas = np.maximum(
        box_areas(kpt2box(a, margin=0.0))[:, None], box_areas(kpt2box(b, margin=0.0))[None, :]
    )  # [A, B]
    d2 = ((a[:, None, :, :2] - b[None, :, :, :2]) ** 2).sum(-1)  # [A, B, K]
    variances = (2.0 * sigmas) ** 2
    sim = np.exp(-d2 / variances / (areas[..., None] + np.spacing(1)) / 2.0)
    common = (a[:, None, :, 2] > 0) & (b[None, :, :, 2] > 0)
    counts = common.sum(-1)
    return np.where(counts > 0, (sim * common).sum(-1) / np.maximum(counts, 1), 0.0)
