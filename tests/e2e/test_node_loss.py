"""A worker node lost mid-job: the job still finishes and writes every image exactly once.

A two-node local Ray cluster (head + one worker carrying the custom resource the refiner pool
is pinned to) runs the job through the CLI, as a user attached to a cluster would. Once the
first annotation files exist the worker is killed without warning, and a fresh worker with
the same resource joins so that the refiner actor can be restarted there.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pyarrow.dataset as pds
import pyarrow.parquet as pq
import pytest

from tests.helpers import REPO_ROOT, cli_command, cli_env, write_images, write_job_spec

IMAGES = 120
HOST_RESOURCE = {"refiner_host": 1.0}
# Ray processes on every node import DetPose's modules; keep worker start-up light.
NODE_ARGS = {"object_store_memory": 150 * 1024 * 1024, "include_dashboard": False}
# The GCS declares a silent node dead after ~5 s instead of the default ~15 s (3 s x 5 missed
# health checks); Ray restarts the lost refiner actor only once its node is declared dead.
FAST_NODE_DEATH = {"health_check_period_ms": 1000, "health_check_failure_threshold": 5}


@pytest.fixture
def cluster(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[object, dict]]:
    """A local head (4 logical CPUs) and one refiner-host worker; always shut down."""
    from ray.cluster_utils import Cluster

    # Every node's worker processes must import DetPose, as on a real cluster's image.
    monkeypatch.setenv("PYTHONPATH", str(REPO_ROOT))
    temp_dir = tempfile.mkdtemp(prefix="dpnode-", dir="/tmp")  # short: socket paths are capped
    worker_args = {**NODE_ARGS, "num_cpus": 1, "resources": HOST_RESOURCE, "temp_dir": temp_dir}
    cluster = None
    try:
        cluster = Cluster(
            initialize_head=True,
            connect=False,
            head_node_args={
                **NODE_ARGS,
                "num_cpus": 4,
                "temp_dir": temp_dir,
                "_system_config": FAST_NODE_DEATH,
            },
        )
        cluster.add_node(**worker_args)
        cluster.wait_for_nodes()
        yield cluster, worker_args
    finally:
        if cluster is not None:
            cluster.shutdown()
        shutil.rmtree(temp_dir, ignore_errors=True)


def complete_rows(annotations: Path, pattern: str) -> list[dict]:
    """Rows of the annotation files that are complete now (a file being written is skipped)."""
    rows = []
    for path in sorted(annotations.glob(pattern)) if annotations.exists() else []:
        try:
            rows += pq.read_table(path, columns=["uri", "status"]).to_pylist()
        except Exception:
            continue
    return rows


@pytest.mark.slow
def test_lost_worker_node_mid_job_still_writes_every_image_once(cluster, tmp_path):
    cluster, worker_args = cluster
    (worker,) = cluster.worker_nodes
    images = tmp_path / "images"
    write_images(images, IMAGES)
    spec = write_job_spec(
        tmp_path,
        "nodeloss",
        images,
        "stage1: {batch_size: 2}\nrefiner: {batch_size: 1, resources: {refiner_host: 0.1}}\n",
    )
    log = tmp_path / "cli.log"
    started = time.monotonic()
    with log.open("w") as out:
        proc = subprocess.Popen(
            cli_command(
                "run",
                "--spec",
                str(spec),
                "--no-progress-timeout",
                "120",
                "--progress-interval",
                "2",
            ),
            env={**cli_env(), "RAY_ADDRESS": cluster.address},
            cwd=tmp_path,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        annotations = tmp_path / "out" / "nodeloss" / "annotations"
        deadline = time.monotonic() + 300
        # A file whose write task runs on the worker may exist but be cut short by the kill
        # (its retry rewrites it), so wait for a complete one, not just for a name.
        while not (before_kill := complete_rows(annotations, "run-000-*.parquet")):
            assert proc.poll() is None, f"the job ended before writing anything:\n{log.read_text()}"
            assert time.monotonic() < deadline, "the job wrote nothing in time"
            time.sleep(0.1)

        cluster.remove_node(worker, allow_graceful=False)
        at_kill = complete_rows(annotations, "*.parquet")
        assert proc.poll() is None, "the job had already finished when the node was lost"
        assert before_kill and len(at_kill) < IMAGES, (
            "the node must be lost while the job is part-way through"
        )
        replacement = cluster.add_node(**worker_args)  # so the refiner can come back

        rc = proc.wait(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
    output = log.read_text()
    assert rc == 0, output[-4000:]

    root = tmp_path / "out" / "nodeloss"
    files = sorted(str(p) for p in (root / "annotations").glob("*.parquet"))
    rows = pds.dataset(files, format="parquet").to_table(columns=["uri", "status"]).to_pylist()
    uris = [r["uri"] for r in rows]
    assert len(uris) == IMAGES, f"{len(uris)} rows for {IMAGES} images"
    assert len(set(uris)) == IMAGES, "an image was written more than once or not at all"
    assert {r["status"] for r in rows} == {"ok"}
    stats = json.loads((root / "stats.json").read_text())
    assert stats["images_in"] == stats["images_ok"] == IMAGES
    assert not [w for w in stats["warnings"] if w.startswith("[internal]")], stats["warnings"]
    # The refiner ran on the lost worker (pinned by its resource) and, as rows were still to
    # come when the node went, ran again on the new one: restarted, or replaced by the pool.
    refiners = [
        actor
        for actor in cluster.global_state.actor_table(None).values()
        if "RefineStage" in actor["ActorClassName"]
    ]
    hosts = {worker.node_id, replacement.node_id}
    assert refiners and all(a["Address"]["NodeID"] in hosts for a in refiners), refiners
    assert any(a["Address"]["NodeID"] == replacement.node_id for a in refiners), [
        (a["State"], a["NumRestarts"], a["Address"]["NodeID"][:8]) for a in refiners
    ] + [worker.node_id[:8], replacement.node_id[:8]]
    print(
        f"node lost after {len(before_kill)}-{len(at_kill)} rows; job took {time.monotonic() - started:.1f} s"
    )
