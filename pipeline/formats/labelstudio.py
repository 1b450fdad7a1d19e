"""Label Studio: a job's poses as tasks with predictions, their labeling config, and the
reviewed tasks (Label Studio's JSON export) read back.

Each ok image is a task ``{"data": {"image", "width", "height"}, "predictions": [...]}``.
A person is a ``rectanglelabels`` region; each labelled keypoint (v > 0) a
``keypointlabels`` region whose ``parentID`` is its person's rectangle. Coordinates are
percentages of the image (0-100, clipped). Label Studio keypoints carry no visibility, so
occluded (v=1) and visible (v=2) keypoints both become regions, and every keypoint region
reads back as v=2; an unlabelled one (v=0) has no region.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from typing import Any, TextIO

import numpy as np
from pydantic import TypeAdapter, ValidationError

from model.keypoints import KEYPOINT_NAMES, NUM_KEYPOINTS
from pipeline.formats.common import (
    PERSON_LABEL,
    FormatError,
    ImageList,
    ImageNames,
    ImageRecord,
    ImportSummary,
    Pose,
    box_around,
    clipped,
    parse_json,
    validation_error,
    write_json_items,
)
from schemas.formats import LsKeypoint, LsRectangle, LsTask

# Names in the labeling config: the image object and the two controls that label it.
IMAGE_OBJECT = "image"
BOX_CONTROL = "box"
KEYPOINT_CONTROL = "keypoints"
POINT_SIZE_PERCENT = 0.5  # how large Label Studio draws a keypoint
_PERCENT_DECIMALS = 6  # 1e-6 % of a 10,000 px side is 1e-4 px
_SCORE_DECIMALS = 4
_COLORS = {"left": "#1f77b4", "right": "#ff7f0e", "centre": "#2ca02c"}


def labeling_config() -> str:
    """The labeling config the tasks' ``from_name``/``to_name`` refer to. Each keypoint label
    has a ``model_index`` (its COCO order), which Label Studio's own COCO export reads."""
    view = ET.Element("View")
    ET.SubElement(
        view, "Image", {"name": IMAGE_OBJECT, "value": f"${IMAGE_OBJECT}", "zoom": "true"}
    )
    boxes = ET.SubElement(view, "RectangleLabels", {"name": BOX_CONTROL, "toName": IMAGE_OBJECT})
    ET.SubElement(boxes, "Label", {"value": PERSON_LABEL, "background": "#d62728"})
    points = ET.SubElement(
        view,
        "KeyPointLabels",
        {"name": KEYPOINT_CONTROL, "toName": IMAGE_OBJECT, "strokeWidth": "2"},
    )
    for index, name in enumerate(KEYPOINT_NAMES):
        side = name.split("_", 1)[0] if "_" in name else "centre"
        attrs = {"value": name, "model_index": str(index), "background": _COLORS[side]}
        ET.SubElement(points, "Label", attrs)
    ET.indent(view, space="  ")
    return ET.tostring(view, encoding="unicode") + "\n"


def _percent(values_px: np.ndarray, size: tuple[int, int]) -> list[list[float]]:
    """``[N, 2]`` x, y pixels as percentages of the image ``size`` (w, h), clipped to 0-100."""
    percent = np.clip(np.asarray(values_px) / np.asarray(size) * 100.0, 0.0, 100.0)
    return np.round(percent, _PERCENT_DECIMALS).tolist()


def _region(region_id: str, kind: str, control: str, record: ImageRecord) -> dict[str, Any]:
    return {
        "id": region_id,
        "type": kind,
        "from_name": control,
        "to_name": IMAGE_OBJECT,
        "original_width": record.width,
        "original_height": record.height,
        "image_rotation": 0,
    }


