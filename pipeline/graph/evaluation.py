"""Evaluation jobs: the streaming job over a benchmark's images, scored with pycocotools.

Several filter modes share one pass of stage 1: after it, each image's row is copied once per
mode (``filter_batch_per_mode``), so only filtering and refinement run per mode, and the
rows (``EVAL_ROW_SCHEMA``: annotation rows plus ``filter_mode``) land in ``DIR/rows/``.
With ground-truth boxes, stage 1 and filtering are skipped and the refiner gets the
annotation file's boxes (the OCHuman protocol).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import ray

from model.evaluation.coco import (
    CROWDPOSE_NUM_KEYPOINTS,
    Dataset,
    GroundTruthError,
    ground_truth_persons,
    load_ground_truth,
    score,
)
from model.evaluation.results import collapsed_pairs, rows_to_results
from model.keypoints import NUM_KEYPOINTS
from model.networks.resolve import ResolvedStage
from pipeline.errors import JobSetupError
from pipeline.formats.coco import read_coco_keypoints
from pipeline.formats.common import parse_json
from pipeline.graph.job import (
    add_model_stage,
    add_task,
    check_devices,
    gpus_per_actor,
    items_dataset,
    on_gpu,
    read_and_decode,
)
from pipeline.graph.tasks import GIVEN_BOXES_MODE, filter_batch_per_mode, given_boxes_batch
from pipeline.store.external_boxes import ExternalBoxes, load_external_boxes, match_file_name
from pipeline.store.job_parts import JobParts, PartsReport, drop_non_finite_persons
from pipeline.store.outputs import reset_folder, write_json
from pipeline.store.stats import stage_stats
from pipeline.store.storage import absolute_if_local, filesystem_for, read_input
from schemas.output import COUNT_FIELDS, EVAL_ROW_SCHEMA, STATUS_OK, StageStats
from schemas.spec import JobSpec, StorageSpec, join_uri

_ROW_COLUMNS = ["uri", "status", "error_kind", "persons", "counts", "filter_mode"]


@dataclass(frozen=True)
class Benchmark:
    """An annotation file and where its images are."""

    name: str  # the annotation file's URI, for messages and eval.json
    dataset: Dataset
    data: dict[str, Any]  # the parsed COCO-format file
    image_ids: dict[str, int]  # image URI → the file's image id

    def items(self, given_boxes: bool) -> list[dict[str, Any]]:
        """The job's input rows: each image's URI, plus its annotated boxes when asked."""
        boxes: dict[int, list[float]] = {}
        if given_boxes:
            for ann in self.data["annotations"]:
                if not ann.get("iscrowd"):
                    boxes.setdefault(ann["image_id"], []).extend(float(v) for v in ann["bbox"])
        return [
            {"uri": uri, **({"given_boxes": boxes.get(image_id, [])} if given_boxes else {})}
            for uri, image_id in sorted(self.image_ids.items())
        ]

    def subset(self, keep: Callable[[dict[str, Any]], bool], name: str) -> Benchmark:
        """The images for which ``keep(image entry)`` holds, with their annotations."""
        images = [image for image in self.data["images"] if keep(image)]
        ids = {image["id"] for image in images}
        data = {
            **self.data,
            "images": images,
            "annotations": [a for a in self.data["annotations"] if a["image_id"] in ids],
        }
        image_ids = {uri: i for uri, i in self.image_ids.items() if i in ids}
        return Benchmark(f"{self.name} [{name}]", self.dataset, data, image_ids)

    def rows_of(self, rows: pa.Table) -> pa.Table:
        """The rows of this benchmark's images (by URI)."""
        return rows.filter(pc.is_in(rows.column("uri"), pa.array(list(self.image_ids))))


def load_benchmark(
    annotations: str, images: str | None, dataset: Dataset, storage: StorageSpec
) -> Benchmark:
    """The annotation file, checked whole (``pipeline.formats.coco.read_coco_keypoints``),
    with each image's URI under ``images`` (its ``file_name``).

    Without ``images`` (scoring an existing job) the URIs are left empty and matched later.
    """
    keypoints = CROWDPOSE_NUM_KEYPOINTS if dataset == "crowdpose" else NUM_KEYPOINTS
    data = read_coco_keypoints(
        read_input(annotations, storage, "--annotations"), annotations, keypoints, images
    )
    image_ids = {}
    if images is not None:
        for image in data["images"]:
            image_ids[absolute_if_local(join_uri(images, image["file_name"]))] = image["id"]
    return Benchmark(annotations, dataset, data, image_ids)


