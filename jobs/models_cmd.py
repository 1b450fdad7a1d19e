"""``detpose models``: the networks each stage can run, where they came from, and their cost."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any


def register(subparsers: Any) -> None:
    """Add the ``models`` subcommand."""
    p = subparsers.add_parser(
        "models",
        help="list the installed models: stage, source, licence, input size, parameters, FLOPs",
        description="List every network a job spec can name under stage1.model or "
        "refiner.model: whether its weights are installed, where they came from (package, "
        "file, upstream), its licence, input size, parameters and GFLOPs per input (measured "
        "by counting the convolutions of one forward pass), file size and SHA-256.",
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument(
        "--export-onnx",
        metavar="NAME",
        help="write the refiner NAME (movenet-thunder, movenet-lightning, detposenet) as an "
        "ONNX file to --out, to run with refiner.model: onnx (docs/models.md)",
    )
    p.add_argument("--out", metavar="FILE", help="where --export-onnx writes the file")
    p.set_defaults(func=run_models)


def run_models(args: argparse.Namespace) -> int:
    """Run ``detpose models``; returns the exit status."""
    from model.inference.inventory import installed_models

    if args.export_onnx:
        return export_onnx(args)
    if args.out:
        raise SystemExit("detpose models: --out is where --export-onnx writes; give --export-onnx")
    models = installed_models()
    if args.json:
        print(json.dumps([m.as_dict() for m in models], indent=2))
        return 0
    header = (
        f"{'model':18} {'stage':8} {'input':8} {'params':>10} {'GFLOPs':>7} {'MB':>5} "
        f"{'train':5}  licence     source"
    )
    print(header)
    for m in models:
        params = f"{m.parameters:,}" if m.parameters is not None else "-"
        gflops = f"{m.gflops:.2f}" if m.gflops is not None else "-"
        size = f"{m.megabytes:.1f}" if m.megabytes is not None else "-"
        state = "" if m.installed else f"  [NOT INSTALLED: {m.install_hint}]"
        train = "yes" if m.trainable else "no"
        print(
            f"{m.name:18} {m.stage:8} {m.input_size:8} {params:>10} {gflops:>7} {size:>5} "
            f"{train:5}  {m.licence:11} {m.source}{state}"
        )
    return 0


def export_onnx(args: argparse.Namespace) -> int:
    """``detpose models --export-onnx NAME --out FILE``."""
    from model.networks.base import NetworkError
    from model.networks.export import export_refiner_onnx

    if not args.out:
        raise SystemExit("detpose models: --export-onnx needs --out FILE")
    try:
        codec = export_refiner_onnx(args.export_onnx, args.out)
    except NetworkError as exc:
        print(f"detpose models: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {args.out}: refiner.model: onnx, refiner.onnx.codec: {codec}")
    return 0
