"""Scoring with pycocotools: the ground truth scores 1.0, our numbers are pycocotools' numbers."""

from __future__ import annotations

import contextlib
import copy
import io
import json

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from model.evaluation.coco import (
    CROWDPOSE_SIGMAS,
    crowd_level_image_ids,
    evaluate_boxes,
    evaluate_keypoints,
    ground_truth_as_results,
    ground_truth_persons,
    load_ground_truth,
    score,
    to_crowdpose_keypoints,
)
from model.evaluation.results import collapsed_pairs, rows_to_results
from tests.helpers import REPO_ROOT

DATA = REPO_ROOT / "tests" / "data"


def ground_truth(name: str, dataset: str = "coco") -> COCO:
    data = json.loads((DATA / name / "annotations.json").read_text())
    return load_ground_truth(data, dataset, name)


def direct_keypoint_stats(gt: COCO, results: list[dict], sigmas=None) -> list[float]:
    """pycocotools called by hand, as a user would."""
    with contextlib.redirect_stdout(io.StringIO()):
        evaluator = COCOeval(gt, gt.loadRes(copy.deepcopy(results)), "keypoints")
        if sigmas is not None:
            evaluator.params.kpt_oks_sigmas = sigmas
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return list(evaluator.stats)


@pytest.mark.parametrize("name", ["coco_sample", "ochuman_sample"])
def test_the_ground_truth_as_predictions_scores_one(name):
    gt = ground_truth(name)
    keypoints, boxes = ground_truth_as_results(gt)
    assert len(keypoints) == ground_truth_persons(gt) > 0
    assert evaluate_keypoints(gt, keypoints, "coco")["AP"] == 1.0
    assert evaluate_boxes(gt, boxes)["AP"] == 1.0


def test_known_perturbations_score_exactly_what_pycocotools_gives():
    gt = ground_truth("coco_sample")
    keypoints, _ = ground_truth_as_results(gt)
    rng = np.random.default_rng(0)
    perturbed = []
    for i, r in enumerate(keypoints):
        kpts = np.asarray(r["keypoints"], np.float64).reshape(-1, 3)
        kpts[:, :2] += rng.normal(0, 2.0 + i, size=(17, 2))  # worse for later persons
        kpts[:, 2] = 1.0
        perturbed.append({**r, "keypoints": kpts.reshape(-1).tolist(), "score": 1.0 - 0.01 * i})
    ours = evaluate_keypoints(gt, perturbed[:-2], "coco")  # two persons missed
    theirs = direct_keypoint_stats(gt, perturbed[:-2])
    assert list(ours.values()) == theirs
    assert 0.0 < ours["AP"] < 1.0
    assert list(ours) == ["AP", "AP50", "AP75", "APm", "APl", "AR", "AR50", "AR75", "ARm", "ARl"]


def test_crowdpose_mapping_known_answer():
    coco = np.zeros((17, 3))
    coco[:, 0], coco[:, 1], coco[:, 2] = np.arange(17), 100 + np.arange(17), 0.5
    coco[5, 2], coco[6, 2] = 0.9, 0.3
    out = to_crowdpose_keypoints(coco)
    assert out.shape == (14, 3)
    np.testing.assert_array_equal(out[:12], coco[5:])  # limbs: COCO 5..16 in order
    np.testing.assert_array_equal(out[12], coco[0])  # head ← nose
    np.testing.assert_array_equal(out[13], [5.5, 105.5, 0.3])  # neck: shoulders' midpoint
    assert len(CROWDPOSE_SIGMAS) == 14 and CROWDPOSE_SIGMAS[-1] == 0.079


