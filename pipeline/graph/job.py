"""The Ray Data graph of a job and its execution: source → decode → stage 1 → filter → stage 3 → Parquet.

Resources (pool sizes, CPUs/GPUs per actor, batch sizes) are wired here and nowhere else;
their ``auto`` values are resolved in ``pipeline/graph/resources.py``.
``ray.init`` is the caller's business (``jobs/``); this module only needs a running Ray.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import ray
from ray.data import ActorPoolStrategy, DataContext, Dataset, SaveMode

from model.networks.resolve import ResolvedStage
from pipeline.errors import JobSetupError
from pipeline.graph.actors import CoarseStage, RefineStage
from pipeline.graph.model_stages import check_weights, unchecked_stages
from pipeline.graph.progress import ProgressReporter
from pipeline.graph.resources import (
    DECODE_BATCH,
    DECODE_NUM_CPUS,
    FILTER_NUM_CPUS,
    max_crops_per_forward,
    resolved_batch_sizes,
    resolved_pool_sizes,
)
from pipeline.graph.tasks import decode_batch, filter_batch
from pipeline.store.external_boxes import ExternalBoxes, load_external_boxes
from pipeline.store.identity import job_fingerprint, new_run, read_runs, write_runs
from pipeline.store.part_files import PartFilenames
from pipeline.store.sink import (
    JobPaths,
    foreign_files,
    next_run_index,
    part_files,
    quarantine_incomplete_files,
    run_prefix,
    write_text,
)
from pipeline.store.sources import (
    count_flags,
    flag_uris,
    read_manifest_uris,
    read_part_files,
    todo_uris,
)
from pipeline.store.stats import (
    STATS_COLUMNS,
    JobCounts,
    RunFacts,
    build_stats,
    count_job_rows,
    row_metrics,
    write_stats,
)
from pipeline.store.storage import (
    InputError,
    Listing,
    Manifest,
    check_manifest,
    filesystem_for,
    list_inputs,
)
from schemas.output import JobStats, RunRecord
from schemas.spec import AUTO_GPUS_PER_ACTOR, JobSpec, StorageSpec

logger = logging.getLogger(__name__)

# The source has about one block (one decode task) per DECODE_BATCH images, at most this many.
MAX_SOURCE_BLOCKS = 200
# URIs per partition of the hash aggregations by URI (de-duplication, resume, statistics):
# a few MB of URIs per reduce task, and a single partition for small jobs.
URIS_PER_SHUFFLE_PARTITION = 250_000
MAX_SHUFFLE_PARTITIONS = 200
# Text and CSV manifests have no row count until read: their size over this estimates it.
MANIFEST_BYTES_PER_URI = 50
# A lost node takes its actors, its running tasks and the blocks in its object store with it.
# Ray Data 2.60 survives that with its own defaults, which this module relies on and does not
# override: model-stage actors run with max_restarts=-1 (a lost actor is restarted as soon as
# some node can host it; for a pool pinned with `resources`, when a node offering them joins)
# and max_task_retries=-1 (the batches it had in flight are sent again to the restarted
# actor); tasks run with max_retries=-1, so lost blocks are rebuilt from lineage. Passing
# these explicitly would need the deprecated **ray_remote_args of map_batches (removed in Ray
# 2.64). A re-executed write task rewrites its own file (part_filename), so no image is
# written twice. tests/e2e/test_node_loss.py proves it.


JobSource = Manifest | Listing


def resolve_source(spec: JobSpec) -> JobSource:
    """Where the job's image URIs come from: its manifest, checked but not read (Ray Data
    tasks read it), or the listing of its input files and prefixes (sorted, de-duplicated).

    Raises:
        InputError: a manifest that is missing, unreadable, without a text ``uri`` column or
            empty; inputs that cannot be listed or hold no image.
    """
    if spec.manifest is not None:
        return check_manifest(spec.manifest, spec.storage)
    listing = list_inputs(spec.inputs, spec.storage)
    if not listing.uris:
        skipped = f" ({len(listing.skipped)} non-image file(s) skipped)" if listing.skipped else ""
        raise InputError(f"no images found in {', '.join(spec.inputs)}{skipped}")
    return listing


def source_blocks(num_images: int) -> int:
    """Blocks of a job's source: about one decode task per ``DECODE_BATCH`` images, at most
    ``MAX_SOURCE_BLOCKS``."""
    return max(1, min(num_images // DECODE_BATCH, MAX_SOURCE_BLOCKS))


def shuffle_partitions(num_uris: int) -> int:
    """Partitions of a hash aggregation by URI over about ``num_uris`` rows."""
    return max(1, min(math.ceil(num_uris / URIS_PER_SHUFFLE_PARTITION), MAX_SHUFFLE_PARTITIONS))


def estimated_uris(source: JobSource) -> int:
    """How many URIs ``source`` lists (exact for a listing or a Parquet manifest)."""
    if isinstance(source, Listing):
        return len(source.uris)
    return source.rows if source.rows is not None else source.size_bytes // MANIFEST_BYTES_PER_URI


def items_dataset(items: list[dict[str, Any]]) -> Dataset:
    """Rows the driver holds (``uri`` plus any extra columns) in ``source_blocks`` blocks."""
    return ray.data.from_items(items, override_num_blocks=source_blocks(len(items)))


def input_uris(source: JobSource, storage: StorageSpec) -> Dataset:
    """The job's input URIs (``uri``): a manifest read by Ray Data tasks, or the listing."""
    if isinstance(source, Manifest):
        return read_manifest_uris(source, storage)
    return items_dataset([{"uri": u} for u in source.uris])


