"""`detpose eval` end to end on the real COCO, OCHuman and CrowdPose samples."""

from __future__ import annotations

import contextlib
import io
import json
import shutil

import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from tests.helpers import REPO_ROOT, run_cli

DATA = REPO_ROOT / "tests" / "data"


def eval_cli(tmp_path, sample: str, *extra: str):
    out = tmp_path / "eval"
    result = run_cli(
        "eval",
        "--annotations",
        str(DATA / sample / "annotations.json"),
        *extra,
        "--output",
        str(out),
        "--no-progress-timeout",
        "300",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads((out / "eval.json").read_text()), out, result.stdout


def pycocotools_ap(annotations, results_path) -> list[float]:
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(annotations))
        evaluator = COCOeval(gt, gt.loadRes(str(results_path)), "keypoints")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return list(evaluator.stats)


def test_coco_filter_modes_share_stage_1_and_match_pycocotools(tmp_path):
    images = str(DATA / "coco_sample" / "images")
    record, out, stdout = eval_cli(
        tmp_path, "coco_sample", "--images", images, "--filter", "coarse,nms"
    )
    assert list(record["modes"]) == ["coarse", "nms"]
    stage1 = [s for s in record["stages"] if s["name"] == "MapBatches(CoarseStage)"]
    assert [s["rows"] for s in stage1] == [4]  # four images, once, for both modes
    for mode, report in record["modes"].items():
        stats = pycocotools_ap(
            DATA / "coco_sample" / "annotations.json", out / f"results-{mode}.json"
        )
        assert list(report["keypoints"].values()) == pytest.approx(stats, abs=1e-9)
        assert report["images"] == report["images_ok"] == 4
        assert report["ground_truth_persons"] == 12
        assert report["refinement_runs_per_person"] == report["refinement_runs"] / 12
    assert (out / "results.json").read_text() == (out / "results-coarse.json").read_text()
    # Same stage-1 output, different filters: same proposals under the same score floor;
    # only Algorithm 1 drops poses with few keypoints or recovers persons.
    coarse, nms = record["modes"]["coarse"], record["modes"]["nms"]
    assert coarse["proposals"] == nms["proposals"] > 0
    assert coarse["dropped_low_score"] == nms["dropped_low_score"]
    assert nms["dropped_few_keypoints"] == nms["recovered"] == 0
    for report in (coarse, nms):
        assert report["persons"] == report["accepted"] + report["recovered"] > 0
    assert "coarse" in stdout and "nms" in stdout and "runs/person" in stdout


def test_ochuman_with_ground_truth_boxes(tmp_path):
    images = str(DATA / "ochuman_sample" / "images")
    record, out, _ = eval_cli(tmp_path, "ochuman_sample", "--images", images, "--gt-boxes")
    (report,) = record["modes"].values()
    assert list(record["modes"]) == ["given"]
    assert report["persons"] == report["proposals"] == report["accepted"] == 5
    assert report["refinement_runs_per_person"] == 1.0
    assert not [s for s in record["stages"] if "CoarseStage" in s["name"]]
    stats = pycocotools_ap(DATA / "ochuman_sample" / "annotations.json", out / "results.json")
    assert list(report["keypoints"].values()) == pytest.approx(stats, abs=1e-9)


def test_crowdpose_levels_and_scoring_an_existing_job(tmp_path):
    images = str(DATA / "crowdpose_sample" / "images")
    record, _, _ = eval_cli(
        tmp_path, "crowdpose_sample", "--images", images, "--dataset", "crowdpose"
    )
    (report,) = record["modes"].values()
    assert set(report["keypoints_by_crowd"]) <= {"easy", "medium", "hard"}
    assert report["keypoints_by_crowd"] and -1.0 <= report["keypoints"]["AP"] <= 1.0
    # The default (zoo) models on photos nobody fit them to: real poses (the demo DetPoseNet
    # weights score 0.000 here). Measured 0.70; docs/evaluation.md.
    assert report["keypoints"]["AP"] >= 0.5

    job = run_cli("run", "--input", images, "--output", "out", "--job-id", "cp", cwd=tmp_path)
    assert job.returncode == 0, job.stderr[-3000:]
    scored, _, _ = eval_cli(
        tmp_path,
        "crowdpose_sample",
        "--job",
        str(tmp_path / "out" / "cp"),
        "--dataset",
        "crowdpose",
    )
    # The job ran the same models and filter on the same images: the same numbers.
    assert scored["modes"]["coarse"]["keypoints"] == report["keypoints"]
    assert scored["weights"] == record["weights"]  # sources and SHA-256, from the job's stats
    assert record["weights"]["refiner"]["sha256"]


def test_a_coco_export_of_a_job_scores_what_eval_reports(tmp_path):
    data = DATA / "coco_sample"
    job = run_cli(
        "run", "--input", str(data / "images"), "--output", "out", "--job-id", "c", cwd=tmp_path
    )
    assert job.returncode == 0, job.stderr[-3000:]
    record, _, _ = eval_cli(tmp_path, "coco_sample", "--job", str(tmp_path / "out" / "c"))
    exported = tmp_path / "export.json"
    result = run_cli(
        "export", "--job", str(tmp_path / "out" / "c"), "--format", "coco", "--out", str(exported),
        "--min-score", "0", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    export = json.loads(exported.read_text())
    gt = json.loads((data / "annotations.json").read_text())
    gt_id = {image["file_name"]: image["id"] for image in gt["images"]}
    our_name = {image["id"]: image["file_name"].rsplit("/", 1)[-1] for image in export["images"]}
    as_results = [
        {
            "image_id": gt_id[our_name[ann["image_id"]]],
            "category_id": 1,
            "keypoints": ann["keypoints"],
            "score": ann["score"],
        }
        for ann in export["annotations"]
    ]
    path = tmp_path / "export-as-results.json"
    path.write_text(json.dumps(as_results))
    stats = pycocotools_ap(data / "annotations.json", path)
    assert stats[0] == pytest.approx(record["modes"]["coarse"]["keypoints"]["AP"], abs=1e-9)


def test_images_that_fail_are_counted_and_warned_about_not_scored_silently(tmp_path):
    images = tmp_path / "images"
    shutil.copytree(DATA / "ochuman_sample" / "images", images)
    broken = sorted(images.iterdir())[0]
    broken.write_bytes(b"not a jpeg")
    out = tmp_path / "eval"
    result = run_cli(
        "eval", "--annotations", str(DATA / "ochuman_sample" / "annotations.json"),
        "--images", str(images), "--gt-boxes", "--output", str(out), cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    (report,) = json.loads((out / "eval.json").read_text())["modes"].values()
    assert (report["images"], report["images_ok"]) == (3, 2)
    assert report["errors_by_kind"] == {"unreadable": 1}
    assert "WARNING: given: 1 of 3 images are error rows ({'unreadable': 1})" in result.stderr