def match_job_uris(benchmark: Benchmark, uris: Sequence[str]) -> dict[str, int]:
    """Image ids for a job's URIs: a URI matches the image whose file name is its longest
    path suffix (``pipeline.store.external_boxes.match_file_name``)."""
    by_name = {image["file_name"]: image["id"] for image in benchmark.data["images"]}
    matched = {}
    for uri in uris:
        name = match_file_name(uri, by_name)
        if name is not None:
            matched[uri] = by_name[name]
    return matched


def eval_boxes(spec: JobSpec, benchmark: Benchmark) -> ExternalBoxes | None:
    """The spec's ``stage1.boxes``, loaded; image ids without ``stage1.box_images`` are the
    benchmark's own (the COCO results of a detector on its images)."""
    if spec.stage1.boxes is None:
        return None
    names = None
    if spec.stage1.box_images is None:
        names = {image["id"]: image["file_name"] for image in benchmark.data["images"]}
    return load_external_boxes(spec, names)


def build_eval_dataset(
    spec: JobSpec,
    items: list[dict[str, Any]],
    modes: Sequence[str],
    given_boxes: bool,
    gpus: dict[str, float],
    weights: Mapping[str, ResolvedStage],
    cluster_gpus: float = 0.0,
    boxes: ExternalBoxes | None = None,
) -> ray.data.Dataset:
    """decode → stage 1 → one filter per mode → refine; or decode → given boxes → refine.

    ``boxes``: the spec's ``stage1.boxes``, loaded, whose boxes replace stage 1's proposals.
    """
    gpu = on_gpu(spec, gpus)
    ds = read_and_decode(spec, items_dataset(items))
    if given_boxes:
        ds = add_task(ds, spec, given_boxes_batch, gpu, max_persons=spec.filter.max_persons)
    else:
        ds = add_model_stage(ds, spec, weights["stage1"], gpus, cluster_gpus, boxes)
        specs = [spec.filter.model_copy(update={"mode": mode}) for mode in modes]
        ds = add_task(ds, spec, filter_batch_per_mode, gpu, specs=specs)
    return add_model_stage(ds, spec, weights["refiner"], gpus, cluster_gpus)


def _check_one_row_each(table: pa.Table, uris: Sequence[str], modes: Sequence[str]) -> None:
    uris_written = table.column("uri").to_pylist()
    seen = Counter(zip(uris_written, table.column("filter_mode").to_pylist(), strict=True))
    expected = {(u, m) for u in uris for m in modes}
    if set(seen) != expected or any(n != 1 for n in seen.values()):
        missing = len(expected - set(seen))
        extra = sum(n - 1 for n in seen.values() if n > 1)
        raise RuntimeError(
            f"[internal] evaluation rows: {missing} (image, mode) pair(s) missing, {extra} "
            "duplicated; every image must leave exactly one row per mode"
        )


@dataclass(frozen=True)
class EvalRun:
    """What an evaluation job produced."""

    rows: pa.Table  # EVAL_ROW_SCHEMA's columns in _ROW_COLUMNS
    weights: dict[str, dict[str, str | None]]  # per stage: source and SHA-256 of the checkpoint
    stages: list[StageStats]
    report: PartsReport  # persons left out for non-finite numbers


