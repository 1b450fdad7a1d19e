"""Training labels from the project's own outputs: a job's poses as pseudo-labels, or a
reviewed file brought back with `detpose import`.

``--labels OUTPUT/JOB_ID`` streams the job's rows through the COCO export
(``pipeline/formats``): persons whose pose score is below ``min_score`` are left out, and
keypoints scoring below it become unlabelled (no loss, neither positive nor negative).
Persons left without a labelled keypoint are regions stage-1 training ignores. Image names
are the job's image URIs, so the images are read where the job read them.

``--labels FILE.json`` is a COCO person-keypoints file, such as `detpose import` writes;
relative names are joined onto ``--images`` when it is given.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass

from model.training.datasets import CocoImage, load_coco_keypoints
from pipeline.formats import Thresholds, export_job
from pipeline.formats.common import DEFAULT_VISIBLE_SCORE
from pipeline.store.storage import storage_options
from schemas.spec import StorageSpec

# Pseudo-labels: a teacher's keypoints below this score are left unlabelled by default.
DEFAULT_PSEUDO_LABEL_SCORE = 0.5


@dataclass(frozen=True)
class Labels:
    """Training records and how to describe where they came from."""

    records: list[CocoImage]
    description: str


def is_review_file(uri: str) -> bool:
    return uri.rstrip("/").lower().endswith(".json")


def job_pseudo_labels(
    job_uri: str, min_score: float = DEFAULT_PSEUDO_LABEL_SCORE, storage: StorageSpec | None = None
) -> Labels:
    """The poses of the job at ``job_uri`` scoring at least ``min_score``, as training records.

    Raises:
        FormatError: not a job folder, or a bad threshold; PartFileError: a bad part file.
    """
    storage = storage or StorageSpec()
    thresholds = Thresholds(min_score, max(min_score, DEFAULT_VISIBLE_SCORE))
    with tempfile.TemporaryDirectory(prefix="detpose-labels-") as tmp:
        coco = os.path.join(tmp, "pseudo_labels.json")
        summary = export_job(job_uri, "coco", coco, thresholds=thresholds, storage=storage)
        records = load_coco_keypoints(coco, "")
    description = (
        f"pseudo-labels of job {job_uri} (pose and keypoint scores >= {min_score}: "
        f"{summary.persons} persons on {summary.images} images)"
    )
    return Labels(records, description)


def review_file_labels(
    uri: str, images_root: str | None, storage: StorageSpec | None = None
) -> Labels:
    """The persons of a COCO person-keypoints file (e.g. `detpose import`'s output)."""
    storage = storage or StorageSpec()
    records = load_coco_keypoints(uri, images_root or "", storage_options(uri, storage))
    root = f" (images: {images_root})" if images_root else ""
    return Labels(records, f"reviewed labels {uri}{root}")


def labels_from(
    uri: str,
    images_root: str | None = None,
    min_score: float = DEFAULT_PSEUDO_LABEL_SCORE,
    storage: StorageSpec | None = None,
) -> Labels:
    """``--labels``: a review file (``*.json``) or a job folder's pseudo-labels."""
    if is_review_file(uri):
        return review_file_labels(uri, images_root, storage)
    return job_pseudo_labels(uri, min_score, storage)
