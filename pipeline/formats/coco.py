"""COCO person-keypoints files: written from a job (``export --format coco``) and from poses
read back from a review tool (``import``), with one writer; and checked when read
(``detpose eval --annotations``), with one reader.

The file loads in pycocotools (``COCO(path)``) and in CVAT's "COCO Keypoints 1.0" importer
(``categories[0].keypoints`` and ``skeleton``, ``iscrowd`` and ``bbox`` on every
annotation), and ``detpose train --annotations`` reads it.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable
from typing import Any, TextIO

import numpy as np
from pydantic import ValidationError

from model.evaluation.results import instance_score
from model.keypoints import KEYPOINT_NAMES, SKELETON
from pipeline.formats.common import (
    PERSON_LABEL,
    FormatError,
    ImageRecord,
    Pose,
    leaves_root,
    outside_reach,
    parse_json,
    validation_error,
    write_json_items,
)
from pipeline.store.outputs import strict_json
from schemas.formats import CocoAnnotation, CocoImage, CocoKeypointsFile

CATEGORY_ID = 1
# x, y and box numbers keep two decimals (CVAT's own precision); scores four.
_PX_DECIMALS = 2
_SCORE_DECIMALS = 4


def coco_category() -> dict[str, Any]:
    """The person category with the 17 keypoint names and COCO's 1-based skeleton."""
    return {
        "id": CATEGORY_ID,
        "name": PERSON_LABEL,
        "supercategory": PERSON_LABEL,
        "keypoints": list(KEYPOINT_NAMES),
        "skeleton": [[a + 1, b + 1] for a, b in SKELETON],
    }


def coco_image(record: ImageRecord) -> dict[str, Any]:
    return {
        "id": record.image_id,
        "file_name": record.name,
        "width": record.width,
        "height": record.height,
    }


def coco_keypoints(kpts_xyv: np.ndarray) -> list[float | int]:
    """``[17, 3]`` x, y, v → COCO's 51 numbers; an unlabelled keypoint (v=0) is ``0, 0, 0``."""
    out: list[float | int] = []
    for x, y, v in kpts_xyv:
        if v:
            out += [round(float(x), _PX_DECIMALS), round(float(y), _PX_DECIMALS), int(v)]
        else:
            out += [0, 0, 0]
    return out


def coco_annotation(ann_id: int, image_id: int, pose: Pose) -> dict[str, Any]:
    """One person; ``score`` (box score × pose score, as ``detpose eval`` ranks persons),
    ``pose_score`` and ``origin`` only for a pose with the job's scores."""
    box = [round(float(v), _PX_DECIMALS) for v in pose.box_xywh]
    ann: dict[str, Any] = {
        "id": ann_id,
        "image_id": image_id,
        "category_id": CATEGORY_ID,
        "bbox": box,
        "area": round(box[2] * box[3], _PX_DECIMALS),
        "keypoints": coco_keypoints(pose.kpts_xyv),
        "num_keypoints": int(np.count_nonzero(pose.kpts_xyv[:, 2])),
        "iscrowd": 0,
        "segmentation": [],
    }
    if pose.pose_score is not None:
        # The instance score that ranks persons in `detpose eval`, unrounded so that
        # scoring the export gives eval's AP; the pose score alone for reviewers.
        ann["score"] = instance_score(pose.box_score or 0.0, pose.pose_score)
        ann["pose_score"] = round(pose.pose_score, _SCORE_DECIMALS)
    if pose.origin is not None:
        ann["origin"] = pose.origin
    return ann