def _pose_regions(k: int, pose: Pose, record: ImageRecord) -> list[dict[str, Any]]:
    size = (record.width, record.height)
    box, xy = clipped(pose, *size)
    (x, y), (w, h) = _percent(box.reshape(2, 2), size)
    box_id = f"person{k}"
    rect = _region(box_id, "rectanglelabels", BOX_CONTROL, record)
    rect["value"] = {
        "x": x,
        "y": y,
        "width": w,
        "height": h,
        "rotation": 0,
        "rectanglelabels": [PERSON_LABEL],
    }
    if pose.pose_score is not None:
        rect["score"] = round(pose.pose_score, _SCORE_DECIMALS)
    regions = [rect]
    for j, (name, (x, y)) in enumerate(zip(KEYPOINT_NAMES, _percent(xy, size), strict=True)):
        if pose.kpts_xyv[j, 2] == 0:
            continue
        point = _region(f"{box_id}-{name}", "keypointlabels", KEYPOINT_CONTROL, record)
        point["parentID"] = box_id
        point["value"] = {"x": x, "y": y, "width": POINT_SIZE_PERCENT, "keypointlabels": [name]}
        if pose.kpt_scores is not None:
            point["score"] = round(float(pose.kpt_scores[j]), _SCORE_DECIMALS)
        regions.append(point)
    return regions


def task(record: ImageRecord, model_version: str) -> dict[str, Any]:
    """One image as a Label Studio task with the job's poses as its prediction. The
    prediction's score (Label Studio sorts tasks by it) is the mean pose score, 0 without
    persons."""
    result = [r for k, pose in enumerate(record.poses, 1) for r in _pose_regions(k, pose, record)]
    scores = [p.pose_score for p in record.poses if p.pose_score is not None]
    return {
        "data": {IMAGE_OBJECT: record.name, "width": record.width, "height": record.height},
        "predictions": [
            {
                "model_version": model_version,
                "score": round(float(np.mean(scores)), _SCORE_DECIMALS) if scores else 0.0,
                "result": result,
            }
        ],
    }


def write_labelstudio(images: Iterable[ImageRecord], fh: TextIO, model_version: str) -> None:
    """Write the tasks as a JSON list to ``fh``, one task a line, as they are read."""
    fh.write("[")
    write_json_items(fh, (task(r, model_version) for r in images))
    fh.write("\n]\n")


def _chosen_result(task: LsTask) -> tuple[list[Any], bool, str]:
    """The regions of a task's latest annotation that was not cancelled (reviewed: True),
    else of its first prediction (False), and where they are in the task."""
    annotations = [(i, a) for i, a in enumerate(task.annotations or []) if not a.was_cancelled]
    if annotations:
        i, latest = max(
            annotations, key=lambda ia: (ia[1].updated_at or ia[1].created_at or "", ia[0])
        )
        return latest.result or [], True, f"annotations[{i}].result"
    predictions = task.predictions or []
    return (predictions[0].result or [] if predictions else []), False, "predictions[0].result"


def _size(region: Any, default: tuple[int, int]) -> tuple[float, float]:
    return float(region.original_width or default[0]), float(region.original_height or default[1])


def _rectangle_px(region: LsRectangle, size: tuple[int, int]) -> np.ndarray:
    """A rectangle region as ``[x, y, w, h]`` pixels; a rotated one (about its top-left
    corner, degrees clockwise) as the box around its corners."""
    value = region.value
    w_img, h_img = _size(region, size)
    x, y = value.x / 100 * w_img, value.y / 100 * h_img
    w, h = value.width / 100 * w_img, value.height / 100 * h_img
    angle = math.radians(value.rotation or 0.0)
    if angle == 0.0:
        return np.array([x, y, w, h])
    corners = np.array([[0, 0], [w, 0], [w, h], [0, h]])
    c, s = math.cos(angle), math.sin(angle)
    rotated = corners @ np.array([[c, s], [-s, c]]) + [x, y]
    return box_around(rotated)


def _contains(box: np.ndarray, xy: np.ndarray) -> bool:
    return bool(box[0] <= xy[0] <= box[0] + box[2] and box[1] <= xy[1] <= box[1] + box[3])


def _refuse_shared_ids(result: list[Any], where: str) -> None:
    """Two regions of one kind with one ``id`` would be read as one person (or one point):
    an error naming both."""
    first: dict[tuple[str, str], int] = {}
    for k, region in enumerate(result):
        if isinstance(region, LsRectangle | LsKeypoint) and region.id is not None:
            key = (region.type, str(region.id))
            j = first.setdefault(key, k)
            if j != k:
                raise FormatError(
                    f"{where}: regions [{j}] and [{k}] are both {region.type} with id "
                    f"{region.id!r}; each region needs its own id"
                )


