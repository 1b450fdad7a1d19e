"""Scoring predictions with pycocotools: COCO, OCHuman and CrowdPose keypoint AP, box AP.

Predictions arrive as plain dicts in COCO's results format (``image_id``, ``category_id``,
``keypoints`` as 17 × (x, y, score) or ``bbox`` as [x, y, w, h], ``score``). The functions
here only prepare the ground truth and the results for pycocotools and read its numbers
back: pycocotools does the scoring, so our AP is its AP.

CrowdPose has 14 keypoints (12 limb joints, head, neck) and no ``area``. Predictions keep
their 17 COCO keypoints until scoring; :func:`to_crowdpose_keypoints` maps them: the 12
limb joints are COCO's keypoints 5–16 in the same order, ``head`` is COCO's nose and
``neck`` the midpoint of the two shoulders (score: the lower shoulder score). Ground-truth
``area`` is taken as the box area (w × h).
"""

from __future__ import annotations

import contextlib
import copy
import io
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from model.keypoints import NUM_KEYPOINTS, OKS_SIGMAS

Dataset = Literal["coco", "ochuman", "crowdpose"]
DATASETS: tuple[str, ...] = ("coco", "ochuman", "crowdpose")
# COCOeval.stats, in order, under the names the literature uses.
KEYPOINT_STAT_NAMES = ("AP", "AP50", "AP75", "APm", "APl", "AR", "AR50", "AR75", "ARm", "ARl")
BOX_STAT_NAMES = (
    "AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl"
)  # fmt: skip
CROWDPOSE_NUM_KEYPOINTS = 14
# CrowdPose's sigmas: COCO's for the 12 limb joints, 0.079 for head and neck.
CROWDPOSE_SIGMAS = np.concatenate([OKS_SIGMAS[5:], [0.079, 0.079]])
# Crowd index ranges of CrowdPose's easy / medium / hard splits.
CROWD_LEVELS = {"easy": (0.0, 0.1), "medium": (0.1, 0.8), "hard": (0.8, 1.0 + 1e-9)}
_NOSE, _LEFT_SHOULDER, _RIGHT_SHOULDER = 0, 5, 6


class GroundTruthError(ValueError):
    """An annotation file that cannot be scored against; the message names it."""


def load_ground_truth(annotations: Mapping[str, Any], dataset: Dataset, name: str) -> COCO:
    """A pycocotools ``COCO`` for ``annotations`` (a parsed COCO-format file).

    CrowdPose files lack ``area``; it is set to the box area so COCOeval's area ranges work.
    """
    data = copy.deepcopy(dict(annotations))
    for key in ("images", "annotations", "categories"):
        if key not in data:
            raise GroundTruthError(f"{name}: not a COCO-format file (no {key!r})")
    expected = CROWDPOSE_NUM_KEYPOINTS if dataset == "crowdpose" else NUM_KEYPOINTS
    for ann in data["annotations"]:
        if len(ann.get("keypoints", [])) != 3 * expected:
            raise GroundTruthError(
                f"{name}: annotation {ann.get('id')} has {len(ann.get('keypoints', [])) // 3} "
                f"keypoints; a {dataset} file has {expected} (wrong --dataset?)"
            )
        if "area" not in ann:
            ann["area"] = float(ann["bbox"][2] * ann["bbox"][3])
    gt = COCO()
    gt.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
    return gt


def to_crowdpose_keypoints(kpts_xys: np.ndarray) -> np.ndarray:
    """COCO-17 ``[..., 17, 3]`` (x, y, score) → CrowdPose-14 ``[..., 14, 3]`` (see module doc)."""
    kpts_xys = np.asarray(kpts_xys, dtype=np.float64)
    head = kpts_xys[..., _NOSE, :]
    left, right = kpts_xys[..., _LEFT_SHOULDER, :], kpts_xys[..., _RIGHT_SHOULDER, :]
    neck = np.concatenate(
        [(left[..., :2] + right[..., :2]) / 2.0, np.minimum(left[..., 2:], right[..., 2:])], -1
    )
    return np.concatenate([kpts_xys[..., 5:, :], head[..., None, :], neck[..., None, :]], -2)


def _summarise(evaluator: COCOeval, names: Sequence[str]) -> dict[str, float]:
    with contextlib.redirect_stdout(io.StringIO()):
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return {name: float(value) for name, value in zip(names, evaluator.stats, strict=True)}


@dataclass(frozen=True)
class Scores:
    """pycocotools' summary of one evaluation; ``by_crowd`` for CrowdPose's levels;
    ``found``: ground-truth persons matched by a prediction at OKS 0.5 (``FOUND_AT_OKS``)."""

    keypoints: dict[str, float]
    boxes: dict[str, float]
    by_crowd: dict[str, dict[str, float]]
    found: int = 0


# A labelled person counts as found when COCOeval matches a prediction to it at this OKS.
FOUND_AT_OKS = 0.5


def _found_ground_truth(evaluator: COCOeval) -> int:
    """Persons COCOeval scores against (not ignored) that it matched at ``FOUND_AT_OKS``,
    over all areas and with its largest ``maxDets``: pycocotools' own matching."""
    threshold = int(np.argmin(np.abs(evaluator.params.iouThrs - FOUND_AT_OKS)))
    all_areas, max_dets = evaluator.params.areaRng[0], evaluator.params.maxDets[-1]
    found = 0
    for item in evaluator.evalImgs:
        if item is None or item["aRng"] != all_areas or item["maxDet"] != max_dets:
            continue
        matched = np.asarray(item["gtMatches"])[threshold] > 0
        ignored = np.asarray(item["gtIgnore"]).astype(bool)
        found += int((matched & ~ignored).sum())
    return found