def write_coco(
    image_pass: Callable[[bool], Iterable[ImageRecord]], fh: TextIO, info: dict[str, Any]
) -> None:
    """Write a person-keypoints file to ``fh``, streaming.

    ``image_pass(with_poses)`` yields the images once per call: the file's ``images`` come
    from one pass (``with_poses=False``, which may skip reading the poses), its
    ``annotations`` from a second, so neither list is ever held in memory. Annotation ids
    count from 1 (pycocotools' evaluation takes id 0 for "no match").
    """
    fh.write('{"info":' + _json(info) + ',"licenses":[],"categories":[')
    fh.write(_json(coco_category()) + '],\n"images":[')
    write_json_items(fh, (coco_image(r) for r in image_pass(False)))
    fh.write('\n],\n"annotations":[')
    ids = itertools.count(1)
    write_json_items(
        fh,
        (coco_annotation(next(ids), r.image_id, p) for r in image_pass(True) for p in r.poses),
    )
    fh.write("\n]}\n")


def _json(value: Any) -> str:
    return strict_json(value, separators=(",", ":"))


def _unique(records: Iterable[tuple[int, Any]], kind: str, what: str, source: str) -> None:
    """Refuse two records of ``kind`` (``images``) with one key, naming both by index."""
    first: dict[Any, int] = {}
    for index, key in records:
        j = first.setdefault(key, index)
        if j != index:
            raise FormatError(
                f"{source}: {kind}[{j}] and {kind}[{index}] have the same {what} {key!r}; "
                f"each must be unique"
            )


def _annotation_problem(ann: CocoAnnotation, image: CocoImage, keypoints: int) -> str | None:
    """Why an annotation cannot be scored against its image; None when it can."""
    if len(ann.keypoints) != 3 * keypoints:
        return (
            f"{len(ann.keypoints) // 3} keypoints; this dataset has {keypoints} (wrong --dataset?)"
        )
    x, y, w, h = ann.bbox
    if outside_reach(np.array([[x, y], [x + w, y + h]]), image.width, image.height):
        return (
            f"bbox {ann.bbox} lies more than an image size outside its image "
            f"({image.width} x {image.height})"
        )
    xyv = np.asarray(ann.keypoints, dtype=np.float64).reshape(-1, 3)
    if outside_reach(xyv[xyv[:, 2] > 0, :2], image.width, image.height):
        return (
            f"a labelled keypoint lies more than an image size outside its image "
            f"({image.width} x {image.height})"
        )
    return None


def read_coco_keypoints(
    data: bytes, source: str, keypoints: int, images_root: str | None = None
) -> dict[str, Any]:
    """A COCO person-keypoints file, parsed and checked whole; returns the parsed JSON.

    Every record must pass ``schemas.formats.CocoKeypointsFile``; image ids, annotation ids
    and file names are unique; every annotation names an image and a category of the file,
    has ``keypoints`` keypoints and lies within reach of its image. With ``images_root`` (the
    folder the file names are joined to) no file name may climb out of it.

    Raises:
        FormatError: one line naming ``source``, the record (index and id) and the rule.
    """
    raw = parse_json(data, source)
    try:
        parsed = CocoKeypointsFile.model_validate(raw)
    except ValidationError as exc:
        raise validation_error(source, exc, raw) from None
    _unique(((i, im.id) for i, im in enumerate(parsed.images)), "images", "id", source)
    _unique(
        ((i, im.file_name) for i, im in enumerate(parsed.images)), "images", "file_name", source
    )
    _unique(((i, a.id) for i, a in enumerate(parsed.annotations)), "annotations", "id", source)
    if images_root is not None:
        for i, image in enumerate(parsed.images):
            if leaves_root(image.file_name):
                raise FormatError(
                    f"{source}: images[{i}] (id {image.id}): file_name {image.file_name!r} "
                    f"climbs out of --images {images_root}; refused"
                )
    images = {image.id: image for image in parsed.images}
    categories = {category.id for category in parsed.categories}
    for i, ann in enumerate(parsed.annotations):
        where = f"{source}: annotations[{i}] (id {ann.id})"
        image = images.get(ann.image_id)
        if image is None:
            raise FormatError(f"{where}: image_id {ann.image_id} is not the id of any image")
        if ann.category_id not in categories:
            raise FormatError(f"{where}: category_id {ann.category_id} is not in categories")
        problem = _annotation_problem(ann, image, keypoints)
        if problem:
            raise FormatError(f"{where}: {problem}")
    return raw
