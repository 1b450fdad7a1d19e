"""``detpose crowd-report``'s pieces: its runs, the parts of the set, the cost measure and the
low-light copies (the evaluations themselves are `detpose eval`, tested elsewhere)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from jobs.crowd_report_cmd import (
    PARTS,
    RUNS,
    Run,
    _network_costs,
    _part,
    darken_set,
    model_gflops,
)
from schemas.spec import DEFAULT_STAGE1_VIEWS, JobSpec
from tests.helpers import REPO_ROOT

SAMPLE = REPO_ROOT / "tests" / "data" / "coco_sample"


def test_every_run_is_a_valid_spec_with_its_own_name():
    assert len({run.name for run in RUNS}) == len(RUNS)
    for run in RUNS:
        JobSpec.parse({"inputs": ["x.jpg"], "output": "out", **run.spec}, source=run.name)


def test_parts_of_the_set_follow_the_image_fields():
    held_out_crowd = {"split": "val2017", "crowd_index": 0.4, "source": "coco"}
    seen_alone = {"split": "train2017", "crowd_index": 0.0, "source": "coco", "low_light": True}
    assert [p for p in PARTS if _part(held_out_crowd, p)] == ["all", "held-out", "crowded"]
    assert [p for p in PARTS if _part(seen_alone, p)] == ["all", "uncrowded", "low-light"]


def test_model_gflops_counts_each_view_at_its_size_and_every_refiner_pass():
    flops, sides = _network_costs()
    stage1, refiner = flops[("movenet-multipose", "stage1")], flops[("movenet-thunder", "refiner")]
    assert sides[("movenet-multipose", "stage1")] == 256 and stage1 > 0 and refiner > 0
    views = [{"input_size": 384}, {"input_size": 256, "grid": 2, "tile_below_height": 0.35}]
    tiled = Run("tiled", "", {"stage1": {"views": views}})
    # Two images: one tiled (1 + 4 inputs), one not (1 input); three refiner passes.
    report = {"images_ok": 2, "stage1_inputs": 6, "refinement_runs": 3}
    expected = (2 * (384 / 256) ** 2 + 4) / 2 * stage1 + 1.5 * refiner
    assert model_gflops(tiled, report) == pytest.approx(expected)
    default = next(run for run in RUNS if run.name == "default")
    sizes = [view.input_size for view in DEFAULT_STAGE1_VIEWS]
    report = {"images_ok": 2, "stage1_inputs": 2 * len(sizes), "refinement_runs": 3}
    expected = sum((size / 256) ** 2 for size in sizes) * stage1 + 1.5 * refiner
    assert model_gflops(default, report) == pytest.approx(expected)
    gt_boxes = next(run for run in RUNS if run.gt_boxes)
    assert model_gflops(gt_boxes, report) == pytest.approx(1.5 * refiner)


def test_low_light_copies_are_made_once_and_deterministically(tmp_path):
    data = json.loads((SAMPLE / "annotations.json").read_text())
    data["images"] = data["images"][:1]
    annotations = tmp_path / "one.json"
    annotations.write_text(json.dumps(data))
    name = data["images"][0]["file_name"]
    first = darken_set(annotations, SAMPLE / "images", tmp_path / "a", 1 / 12)
    again = darken_set(annotations, SAMPLE / "images", tmp_path / "b", 1 / 12)
    a = np.asarray(Image.open(first / name))
    np.testing.assert_array_equal(a, np.asarray(Image.open(again / name)))
    original = np.asarray(Image.open(SAMPLE / "images" / name).convert("RGB"))
    assert a.shape == original.shape and a.mean() < 0.5 * original.mean()
    shutil.copy(SAMPLE / "images" / name, first / name)  # an existing copy is kept
    darken_set(annotations, SAMPLE / "images", first, 1 / 12)
    np.testing.assert_array_equal(np.asarray(Image.open(first / name)), original)
