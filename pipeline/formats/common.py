"""What every export and import shares: a job's rows read one batch at a time, the keypoint
visibility rule, how image URIs are written as names, and reading other tools' files (strict
JSON, one line per problem naming the file, the record and the rule).

Exports never hold a job in memory: ``JobRows`` reads the part files one record batch at a
time and the writers write each image as soon as it is read.
"""

from __future__ import annotations

import json
import math
import posixpath
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

import numpy as np
import pyarrow as pa
from pydantic import ValidationError

from model.keypoints import NUM_KEYPOINTS
from pipeline.errors import JobSetupError
from pipeline.store.job_parts import JobParts, PartsReport
from pipeline.store.outputs import strict_json
from pipeline.store.storage import absolute_if_local, image_id_for
from schemas.output import STATUS_OK
from schemas.spec import StorageSpec, join_uri, uri_scheme

# A keypoint whose score is below MIN is not labelled (COCO v=0, CVAT outside); one below
# VISIBLE is labelled but occluded (v=1); the rest are visible (v=2). 0.2 is the score above
# which a keypoint counts in a person's pose_score (docs/output.md, "Annotation row").
DEFAULT_MIN_SCORE = 0.2
DEFAULT_VISIBLE_SCORE = 0.5
DEFAULT_BATCH_ROWS = 1024
PERSON_LABEL = "person"
_COLUMNS = ["image_id", "uri", "width", "height", "status", "error_kind"]


class FormatError(JobSetupError):
    """An export or import that cannot run as asked: a bad job folder, file or option."""