def _result_poses(result: list[Any], size: tuple[int, int], summary: ImportSummary) -> list[Pose]:
    """Persons from a task's regions. A keypoint joins the rectangle its ``parentID`` names;
    without one (Label Studio sets it only when a reviewer nests the region), the smallest
    rectangle around it whose slot for that keypoint is free. Others are counted, not kept."""
    boxes: dict[str, np.ndarray] = {}
    points: list[LsKeypoint] = []
    for k, region in enumerate(result):
        if isinstance(region, LsRectangle):
            # A rectangle without an id is still a person; no keypoint can name it.
            key = f"#{k}" if region.id is None else str(region.id)
            boxes[key] = _rectangle_px(region, size)
        elif isinstance(region, LsKeypoint):
            points.append(region)
        else:
            summary.ignored[f"{region.type} region"] += 1
    kpts = {box_id: np.zeros((NUM_KEYPOINTS, 3)) for box_id in boxes}
    for region in points:
        labels = region.value.keypointlabels
        if not labels or labels[0] not in KEYPOINT_NAMES:
            summary.ignored[f"keypoint labelled {labels[:1]} (not a COCO-17 keypoint)"] += 1
            continue
        j = KEYPOINT_NAMES.index(labels[0])
        w_img, h_img = _size(region, size)
        xy = np.array([region.value.x / 100 * w_img, region.value.y / 100 * h_img])
        parent: str | None = None if region.parentID is None else str(region.parentID)
        if parent not in boxes:
            around = [b for b in boxes if _contains(boxes[b], xy)]
            free = [b for b in around if kpts[b][j, 2] == 0]
            parent = min(free or around, key=lambda b: boxes[b][2] * boxes[b][3], default=None)
        if parent is None:
            summary.ignored["keypoint in no person's rectangle"] += 1
        elif kpts[parent][j, 2] > 0:
            summary.ignored["second keypoint of one name in a person"] += 1
        else:
            kpts[parent][j] = [xy[0], xy[1], 2]
    return [Pose(box_xywh=boxes[b], kpts_xyv=kpts[b]) for b in boxes]


_TASKS = TypeAdapter(list[LsTask])


def read_labelstudio(
    data: bytes | str, names: ImageNames, source: str, reviewed_only: bool = False
) -> tuple[list[ImageRecord], ImportSummary]:
    """The persons of a Label Studio JSON export (a list of tasks), per task.

    A task's latest annotation is used; a task nobody annotated keeps its prediction
    (counted in ``unreviewed``), or is left out with ``reviewed_only``. The whole file is
    checked first (``schemas.formats.LsTask``): a problem is one ``FormatError`` naming the
    file, the task, the region and the rule. Two regions of one kind sharing an id, and an
    image listed in two tasks, are refused.
    """
    raw = parse_json(data.encode("utf-8") if isinstance(data, str) else data, source)
    if not isinstance(raw, list):
        raise FormatError(f"{source!r} is not a list of tasks (Label Studio's JSON export)")
    try:
        tasks = _TASKS.validate_python(raw)
    except ValidationError as exc:
        raise validation_error(source, exc, raw, root="tasks") from None
    summary = ImportSummary()
    images = ImageList(names, source)
    records = []
    for i, task in enumerate(tasks):
        where = f"tasks[{i}]" + ("" if task.id is None else f" (id {task.id!r})")
        result, reviewed, result_where = _chosen_result(task)
        _refuse_shared_ids(result, f"{source}: {where}.{result_where}")
        if not reviewed:
            summary.unreviewed += 1
            if reviewed_only:
                continue
        sized = [r for r in result if r.original_width and r.original_height]
        width = task.data.width or (sized[0].original_width if sized else None)
        height = task.data.height or (sized[0].original_height if sized else None)
        if not width or not height:
            summary.ignored["task without an image size"] += 1
            continue
        file_name = images.file_name(task.data.image, where)
        records.append(
            ImageRecord(
                image_id=names.image_id_for(file_name),
                name=file_name,
                width=width,
                height=height,
                poses=_result_poses(result, (width, height), summary),
            )
        )
    summary.count(records)
    return records, summary
