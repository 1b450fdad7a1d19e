"""The zoo refiner (MoveNet Thunder) on a real photo: crops, decoding and the flip test."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from model.codecs.boxes import xywh_to_xyxy
from model.inference.refiner import MoveNetCropRefiner
from model.networks.base import RefinerSettings
from model.networks.resolve import load_network
from tests.helpers import REPO_ROOT

SAMPLE = REPO_ROOT / "tests" / "data" / "coco_sample"


@pytest.fixture(scope="module")
def annotated_people():
    data = json.loads((SAMPLE / "annotations.json").read_text())
    image_info = data["images"][0]
    image = np.asarray(Image.open(SAMPLE / "images" / image_info["file_name"]).convert("RGB"))
    people = [
        a
        for a in data["annotations"]
        if a["image_id"] == image_info["id"] and a["num_keypoints"] >= 10
    ]
    assert people
    boxes = xywh_to_xyxy(np.array([p["bbox"] for p in people], np.float64))
    truth = np.array([p["keypoints"] for p in people], np.float64).reshape(len(people), 17, 3)
    return image, boxes, truth


@pytest.mark.parametrize("flip_test", [False, True])
def test_thunder_finds_the_annotated_keypoints_of_real_people(annotated_people, flip_test):
    image, boxes, truth = annotated_people
    loaded = load_network("refiner", "movenet-thunder")
    refiner = MoveNetCropRefiner(
        loaded, torch.device("cpu"), RefinerSettings(flip_test=flip_test, guide="pose")
    )
    (poses,) = refiner([image], [boxes])
    labelled = truth[..., 2] > 0
    error = np.linalg.norm(poses.kpts_xys[..., :2] - truth[..., :2], axis=-1)[labelled]
    # Within a tenth of the person's box height for nearly every labelled keypoint (a
    # mirrored flip test would swap left and right and miss by a shoulder's width).
    heights = np.repeat((boxes[:, 3] - boxes[:, 1])[:, None], 17, axis=1)[labelled]
    assert np.mean(error < 0.1 * heights) >= 0.9, np.round(error / heights, 2)
    assert (poses.pose_scores > 0.3).all()
