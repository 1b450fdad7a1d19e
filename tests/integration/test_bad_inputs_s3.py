"""A bucket prefix of good and broken objects: one row each, right error kinds, job succeeds."""

from __future__ import annotations

import boto3
import pytest

from pipeline.graph.job import run_job
from pipeline.store.sink import JobPaths, read_annotations
from schemas.spec import JobSpec
from tests.conftest import NO_PROGRESS_TIMEOUT_S
from tests.helpers import corrupt_objects, synthetic_jpeg

pytestmark = pytest.mark.usefixtures("ray_local")

NUM_GOOD = 50


def test_prefix_with_corrupt_objects_yields_one_row_per_object(s3_endpoint, s3_bucket):
    client = boto3.client("s3", endpoint_url=s3_endpoint)
    expected = {}
    for i in range(NUM_GOOD):
        key = f"photos/batch{i % 3}/img_{i:03d}.jpg"
        client.put_object(Bucket=s3_bucket, Key=key, Body=synthetic_jpeg(i))
        expected[f"s3://{s3_bucket}/{key}"] = None
    for name, (body, kind) in corrupt_objects().items():
        client.put_object(Bucket=s3_bucket, Key=f"photos/{name}", Body=body)
        expected[f"s3://{s3_bucket}/photos/{name}"] = kind
    client.put_object(Bucket=s3_bucket, Key="photos/_SUCCESS.txt", Body=b"")

    spec = JobSpec.parse(
        {
            "job_id": "bad-inputs",
            "inputs": [f"s3://{s3_bucket}/photos"],
            "output": f"s3://{s3_bucket}/out",
            "storage": {"endpoint_url": s3_endpoint},
            "stage1": {"batch_size": 8},
            "refiner": {"batch_size": 8},
        }
    )
    stats = run_job(spec, no_progress_timeout_s=NO_PROGRESS_TIMEOUT_S)

    rows = read_annotations(JobPaths.for_spec(spec).annotations, spec.storage).to_pylist()
    by_uri = {r["uri"]: r for r in rows}
    assert len(rows) == len(by_uri) == len(expected) == NUM_GOOD + 4
    for uri, kind in expected.items():
        row = by_uri[uri]
        if kind is None:
            assert row["status"] == "ok", row["error_message"]
            assert (row["width"], row["height"]) == (160, 120)
        else:
            assert (row["status"], row["error_kind"]) == ("error", kind), uri
            assert row["error_message"] and row["width"] is None
    assert stats.images_in == stats.images_ok + stats.images_error == NUM_GOOD + 4
    assert stats.errors_by_kind == {"too_large": 1, "unreadable": 3}
    assert stats.skipped_non_image == 1
    assert stats.proposals == sum(r["counts"]["proposals"] for r in rows)
