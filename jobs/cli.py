"""The ``detpose`` command line. Only this package calls ``ray.init``, configures logging or exits.

Exit codes: 0 success; 2 a bad spec, input, output, checkpoint or device (found before any
worker starts); 1 a cluster (Ray or Jobs API) error; 3 an internal error (rows missing or
duplicated, or a bug); 130 interrupted.
"""

from __future__ import annotations

import argparse
import logging
import sys

from jobs import (
    cluster_cmd,
    crowd_report_cmd,
    eval_cmd,
    export_cmd,
    import_cmd,
    models_cmd,
    redact,
    review_cmd,
    run_cmd,
    synth_cmd,
    synth_demo_cmd,
    train_cmd,
)
from jobs.bench import command as bench_cmd
from jobs.cluster_cmd import ClusterError
from schemas.spec import SpecError

EXIT_SETUP = 2
EXIT_CLUSTER = 1
EXIT_INTERNAL = 3

logger = logging.getLogger("detpose")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="detpose", description="Batch multi-person pose annotation (DetPoseNet on Ray Data)."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for module in (
        run_cmd,
        cluster_cmd,
        train_cmd,
        bench_cmd,
        eval_cmd,
        crowd_report_cmd,
        review_cmd,
        export_cmd,
        import_cmd,
        models_cmd,
        synth_cmd,
        synth_demo_cmd,
    ):
        module.register(subparsers)
    return parser


def _root_cause(exc: BaseException) -> BaseException:
    """The innermost of a chain of causes (Ray wraps a worker's exception in its own)."""
    seen = {id(exc)}
    while (nxt := exc.__cause__ or exc.__context__) is not None and id(nxt) not in seen:
        seen.add(id(nxt))
        exc = nxt
    return exc


def _worker_setup_failure(exc: BaseException) -> str | None:
    """The message of a checkpoint or device error that killed a model-stage actor, if any."""
    from model.checkpoint import CheckpointError
    from model.inference.devices import DeviceError

    cause = _root_cause(exc)
    if isinstance(cause, CheckpointError | DeviceError):
        return str(cause)
    # An actor that died in __init__ reaches the driver as text only.
    for line in str(exc).splitlines():
        for name in ("CheckpointError", "DeviceError"):
            if line.strip().startswith(f"{name}:") or f".{name}:" in line:
                return line.split(f"{name}:", 1)[1].strip()
    return None


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    redact.install()
    from pipeline.errors import JobSetupError

    try:
        return int(args.func(args) or 0)
    except (SpecError, JobSetupError) as exc:
        print(f"detpose: {redact.redact(str(exc))}", file=sys.stderr)
        return EXIT_SETUP
    except ClusterError as exc:
        print(f"detpose: {exc}", file=sys.stderr)
        return EXIT_CLUSTER
    except KeyboardInterrupt:
        print("\ndetpose: interrupted", file=sys.stderr)
        return run_cmd.EXIT_INTERRUPTED
    except Exception as exc:
        return _report_failure(exc, args.verbose)


def _report_failure(exc: Exception, verbose: bool) -> int:
    """One readable line per failure a job can hit after Ray started; the traceback with -v."""
    setup = _worker_setup_failure(exc)
    if setup is not None:
        print(f"detpose: a model stage could not start: {redact.redact(setup)}", file=sys.stderr)
        return EXIT_SETUP
    from_ray = type(exc).__module__.startswith("ray")
    if not from_ray and isinstance(exc, FileNotFoundError | ValueError):
        # Raised by a command's own checks (e.g. `train` on a missing annotation file).
        print(f"detpose: error: {redact.redact(str(exc))}", file=sys.stderr)
        return EXIT_SETUP
    if verbose:
        logger.exception("failed")
    if from_ray:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        print(
            f"detpose: the Ray cluster failed the job: {type(exc).__name__}: "
            f"{redact.redact(first)[:500]} (run with -v for the traceback; re-running the same "
            "command resumes the job)",
            file=sys.stderr,
        )
        return EXIT_CLUSTER
    if not verbose:
        logger.error("[internal] unexpected error", exc_info=exc)
    return EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main())
