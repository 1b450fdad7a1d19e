"""The Ray Data graph of a job and its execution: source → decode → stage 1 → filter → stage 3 → Parquet.

Resources (pool sizes, CPUs/GPUs per actor, batch sizes) are wired here and nowhere else.
``ray.init`` is the caller's business (``jobs/``); this module only needs a running Ray.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import ray
from ray.data import ActorPoolStrategy, DataContext, Dataset, SaveMode

from model.checkpoint import CheckpointError
from model.inference.weights import StageWeights, check_stage_weights
from pipeline.actors import CoarseStage, RefineStage
from pipeline.errors import JobSetupError
from pipeline.identity import job_fingerprint, new_run, read_runs, write_runs
from pipeline.part_files import PartFilenames
from pipeline.progress import ProgressReporter
from pipeline.resources import (
    DECODE_BATCH,
    DECODE_NUM_CPUS,
    FILTER_NUM_CPUS,
    max_crops_per_forward,
    resolved_batch_sizes,
    resolved_pool_sizes,
)
from pipeline.sink import (
    JobPaths,
    foreign_files,
    next_run_index,
    quarantine_incomplete_files,
    read_annotations,
    run_prefix,
    write_text,
)
from pipeline.stats import RunFacts, build_stats, write_stats
from pipeline.storage import (
    InputError,
    Listing,
    filesystem_for,
    list_inputs,
    read_manifest,
    storage_options,
)
from pipeline.tasks import decode_batch, filter_batch
from schemas.output import JobStats, RunRecord
from schemas.spec import AUTO_GPUS_PER_ACTOR, JobSpec

logger = logging.getLogger(__name__)

# A lost node takes its actors, its running tasks and the blocks in its object store with it.
# Ray Data 2.60 survives that with its own defaults, which this module relies on and does not
# override: model-stage actors run with max_restarts=-1 (a lost actor is restarted as soon as
# some node can host it; for a pool pinned with `resources`, when a node offering them joins)
# and max_task_retries=-1 (the batches it had in flight are sent again to the restarted
# actor); tasks run with max_retries=-1, so lost blocks are rebuilt from lineage. Passing
# these explicitly would need the deprecated **ray_remote_args of map_batches (removed in Ray
# 2.64). A re-executed write task rewrites its own file (part_filename), so no image is
# written twice. tests/e2e/test_node_loss.py proves it.


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


def _sha256(weights: Mapping[str, StageWeights] | None, kind: str) -> str | None:
    return weights[kind].sha256 if weights else None


def read_and_decode(spec: JobSpec, items: list[dict[str, Any]]) -> Dataset:
    """Source and fetch+decode tasks: one row per item (``uri`` plus any extra columns)."""
    ds = ray.data.from_items(
        items, override_num_blocks=max(1, min(len(items) // DECODE_BATCH, 200))
    )
    return ds.map_batches(
        decode_batch,
        fn_kwargs={"decode": spec.decode, "storage": spec.storage},
        batch_size=DECODE_BATCH,
        batch_format="numpy",
        num_cpus=DECODE_NUM_CPUS,
    )


def on_gpu(spec: JobSpec, gpus: dict[str, float]) -> bool:
    """Whether the model stages run on GPUs (which sizes their batches and pools)."""
    return spec.device != "cpu" and gpus["stage1"] > 0


def add_stage1(
    ds: Dataset,
    spec: JobSpec,
    gpus: dict[str, float],
    weights: Mapping[str, StageWeights] | None,
    cluster_gpus: float = 0.0,
) -> Dataset:
    """The stage-1 actor pool: proposals, peaks and limb scores per image."""
    gpu = on_gpu(spec, gpus)
    return ds.map_batches(
        CoarseStage,
        fn_constructor_kwargs={"spec": spec, "weights_sha256": _sha256(weights, "stage1")},
        compute=ActorPoolStrategy(size=resolved_pool_sizes(spec, gpu, cluster_gpus).stage1),
        batch_size=resolved_batch_sizes(spec, gpu).stage1,
        batch_format="numpy",
        num_cpus=spec.stage1.num_cpus,
        num_gpus=gpus["stage1"],
        resources=dict(spec.stage1.resources) or None,
    )


def add_task(
    ds: Dataset, job_spec: JobSpec, fn: Any, gpu: bool = False, **fn_kwargs: Any
) -> Dataset:
    """A stateless CPU task between the model stages (filtering, given boxes), one stage-1
    batch at a time; ``fn_kwargs`` go to ``fn``."""
    return ds.map_batches(
        fn,
        fn_kwargs=fn_kwargs,
        batch_size=resolved_batch_sizes(job_spec, gpu).stage1,
        batch_format="numpy",
        num_cpus=FILTER_NUM_CPUS,
    )


def add_refiner(
    ds: Dataset,
    spec: JobSpec,
    gpus: dict[str, float],
    weights: Mapping[str, StageWeights] | None,
    cluster_gpus: float = 0.0,
) -> Dataset:
    """The stage-3 actor pool: refined poses, emitted as the output rows."""
    gpu = on_gpu(spec, gpus)
    return ds.map_batches(
        RefineStage,
        fn_constructor_kwargs={
            "spec": spec,
            "max_crops": max_crops_per_forward(gpu),
            "weights_sha256": _sha256(weights, "refiner"),
        },
        compute=ActorPoolStrategy(size=resolved_pool_sizes(spec, gpu, cluster_gpus).refiner),
        batch_size=resolved_batch_sizes(spec, gpu).refiner,
        batch_format="numpy",
        num_cpus=spec.refiner.num_cpus,
        num_gpus=gpus["refiner"],
        resources=dict(spec.refiner.resources) or None,
    )


def build_dataset(
    spec: JobSpec,
    uris: list[str],
    gpus: dict[str, float],
    weights: Mapping[str, StageWeights] | None = None,
    cluster_gpus: float = 0.0,
) -> Dataset:
    """The lazy Ray Data graph for ``uris``; nothing runs until it is written.

    ``gpus``: GPUs per actor of each model stage, from ``gpus_per_actor``. ``weights``: the
    checked weights of each stage; every actor verifies it loads those very bytes.
    ``cluster_gpus``: GPUs in the cluster, which size the pools whose ``actors`` is 'auto'.
    """
    ds = read_and_decode(spec, [{"uri": u} for u in uris])
    ds = add_stage1(ds, spec, gpus, weights, cluster_gpus)
    ds = add_task(ds, spec, filter_batch, on_gpu(spec, gpus), spec=spec.filter)
    return add_refiner(ds, spec, gpus, weights, cluster_gpus)


@dataclass(frozen=True)
class PreparedJob:
    """A job the driver has checked and recorded, ready to run on Ray."""

    spec: JobSpec
    paths: JobPaths
    listing: Listing
    todo: list[str]
    weights: dict[str, StageWeights]
    run: RunRecord
    runs: list[RunRecord]  # every run of the job id, this one last
    warnings: list[str]
    started: datetime
    t0: float


def check_weights(spec: JobSpec) -> dict[str, StageWeights]:
    """Both stages' checkpoints, loaded once on the driver with the spec's storage settings."""
    weights = {}
    for kind, stage in (("stage1", spec.stage1), ("refiner", spec.refiner)):
        options = storage_options(stage.checkpoint, spec.storage) if stage.checkpoint else {}
        try:
            weights[kind] = check_stage_weights(kind, stage.checkpoint, options, stage.model)
        except CheckpointError as exc:
            raise JobSetupError(f"{kind}.checkpoint: {exc}") from None
    return weights


def _output_error(paths: JobPaths, exc: Exception) -> JobSetupError:
    reason = getattr(exc, "strerror", None) or f"{type(exc).__name__}: {exc}"
    return JobSetupError(f"output {paths.root}: cannot write the job there ({reason})")


def setup_warnings(
    listing: Listing,
    foreign: list[str],
    runs: list[RunRecord],
    weights: Mapping[str, StageWeights],
) -> list[str]:
    """What a user should know before trusting the run: skipped and foreign files, settings
    changed on purpose, random weights."""
    warnings = []
    if listing.skipped:
        warnings.append(
            f"{len(listing.skipped)} non-image file(s) under the input prefixes skipped, "
            f"e.g. {listing.skipped[0]}"
        )
    if foreign:
        warnings.append(
            f"{len(foreign)} file(s) in annotations/ were not written by DetPose and are "
            f"ignored, e.g. {foreign[0]}"
        )
    changed = [
        f"run {r.run_index}: {'; '.join(r.settings_changed)}" for r in runs if r.settings_changed
    ]
    if changed:
        warnings.append(
            "runs of this job were allowed to change settings, so its rows were made with "
            "different settings (" + " | ".join(changed) + "); see 'runs'"
        )
    warnings += [
        f"{kind}: RANDOM weights (no checkpoint given and none bundled); poses are meaningless"
        for kind, w in weights.items()
        if w.source == "random-init"
    ]
    return warnings


def prepare_job(spec: JobSpec, allow_changed_settings: bool = False) -> PreparedJob:
    """Everything the driver can check and record before Ray starts.

    Lists the inputs, loads both checkpoints, reads what earlier runs wrote, compares this
    run's fingerprint with the previous run's, and writes ``spec.yaml`` and ``runs.json``
    (which proves the output is writable).

    Raises:
        JobSetupError: no images, unreadable inputs or checkpoints, an output that cannot be
            written, or settings that differ from an earlier run of the job id.
    """
    started = datetime.now(UTC)
    t0 = time.perf_counter()
    paths = JobPaths.for_spec(spec)
    listing = resolve_inputs(spec)
    if not listing.uris:
        where = spec.manifest or ", ".join(spec.inputs)
        skipped = f" ({len(listing.skipped)} non-image file(s) skipped)" if listing.skipped else ""
        raise InputError(f"no images found in {where}{skipped}")
    weights = check_weights(spec)
    try:
        previous = read_runs(paths.runs_json, spec.storage)
        foreign = foreign_files(paths.annotations, spec.storage)
        run = new_run(
            previous,
            job_fingerprint(spec, weights),
            next_run_index(paths.annotations, spec.storage),
            started.isoformat(timespec="seconds"),
            allow_changed_settings,
        )
        write_text(paths.spec_yaml, spec.to_yaml(), spec.storage)
        write_runs(paths.runs_json, [*previous, run], spec.storage)
        for bad in quarantine_incomplete_files(paths.annotations, spec.storage):
            logger.warning("set aside incomplete annotation file from an interrupted run: %s", bad)
        done = set(
            read_annotations(paths.annotations, spec.storage, ["uri"]).column("uri").to_pylist()
        )
    except JobSetupError:
        raise
    except OSError as exc:
        raise _output_error(paths, exc) from None
    todo = [u for u in listing.uris if u not in done]
    if done:
        logger.info(
            "resuming job %s: %d of %d images already written",
            spec.job_id,
            len(listing.uris) - len(todo),
            len(listing.uris),
        )
    warnings = setup_warnings(listing, foreign, [*previous, run], weights)
    return PreparedJob(
        spec=spec,
        paths=paths,
        listing=listing,
        todo=todo,
        weights=weights,
        run=run,
        runs=[*previous, run],
        warnings=warnings,
        started=started,
        t0=t0,
    )


def check_devices(spec: JobSpec, cluster_gpus: float) -> None:
    """Refuse ``device: cuda`` on a cluster without GPUs before any actor tries it."""
    if spec.device == "cuda" and cluster_gpus <= 0:
        raise JobSetupError(
            "device: 'cuda' requested but the Ray cluster has no GPUs; use device 'auto' or "
            "'cpu', or run on a cluster with GPU nodes"
        )


def execute_job(
    job: PreparedJob, no_progress_timeout_s: float | None = None, progress_interval_s: float = 10.0
) -> JobStats:
    """Run a prepared job on the connected Ray and write ``stats.json``; returns the stats."""
    spec, paths = job.spec, job.paths
    cluster_gpus = ray.cluster_resources().get("GPU", 0.0)
    check_devices(spec, cluster_gpus)
    ctx = DataContext.get_current()
    if no_progress_timeout_s is not None:
        ctx.execution_no_progress_timeout_s = no_progress_timeout_s
    # Our own progress lines (from durable output) replace Ray Data's bars.
    ctx.enable_progress_bars = False
    gpus = gpus_per_actor(spec, cluster_gpus)
    ds = None
    if job.todo:
        ds = build_dataset(spec, job.todo, gpus, job.weights, cluster_gpus)
        fs, ann_path = filesystem_for(paths.annotations, spec.storage)
        fs.makedirs(ann_path, exist_ok=True)
        prefix = run_prefix(job.run.run_index)
        with ProgressReporter(fs, ann_path, len(job.todo), progress_interval_s, prefix):
            ds.write_parquet(
                ann_path,
                filesystem=fs,
                filename_provider=PartFilenames(job.run.run_index),
                mode=SaveMode.APPEND,
            )
    facts = RunFacts(
        listing=job.listing,
        images_this_run=len(job.todo),
        dataset=ds,
        started=job.started,
        wall_s=time.perf_counter() - job.t0,
        gpus_per_actor=gpus,
        weights={kind: w.source for kind, w in job.weights.items()},
        warnings=job.warnings,
        runs=job.runs,
    )
    stats = build_stats(spec, paths.annotations, facts)
    write_stats(stats, paths.stats_json, paths.stats_parquet, spec)
    return stats


def run_job(
    spec: JobSpec,
    no_progress_timeout_s: float | None = None,
    progress_interval_s: float = 10.0,
    allow_changed_settings: bool = False,
) -> JobStats:
    """Annotate every input of ``spec`` on the connected Ray: ``prepare_job`` then ``execute_job``."""
    job = prepare_job(spec, allow_changed_settings)
    return execute_job(job, no_progress_timeout_s, progress_interval_s)
