"""A job folder for the export and import tests, from the real COCO excerpt in tests/data.

Its ok rows are the four COCO sample images with their true persons as DetPose would write
them: real boxes and keypoints (moved by a known sub-pixel offset, so a round trip to
0.01 px is really tested), keypoint scores that fall in each visibility band, pose scores as
the job computes them (mean of keypoint scores above 0.2), one recovered person, and the
sample's persons without keypoints (pose score 0, below every --min-score). Besides them: an
error row, an ok image without persons, and an image with a person reaching past its border.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from tests.review_fixtures import error_row, ok_row, write_part

COCO_SAMPLE = Path(__file__).resolve().parent / "data" / "coco_sample"
# Keypoint scores by COCO visibility in the sample: v=2 visible, v=1 occluded, v=0 unlabelled;
# with the default thresholds (0.2, 0.5) they come back as v=2, v=1, v=0.
SCORE_BY_V = {2: 0.87, 1: 0.31, 0: 0.07}
RECOVERED_ANN_ID = 442619
EDGE_SIZE = (300, 200)


def pose_score(scores: np.ndarray) -> float:
    """The job's pose score: the mean keypoint score above 0.2 (0 without one)."""
    above = scores[scores > 0.2]
    return float(above.mean()) if above.size else 0.0


def coco_person(ann: dict[str, Any], offset: float) -> dict[str, Any]:
    """A sample annotation as a ``persons`` element; unlabelled keypoints are put at the box
    centre (the job always has a place for each keypoint)."""
    kpts = np.asarray(ann["keypoints"], dtype=np.float64).reshape(17, 3)
    x, y, w, h = ann["bbox"]
    xy = np.where(kpts[:, 2:] > 0, kpts[:, :2] + offset, [x + w / 2, y + h / 2])
    scores = np.array([SCORE_BY_V[int(v)] for v in kpts[:, 2]])
    origin = "recovered" if ann["id"] == RECOVERED_ANN_ID else "detected"
    return person(ann["bbox"], xy, scores, origin)


def person(box_xywh: Any, xy: np.ndarray, scores: np.ndarray, origin: str) -> dict[str, Any]:
    return {
        "box_xywh": [float(v) for v in box_xywh],
        "box_score": 0.8,
        "keypoints": np.column_stack([xy, scores]).reshape(-1).tolist(),
        "pose_score": pose_score(scores),
        "origin": origin,
    }


def sample_rows() -> list[dict[str, Any]]:
    """The rows described in the module docstring, in a fixed order."""
    coco = json.loads((COCO_SAMPLE / "annotations.json").read_text())
    rows = []
    for i, img in enumerate(coco["images"]):
        anns = [a for a in coco["annotations"] if a["image_id"] == img["id"] and not a["iscrowd"]]
        persons = [coco_person(a, offset=0.123 + 0.211 * k) for k, a in enumerate(anns)]
        uri = str(COCO_SAMPLE / "images" / img["file_name"])
        rows.append(ok_row(uri, (img["width"], img["height"]), persons))
        if i == 1:
            rows.append(error_row(str(COCO_SAMPLE / "images" / "gone.jpg"), "missing", "no such"))
    rows.append(ok_row(str(COCO_SAMPLE / "images" / "empty.jpg"), (320, 240), []))
    # A person cut by the left and bottom borders, two keypoints outside the image.
    edge_xy = np.array([[40.0 + 4 * k, 150.0 + 3 * k] for k in range(17)])
    edge_xy[0] = [-5.5, 160.0]
    edge_xy[16] = [60.0, 212.25]
    edge = person([-20.0, 130.0, 100.0, 90.0], edge_xy, np.full(17, 0.9), "detected")
    rows.append(ok_row(str(COCO_SAMPLE / "images" / "edge.jpg"), EDGE_SIZE, [edge]))
    return rows


def make_job(folder: Path, rows: list[dict[str, Any]] | None = None, parts: int = 2) -> Path:
    """``folder/out/job`` holding ``rows`` (default ``sample_rows()``) in ``parts`` part files."""
    rows = sample_rows() if rows is None else rows
    annotations = folder / "out" / "job" / "annotations"
    for p in range(parts):
        write_part(annotations, p, rows[p::parts])
    return folder / "out" / "job"


def expected_images(rows: list[dict[str, Any]], min_score: float = 0.2) -> dict[int, dict]:
    """What an export keeps, by image id: ok rows with their persons at or above
    ``min_score``."""
    return {
        r["image_id"]: {**r, "persons": [p for p in r["persons"] if p["pose_score"] >= min_score]}
        for r in rows
        if r["status"] == "ok"
    }
