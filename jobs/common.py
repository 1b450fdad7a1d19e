"""What several commands share: argument types that say what they expect, the output-safety
flags and their reports, and Ray start-up."""

from __future__ import annotations

import argparse
import logging
import math
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, get_args

if TYPE_CHECKING:  # the annotation only: jobs.common is imported by every command
    from pipeline.store.job_parts import PartsReport

LOCAL_CPU_OVERSUBSCRIPTION = 4
MIN_LOCAL_LOGICAL_CPUS = 8


def literal_choices(literal: Any) -> list[str]:
    """A command line's choices for a spec field typed ``Literal[...]``: the spec's type is
    the one list, so a new value reaches the flag without editing it."""
    return [str(value) for value in get_args(literal)]


def number_in(
    kind: type[int] | type[float],
    low: float | None = None,
    high: float | None = None,
    unit: str = "",
) -> Callable[[str], int | float]:
    """An argparse type: an ``int`` or ``float`` within ``[low, high]`` (either may be open).

    The error names the value and the range, e.g. ``got '0'; expected at least 1 seconds``.
    """
    suffix = f" {unit}" if unit else ""

    def parse(text: str) -> int | float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"got {text!r}; expected a number{suffix}") from None
        if isinstance(value, float) and not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"got {text!r}; expected a finite number{suffix}")
        if low is not None and high is not None and not low <= value <= high:
            raise argparse.ArgumentTypeError(f"got {text!r}; expected {low:g} to {high:g}{suffix}")
        if low is not None and value < low:
            raise argparse.ArgumentTypeError(f"got {text!r}; expected at least {low:g}{suffix}")
        if high is not None and value > high:
            raise argparse.ArgumentTypeError(f"got {text!r}; expected at most {high:g}{suffix}")
        return value

    return parse


def add_output_args(parser: argparse.ArgumentParser, partial: bool = True) -> None:
    """``--replace-symlink`` and (``partial``) ``--allow-partial``, for the commands that read
    a job's part files or write files for people and other tools."""
    from pipeline.store.job_parts import ALLOW_PARTIAL_FLAG
    from pipeline.store.outputs import REPLACE_SYMLINK_FLAG

    parser.add_argument(
        REPLACE_SYMLINK_FLAG,
        action="store_true",
        help="replace a symbolic link where an output file goes with the written file (the "
        "link's target is left alone); without it such an output is refused",
    )
    if partial:
        parser.add_argument(
            ALLOW_PARTIAL_FLAG,
            action="store_true",
            help="leave out annotation files that cannot be read instead of stopping (exit 2); "
            "the result then says it is PARTIAL, in the file and here",
        )


def print_parts_report(report: PartsReport, result: str) -> None:
    """Warn about what reading a job's part files left out: a partial ``result`` and persons
    with non-finite numbers."""
    partial = report.partial_note()
    if partial:
        print(f"detpose: warning: {partial}; this {result} is PARTIAL", file=sys.stderr)
    dropped = report.non_finite_note()
    if dropped:
        print(f"detpose: warning: {dropped}", file=sys.stderr)


def add_local_ray_args(parser: argparse.ArgumentParser) -> None:
    """``--num-cpus``, ``--num-gpus`` and ``--no-progress-timeout``, for commands that run a job."""
    parser.add_argument(
        "--num-cpus",
        type=number_in(int, 1),
        metavar="N",
        help="logical CPUs for a local Ray (default: max(8, 4 x cores); ignored with RAY_ADDRESS)",
    )
    parser.add_argument(
        "--num-gpus",
        type=number_in(float, 0.0),
        metavar="N",
        help="GPUs a local Ray offers (default: what it detects); N > 0 on a CPU-only machine "
        "declares logical GPUs, useful to test GPU resource wiring",
    )
    parser.add_argument(
        "--no-progress-timeout",
        type=number_in(float, 1.0, unit="seconds"),
        metavar="S",
        help="fail if the pipeline makes no progress for S seconds",
    )


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


def run_detpose(args: Sequence[str], log: Path, threads: int | None = None) -> float:
    """Run ``detpose ARGS`` to completion, its output in ``log``; returns its seconds.

    Raises:
        RuntimeError: the command failed (the message names its log).
    """
    env = dict(os.environ)
    if threads is not None:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    log.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with log.open("w") as out:
        done = subprocess.run(
            [sys.executable, "-m", "jobs.cli", *args], stdout=out, stderr=subprocess.STDOUT, env=env
        )
    if done.returncode != 0:
        raise RuntimeError(f"detpose {args[0]} failed (exit {done.returncode}); see {log}")
    return time.perf_counter() - started