def parse_json(data: bytes, source: str) -> Any:
    """The JSON value of a file's bytes. ``NaN`` and ``Infinity`` parse (as floats) so that the
    format's model can name the record holding them; anything that is not JSON is one error."""
    try:
        return json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise FormatError(f"{source}: not UTF-8 text ({exc})") from None
    except RecursionError:
        raise FormatError(f"{source}: not usable JSON: nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, or an integer of more than 4,300 digits
        raise FormatError(f"{source}: not JSON: {exc}") from None


def _record_label(node: Any) -> str:
    ident = node.get("id") if isinstance(node, dict) else None
    return (
        f" (id {ident!r})" if isinstance(ident, int | str) and not isinstance(ident, bool) else ""
    )


def _location(data: Any, loc: Sequence[int | str], missing: bool, root: str) -> str:
    """Where pydantic's ``loc`` points in ``data``, for people: ``annotations[3] (id 17).bbox``.
    Steps that are not in the data (the tags of a union) are left out."""
    text, node = root, data
    for i, step in enumerate(loc):
        if isinstance(step, int) and isinstance(node, list) and 0 <= step < len(node):
            node = node[step]
            text += f"[{step}]{_record_label(node)}"
        elif isinstance(node, dict) and (step in node or (missing and i == len(loc) - 1)):
            node = node.get(step)
            text += f".{step}" if text else str(step)
    return text or "the file"


def _shown(value: Any) -> str:
    if isinstance(value, dict | list):
        return f"a {'JSON object' if isinstance(value, dict) else 'JSON list'}"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def validation_error(source: str, exc: ValidationError, data: Any, root: str = "") -> FormatError:
    """One line for the first problem pydantic found in ``data``: the file, the record and the
    rule, with the value at fault (``tasks[2] (id 7).annotations[0].result[1] (id 'a').value.x:
    Input should be a finite number (got nan)``)."""
    errors = exc.errors()
    first = errors[0]
    missing = first["type"] == "missing"
    where = _location(data, first["loc"], missing, root)
    if first["type"] == "value_error":  # our own validators name the value themselves
        rule, got = str(first["ctx"]["error"]), ""
    else:
        rule, got = first["msg"], "" if missing else f" (got {_shown(first['input'])})"
    more = f" ({len(errors) - 1} more problems)" if len(errors) > 1 else ""
    return FormatError(f"{source}: {where}: {rule}{got}{more}")


def leaves_root(name: str) -> bool:
    """True for a file name that climbs out of the folder it is joined to (``../x.jpg``,
    ``a/../../x.jpg``); such a name is refused, never read or written."""
    return posixpath.normpath(name.lstrip("/")).split("/", 1)[0] == ".."


def outside_reach(points_xy: np.ndarray, width: int, height: int) -> bool:
    """True when a point of ``points_xy`` (``[N, 2]`` pixels) lies more than one image size
    outside the image (``schemas.formats``: x in [-width, 2 * width], y likewise)."""
    xy = np.asarray(points_xy, dtype=np.float64).reshape(-1, 2)
    size = np.array([width, height], dtype=np.float64)
    return bool(((xy < -size) | (xy > 2 * size)).any())


class ImageList:
    """The images a review tool's file lists, by file name: each name is turned into a COCO
    ``file_name`` once (``ImageNames.file_name_for``), refused if it leaves the image root,
    and refused if it was listed before, naming both records."""

    def __init__(self, names: ImageNames, source: str) -> None:
        self.names, self.source = names, source
        self._where: dict[str, str] = {}

    def file_name(self, name: str, where: str) -> str:
        file_name = self.names.file_name_for(name)
        if leaves_root(file_name):
            raise FormatError(
                f"{self.source}: {where}: file name {file_name!r} climbs out of the image "
                "root ('..'); refused"
            )
        first = self._where.setdefault(file_name, where)
        if first != where:
            raise FormatError(
                f"{self.source}: image {file_name!r} is listed twice ({first} and {where}); "
                "each image must be listed once: remove or merge one of them"
            )
        return file_name


@dataclass(frozen=True)
class Thresholds:
    """Which persons and keypoints an export keeps, and how visible each keypoint is."""

    min_score: float = DEFAULT_MIN_SCORE
    visible_score: float = DEFAULT_VISIBLE_SCORE

    def __post_init__(self) -> None:
        if not (math.isfinite(self.min_score) and math.isfinite(self.visible_score)):
            raise FormatError(
                f"got --min-score {self.min_score} and --visible-score {self.visible_score}; "
                "expected finite numbers"
            )
        if not 0.0 <= self.min_score <= self.visible_score:
            raise FormatError(
                f"got --min-score {self.min_score} and --visible-score {self.visible_score}; "
                "expected 0 <= min-score <= visible-score"
            )


def keypoint_visibility(scores: np.ndarray, thresholds: Thresholds) -> np.ndarray:
    """COCO visibility flags from keypoint scores. ``[17]`` float → ``[17]`` int64 in {0, 1, 2}:
    0 below ``min_score``, 1 below ``visible_score``, else 2."""
    v = np.full(scores.shape, 2, dtype=np.int64)
    v[scores < thresholds.visible_score] = 1
    v[scores < thresholds.min_score] = 0
    return v


@dataclass(frozen=True)
class Pose:
    """One person as an export writes it or an import reads it back.

    ``kpts_xyv`` is ``[17, 3]``: x, y in original-image pixels and the COCO visibility flag.
    The job's scores are ``None`` for a pose read back from a review tool.
    """

    box_xywh: np.ndarray  # [4] x, y, w, h in image pixels
    kpts_xyv: np.ndarray  # [17, 3]
    kpt_scores: np.ndarray | None = None  # [17]
    box_score: float | None = None
    pose_score: float | None = None
    origin: str | None = None


@dataclass(frozen=True)
class ImageRecord:
    """One image with its poses; ``name`` is how the export refers to it (see ``ImageNames``)."""

    image_id: int
    name: str
    width: int
    height: int
    poses: list[Pose]


@dataclass(frozen=True)
class ImageNames:
    """How image URIs are written in an export (``name_for``) and read back (``file_name_for``).

    ``root``: URIs under it are written relative to it, as a review tool's task and
    ``detpose train --images ROOT`` expect. ``url_prefix`` goes in front of every name (e.g.
    Label Studio's ``/data/local-files/?d=``). Without either, names are the URIs themselves.
    """

    root: str | None = None
    url_prefix: str = ""

    def _root_dir(self) -> str | None:
        return absolute_if_local(self.root).rstrip("/") + "/" if self.root else None

    def relative(self, uri: str) -> str | None:
        """``uri`` relative to ``root``; None when there is no root or ``uri`` is not under it."""
        root = self._root_dir()
        return uri[len(root) :] if root and uri.startswith(root) else None

    def name_for(self, uri: str) -> str:
        relative = self.relative(uri)
        return self.url_prefix + (uri if relative is None else relative)

    def file_name_for(self, name: str) -> str:
        """A name from a review tool as a COCO ``file_name``: the prefix and root taken off."""
        if self.url_prefix and name.startswith(self.url_prefix):
            name = name[len(self.url_prefix) :]
        relative = self.relative(name)
        return name if relative is None else relative

    def uri_for(self, file_name: str) -> str:
        """The image URI a ``file_name`` stands for (relative names are under ``root``)."""
        root = self._root_dir()
        return join_uri(root, file_name) if root and not is_absolute(file_name) else file_name

    def image_id_for(self, file_name: str) -> int:
        """DetPose's id of the image (``pipeline.store.storage.image_id_for`` of its URI), so a
        reviewed file's ids match the job's rows when the URIs can be rebuilt."""
        return image_id_for(self.uri_for(file_name))


def is_absolute(name: str) -> bool:
    """True for a URI with a scheme or an absolute local path."""
    return bool(uri_scheme(name)) or name.startswith("/")


@dataclass
class ExportSummary:
    """What an export wrote and what it left out."""

    images: int = 0
    persons: int = 0
    persons_below_min_score: int = 0
    errors_by_kind: Counter = field(default_factory=Counter)
    names_outside_root: int = 0
    outputs: list[str] = field(default_factory=list)
    parts: PartsReport = field(default_factory=PartsReport)

    @property
    def error_rows(self) -> int:
        return sum(self.errors_by_kind.values())


@dataclass
class ImportSummary:
    """What an import read from a review tool's file and what it could not use."""

    images: int = 0
    persons: int = 0
    keypoints: int = 0  # labelled (v > 0)
    ignored: Counter = field(default_factory=Counter)  # what was left out, by reason
    unreviewed: int = 0  # Label Studio tasks without an annotation
    absolute_names: int = 0  # file names still absolute: `detpose train` cannot join them

    def count(self, records: list[ImageRecord]) -> None:
        self.images = len(records)
        self.persons = sum(len(r.poses) for r in records)
        self.keypoints = sum(
            int(np.count_nonzero(p.kpts_xyv[:, 2])) for r in records for p in r.poses
        )
        self.absolute_names = sum(is_absolute(r.name) for r in records)


class JobRows:
    """A job's annotation rows (``OUTPUT/JOB_ID``), read one record batch at a time.

    Nothing is cached: each ``images`` call streams the part files again, so memory holds
    one batch, whatever the size of the job. Rows are checked as they are read
    (``pipeline.store.job_parts``): a part file that cannot be read stops the export, naming it,
    unless ``allow_partial``.
    """

    def __init__(
        self,
        job_uri: str,
        storage: StorageSpec | None = None,
        batch_rows: int = DEFAULT_BATCH_ROWS,
        allow_partial: bool = False,
    ) -> None:
        self.job_uri = job_uri
        self.batch_rows = batch_rows
        columns = _COLUMNS + ["persons"]
        self.parts = JobParts(job_uri, storage or StorageSpec(), columns, allow_partial)

    @property
    def name(self) -> str:
        """The job id: the last part of the job's URI."""
        return self.job_uri.rstrip("/").rsplit("/", 1)[-1]

    def batches(self, columns: list[str]) -> Iterator[pa.RecordBatch]:
        """``columns`` of every row, one record batch of at most ``batch_rows`` rows at a time."""
        yield from self.parts.batches(columns, self.batch_rows)

    def images(
        self,
        names: ImageNames,
        thresholds: Thresholds,
        summary: ExportSummary | None = None,
        with_poses: bool = True,
    ) -> Iterator[ImageRecord]:
        """Every ok image in file order with its poses at or above ``min_score``.

        Error rows are left out (an image that could not be read has nothing to review);
        ``summary``, when given, counts them by kind, and the persons left out.
        """
        columns = _COLUMNS + (["persons"] if with_poses else [])
        for batch in self.batches(columns):
            for row in batch.to_pylist():
                if row["status"] != STATUS_OK:
                    if summary is not None:
                        summary.errors_by_kind[row["error_kind"] or "(none)"] += 1
                    continue
                poses = []
                for person in row["persons"] if with_poses else ():
                    if person["pose_score"] < thresholds.min_score:
                        if summary is not None:
                            summary.persons_below_min_score += 1
                        continue
                    poses.append(pose_from_row(person, thresholds))
                if summary is not None:
                    summary.images += 1
                    summary.persons += len(poses)
                    if names.root and names.relative(row["uri"]) is None:
                        summary.names_outside_root += 1
                yield ImageRecord(
                    image_id=int(row["image_id"]),
                    name=names.name_for(row["uri"]),
                    width=int(row["width"]),
                    height=int(row["height"]),
                    poses=poses,
                )


def pose_from_row(person: dict[str, Any], thresholds: Thresholds) -> Pose:
    """A ``persons`` element of an annotation row as a ``Pose`` with visibility flags."""
    kpts = np.asarray(person["keypoints"], dtype=np.float64).reshape(NUM_KEYPOINTS, 3)
    scores = kpts[:, 2].copy()
    kpts[:, 2] = keypoint_visibility(scores, thresholds)
    return Pose(
        box_xywh=np.asarray(person["box_xywh"], dtype=np.float64),
        kpts_xyv=kpts,
        kpt_scores=scores,
        box_score=float(person["box_score"]),
        pose_score=float(person["pose_score"]),
        origin=person["origin"],
    )


def clipped(pose: Pose, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """The pose's box (``[4]`` x, y, w, h) and keypoint coordinates (``[17, 2]``) clipped to the
    image: review tools keep shapes inside it."""
    x, y, w, h = pose.box_xywh
    x0, x1 = np.clip([x, x + w], 0.0, width)
    y0, y1 = np.clip([y, y + h], 0.0, height)
    xy = np.clip(pose.kpts_xyv[:, :2], 0.0, [width, height])
    return np.array([x0, y0, x1 - x0, y1 - y0]), xy


def box_around(points_xy: np.ndarray) -> np.ndarray:
    """The smallest ``[x, y, w, h]`` holding ``points_xy`` (``[N, 2]``); zeros for no points."""
    if len(points_xy) == 0:
        return np.zeros(4)
    lo, hi = points_xy.min(axis=0), points_xy.max(axis=0)
    return np.array([lo[0], lo[1], hi[0] - lo[0], hi[1] - lo[1]])


def write_json_items(fh: TextIO, items: Iterable[Any]) -> int:
    """Write ``items`` as the elements of a JSON array (no brackets), one a line, as strict
    JSON; returns how many were written."""
    count = 0
    for item in items:
        fh.write(("\n" if count == 0 else ",\n") + strict_json(item, separators=(",", ":")))
        count += 1
    return count


def sidecar_uri(uri: str, suffix: str, replaces: str) -> str:
    """``uri`` with its ``replaces`` extension (if any) swapped for ``suffix``:
    ``tasks.json`` → ``tasks.label_config.xml``."""
    stem = uri[: -len(replaces)] if uri.lower().endswith(replaces) else uri
    return stem + suffix
