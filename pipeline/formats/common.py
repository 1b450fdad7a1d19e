"""What every export and import shares: a job's rows read one batch at a time, the keypoint
visibility rule, how image URIs are written as names, and writing an output file.

Exports never hold a job in memory: ``JobRows`` reads the part files one record batch at a
time and the writers write each image as soon as it is read.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from typing import Any, BinaryIO, TextIO

import numpy as np
import pyarrow as pa

from model.keypoints import NUM_KEYPOINTS
from pipeline.errors import JobSetupError
from pipeline.sink import iter_part_batches, job_part_files
from pipeline.storage import absolute_if_local, filesystem_for, image_id_for
from schemas.output import STATUS_OK
from schemas.spec import StorageSpec, join_uri, uri_scheme

# A keypoint whose score is below MIN is not labelled (COCO v=0, CVAT outside); one below
# VISIBLE is labelled but occluded (v=1); the rest are visible (v=2). 0.2 is the score above
# which a keypoint counts in a person's pose_score (README, "Annotation row").
DEFAULT_MIN_SCORE = 0.2
DEFAULT_VISIBLE_SCORE = 0.5
DEFAULT_BATCH_ROWS = 1024
PERSON_LABEL = "person"
_COLUMNS = ["image_id", "uri", "width", "height", "status", "error_kind"]


class FormatError(JobSetupError):
    """An export or import that cannot run as asked: a bad job folder, file or option."""


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
        """DetPose's id of the image (``pipeline.storage.image_id_for`` of its URI), so a
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
    warnings: list[str] = field(default_factory=list)

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
    one batch, whatever the size of the job. A part file that cannot be read (a running or
    killed run's last write) is skipped with a warning, as ``detpose review`` does.
    """

    def __init__(
        self,
        job_uri: str,
        storage: StorageSpec | None = None,
        batch_rows: int = DEFAULT_BATCH_ROWS,
    ) -> None:
        self.job_uri = job_uri
        self.storage = storage or StorageSpec()
        self.batch_rows = batch_rows
        try:
            self._fs, self.files = job_part_files(job_uri, self.storage)
        except JobSetupError as exc:
            raise FormatError(str(exc)) from exc
        self.warnings: list[str] = []
        self._skipped: set[str] = set()

    @property
    def name(self) -> str:
        """The job id: the last part of the job's URI."""
        return self.job_uri.rstrip("/").rsplit("/", 1)[-1]

    def batches(self, columns: list[str]) -> Iterator[pa.RecordBatch]:
        """``columns`` of every row, one record batch of at most ``batch_rows`` rows at a time."""
        yield from iter_part_batches(
            self._fs, self.files, columns, self.batch_rows, self.warnings, self._skipped
        )

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
                if row["status"] != STATUS_OK or row["width"] is None:
                    if summary is not None:
                        summary.errors_by_kind[row["error_kind"] or "no size"] += 1
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
        if summary is not None:
            summary.warnings.extend(w for w in self.warnings if w not in summary.warnings)


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
    """Write ``items`` as the elements of a JSON array (no brackets), one a line; returns how
    many were written."""
    count = 0
    for item in items:
        fh.write(("\n" if count == 0 else ",\n") + json.dumps(item, separators=(",", ":")))
        count += 1
    return count


@contextmanager
def open_output(uri: str, storage: StorageSpec) -> Iterator[TextIO]:
    """A text file at ``uri`` (local or any fsspec URI), written under ``uri.partial`` and moved
    into place when complete, so a failed export never leaves a file that looks whole."""
    fs, path = filesystem_for(uri, storage)
    if fs.isdir(path):
        raise FormatError(f"{uri!r} is a folder; expected the path of a file to write")
    parent = path.rsplit("/", 1)[0]
    if parent:
        fs.makedirs(parent, exist_ok=True)
    partial = f"{path}.partial"
    try:
        with fs.open(partial, "w", encoding="utf-8") as fh:
            yield fh
    except BaseException:
        with suppress(Exception):
            fs.rm(partial)
        raise
    fs.mv(partial, path)


def sidecar_uri(uri: str, suffix: str, replaces: str) -> str:
    """``uri`` with its ``replaces`` extension (if any) swapped for ``suffix``:
    ``tasks.json`` → ``tasks.label_config.xml``."""
    stem = uri[: -len(replaces)] if uri.lower().endswith(replaces) else uri
    return stem + suffix


@contextmanager
def open_input(uri: str, storage: StorageSpec) -> Iterator[BinaryIO]:
    """A review tool's export at ``uri`` (local or any fsspec URI), opened for reading."""
    fs, path = filesystem_for(uri, storage)
    if not fs.exists(path):
        raise FormatError(f"{uri!r} does not exist")
    with fs.open(path, "rb") as fh:
        yield fh
