"""Exports and imports against their real consumers and stores: pycocotools (load,
COCOeval), the training loader (``load_coco_keypoints``) and S3 (moto on loopback), on the
job built from the real COCO excerpt."""

from __future__ import annotations

import contextlib
import io
import json

import boto3
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from jobs.cli import main
from model.training.datasets import load_coco_keypoints, read_image_rgb
from pipeline.formats import ImageNames, export_job, import_review
from pipeline.store.storage import image_id_for
from schemas.output import ANNOTATION_SCHEMA
from tests.export_fixtures import COCO_SAMPLE, expected_images, make_job, sample_rows


def _quiet(fn, *args):
    with contextlib.redirect_stdout(io.StringIO()):
        return fn(*args)


def test_coco_export_is_ground_truth_that_the_same_rows_score_ap_1(tmp_path):
    rows = sample_rows()
    job = make_job(tmp_path, rows)
    out = tmp_path / "person_keypoints_default.json"
    export_job(str(job), "coco", str(out))

    gt = _quiet(COCO, str(out))
    expected = expected_images(rows)
    assert sorted(gt.getImgIds()) == sorted(expected)
    assert len(gt.getAnnIds()) == sum(len(r["persons"]) for r in expected.values()) > 10
    assert gt.loadCats(gt.getCatIds())[0]["keypoints"][5] == "left_shoulder"

    results = [
        {
            "image_id": image_id,
            "category_id": 1,
            "keypoints": person["keypoints"],  # the job's own x, y, score
            "score": person["pose_score"],
        }
        for image_id, row in expected.items()
        for person in row["persons"]
    ]
    dt = _quiet(gt.loadRes, results)
    evaluation = COCOeval(gt, dt, "keypoints")
    _quiet(evaluation.evaluate)
    _quiet(evaluation.accumulate)
    _quiet(evaluation.summarize)
    ap, ar = evaluation.stats[0], evaluation.stats[5]
    assert ap == pytest.approx(1.0) and ar == pytest.approx(1.0)


@pytest.mark.parametrize("fmt", ["cvat", "labelstudio"])
def test_an_imported_review_is_read_by_the_training_loader(tmp_path, fmt):
    rows = sample_rows()
    job = make_job(tmp_path, rows)
    root = str(COCO_SAMPLE / "images")
    names = ImageNames(root)
    review = tmp_path / f"review.{fmt}"
    export_job(str(job), fmt, str(review), names=names)
    out = tmp_path / "train.json"
    import_review(fmt, str(review), str(out), names=names)

    records = {r.uri: r for r in load_coco_keypoints(str(out), root)}
    expected = {r["uri"]: r for r in expected_images(rows).values()}
    assert set(records) == set(expected)  # file names resolve under --images ROOT
    for uri, row in expected.items():
        record = records[uri]
        assert (record.width, record.height) == (row["width"], row["height"])
        assert len(record.kpts_xyv) == len(row["persons"])
        for kpts, person in zip(record.kpts_xyv, row["persons"], strict=True):
            want = np.asarray(person["keypoints"]).reshape(17, 3)
            labelled = kpts[:, 2] > 0
            assert labelled.tolist() == (want[:, 2] >= 0.2).tolist()
            inside = labelled & (want[:, 0] >= 0) & (want[:, 1] <= row["height"])
            np.testing.assert_allclose(kpts[inside, :2], want[inside, :2], atol=0.01)
    real = records[str(COCO_SAMPLE / "images" / "000000000785.jpg")]
    assert read_image_rgb(real.uri).shape[:2] == (real.height, real.width)
    assert json.loads(out.read_text())["categories"][0]["name"] == "person"


def test_export_and_import_read_and_write_s3(s3_endpoint, s3_bucket, monkeypatch, capsys):
    rows = [
        {**row, "uri": row["uri"].replace(str(COCO_SAMPLE), f"s3://{s3_bucket}/coco")}
        for row in sample_rows()
    ]
    for row in rows:
        row["image_id"] = image_id_for(row["uri"])
    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows, schema=ANNOTATION_SCHEMA), buf)
    client = boto3.client("s3", endpoint_url=s3_endpoint)
    key = "out/job/annotations/run-000-part-000000-abc.parquet"
    client.put_object(Bucket=s3_bucket, Key=key, Body=buf.getvalue())
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)

    job, review = f"s3://{s3_bucket}/out/job", f"s3://{s3_bucket}/review/tasks.json"
    root = f"s3://{s3_bucket}/coco/images"
    assert main(["export", "--job", job, "--format", "labelstudio", "--out", review]) == 0
    listed = client.list_objects_v2(Bucket=s3_bucket, Prefix="review/")["Contents"]
    assert sorted(o["Key"] for o in listed) == [
        "review/tasks.json",
        "review/tasks.label_config.xml",
    ]
    train = f"s3://{s3_bucket}/train/person_keypoints.json"
    argv = ["import", "--format", "labelstudio", review, "--out", train, "--image-root", root]
    assert main(argv) == 0
    assert "imported 6 images, 13 persons" in capsys.readouterr().out
    body = client.get_object(Bucket=s3_bucket, Key="train/person_keypoints.json")["Body"].read()
    coco = json.loads(body)
    assert {i["id"] for i in coco["images"]} == set(expected_images(rows))
    assert "000000000785.jpg" in {i["file_name"] for i in coco["images"]}
