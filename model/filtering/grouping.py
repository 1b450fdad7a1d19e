"""PoseExtractor of Algorithm 1 (line 2): PAF grouping of peaks into coarse poses, poses to boxes.

Plain numpy on one image's compact stage-1 output; coordinates are whatever the peaks
are in (image pixels inside the filter).
"""

from __future__ import annotations

import numpy as np

from model.codecs.boxes import box_iou, kpt2box
from model.keypoints import NUM_KEYPOINTS, SKELETON

# A keypoint counts as inside a box when inside the box grown by this fraction of its size:
# detectors often cut a wrist or an ankle by a few pixels.
INSIDE_TOLERANCE = 0.1
# A coarse pose needs at least this many keypoints to be a pose at all.
MIN_POSE_KEYPOINTS = 2


def match_limb(scores_kk: np.ndarray, min_score: float) -> list[tuple[int, int, float]]:
    """Greedy one-to-one matching for one limb: best pair first, each peak used at most once.

    Args:
        scores_kk: ``[K, K]`` PAF scores between peaks of the limb's two keypoint types.
        min_score: pairs must score more than this.

    Returns:
        ``(i, j, score)`` connections, highest score first (ties: lower ``i``, then ``j``).
    """
    rows, cols = np.nonzero(scores_kk > min_score)
    values = scores_kk[rows, cols]
    order = np.lexsort((cols, rows, -values))
    most = min(scores_kk.shape)
    used_i, used_j, connections = set(), set(), []
    for i, j, value in zip(
        rows[order].tolist(), cols[order].tolist(), values[order].tolist(), strict=True
    ):
        if i in used_i or j in used_j:
            continue
        connections.append((i, j, value))
        used_i.add(i)
        used_j.add(j)
        if len(connections) == most:
            break
    return connections


def group_poses(
    peaks_xys: np.ndarray,
    limb_scores: np.ndarray,
    min_limb_score: float = 0.05,
    min_pose_keypoints: int = MIN_POSE_KEYPOINTS,
) -> np.ndarray:
    """Group keypoint peaks into coarse poses with the part affinity field scores.

    Each limb first keeps a one-to-one set of connections (:func:`match_limb`). All limbs'
    connections are then merged greedily, highest PAF score first: a connection joins the
    two peaks' poses unless that would give a pose two peaks of one keypoint type (ties in
    score go to the lower limb, then peak, index).

    Args:
        peaks_xys: ``[17, K, 3]`` ``(x, y, score)``; score 0 marks padding.
        limb_scores: ``[19, K, K]`` PAF scores in ``SKELETON`` order.
        min_limb_score: connections must score more than this.
        min_pose_keypoints: poses with fewer keypoints are not returned.

    Returns:
        ``[M, 17, 3]`` float32 poses ``(x, y, score)``, zeros for missing keypoints, sorted by
        decreasing number of keypoints, then decreasing summed keypoint score.
    """
    peaks = np.asarray(peaks_xys, dtype=np.float32)
    limb_scores = np.asarray(limb_scores)
    top_k = peaks.shape[1]
    valid = peaks[..., 2] > 0
    connections = []  # (score, limb, i, j)
    for limb, (a, b) in enumerate(SKELETON):
        pair_valid = valid[a][:, None] & valid[b][None, :]
        limb_kk = np.where(pair_valid, limb_scores[limb], 0.0)
        connections += [(s, limb, i, j) for i, j, s in match_limb(limb_kk, min_limb_score)]
    connections.sort(key=lambda c: (-c[0], c[1], c[2], c[3]))

    # Plain lists: a few hundred tiny updates are much faster than numpy scalar indexing.
    owner = [[-1] * top_k for _ in range(NUM_KEYPOINTS)]  # pose id of each peak
    members: dict[int, list[int]] = {}  # pose id -> peak index per keypoint type, -1 none
    next_id = 0
    for _, limb, i, j in connections:
        a, b = SKELETON[limb]
        pose_a, pose_b = owner[a][i], owner[b][j]
        if pose_a < 0 and pose_b < 0:
            new = [-1] * NUM_KEYPOINTS
            new[a], new[b] = i, j
            members[next_id] = new
            owner[a][i] = owner[b][j] = next_id
            next_id += 1
        elif pose_b < 0:
            if members[pose_a][b] < 0:
                members[pose_a][b] = j
                owner[b][j] = pose_a
        elif pose_a < 0:
            if members[pose_b][a] < 0:
                members[pose_b][a] = i
                owner[a][i] = pose_b
        elif pose_a != pose_b:
            keep, drop = members[pose_a], members[pose_b]
            if all(x < 0 or y < 0 for x, y in zip(keep, drop, strict=True)):
                for kpt, peak in enumerate(drop):
                    if peak >= 0:
                        keep[kpt] = peak
                        owner[kpt][peak] = pose_a
                del members[pose_b]

    poses = []
    for index_list in members.values():
        index = np.asarray(index_list)
        if (index >= 0).sum() < min_pose_keypoints:
            continue
        pose = np.zeros((NUM_KEYPOINTS, 3), dtype=np.float32)
        found = np.flatnonzero(index >= 0)
        pose[found] = peaks[found, index[found]]
        poses.append(pose)
    if not poses:
        return np.zeros((0, NUM_KEYPOINTS, 3), dtype=np.float32)
    stacked = np.stack(poses)
    found = stacked[..., 2] > 0
    order = np.lexsort(
        (stacked[:, :, 1].sum(1), stacked[:, :, 0].sum(1), -stacked[..., 2].sum(1), -found.sum(1))
    )
    return stacked[order]


