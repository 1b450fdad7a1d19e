"""Stage 2: coarse-pose based proposal filtering (paper §III-B, Algorithm 1) and its baselines.

Pure numpy on one image's :class:`~model.stage_data.CoarseProposals` (image pixels). The mode
comes from ``FilterSpec.mode``:

- ``coarse``: Algorithm 1. Boxes in decreasing score order, each with its own coarse pose
  (:func:`model.filtering.grouping.assign_poses_to_boxes`). A box whose pose has ``n_kpt <= δ_kpt``
  is dropped (likely false detection); a box whose pose matches an accepted pose by OKS
  above ``duplicate_oks`` is dropped (duplicate); otherwise it is accepted. Then every
  valid pose lying inside an accepted box that no accepted or recovered person explains
  becomes a recovered person with box ``kpt2box(pose)`` (likely miss detection).
- ``nms``: greedy IoU-NMS on the boxes; ``oks_nms``: greedy NMS by OKS of the boxes' coarse
  poses; ``none``: every box above the score floor.

Every mode returns :class:`~model.stage_data.FilteredPersons` with coarse poses attached where one
lies in the box.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from model.codecs.boxes import box_areas, box_iou, clip_boxes, kpt2box
from model.filtering.grouping import MIN_POSE_KEYPOINTS, assign_poses_to_boxes, group_poses
from model.keypoints import NUM_KEYPOINTS, oks_matrix, pose_oks
from model.stage_data import CoarseProposals, FilterCounts, FilteredPersons
from schemas.filtering import FilterSpec

__all__ = ["filter_proposals", "nms_iou", "oks_nms"]


def _greedy_suppress(
    similarity_to: Callable[[int], np.ndarray], scores: np.ndarray, threshold: float
) -> np.ndarray:
    """Greedy NMS; ``similarity_to(i)`` is ``[N]`` similarity of every item to kept item ``i``.

    A callable, so that costly similarities (OKS) are computed only for the kept items.
    """
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    suppressed = np.zeros(len(order), dtype=bool)
    keep = []
    for i in order.tolist():
        if suppressed[i]:
            continue
        keep.append(i)
        suppressed |= similarity_to(i) > threshold
    return np.asarray(keep, dtype=np.int64)


def nms_iou(boxes_xyxy: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Greedy IoU non-maximum suppression.

    Args:
        boxes_xyxy: ``[N, 4]`` boxes.
        scores: ``[N]`` scores (ties keep the lower index first).
        iou_threshold: a box overlapping a kept one by IoU above this is suppressed.

    Returns:
        ``[k]`` int64 indices of kept boxes, by decreasing score.
    """
    iou = box_iou(boxes_xyxy, boxes_xyxy)  # cheap enough to compute whole
    return _greedy_suppress(iou.__getitem__, scores, iou_threshold)


def oks_nms(
    kpts_xys: np.ndarray, scores: np.ndarray, areas: np.ndarray, oks_threshold: float
) -> np.ndarray:
    """Greedy non-maximum suppression by OKS between poses.

    Args:
        kpts_xys: ``[N, 17, 3]`` poses ``(x, y, score)``; keypoints with score ``> 0`` count.
        scores: ``[N]`` scores.
        areas: ``[N]`` areas (square pixels) that scale each pose's OKS as the reference.
        oks_threshold: a pose with OKS above this against a kept one is suppressed.

    Returns:
        ``[k]`` int64 indices of kept poses, by decreasing score.
    """
    kpts, areas = np.asarray(kpts_xys), np.asarray(areas)
    has_keypoints = (kpts[..., 2] > 0).any(axis=-1)

    def oks_to(i: int) -> np.ndarray:
        if not has_keypoints[i]:  # a pose without keypoints suppresses nothing
            return np.zeros(len(kpts))
        return oks_matrix(kpts[i : i + 1], areas[i : i + 1], kpts)[0]

    return _greedy_suppress(oks_to, scores, oks_threshold)