def test_crowdpose_scores_by_crowd_level_equal_pycocotools_with_its_sigmas():
    gt = ground_truth("crowdpose_sample", "crowdpose")
    assert all("area" in a for a in gt.dataset["annotations"])  # filled from the box
    # Predictions in COCO-17 built from the 14-point truth: limbs and head exact, the neck
    # becomes the shoulders' midpoint, so AP stays below 1 where the two differ.
    results, expected_14 = [], []
    for a in gt.dataset["annotations"]:
        if a["iscrowd"] or not a["num_keypoints"]:
            continue
        crowd = np.asarray(a["keypoints"], np.float64).reshape(14, 3)
        coco = np.zeros((17, 3))
        coco[5:], coco[0] = crowd[:12], crowd[12]
        coco[:, 2] = 1.0
        r = {"image_id": a["image_id"], "category_id": 1, "score": 1.0}
        results.append({**r, "keypoints": coco.reshape(-1).tolist()})
        expected_14.append({**r, "keypoints": to_crowdpose_keypoints(coco).reshape(-1).tolist()})
    scores = score(gt, results, [], "crowdpose")
    assert list(scores.keypoints.values()) == direct_keypoint_stats(
        gt, expected_14, CROWDPOSE_SIGMAS
    )
    levels = crowd_level_image_ids(gt)
    assert sorted(i for ids in levels.values() for i in ids) == sorted(gt.getImgIds())
    assert set(scores.by_crowd) == {name for name, ids in levels.items() if ids}


def test_wrong_dataset_for_the_file_is_named():
    data = json.loads((DATA / "crowdpose_sample" / "annotations.json").read_text())
    with pytest.raises(ValueError, match="14 keypoints; a coco file has 17"):
        load_ground_truth(data, "coco", "crowd.json")


def test_rows_become_results_with_box_times_pose_score():
    person = {
        "box_xywh": [1.0, 2.0, 3.0, 4.0],
        "box_score": 0.5,
        "keypoints": [float(v) for v in range(51)],
        "pose_score": 0.8,
        "origin": "detected",
    }
    rows = [
        {"uri": "a.jpg", "status": "ok", "persons": [person, person]},
        {"uri": "b.jpg", "status": "error", "persons": []},
        {"uri": "not-in-gt.jpg", "status": "ok", "persons": [person]},
    ]
    keypoints, boxes = rows_to_results(rows, {"a.jpg": 7, "b.jpg": 8})
    assert len(keypoints) == len(boxes) == 2
    assert keypoints[0] == {
        "image_id": 7,
        "category_id": 1,
        "score": pytest.approx(0.4),
        "keypoints": [float(v) for v in range(51)],
    }
    assert boxes[1]["bbox"] == [1.0, 2.0, 3.0, 4.0]
    by_box, _ = rows_to_results(rows, {"a.jpg": 7}, rank_by="box")
    by_pose, _ = rows_to_results(rows, {"a.jpg": 7}, rank_by="pose")
    assert (by_box[0]["score"], by_pose[0]["score"]) == (0.5, 0.8)


def test_found_persons_are_the_ones_pycocotools_matches_at_oks_half():
    gt = ground_truth("coco_sample")
    keypoints, boxes = ground_truth_as_results(gt)
    assert score(gt, keypoints, boxes, "coco").found == ground_truth_persons(gt)
    # Moving one person's keypoints far away loses exactly that person.
    moved = copy.deepcopy(keypoints)
    moved[0]["keypoints"] = [
        v + 500.0 if i % 3 < 2 else v for i, v in enumerate(moved[0]["keypoints"])
    ]
    assert score(gt, moved, boxes, "coco").found == ground_truth_persons(gt) - 1
    assert score(gt, keypoints[1:], boxes, "coco").found == ground_truth_persons(gt) - 1


def test_collapsed_pairs_count_two_persons_of_one_image_on_one_body():
    gt = ground_truth("coco_sample")
    keypoints, _ = ground_truth_as_results(gt)
    assert collapsed_pairs(keypoints) == 0  # labelled people are distinct bodies
    copy_of_first = {**keypoints[0], "keypoints": [v + 0.5 for v in keypoints[0]["keypoints"]]}
    other_image = {**copy_of_first, "image_id": -1}
    assert collapsed_pairs([*keypoints, copy_of_first]) == 1
    assert collapsed_pairs([*keypoints, other_image]) == 0
