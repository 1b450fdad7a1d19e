"""``detpose run``: annotate images on a local Ray (or the cluster in ``RAY_ADDRESS``).

Everything the driver can check (spec, inputs, output, checkpoints, the job's earlier
settings) is checked before Ray starts, so a mistake costs seconds and exits with code 2.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Any

from jobs.common import add_local_ray_args, init_ray, literal_choices, number_in, quiet_ray_logs
from jobs.redact import register_secrets
from schemas.filtering import FilterMode
from schemas.spec import DeviceName, JobSpec, SpecError

SAMPLES_DIR = Path(__file__).resolve().parent / "samples"
# Each progress line lists the output folder (one LIST request on S3): not more often than this.
MIN_PROGRESS_INTERVAL_S = 1.0
EXIT_INTERRUPTED = 130

logger = logging.getLogger("detpose")


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "run",
        help="annotate images (local paths or URIs) into OUTPUT/JOB_ID/",
        description="Annotate every image under the inputs. Without --input, --manifest or a "
        "spec naming inputs, runs on the sample images bundled with DetPose.",
    )
    p.add_argument("--input", nargs="+", metavar="URI", help="image files or prefixes")
    p.add_argument("--manifest", metavar="URI", help="Parquet/CSV/text file listing image URIs")
    p.add_argument("--output", metavar="URI", help="output root (default: ./out)")
    p.add_argument("--job-id", metavar="ID", help="job id (default: 'default')")
    p.add_argument("--spec", metavar="FILE", help="YAML job spec; the flags above override it")
    p.add_argument("--filter", choices=literal_choices(FilterMode), help="filter mode")
    p.add_argument("--device", choices=literal_choices(DeviceName), help="model device")
    p.add_argument(
        "--stage1-model",
        metavar="NAME",
        help="stage 1's network (stage1.model): a name `detpose models` lists",
    )
    p.add_argument(
        "--refiner-model",
        metavar="NAME",
        help="the refiner's network (refiner.model): a name `detpose models` lists",
    )
    p.add_argument(
        "--allow-changed-settings",
        action="store_true",
        help="resume a job id even though settings that shape results (weights, filter, "
        "decode limits, ...) differ from its previous run; the change is recorded in the stats",
    )
    add_local_ray_args(p)
    p.add_argument(
        "--progress-interval",
        type=number_in(float, MIN_PROGRESS_INTERVAL_S, unit="seconds"),
        default=10.0,
        metavar="S",
        help=f"seconds between progress lines (default 10, at least {MIN_PROGRESS_INTERVAL_S:g})",
    )
    p.set_defaults(func=cmd_run)


def sample_images() -> list[str]:
    """The bundled sample photos (the default job's inputs)."""
    return [str(p) for p in sorted(SAMPLES_DIR.glob("*.jpg"))]


def spec_from_args(args: argparse.Namespace) -> JobSpec:
    """The job spec a ``run`` invocation describes: the flags over the spec file over the
    defaults (the bundled samples, output ``out``); see ``JobSpec.from_yaml``."""
    flags = {
        "inputs": args.input,  # replaces the file's inputs or manifest
        "manifest": args.manifest,  # likewise
        "output": args.output,
        "job_id": args.job_id,
        "device": args.device,
        "filter": {"mode": args.filter} if args.filter else None,  # keeps the file's other fields
        "stage1": {"model": args.stage1_model} if args.stage1_model else None,
        "refiner": {"model": args.refiner_model} if args.refiner_model else None,
    }
    # None is a flag not given; an empty --job-id "" is given, and must fail validation.
    overrides = {field: value for field, value in flags.items() if value is not None}
    defaults = {"inputs": sample_images(), "output": "out"}
    return JobSpec.from_yaml(args.spec or None, overrides, defaults)


def check_local_device(spec: JobSpec, num_gpus: float | None) -> None:
    """``device: cuda`` on a local Ray needs CUDA here; refuse it before Ray starts."""
    if spec.device != "cuda" or os.environ.get("RAY_ADDRESS") or num_gpus:
        return
    import torch

    if not torch.cuda.is_available():
        raise SpecError(
            "device: got 'cuda' but torch sees no CUDA device on this machine; use 'auto' "
            "(CUDA when present, else CPU) or 'cpu'"
        )


def cmd_run(args: argparse.Namespace) -> int:
    from pipeline.graph.job import execute_job, prepare_job

    spec = spec_from_args(args)
    register_secrets(spec.storage)
    check_local_device(spec, args.num_gpus)
    job = prepare_job(spec, allow_changed_settings=args.allow_changed_settings)
    print(f"detpose: job '{spec.job_id}' → {job.paths.root}", flush=True)
    try:
        init_ray(args.num_cpus, args.num_gpus)
        if not args.verbose:
            quiet_ray_logs()
        stats = execute_job(
            job,
            no_progress_timeout_s=args.no_progress_timeout,
            progress_interval_s=args.progress_interval,
        )
    except KeyboardInterrupt:
        print(
            f"\ndetpose: interrupted. Annotations written so far are kept; resume with the same "
            f"command (job id '{spec.job_id}') to process only the rest.",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    for warning in stats.warnings:
        print(f"WARNING: {warning}", file=sys.stderr)
    print(
        f"detpose: models: stage 1 {spec.stage1.model} ({stats.weights.get('stage1')}), "
        f"refiner {spec.refiner.model} ({stats.weights.get('refiner')})"
    )
    print(f"detpose: {stats.summary_line()}")
    if stats.errors_by_kind:
        print(f"detpose: errors by kind: {stats.errors_by_kind}")
    print(f"detpose: annotations in {job.paths.annotations}/")
    print(f"detpose: statistics in {job.paths.stats_json}")
    internal = [w for w in stats.warnings if w.startswith("[internal]")]
    return 3 if internal else 0
