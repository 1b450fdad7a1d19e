"""Training augmentation: keypoint masking (paper §III-C4) and scale / rotation / flip.

Geometric augmentation is an output-space affine composed with the image->input affine, so
images are warped once and keypoints move with the same matrix. A horizontal flip mirrors
the output about its vertical centre line (``x -> W - 1 - x``) and swaps left/right labels.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import numpy as np

from model.keypoints import flip_permutation

# Candidate locations tried when looking for a keypoint-free patch.
_MASK_TRIES = 20


class AugmentParams(NamedTuple):
    """One draw of geometric augmentation."""

    scale: float  # zoom factor (> 1 enlarges the content)
    rotation_deg: float  # positive turns the content clockwise in the output
    flip: bool


IDENTITY_AUGMENT = AugmentParams(scale=1.0, rotation_deg=0.0, flip=False)


def sample_augmentation(
    rng: np.random.Generator,
    flip_prob: float,
    max_rotation_deg: float,
    rotation_prob: float,
    scale_jitter: float,
) -> AugmentParams:
    """Draw a zoom in ``[1 - scale_jitter, 1 + scale_jitter]``, a rotation and a flip."""
    scale = float(rng.uniform(1.0 - scale_jitter, 1.0 + scale_jitter))
    rotate = rng.random() < rotation_prob
    rotation = float(rng.uniform(-max_rotation_deg, max_rotation_deg)) if rotate else 0.0
    return AugmentParams(scale=scale, rotation_deg=rotation, flip=bool(rng.random() < flip_prob))


def augmentation_affine(params: AugmentParams, out_hw: tuple[int, int]) -> np.ndarray:
    """Output->output ``[2, 3]`` affine: zoom and rotate about the centre, then maybe mirror."""
    height, width = out_hw
    cx, cy = (width - 1) / 2.0, (height - 1) / 2.0
    theta = np.deg2rad(params.rotation_deg)
    cos, sin = np.cos(theta) * params.scale, np.sin(theta) * params.scale
    linear = np.array([[cos, -sin], [sin, cos]])
    if params.flip:
        linear = np.array([[-1.0, 0.0], [0.0, 1.0]]) @ linear
    centre = np.array([cx, cy])
    return np.concatenate([linear, (centre - linear @ centre)[:, None]], axis=1)


def compose_affines(outer: np.ndarray, inner: np.ndarray) -> np.ndarray:
    """``outer ∘ inner`` for ``[..., 2, 3]`` affines (apply ``inner`` first)."""
    outer = np.asarray(outer, dtype=np.float64)
    inner = np.asarray(inner, dtype=np.float64)
    linear = outer[..., :2] @ inner[..., :2]
    offset = (outer[..., :2] @ inner[..., 2:])[..., 0] + outer[..., 2]
    return np.concatenate([linear, offset[..., None]], axis=-1)


def transform_keypoints(
    affine: np.ndarray, kpts_xyv: np.ndarray, flipped: bool, out_hw: tuple[int, int]
) -> np.ndarray:
    """Move keypoints with an affine; swap left/right labels after a flip.

    Args:
        affine: ``[2, 3]`` source->output affine.
        kpts_xyv: ``[P, K, 3]`` source keypoints.
        flipped: whether ``affine`` mirrors (labels are then permuted).
        out_hw: output size; keypoints that land outside get ``v = 0``.

    Returns:
        ``[P, K, 3]`` output keypoints (``x, y`` zeroed where ``v = 0``).
    """
    kpts = np.asarray(kpts_xyv, dtype=np.float64).copy()
    xy = kpts[..., :2] @ affine[:, :2].T + affine[:, 2]
    height, width = out_hw
    inside = (
        (xy[..., 0] >= -0.5)
        & (xy[..., 0] <= width - 0.5)
        & (xy[..., 1] >= -0.5)
        & (xy[..., 1] <= height - 0.5)
    )
    vis = np.where(inside & (kpts[..., 2] > 0), kpts[..., 2], 0.0)
    out = np.concatenate([np.where(vis[..., None] > 0, xy, 0.0), vis[..., None]], axis=-1)
    return out[:, flip_permutation()] if flipped else out


def transform_boxes(affine: np.ndarray, boxes_xyxy: np.ndarray) -> np.ndarray:
    """Boxes ``[P, 4]`` through a ``[2, 3]`` affine: the axis-aligned hull of the moved corners."""
    boxes = np.asarray(boxes_xyxy, dtype=np.float64).reshape(-1, 4)
    corners = boxes[:, [[0, 1], [2, 1], [0, 3], [2, 3]]]  # [P, 4, 2]
    moved = corners @ affine[:, :2].T + affine[:, 2]
    return np.concatenate([moved.min(axis=1), moved.max(axis=1)], axis=1)


class MaskPatch(NamedTuple):
    """One keypoint-masking paste: ``src`` patch copied onto ``dst`` (``x0, y0, x1, y1``, exclusive)."""

    kind: Literal["background", "duplicate"]
    keypoint: int
    src_xyxy: tuple[int, int, int, int]
    dst_xyxy: tuple[int, int, int, int]


def _patch_at(x: float, y: float, size: int, width: int, height: int) -> tuple[int, int, int, int]:
    """A ``size`` square patch centred near ``(x, y)``, shifted to lie inside the image."""
    x0 = int(np.clip(round(x - (size - 1) / 2.0), 0, width - size))
    y0 = int(np.clip(round(y - (size - 1) / 2.0), 0, height - size))
    return x0, y0, x0 + size, y0 + size


def _is_free(patch: tuple[int, int, int, int], points_xy: np.ndarray, margin: float) -> bool:
    """No point lies within ``margin`` pixels of the patch."""
    if len(points_xy) == 0:
        return True
    x0, y0, x1, y1 = patch
    inside_x = (points_xy[:, 0] >= x0 - margin) & (points_xy[:, 0] <= x1 - 1 + margin)
    inside_y = (points_xy[:, 1] >= y0 - margin) & (points_xy[:, 1] <= y1 - 1 + margin)
    return not bool((inside_x & inside_y).any())


def mask_keypoints(
    image: np.ndarray,
    kpts_xyv: np.ndarray,
    avoid_xy: np.ndarray,
    patch_size: int,
    rng: np.random.Generator,
    background_prob: float,
    duplicate_prob: float,
) -> tuple[np.ndarray, list[MaskPatch]]:
    """Keypoint masking: background-over-keypoint and keypoint-onto-background pastes.

    * background masking (prob ``background_prob``): a keypoint-free patch of the image is
      pasted over one labelled keypoint (occlusion);
    * keypoint duplication (prob ``duplicate_prob``): the patch around one labelled keypoint is
      pasted onto keypoint-free background nearby (within three patch sides; ambiguity).

    Targets are unchanged: the network must still find the occluded keypoint and ignore the copy.

    Args:
        image: ``[H, W, C]`` image; not modified.
        kpts_xyv: ``[K, 3]`` keypoints of the person being augmented, image pixels.
        avoid_xy: ``[Q, 2]`` every labelled keypoint in the image (no background patch may hold one).
        patch_size: patch side in pixels.
        rng: random generator.
        background_prob: probability of one background masking.
        duplicate_prob: probability of one keypoint duplication.

    Returns:
        The augmented copy and the pastes made (pixels change only inside their ``dst`` boxes).
    """
    height, width = image.shape[:2]
    out = image.copy()
    patches: list[MaskPatch] = []
    size = int(min(patch_size, height, width))
    kpts = np.asarray(kpts_xyv, dtype=np.float64)
    labelled = np.flatnonzero(
        (kpts[:, 2] > 0)
        & (kpts[:, 0] >= 0)
        & (kpts[:, 0] < width)
        & (kpts[:, 1] >= 0)
        & (kpts[:, 1] < height)
    )
    avoid = np.asarray(avoid_xy, dtype=np.float64).reshape(-1, 2)
    if size < 2 or len(labelled) == 0:
        return out, patches
    for kind, prob in (("background", background_prob), ("duplicate", duplicate_prob)):
        if rng.random() >= prob:
            continue
        joint = int(rng.choice(labelled))
        around = _patch_at(kpts[joint, 0], kpts[joint, 1], size, width, height)
        for _ in range(_MASK_TRIES):
            if kind == "background":
                x, y = rng.uniform(0, width), rng.uniform(0, height)
            else:
                angle, radius = rng.uniform(0, 2 * np.pi), rng.uniform(1.5 * size, 3.0 * size)
                x, y = (
                    kpts[joint, 0] + radius * np.cos(angle),
                    kpts[joint, 1] + radius * np.sin(angle),
                )
            free = _patch_at(x, y, size, width, height)
            if _is_free(free, avoid, margin=size / 4.0):
                break
        else:
            continue
        src, dst = (free, around) if kind == "background" else (around, free)
        out[dst[1] : dst[3], dst[0] : dst[2]] = image[src[1] : src[3], src[0] : src[2]]
        patches.append(MaskPatch(kind=kind, keypoint=joint, src_xyxy=src, dst_xyxy=dst))  # type: ignore[arg-type]
    return out, patches