def gpus_per_actor(spec: JobSpec, cluster_gpus: float) -> dict[str, float]:
    """GPUs each actor of each model stage asks for, with 'auto' resolved for this cluster."""

    def resolve(requested: float | str) -> float:
        if requested == "auto":
            return AUTO_GPUS_PER_ACTOR if cluster_gpus > 0 else 0.0
        return float(requested)

    return {"stage1": resolve(spec.stage1.num_gpus), "refiner": resolve(spec.refiner.num_gpus)}


def read_and_decode(spec: JobSpec, source: Dataset) -> Dataset:
    """Fetch+decode tasks: one row per row of ``source`` (``uri`` plus any extra columns)."""
    return source.map_batches(
        decode_batch,
        fn_kwargs={"decode": spec.decode, "storage": spec.storage},
        batch_size=DECODE_BATCH,
        batch_format="numpy",
        num_cpus=DECODE_NUM_CPUS,
    )


def on_gpu(spec: JobSpec, gpus: dict[str, float]) -> bool:
    """Whether the model stages run on GPUs (which sizes their batches and pools)."""
    return spec.device != "cpu" and gpus["stage1"] > 0


def add_model_stage(
    ds: Dataset,
    spec: JobSpec,
    stage: ResolvedStage,
    gpus: dict[str, float],
    cluster_gpus: float = 0.0,
    boxes: ExternalBoxes | None = None,
) -> Dataset:
    """A model stage's actor pool: stage 1 (proposals and coarse poses per image; proposals
    from ``boxes`` when the spec has ``stage1.boxes``, the index travelling once to each
    actor) or the refiner (refined poses, emitted as the output rows). Each actor receives
    only its resolved stage, and checks it loads the very weights the driver checked."""
    gpu = on_gpu(spec, gpus)
    kind = stage.kind
    stage_spec = getattr(spec, kind)
    if kind == "stage1":
        actor, kwargs = CoarseStage, {"stage": stage, "boxes": boxes}
    else:
        kwargs = {"stage": stage, "filtering": spec.filter, "max_crops": max_crops_per_forward(gpu)}
        actor = RefineStage
    return ds.map_batches(
        actor,
        fn_constructor_kwargs=kwargs,
        compute=ActorPoolStrategy(size=getattr(resolved_pool_sizes(spec, gpu, cluster_gpus), kind)),
        batch_size=getattr(resolved_batch_sizes(spec, gpu), kind),
        batch_format="numpy",
        num_cpus=stage_spec.num_cpus,
        num_gpus=gpus[kind],
        resources=dict(stage_spec.resources) or None,
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


def build_dataset(
    spec: JobSpec,
    source: Dataset,
    gpus: dict[str, float],
    stages: Mapping[str, ResolvedStage] | None = None,
    cluster_gpus: float = 0.0,
    boxes: ExternalBoxes | None = None,
) -> Dataset:
    """The lazy Ray Data graph for the URIs of ``source`` (``uri``); nothing runs until it
    is written.

    ``gpus``: GPUs per actor of each model stage, from ``gpus_per_actor``. ``stages``: both
    model stages as ``check_weights`` resolved them (default: resolved here, unchecked).
    ``cluster_gpus``: GPUs in the cluster, which size the pools whose ``actors`` is 'auto'.
    ``boxes``: the loaded ``stage1.boxes`` (``load_external_boxes``), when the spec has them.
    """
    stages = stages or unchecked_stages(spec)
    ds = read_and_decode(spec, source)
    ds = add_model_stage(ds, spec, stages["stage1"], gpus, cluster_gpus, boxes)
    ds = add_task(ds, spec, filter_batch, on_gpu(spec, gpus), spec=spec.filter)
    return add_model_stage(ds, spec, stages["refiner"], gpus, cluster_gpus)


@dataclass(frozen=True)
class PreparedJob:
    """A job the driver has checked and recorded, ready to run on Ray."""

    spec: JobSpec
    paths: JobPaths
    source: JobSource
    weights: dict[str, ResolvedStage]  # both model stages, resolved and checked
    boxes: ExternalBoxes | None  # stage1.boxes, loaded and checked
    run: RunRecord
    runs: list[RunRecord]  # every run of the job id, this one last
    warnings: list[str]
    started: datetime
    t0: float


def _output_error(paths: JobPaths, exc: Exception) -> JobSetupError:
    reason = getattr(exc, "strerror", None) or f"{type(exc).__name__}: {exc}"
    return JobSetupError(f"output {paths.root}: cannot write the job there ({reason})")


def setup_warnings(
    source: JobSource,
    foreign: list[str],
    runs: list[RunRecord],
    weights: Mapping[str, ResolvedStage],
) -> list[str]:
    """What a user should know before trusting the run: skipped and foreign files, settings
    changed on purpose, random weights."""
    warnings = []
    skipped = source.skipped if isinstance(source, Listing) else []
    if skipped:
        warnings.append(
            f"{len(skipped)} non-image file(s) under the input prefixes skipped, e.g. {skipped[0]}"
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

    Lists the inputs (or checks the manifest without reading its URIs), loads both
    checkpoints and the ``stage1.boxes`` file, sets aside files a killed run left incomplete, compares this run's
    fingerprint with the previous run's, and writes ``spec.yaml`` and ``runs.json`` (which
    proves the output is writable). Which images are left to do is found on Ray
    (``plan_run``).

    Raises:
        JobSetupError: no images, unreadable inputs or checkpoints, a malformed boxes file, an
            output that cannot be written, or settings that differ from an earlier run of the
            job id.
    """
    started = datetime.now(UTC)
    t0 = time.perf_counter()
    paths = JobPaths.for_spec(spec)
    source = resolve_source(spec)
    boxes = load_external_boxes(spec)
    weights = check_weights(spec)
    try:
        previous = read_runs(paths.runs_json, spec.storage)
        foreign = foreign_files(paths.annotations, spec.storage)
        run = new_run(
            previous,
            job_fingerprint(spec, weights, boxes),
            next_run_index(paths.annotations, spec.storage),
            started.isoformat(timespec="seconds"),
            allow_changed_settings,
        )
        write_text(paths.spec_yaml, spec.to_yaml(), spec.storage)
        write_runs(paths.runs_json, [*previous, run], spec.storage)
        for bad in quarantine_incomplete_files(paths.annotations, spec.storage):
            logger.warning("set aside incomplete annotation file from an interrupted run: %s", bad)
    except JobSetupError:
        raise
    except OSError as exc:
        raise _output_error(paths, exc) from None
    warnings = setup_warnings(source, foreign, [*previous, run], weights)
    return PreparedJob(
        spec=spec,
        paths=paths,
        source=source,
        weights=weights,
        boxes=boxes,
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


@dataclass(frozen=True)
class RunPlan:
    """What a run has to do: its source (the URIs to process) and how many there are."""

    todo: Dataset  # column ``uri``, in decode-sized blocks
    images_in: int  # distinct input URIs
    images_todo: int  # of them, without a row yet


def plan_run(job: PreparedJob) -> RunPlan:
    """The inputs not yet written, as a dataset, and the counts progress and logs need.

    A listing without earlier output is the source as it is. Otherwise one hash aggregation
    by URI de-duplicates the inputs (a manifest may list an image twice) and, when earlier
    runs wrote part files, leaves out their URIs (a distributed left anti-join; see
    ``pipeline.store.sources``). Its result is materialised in the object store, so counting it
    and then processing it reads the manifest and the part files once.

    Raises:
        InputError: a manifest whose entries are all blank.
    """
    spec, paths = job.spec, job.paths
    inputs = input_uris(job.source, spec.storage)
    done_files = part_files(paths.annotations, spec.storage)
    if isinstance(job.source, Listing) and not done_files:
        n = len(job.source.uris)
        return RunPlan(todo=inputs, images_in=n, images_todo=n)
    written = (
        read_part_files(paths.annotations, done_files, spec.storage, ["uri"])
        if done_files
        else None
    )
    flags = flag_uris(inputs, written, shuffle_partitions(estimated_uris(job.source)))
    flags = flags.materialize()
    counts = count_flags(flags)
    if not counts.listed:
        raise InputError(f"no images found in {spec.manifest}")
    if counts.written:
        logger.info(
            "resuming job %s: %d of %d images already written",
            spec.job_id,
            counts.written,
            counts.listed,
        )
    per_block = math.ceil(counts.todo / source_blocks(counts.todo)) if counts.todo else 1
    todo = todo_uris(flags).repartition(target_num_rows_per_block=per_block)
    return RunPlan(todo=todo, images_in=counts.listed, images_todo=counts.todo)


def count_output_rows(job: PreparedJob, images_in: int) -> JobCounts:
    """The job's rows of its inputs, counted by Ray tasks (``stats.count_job_rows``)."""
    spec, paths = job.spec, job.paths
    files = part_files(paths.annotations, spec.storage)
    rows = (
        read_part_files(paths.annotations, files, spec.storage, STATS_COLUMNS, row_metrics)
        if files
        else None
    )
    inputs = input_uris(job.source, spec.storage)
    return count_job_rows(inputs, rows, shuffle_partitions(images_in))


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
    plan = plan_run(job)
    ds = None
    if plan.images_todo:
        ds = build_dataset(spec, plan.todo, gpus, job.weights, cluster_gpus, job.boxes)
        fs, ann_path = filesystem_for(paths.annotations, spec.storage)
        fs.makedirs(ann_path, exist_ok=True)
        prefix = run_prefix(job.run.run_index)
        with ProgressReporter(fs, ann_path, plan.images_todo, progress_interval_s, prefix):
            ds.write_parquet(
                ann_path,
                filesystem=fs,
                filename_provider=PartFilenames(job.run.run_index),
                mode=SaveMode.APPEND,
            )
    wall_s = time.perf_counter() - job.t0  # the run itself, not the counting below
    counts = count_output_rows(job, plan.images_in)
    facts = RunFacts(
        images_this_run=plan.images_todo,
        dataset=ds,
        started=job.started,
        wall_s=wall_s,
        gpus_per_actor=gpus,
        skipped_non_image=len(job.source.skipped) if isinstance(job.source, Listing) else 0,
        weights={kind: w.source for kind, w in job.weights.items()},
        warnings=job.warnings,
        runs=job.runs,
    )
    stats = build_stats(spec, counts, facts)
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