def _keypoint_results(results: Iterable[Mapping[str, Any]], dataset: Dataset) -> list[dict]:
    out = []
    for r in results:
        item = dict(r)
        if dataset == "crowdpose":
            kpts = to_crowdpose_keypoints(np.asarray(r["keypoints"], np.float64).reshape(-1, 3))
            item["keypoints"] = kpts.reshape(-1).tolist()
        out.append(item)
    return out


def evaluate_keypoints(
    gt: COCO,
    results: Sequence[Mapping[str, Any]],
    dataset: Dataset,
    image_ids: Sequence[int] | None = None,
) -> dict[str, float]:
    """Keypoint AP/AR of ``results`` (COCO results format, 17 keypoints each) against ``gt``.

    Returns pycocotools' ten summary numbers by name (``AP``, ``AP50``, …, ``ARl``); all
    ``-1`` when nothing could be scored (pycocotools' convention).
    """
    return _evaluate_keypoints(gt, results, dataset, image_ids)[0]


def _evaluate_keypoints(
    gt: COCO,
    results: Sequence[Mapping[str, Any]],
    dataset: Dataset,
    image_ids: Sequence[int] | None = None,
) -> tuple[dict[str, float], int]:
    """:func:`evaluate_keypoints`, and the persons found (``_found_ground_truth``)."""
    converted = _keypoint_results(results, dataset)
    if not converted:
        return dict.fromkeys(KEYPOINT_STAT_NAMES, -1.0), 0
    with contextlib.redirect_stdout(io.StringIO()):
        dt = gt.loadRes(converted)
    evaluator = COCOeval(gt, dt, "keypoints")
    if dataset == "crowdpose":
        evaluator.params.kpt_oks_sigmas = CROWDPOSE_SIGMAS
    if image_ids is not None:
        evaluator.params.imgIds = list(image_ids)
    return _summarise(evaluator, KEYPOINT_STAT_NAMES), _found_ground_truth(evaluator)


def evaluate_boxes(
    gt: COCO, results: Sequence[Mapping[str, Any]], image_ids: Sequence[int] | None = None
) -> dict[str, float]:
    """Person-box AP/AR of ``results`` (``bbox`` [x, y, w, h] and ``score``) against ``gt``."""
    if not results:
        return dict.fromkeys(BOX_STAT_NAMES, -1.0)
    with contextlib.redirect_stdout(io.StringIO()):
        dt = gt.loadRes([dict(r) for r in results])
    evaluator = COCOeval(gt, dt, "bbox")
    if image_ids is not None:
        evaluator.params.imgIds = list(image_ids)
    return _summarise(evaluator, BOX_STAT_NAMES)


def crowd_level_image_ids(gt: COCO) -> dict[str, list[int]]:
    """CrowdPose's easy / medium / hard image ids by each image's ``crowdIndex``."""
    levels: dict[str, list[int]] = {name: [] for name in CROWD_LEVELS}
    for image in gt.dataset["images"]:
        index = float(image.get("crowdIndex", 0.0))
        for name, (low, high) in CROWD_LEVELS.items():
            if low <= index < high:
                levels[name].append(image["id"])
    return levels


def score(
    gt: COCO,
    keypoint_results: Sequence[Mapping[str, Any]],
    box_results: Sequence[Mapping[str, Any]],
    dataset: Dataset,
) -> Scores:
    """Keypoint and box scores, plus keypoint AP per crowd level for CrowdPose."""
    by_crowd = {}
    if dataset == "crowdpose":
        for level, ids in crowd_level_image_ids(gt).items():
            if ids:
                by_crowd[level] = evaluate_keypoints(gt, keypoint_results, dataset, ids)
    keypoints, found = _evaluate_keypoints(gt, keypoint_results, dataset)
    return Scores(
        keypoints=keypoints,
        boxes=evaluate_boxes(gt, box_results),
        by_crowd=by_crowd,
        found=found,
    )


def ground_truth_persons(gt: COCO) -> int:
    """Persons COCOeval scores against: not crowd, at least one labelled keypoint."""
    return sum(
        1 for a in gt.dataset["annotations"] if not a.get("iscrowd") and a.get("num_keypoints", 1)
    )


def ground_truth_as_results(gt: COCO) -> tuple[list[dict], list[dict]]:
    """The ground truth itself as keypoint and box results (score 1): scores AP 1.0.

    Keypoints stay in the file's own layout, so this is for checking the scoring path.
    """
    kpts, boxes = [], []
    for a in gt.dataset["annotations"]:
        if a.get("iscrowd"):
            continue
        common = {"image_id": a["image_id"], "category_id": a["category_id"], "score": 1.0}
        boxes.append({**common, "bbox": list(a["bbox"])})  # box AP scores every person
        if a.get("num_keypoints", 1):  # keypoint AP ignores persons without keypoints
            kpts.append({**common, "keypoints": list(a["keypoints"])})
    return kpts, boxes
