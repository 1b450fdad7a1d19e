"""A job's identity: the fingerprint of everything that shapes its rows, and its runs.

Re-running a job id resumes it, which is only sound when the new run makes rows the way the
earlier runs did. Every run therefore records its fingerprint in ``OUTPUT/JOB_ID/runs.json``,
and a run whose fingerprint differs from the previous run's is refused unless the caller
explicitly allows it, in which case the changed fields are recorded with the run.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from model.networks.base import RefinerSettings
from model.networks.resolve import ResolvedStage, stage_adapter, stage_settings
from pipeline.errors import JobSetupError
from pipeline.store.external_boxes import ExternalBoxes
from pipeline.store.sink import write_text
from pipeline.store.storage import filesystem_for
from schemas.output import RunRecord
from schemas.spec import JobSpec, StorageSpec

# Decode settings that decide which images become error rows or how large they are decoded;
# retries and backoff only change how hard a read is tried.
_RESULT_DECODE_FIELDS = ("max_pixels", "max_bytes", "max_side")
# Added later: in the fingerprint only when they change what earlier versions did.
_EXPOSURE_FIELDS = ("exposure", "dark_luma")


class SettingsChangedError(JobSetupError):
    """A re-run of a job id with settings that would make its rows differently."""


def job_fingerprint(
    spec: JobSpec, weights: Mapping[str, ResolvedStage], boxes: ExternalBoxes | None = None
) -> dict[str, Any]:
    """Everything that changes a job's rows, as plain data (inputs and resources excluded).

    Weights are identified by the SHA-256 of their checkpoint bytes, so a moved checkpoint
    keeps the fingerprint and a retrained one at the same path changes it; so are the
    ``stage1.boxes`` file (and its ``box_images``). Optional settings that are off (None)
    and absent boxes are left out, so that adding such a setting to DetPose does not make
    the jobs written before it look changed.
    """
    decode = spec.decode.model_dump(mode="json")
    filter_settings = spec.filter.model_dump(mode="json")
    optional: dict[str, Any] = {"stage1_boxes": boxes.fingerprint()} if boxes is not None else {}
    if "views" in stage_adapter("stage1", spec.stage1).options:
        views = spec.stage1.resolved_views()
        if len(views) > 1 or views[0].grid > 1:  # one whole-image pass is stage1_input_size
            optional["stage1_views"] = [view.model_dump(mode="json") for view in views]
    if spec.decode.exposure != "off":
        optional["decode_exposure"] = {name: decode[name] for name in _EXPOSURE_FIELDS}
    refiner = stage_adapter("refiner", spec.refiner)
    if "crop_padding" in refiner.options:
        settings = stage_settings("refiner", spec, refiner)
        assert isinstance(settings, RefinerSettings)
        optional["refiner_crops"] = {
            "crop_padding": settings.crop_padding or refiner.crop_padding,
            "second_crop_padding": settings.second_crop_padding,
            "guide": settings.guide,
        }
    if spec.stage1.onnx is not None or spec.refiner.onnx is not None:
        optional["onnx"] = {
            kind: stage.onnx.model_dump(mode="json")
            for kind, stage in (("stage1", spec.stage1), ("refiner", spec.refiner))
            if stage.onnx is not None
        }
    return {
        "weights": {kind: w.sha256 or w.source for kind, w in sorted(weights.items())},
        "models": {"stage1": spec.stage1.model, "refiner": spec.refiner.model},
        "stage1_input_size": spec.stage1.input_size,
        **optional,
        "filter": {k: v for k, v in filter_settings.items() if v is not None},
        "decode": {name: decode[name] for name in _RESULT_DECODE_FIELDS},
        "proposals_per_image": spec.proposals_per_image,
        "peaks_per_keypoint": spec.peaks_per_keypoint,
        "flip_test": spec.flip_test,
        "precision": spec.precision,
    }


def _flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(_flatten(value, name + "."))
        else:
            out[name] = value
    return out


def fingerprint_changes(before: Mapping[str, Any], after: Mapping[str, Any]) -> list[str]:
    """``field: old → new`` for each leaf that differs, in field order."""
    old, new = _flatten(before), _flatten(after)
    missing = object()
    return [
        f"{name}: {old.get(name, missing)!r} → {new.get(name, missing)!r}".replace(
            repr(missing), "(absent)"
        )
        for name in dict.fromkeys([*old, *new])
        if old.get(name, missing) != new.get(name, missing)
    ]


def read_runs(uri: str, storage: StorageSpec) -> list[RunRecord]:
    """The runs recorded for a job (empty for a new job)."""
    fs, path = filesystem_for(uri, storage)
    if not fs.exists(path):
        return []
    try:
        with fs.open(path, "rb") as fh:
            data = json.loads(fh.read().decode("utf-8"))
        return [RunRecord.model_validate(item) for item in data]
    except (ValueError, TypeError, ValidationError) as exc:
        raise JobSetupError(
            f"{uri}: the job's run record is unreadable ({type(exc).__name__}); it says which "
            "settings earlier runs used, so the job cannot be resumed safely: use a new job id"
        ) from None


def write_runs(uri: str, runs: list[RunRecord], storage: StorageSpec) -> None:
    """Replace the job's run record."""
    text = json.dumps([r.model_dump(mode="json") for r in runs], indent=2)
    write_text(uri, text, storage)


def new_run(
    previous: list[RunRecord],
    fingerprint: dict[str, Any],
    run_index: int,
    started_at: str,
    allow_changes: bool,
) -> RunRecord:
    """The record of a run about to start.

    Raises:
        SettingsChangedError: the settings differ from the previous run's and changes were
            not allowed; the message names every differing field.
    """
    changes = fingerprint_changes(previous[-1].fingerprint, fingerprint) if previous else []
    if changes and not allow_changes:
        raise SettingsChangedError(
            "this job id was run with other settings, and resuming it would mix rows made "
            "two ways: " + "; ".join(changes) + ". Use a new job id, or pass "
            "--allow-changed-settings to continue anyway (recorded in the stats' runs)."
        )
    return RunRecord(
        run_index=run_index,
        started_at=started_at,
        fingerprint=fingerprint,
        settings_changed=changes,
    )
