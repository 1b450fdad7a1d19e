"""Keypoint definitions and OKS against pycocotools itself on real COCO annotations."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from model.keypoints import (
    FLIP_PAIRS,
    KEYPOINT_NAMES,
    OKS_SIGMAS,
    SKELETON,
    flip_permutation,
    oks,
    oks_matrix,
    pose_oks,
)


def test_definitions_match_the_coco_category(sample_data):
    category = json.loads((sample_data / "coco_sample" / "annotations.json").read_text())[
        "categories"
    ][0]
    assert tuple(category["keypoints"]) == KEYPOINT_NAMES
    assert {tuple(sorted((a - 1, b - 1))) for a, b in category["skeleton"]} == {
        tuple(sorted(limb)) for limb in SKELETON
    }
    np.testing.assert_allclose(OKS_SIGMAS, COCOeval(iouType="keypoints").params.kpt_oks_sigmas)


def test_flip_pairs_swap_left_and_right_names():
    perm = flip_permutation()
    for i, name in enumerate(KEYPOINT_NAMES):
        swapped = name.replace("left", "#").replace("right", "left").replace("#", "right")
        assert KEYPOINT_NAMES[perm[i]] == swapped
    assert (perm[perm] == np.arange(17)).all()
    assert len(FLIP_PAIRS) == 8


def _perturbed_detections(gt: COCO, seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    dets = []
    for ann in gt.loadAnns(gt.getAnnIds()):
        for copy_index in range(3):
            kp = np.array(ann["keypoints"], dtype=np.float64).reshape(17, 3)
            kp[:, :2] += rng.normal(0.0, 2.0 + 6.0 * copy_index, size=(17, 2))
            kp[:, 2] = 1.0
            dets.append(
                {
                    "image_id": ann["image_id"],
                    "category_id": 1,
                    "keypoints": kp.reshape(-1).round(3).tolist(),
                    "score": float(rng.uniform(0.1, 1.0)),
                }
            )
    return dets


def test_oks_equals_pycocotools_compute_oks(sample_data):
    gt = COCO(str(sample_data / "coco_sample" / "annotations.json"))
    dt = gt.loadRes(copy.deepcopy(_perturbed_detections(gt, seed=7)))
    evaluator = COCOeval(gt, dt, "keypoints")
    evaluator._prepare()
    compared = 0
    for image_id in gt.getImgIds():
        expected = np.asarray(evaluator.computeOks(image_id, 1))  # [D, G]
        gts = evaluator._gts[image_id, 1]
        dts = sorted(evaluator._dts[image_id, 1], key=lambda d: -d["score"])
        dt_kpts = np.array([d["keypoints"] for d in dts]).reshape(len(dts), 17, 3)
        for g, ann in enumerate(gts):
            ours = oks(
                np.array(ann["keypoints"]).reshape(17, 3),
                ann["area"],
                dt_kpts,
                box_gt_xywh=np.array(ann["bbox"]),
            )
            np.testing.assert_allclose(ours, expected[:, g], atol=1e-6, rtol=0)
            compared += len(ours)
    # Includes the two annotations without keypoints (pycocotools' box-distance branch).
    # 3 detections per person; persons per image 1, 3, 5, 5 → sum of 3 * G_i^2 pairs.
    assert compared == 3 * (1 + 9 + 25 + 25)


def test_oks_is_one_for_identical_poses_and_falls_with_distance():
    gt = np.zeros((17, 3))
    gt[:, 0], gt[:, 1], gt[:, 2] = np.arange(17) * 10.0, 50.0, 2
    shifted = [gt[:, :2] + d for d in (0.0, 2.0, 8.0)]
    values = oks(gt, area_gt=5000.0, kpts_dt_xy=np.stack(shifted))
    assert values[0] == pytest.approx(1.0)
    assert values[0] > values[1] > values[2] > 0.0


def test_oks_matrix_matches_oks_and_ignores_missing_reference_keypoints():
    rng = np.random.default_rng(0)
    a = rng.uniform(0, 100, (3, 17, 3))
    a[..., 2] = (rng.uniform(size=(3, 17)) > 0.3).astype(float)
    b = a[:, :, :2] + rng.normal(0, 3, (3, 17, 2))
    areas = np.array([900.0, 2500.0, 400.0])
    mat = oks_matrix(a, areas, b)
    for i in range(3):
        np.testing.assert_allclose(mat[i], oks(a[i], areas[i], b), atol=1e-12)
    empty = np.zeros((1, 17, 3))
    assert oks_matrix(empty, np.array([100.0]), b).tolist() == [[0.0, 0.0, 0.0]]


def test_pose_oks_is_symmetric_and_one_for_identical_poses():
    rng = np.random.default_rng(1)
    a = rng.uniform(0, 200, (4, 17, 3))
    a[..., 2] = (rng.uniform(size=(4, 17)) > 0.3).astype(float)
    b = a.copy()
    b[..., :2] += rng.normal(0, 4, (4, 17, 2))
    np.testing.assert_allclose(pose_oks(a, b), pose_oks(b, a).T, atol=1e-12)
    np.testing.assert_allclose(np.diag(pose_oks(a, a)), 1.0)


def test_pose_oks_compares_only_shared_keypoints_at_the_larger_scale():
    whole = np.zeros((17, 3))
    whole[:, 0], whole[:, 1], whole[:, 2] = np.arange(17) * 10.0, np.arange(17) * 20.0, 1.0
    fragment = whole.copy()
    fragment[7:] = 0.0  # the first seven keypoints only, the rest missing at (0, 0)
    fragment[:7, :2] += 3.0
    area = 160.0 * 320.0  # the whole pose's keypoint extent, larger than the fragment's
    expected = oks(whole[:7] * [1, 1, 2], area, fragment[None, :7, :2], OKS_SIGMAS[:7])[0]
    assert pose_oks(whole[None], fragment[None])[0, 0] == pytest.approx(expected)
    assert pose_oks(fragment[None], whole[None])[0, 0] == pytest.approx(expected)
    # The reference-only OKS counts the fragment's missing keypoints as misses.
    assert oks_matrix(whole[None], np.array([area]), fragment[None])[0, 0] < 0.5 < expected


def test_pose_oks_of_poses_without_a_shared_keypoint_is_zero():
    upper, lower = np.zeros((1, 17, 3)), np.zeros((1, 17, 3))
    upper[0, :5] = [10.0, 10.0, 1.0]
    lower[0, 11:] = [10.0, 12.0, 1.0]
    assert pose_oks(upper, lower).tolist() == [[0.0]]
