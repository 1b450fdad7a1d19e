"""The Ray Data stages called directly on batches, as Ray would call them (no Ray runtime)."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.graph.actors import CoarseStage, RefineStage
from pipeline.graph.model_stages import unchecked_stages
from pipeline.graph.rows import person_records
from pipeline.graph.tasks import decode_batch, filter_batch
from schemas.filtering import FilterSpec
from schemas.output import ANNOTATION_SCHEMA, ORIGIN_DETECTED, ORIGIN_RECOVERED
from schemas.spec import DecodeSpec, JobSpec, StorageSpec
from tests.helpers import REPO_ROOT

SAMPLES = sorted(str(p) for p in (REPO_ROOT / "jobs" / "samples").glob("*.jpg"))[:3]


# Both families of stage models: the zoo's (the default) and DetPoseNet's demo networks.
MODELS = {
    "zoo": {},
    "detposenet": {"stage1": {"model": "detposenet"}, "refiner": {"model": "detposenet"}},
}


@pytest.fixture(scope="module", params=sorted(MODELS))
def stages(request):
    spec = JobSpec.parse(
        {
            "inputs": SAMPLES,
            "output": "unused",
            "device": "cpu",
            "proposals_per_image": 50,
            "peaks_per_keypoint": 10,
            "filter": {"keypoint_score_threshold": 0.1},
            **MODELS[request.param],
        }
    )
    stages = unchecked_stages(spec)
    stage1 = CoarseStage(stages["stage1"])
    refiner = RefineStage(stages["refiner"], spec.filter, max_crops=16)
    return stage1, refiner


def run_chain(batch, stages):
    stage1, refiner = stages
    return refiner(filter_batch(stage1(batch), FilterSpec()))


def decoded(uris):
    return decode_batch({"uri": np.array(uris)}, DecodeSpec(max_side=512), StorageSpec())


def test_chain_turns_every_uri_into_one_row_of_the_output_schema(stages, tmp_path):
    uris = [*SAMPLES, str(tmp_path / "missing.jpg")]
    table = run_chain(decoded(uris), stages)
    assert table.schema.equals(ANNOTATION_SCHEMA, check_metadata=False)
    rows = table.to_pylist()
    assert [r["uri"] for r in rows] == uris
    assert [r["status"] for r in rows] == ["ok", "ok", "ok", "error"]
    assert rows[-1]["error_kind"] == "missing" and rows[-1]["persons"] == []
    assert sum(len(r["persons"]) for r in rows) > 0
    for row in rows[:3]:
        counts = row["counts"]
        # At most proposals_per_image, each ending in exactly one bucket.
        assert 0 < counts["proposals"] <= 50
        assert counts["proposals"] == sum(
            counts[name]
            for name in (
                "dropped_low_score",
                "dropped_few_keypoints",
                "dropped_duplicate",
                "accepted",
            )
        )
        assert len(row["persons"]) == counts["accepted"] + counts["recovered"]
        assert counts["refinement_runs"] == len(row["persons"])


def test_an_image_that_breaks_a_model_costs_only_its_own_row(stages):
    batch = decoded(SAMPLES[:2])
    broken = np.empty(2, dtype=object)
    broken[0] = np.zeros((40, 30), np.uint8)  # no colour axis: the model cannot take it
    broken[1] = batch["image"][1]
    table = run_chain({**batch, "image": broken}, stages)
    first, second = table.to_pylist()
    assert (first["status"], first["error_kind"]) == ("error", "internal")
    assert first["error_message"].startswith("[internal] stage 1 failed on this image")
    assert second["status"] == "ok" and 0 < second["counts"]["proposals"] <= 50


def test_a_row_that_breaks_the_filter_costs_only_its_own_row(stages):
    stage1, refiner = stages
    batch = stage1(decoded(SAMPLES[:2]))
    column = "coarse_poses" if "coarse_poses" in batch else "peaks"
    broken = np.empty(2, dtype=object)
    broken[0] = np.zeros((5, 3), np.float32)  # wrong shape: CoarseProposals refuses it
    broken[1] = batch[column][1]
    filtered = filter_batch({**batch, column: broken}, FilterSpec())
    assert list(filtered["status"]) == ["error", "ok"]
    message = filtered["error_message"][0]
    assert "filter failed" in message and ("peaks" in message or "poses" in message)
    assert refiner(filtered).num_rows == 2


def test_person_records_map_decoded_pixels_back_to_original_pixels():
    # Row 1 was decoded at half size (scale 0.5): boxes and keypoint positions double, scores
    # stay. Row 0 (scale 0.25) must not be read. Values are exact in float32.
    boxes = np.zeros((2, 3, 4), np.float32)
    boxes[0] = 1000.0
    boxes[1, 0] = [10.0, 20.0, 60.0, 120.0]
    boxes[1, 1] = [100.5, 40.25, 150.0, 90.0]
    batch = {
        "scale": np.array([0.25, 0.5]),
        "person_boxes": boxes,
        "person_box_scores": np.array([[0.1, 0.1, 0.1], [0.75, 0.5, 0.0]], np.float32),
        "person_recovered": np.array([[False] * 3, [False, True, False]]),
    }
    kpts = np.zeros((2, 17, 3), np.float32)
    kpts[0, :, 0] = np.arange(17) + 20.0
    kpts[0, :, 1] = 2.0 * np.arange(17) + 30.5
    kpts[0, :, 2] = 0.5
    kpts[1, 0] = [120.0, 50.0, 0.875]
    records = person_records(batch, 1, kpts, np.array([0.625, 0.25], np.float32))

    assert [r["box_xywh"] for r in records] == [
        [20.0, 40.0, 100.0, 200.0],
        [201.0, 80.5, 99.0, 99.5],
    ]
    assert [r["box_score"] for r in records] == [0.75, 0.5]
    assert [r["pose_score"] for r in records] == [0.625, 0.25]
    assert [r["origin"] for r in records] == [ORIGIN_DETECTED, ORIGIN_RECOVERED]
    first = np.array(records[0]["keypoints"]).reshape(17, 3)
    assert first[:, 0].tolist() == (2.0 * np.arange(17) + 40.0).tolist()
    assert first[:, 1].tolist() == (4.0 * np.arange(17) + 61.0).tolist()
    assert first[:, 2].tolist() == [0.5] * 17
    assert records[1]["keypoints"][:3] == [240.0, 100.0, 0.875]
    assert records[1]["keypoints"][3:] == [0.0] * 48
