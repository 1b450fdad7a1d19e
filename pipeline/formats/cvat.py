"""CVAT for images 1.1 XML: a job's poses for review in CVAT, and the reviewed file read back.

Each person is a ``<skeleton label="person">`` with one ``<points>`` per COCO keypoint, and
its box a ``<box label="person_box">`` in the same group (``group_id``). A skeleton has no
box of its own in CVAT, and a rectangle may not carry the skeleton's label (CVAT's "COCO
Keypoints" importer drops such boxes), so the box gets a label of its own: that keeps the
detector's box through a review instead of rebuilding it from the keypoints.

Keypoint visibility (``pipeline.formats.common.keypoint_visibility``): v=0 is
``outside="1"`` (hidden in CVAT, its predicted place kept), v=1 ``occluded="1"``, v=2
neither. ``<image id>`` is DetPose's 63-bit image id, not a frame number: CVAT matches an
image by ``name`` and falls back to ``id`` as a frame number, so a name that matches no
frame fails loudly instead of landing on some other frame.
"""

from __future__ import annotations

import itertools
import math
import re
import xml.etree.ElementTree as ET
from collections import defaultdict
from collections.abc import Iterable, Iterator
from typing import Any, BinaryIO, TextIO

import numpy as np

from model.keypoints import KEYPOINT_NAMES, NUM_KEYPOINTS, SKELETON
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
    outside_reach,
)
from pipeline.store.outputs import strict_json
from schemas.formats import MAX_IMAGE_SIDE
from schemas.output import ORIGIN_DETECTED, ORIGIN_RECOVERED

BOX_LABEL = "person_box"
ORIGIN_ATTRIBUTE = "origin"
# The first value is the default, which a person drawn by a reviewer gets.
ORIGIN_VALUES = ("manual", ORIGIN_DETECTED, ORIGIN_RECOVERED)
# Three decimals: a box rebuilt from its corners stays within 0.01 px of the job's.
_DECIMALS = 3

# Where each keypoint sits in CVAT's 100 x 100 skeleton drawing: a person facing the viewer,
# so the left joints are on the right.
_TEMPLATE_XY = (
    (50, 10), (53, 8), (47, 8), (57, 10), (43, 10), (62, 25), (38, 25), (68, 40), (32, 40),
    (72, 54), (28, 54), (57, 55), (43, 55), (58, 73), (42, 73), (59, 90), (41, 90),
)  # fmt: skip


def skeleton_svg() -> str:
    """The skeleton drawing CVAT stores with the label: edges between 1-based node ids, and
    one node per keypoint naming its sublabel (``data-label-name``, as CVAT's API takes it)."""
    lines = [
        f'<line x1="{_TEMPLATE_XY[a][0]}" y1="{_TEMPLATE_XY[a][1]}" x2="{_TEMPLATE_XY[b][0]}" '
        f'y2="{_TEMPLATE_XY[b][1]}" stroke="black" data-type="edge" data-node-from="{a + 1}" '
        f'stroke-width="0.5" data-node-to="{b + 1}"></line>'
        for a, b in SKELETON
    ]
    circles = [
        f'<circle r="1.5" stroke="black" fill="#b3b3b3" cx="{x}" cy="{y}" stroke-width="0.1" '
        f'data-type="element node" data-element-id="{k + 1}" data-node-id="{k + 1}" '
        f'data-label-name="{name}"></circle>'
        for k, (name, (x, y)) in enumerate(zip(KEYPOINT_NAMES, _TEMPLATE_XY, strict=True))
    ]
    return "".join(lines + circles)


def raw_labels() -> list[dict[str, Any]]:
    """The task's labels as CVAT's label editor takes them ("Raw"): the person skeleton with
    its 17 keypoint sublabels and an ``origin`` attribute, and the person box."""
    origin = {
        "name": ORIGIN_ATTRIBUTE,
        "mutable": False,
        "input_type": "select",
        "default_value": ORIGIN_VALUES[0],
        "values": list(ORIGIN_VALUES),
    }
    return [
        {
            "name": PERSON_LABEL,
            "type": "skeleton",
            "attributes": [origin],
            "sublabels": [
                {"name": name, "type": "points", "attributes": []} for name in KEYPOINT_NAMES
            ],
            "svg": skeleton_svg(),
        },
        {"name": BOX_LABEL, "type": "rectangle", "attributes": []},
    ]


def raw_labels_json() -> str:
    return strict_json(raw_labels(), indent=2) + "\n"


def _label_element(parent: ET.Element, label: dict[str, Any], parent_name: str | None) -> None:
    el = ET.SubElement(parent, "label")
    ET.SubElement(el, "name").text = label["name"]
    ET.SubElement(el, "type").text = label["type"]
    attributes = ET.SubElement(el, "attributes")
    for attr in label["attributes"]:
        a = ET.SubElement(attributes, "attribute")
        ET.SubElement(a, "name").text = attr["name"]
        ET.SubElement(a, "mutable").text = str(attr["mutable"])
        ET.SubElement(a, "input_type").text = attr["input_type"]
        ET.SubElement(a, "default_value").text = attr["default_value"]
        ET.SubElement(a, "values").text = "\n".join(attr["values"])
    if "svg" in label:
        ET.SubElement(el, "svg").text = label["svg"]
    if parent_name is not None:
        ET.SubElement(el, "parent").text = parent_name


