"""Small job folders for the review gallery's tests: rows in ANNOTATION_SCHEMA over real JPEGs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.store.storage import image_id_for
from schemas.output import ANNOTATION_SCHEMA, COUNT_FIELDS, RETRY_KINDS
from tests.helpers import synthetic_jpeg

# A standing stick figure, as fractions of its box (COCO-17 order).
FIGURE = (
    (0.5, 0.1), (0.45, 0.08), (0.55, 0.08), (0.4, 0.1), (0.6, 0.1),
    (0.35, 0.25), (0.65, 0.25), (0.25, 0.4), (0.75, 0.4), (0.2, 0.55), (0.8, 0.55),
    (0.4, 0.55), (0.6, 0.55), (0.4, 0.75), (0.6, 0.75), (0.4, 0.95), (0.6, 0.95),
)  # fmt: skip


def person(
    box_xywh: tuple[float, float, float, float],
    pose_score: float,
    origin: str = "detected",
    keypoint_scores: list[float] | None = None,
) -> dict[str, Any]:
    """A person in ``box_xywh`` with the stick figure's keypoints."""
    x, y, w, h = box_xywh
    scores = keypoint_scores or [pose_score] * 17
    keypoints: list[float] = []
    for (fx, fy), s in zip(FIGURE, scores, strict=True):
        keypoints += [x + fx * w, y + fy * h, s]
    return {
        "box_xywh": list(box_xywh),
        "box_score": 0.9,
        "keypoints": keypoints,
        "pose_score": pose_score,
        "origin": origin,
    }


def _row(uri: str, **values: Any) -> dict[str, Any]:
    return {
        "image_id": image_id_for(uri),
        "uri": uri,
        "width": None,
        "height": None,
        "status": "ok",
        "error_kind": None,
        "error_message": None,
        "persons": [],
        "counts": dict.fromkeys(COUNT_FIELDS, 0),
        "storage_retries": dict.fromkeys(RETRY_KINDS, 0),
        **values,
    }


def ok_row(uri: str, size: tuple[int, int], persons: list[dict[str, Any]]) -> dict[str, Any]:
    return _row(uri, width=size[0], height=size[1], persons=persons)


def error_row(uri: str, kind: str, message: str) -> dict[str, Any]:
    return _row(uri, status="error", error_kind=kind, error_message=message)


def write_part(annotations: Path, index: int, rows: list[dict[str, Any]], run: int = 0) -> Path:
    """One part file named the way a job names them."""
    annotations.mkdir(parents=True, exist_ok=True)
    path = annotations / f"run-{run:03d}-part-{index:06d}-test{index}.parquet"
    pq.write_table(pa.Table.from_pylist(rows, schema=ANNOTATION_SCHEMA), path)
    return path


def make_job(root: Path, n_ok: int = 30, n_empty: int = 3, n_errors: int = 5, parts: int = 3,
             seed: int = 0) -> Path:  # fmt: skip
    """``root/out/job`` with ``parts`` part files over JPEGs in ``root/images``.

    Ok images get 1-3 persons with random pose scores (some keypoints below 0.2), image 0 has
    a recovered person, ``n_empty`` ok images have nobody, one ok row's image is missing
    (``gone.jpg``), and ``n_errors`` error rows of two kinds are spread over the parts.
    """
    rng = np.random.default_rng(seed)
    images = root / "images"
    images.mkdir(parents=True, exist_ok=True)
    size = (200, 150)
    rows: list[dict[str, Any]] = []
    for i in range(n_ok):
        path = images / f"img_{i:03d}.jpg"
        path.write_bytes(synthetic_jpeg(i, size))
        persons = []
        for j in range(int(rng.integers(1, 4))):
            kpt = [float(v) for v in rng.uniform(0.05, 1.0, 17)]
            score = float(np.round(rng.uniform(0.05, 1.0), 3))
            origin = "recovered" if (i == 0 and j == 0) else "detected"
            persons.append(person((10 + 60 * j, 10, 50, 120), score, origin, kpt))
        rows.append(ok_row(str(path), size, persons))
    for i in range(n_empty):
        path = images / f"empty_{i:02d}.jpg"
        path.write_bytes(synthetic_jpeg(100 + i, size))
        rows.append(ok_row(str(path), size, []))
    rows.append(ok_row(str(images / "gone.jpg"), size, [person((20, 20, 60, 100), 0.5)]))
    for i in range(n_errors):
        kind = "missing" if i % 2 else "unreadable"
        rows.append(error_row(str(images / f"bad_{i:02d}.jpg"), kind, f"<broken> #{i} & co"))
    order = rng.permutation(len(rows))
    annotations = root / "out" / "job" / "annotations"
    for p in range(parts):
        write_part(annotations, p, [rows[k] for k in order[p::parts]])
    return root / "out" / "job"


def _visibility_score(v: float, k: int, annotation_id: int) -> float:
    """A made-up keypoint score from a ground-truth visibility flag (varies per keypoint)."""
    jitter = ((annotation_id * 7 + k * 13) % 10) / 100.0
    return {2: 0.85 + jitter, 1: 0.4 + jitter}.get(int(v), 0.05)


def job_from_ground_truth(
    root: Path, datasets: list[Path], missing: str | None = None, errors: int = 2
) -> Path:
    """``root/out/job`` whose persons are the ground truth of COCO-17 datasets (real photos,
    real poses; keypoint scores made up from visibility, so occluded joints score lower and
    unlabelled ones, put at the box centre, are below 0.2). Each image's last person of three
    or more is marked recovered. The photo named ``missing`` is listed but not copied, and
    ``errors`` error rows are added. Images are copied under ``root/images``.
    """
    import json
    import shutil

    images = root / "images"
    images.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    for dataset in datasets:
        data = json.loads((dataset / "annotations.json").read_text())
        by_image: dict[int, list[dict[str, Any]]] = {}
        for ann in data["annotations"]:
            by_image.setdefault(ann["image_id"], []).append(ann)
        for image in data["images"]:
            target = images / image["file_name"]
            if image["file_name"] != missing:
                shutil.copyfile(dataset / "images" / image["file_name"], target)
            anns = by_image.get(image["id"], [])
            persons = []
            for j, ann in enumerate(anns):
                x, y, w, h = ann["bbox"]
                keypoints: list[float] = []
                for k in range(17):
                    kx, ky, v = ann["keypoints"][3 * k : 3 * k + 3]
                    if v == 0:
                        kx, ky = x + w / 2, y + h / 2
                    keypoints += [float(kx), float(ky), _visibility_score(v, k, ann["id"])]
                scores = [s for s in keypoints[2::3] if s > 0.2]
                persons.append(
                    {
                        "box_xywh": [float(x), float(y), float(w), float(h)],
                        "box_score": 0.9,
                        "keypoints": keypoints,
                        "pose_score": float(np.mean(scores)) if scores else 0.0,
                        "origin": "recovered"
                        if len(anns) >= 3 and j == len(anns) - 1
                        else "detected",
                    }
                )
            rows.append(ok_row(str(target), (image["width"], image["height"]), persons))
    for i in range(errors):
        kind, message = [
            ("missing", "no such object"),
            ("unreadable", "not a recognised image format"),
        ][i % 2]
        rows.append(error_row(str(images / f"broken_{i}.jpg"), kind, message))
    annotations = root / "out" / "job" / "annotations"
    write_part(annotations, 0, rows[: len(rows) // 2])
    write_part(annotations, 1, rows[len(rows) // 2 :])
    return root / "out" / "job"
