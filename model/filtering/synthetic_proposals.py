"""Synthetic stage-1 outputs (proposals, peaks, limb scores) for filter tests and the benchmark.

No network is involved: scenes are built from a template standing pose, so the persons,
their boxes and keypoints are known exactly. Coordinates are image pixels.
"""

from __future__ import annotations

import numpy as np

from model.keypoints import NUM_KEYPOINTS, SKELETON
from model.stage_data import NUM_LIMBS, CoarseProposals

# A frontal standing person, (x, y) as fractions of the person's height from the top-centre.
# Person's left is the image's right.
_TEMPLATE_XY = np.array(
    [
        [0.0, 0.07], [0.02, 0.05], [-0.02, 0.05], [0.045, 0.06], [-0.045, 0.06],
        [0.1, 0.18], [-0.1, 0.18], [0.13, 0.32], [-0.13, 0.32], [0.14, 0.45], [-0.14, 0.45],
        [0.06, 0.52], [-0.06, 0.52], [0.065, 0.72], [-0.065, 0.72], [0.07, 0.93], [-0.07, 0.93],
    ]
)  # fmt: skip
# Box half-width as a fraction of the height.
_HALF_WIDTH = 0.18


def person(
    top_centre_xy: tuple[float, float], height: float, score: float = 0.9
) -> tuple[np.ndarray, np.ndarray]:
    """One template person.

    Args:
        top_centre_xy: the top-centre of the person's box (image pixels).
        height: the person's height (pixels).
        score: score given to every keypoint.

    Returns:
        ``kpts_xys``: ``[17, 3]`` keypoints; ``box_xyxy``: ``[4]`` the person's box.
    """
    cx, top = top_centre_xy
    kpts = np.empty((NUM_KEYPOINTS, 3))
    kpts[:, 0] = cx + _TEMPLATE_XY[:, 0] * height
    kpts[:, 1] = top + _TEMPLATE_XY[:, 1] * height
    kpts[:, 2] = score
    box = np.array([cx - _HALF_WIDTH * height, top, cx + _HALF_WIDTH * height, top + height])
    return kpts, box


def proposals_from_poses(
    poses_xys: list[np.ndarray],
    boxes_xyxy: np.ndarray,
    box_scores: np.ndarray,
    top_k: int | None = None,
    limb_score: float = 0.9,
) -> CoarseProposals:
    """Ideal stage-1 output: peaks exactly at the poses' keypoints, PAF score only within a pose.

    Args:
        poses_xys: per person ``[17, 3]`` keypoints; score 0 leaves the keypoint out.
        boxes_xyxy: ``[P, 4]`` box proposals.
        box_scores: ``[P]`` their scores.
        top_k: peak slots per keypoint type (default: the number of poses).
        limb_score: PAF score of a pair of keypoints of the same pose.

    Returns:
        The proposals; peak ``n`` of each type belongs to pose ``n``.
    """
    top_k = len(poses_xys) if top_k is None else top_k
    peaks = np.zeros((NUM_KEYPOINTS, top_k, 3), np.float32)
    for n, pose in enumerate(poses_xys):
        peaks[:, n] = np.where(pose[:, 2:] > 0, pose, 0.0)
    limbs = np.zeros((NUM_LIMBS, top_k, top_k), np.float32)
    for limb, (a, b) in enumerate(SKELETON):
        for n in range(len(poses_xys)):
            if peaks[a, n, 2] > 0 and peaks[b, n, 2] > 0:
                limbs[limb, n, n] = limb_score
    return CoarseProposals(
        boxes_xyxy=np.asarray(boxes_xyxy, np.float32).reshape(-1, 4),
        box_scores=np.asarray(box_scores, np.float32).reshape(-1),
        peaks_xys=peaks,
        limb_scores=limbs,
    )


