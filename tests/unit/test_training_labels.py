"""`detpose train --labels`: a job folder's poses as pseudo-labels, or a reviewed file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from jobs.cli import main
from model.networks.detposenet import load_checkpoint
from pipeline.training.labels import job_pseudo_labels, labels_from
from tests.export_fixtures import make_job, sample_rows


def _real_rows() -> list[dict]:
    """The export fixture's rows whose images exist (the four COCO sample photos), and its
    error row (which yields no labels)."""
    return [r for r in sample_rows() if r["status"] != "ok" or Path(r["uri"]).exists()]


def test_job_poses_above_the_score_become_labels_in_image_pixels(tmp_path) -> None:
    rows = _real_rows()
    job = make_job(tmp_path, rows)
    labels = job_pseudo_labels(str(job), min_score=0.5)
    by_uri = {r.uri: r for r in labels.records}
    ok = [r for r in rows if r["status"] == "ok"]
    assert set(by_uri) == {r["uri"] for r in ok}  # the job's own image URIs
    kept = 0
    for row in ok:
        record = by_uri[row["uri"]]
        persons = [p for p in row["persons"] if p["pose_score"] >= 0.5]
        assert len(record.kpts_xyv) == len(persons)
        for person, kpts in zip(persons, record.kpts_xyv, strict=True):
            xys = np.asarray(person["keypoints"]).reshape(17, 3)
            confident = xys[:, 2] >= 0.5
            np.testing.assert_array_equal(kpts[:, 2] > 0, confident)  # the rest: unlabelled
            np.testing.assert_allclose(kpts[confident, :2], xys[confident, :2], atol=0.01)
            kept += 1
    assert kept > 0 and "pseudo-labels" in labels.description
    # A lower threshold keeps the occluded keypoints (scored 0.31) too.
    lower = job_pseudo_labels(str(job), min_score=0.3)
    assert sum(int((r.kpts_xyv[..., 2] > 0).sum()) for r in lower.records) > sum(
        int((r.kpts_xyv[..., 2] > 0).sum()) for r in labels.records
    )


def test_a_review_file_reads_names_against_its_image_root(tmp_path, sample_data) -> None:
    coco = sample_data / "coco_sample"
    labels = labels_from(str(coco / "annotations.json"), str(coco / "images"))
    assert labels.records and all(Path(r.uri).exists() for r in labels.records)
    # Absolute names (an import without --image-root) are used as they are.
    data = json.loads((coco / "annotations.json").read_text())
    for image in data["images"]:
        image["file_name"] = str(coco / "images" / image["file_name"])
    absolute = tmp_path / "reviewed.json"
    absolute.write_text(json.dumps(data))
    again = labels_from(str(absolute))
    assert [r.uri for r in again.records] == [r.uri for r in labels.records]


def test_train_distils_a_refiner_from_a_jobs_pseudo_labels(tmp_path) -> None:
    job = make_job(tmp_path, _real_rows())
    out = tmp_path / "student.pt"
    bundled = Path("model/weights/refiner_tiny.pt").resolve()
    code = main(
        ["train", "refiner", "--labels", str(job), "--init", str(bundled), "--out", str(out),
         "--steps", "2", "--batch-size", "2", "--loader-workers", "0", "--log-every", "1"]
    )  # fmt: skip
    assert code == 0
    _, cfg, record = load_checkpoint(out, "refiner")
    _, bundled_cfg, _ = load_checkpoint(bundled, "refiner")
    assert cfg.model_copy(update={"batch_size": 0}) == bundled_cfg.model_copy(
        update={"batch_size": 0}
    )  # --init keeps the network it starts from
    assert record["init"] == str(bundled) and len(record["init_sha256"]) == 64
    assert "pseudo-labels of job" in record["dataset"]


@pytest.mark.parametrize(
    "flags, message",
    [
        ([], "give --annotations"),
        (["--labels", "JOB", "--images", "x"], "--images applies to a review file"),
        (["--annotations", "a.json"], "one image root per annotation file"),
        (["--labels", "JOB", "--min-score", "1.5"], "--min-score"),
    ],
)
def test_train_refuses_unusable_data_flags(tmp_path, caplog, flags, message) -> None:
    flags = [str(tmp_path / "job") if f == "JOB" else f for f in flags]
    code = main(["train", "refiner", "--out", str(tmp_path / "o.pt"), *flags])
    assert code == 2 and message in caplog.text
