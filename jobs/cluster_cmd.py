"""``detpose submit | status | logs``: run jobs on a Ray cluster through the Ray Jobs API.

``submit`` ships DetPose's own code and the job spec as the job's working directory, so
the cluster runs exactly the code that submitted it; the cluster's Python must already
have DetPose's dependencies (the same image or virtual environment as the submitter).
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from schemas.spec import JobSpec, SpecError

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SHIPPED_PACKAGES = ("schemas", "model", "pipeline", "jobs")
SPEC_NAME = "detpose_job.yaml"
DEFAULT_ADDRESS = "http://127.0.0.1:8265"
TERMINAL_EXIT = {"SUCCEEDED": 0, "STOPPED": 1, "FAILED": 1}


class ClusterError(RuntimeError):
    """A problem talking to the cluster, phrased for the user."""


def default_address() -> str:
    return (
        os.environ.get("RAY_API_SERVER_ADDRESS")
        or os.environ.get("DETPOSE_RAY_DASHBOARD")
        or DEFAULT_ADDRESS
    )


def _token_available() -> bool:
    if os.environ.get("RAY_AUTH_TOKEN"):
        return True
    path = os.environ.get("RAY_AUTH_TOKEN_PATH") or str(Path.home() / ".ray" / "auth_token")
    return Path(path).is_file()


def jobs_client(address: str) -> Any:
    """A ``JobSubmissionClient``; passes on Ray's auth token (never printed) when one exists."""
    if _token_available() and os.environ.get("RAY_AUTH_MODE") in (None, "", "disabled"):
        # Ray 2.60 clusters require token auth; the client only sends it in 'token' mode,
        # which Ray reads when it is imported.
        os.environ["RAY_AUTH_MODE"] = "token"
    from ray.job_submission import JobSubmissionClient

    try:
        return JobSubmissionClient(address)
    except Exception as exc:
        text = str(exc)
        if "uthentication" in text:
            raise ClusterError(
                f"the cluster at {address} requires an authentication token and none was accepted; "
                "copy the head node's ~/.ray/auth_token here, or set RAY_AUTH_TOKEN_PATH or "
                "RAY_AUTH_TOKEN (and RAY_AUTH_MODE=token)"
            ) from None
        raise ClusterError(
            f"cannot reach the Ray Jobs API at {address}: {type(exc).__name__}: {text[:300]}"
        ) from None


