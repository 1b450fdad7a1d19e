"""What a job writes: the Arrow schema of an annotation row and the per-job statistics record."""

from __future__ import annotations

from typing import Any, Literal, NamedTuple, get_args

import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field

STATUS_OK = "ok"
STATUS_ERROR = "error"

# Why an image has no annotation (an error row's ``error_kind``). Every kind is a
# user-actionable category; ``ERROR_KINDS`` lists them in this order.
ErrorKind = Literal["missing", "unreadable", "too_large", "unsupported", "storage", "internal"]
ERROR_KINDS: tuple[str, ...] = get_args(ErrorKind)

ORIGIN_DETECTED = "detected"
ORIGIN_RECOVERED = "recovered"


class CountField(NamedTuple):
    """One per-image counter: its name (a field of a row's ``counts`` and of ``JobStats``) and
    what it counts."""

    name: str
    description: str


# The per-image counters, declared once. Every row carries them in ``counts`` (so statistics
# can be rebuilt from the output alone), ``JobStats`` holds their sums (with these
# descriptions), and ``model.stage_data.FilterCounts`` holds the filter's share. Every proposal ends
# in exactly one of dropped_low_score, dropped_few_keypoints, dropped_duplicate and accepted.
FILTER_COUNTERS: tuple[CountField, ...] = (
    CountField(
        "proposals",
        "Box proposals of stage 1, no NMS: the top-K person centres (proposals_per_image); "
        "for the zoo's MoveNet, its decoded instances pooled over every stage1 view, at "
        "most proposals_per_image.",
    ),
    CountField(
        # Not renamed to what it counts: the name is a column of the output schema.
        "dropped_low_score",
        "Proposals scoring below filter.box_score_threshold, proposals whose box is empty "
        "after clipping to the image, and accepted (detected) persons cut by "
        "filter.max_persons; in every filter mode. Despite the name, the last two need not "
        "have a low score.",
    ),
    CountField(
        "dropped_few_keypoints",
        "Proposals whose own coarse pose is missing or has n_kpt <= filter.min_keypoints "
        "(mode coarse only).",
    ),
    CountField(
        "dropped_duplicate",
        "Proposals whose coarse pose repeats an accepted person's (the same grouped pose, or "
        "OKS above filter.duplicate_oks; mode coarse), or boxes suppressed by NMS (modes nms "
        "and oks_nms).",
    ),
    CountField(
        "recovered",
        "Persons added with a kpt2box box for a valid pose inside an accepted box that no "
        "person explains (mode coarse only); extra outputs, not proposals. Recovered persons "
        "cut by filter.max_persons, or whose box is empty after clipping, are counted nowhere.",
    ),
    CountField(
        "accepted",
        "Proposals kept as persons and sent to refinement (Algorithm 1 in mode coarse, kept "
        "by NMS in nms / oks_nms, every usable box in none), after the filter.max_persons "
        "cut; persons written == accepted + recovered - recovered_duplicates_removed.",
    ),
)
REFINER_COUNTERS: tuple[CountField, ...] = (
    CountField(
        "refinement_runs",
        "Refiner passes over person crops (two per crop with flip_test).",
    ),
    CountField(
        "recovered_duplicates_removed",
        "Recovered persons dropped after refinement because their refined pose repeats a "
        "detected or higher-scoring person's (OKS above filter.recovered_dedupe_oks); 0 when "
        "that is off. Rows written before schema version 3 read back as 0.",
    ),
)
STAGE1_COUNTERS: tuple[CountField, ...] = (
    CountField(
        "stage1_inputs",
        "Network inputs stage 1 ran on for the image, its cost: one per whole-image view and "
        "one per tile of each tiled view that ran (stage1.views); 1 for DetPoseNet; 0 with "
        "boxes given instead. Rows written before schema version 4 read back as 0.",
    ),
)
# Appended after the others: rows written before a counter existed read back with it null.
COUNTERS: tuple[CountField, ...] = FILTER_COUNTERS + REFINER_COUNTERS + STAGE1_COUNTERS
COUNT_FIELDS: tuple[str, ...] = tuple(c.name for c in COUNTERS)
FILTER_COUNT_FIELDS: tuple[str, ...] = tuple(c.name for c in FILTER_COUNTERS)
COUNT_DESCRIPTIONS: dict[str, str] = {c.name: c.description for c in COUNTERS}

