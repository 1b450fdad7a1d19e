"""The Ray Data graph of a job and its execution: source → decode → stage 1 → filter → stage 3 → Parquet.

Resources (pool sizes, CPUs/GPUs per actor, batch sizes) are wired here and nowhere else.
``ray.init`` is the caller's business (``jobs/``); this module only needs a running Ray.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime

import ray
from ray.data import ActorPoolStrategy, DataContext, Dataset, SaveMode

from model.inference import weights_source
from pipeline.actors import CoarseStage, RefineStage
from pipeline.progress import ProgressReporter
from pipeline.sink import (
    JobPaths,
    PartFilenames,
    next_run_index,
    quarantine_incomplete_files,
    read_annotations,
    run_prefix,
    write_text,
)
from pipeline.stages import decode_batch, filter_batch
from pipeline.stats import RunFacts, build_stats, write_stats
from pipeline.storage import Listing, filesystem_for, list_inputs, read_manifest
from schemas.output import JobStats
from schemas.spec import AUTO_GPUS_PER_ACTOR, JobSpec

logger = logging.getLogger(__name__)

DECODE_BATCH = 4
# Tasks take a fraction of a CPU so reads and filtering overlap with the model pools; the
# filter's share differs from the actors' so Ray Data keeps it a separate operator (own stats).
DECODE_NUM_CPUS = 0.5
FILTER_NUM_CPUS = 0.5
MAX_CROPS_PER_FORWARD = 64


def resolve_inputs(spec: JobSpec) -> Listing:
    """Every image URI the job covers, sorted and de-duplicated."""
    if spec.manifest is not None:
        return read_manifest(spec.manifest, spec.storage)
    return list_inputs(spec.inputs, spec.storage)


def gpus_per_actor(spec: JobSpec, cluster_gpus: float) -> dict[str, float]:
    """GPUs each actor of each model stage asks for, with 'auto' resolved for this cluster."""

    def resolve(requested: float | str) -> float:
        if requested == "auto":
            return AUTO_GPUS_PER_ACTOR if cluster_gpus > 0 else 0.0
        return float(requested)

    return {"stage1": resolve(spec.stage1.num_gpus), "refiner": resolve(spec.refiner.num_gpus)}


def build_dataset(spec: JobSpec, uris: list[str], gpus: dict[str, float]) -> Dataset:
    """The lazy Ray Data graph for ``uris``; nothing runs until it is written.

    ``gpus``: GPUs per actor of each model stage, from ``gpus_per_actor``.
    """
    ds = ray.data.from_items(
        [{"uri": u} for u in uris], override_num_blocks=max(1, min(len(uris) // DECODE_BATCH, 200))
    )
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
        num_gpus=gpus["stage1"],
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
        num_gpus=gpus["refiner"],
    )


def run_job(
    spec: JobSpec, no_progress_timeout_s: float | None = None, progress_interval_s: float = 10.0
) -> JobStats:
    """Annotate every input of ``spec`` and write annotations, ``stats.json`` and ``spec.yaml``."""
    started = datetime.now(UTC)
    t0 = time.perf_counter()
    paths = JobPaths.for_spec(spec)
    listing = resolve_inputs(spec)
    uris = listing.uris
    write_text(paths.spec_yaml, spec.to_yaml(), spec.storage)
    ctx = DataContext.get_current()
    if no_progress_timeout_s is not None:
        ctx.execution_no_progress_timeout_s = no_progress_timeout_s
    # Our own progress lines (from durable output) replace Ray Data's bars.
    ctx.enable_progress_bars = False
    for bad in quarantine_incomplete_files(paths.annotations, spec.storage):
        logger.warning("set aside incomplete annotation file from an interrupted run: %s", bad)
    written = read_annotations(paths.annotations, spec.storage, columns=["uri"])
    done = set(written.column("uri").to_pylist())
    todo = [u for u in uris if u not in done]
    if done:
        logger.info(
            "resuming job %s: %d of %d images already written",
            spec.job_id,
            len(uris) - len(todo),
            len(uris),
        )
    gpus = gpus_per_actor(spec, ray.cluster_resources().get("GPU", 0.0))
    ds = None
    if todo:
        ds = build_dataset(spec, todo, gpus)
        run_index = next_run_index(paths.annotations, spec.storage)
        fs, ann_path = filesystem_for(paths.annotations, spec.storage)
        fs.makedirs(ann_path, exist_ok=True)
        with ProgressReporter(fs, ann_path, len(todo), progress_interval_s, run_prefix(run_index)):
            ds.write_parquet(
                ann_path,
                filesystem=fs,
                filename_provider=PartFilenames(run_index),
                mode=SaveMode.APPEND,
            )
    weights = {
        "stage1": weights_source("stage1", spec.stage1.checkpoint),
        "refiner": weights_source("refiner", spec.refiner.checkpoint),
    }
    warnings = (
        [
            f"{len(listing.skipped)} non-image file(s) under the input prefixes skipped, "
            f"e.g. {listing.skipped[0]}"
        ]
        if listing.skipped
        else []
    )
    warnings += [
        f"{stage}: RANDOM weights (no checkpoint given and none bundled); poses are meaningless"
        for stage, source in weights.items()
        if source == "random-init"
    ]
    run = RunFacts(
        listing=listing,
        images_this_run=len(todo),
        dataset=ds,
        started=started,
        wall_s=time.perf_counter() - t0,
        gpus_per_actor=gpus,
        weights=weights,
        warnings=warnings,
    )
    stats = build_stats(spec, paths.annotations, run)
    write_stats(stats, paths.stats_json, paths.stats_parquet, spec)
    return stats
