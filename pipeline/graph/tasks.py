"""The stateless Ray Data stages (tasks): fetch+decode, and stage 2's filtering.

Each maps a numpy batch to a new batch, and every row that enters leaves: error rows pass
through untouched. This module must not import torch: task workers that only decode or
filter then stay small (the model stages, which need it, live in ``pipeline/graph/actors.py``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np

from model.codecs.boxes import xywh_to_xyxy
from model.codecs.coords import original_to_decoded
from model.codecs.exposure import Exposure, correct_exposure, luma_of
from model.filtering.filters import filter_proposals
from model.keypoints import NUM_KEYPOINTS
from model.stage_data import FilteredPersons
from pipeline.graph.batches import (
    Batch,
    map_ok_rows,
    ok_rows,
    ragged,
    require_columns,
    with_internal_errors,
)
from pipeline.graph.rows import EXPOSURE_COLUMNS, EXPOSURE_FLOATS, NOT_MEASURED, RETRY_COLUMNS
from pipeline.graph.stage1_record import STAGE1_COLUMNS, read_proposals
from pipeline.store.fetch import DecodedImage, fetch_and_decode
from pipeline.store.storage import image_filesystem_for, image_id_for
from schemas.filtering import FilterSpec
from schemas.output import FILTER_COUNT_FIELDS, RETRY_KINDS, STATUS_ERROR, STATUS_OK
from schemas.spec import DecodeSpec, StorageSpec

_EMPTY_IMAGE = np.zeros((1, 1, 3), dtype=np.uint8)
# The filter_mode of persons whose boxes came with the image (e.g. ground-truth boxes).
GIVEN_BOXES_MODE = "given"


def decode_batch(batch: Batch, decode: DecodeSpec, storage: StorageSpec) -> Batch:
    """URIs → decoded images, or error rows with a kind and a message.

    Every row, ok or not, carries the storage retries its fetch needed (``RETRY_COLUMNS``).
    """
    require_columns(batch, ("uri",), "decode")
    uris = [str(u) for u in batch["uri"]]
    rows: dict[str, list[Any]] = {
        k: [] for k in ("image_id", "uri", "status", "error_kind", "error_message", "width",
                        "height", "scale", "image", *RETRY_COLUMNS, *EXPOSURE_COLUMNS)
    }  # fmt: skip
    for uri in uris:
        retries: Counter[str] = Counter()
        try:
            fs, path = image_filesystem_for(uri, storage)
            result = fetch_and_decode(fs, path, decode, retries)
        except Exception as exc:  # a bad URI must become a row, not a failed task
            result = None
            kind, message = "storage", f"{type(exc).__name__}: {exc}"
        rows["image_id"].append(image_id_for(uri))
        rows["uri"].append(uri)
        for column, retry_kind in zip(RETRY_COLUMNS, RETRY_KINDS, strict=True):
            rows[column].append(retries[retry_kind])
        if isinstance(result, DecodedImage):
            rgb, exposure = exposed(result.rgb, decode)
            rows["status"].append(STATUS_OK)
            rows["error_kind"].append("")
            rows["error_message"].append("")
            rows["width"].append(result.width)
            rows["height"].append(result.height)
            rows["scale"].append(result.scale)
            rows["image"].append(rgb)
            rows["exposure_luma"].append(exposure.luma)
            rows["exposure_noise"].append(
                NOT_MEASURED if exposure.noise is None else exposure.noise
            )
            rows["exposure_denoised"].append(exposure.denoised)
            rows["exposure_gain"].append(exposure.gain)
            continue
        if result is not None:
            kind, message = result.kind, result.message
        rows["status"].append(STATUS_ERROR)
        rows["error_kind"].append(kind)
        rows["error_message"].append(message)
        rows["width"].append(-1)
        rows["height"].append(-1)
        rows["scale"].append(0.0)
        rows["image"].append(_EMPTY_IMAGE)
        rows["exposure_luma"].append(0.0)  # no image: the row's exposure is null
        rows["exposure_noise"].append(NOT_MEASURED)
        rows["exposure_denoised"].append(False)
        rows["exposure_gain"].append(1.0)
    out = {k: np.array(v) for k, v in rows.items() if k != "image"}
    out.update({column: np.array(rows[column], np.int32) for column in RETRY_COLUMNS})
    out.update({column: np.array(rows[column], np.float32) for column in EXPOSURE_FLOATS})
    out["image"] = ragged(rows["image"])
    # Columns besides the URI (e.g. an evaluation's ground-truth boxes) ride along unchanged.
    out.update({k: v for k, v in batch.items() if k not in out})
    return out


def exposed(rgb: np.ndarray, decode: DecodeSpec) -> tuple[np.ndarray, Exposure]:
    """The image the networks see (``decode.exposure``), and what was measured and done."""
    if decode.exposure == "off":
        return rgb, Exposure(float(luma_of(rgb).mean()), None, False, 1.0)
    return correct_exposure(rgb, decode.dark_luma)


# -- stage 2: filtering (tasks) ----------------------------------------------------------------


def filter_batch(batch: Batch, spec: FilterSpec) -> Batch:
    """Algorithm 1 (or a baseline) per image; persons padded to ``spec.max_persons``."""
    require_columns(batch, ("status", "image"), "filter")
    n, m = len(batch["status"]), spec.max_persons
    out = {
        "person_boxes": np.zeros((n, m, 4), np.float32),
        "person_box_scores": np.zeros((n, m), np.float32),
        "person_coarse": np.zeros((n, m, NUM_KEYPOINTS, 3), np.float32),
        "person_recovered": np.zeros((n, m), bool),
        "num_persons": np.zeros(n, np.int32),
        **{f"count_{name}": np.zeros(n, np.int32) for name in FILTER_COUNT_FIELDS},
    }

    def filtered(rows: list[int]) -> list[FilteredPersons]:
        sizes = [(batch["image"][i].shape[1], batch["image"][i].shape[0]) for i in rows]
        return [
            filter_proposals(read_proposals(batch, i), spec, wh)
            for i, wh in zip(rows, sizes, strict=True)
        ]

    done, failures = map_ok_rows(filtered, batch, lambda i: i)
    for i, persons in done:
        k = len(persons.box_scores)
        out["person_boxes"][i, :k] = persons.boxes_xyxy
        out["person_box_scores"][i, :k] = persons.box_scores
        out["person_coarse"][i, :k] = persons.coarse_kpts_xys
        out["person_recovered"][i, :k] = persons.recovered
        out["num_persons"][i] = k
        for name, value in persons.counts.as_dict().items():
            out[f"count_{name}"][i] = value
    keep = {k: v for k, v in batch.items() if k not in STAGE1_COLUMNS}
    return with_internal_errors({**keep, **out}, failures, "filter")


def filter_batch_per_mode(batch: Batch, specs: Sequence[FilterSpec]) -> Batch:
    """``filter_batch`` once per spec, rows stacked, each tagged with its ``filter_mode``.

    Stage 1 ran once per image; each filter mode then gets its own copy of the row, so
    the refiner and the output see one row per (image, mode).
    """
    parts = [
        {**filter_batch(batch, spec), "filter_mode": np.full(len(batch["status"]), spec.mode)}
        for spec in specs
    ]
    return {key: np.concatenate([part[key] for part in parts]) for key in parts[0]}


def given_boxes_batch(batch: Batch, max_persons: int) -> Batch:
    """Persons from boxes given with each image (``given_boxes``: x, y, w, h flattened, in
    original pixels) instead of stage 1 and filtering; ``filter_mode`` is ``given``.

    Every box is accepted with score 1; the counters say so (proposals = accepted).
    """
    require_columns(batch, ("status", "scale", "given_boxes"), "given boxes")
    n = len(batch["status"])
    out: Batch = {
        "person_boxes": np.zeros((n, max_persons, 4), np.float32),
        "person_box_scores": np.zeros((n, max_persons), np.float32),
        "person_coarse": np.zeros((n, max_persons, NUM_KEYPOINTS, 3), np.float32),
        "person_recovered": np.zeros((n, max_persons), bool),
        "num_persons": np.zeros(n, np.int32),
        **{f"count_{name}": np.zeros(n, np.int32) for name in FILTER_COUNT_FIELDS},
        "filter_mode": np.full(n, GIVEN_BOXES_MODE),
    }
    for i in ok_rows(batch):
        boxes_xywh = np.asarray(batch["given_boxes"][i], np.float64).reshape(-1, 4)[:max_persons]
        k = len(boxes_xywh)
        boxes_xyxy = xywh_to_xyxy(boxes_xywh)
        out["person_boxes"][i, :k] = original_to_decoded(boxes_xyxy, float(batch["scale"][i]))
        out["person_box_scores"][i, :k] = 1.0
        out["num_persons"][i] = k
        out["count_proposals"][i] = out["count_accepted"][i] = k
    keep = {k: v for k, v in batch.items() if k != "given_boxes"}
    return {**keep, **out}