PERSON_TYPE = pa.struct(
    [
        pa.field("box_xywh", pa.list_(pa.float32(), 4), nullable=False),
        pa.field("box_score", pa.float32(), nullable=False),
        # 17 x (x, y, score) flattened in COCO order, image pixels, like COCO's "keypoints".
        pa.field("keypoints", pa.list_(pa.float32(), 51), nullable=False),
        pa.field("pose_score", pa.float32(), nullable=False),
        pa.field("origin", pa.string(), nullable=False),
    ]
)

# Counters added after schema version 2 are nullable: rows written before read back as null
# (summed as 0) instead of failing to read.
ADDED_COUNT_FIELDS: tuple[str, ...] = ("recovered_duplicates_removed", "stage1_inputs")
COUNTS_TYPE = pa.struct(
    [pa.field(name, pa.int32(), nullable=name in ADDED_COUNT_FIELDS) for name in COUNT_FIELDS]
)

# Kinds of transient storage error a read is retried for (pipeline.store.fetch.retry_kind):
# throttled (429, 503 SlowDown and other throttling codes), server_error (other 5xx, malformed
# responses), connection (refused, reset, closed mid-body), timeout (connect or read timeout).
RETRY_KINDS: tuple[str, ...] = ("throttled", "server_error", "connection", "timeout")

# Per row, the retries its image's fetch needed, by kind; an error row of kind 'storage' that
# ran out of retries has decode.retries here in total. All zero when the first attempt worked.
STORAGE_RETRIES_TYPE = pa.struct(
    [pa.field(kind, pa.int32(), nullable=False) for kind in RETRY_KINDS]
)

# What decode measured of an image's exposure and did about it (decode.exposure): its mean
# Rec. 601 luma in [0, 1]; for a dark image, its noise (grey levels of luma, after any gain;
# null when the image is not dark); whether it was denoised; the brightness gain applied (1:
# none). Null for error rows and in rows written before schema version 4.
EXPOSURE_TYPE = pa.struct(
    [
        pa.field("luma", pa.float32(), nullable=False),
        pa.field("noise", pa.float32()),
        pa.field("denoised", pa.bool_(), nullable=False),
        pa.field("gain", pa.float32(), nullable=False),
    ]
)
EXPOSURE_FIELDS: tuple[str, ...] = tuple(field.name for field in EXPOSURE_TYPE)

ANNOTATION_SCHEMA = pa.schema(
    [
        pa.field("image_id", pa.int64(), nullable=False),
        pa.field("uri", pa.string(), nullable=False),
        pa.field("width", pa.int32()),
        pa.field("height", pa.int32()),
        pa.field("status", pa.string(), nullable=False),
        pa.field("error_kind", pa.string()),
        pa.field("error_message", pa.string()),
        pa.field("persons", pa.list_(PERSON_TYPE), nullable=False),
        pa.field("counts", COUNTS_TYPE, nullable=False),
        pa.field("storage_retries", STORAGE_RETRIES_TYPE, nullable=False),
        pa.field("exposure", EXPOSURE_TYPE),
    ],
    # 2: storage_retries added (version 1 files read back with it null).
    # 3: counts.recovered_duplicates_removed added (older files read back with it null).
    # 4: exposure and counts.stage1_inputs added (older files read back with them null).
    metadata={b"detpose.schema_version": b"4"},
)


# An evaluation's rows: one per (image, filter mode), so several modes share stage 1.
EVAL_ROW_SCHEMA = ANNOTATION_SCHEMA.append(
    pa.field("filter_mode", pa.string(), nullable=False)
).with_metadata(ANNOTATION_SCHEMA.metadata)


class StageStats(BaseModel):
    """One Ray Data operator's share of the work, from Ray Data's stats summary."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(..., description="Ray Data operator name.")
    busy_s: float = Field(..., ge=0.0, description="Sum of the operator's task wall times.")
    rows: int = Field(..., ge=0, description="Rows the operator emitted.")
    rows_per_s: float = Field(..., ge=0.0, description="rows / busy_s.")
    function_s: float = Field(
        0.0, ge=0.0, description="Seconds inside the stage's own function (its real work)."
    )
    overhead_s: float = Field(
        0.0,
        ge=0.0,
        description="busy_s - function_s: Ray Data's own work around the function (batching, "
        "block building, serialisation).",
    )
    output_mib: float = Field(
        0.0, ge=0.0, description="MiB the operator shipped to the next (its output blocks)."
    )


class RunRecord(BaseModel):
    """One run of a job id: when it started and the settings that shaped its results."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    run_index: int = Field(..., ge=0, description="The run's index (its files' run-RRR- prefix).")
    started_at: str = Field(..., description="UTC ISO-8601.")
    fingerprint: dict[str, Any] = Field(
        ...,
        description="Everything that changes results: weights' SHA-256, filter, decode limits, "
        "proposals and peaks per image, flip test.",
    )
    settings_changed: list[str] = Field(
        default_factory=list,
        description="Fingerprint fields that differ from the previous run; non-empty only when "
        "the run was explicitly allowed to change them (--allow-changed-settings).",
    )


