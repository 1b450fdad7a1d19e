"""``detpose export``: a job's annotations as COCO keypoints, CVAT XML or Label Studio tasks."""

from __future__ import annotations

import argparse
from typing import Any

from jobs.common import add_output_args, number_in, print_parts_report
from pipeline.formats import EXPORT_FORMATS, ImageNames, Thresholds, export_job
from pipeline.formats.common import DEFAULT_MIN_SCORE, DEFAULT_VISIBLE_SCORE


def register(subparsers: Any) -> None:
    """Add the ``export`` subcommand."""
    p = subparsers.add_parser(
        "export",
        help="write a job's annotations as COCO keypoints, CVAT XML or Label Studio tasks",
        description="Stream the ok images of OUTPUT/JOB_ID and their persons into one file for "
        "review or training. Error rows and persons below --min-score are left out and counted. "
        "Keypoints: score < --min-score is not labelled (COCO v=0, CVAT outside, no Label Studio "
        "region), < --visible-score occluded (v=1), else visible (v=2).",
    )
    p.add_argument("--job", required=True, metavar="OUTPUT/JOB_ID", help="job folder or URI")
    p.add_argument("--format", required=True, choices=EXPORT_FORMATS, help="output format")
    p.add_argument("--out", required=True, metavar="PATH", help="output file (path or URI)")
    p.add_argument(
        "--min-score", type=number_in(float, 0.0, 1.0), default=DEFAULT_MIN_SCORE, metavar="S",
        help=f"lowest pose score and keypoint score kept (default {DEFAULT_MIN_SCORE})",
    )  # fmt: skip
    p.add_argument(
        "--visible-score", type=number_in(float, 0.0, 1.0), default=DEFAULT_VISIBLE_SCORE, metavar="S",
        help=f"keypoints below this score are marked occluded (default {DEFAULT_VISIBLE_SCORE})",
    )  # fmt: skip
    p.add_argument(
        "--image-root", metavar="URI",
        help="write image names relative to this folder (as the review tool's task, or "
        "`detpose train --images`, sees them); default: the full URIs",
    )  # fmt: skip
    p.add_argument(
        "--url-prefix", default="", metavar="PREFIX",
        help="put PREFIX before every image name (e.g. Label Studio's /data/local-files/?d=)",
    )  # fmt: skip
    add_output_args(p)
    p.set_defaults(func=run_export)


def run_export(args: argparse.Namespace) -> int:
    """Run ``detpose export``; returns the exit status."""
    summary = export_job(
        args.job,
        args.format,
        args.out,
        thresholds=Thresholds(args.min_score, args.visible_score),
        names=ImageNames(args.image_root, args.url_prefix),
        allow_partial=args.allow_partial,
        replace_symlink=args.replace_symlink,
    )
    print(f"detpose: exported {summary.images} images, {summary.persons} persons ({args.format})")
    if summary.error_rows:
        kinds = ", ".join(f"{k}: {n}" for k, n in sorted(summary.errors_by_kind.items()))
        print(f"detpose: left out {summary.error_rows} error rows ({kinds})")
    if summary.persons_below_min_score:
        print(
            f"detpose: left out {summary.persons_below_min_score} persons with a pose score "
            f"below {args.min_score}"
        )
    if summary.names_outside_root:
        print(
            f"detpose: warning: {summary.names_outside_root} images are not under "
            f"--image-root {args.image_root}; their names are their full URIs"
        )
    print_parts_report(summary.parts, "export")
    print(f"detpose: written {', '.join(summary.outputs)}")
    return 0
