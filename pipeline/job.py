"""The Ray Data graph of a job and its execution: source → decode → stage 1 → filter → stage 3 → Parquet.

Resources (pool sizes, CPUs/GPUs per actor, batch sizes) are wired here and nowhere else.
``ray.init`` is the caller's business (``jobs/``); this module only needs a running Ray.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime

import pyarrow as pa
import ray
from ray.data import ActorPoolStrategy, DataContext, Dataset, SaveMode
from ray.data.datasource import FilenameProvider

from model.inference import weights_source
from pipeline.stages import CoarseStage, RefineStage, decode_batch, filter_batch
from pipeline.stats import build_stats, write_stats
from pipeline.storage import filesystem_for, join_uri, list_inputs, read_manifest
from schemas.output import JobStats
from schemas.spec import JobSpec

logger = logging.getLogger(__name__)

DECODE_BATCH = 4
# Tasks take a fraction of a CPU so reads and filtering overlap with the model pools; the
# filter's share differs from the actors' so Ray Data keeps it a separate operator (own stats).
DECODE_NUM_CPUS = 0.5
FILTER_NUM_CPUS = 0.5
MAX_CROPS_PER_FORWARD = 64


@dataclass(frozen=True)
class JobPaths:
    """Where a job writes."""

    root: str
    annotations: str
    stats_json: str
    stats_parquet: str
    spec_yaml: str

    @classmethod
    def for_spec(cls, spec: JobSpec) -> JobPaths:
        root = join_uri(spec.output, spec.job_id)
        return cls(
            root=root,
            annotations=join_uri(root, "annotations"),
            stats_json=join_uri(root, "stats.json"),
            stats_parquet=join_uri(root, "stats.parquet"),
            spec_yaml=join_uri(root, "spec.yaml"),
        )


class PartFilenames(FilenameProvider):
    """Deterministic Parquet names, ``part-TASK.parquet``, inside a per-run folder ``run-NNN/``."""

    def __init__(self) -> None:
        super().__init__(file_format="parquet")

    def get_filename_for_task(self, write_uuid: str, task_index: int) -> str:
        return f"part-{task_index:06d}.parquet"


def resolve_inputs(spec: JobSpec) -> list[str]:
    """Every image URI the job covers, sorted and de-duplicated."""
    if spec.manifest is not None:
        return sorted(dict.fromkeys(read_manifest(spec.manifest, spec.storage)))
    return list_inputs(spec.inputs, spec.storage)


def build_dataset(spec: JobSpec, uris: list[str]) -> Dataset:
    """The lazy Ray Data graph for ``uris``; nothing runs until it is written."""
    ds = ray.data.from_items([{"uri": u} for u in uris], override_num_blocks=max(1, min(len(uris) // DECODE_BATCH, 200)))
    ds = ds.map_batches(
        decode_batch,
        fn_kwargs={"decode": spec.decode, "storage": spec.storage},
        batch_size=DECODE_BATCH,
        batch_format="numpy",
        num_cpus=DECODE_NUM_CPUS,
    )
    ds = ds.map_batches(
        CoarseStage,
        fn_constructor_kwargs={
            "stage": spec.stage1,
            "device": spec.device,
            "proposals": spec.proposals_per_image,
            "peaks": spec.peaks_per_keypoint,
            "kpt_thr": spec.filter.keypoint_score_threshold,
        },
        compute=ActorPoolStrategy(size=spec.stage1.actors),
        batch_size=spec.stage1.batch_size,
        batch_format="numpy",
        num_cpus=spec.stage1.num_cpus,
        num_gpus=spec.stage1.num_gpus,
    )
    ds = ds.map_batches(
        filter_batch,
        fn_kwargs={"spec": spec.filter},
        batch_size=spec.stage1.batch_size,
        batch_format="numpy",
        num_cpus=FILTER_NUM_CPUS,
    )
    return ds.map_batches(
        RefineStage,
        fn_constructor_kwargs={
            "stage": spec.refiner,
            "device": spec.device,
            "flip_test": spec.flip_test,
            "max_crops": MAX_CROPS_PER_FORWARD,
        },
        compute=ActorPoolStrategy(size=spec.refiner.actors),
        batch_size=spec.refiner.batch_size,
        batch_format="numpy",
        num_cpus=spec.refiner.num_cpus,
        num_gpus=spec.refiner.num_gpus,
    )


def next_run_folder(spec: JobSpec, paths: JobPaths) -> str:
    """``annotations/run-NNN``: one folder per run of a job id, so a re-run never overwrites."""
    fs, path = filesystem_for(paths.annotations, spec.storage)
    runs = [p.rsplit("/", 1)[-1] for p in fs.ls(path, detail=False)] if fs.exists(path) else []
    taken = [int(r[4:]) for r in runs if r.startswith("run-") and r[4:].isdigit()]
    return join_uri(paths.annotations, f"run-{max(taken, default=-1) + 1:03d}")


def write_text(uri: str, text: str, spec: JobSpec) -> None:
    """Write a small text file to any supported URI."""
    fs, path = filesystem_for(uri, spec.storage)
    parent = path.rsplit("/", 1)[0]
    if parent:
        fs.makedirs(parent, exist_ok=True)
    with fs.open(path, "wb") as fh:
        fh.write(text.encode("utf-8"))


def run_job(spec: JobSpec, no_progress_timeout_s: float | None = None) -> JobStats:
    """Annotate every input of ``spec`` and write annotations, ``stats.json`` and ``spec.yaml``."""
    started = datetime.now(UTC)
    t0 = time.perf_counter()
    paths = JobPaths.for_spec(spec)
    uris = resolve_inputs(spec)
    write_text(paths.spec_yaml, spec.to_yaml(), spec)
    ctx = DataContext.get_current()
    if no_progress_timeout_s is not None:
        ctx.execution_no_progress_timeout_s = no_progress_timeout_s
    done = set(read_annotations(paths.annotations, spec).column("uri").to_pylist())
    todo = [u for u in uris if u not in done]
    if done:
        logger.info("resuming job %s: %d of %d images already written", spec.job_id, len(uris) - len(todo), len(uris))
    ds = None
    if todo:
        ds = build_dataset(spec, todo)
        fs, run_path = filesystem_for(next_run_folder(spec, paths), spec.storage)
        fs.makedirs(run_path, exist_ok=True)
        # OVERWRITE only ever clears this run's new folder; it lets the names be deterministic.
        ds.write_parquet(
            run_path, filesystem=fs, filename_provider=PartFilenames(), mode=SaveMode.OVERWRITE
        )
    weights = {
        "stage1": weights_source("stage1", spec.stage1.checkpoint),
        "refiner": weights_source("refiner", spec.refiner.checkpoint),
    }
    warnings = [
        f"{stage}: RANDOM weights (no checkpoint given and none bundled); poses are meaningless"
        for stage, source in weights.items()
        if source == "random-init"
    ]
    stats = build_stats(
        spec, paths.annotations, uris, len(todo), ds, started, time.perf_counter() - t0, weights, warnings
    )
    write_stats(stats, paths.stats_json, paths.stats_parquet, spec)
    return stats


def read_annotations(uri: str, spec: JobSpec) -> pa.Table:
    """All annotation rows written under ``uri`` (an ``annotations/`` folder)."""
    import pyarrow.dataset as pds

    fs, path = filesystem_for(uri, spec.storage)
    if not fs.exists(path):
        from schemas.output import ANNOTATION_SCHEMA

        return ANNOTATION_SCHEMA.empty_table()
    files = sorted(p for p in fs.find(path) if p.endswith(".parquet"))
    if not files:
        from schemas.output import ANNOTATION_SCHEMA

        return ANNOTATION_SCHEMA.empty_table()
    return pds.dataset(files, filesystem=fs, format="parquet").to_table()
