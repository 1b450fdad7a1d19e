"""``detpose review``: a static HTML gallery of a job's most uncertain images."""

from __future__ import annotations

import argparse
import sys
import time

from jobs.common import add_output_args, number_in, print_parts_report
from pipeline.review.gallery import (
    DEFAULT_LIMIT,
    DEFAULT_MAX_ERRORS,
    DEFAULT_THUMB_SIDE,
    KEYPOINT_THRESHOLD,
    MAX_ERRORS_LISTED,
    MAX_LIMIT,
    build_gallery,
)
from schemas.spec import StorageSpec, uri_scheme


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``review`` subcommand."""
    p = subparsers.add_parser(
        "review",
        help="write a static HTML gallery of a job's most uncertain images",
        description="Write DIR/index.html and DIR/thumbs/*.jpg: the N images of a job with the "
        "lowest pose scores, drawn with their poses, plus its error rows. Reads the job's "
        "annotations in one streaming pass; fetches only the N images shown. Storage settings "
        "(S3 endpoint, region, credentials) come from the environment.",
    )
    p.add_argument("--job", required=True, metavar="OUTPUT/JOB_ID", help="a job's output folder")
    p.add_argument(
        "--out", required=True, metavar="DIR", help="gallery folder (local path or fsspec URI)"
    )
    p.add_argument(
        "--limit", type=number_in(int, 1, MAX_LIMIT), default=DEFAULT_LIMIT, metavar="N",
        help=f"images shown, most uncertain first (default {DEFAULT_LIMIT})",
    )  # fmt: skip
    p.add_argument(
        "--max-errors", type=number_in(int, 0, MAX_ERRORS_LISTED), default=DEFAULT_MAX_ERRORS,
        metavar="N",
        help=f"error rows listed (default {DEFAULT_MAX_ERRORS}; all are counted)",
    )  # fmt: skip
    p.add_argument(
        "--empty", choices=["first", "last"], default="first",
        help="where ok images without a person rank: before every image with persons "
        "(default) or after them",
    )  # fmt: skip
    p.add_argument(
        "--thumb-size", type=number_in(int, 120, 1600, "pixels"), default=DEFAULT_THUMB_SIDE, metavar="PX",
        help=f"longest side of a thumbnail (default {DEFAULT_THUMB_SIDE})",
    )  # fmt: skip
    p.add_argument(
        "--keypoint-threshold", type=number_in(float, 0.0, 1.0), default=KEYPOINT_THRESHOLD, metavar="S",
        help=f"keypoints scoring below S are drawn faded (default {KEYPOINT_THRESHOLD})",
    )  # fmt: skip
    add_output_args(p)
    p.set_defaults(func=run_review)


def run_review(args: argparse.Namespace) -> int:
    """Run ``detpose review``; returns the exit status."""
    started = time.monotonic()
    last = [0.0]

    def progress(done: int, total: int) -> None:
        now = time.monotonic()
        if done == total or now - last[0] >= 5.0:
            last[0] = now
            print(f"detpose: thumbnails {done}/{total}", file=sys.stderr)

    result = build_gallery(
        args.job,
        args.out,
        StorageSpec(),
        limit=args.limit,
        max_errors=args.max_errors,
        side=args.thumb_size,
        threshold=args.keypoint_threshold,
        empty=args.empty,
        progress=progress,
        allow_partial=args.allow_partial,
        replace_symlink=args.replace_symlink,
    )
    sel = result.selection
    print(
        f"detpose: reviewed {sel.rows} rows in {sel.files} files: {len(result.tiles)} images "
        f"shown ({result.unavailable} unavailable), {len(sel.errors)} of {sel.error_rows} error "
        f"rows listed, {time.monotonic() - started:.1f} s"
    )
    for warning in sel.warnings:
        print(f"detpose: warning: {warning}", file=sys.stderr)
    print_parts_report(sel.parts, "gallery")
    index = result.index_uri
    where = f"file://{index}" if uri_scheme(index) == "" and index.startswith("/") else index
    print(f"detpose: gallery in {where}")
    return 0
