"""``detpose review`` with the job, its images and the gallery all on S3 (moto on loopback)."""

from __future__ import annotations

import io
import re

import boto3
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from jobs.cli import main
from schemas.output import ANNOTATION_SCHEMA
from tests.helpers import synthetic_jpeg
from tests.review_fixtures import error_row, ok_row, person


def test_review_reads_and_writes_s3_with_settings_from_the_environment(
    s3_endpoint, s3_bucket, monkeypatch, capsys
):
    client = boto3.client("s3", endpoint_url=s3_endpoint)
    rows = []
    for i in range(5):
        key = f"images/img_{i}.jpg"
        client.put_object(Bucket=s3_bucket, Key=key, Body=synthetic_jpeg(i, (240, 180)))
        rows.append(
            ok_row(f"s3://{s3_bucket}/{key}", (240, 180), [person((20, 20, 80, 140), 0.1 * i)])
        )
    rows.append(
        ok_row(f"s3://{s3_bucket}/images/deleted.jpg", (240, 180), [person((0, 0, 9, 9), 0)])
    )
    rows.append(error_row(f"s3://{s3_bucket}/images/bad.jpg", "unreadable", "not an image"))
    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows, schema=ANNOTATION_SCHEMA), buf)
    client.put_object(
        Bucket=s3_bucket,
        Key="out/job/annotations/run-000-part-000000-abc.parquet",
        Body=buf.getvalue(),
    )
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)

    job, out = f"s3://{s3_bucket}/out/job", f"s3://{s3_bucket}/review/job"
    assert main(["review", "--job", job, "--out", out, "--limit", "4"]) == 0
    assert f"gallery in {out}/index.html" in capsys.readouterr().out

    index = client.get_object(Bucket=s3_bucket, Key="review/job/index.html")
    assert index["ContentType"].startswith("text/html")  # a browser shows it, not downloads it
    page = index["Body"].read().decode()
    srcs = re.findall(r'<img src="([^"]+)"', page)
    assert len(srcs) == 4
    for src in srcs:
        thumb = client.get_object(Bucket=s3_bucket, Key=f"review/job/{src}")
        assert thumb["ContentType"] == "image/jpeg"
        assert Image.open(io.BytesIO(thumb["Body"].read())).format == "JPEG"
    # The lowest scores first: the deleted image (0.0, a placeholder), then 0.0, 0.1, 0.2.
    uris = re.findall(r'data-uri="([^"]+)"', page)
    assert uris[0].endswith("deleted.jpg") and uris[1:] == [
        f"s3://{s3_bucket}/images/img_{i}.jpg" for i in range(3)
    ]
    assert "missing: no such object" in page
    assert "not an image" in page
