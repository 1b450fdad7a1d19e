"""S3 faults a real cluster sees, through a fault-injecting proxy in front of the S3 server.

Throttling, server errors, resets before and during a response, a stall past the read
timeout, and an object that never comes back: every image still leaves exactly one row, the
recoverable ones are ok, the dead one is a 'storage' error after exactly decode.retries
retries, and the retries each row and the statistics report are exactly those injected.
"""

from __future__ import annotations

from collections import Counter

import boto3
import pytest

from pipeline.graph.job import run_job
from pipeline.store.fetch import ImageError, fetch_bytes
from pipeline.store.sink import JobPaths, read_annotations
from pipeline.store.storage import image_filesystem_for
from schemas.output import RETRY_KINDS
from schemas.spec import DecodeSpec, JobSpec, StorageSpec
from tests.conftest import NO_PROGRESS_TIMEOUT_S
from tests.helpers import synthetic_jpeg
from tests.s3_faults import FAULTS, FaultProxy
from tests.s3_faults import s3_fault_proxy as s3_fault_proxy  # the fixture

RETRIES = 3
# Short, so the stall costs little, but with room for a slow answer from a busy machine: a
# request that times out without a stall injected would be a retry the proxy did not cause.
READ_TIMEOUT_S = 4.0
PLAIN = [f"photos/plain_{i:02d}.jpg" for i in range(6)]
FAULTED = [f"photos/{fault.marker}_{i:02d}.jpg" for i, fault in enumerate(FAULTS)]
DEAD = "photos/dead_05.jpg"


def test_each_fault_costs_exactly_the_retries_counted(s3_endpoint, s3_bucket, s3_fault_proxy):
    """fetch_bytes alone (no Ray): every GET the proxy saw is an attempt fetch_bytes made."""
    client = boto3.client("s3", endpoint_url=s3_endpoint)
    storage = StorageSpec(
        endpoint_url=s3_fault_proxy.url,
        connect_timeout_s=READ_TIMEOUT_S,
        read_timeout_s=READ_TIMEOUT_S,
    )
    spec = DecodeSpec(retries=RETRIES, retry_backoff_s=0.0)
    for key in ["photos/plain.jpg", *FAULTED]:
        body = synthetic_jpeg(1)
        client.put_object(Bucket=s3_bucket, Key=key, Body=body)
        fs, path = image_filesystem_for(f"s3://{s3_bucket}/{key}", storage)
        retries: Counter[str] = Counter()
        result = fetch_bytes(fs, path, spec, retries)
        injected = s3_fault_proxy.injected_by_key().get(path, Counter())
        attempts = s3_fault_proxy.gets(path)
        if key == DEAD:
            assert isinstance(result, ImageError) and result.kind == "storage"
            assert attempts == RETRIES + 1 and injected == {"server_error": RETRIES + 1}
            assert retries == {"server_error": RETRIES}
        else:
            assert result == body, key
            assert attempts == sum(injected.values()) + 1 and retries == injected, key


@pytest.mark.usefixtures("ray_local")
def test_every_image_is_written_once_and_every_retry_is_counted(
    s3_endpoint, s3_bucket, s3_fault_proxy: FaultProxy
):
    assert DEAD in FAULTED and len(PLAIN + FAULTED) == 12
    client = boto3.client("s3", endpoint_url=s3_endpoint)  # uploads go straight to moto
    for i, key in enumerate(PLAIN + FAULTED):
        client.put_object(Bucket=s3_bucket, Key=key, Body=synthetic_jpeg(i))
    spec = JobSpec.parse(
        {
            "job_id": "s3-fault-run",
            "inputs": [f"s3://{s3_bucket}/photos"],
            "output": f"s3://{s3_bucket}/out",
            "storage": {
                "endpoint_url": s3_fault_proxy.url,
                "connect_timeout_s": READ_TIMEOUT_S,
                "read_timeout_s": READ_TIMEOUT_S,
            },
            "decode": {"retries": RETRIES, "retry_backoff_s": 0.05},
            "stage1": {"batch_size": 4},
            "refiner": {"batch_size": 4},
        }
    )
    assert s3_fault_proxy.stall_s > spec.storage.read_timeout_s

    stats = run_job(spec, no_progress_timeout_s=NO_PROGRESS_TIMEOUT_S)

    rows = read_annotations(JobPaths.for_spec(spec).annotations, spec.storage).to_pylist()
    uris = {f"s3://{s3_bucket}/{key}": key for key in PLAIN + FAULTED}
    assert Counter(r["uri"] for r in rows) == Counter(list(uris))  # one row per image
    injected = s3_fault_proxy.injected_by_key()
    total: Counter[str] = Counter()
    for row in rows:
        key = uris[row["uri"]]
        bucket_key = f"{s3_bucket}/{key}"
        expected = Counter(injected.get(bucket_key, {}))
        if key == DEAD:
            assert (row["status"], row["error_kind"]) == ("error", "storage"), row
            message = row["error_message"]
            assert f"gave up after {RETRIES} retries (server_error {RETRIES})" in message
            # Bounded: the first try and RETRIES retries, each one GET, nothing hidden.
            assert s3_fault_proxy.gets(bucket_key) == RETRIES + 1
            assert expected == {"server_error": RETRIES + 1}
            expected["server_error"] -= 1  # the last failure is given up on, not retried
        else:
            assert row["status"] == "ok", (key, row["error_message"])
            # Every fault was retried once by us, and the retry after the last one worked.
            assert s3_fault_proxy.gets(bucket_key) == sum(expected.values()) + 1, key
        if key in FAULTED:
            assert sum(expected.values()) > 0, f"no fault injected for {key}"
        assert row["storage_retries"] == {kind: expected[kind] for kind in RETRY_KINDS}, key
        total.update(expected)

    assert all(total[kind] > 0 for kind in RETRY_KINDS), total
    assert stats.storage_retries == {kind: total[kind] for kind in RETRY_KINDS}
    assert stats.images_in == stats.images_ok + stats.images_error == 12
    assert (stats.images_ok, stats.errors_by_kind) == (11, {"storage": 1})
    assert not [w for w in stats.warnings if w.startswith("[internal]")], stats.warnings