def run_eval_rows(
    spec: JobSpec,
    benchmark: Benchmark,
    modes: Sequence[str],
    given_boxes: bool,
    rows_uri: str,
    weights: Mapping[str, ResolvedStage],
    no_progress_timeout_s: float | None = None,
    boxes: ExternalBoxes | None = None,
) -> EvalRun:
    """Run the evaluation job on the connected Ray: its rows (fresh in ``rows_uri``), where
    each stage's weights came from, and per-stage rows (stage 1's count proves it ran once
    per image whatever the number of modes).

    ``weights``: from ``pipeline.graph.model_stages.check_weights``, called before Ray started; ``boxes``:
    from ``eval_boxes``, likewise.
    """
    check_devices(spec, ray.cluster_resources().get("GPU", 0.0))
    if no_progress_timeout_s is not None:
        ray.data.DataContext.get_current().execution_no_progress_timeout_s = no_progress_timeout_s
    ray.data.DataContext.get_current().enable_progress_bars = False
    cluster_gpus = ray.cluster_resources().get("GPU", 0.0)
    gpus = gpus_per_actor(spec, cluster_gpus)
    reset_folder(rows_uri, spec.storage)  # an evaluation is recomputed whole, never resumed
    fs, path = filesystem_for(rows_uri, spec.storage)
    items = benchmark.items(given_boxes)
    ds = build_eval_dataset(spec, items, modes, given_boxes, gpus, weights, cluster_gpus, boxes)
    ds.write_parquet(path, filesystem=fs)
    table = read_eval_rows(rows_uri, spec.storage)
    stages, _ = stage_stats(ds, table.num_rows)
    _check_one_row_each(
        table, [i["uri"] for i in items], [GIVEN_BOXES_MODE] if given_boxes else modes
    )
    checkpoints = {kind: {"source": w.source, "sha256": w.sha256} for kind, w in weights.items()}
    table, report = _finite_rows(table)
    return EvalRun(table, checkpoints, stages, report)


def _finite_rows(table: pa.Table) -> tuple[pa.Table, PartsReport]:
    """``table`` without persons holding a non-finite number (they cannot be scored or
    written as JSON), and how many were left out."""
    persons, dropped = drop_non_finite_persons(table.column("persons").combine_chunks())
    index = table.schema.get_field_index("persons")
    report = PartsReport(persons_non_finite=int(dropped.sum()))
    if report.persons_non_finite:
        first = int(np.flatnonzero(dropped)[0])
        report.first_non_finite = f"the row of {table.column('uri')[first].as_py()}"
        table = table.set_column(index, table.schema.field(index), persons)
    return table, report


def mode_report(
    rows: pa.Table, benchmark: Benchmark, gt: Any, rank_by: str = "product"
) -> tuple[dict[str, Any], list]:
    """One mode's scores and Algorithm-1 totals, and its keypoint results (each person
    scored by ``model.evaluation.results.RANKINGS[rank_by]``)."""
    keypoints, boxes = rows_to_results(rows.to_pylist(), benchmark.image_ids, rank_by)
    scores = score(gt, keypoints, boxes, benchmark.dataset)
    counts = rows.column("counts")
    totals = {
        name: int(pc.sum(pc.struct_field(counts, name)).as_py() or 0) for name in COUNT_FIELDS
    }
    gt_persons = ground_truth_persons(gt)
    report = {
        "keypoints": scores.keypoints,
        "boxes": scores.boxes,
        **({"keypoints_by_crowd": scores.by_crowd} if scores.by_crowd else {}),
        "images": rows.num_rows,
        "images_ok": int(pc.sum(pc.equal(rows.column("status"), STATUS_OK)).as_py() or 0),
        "errors_by_kind": dict(
            sorted(Counter(k for k in rows.column("error_kind").to_pylist() if k).items())
        ),
        "persons": len(keypoints),
        "ground_truth_persons": gt_persons,
        # Labelled persons a prediction matched at OKS 0.5 (pycocotools' matching).
        "found_persons": scores.found,
        # Pairs of predicted persons in one image on one body (OKS above 0.9).
        "collapsed_pairs": collapsed_pairs(keypoints),
        "refinement_runs_per_person": totals["refinement_runs"] / gt_persons if gt_persons else 0.0,
        **totals,
    }
    return report, keypoints


def evaluate_rows(
    table: pa.Table,
    benchmark: Benchmark,
    output: str,
    storage: StorageSpec,
    replace_symlink: bool = False,
) -> dict[str, dict[str, Any]]:
    """Score each filter mode's rows; write ``results-MODE.json`` (and ``results.json`` for
    the first mode); return the per-mode reports."""
    try:
        gt = load_ground_truth(benchmark.data, benchmark.dataset, benchmark.name)
    except GroundTruthError as exc:
        raise JobSetupError(str(exc)) from None
    reports = {}
    modes = list(dict.fromkeys(table.column("filter_mode").to_pylist()))
    for i, mode in enumerate(modes):
        rows = table.filter(pc.equal(table.column("filter_mode"), mode))
        reports[mode], keypoints = mode_report(rows, benchmark, gt)
        names = [f"results-{mode}.json"] + (["results.json"] if i == 0 else [])
        for name in names:
            write_json(join_uri(output, name), keypoints, storage, replace_symlink=replace_symlink)
    return reports