def _score_order(boxes_xyxy: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Indices by decreasing score, ties by box coordinates: independent of input order."""
    return np.lexsort(
        (boxes_xyxy[:, 3], boxes_xyxy[:, 2], boxes_xyxy[:, 1], boxes_xyxy[:, 0], -scores)
    )


def _coarse_poses(props: CoarseProposals, spec: FilterSpec, usable: np.ndarray) -> np.ndarray:
    """Coarse poses ``[M, 17, 3]`` of keypoints at or above the keypoint score threshold:
    stage 1's own poses when it grouped them (those of the ``usable`` proposals, or of a pool
    those scoring at least the box score threshold: a pose is as trustworthy as its own
    proposal's score), else the peaks grouped by PAF scores."""
    if props.poses_xys is not None:
        trusted = (
            usable
            if props.pose_scores is None
            else np.asarray(props.pose_scores) >= spec.box_score_threshold
        )
        poses = np.asarray(props.poses_xys, dtype=np.float32)[trusted].copy()
        poses[poses[..., 2] < spec.keypoint_score_threshold] = 0.0
        return poses[(poses[..., 2] > 0).sum(axis=1) >= MIN_POSE_KEYPOINTS]
    peaks = np.asarray(props.peaks_xys, dtype=np.float32).copy()
    peaks[peaks[..., 2] < spec.keypoint_score_threshold] = 0.0
    return group_poses(peaks, props.limb_scores, min_pose_keypoints=MIN_POSE_KEYPOINTS)


def _algorithm1(
    best_pose: np.ndarray,
    pose_in_box: np.ndarray,
    poses: np.ndarray,
    spec: FilterSpec,
) -> tuple[list[tuple[int, int]], list[tuple[int, int]], int, int]:
    """The loop of Algorithm 1 over boxes sorted by decreasing score (line 1).

    Returns:
        accepted ``(box, pose)`` pairs, recovered ``(parent box, pose)`` pairs,
        the number dropped for few keypoints, and the number dropped as duplicates.
    """
    n_kpt = (poses[..., 2] > 0).sum(axis=1)
    valid_pose = n_kpt > spec.min_keypoints
    # Symmetric OKS over the keypoints both poses found: a fragment of an accepted person
    # (a cross-tile or cross-scale partial pose) repeats it, whichever of the two came first.
    # duplicate_of[a, p]: pose p repeats pose a (a pose repeats itself when it has keypoints).
    duplicate_of = pose_oks(poses, poses) > spec.duplicate_oks
    explained = np.zeros(len(poses), dtype=bool)  # repeats an accepted or recovered person's pose

    def take(pose: int) -> None:
        explained[pose] = True
        explained[:] |= duplicate_of[pose]

    accepted, few, duplicate = [], 0, 0
    for box, pose in enumerate(best_pose.tolist()):
        if pose < 0 or not valid_pose[pose]:
            few += 1  # lines 4-5: likely a false detection
        elif explained[pose]:
            duplicate += 1  # §III-B: the pose is already in the refined set
        else:
            accepted.append((box, pose))  # line 13
            take(pose)
    # Lines 7-10, after the loop so that a real box beats a box made from keypoints.
    recovered = []
    for box, _ in accepted:
        for pose in np.flatnonzero(pose_in_box[box] & valid_pose).tolist():
            if not explained[pose]:
                recovered.append((box, pose))
                take(pose)
    return accepted, recovered, few, duplicate


def _baseline_keep(
    mode: str, boxes: np.ndarray, scores: np.ndarray, kpts: np.ndarray, spec: FilterSpec
) -> np.ndarray:
    """Indices kept by a baseline mode ('nms', 'oks_nms', 'none')."""
    baselines: dict[str, Callable[[], np.ndarray]] = {
        "nms": lambda: nms_iou(boxes, scores, spec.nms_iou),
        "oks_nms": lambda: oks_nms(kpts, scores, box_areas(boxes), spec.oks_nms),
        "none": lambda: np.arange(len(boxes), dtype=np.int64),
    }
    if mode not in baselines:
        raise ValueError(
            f"got {mode!r} for FilterSpec.mode; expected 'coarse', 'nms', 'oks_nms' or 'none'"
        )
    return np.sort(baselines[mode]())


def filter_proposals(
    props: CoarseProposals, spec: FilterSpec, image_wh: tuple[int, int]
) -> FilteredPersons:
    """Turn one image's stage-1 proposals into the persons to refine.

    Args:
        props: the image's proposals, peaks and limb scores (image pixels).
        spec: mode and thresholds (``FilterSpec``).
        image_wh: image ``(width, height)``; output boxes are clipped to it.

    Returns:
        Persons sorted by decreasing score (ties: detected before recovered, then box
        coordinates), at most ``spec.max_persons``, with the image's counters. The result
        does not depend on the order of the proposals.
    """
    boxes_all = clip_boxes(np.asarray(props.boxes_xyxy, dtype=np.float32), image_wh)
    scores_all = np.asarray(props.box_scores, dtype=np.float32)
    usable = (scores_all >= spec.box_score_threshold) & (box_areas(boxes_all) > 0)
    order = _score_order(boxes_all, scores_all)
    order = order[usable[order]]
    boxes, scores = boxes_all[order], scores_all[order]
    poses = _coarse_poses(props, spec, usable)
    best_pose, pose_in_box = assign_poses_to_boxes(
        boxes, poses, spec.inside_fraction, spec.kpt2box_margin
    )
    padded = np.concatenate([poses, np.zeros((1, NUM_KEYPOINTS, 3), np.float32)])  # [-1] = none
    few = duplicate = 0
    if spec.mode == "coarse":
        accepted, recovered, few, duplicate = _algorithm1(best_pose, pose_in_box, poses, spec)
    else:
        keep = _baseline_keep(spec.mode, boxes, scores, padded[best_pose], spec)
        accepted, recovered = [(int(b), int(best_pose[b])) for b in keep], []
        duplicate = len(boxes) - len(keep)

    rec_boxes = clip_boxes(
        kpt2box(padded[[p for _, p in recovered]], spec.kpt2box_margin), image_wh
    )
    rec_kept = box_areas(rec_boxes) > 0
    recovered = [r for r, ok in zip(recovered, rec_kept, strict=True) if ok]
    rec_boxes = rec_boxes[rec_kept]
    rec_scores = [scores[b] * padded[p, :, 2][padded[p, :, 2] > 0].mean() for b, p in recovered]

    out_boxes = np.concatenate([boxes[[b for b, _ in accepted]].reshape(-1, 4), rec_boxes]).astype(
        np.float32
    )
    out_scores = np.concatenate([scores[[b for b, _ in accepted]], rec_scores]).astype(np.float32)
    out_kpts = padded[[p for _, p in accepted] + [p for _, p in recovered]].reshape(
        -1, NUM_KEYPOINTS, 3
    )
    out_recovered = np.arange(len(out_scores)) >= len(accepted)
    final = np.lexsort(
        (
            out_boxes[:, 3],
            out_boxes[:, 2],
            out_boxes[:, 1],
            out_boxes[:, 0],
            out_recovered,
            -out_scores,
        )
    )[: spec.max_persons]
    num_accepted = int((~out_recovered[final]).sum())
    counts = FilterCounts(
        proposals=len(scores_all),
        # Unusable boxes, and accepted persons beyond max_persons.
        dropped_low_score=int((~usable).sum()) + len(accepted) - num_accepted,
        dropped_few_keypoints=few,
        dropped_duplicate=duplicate,
        recovered=len(final) - num_accepted,
        accepted=num_accepted,
    )
    return FilteredPersons(
        boxes_xyxy=out_boxes[final],
        box_scores=out_scores[final],
        coarse_kpts_xys=out_kpts[final].astype(np.float32),
        recovered=out_recovered[final],
        counts=counts,
    )
