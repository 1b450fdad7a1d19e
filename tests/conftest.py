"""Shared fixtures: the real sample data, a real S3-compatible server on loopback, a local Ray."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import REPO_ROOT

SAMPLE_DATA = REPO_ROOT / "tests" / "data"

# Fake credentials for the loopback S3 server. Set before Ray starts so its workers inherit them.
os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
os.environ.pop("RAY_ADDRESS", None)
os.environ.setdefault("RAY_DISABLE_USAGE_STATS", "1")

# A pipeline that stops making progress for this long fails the test instead of hanging CI.
NO_PROGRESS_TIMEOUT_S = 180.0


@pytest.fixture(scope="session")
def sample_data() -> Path:
    """``tests/data``: the real COCO, OCHuman and CrowdPose excerpts (see its README.md)."""
    if not (SAMPLE_DATA / "coco_sample" / "annotations.json").exists():
        pytest.fail(f"sample data not found at {SAMPLE_DATA}")
    return SAMPLE_DATA


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """A moto S3 server in its own process on a free loopback port; yields its URL."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(url + "/moto-api/", timeout=2)
            break
        except Exception:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"moto server did not start on {url}")
            time.sleep(0.2)
    yield url
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture
def s3_bucket(s3_endpoint: str, request: pytest.FixtureRequest) -> str:
    """A fresh, empty bucket on the loopback server; returns its name."""
    import boto3

    name = (
        "t-"
        + request.node.name.lower().replace("_", "-")[:50].strip("-")
        + f"-{time.time_ns() % 10**6}"
    )
    client = boto3.client("s3", endpoint_url=s3_endpoint)
    client.create_bucket(Bucket=name)
    return name


@pytest.fixture(scope="session")
def ray_local() -> Iterator[None]:
    """A real local Ray runtime, started once for the integration tests."""
    import ray

    from jobs.common import init_ray

    init_ray(num_cpus=8)
    yield
    ray.shutdown()
