"""The ``detpose`` command line. Only this package calls ``ray.init``, configures logging or exits."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Any

from jobs import bench_cmd, cluster_cmd, train_cmd
from jobs.cluster_cmd import ClusterError
from schemas.spec import JobSpec, SpecError, load_yaml_mapping

SAMPLES_DIR = Path(__file__).resolve().parent / "samples"
LOCAL_CPU_OVERSUBSCRIPTION = 4
MIN_LOCAL_LOGICAL_CPUS = 8

logger = logging.getLogger("detpose")


def _run_parser(subparsers: Any) -> None:
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
    p.add_argument("--filter", choices=["coarse", "nms", "oks_nms", "none"], help="filter mode")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], help="model device")
    p.add_argument(
        "--num-cpus",
        type=int,
        metavar="N",
        help="logical CPUs for a local Ray (default: max(8, 4 x cores); ignored with RAY_ADDRESS)",
    )
    p.add_argument(
        "--num-gpus",
        type=float,
        metavar="N",
        help="GPUs a local Ray offers (default: what it detects); N > 0 on a CPU-only machine "
        "declares logical GPUs, useful to test GPU resource wiring",
    )
    p.add_argument(
        "--progress-interval",
        type=float,
        default=10.0,
        metavar="S",
        help="seconds between progress lines (default 10)",
    )
    p.add_argument(
        "--no-progress-timeout",
        type=float,
        metavar="S",
        help="fail if the pipeline makes no progress for S seconds",
    )
    p.set_defaults(func=cmd_run)


def sample_images() -> list[str]:
    """The bundled sample photos (the default job's inputs)."""
    return [str(p) for p in sorted(SAMPLES_DIR.glob("*.jpg"))]


def spec_from_args(args: argparse.Namespace) -> JobSpec:
    """The job spec a ``run`` invocation describes: spec file, then flags, then defaults."""
    overrides: dict[str, Any] = {}
    if args.input:
        overrides["inputs"] = list(args.input)
    if args.manifest:
        overrides["manifest"] = args.manifest
    if args.output:
        overrides["output"] = args.output
    if args.job_id:
        overrides["job_id"] = args.job_id
    if args.device:
        overrides["device"] = args.device
    data = load_yaml_mapping(args.spec) if args.spec else {}
    data.update(overrides)
    if args.filter:
        data["filter"] = {**(data.get("filter") or {}), "mode": args.filter}
    if "inputs" in overrides or "manifest" in overrides:
        data.pop("manifest" if "inputs" in overrides else "inputs", None)
    if not data.get("inputs") and not data.get("manifest"):
        data["inputs"] = sample_images()
    data.setdefault("output", "out")
    return JobSpec.parse(data, source=args.spec or "command line")


def quiet_ray_logs() -> None:
    """Keep Ray Data's per-run INFO chatter out of a user's terminal (``-v`` shows it)."""
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    # It warns that its progress bars are off; ours (from written files) replace them.
    logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)


def init_ray(num_cpus: int | None, num_gpus: float | None = None) -> None:
    """Attach to ``RAY_ADDRESS`` when set, else start a local Ray with over-subscribed CPUs.

    Over-subscription keeps small machines from deadlocking: actor pools reserve CPUs up
    front, and the read/decode tasks must still find some (Ray issue 44687).
    """
    import ray

    if ray.is_initialized():
        return
    if os.environ.get("RAY_ADDRESS"):
        ray.init(logging_level=logging.WARNING)
        return
    cpus = num_cpus or max(
        MIN_LOCAL_LOGICAL_CPUS, LOCAL_CPU_OVERSUBSCRIPTION * (os.cpu_count() or 1)
    )
    # address="local": never attach by accident to another cluster running on this machine.
    ray.init(
        address="local",
        num_cpus=cpus,
        num_gpus=num_gpus,
        include_dashboard=False,
        logging_level=logging.WARNING,
    )


def cmd_run(args: argparse.Namespace) -> int:
    from pipeline.job import run_job
    from pipeline.sink import JobPaths

    spec = spec_from_args(args)
    init_ray(args.num_cpus, args.num_gpus)
    if not args.verbose:
        quiet_ray_logs()
    print(f"detpose: job '{spec.job_id}' → {JobPaths.for_spec(spec).root}", flush=True)
    stats = run_job(
        spec,
        no_progress_timeout_s=args.no_progress_timeout,
        progress_interval_s=args.progress_interval,
    )
    for warning in stats.warnings:
        print(f"WARNING: {warning}", file=sys.stderr)
    paths = JobPaths.for_spec(spec)
    print(
        f"detpose: weights: stage 1 {stats.weights.get('stage1')}, refiner {stats.weights.get('refiner')}"
    )
    print(f"detpose: {stats.summary_line()}")
    if stats.errors_by_kind:
        print(f"detpose: errors by kind: {stats.errors_by_kind}")
    print(f"detpose: annotations in {paths.annotations}/")
    print(f"detpose: statistics in {paths.stats_json}")
    internal = [w for w in stats.warnings if w.startswith("[internal]")]
    return 3 if internal else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="detpose", description="Batch multi-person pose annotation (DetPoseNet on Ray Data)."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    subparsers = parser.add_subparsers(dest="command", required=True)
    _run_parser(subparsers)
    for module in (cluster_cmd, train_cmd, bench_cmd):
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.func(args) or 0)
    except SpecError as exc:
        print(f"detpose: {exc}", file=sys.stderr)
        return 2
    except ClusterError as exc:
        print(f"detpose: {exc}", file=sys.stderr)
        return 1
    except (FileNotFoundError, ValueError) as exc:
        print(f"detpose: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
