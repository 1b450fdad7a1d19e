"""``detpose synth``: synthetic multi-person scenes with exact COCO-17 keypoints."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from model.synth.scenes import CROWD_CHOICES, MAX_IMAGES, MAX_SIZE, MIN_SIZE


def register(subparsers: Any) -> None:
    """Add the ``synth`` subcommand."""
    p = subparsers.add_parser(
        "synth",
        help="generate synthetic multi-person scenes with exact COCO keypoints (for training tests)",
        description="Draw articulated figures on cluttered backgrounds and write the images "
        "(DIR/images/000000.png …) and a COCO person-keypoints file (DIR/annotations.json) "
        "whose keypoints, visibility, boxes and silhouettes are exact. The same arguments give "
        "byte-identical files. See docs/synth.md.",
    )
    p.add_argument("--out", required=True, type=Path, metavar="DIR", help="output directory")
    p.add_argument(
        "--images",
        required=True,
        type=int,
        metavar="N",
        help=f"how many images (1 to {MAX_IMAGES:,})",
    )
    p.add_argument("--seed", required=True, type=int, metavar="S", help="random seed (>= 0)")
    p.add_argument(
        "--crowd", choices=CROWD_CHOICES, default="mixed",
        help="crowd level by CrowdPose's crowd index: low (1-3 people, < 0.1), medium (2-5, "
        "0.1-0.5), high (3-7, >= 0.5); mixed (default) draws each image's level",
    )  # fmt: skip
    p.add_argument(
        "--size", type=int, default=256, metavar="PIXELS",
        help=f"image width and height (default 256, {MIN_SIZE} to {MAX_SIZE})",
    )  # fmt: skip
    p.set_defaults(func=run_synth)


def run_synth(args: argparse.Namespace) -> int:
    """Run ``detpose synth``; returns the exit status (bad arguments, out-of-range sizes
    among them, raise ``ValueError`` before anything is written)."""
    from model.synth.dataset import write_synth_dataset

    summary = write_synth_dataset(args.out, args.images, args.seed, args.crowd, args.size)
    print(f"detpose: wrote {args.out}: {summary.line()}")
    return 0
