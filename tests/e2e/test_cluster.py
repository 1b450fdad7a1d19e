"""Cluster path: a real `ray start --head` on loopback, `detpose submit`, status and logs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from jobs.cluster_cmd import cluster_entrypoint
from schemas.spec import SpecError
from tests.conftest import _free_port
from tests.helpers import REPO_ROOT, cli_env, run_cli, write_images, write_job_spec

RAY = str(Path(sys.executable).parent / "ray")


@pytest.fixture(scope="module")
def ray_head() -> Iterator[str]:
    """A Ray head node on loopback with the Jobs API; yields the dashboard URL. One per module:
    the jobs have their own ids and folders, and a head takes about 30 s to stop on 2 cores."""
    port, dashboard_port = _free_port(), _free_port()
    temp_dir = tempfile.mkdtemp(prefix="dpray-", dir="/tmp")  # short: Ray's socket paths are capped
    head = subprocess.Popen(
        [
            RAY,
            "start",
            "--head",
            "--block",
            "--node-ip-address=127.0.0.1",
            f"--port={port}",
            "--dashboard-host=127.0.0.1",
            f"--dashboard-port={dashboard_port}",
            "--num-cpus=8",
            "--disable-usage-stats",
            f"--temp-dir={temp_dir}",
        ],
        # The job's `python` must be the one with DetPose's dependencies, as on a real cluster.
        env={**cli_env(), "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"},
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{dashboard_port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            urllib.request.urlopen(url + "/api/version", timeout=2)
            break
        except urllib.error.HTTPError:  # answering, if only to ask for the auth token
            break
        except Exception:
            if head.poll() is not None or time.monotonic() > deadline:
                os.killpg(head.pid, signal.SIGKILL)
                pytest.fail("the Ray head did not start")
            time.sleep(0.5)
    yield url
    os.killpg(head.pid, signal.SIGTERM)
    try:
        head.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(head.pid, signal.SIGKILL)


def submit_and_wait(address: str, spec: Path, cwd: Path, *extra: str):
    """``detpose submit --wait`` of ``spec`` to the loopback head, then ``extra``."""
    return run_cli(
        "submit", "--address", address, "--spec", str(spec), "--wait", "--timeout", "600",
        "--poll-interval", "1", *extra, cwd=cwd,
    )  # fmt: skip


def test_submit_poll_and_read_outputs(ray_head, tmp_path):
    images = tmp_path / "images"
    write_images(images, 5)
    spec = write_job_spec(tmp_path, "on-cluster", images)

    submitted = submit_and_wait(ray_head, spec, tmp_path)
    assert submitted.returncode == 0, submitted.stdout[-3000:] + submitted.stderr[-3000:]
    assert "SUCCEEDED" in submitted.stdout

    stats = json.loads((tmp_path / "out" / "on-cluster" / "stats.json").read_text())
    assert stats["images_in"] == stats["images_ok"] == 5
    assert list((tmp_path / "out" / "on-cluster" / "annotations").rglob("*.parquet"))

    status = run_cli("status", "on-cluster", "--address", ray_head, cwd=tmp_path, timeout=120)
    assert status.returncode == 0 and "SUCCEEDED" in status.stdout, status.stderr
    logs = run_cli("logs", "on-cluster", "--address", ray_head, cwd=tmp_path, timeout=120)
    assert logs.returncode == 0 and "5 images (5 ok, 0 errors" in logs.stdout


def test_submit_refuses_inline_credentials(tmp_path):
    spec = tmp_path / "job.yaml"
    spec.write_text(
        "inputs: [s3://b/p/]\noutput: s3://b/o\n"
        "storage: {access_key_id: AKIASECRET, secret_access_key: hunter2}\n"
    )
    result = run_cli(
        "submit", "--address", "http://127.0.0.1:9", "--spec", str(spec), cwd=tmp_path, timeout=120
    )
    assert result.returncode == 2
    assert "must not carry credentials" in result.stderr
    assert "hunter2" not in result.stderr + result.stdout and "AKIASECRET" not in result.stderr


def test_eval_runs_on_the_cluster_through_submit(ray_head, tmp_path):
    data = REPO_ROOT / "tests" / "data" / "coco_sample"
    spec = write_job_spec(tmp_path, "eval-on-cluster", data / "images")
    submitted = submit_and_wait(
        ray_head,
        spec,
        tmp_path,
        "--",
        "eval",
        "--annotations",
        str(data / "annotations.json"),
        "--images",
        str(data / "images"),
        "--output",
        str(tmp_path / "eval"),
        "--filter",
        "coarse,nms",
    )
    assert submitted.returncode == 0, submitted.stdout[-3000:] + submitted.stderr[-3000:]
    record = json.loads((tmp_path / "eval" / "eval.json").read_text())
    assert list(record["modes"]) == ["coarse", "nms"]
    assert record["modes"]["coarse"]["images_ok"] == 4


def test_cluster_entrypoint_runs_run_or_eval_on_the_shipped_spec_and_train_as_given():
    assert cluster_entrypoint([]) == "python -m jobs.cli run --spec detpose_job.yaml"
    assert cluster_entrypoint(["--", "eval", "--images", "s3://b/my photos/"]) == (
        "python -m jobs.cli eval --images 's3://b/my photos/' --spec detpose_job.yaml"
    )
    assert cluster_entrypoint(["--", "train", "refiner", "--workers", "4"]) == (
        "python -m jobs.cli train refiner --workers 4"
    )
    for bad in (["synth", "x"], ["eval", "--spec", "x.yaml"]):
        with pytest.raises(SpecError):
            cluster_entrypoint(bad)
