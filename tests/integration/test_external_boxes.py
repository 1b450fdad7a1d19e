"""A job with ``stage1.boxes``: another detector's boxes replace stage 1's proposals."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pipeline.graph.job import run_job
from pipeline.store.sink import JobPaths, read_annotations
from schemas.spec import JobSpec
from tests.conftest import NO_PROGRESS_TIMEOUT_S

pytestmark = pytest.mark.usefixtures("ray_local")


def test_persons_come_from_the_given_boxes_and_every_image_keeps_its_row(tmp_path, sample_data):
    coco = sample_data / "coco_sample"
    ann = json.loads((coco / "annotations.json").read_text())
    names = {image["id"]: image["file_name"] for image in ann["images"]}
    without = ann["images"][0]["file_name"]  # no detections for this image: no persons
    dets = [
        {"file_name": names[a["image_id"]], "category_id": 1, "bbox": a["bbox"], "score": 0.9}
        for a in ann["annotations"]
        if names[a["image_id"]] != without
    ]
    dets.append({**dets[0], "category_id": 3, "bbox": [0, 0, 50, 50]})  # not a person
    (tmp_path / "dets.json").write_text(json.dumps(dets))
    spec = JobSpec.parse(
        {
            "job_id": "ext",
            "inputs": [str(coco / "images")],
            "output": str(tmp_path / "out"),
            "stage1": {"boxes": str(tmp_path / "dets.json")},
        }
    )
    stats = run_job(spec, no_progress_timeout_s=NO_PROGRESS_TIMEOUT_S)
    assert (stats.images_in, stats.images_ok) == (4, 4)
    assert stats.proposals == len(dets) - 1
    assert len(stats.runs[-1].fingerprint["stage1_boxes"]["sha256"]) == 64

    rows = read_annotations(JobPaths.for_spec(spec).annotations, spec.storage).to_pylist()
    assert len(rows) == 4
    given: dict[str, list[list[float]]] = {}
    for d in dets[:-1]:
        given.setdefault(d["file_name"], []).append(d["bbox"])
    detected = 0
    for row in rows:
        name = row["uri"].rsplit("/", 1)[-1]
        assert row["status"] == "ok"
        if name == without:
            assert row["persons"] == [] and row["counts"]["proposals"] == 0
            continue
        assert row["counts"]["proposals"] == len(given[name])
        for p in row["persons"]:
            if p["origin"] == "detected":
                detected += 1
                distance = np.abs(np.array(given[name]) - np.array(p["box_xywh"])).max(axis=1)
                assert distance.min() < 0.05, (name, p["box_xywh"])
    assert detected > 0