def meta_element(task_name: str) -> ET.Element:
    """``<meta>`` with the labels as CVAT dumps them: sublabels follow their skeleton and
    name it as their ``<parent>``."""
    meta = ET.Element("meta")
    task = ET.SubElement(meta, "task")
    ET.SubElement(task, "name").text = task_name
    ET.SubElement(task, "mode").text = "annotation"
    labels = ET.SubElement(task, "labels")
    for label in raw_labels():
        _label_element(labels, label, None)
        for sub in label.get("sublabels", []):
            _label_element(labels, sub, label["name"])
    return meta


def _num(value: float) -> str:
    return f"{value:.{_DECIMALS}f}"


def image_element(record: ImageRecord, groups: Iterator[int]) -> ET.Element:
    """One ``<image>`` with a box and a skeleton per pose, coordinates clipped to the image."""
    image = ET.Element(
        "image",
        {
            "id": str(record.image_id),
            "name": record.name,
            "width": str(record.width),
            "height": str(record.height),
        },
    )
    for pose in record.poses:
        group = str(next(groups))
        box, xy = clipped(pose, record.width, record.height)
        corners = {
            "xtl": _num(box[0]),
            "ytl": _num(box[1]),
            "xbr": _num(box[0] + box[2]),
            "ybr": _num(box[1] + box[3]),
        }
        box_attrs = {"label": BOX_LABEL, "source": "auto", "occluded": "0", **corners}
        ET.SubElement(image, "box", {**box_attrs, "z_order": "0", "group_id": group})
        skeleton = ET.SubElement(
            image,
            "skeleton",
            {"label": PERSON_LABEL, "source": "auto", "z_order": "0", "group_id": group},
        )
        for name, (x, y), v in zip(KEYPOINT_NAMES, xy, pose.kpts_xyv[:, 2], strict=True):
            ET.SubElement(
                skeleton,
                "points",
                {
                    "label": name,
                    "source": "auto",
                    "occluded": "1" if v == 1 else "0",
                    "outside": "1" if v == 0 else "0",
                    "points": f"{_num(x)},{_num(y)}",
                },
            )
        if pose.origin is not None:
            ET.SubElement(skeleton, "attribute", {"name": ORIGIN_ATTRIBUTE}).text = pose.origin
    return image


def _xml(el: ET.Element) -> str:
    ET.indent(el, space="  ", level=1)
    return "  " + ET.tostring(el, encoding="unicode") + "\n"


def write_cvat(
    images: Iterable[ImageRecord], fh: TextIO, task_name: str, note: str | None = None
) -> None:
    """Write CVAT for images 1.1 XML to ``fh``, one ``<image>`` at a time as it is read.
    ``note`` (a partial export says so) is written as a comment at the top."""
    fh.write('<?xml version="1.0" encoding="utf-8"?>\n<annotations>\n  <version>1.1</version>\n')
    if note:
        # "--" may not appear inside an XML comment.
        fh.write(f"  <!-- {note.replace('--', '- -')} -->\n")
    fh.write(_xml(meta_element(task_name)))
    groups = itertools.count(1)  # group ids are unique over the file
    for record in images:
        fh.write(_xml(image_element(record, groups)))
    fh.write("</annotations>\n")


_SIDE = re.compile(r"\d{1,9}")
_GROUP = re.compile(r"\d{1,18}")


class _Bad(ValueError):
    """A broken attribute of the element being read; ``read_cvat`` adds where it is."""


def _number(text: str | None, what: str) -> float:
    """The finite number an attribute holds."""
    try:
        value = float(text)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise _Bad(f"{what}: got {text!r}; expected a number") from None
    if not math.isfinite(value):
        raise _Bad(f"{what}: got {text!r}; expected a finite number")
    return value


def _side(image: ET.Element, name: str) -> int:
    text = image.get(name)
    if text is None or not _SIDE.fullmatch(text) or not 1 <= int(text) <= MAX_IMAGE_SIDE:
        raise _Bad(
            f"{name}: got {text!r}; expected a whole number of pixels, 1 to {MAX_IMAGE_SIDE:,}"
        )
    return int(text)


def _flag(el: ET.Element, name: str, where: str) -> bool:
    text = el.get(name, "0")
    if text not in ("0", "1"):
        raise _Bad(f"{where}: {name}: got {text!r}; expected 0 or 1")
    return text == "1"


