"""Annotation rows → COCO results (the format pycocotools' ``loadRes`` reads).

One keypoint result and one box result per predicted person. The instance score ranks a
person among the image's detections (COCOeval ignores the per-keypoint scores): it is
``box_score × pose_score``, the top-down practice (box confidence times the mean keypoint
score above 0.2).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from model.keypoints import NUM_KEYPOINTS, pose_oks

PERSON_CATEGORY_ID = 1


def instance_score(box_score: float, pose_score: float) -> float:
    """How sure we are of a whole person: box score × pose score."""
    return float(box_score) * float(pose_score)


# Ways to rank a person among an image's detections; "product" (instance_score) is DetPose's,
# measured best on the real crowd set (docs/evaluation.md, "Crowds"); the others are kept to compare.
RANKINGS: dict[str, Callable[[float, float], float]] = {
    "product": instance_score,
    "box": lambda box_score, pose_score: float(box_score),
    "pose": lambda box_score, pose_score: float(pose_score),
}


def rows_to_results(
    rows: Iterable[Mapping[str, Any]], image_ids: Mapping[str, int], rank_by: str = "product"
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Keypoint and box results of the ``ok`` rows whose ``uri`` is in ``image_ids``.

    Args:
        rows: annotation rows (``uri``, ``status``, ``persons``), e.g. ``Table.to_pylist()``.
        image_ids: the ground truth's image id for each URI.
        rank_by: the score of each result, a key of ``RANKINGS``.

    Returns:
        ``(keypoint_results, box_results)``, in row and person order.
    """
    keypoints, boxes = [], []
    for row in rows:
        if row["status"] != "ok" or row["uri"] not in image_ids:
            continue
        image_id = image_ids[row["uri"]]
        for person in row["persons"]:
            common = {
                "image_id": image_id,
                "category_id": PERSON_CATEGORY_ID,
                "score": RANKINGS[rank_by](person["box_score"], person["pose_score"]),
            }
            keypoints.append({**common, "keypoints": [float(v) for v in person["keypoints"]]})
            boxes.append({**common, "bbox": [float(v) for v in person["box_xywh"]]})
    return keypoints, boxes


# Two predicted persons of one image whose poses agree above this OKS refined one body twice.
COLLAPSE_OKS = 0.9
# Keypoints scoring below this are left out of that comparison (a refiner guesses every
# keypoint; the pose score ignores the same ones).
COLLAPSE_MIN_KEYPOINT_SCORE = 0.2


def collapsed_pairs(
    keypoint_results: Sequence[Mapping[str, Any]],
    oks_threshold: float = COLLAPSE_OKS,
    min_keypoint_score: float = COLLAPSE_MIN_KEYPOINT_SCORE,
) -> int:
    """Pairs of predicted persons in one image on one body: symmetric OKS
    (``model.keypoints.pose_oks``) above ``oks_threshold`` between their poses.

    Args:
        keypoint_results: COCO keypoint results (``image_id``, 17 × ``(x, y, score)``).
        oks_threshold: pairs above this count.
        min_keypoint_score: keypoints scoring below this are not compared.
    """
    by_image: dict[Any, list[np.ndarray]] = defaultdict(list)
    for result in keypoint_results:
        kpts = np.asarray(result["keypoints"], np.float64).reshape(NUM_KEYPOINTS, 3).copy()
        kpts[kpts[:, 2] < min_keypoint_score, 2] = 0.0
        by_image[result["image_id"]].append(kpts)
    pairs = 0
    for poses in by_image.values():
        if len(poses) > 1:
            similarity = pose_oks(np.stack(poses), np.stack(poses))
            pairs += int(np.triu(similarity > oks_threshold, k=1).sum())
    return pairs