def read_eval_rows(rows_uri: str, storage: StorageSpec) -> pa.Table:
    """The rows an evaluation wrote to ``rows_uri`` (``OUTPUT/rows``), in
    ``EVAL_ROW_SCHEMA``'s columns."""
    fs, path = filesystem_for(rows_uri, storage)
    files = sorted(p for p in fs.find(path) if p.endswith(".parquet"))
    tables = []
    for file in files:
        with fs.open(file, "rb") as fh:
            tables.append(pq.read_table(fh, columns=_ROW_COLUMNS, schema=EVAL_ROW_SCHEMA))
    return pa.concat_tables(tables) if tables else EVAL_ROW_SCHEMA.empty_table()


def subset_reports(
    table: pa.Table,
    benchmark: Benchmark,
    subsets: Mapping[str, Callable[[dict[str, Any]], bool]],
    rank_by: str = "product",
) -> dict[str, dict[str, dict[str, Any]]]:
    """``mode_report`` per filter mode and per part of the benchmark: ``{mode: {part:
    report}}``, a part being the images whose entry its predicate accepts."""
    reports: dict[str, dict[str, dict[str, Any]]] = {}
    for mode in dict.fromkeys(table.column("filter_mode").to_pylist()):
        rows = table.filter(pc.equal(table.column("filter_mode"), mode))
        reports[mode] = {}
        for name, keep in subsets.items():
            part = benchmark.subset(keep, name)
            gt = load_ground_truth(part.data, part.dataset, part.name)
            reports[mode][name] = mode_report(part.rows_of(rows), part, gt, rank_by)[0]
    return reports


def job_rows(
    job: str, storage: StorageSpec, allow_partial: bool = False
) -> tuple[pa.Table, str, dict[str, Any], PartsReport]:
    """An existing job's rows tagged with the filter mode it ran, its weights (source and
    SHA-256 per stage), both from its ``stats.json``, and what reading its part files left
    out (``pipeline.store.job_parts``: an unreadable file stops it unless ``allow_partial``)."""
    columns = [c for c in _ROW_COLUMNS if c != "filter_mode"]
    parts = JobParts(job, storage, columns, allow_partial)
    table = parts.run(lambda: parts.table(columns))
    if table.num_rows == 0 and not parts.report.partial:
        raise JobSetupError(f"{job}: no annotation rows found (is it OUTPUT/JOB_ID?)")
    try:
        stats = parse_json(read_input(join_uri(job, "stats.json"), storage), "stats.json")
        mode = stats["spec"]["filter"]["mode"]
        hashes = stats["runs"][-1]["fingerprint"]["weights"] if stats.get("runs") else {}
        weights = {
            str(kind): {"source": _text(source), "sha256": _text(hashes.get(kind))}
            for kind, source in stats.get("weights", {}).items()
        }
    except (JobSetupError, KeyError, TypeError, IndexError, AttributeError):
        mode, weights = "job", {}
    if not isinstance(mode, str) or not mode.isidentifier():
        mode = "job"  # it names a file: results-MODE.json
    modes = pa.array([mode] * table.num_rows, pa.string())
    table = table.append_column(EVAL_ROW_SCHEMA.field("filter_mode"), modes)
    return table, mode, weights, parts.report


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def eval_record(
    benchmark: Benchmark,
    reports: dict[str, dict[str, Any]],
    weights: dict[str, Any],
    extra: dict[str, Any],
    started: float,
) -> dict[str, Any]:
    """The content of ``eval.json``."""
    return {
        "dataset": benchmark.dataset,
        "annotations": benchmark.name,
        "weights": weights,
        **extra,
        "wall_s": time.perf_counter() - started,
        "modes": reports,
    }
