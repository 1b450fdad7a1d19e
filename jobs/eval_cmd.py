"""``detpose eval``: keypoint and box AP of a streaming job over a benchmark, by pycocotools.

Runs the normal job (local Ray, or the cluster in ``RAY_ADDRESS``) over the annotation
file's images once, with every requested filter mode sharing stage 1, or scores an
existing job's annotations (``--job``). Writes ``DIR/eval.json``, ``DIR/results.json``
(the first mode's keypoint results), ``DIR/results-MODE.json`` and prints a table.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from typing import Any

from jobs.common import add_local_ray_args, add_output_args, literal_choices, print_parts_report
from model.evaluation.coco import DATASETS
from schemas.filtering import FilterMode
from schemas.spec import JobSpec, SpecError, load_yaml_mapping

FILTER_MODES: tuple[str, ...] = tuple(literal_choices(FilterMode))


def _modes(text: str) -> list[str]:
    modes = [m.strip() for m in text.split(",") if m.strip()]
    bad = [m for m in modes if m not in FILTER_MODES]
    if not modes or bad:
        raise argparse.ArgumentTypeError(
            f"got {text!r}; expected a comma-separated list of {', '.join(FILTER_MODES)}"
        )
    return list(dict.fromkeys(modes))


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "eval",
        help="keypoint AP of DetPose on a COCO / OCHuman / CrowdPose annotation file",
        description="Run the streaming job over an annotation file's images (every --filter "
        "mode sharing stage 1) and score it with pycocotools; or score an existing job (--job).",
    )
    p.add_argument("--annotations", required=True, metavar="JSON", help="COCO-format file")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--images", metavar="URI", help="folder/prefix holding its file_names")
    source.add_argument("--job", metavar="OUTPUT/JOB_ID", help="score this job's annotations")
    p.add_argument("--output", required=True, metavar="DIR", help="where eval.json goes")
    p.add_argument("--spec", metavar="FILE", help="job spec (models, batch sizes, storage)")
    p.add_argument(
        "--filter",
        type=_modes,
        default=None,
        metavar="MODES",
        help="comma-separated filter modes to compare (default: the spec's mode)",
    )
    p.add_argument(
        "--gt-boxes", action="store_true", help="refine the annotated boxes (no stage 1)"
    )
    p.add_argument("--dataset", choices=DATASETS, default="coco", help="keypoint layout")
    add_output_args(p)
    add_local_ray_args(p)
    p.set_defaults(func=cmd_eval)


def eval_spec(args: argparse.Namespace) -> JobSpec:
    """The job spec of an evaluation: the spec file's settings, the benchmark's images."""
    data = load_yaml_mapping(args.spec) if args.spec else {}
    data.pop("manifest", None)
    data["inputs"] = [args.images or args.job]
    data["output"] = args.output
    return JobSpec.parse(data, source=args.spec or "command line")


def format_table(reports: dict[str, dict[str, Any]]) -> str:
    """One line per mode: keypoint AP columns, box AP, refinement runs per person."""
    head = f"{'mode':<8} {'AP':>6} {'AP50':>6} {'AP75':>6} {'APm':>6} {'APl':>6} {'AR':>6} "
    head += f"{'boxAP':>6} {'persons':>8} {'found':>9} {'runs/person':>12} {'collapsed':>9}"
    lines = [head]
    for mode, r in reports.items():
        k = r["keypoints"]
        found = f"{r['found_persons']}/{r['ground_truth_persons']}"
        lines.append(
            f"{mode:<8} {k['AP']:6.3f} {k['AP50']:6.3f} {k['AP75']:6.3f} {k['APm']:6.3f} "
            f"{k['APl']:6.3f} {k['AR']:6.3f} {r['boxes']['AP']:6.3f} {r['persons']:8d} "
            f"{found:>9} {r['refinement_runs_per_person']:12.2f} {r['collapsed_pairs']:9d}"
        )
        for level, scores in r.get("keypoints_by_crowd", {}).items():
            lines.append(f"  {level:<6} AP {scores['AP']:6.3f}")
    return "\n".join(lines)


def _replaced_by_eval(name: str) -> bool:
    """The entries of the output folder that ``eval`` writes (besides ``rows/``)."""
    if name in ("eval.json", "results.json"):
        return True
    return name.startswith("results-") and name.endswith(".json")


def cmd_eval(args: argparse.Namespace) -> int:
    from jobs.common import init_ray, quiet_ray_logs
    from pipeline.graph.evaluation import (
        eval_boxes,
        eval_record,
        evaluate_rows,
        job_rows,
        load_benchmark,
        match_job_uris,
        run_eval_rows,
    )
    from pipeline.graph.model_stages import check_weights
    from pipeline.store.outputs import check_output_folder, write_json
    from schemas.spec import join_uri

    started = time.perf_counter()
    spec = eval_spec(args)
    if args.job and (args.filter or args.gt_boxes):
        raise SpecError("--filter and --gt-boxes re-run a job; with --job the job is only scored")
    if args.allow_partial and not args.job:
        raise SpecError("--allow-partial accepts a job whose annotation files are partly "
                        "unreadable; it goes with --job")  # fmt: skip
    if args.gt_boxes and spec.stage1.boxes is not None:
        raise SpecError(
            f"--gt-boxes refines the annotated boxes, so stage1.boxes ({spec.stage1.boxes!r}) "
            "would be ignored; drop one of them"
        )
    # Inputs and output are checked before Ray starts or anything is scored.
    check_output_folder(args.output, spec.storage, _replaced_by_eval, ("rows",),
                        replace_symlink=args.replace_symlink)  # fmt: skip
    benchmark = load_benchmark(args.annotations, args.images, args.dataset, spec.storage)
    if args.job:
        table, mode, weights, parts = job_rows(args.job, spec.storage, args.allow_partial)
        matched = match_job_uris(benchmark, table.column("uri").to_pylist())
        benchmark = dataclasses.replace(benchmark, image_ids=matched)
        extra = {"job": args.job, "filter_modes": [mode], **parts.record()}
    else:
        modes = args.filter or [spec.filter.mode]
        boxes = eval_boxes(spec, benchmark)  # like the weights, checked before Ray starts
        checked = check_weights(spec)  # before Ray starts: a bad checkpoint costs seconds
        init_ray(args.num_cpus, args.num_gpus)
        if not args.verbose:
            quiet_ray_logs()
        run = run_eval_rows(
            spec,
            benchmark,
            modes,
            args.gt_boxes,
            join_uri(args.output, "rows"),
            checked,
            args.no_progress_timeout,
            boxes,
        )
        table, weights, parts = run.rows, run.weights, run.report
        extra = {
            "images": args.images,
            "stages": [stage.model_dump() for stage in run.stages],
            "filter_modes": modes,
            "gt_boxes": args.gt_boxes,
            "spec": spec.to_public_dict(),
            **parts.record(),
        }
    if not benchmark.image_ids:
        raise SpecError(f"{args.annotations}: none of its images were found among the inputs")
    reports = evaluate_rows(table, benchmark, args.output, spec.storage, args.replace_symlink)
    record = eval_record(benchmark, reports, weights, extra, started)
    write_json(join_uri(args.output, "eval.json"), record, spec.storage,
               replace_symlink=args.replace_symlink)  # fmt: skip
    print(format_table(reports))
    print_parts_report(parts, "evaluation")
    for mode, report in reports.items():
        if report["images_ok"] < report["images"]:
            # Scores over fewer images than asked for must not pass unnoticed.
            print(
                f"WARNING: {mode}: {report['images'] - report['images_ok']} of "
                f"{report['images']} images are error rows ({report['errors_by_kind']}); "
                f"their messages are in {join_uri(args.output, 'rows')}",
                file=sys.stderr,
            )
    print(f"detpose: evaluation in {join_uri(args.output, 'eval.json')}", file=sys.stderr)
    return 0
