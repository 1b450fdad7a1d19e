"""``detpose import``: reviewed CVAT or Label Studio annotations back to COCO keypoints."""

from __future__ import annotations

import argparse
from typing import Any

from jobs.common import add_output_args
from pipeline.formats import IMPORT_FORMATS, ImageNames, import_review


def register(subparsers: Any) -> None:
    """Add the ``import`` subcommand."""
    p = subparsers.add_parser(
        "import",
        help="turn a reviewed CVAT XML or Label Studio export into COCO keypoints for training",
        description="Read the persons of a CVAT for images 1.1 XML file or a Label Studio JSON "
        "export and write a COCO person-keypoints file that `detpose train --annotations` reads.",
    )
    p.add_argument("--format", required=True, choices=IMPORT_FORMATS, help="input format")
    p.add_argument("file", metavar="FILE", help="the review tool's export (path or URI)")
    p.add_argument("--out", required=True, metavar="COCO_JSON", help="output file (path or URI)")
    p.add_argument(
        "--image-root", metavar="URI",
        help="make file names relative to this folder (pass the same folder to "
        "`detpose train --images`); image ids are DetPose's ids of ROOT/NAME",
    )  # fmt: skip
    p.add_argument(
        "--url-prefix", default="", metavar="PREFIX",
        help="take PREFIX off the front of image names (as given to `detpose export`)",
    )  # fmt: skip
    p.add_argument(
        "--reviewed-only", action="store_true",
        help="Label Studio: leave out tasks nobody annotated (default: keep their prediction)",
    )  # fmt: skip
    add_output_args(p, partial=False)
    p.set_defaults(func=run_import)


def run_import(args: argparse.Namespace) -> int:
    """Run ``detpose import``; returns the exit status."""
    summary = import_review(
        args.format,
        args.file,
        args.out,
        names=ImageNames(args.image_root, args.url_prefix),
        reviewed_only=args.reviewed_only,
        replace_symlink=args.replace_symlink,
    )
    print(
        f"detpose: imported {summary.images} images, {summary.persons} persons, "
        f"{summary.keypoints} labelled keypoints"
    )
    if summary.unreviewed:
        done = "left out" if args.reviewed_only else "kept with their predictions"
        print(f"detpose: {summary.unreviewed} tasks had no annotation ({done})")
    for reason, count in sorted(summary.ignored.items()):
        print(f"detpose: ignored {count} × {reason}")
    if summary.absolute_names:
        print(
            f"detpose: warning: {summary.absolute_names} file names are absolute; "
            "`detpose train` joins file names onto --images, so pass --image-root"
        )
    print(f"detpose: written {args.out}")
    root = args.image_root or "IMAGE_ROOT"
    print(f"detpose: train with: detpose train stage1 --annotations {args.out} --images {root}")
    return 0