class JobStats(BaseModel):
    """Per-job statistics written to ``stats.json`` (and ``stats.parquet``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    job_id: str = Field(..., description="The job id (names OUTPUT/JOB_ID/).")
    started_at: str = Field(..., description="UTC ISO-8601.")
    finished_at: str = Field(..., description="UTC ISO-8601.")
    wall_s: float = Field(..., ge=0.0, description="Wall-clock seconds of this run.")
    images_in: int = Field(..., ge=0, description="Input images listed for this job.")
    skipped_non_image: int = Field(
        0, ge=0, description="Files under input prefixes without an image extension (not rows)."
    )
    images_ok: int = Field(..., ge=0, description="Rows with status 'ok'.")
    images_error: int = Field(
        ..., ge=0, description="Rows with status 'error' (images_in == images_ok + images_error)."
    )
    errors_by_kind: dict[str, int] = Field(
        default_factory=dict,
        description="Error rows by error_kind (one of ERROR_KINDS); kinds without errors absent.",
    )
    storage_retries: dict[str, int] = Field(
        default_factory=dict,
        description="Retries of image reads from storage by kind (throttled, server_error, "
        "connection, timeout), summed over the rows; at most decode.retries per image.",
    )
    images_this_run: int = Field(
        ..., ge=0, description="Images processed by this run (a resumed job skips written ones)."
    )
    images_per_s: float = Field(..., ge=0.0, description="images_this_run / wall_s.")
    persons: int = Field(
        ...,
        ge=0,
        description="Persons written (accepted + recovered - recovered_duplicates_removed).",
    )
    # The counters of COUNTERS, summed over the rows; a unit test keeps these equal to it.
    proposals: int = Field(..., ge=0, description=COUNT_DESCRIPTIONS["proposals"])
    dropped_low_score: int = Field(..., ge=0, description=COUNT_DESCRIPTIONS["dropped_low_score"])
    dropped_few_keypoints: int = Field(
        ..., ge=0, description=COUNT_DESCRIPTIONS["dropped_few_keypoints"]
    )
    dropped_duplicate: int = Field(..., ge=0, description=COUNT_DESCRIPTIONS["dropped_duplicate"])
    recovered: int = Field(..., ge=0, description=COUNT_DESCRIPTIONS["recovered"])
    accepted: int = Field(..., ge=0, description=COUNT_DESCRIPTIONS["accepted"])
    refinement_runs: int = Field(..., ge=0, description=COUNT_DESCRIPTIONS["refinement_runs"])
    recovered_duplicates_removed: int = Field(
        0, ge=0, description=COUNT_DESCRIPTIONS["recovered_duplicates_removed"]
    )
    stage1_inputs: int = Field(0, ge=0, description=COUNT_DESCRIPTIONS["stage1_inputs"])
    refinement_runs_per_person: float = Field(
        ..., ge=0.0, description="refinement_runs / persons (0 without persons)."
    )
    stages: list[StageStats] = Field(
        default_factory=list, description="Per Ray Data operator, source to sink."
    )
    gpus_per_actor: dict[str, float] = Field(
        default_factory=dict, description="GPUs each model-stage actor held ('auto' resolved)."
    )
    accelerator_seconds: float = Field(
        ..., ge=0.0, description="Sum over model stages of busy time times GPUs per actor."
    )
    weights: dict[str, str] = Field(
        default_factory=dict, description="Where each stage's weights came from."
    )
    runs: list[RunRecord] = Field(
        default_factory=list,
        description="Every run of this job id, oldest first, with the settings each ran with.",
    )
    warnings: list[str] = Field(
        default_factory=list,
        description="Problems worth a look; '[internal]' ones make the run exit with code 3.",
    )
    ray_data_stats: str = Field("", description="Ray Data's human-readable stats text.")
    spec: dict[str, Any] = Field(default_factory=dict, description="The spec that ran, redacted.")
    versions: dict[str, str] = Field(
        default_factory=dict, description="Versions of Python and the packages that shape results."
    )

    def summary_line(self) -> str:
        """One line for a terminal."""
        return (
            f"{self.images_in} images ({self.images_ok} ok, {self.images_error} errors; "
            f"{self.images_this_run} processed this run), {self.persons} persons, "
            f"{self.images_per_s:.2f} images/s, {self.wall_s:.1f} s"
        )