def keypoints_inside(
    boxes_xyxy: np.ndarray, poses_xys: np.ndarray, tolerance: float = INSIDE_TOLERANCE
) -> np.ndarray:
    """Which found keypoints of each pose lie inside each box (grown by ``tolerance``).

    Args:
        boxes_xyxy: ``[P, 4]`` boxes.
        poses_xys: ``[M, 17, 3]`` poses; keypoints with score ``> 0`` are found.
        tolerance: fraction of the box's width/height added on each side.

    Returns:
        ``[P, M, 17]`` bool.
    """
    boxes = np.asarray(boxes_xyxy, dtype=np.float64).reshape(-1, 4)
    poses = np.asarray(poses_xys, dtype=np.float64)
    pad_w = (boxes[:, 2] - boxes[:, 0]) * tolerance
    pad_h = (boxes[:, 3] - boxes[:, 1]) * tolerance
    x, y = poses[None, :, :, 0], poses[None, :, :, 1]
    inside_x = (x >= (boxes[:, 0] - pad_w)[:, None, None]) & (
        x <= (boxes[:, 2] + pad_w)[:, None, None]
    )
    inside_y = (y >= (boxes[:, 1] - pad_h)[:, None, None]) & (
        y <= (boxes[:, 3] + pad_h)[:, None, None]
    )
    return inside_x & inside_y & (poses[None, :, :, 2] > 0)


def assign_poses_to_boxes(
    boxes_xyxy: np.ndarray,
    poses_xys: np.ndarray,
    inside_fraction: float = 0.8,
    kpt2box_margin: float = 0.15,
) -> tuple[np.ndarray, np.ndarray]:
    """Pair box proposals with coarse poses (the ``(b, p)`` set of Algorithm 1, line 2).

    A pose lies in a box when at least ``inside_fraction`` of its found keypoints are inside.
    Of the poses lying in a box, the box's own pose is the one whose keypoint box
    (:func:`model.codecs.boxes.kpt2box`) overlaps it most (ties: the pose listed first).

    Args:
        boxes_xyxy: ``[P, 4]`` box proposals.
        poses_xys: ``[M, 17, 3]`` poses from :func:`group_poses`.
        inside_fraction: share of a pose's keypoints that must lie in the box.
        kpt2box_margin: margin of the keypoint boxes compared with the proposals.

    Returns:
        ``best_pose``: ``[P]`` int64 index of each box's own pose, -1 if none lies in it;
        ``pose_in_box``: ``[P, M]`` bool, pose ``m`` lies in box ``p``.
    """
    boxes = np.asarray(boxes_xyxy, dtype=np.float64).reshape(-1, 4)
    poses = np.asarray(poses_xys, dtype=np.float64).reshape(-1, NUM_KEYPOINTS, 3)
    if len(boxes) == 0 or len(poses) == 0:
        return np.full(len(boxes), -1, dtype=np.int64), np.zeros((len(boxes), len(poses)), bool)
    num_found = (poses[..., 2] > 0).sum(axis=1)  # [M]
    num_inside = keypoints_inside(boxes, poses).sum(axis=2)  # [P, M]
    pose_in_box = (num_found[None, :] > 0) & (num_inside >= inside_fraction * num_found[None, :])
    fit = np.where(pose_in_box, box_iou(boxes, kpt2box(poses, kpt2box_margin)), -1.0)
    best = np.argmax(fit, axis=1)
    best = np.where(pose_in_box[np.arange(len(boxes)), best], best, -1)
    return best.astype(np.int64), pose_in_box