def stage_working_dir(spec: JobSpec | None, into: Path) -> Path:
    """Copy DetPose's packages and the (secret-free) spec, if any, into ``into``; return it."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for package in SHIPPED_PACKAGES:
        shutil.copytree(PROJECT_ROOT / package, into / package, ignore=ignore)
    if spec is not None:
        (into / SPEC_NAME).write_text(spec.to_yaml(), encoding="utf-8")
    return into


def _reject_inline_credentials(spec: JobSpec) -> None:
    storage = spec.storage
    if storage.access_key_id or storage.secret_access_key or storage.session_token:
        raise SpecError(
            "storage.access_key_id / secret_access_key / session_token: a submitted job must not "
            "carry credentials (they would be stored in the cluster's job records); give the "
            "cluster nodes their own AWS credentials (environment or instance role) instead"
        )


# The Jobs API's answer while no job agent is ready, and how long submit waits for one.
NO_AGENT_YET = "No available agent to submit job"
AGENT_WAIT_S = 60.0
AGENT_RETRY_S = 2.0

# Commands a submission may run on the cluster; run and eval read the shipped spec with --spec,
# train takes its data and checkpoint URIs on its own command line.
CLUSTER_COMMANDS = ("run", "eval", "train")
SPEC_COMMANDS = ("run", "eval")


def cluster_entrypoint(command: list[str]) -> str:
    """The shell command the cluster runs: ``detpose run`` on the shipped spec by default, or
    the command given after ``--`` (``eval ...`` with the shipped spec added, ``train ...`` as
    it is).

    Raises:
        SpecError: a command that cannot run on a cluster, or one that names its own spec.
    """
    words = command[1:] if command[:1] == ["--"] else list(command)
    words = words or ["run"]
    if words[0] not in CLUSTER_COMMANDS:
        raise SpecError(
            f"got {words[0]!r} after --; a submission runs one of {', '.join(CLUSTER_COMMANDS)}"
        )
    if "--spec" in words:
        raise SpecError("give the spec with submit's own --spec, not after --")
    spec = ["--spec", SPEC_NAME] if words[0] in SPEC_COMMANDS else []
    return " ".join(["python", "-m", "jobs.cli", *map(shlex.quote, words), *spec])


def _check_networks(spec: JobSpec) -> None:
    """Each stage names a network this DetPose knows, with options it takes: checked here,
    before anything is sent (the weights themselves are read on the cluster)."""
    from model.networks.base import NetworkError
    from model.networks.resolve import stage_adapter

    for kind in ("stage1", "refiner"):
        try:
            stage_adapter(kind, getattr(spec, kind))
        except NetworkError as exc:
            raise SpecError(f"{kind}.model: {exc}") from None


def cmd_submit(args: argparse.Namespace) -> int:
    entrypoint = cluster_entrypoint(args.command)
    spec = None
    if entrypoint.endswith(SPEC_NAME):
        if not args.spec:
            raise SpecError("submit --spec FILE: run and eval read a job spec")
        overrides = {
            k: v for k, v in (("job_id", args.job_id), ("output", args.output)) if v is not None
        }
        spec = JobSpec.from_yaml(args.spec, overrides)
        _reject_inline_credentials(spec)
        _check_networks(spec)
    elif args.spec:
        raise SpecError("train takes no job spec: give its flags after --")
    client = jobs_client(args.address)
    name = spec.job_id if spec is not None else "train"
    submission_id = args.submission_id or f"detpose-{name}-{time.strftime('%Y%m%d-%H%M%S')}"
    with tempfile.TemporaryDirectory(prefix="detpose-submit-") as tmp:
        working_dir = stage_working_dir(spec, Path(tmp))
        deadline = time.monotonic() + AGENT_WAIT_S
        while True:
            try:
                client.submit_job(
                    entrypoint=entrypoint,
                    submission_id=submission_id,
                    runtime_env={"working_dir": str(working_dir)},
                    metadata={"detpose_job_id": name},
                )
                break
            except Exception as exc:
                # A cluster whose job agents have not registered yet (just started, or busy)
                # answers this; nothing was submitted, so trying again is safe.
                if NO_AGENT_YET in str(exc) and time.monotonic() < deadline:
                    time.sleep(AGENT_RETRY_S)
                    continue
                raise ClusterError(
                    f"submission to {args.address} failed: {type(exc).__name__}: {str(exc)[:500]}"
                ) from None
    print(f"detpose: submitted {submission_id} to {args.address}")
    print(f"detpose: follow it with: detpose status {submission_id} --address {args.address}")
    if not args.wait:
        return 0
    return wait_for(client, submission_id, args.timeout, args.poll_interval)


def wait_for(client: Any, submission_id: str, timeout_s: float, poll_s: float) -> int:
    """Poll until the job ends; print its status and the tail of its logs."""
    deadline = time.monotonic() + timeout_s
    while True:
        status = str(client.get_job_status(submission_id).value)
        if status in TERMINAL_EXIT:
            break
        if time.monotonic() > deadline:
            print(
                f"detpose: {submission_id} still {status} after {timeout_s:.0f} s", file=sys.stderr
            )
            return 124
        time.sleep(poll_s)
    logs = client.get_job_logs(submission_id)
    print("\n".join(logs.splitlines()[-20:]))
    print(f"detpose: {submission_id} {status}")
    return TERMINAL_EXIT[status]


def resolve_submission(client: Any, name: str, address: str) -> str:
    """A submission id, or the latest submission of the DetPose job id ``name``."""
    jobs = client.list_jobs()
    if any(job.submission_id == name for job in jobs):
        return name
    mine = [j for j in jobs if (j.metadata or {}).get("detpose_job_id") == name and j.submission_id]
    if not mine:
        raise ClusterError(f"no submission or DetPose job id {name!r} at {address}")
    return max(mine, key=lambda j: j.start_time or 0).submission_id


def cmd_status(args: argparse.Namespace) -> int:
    client = jobs_client(args.address)
    submission_id = resolve_submission(client, args.job, args.address)
    info = client.get_job_info(submission_id)
    status = str(info.status.value)
    print(f"{submission_id}: {status}" + (f" ({info.message})" if info.message else ""))
    if args.wait:
        return wait_for(client, submission_id, args.timeout, args.poll_interval)
    return 0


def cmd_logs(args: argparse.Namespace) -> int:
    client = jobs_client(args.address)
    submission_id = resolve_submission(client, args.job, args.address)
    print(client.get_job_logs(submission_id), end="")
    return 0


def _add_address(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--address",
        default=default_address(),
        help=f"Ray Jobs API (dashboard) URL; default $RAY_API_SERVER_ADDRESS or {DEFAULT_ADDRESS}",
    )


def _add_wait(parser: argparse.ArgumentParser, flag_help: str) -> None:
    parser.add_argument("--wait", action="store_true", help=flag_help)
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds to wait at most")
    parser.add_argument("--poll-interval", type=float, default=2.0, help=argparse.SUPPRESS)


def _job_parser(subparsers: Any, name: str, help_text: str) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(name, help=help_text)
    _add_address(parser)
    parser.add_argument(
        "job", metavar="JOB_ID", help="submission id, or a DetPose job id (latest run)"
    )
    return parser


def register(subparsers: Any) -> None:
    submit = subparsers.add_parser("submit", help="submit a job spec to a Ray cluster (Jobs API)")
    _add_address(submit)
    submit.add_argument(
        "--spec", metavar="FILE", help="YAML job spec (run and eval; train takes none)"
    )
    submit.add_argument("--job-id", help="override the spec's job id")
    submit.add_argument("--output", metavar="URI", help="override the spec's output")
    submit.add_argument("--submission-id", help="Ray submission id (default detpose-JOB-TIME)")
    submit.add_argument(
        "command",
        nargs=argparse.REMAINDER,
        help="after --: the command to run on the cluster, e.g. -- eval --annotations "
        "s3://b/person_keypoints_val2017.json --images s3://b/val2017/ --output s3://b/eval, "
        "or -- train refiner --workers 4 --gpus-per-worker 1 ... (default: run)",
    )
    _add_wait(submit, "wait for the job to finish and exit with its result")
    submit.set_defaults(func=cmd_submit)

    status = _job_parser(subparsers, "status", "status of a submitted job")
    _add_wait(status, "wait for the job to finish")
    status.set_defaults(func=cmd_status)

    logs = _job_parser(subparsers, "logs", "logs of a submitted job")
    logs.set_defaults(func=cmd_logs)