def random_scene(
    rng: np.random.Generator,
    image_wh: tuple[int, int] = (640, 480),
    max_persons: int = 8,
    num_proposals: int = 100,
    peaks_per_keypoint: int = 20,
) -> tuple[CoarseProposals, np.ndarray]:
    """A cluttered scene as an untrained-ish stage 1 might see it.

    Persons of random size and place (possibly overlapping, partly outside the image, some
    keypoints missed), several jittered proposals per person plus random background
    proposals, distractor peaks and noisy PAF scores between unrelated peaks.

    Args:
        rng: the random generator (seed it for reproducible scenes).
        image_wh: image ``(width, height)``.
        max_persons: persons are drawn from ``1..max_persons``.
        num_proposals: box proposals ``P``.
        peaks_per_keypoint: peak slots ``K`` per keypoint type.

    Returns:
        The proposals and the persons' true boxes ``[N, 4]``.
    """
    width, height = image_wh
    num_persons = int(rng.integers(1, max_persons + 1))
    num_persons = min(num_persons, peaks_per_keypoint, num_proposals)
    poses, true_boxes = [], []
    for _ in range(num_persons):
        size = rng.uniform(0.2, 0.9) * height
        kpts, box = person((rng.uniform(0, width), rng.uniform(-0.1, 0.8) * height), size)
        kpts[:, :2] += rng.normal(0.0, 0.01 * size, (NUM_KEYPOINTS, 2))
        kpts[:, 2] = rng.uniform(0.3, 1.0, NUM_KEYPOINTS) * (rng.random(NUM_KEYPOINTS) > 0.15)
        poses.append(kpts)
        true_boxes.append(box)
    true_boxes = np.asarray(true_boxes)

    # Proposals: jittered copies of true boxes with high scores, the rest background.
    owner = rng.integers(0, num_persons, num_proposals)
    is_person = rng.random(num_proposals) < 0.6
    size = np.stack([true_boxes[:, 2] - true_boxes[:, 0], true_boxes[:, 3] - true_boxes[:, 1]], 1)
    jitter = rng.normal(0.0, 0.08, (num_proposals, 4)) * np.tile(size[owner], 2)
    person_boxes = true_boxes[owner] + jitter
    corner = rng.uniform(0, 1, (num_proposals, 2)) * (width, height)
    extent = rng.uniform(0.05, 0.6, (num_proposals, 2)) * (width, height)
    background = np.concatenate([corner, corner + extent], axis=1)
    boxes = np.where(is_person[:, None], person_boxes, background)
    boxes = np.concatenate(
        [np.minimum(boxes[:, :2], boxes[:, 2:]), np.maximum(boxes[:, :2], boxes[:, 2:])], 1
    )
    scores = np.where(
        is_person, rng.uniform(0.3, 1.0, num_proposals), rng.uniform(0.0, 0.5, num_proposals)
    )

    # Peaks: the persons' keypoints in random slots, distractors in some of the others.
    top_k = peaks_per_keypoint
    peaks = np.zeros((NUM_KEYPOINTS, top_k, 3))
    slot_of = np.stack(
        [rng.permutation(top_k)[:num_persons] for _ in range(NUM_KEYPOINTS)]
    )  # [17, N]
    peaks[..., 0] = rng.uniform(0, width, (NUM_KEYPOINTS, top_k))
    peaks[..., 1] = rng.uniform(0, height, (NUM_KEYPOINTS, top_k))
    peaks[..., 2] = rng.uniform(0.05, 0.5, (NUM_KEYPOINTS, top_k)) * (
        rng.random((NUM_KEYPOINTS, top_k)) < 0.7
    )
    for n, pose in enumerate(poses):
        peaks[np.arange(NUM_KEYPOINTS), slot_of[:, n]] = pose

    # Clutter: weak PAF support between some pairs of nearby peaks (the line integral's length
    # penalty and support test leave far-apart pairs at 0 in a real field).
    start = peaks[[a for a, _ in SKELETON]][:, :, None, :2]
    end = peaks[[b for _, b in SKELETON]][:, None, :, :2]
    near = np.linalg.norm(end - start, axis=-1) < 0.2 * height
    noisy = near & (rng.random((NUM_LIMBS, top_k, top_k)) < 0.5)
    limbs = rng.uniform(0.0, 0.4, (NUM_LIMBS, top_k, top_k)) * noisy
    for limb, (a, b) in enumerate(SKELETON):
        limbs[limb, slot_of[a], slot_of[b]] = rng.uniform(0.6, 1.0, num_persons)
    valid = peaks[..., 2] > 0
    limbs *= (
        valid[[a for a, _ in SKELETON]][:, :, None] & valid[[b for _, b in SKELETON]][:, None, :]
    )
    props = CoarseProposals(
        boxes_xyxy=boxes.astype(np.float32),
        box_scores=scores.astype(np.float32),
        peaks_xys=peaks.astype(np.float32),
        limb_scores=limbs.astype(np.float32),
    )
    return props, true_boxes
