"""The whole job against a real S3-compatible server (moto, loopback) and a real local Ray."""

from __future__ import annotations

import json

import boto3
import pyarrow.parquet as pq
import pytest
import s3fs

from pipeline.graph.job import run_job
from pipeline.store.sink import JobPaths, read_annotations
from pipeline.store.storage import image_id_for
from schemas.output import ANNOTATION_SCHEMA
from schemas.spec import JobSpec
from tests.conftest import NO_PROGRESS_TIMEOUT_S
from tests.helpers import REPO_ROOT

pytestmark = pytest.mark.usefixtures("ray_local")


def upload_coco_sample(sample_data, endpoint: str, bucket: str) -> dict[str, tuple[int, int]]:
    """Put the real COCO sample under s3://bucket/coco/; return key → (width, height) from the JSON."""
    client = boto3.client("s3", endpoint_url=endpoint)
    images = json.loads((sample_data / "coco_sample" / "annotations.json").read_text())["images"]
    sizes = {}
    for image in images:
        key = f"coco/{image['file_name']}"
        client.upload_file(
            str(sample_data / "coco_sample" / "images" / image["file_name"]), bucket, key
        )
        sizes[f"s3://{bucket}/{key}"] = (image["width"], image["height"])
    return sizes


def test_coco_sample_from_s3_yields_one_row_per_image_with_true_sizes(
    sample_data, s3_endpoint, s3_bucket
):
    sizes = upload_coco_sample(sample_data, s3_endpoint, s3_bucket)
    boto3.client("s3", endpoint_url=s3_endpoint).put_object(
        Bucket=s3_bucket, Key="coco/broken.jpg", Body=b"not a jpeg"
    )
    spec = JobSpec.parse(
        {
            "job_id": "coco-s3",
            "inputs": [f"s3://{s3_bucket}/coco/", f"s3://{s3_bucket}/coco/absent.jpg"],
            "output": f"s3://{s3_bucket}/results",
            "storage": {"endpoint_url": s3_endpoint},
            "stage1": {"batch_size": 2},
            "refiner": {"batch_size": 2},
        }
    )
    stats = run_job(spec, no_progress_timeout_s=NO_PROGRESS_TIMEOUT_S)

    assert stats.images_in == 6
    assert (stats.images_ok, stats.images_error) == (4, 2)
    assert stats.errors_by_kind == {"missing": 1, "unreadable": 1}
    # The bundled zoo weights, not random ones: no RANDOM-weights warning, no other.
    assert stats.weights == {
        "stage1": "zoo:movenet-multipose",
        "refiner": "zoo:movenet-thunder",
    }
    assert stats.warnings == []

    table = read_annotations(JobPaths.for_spec(spec).annotations, spec.storage)
    assert table.schema.equals(ANNOTATION_SCHEMA, check_metadata=False)
    rows = {r["uri"]: r for r in table.to_pylist()}
    assert len(rows) == table.num_rows == 6
    assert sum(len(rows[uri]["persons"]) for uri in sizes) == stats.persons > 0
    for uri, (width, height) in sizes.items():
        row = rows[uri]
        assert row["status"] == "ok", row
        assert (row["width"], row["height"]) == (width, height)
        assert row["image_id"] == image_id_for(uri)
        for person in row["persons"]:
            x, y, w, h = person["box_xywh"]
            assert x >= 0 and y >= 0 and x + w <= width and y + h <= height
            assert len(person["keypoints"]) == 51
            assert 0 < person["pose_score"] <= 1 and 0 < person["box_score"] <= 1
    assert rows[f"s3://{s3_bucket}/coco/absent.jpg"]["error_kind"] == "missing"
    assert rows[f"s3://{s3_bucket}/coco/broken.jpg"]["error_kind"] == "unreadable"

    fs = s3fs.S3FileSystem(endpoint_url=s3_endpoint)
    root = f"{s3_bucket}/results/coco-s3"
    written = json.loads(fs.cat(f"{root}/stats.json"))
    assert written["images_in"] == written["images_ok"] + written["images_error"] == 6
    assert "Operator" in written["ray_data_stats"]
    assert fs.exists(f"{root}/spec.yaml") and fs.exists(f"{root}/stats.parquet")
    with fs.open(f"{root}/stats.parquet", "rb") as fh:
        assert pq.read_table(fh).column("images_in").to_pylist() == [6]
    files = sorted(fs.find(f"{root}/annotations"))
    assert files and all("/annotations/run-000-part-" in f for f in files)


def test_rerun_with_fewer_inputs_counts_only_the_inputs(tmp_path):
    samples = sorted((REPO_ROOT / "jobs" / "samples").glob("*.jpg"))[:3]
    first = JobSpec.parse(
        {"job_id": "shrink", "inputs": [str(p) for p in samples], "output": str(tmp_path)}
    )
    assert run_job(first, no_progress_timeout_s=NO_PROGRESS_TIMEOUT_S).images_ok == 3
    second = JobSpec.parse(
        {**first.model_dump(mode="json"), "inputs": [str(p) for p in samples[:2]]}
    )
    stats = run_job(second, no_progress_timeout_s=NO_PROGRESS_TIMEOUT_S)
    assert (stats.images_in, stats.images_ok, stats.images_error, stats.images_this_run) == (
        2,
        2,
        0,
        0,
    )
    assert any("no longer among the inputs" in w for w in stats.warnings)
    assert not any(w.startswith("[internal]") for w in stats.warnings)
