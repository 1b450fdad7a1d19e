"""The crowds evaluation set (data/crowds) is a well-formed COCO keypoint benchmark.

Real crowded, occluded and low-light photos with COCO-17 labels (provenance, licences and the
conversion in data/crowds/README.md). These checks read the files only: no network, no Ray.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
from collections import Counter

import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from tests.helpers import REPO_ROOT

ROOT = REPO_ROOT / "data" / "crowds"
COCO_KEYPOINTS = [
    "nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder",
    "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip",
    "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle",
]  # fmt: skip
IMAGE_FIELDS = {
    "source", "original_file_name", "scale", "low_light", "exhaustive", "crowd_index", "licence"
}  # fmt: skip


@pytest.fixture(scope="module")
def data() -> dict:
    return json.loads((ROOT / "annotations.json").read_text())


@pytest.fixture(scope="module")
def gt(data) -> COCO:
    coco = COCO()
    coco.dataset = copy.deepcopy(data)
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def labelled(data: dict) -> list[dict]:
    """Persons COCOeval scores: not crowd, at least one labelled keypoint."""
    return [a for a in data["annotations"] if not a["iscrowd"] and a["num_keypoints"] > 0]


def test_loads_with_pycocotools_as_coco_person_keypoints(data):
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(ROOT / "annotations.json"))
    assert coco.getCatIds() == [1]
    category = coco.loadCats(1)[0]
    assert category["name"] == "person" and category["keypoints"] == COCO_KEYPOINTS
    assert len(category["skeleton"]) == 19
    assert {a["category_id"] for a in data["annotations"]} == {1}


def test_ids_are_unique_and_every_annotation_has_its_image(data):
    image_ids = [im["id"] for im in data["images"]]
    ann_ids = [a["id"] for a in data["annotations"]]
    assert len(set(image_ids)) == len(image_ids)
    assert len(set(ann_ids)) == len(ann_ids)
    assert {a["image_id"] for a in data["annotations"]} <= set(image_ids)
    names = [im["file_name"] for im in data["images"]]
    assert len(set(names)) == len(names)


def test_every_image_exists_with_its_stated_size_and_nothing_else_is_there(data):
    on_disk = {p.name for p in (ROOT / "images").iterdir()}
    assert on_disk == {im["file_name"] for im in data["images"]}
    for im in data["images"]:
        with Image.open(ROOT / "images" / im["file_name"]) as img:
            assert img.size == (im["width"], im["height"]), im["file_name"]
        assert max(im["width"], im["height"]) <= 1024, im["file_name"]


def test_every_image_says_where_it_comes_from(data):
    for im in data["images"]:
        assert set(im) >= IMAGE_FIELDS, im["file_name"]
        assert im["file_name"].startswith(im["source"] + "_")
        assert 0 < im["scale"] <= 1
        assert isinstance(im["low_light"], bool) and isinstance(im["exhaustive"], bool)
        assert im["crowd_index"] >= 0
    assert any(im["low_light"] for im in data["images"])
    assert not all(im["exhaustive"] for im in data["images"])  # OCHuman labels only some people


def test_labelled_keypoints_lie_inside_their_image_and_counts_are_right(data):
    size = {im["id"]: (im["width"], im["height"]) for im in data["images"]}
    for a in data["annotations"]:
        k = np.asarray(a["keypoints"], dtype=float).reshape(17, 3)
        seen = k[:, 2] > 0
        assert a["num_keypoints"] == int(seen.sum()), a["id"]
        assert set(k[:, 2].astype(int)) <= {0, 1, 2}, a["id"]
        assert not k[~seen].any(), a["id"]  # unlabelled keypoints are (0, 0, 0)
        w, h = size[a["image_id"]]
        xs, ys = k[seen, 0], k[seen, 1]
        assert ((xs >= 0) & (xs <= w) & (ys >= 0) & (ys <= h)).all(), a["id"]
        x, y, bw, bh = a["bbox"]
        assert x >= 0 and y >= 0 and x + bw <= w + 0.01 and y + bh <= h + 0.01, a["id"]
        assert a["area"] > 0, a["id"]


def test_large_enough_to_decide_with(data):
    people = labelled(data)
    assert len(data["images"]) >= 40
    assert len(people) >= 150
    per_image = Counter(a["image_id"] for a in people)
    assert sum(1 for n in per_image.values() if n >= 3) >= 20  # mostly crowded scenes


def test_the_held_out_part_alone_is_large_enough(data):
    """MoveNet was trained on COCO train2017: the images it has not seen must suffice alone."""
    held_out = {im["id"] for im in data["images"] if im["split"] != "train2017"}
    people = [a for a in labelled(data) if a["image_id"] in held_out]
    assert len(held_out) >= 40
    assert len(people) >= 150
    per_image = Counter(a["image_id"] for a in people)
    assert sum(1 for n in per_image.values() if n >= 3) >= 20  # mostly crowded scenes


def test_the_ground_truth_scores_ap_1(gt, data):
    results = [
        {"image_id": a["image_id"], "category_id": 1, "keypoints": a["keypoints"], "score": 1.0}
        for a in labelled(data)
    ]
    with contextlib.redirect_stdout(io.StringIO()):
        evaluator = COCOeval(gt, gt.loadRes(results), "keypoints")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    assert evaluator.stats[0] == pytest.approx(1.0)  # AP
    assert evaluator.stats[5] == pytest.approx(1.0)  # AR


def test_the_readme_lists_every_image_file(data):
    readme = (ROOT / "README.md").read_text()
    missing = [im["file_name"] for im in data["images"] if f"`{im['file_name']}`" not in readme]
    assert not missing, f"data/crowds/README.md lacks: {missing}"