def _skeleton_keypoints(
    skeleton: ET.Element, size: tuple[int, int], where: str, summary: ImportSummary
) -> np.ndarray:
    """``[17, 3]`` x, y, v of a ``<skeleton>``; a keypoint it lacks is v=0."""
    kpts = np.zeros((NUM_KEYPOINTS, 3))
    seen: set[str] = set()
    for point in skeleton.findall("points"):
        label = point.get("label")
        if label not in KEYPOINT_NAMES:
            summary.ignored[f"skeleton point {label!r} (not a COCO-17 keypoint)"] += 1
            continue
        at = f"{where} <points label={label!r}>"
        if label in seen:
            raise _Bad(f"{at}: a second keypoint of that name in one skeleton")
        seen.add(label)
        text = point.get("points")
        xy = (text or "").split(";")[0].split(",")
        if len(xy) != 2:
            raise _Bad(f"{at}: points: got {text!r}; expected 'x,y'")
        x, y = (_number(v, f"{at}: points") for v in xy)
        outside, occluded = _flag(point, "outside", at), _flag(point, "occluded", at)
        if not outside and outside_reach(np.array([x, y]), *size):
            raise _Bad(f"{at}: ({x:g}, {y:g}) lies more than an image size outside the image")
        kpts[KEYPOINT_NAMES.index(label)] = [x, y, 0 if outside else 1 if occluded else 2]
    kpts[kpts[:, 2] == 0, :2] = 0.0  # COCO: an unlabelled keypoint has no place
    return kpts


def _box(el: ET.Element, size: tuple[int, int], where: str) -> np.ndarray:
    """A ``<box>`` as ``[x, y, w, h]``: four finite corners in order, within reach of the image."""
    x0, y0, x1, y1 = (_number(el.get(k), f"{where}: {k}") for k in ("xtl", "ytl", "xbr", "ybr"))
    if x1 < x0 or y1 < y0:
        raise _Bad(f"{where}: bottom-right ({x1:g}, {y1:g}) is above or left of top-left")
    if outside_reach(np.array([[x0, y0], [x1, y1]]), *size):
        raise _Bad(f"{where}: lies more than an image size outside the image")
    return np.array([x0, y0, x1 - x0, y1 - y0])


def _image_poses(image: ET.Element, size: tuple[int, int], summary: ImportSummary) -> list[Pose]:
    """A skeleton takes the box of its group; without one, the box around its labelled
    keypoints. A box with no skeleton is a person without keypoints."""
    skeletons: list[tuple[int, np.ndarray]] = []
    boxes: dict[int, list[np.ndarray]] = defaultdict(list)
    for k, shape in enumerate(image):
        where = f"<{shape.tag}> {k}"
        group_text = shape.get("group_id", "0")
        if not _GROUP.fullmatch(group_text):
            raise _Bad(f"{where}: group_id: got {group_text!r}; expected a whole number")
        group = int(group_text)
        if shape.tag == "skeleton" and shape.get("label") == PERSON_LABEL:
            skeletons.append((group, _skeleton_keypoints(shape, size, where, summary)))
        elif shape.tag == "box" and shape.get("label") == BOX_LABEL:
            boxes[group].append(_box(shape, size, where))
        else:
            summary.ignored[f"<{shape.tag} label={shape.get('label')!r}>"] += 1
    poses = []
    for group, kpts in skeletons:
        if group and boxes.get(group):
            box = boxes[group].pop(0)
        else:
            box = box_around(kpts[kpts[:, 2] > 0, :2])
        poses.append(Pose(box_xywh=box, kpts_xyv=kpts))
    leftover = (box for group_boxes in boxes.values() for box in group_boxes)
    poses += [Pose(box_xywh=box, kpts_xyv=np.zeros((NUM_KEYPOINTS, 3))) for box in leftover]
    return poses


def read_cvat(
    fh: BinaryIO, names: ImageNames, source: str
) -> tuple[list[ImageRecord], ImportSummary]:
    """The person skeletons (and their boxes) of a CVAT for images 1.1 XML file, per image.

    The file is parsed as a stream; only the images' poses are kept. Every attribute used is
    checked: a problem is one ``FormatError`` naming the file, the ``<image>`` (its index and
    name), the shape and the rule. An image listed twice is refused.
    """
    summary = ImportSummary()
    images = ImageList(names, source)
    records = []
    index = 0
    try:
        for event, el in ET.iterparse(fh, events=("start", "end")):
            if event == "start" and el.tag == "track":
                raise FormatError(
                    f"{source!r} holds tracks (CVAT for video); export the task as "
                    "'CVAT for images 1.1'"
                )
            if event != "end" or el.tag != "image":
                continue
            name = el.get("name") or ""
            where = f"<image> {index} ({name!r})"
            try:
                if not name:
                    raise _Bad("name: missing or empty")
                size = (_side(el, "width"), _side(el, "height"))
                poses = _image_poses(el, size, summary)
            except _Bad as exc:
                raise FormatError(f"{source}: {where}: {exc}") from None
            file_name = images.file_name(name, where)
            records.append(
                ImageRecord(
                    image_id=names.image_id_for(file_name),
                    name=file_name,
                    width=size[0],
                    height=size[1],
                    poses=poses,
                )
            )
            index += 1
            el.clear()
    except ET.ParseError as exc:
        raise FormatError(f"{source!r} is not CVAT XML: {exc}") from exc
    summary.count(records)
    return records, summary
