"""Exports of a job's annotations for review tools and for training, and imports back.

``export_job`` streams a job's rows (``OUTPUT/JOB_ID/annotations/``) into a COCO
person-keypoints file, CVAT for images 1.1 XML, or Label Studio tasks, holding one batch of
rows at a time. ``import_review`` turns a reviewed CVAT or Label Studio file into a COCO
person-keypoints file that ``detpose train --annotations`` reads. No Ray is involved.
"""

from __future__ import annotations

from collections.abc import Iterator

from pipeline.formats.coco import write_coco
from pipeline.formats.common import (
    DEFAULT_BATCH_ROWS,
    ExportSummary,
    FormatError,
    ImageNames,
    ImageRecord,
    ImportSummary,
    JobRows,
    Thresholds,
    open_input,
    open_output,
    sidecar_uri,
)
from pipeline.formats.cvat import raw_labels_json, read_cvat, write_cvat
from pipeline.formats.labelstudio import labeling_config, read_labelstudio, write_labelstudio
from pipeline.sink import write_text
from schemas.spec import StorageSpec

EXPORT_FORMATS = ("coco", "cvat", "labelstudio")
IMPORT_FORMATS = ("cvat", "labelstudio")

__all__ = [
    "EXPORT_FORMATS",
    "IMPORT_FORMATS",
    "ExportSummary",
    "FormatError",
    "ImageNames",
    "ImportSummary",
    "Thresholds",
    "export_job",
    "import_review",
]


def export_job(
    job_uri: str,
    fmt: str,
    out_uri: str,
    *,
    thresholds: Thresholds | None = None,
    names: ImageNames | None = None,
    storage: StorageSpec | None = None,
    batch_rows: int = DEFAULT_BATCH_ROWS,
) -> ExportSummary:
    """Write the job's ok images and their persons to ``out_uri`` in ``fmt``.

    CVAT and Label Studio also get a file that sets the tool up beside ``out_uri``: CVAT's
    labels (``*.labels.json``, for the label editor's "Raw" tab) and Label Studio's labeling
    config (``*.label_config.xml``). Raises ``FormatError`` for an unknown format, a missing
    job folder or bad thresholds.
    """
    if fmt not in EXPORT_FORMATS:
        raise FormatError(f"got format {fmt!r}; expected one of {', '.join(EXPORT_FORMATS)}")
    thresholds = thresholds or Thresholds()
    names = names or ImageNames()
    storage = storage or StorageSpec()
    rows = JobRows(job_uri, storage, batch_rows)
    summary = ExportSummary()

    def images(with_poses: bool = True) -> Iterator[ImageRecord]:
        return rows.images(names, thresholds, summary if with_poses else None, with_poses)

    with open_output(out_uri, storage) as fh:
        if fmt == "coco":
            info = {
                "description": f"DetPose job {rows.name}",
                "detpose": {
                    "job": job_uri,
                    "min_score": thresholds.min_score,
                    "visible_score": thresholds.visible_score,
                },
            }
            write_coco(images, fh, info)
        elif fmt == "cvat":
            write_cvat(images(), fh, task_name=f"detpose {rows.name}")
        else:
            write_labelstudio(images(), fh, model_version=f"detpose {rows.name}")
    summary.outputs.append(out_uri)
    if fmt == "cvat":
        sidecar = sidecar_uri(out_uri, ".labels.json", replaces=".xml")
        write_text(sidecar, raw_labels_json(), storage)
        summary.outputs.append(sidecar)
    elif fmt == "labelstudio":
        sidecar = sidecar_uri(out_uri, ".label_config.xml", replaces=".json")
        write_text(sidecar, labeling_config(), storage)
        summary.outputs.append(sidecar)
    return summary


def import_review(
    fmt: str,
    in_uri: str,
    out_uri: str,
    *,
    names: ImageNames | None = None,
    reviewed_only: bool = False,
    storage: StorageSpec | None = None,
) -> ImportSummary:
    """Read a reviewed CVAT for images 1.1 XML or Label Studio JSON export and write its
    persons to ``out_uri`` as a COCO person-keypoints file (ground truth: no scores)."""
    if fmt not in IMPORT_FORMATS:
        raise FormatError(f"got format {fmt!r}; expected one of {', '.join(IMPORT_FORMATS)}")
    names = names or ImageNames()
    storage = storage or StorageSpec()
    with open_input(in_uri, storage) as fh:
        if fmt == "cvat":
            records, summary = read_cvat(fh, names, in_uri)
        else:
            text = fh.read().decode("utf-8")
            records, summary = read_labelstudio(text, names, in_uri, reviewed_only)
    info = {"description": f"DetPose import of {fmt} review {in_uri}"}
    with open_output(out_uri, storage) as fh:
        write_coco(lambda _with_poses: records, fh, info)
    return summary
