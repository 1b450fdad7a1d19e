"""Boxes from another detector (``stage1.boxes``): a COCO detections file, read once on the driver.

The file is the COCO results format: a JSON list of ``{image_id, category_id, bbox, score}``
(``bbox`` is ``[x, y, w, h]`` in original-image pixels). Only persons (category 1) are used.
An entry names its image by ``file_name`` or, through an id → file name map (a COCO
annotation file's ``images``: ``stage1.box_images``, or ``detpose eval``'s annotations), by
``image_id``; a ``file_name`` wins when an entry has both.

An input URI matches the file name that is its longest whole-component path suffix:
``s3://b/val/000001.jpg`` matches ``val/000001.jpg`` before ``000001.jpg``. The path relative
to an input prefix and the bare file name therefore both work; two inputs with the same
relative path under different prefixes share the entries of that name.

The driver parses and checks the whole file before any image is read (:func:`load_external_boxes`),
keeps each image's top ``proposals_per_image`` boxes by score in flat float32 arrays, and
ships that index to every stage-1 actor once (``CoarseStage``), where each image looks up its
boxes by URI.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Container, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from model.evaluation.results import PERSON_CATEGORY_ID
from pipeline.errors import JobSetupError
from pipeline.formats.common import parse_json
from pipeline.store.storage import read_input
from schemas.spec import JobSpec, StorageSpec


def match_file_name(uri: str, names: Container[str]) -> str | None:
    """The longest of ``names`` that ``uri`` equals or ends with after a ``/``; None if none."""
    parts = uri.split("/")
    for start in range(len(parts)):
        candidate = "/".join(parts[start:])
        if candidate in names:
            return candidate
    return None


@dataclass(frozen=True)
class ExternalBoxes:
    """Each image's person boxes from a detections file, by decreasing score.

    Attributes:
        uri: the detections file.
        sha256: SHA-256 of its bytes (part of the job's fingerprint).
        box_images_sha256: that of ``stage1.box_images`` when it was read.
        rows: file name → ``(start, stop)`` rows of ``boxes_xywh`` and ``scores``.
        boxes_xywh: ``[N, 4]`` float32 ``(x, y, w, h)``, original-image pixels.
        scores: ``[N]`` float32.
    """

    uri: str
    sha256: str
    rows: dict[str, tuple[int, int]]
    boxes_xywh: np.ndarray
    scores: np.ndarray
    box_images_sha256: str | None = None

    def fingerprint(self) -> dict[str, str | None]:
        """What identifies the boxes in a job's fingerprint: the files' SHA-256."""
        return {"sha256": self.sha256, "box_images_sha256": self.box_images_sha256}

    def for_uri(self, uri: str) -> tuple[np.ndarray, np.ndarray]:
        """``uri``'s boxes ``[k, 4]`` (xywh) and scores ``[k]``; none if no entry names it."""
        name = match_file_name(uri, self.rows)
        start, stop = self.rows[name] if name is not None else (0, 0)
        return self.boxes_xywh[start:stop], self.scores[start:stop]


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _entry_error(source: str, index: int, entry: Any, rule: str) -> JobSetupError:
    text = json.dumps(entry)
    text = text if len(text) <= 200 else text[:197] + "..."
    return JobSetupError(f"{source}: entry {index} ({text}): {rule}")


def _entry_name(
    source: str, index: int, entry: dict[str, Any], image_names: Mapping[int, str] | None
) -> str:
    """The file name an entry's box belongs to (its ``file_name``, else its image id's)."""
    name = entry.get("file_name")
    if name is not None:
        if not isinstance(name, str) or not name:
            raise _entry_error(source, index, entry, "file_name must be a non-empty string")
        return name
    image_id = entry.get("image_id")
    if image_names is None:
        raise _entry_error(
            source,
            index,
            entry,
            "has no file_name, and no stage1.box_images maps image ids to file names",
        )
    if not isinstance(image_id, int) or isinstance(image_id, bool):
        raise _entry_error(source, index, entry, "image_id must be an integer")
    if image_id not in image_names:
        raise _entry_error(source, index, entry, f"image_id {image_id} is not in the image list")
    return image_names[image_id]


def parse_detections(
    entries: Any, source: str, top_k: int, image_names: Mapping[int, str] | None = None
) -> tuple[dict[str, tuple[int, int]], np.ndarray, np.ndarray]:
    """Person boxes of a COCO results list, grouped by file name, top ``top_k`` by score.

    Args:
        entries: the parsed JSON.
        source: the file, for messages.
        top_k: boxes kept per image (ties keep the file's order).
        image_names: image id → file name, for entries without a ``file_name``.

    Returns:
        ``rows`` (file name → ``(start, stop)``), ``boxes_xywh`` ``[N, 4]`` and ``scores``
        ``[N]`` (float32), each image's rows by decreasing score.

    Raises:
        JobSetupError: naming ``source`` and the first bad entry.
    """
    if not isinstance(entries, list):
        raise JobSetupError(
            f"{source}: expected a JSON list of detections (the COCO results format), "
            f"got a {type(entries).__name__}"
        )
    by_name: dict[str, list[tuple[float, list[float]]]] = {}
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise _entry_error(source, index, entry, "expected an object {image_id, bbox, ...}")
        category = entry.get("category_id")
        if not isinstance(category, int) or isinstance(category, bool):
            raise _entry_error(source, index, entry, "category_id must be an integer")
        name = _entry_name(source, index, entry, image_names)
        bbox, score = entry.get("bbox"), entry.get("score")
        if not isinstance(bbox, list) or len(bbox) != 4 or not all(_number(v) for v in bbox):
            raise _entry_error(source, index, entry, "bbox must be 4 finite numbers [x, y, w, h]")
        if bbox[2] < 0 or bbox[3] < 0:
            raise _entry_error(source, index, entry, "bbox has a negative width or height")
        if not _number(score):
            raise _entry_error(source, index, entry, "score must be a finite number")
        if category == PERSON_CATEGORY_ID:
            by_name.setdefault(name, []).append((float(score), bbox))
    rows, boxes, scores = {}, [], []
    for name, found in by_name.items():
        found.sort(key=lambda item: -item[0])  # stable: ties keep the file's order
        kept = found[:top_k]
        rows[name] = (len(scores), len(scores) + len(kept))
        scores += [s for s, _ in kept]
        boxes += [b for _, b in kept]
    return (
        rows,
        np.asarray(boxes, np.float32).reshape(-1, 4),
        np.asarray(scores, np.float32).reshape(-1),
    )


def parse_image_names(data: Any, source: str) -> dict[int, str]:
    """Image id → file name from a COCO annotation file's ``images`` list."""
    images = data.get("images") if isinstance(data, dict) else None
    if not isinstance(images, list):
        raise JobSetupError(f"{source}: not a COCO annotation file (no 'images' list)")
    names = {}
    for index, image in enumerate(images):
        ok = isinstance(image, dict) and isinstance(image.get("file_name"), str)
        if not ok or not isinstance(image.get("id"), int):
            raise JobSetupError(
                f"{source}: images[{index}] needs an integer 'id' and a string 'file_name'"
            )
        names[image["id"]] = image["file_name"]
    return names


def _read_json(uri: str, storage: StorageSpec, what: str) -> tuple[Any, str]:
    """A JSON file's content and the SHA-256 of its bytes."""
    data = read_input(uri, storage, what)
    return parse_json(data, f"{what} {uri}"), hashlib.sha256(data).hexdigest()


def load_external_boxes(
    spec: JobSpec, image_names: Mapping[int, str] | None = None
) -> ExternalBoxes | None:
    """The job's ``stage1.boxes``, parsed and checked whole (None when it has none).

    ``image_names``: image id → file name when the caller has them (``detpose eval``'s
    annotations); otherwise ``stage1.box_images`` is read when given.

    Raises:
        JobSetupError: an unreadable or malformed file, naming it and the first bad entry.
    """
    stage1 = spec.stage1
    if stage1.boxes is None:
        return None
    names_sha256 = None
    if image_names is None and stage1.box_images is not None:
        names_data, names_sha256 = _read_json(stage1.box_images, spec.storage, "stage1.box_images")
        image_names = parse_image_names(names_data, f"stage1.box_images {stage1.box_images}")
    entries, sha256 = _read_json(stage1.boxes, spec.storage, "stage1.boxes")
    rows, boxes_xywh, scores = parse_detections(
        entries, f"stage1.boxes {stage1.boxes}", spec.proposals_per_image, image_names
    )
    return ExternalBoxes(stage1.boxes, sha256, rows, boxes_xywh, scores, names_sha256)
