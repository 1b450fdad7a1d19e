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
    sidecar_uri,
)
from pipeline.formats.cvat import raw_labels_json, read_cvat, write_cvat
from pipeline.formats.labelstudio import labeling_config, read_labelstudio, write_labelstudio
from pipeline.store.outputs import check_output_file, open_atomic, write_atomic
from pipeline.store.storage import open_input
from schemas.spec import StorageSpec

EXPORT_FORMATS = ("coco", "cvat", "labelstudio")
IMPORT_FORMATS = ("cvat", "labelstudio")
# The file beside an export that sets the review tool up: (suffix, the extension it replaces).
_SIDECARS = {"cvat": (".labels.json", ".xml"), "labelstudio": (".label_config.xml", ".json")}

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
    allow_partial: bool = False,
    replace_symlink: bool = False,
) -> ExportSummary:
    """Write the job's ok images and their persons to ``out_uri`` in ``fmt``.

    CVAT and Label Studio also get a file that sets the tool up beside ``out_uri``: CVAT's
    labels (``*.labels.json``, for the label editor's "Raw" tab) and Label Studio's labeling
    config (``*.label_config.xml``). Both targets are checked before any row is read
    (``pipeline.store.outputs``). A part file that cannot be read stops the export unless
    ``allow_partial``; the file then says it is partial (``summary.parts``).

    Raises:
        FormatError: an unknown format, a missing job folder or bad thresholds;
        OutputError: a target that must not be written; PartFileError: a bad part file.
    """
    if fmt not in EXPORT_FORMATS:
        raise FormatError(f"got format {fmt!r}; expected one of {', '.join(EXPORT_FORMATS)}")
    thresholds = thresholds or Thresholds()
    names = names or ImageNames()
    storage = storage or StorageSpec()
    sidecar = sidecar_uri(out_uri, *_SIDECARS[fmt]) if fmt in _SIDECARS else None
    for target in (out_uri, sidecar):
        if target is not None:
            check_output_file(target, storage, replace_symlink=replace_symlink)
    rows = JobRows(job_uri, storage, batch_rows, allow_partial)
    report = rows.parts.report

    def write_once() -> ExportSummary:
        summary = ExportSummary(parts=report)

        def images(with_poses: bool = True) -> Iterator[ImageRecord]:
            return rows.images(names, thresholds, summary if with_poses else None, with_poses)

        source = f"DetPose job {rows.name}" + (" (PARTIAL)" if report.partial else "")
        with open_atomic(out_uri, storage, replace_symlink=replace_symlink) as fh:
            if fmt == "coco":
                info = {
                    "description": source,
                    "detpose": {
                        "job": job_uri,
                        "min_score": thresholds.min_score,
                        "visible_score": thresholds.visible_score,
                        **report.partial_record(),  # known before writing: see run() below
                    },
                }
                write_coco(images, fh, info)
            elif fmt == "cvat":
                write_cvat(images(), fh, task_name=source, note=report.partial_note())
            else:
                write_labelstudio(images(), fh, model_version=source)
        return summary

    # A part file that fails half-way through (with allow_partial) is left out and the file
    # written again, so what says "partial" is written from the rows that were read.
    summary = rows.parts.run(write_once)
    summary.outputs.append(out_uri)
    if sidecar is not None:
        text = raw_labels_json() if fmt == "cvat" else labeling_config()
        write_atomic(sidecar, text, storage, replace_symlink=replace_symlink)
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
    replace_symlink: bool = False,
) -> ImportSummary:
    """Read a reviewed CVAT for images 1.1 XML or Label Studio JSON export and write its
    persons to ``out_uri`` as a COCO person-keypoints file (ground truth: no scores).

    The output is checked before the file is read; the whole file is read and checked
    before anything is written."""
    if fmt not in IMPORT_FORMATS:
        raise FormatError(f"got format {fmt!r}; expected one of {', '.join(IMPORT_FORMATS)}")
    names = names or ImageNames()
    storage = storage or StorageSpec()
    check_output_file(out_uri, storage, replace_symlink=replace_symlink)
    with open_input(in_uri, storage) as fh:
        if fmt == "cvat":
            records, summary = read_cvat(fh, names, in_uri)
        else:
            records, summary = read_labelstudio(fh.read(), names, in_uri, reviewed_only)
    info = {"description": f"DetPose import of {fmt} review {in_uri}"}
    with open_atomic(out_uri, storage, replace_symlink=replace_symlink) as fh:
        write_coco(lambda _with_poses: records, fh, info)
    return summary
