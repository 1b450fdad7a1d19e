"""End to end through pycocotools: the job's coordinates land where the ground truth is.

The bundled demonstration weights were fitted to these very images, so a high AP here is
no accuracy claim. It proves the whole chain (decode, letterbox, stage 1, filtering, crops,
refinement, decoding, mapping back to original pixels, Parquet) keeps coordinates right:
a half-pixel shift, a swapped axis or a lost scale factor drops this AP sharply.
"""

from __future__ import annotations

import contextlib
import io

import pyarrow.parquet as pq
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from pipeline.graph.job import run_job
from pipeline.graph.plain_loop import run_plain_loop
from pipeline.store.sink import JobPaths, read_annotations
from schemas.spec import JobSpec
from tests.conftest import NO_PROGRESS_TIMEOUT_S

pytestmark = pytest.mark.usefixtures("ray_local")


def keypoint_ap(gt: COCO, rows: list[dict]) -> float:
    name_to_id = {image["file_name"]: image["id"] for image in gt.dataset["images"]}
    results = [
        {
            "image_id": name_to_id[row["uri"].rsplit("/", 1)[-1]],
            "category_id": 1,
            "keypoints": person["keypoints"],
            "score": person["box_score"] * person["pose_score"],
        }
        for row in rows
        for person in row["persons"]
    ]
    with contextlib.redirect_stdout(io.StringIO()):
        evaluator = COCOeval(gt, gt.loadRes(results), "keypoints")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return float(evaluator.stats[0])


@pytest.mark.parametrize(
    "max_side, flip_test", [(1024, False), (320, True)], ids=["full-size", "smaller-with-flip-test"]
)
def test_bundled_weights_recover_their_training_poses(sample_data, tmp_path, max_side, flip_test):
    spec = JobSpec.parse(
        {
            "job_id": "coco",
            "inputs": [str(sample_data / "coco_sample" / "images")],
            "output": str(tmp_path),
            "decode": {"max_side": max_side},
            "flip_test": flip_test,
            "stage1": {"model": "detposenet"},
            "refiner": {"model": "detposenet"},
        }
    )
    stats = run_job(spec, no_progress_timeout_s=NO_PROGRESS_TIMEOUT_S)
    assert stats.weights == {
        "stage1": "bundled:stage1_tiny.pt",
        "refiner": "bundled:refiner_tiny.pt",
    }
    rows = read_annotations(JobPaths.for_spec(spec).annotations, spec.storage).to_pylist()
    # Every detected person has a real pose score: mean keypoint score above the floor.
    pose_scores = [person["pose_score"] for row in rows for person in row["persons"]]
    assert pose_scores and all(0.2 < score <= 1 for score in pose_scores)
    gt = COCO(str(sample_data / "coco_sample" / "annotations.json"))
    ap = keypoint_ap(gt, rows)
    assert ap >= 0.6, f"keypoint AP {ap:.3f} through the whole pipeline"
    assert stats.refinement_runs == (2 if flip_test else 1) * stats.persons > 0
    # The benchmark's baseline does the same work: same rows, same accuracy, without Ray.
    uris = sorted(row["uri"] for row in rows)
    run_plain_loop(spec, uris, tmp_path / "plain")
    plain = pq.read_table(tmp_path / "plain").to_pylist()
    assert sorted(row["uri"] for row in plain) == uris
    assert keypoint_ap(gt, plain) == pytest.approx(ap, abs=0.02)
