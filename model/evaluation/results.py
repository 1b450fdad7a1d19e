"""Annotation rows → COCO results (the format pycocotools' ``loadRes`` reads).

One keypoint result and one box result per predicted person. The instance score ranks a
person among the image's detections (COCOeval ignores the per-keypoint scores): it is
``box_score × pose_score``, the top-down practice (box confidence times the mean keypoint
score above 0.2).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

PERSON_CATEGORY_ID = 1


def instance_score(box_score: float, pose_score: float) -> float:
    """How sure we are of a whole person: box score × pose score."""
    return float(box_score) * float(pose_score)


def rows_to_results(
    rows: Iterable[Mapping[str, Any]], image_ids: Mapping[str, int]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Keypoint and box results of the ``ok`` rows whose ``uri`` is in ``image_ids``.

    Args:
        rows: annotation rows (``uri``, ``status``, ``persons``), e.g. ``Table.to_pylist()``.
        image_ids: the ground truth's image id for each URI.

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
                "score": instance_score(person["box_score"], person["pose_score"]),
            }
            keypoints.append({**common, "keypoints": [float(v) for v in person["keypoints"]]})
            boxes.append({**common, "bbox": [float(v) for v in person["box_xywh"]]})
    return keypoints, boxes
