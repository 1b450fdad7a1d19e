"""Boxes from another detector (``stage1.boxes``): parsing, matching to URIs, errors, and the
filter pairing stage 1's coarse poses with them."""

from __future__ import annotations

import json

import numpy as np
import pytest

from model.filtering.filters import filter_proposals
from model.filtering.synthetic_proposals import person, proposals_from_poses
from model.stage_data import CoarseProposals
from pipeline.errors import JobSetupError
from pipeline.store.external_boxes import (
    load_external_boxes,
    match_file_name,
    parse_detections,
)
from pipeline.store.identity import job_fingerprint
from schemas.filtering import FilterSpec
from schemas.spec import JobSpec, SpecError
from tests.helpers import StageWeights

IMAGE_WH = (640, 480)


def det(bbox, score, name="a.jpg", **extra):
    return {"file_name": name, "category_id": 1, "bbox": bbox, "score": score, **extra}


def parse(entries, top_k=100, names=None):
    return parse_detections(entries, "dets.json", top_k, names)


def test_boxes_are_grouped_by_file_name_highest_score_first_top_k_kept():
    rows, boxes, scores = parse(
        [
            det([0, 0, 10, 10], 0.2),
            det([5, 5, 10, 20], 0.9, "b/c.jpg"),
            det([1, 1, 10, 10], 0.7),
            det([2, 2, 10, 10], 0.7),  # tie: the file's order
            det([3, 3, 10, 10], 0.1),
            {**det([9, 9, 9, 9], 1.0), "category_id": 2},  # not a person: ignored
        ],
        top_k=3,
    )
    start, stop = rows["a.jpg"]
    assert scores[start:stop].tolist() == pytest.approx([0.7, 0.7, 0.2])
    assert boxes[start:stop, 0].tolist() == [1, 2, 0]
    start, stop = rows["b/c.jpg"]
    assert boxes[start:stop].tolist() == [[5, 5, 10, 20]]


def test_image_ids_map_through_the_image_list_and_file_name_wins():
    entries = [
        {"image_id": 7, "category_id": 1, "bbox": [0, 0, 4, 4], "score": 0.5},
        {"image_id": 8, "file_name": "own.jpg", "category_id": 1, "bbox": [1, 1, 4, 4], "score": 1},
    ]
    rows, _, _ = parse(entries, names={7: "x/seven.jpg", 8: "eight.jpg"})
    assert set(rows) == {"x/seven.jpg", "own.jpg"}


def test_an_uri_matches_its_longest_path_suffix():
    names = {"c.jpg", "b/c.jpg", "/abs/d.jpg"}
    assert match_file_name("s3://bucket/a/b/c.jpg", names) == "b/c.jpg"
    assert match_file_name("/data/x/c.jpg", names) == "c.jpg"
    assert match_file_name("/abs/d.jpg", names) == "/abs/d.jpg"
    assert match_file_name("/data/xc.jpg", names) is None  # whole components only
    assert match_file_name("/data/c.jpg.png", names) is None


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        ({"a": 1}, "expected a JSON list of detections"),
        ([det([0, 0, 1, 1], 0.5), "box"], "entry 1 .*expected an object"),
        ([det([0, 0, 1], 0.5)], "entry 0 .*bbox must be 4 finite numbers"),
        ([det([0, 0, "1", 1], 0.5)], "entry 0 .*bbox must be 4 finite numbers"),
        ([det([0, 0, float("nan"), 1], 0.5)], "bbox must be 4 finite numbers"),
        ([det([0, 0, -1, 1], 0.5)], "entry 0 .*negative width or height"),
        ([det([0, 0, 1, 1], None)], "score must be a finite number"),
        ([{**det([0, 0, 1, 1], 0.5), "category_id": "person"}], "category_id must be an integer"),
        ([{"image_id": 3, "category_id": 1, "bbox": [0, 0, 1, 1], "score": 1}], "box_images"),
        ([{**det([0, 0, 1, 1], 0.5), "file_name": ""}], "file_name must be a non-empty"),
    ],
)
def test_malformed_entries_name_the_file_and_the_entry(entries, message):
    with pytest.raises(JobSetupError, match=f"dets.json: .*{message}"):
        parse(entries)


def test_an_unknown_image_id_is_an_error_when_an_image_list_is_given():
    entry = {"image_id": 3, "category_id": 1, "bbox": [0, 0, 1, 1], "score": 1}
    with pytest.raises(JobSetupError, match=r"entry 0 .*image_id 3 is not in the image list"):
        parse([entry], names={1: "one.jpg"})


def job_spec(tmp_path, **stage1):
    return JobSpec.parse(
        {"inputs": [str(tmp_path)], "output": str(tmp_path / "out"), "stage1": stage1}
    )


def test_loading_reads_the_image_list_and_an_image_without_boxes_gets_none(tmp_path):
    (tmp_path / "dets.json").write_text(
        json.dumps([{"image_id": 1, "category_id": 1, "bbox": [10, 20, 30, 40], "score": 0.8}])
    )
    (tmp_path / "ann.json").write_text(
        json.dumps({"images": [{"id": 1, "file_name": "img/one.jpg"}]})
    )
    spec = job_spec(
        tmp_path, boxes=str(tmp_path / "dets.json"), box_images=str(tmp_path / "ann.json")
    )
    boxes = load_external_boxes(spec)
    found, scores = boxes.for_uri("s3://b/img/one.jpg")
    assert found.tolist() == [[10, 20, 30, 40]] and scores.tolist() == pytest.approx([0.8])
    none, none_scores = boxes.for_uri("s3://b/img/two.jpg")
    assert none.shape == (0, 4) and none_scores.shape == (0,)
    assert boxes.box_images_sha256 is not None and len(boxes.sha256) == 64
    assert load_external_boxes(job_spec(tmp_path)) is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{not json", "stage1.boxes .*dets.json: not JSON"),
        ('{"a": 1}', "expected a JSON list"),
    ],
)
def test_a_file_that_is_not_a_detections_list_fails_at_job_start(tmp_path, text, message):
    (tmp_path / "dets.json").write_text(text)
    with pytest.raises(JobSetupError, match=message):
        load_external_boxes(job_spec(tmp_path, boxes=str(tmp_path / "dets.json")))


def test_a_missing_file_fails_at_job_start(tmp_path):
    with pytest.raises(JobSetupError, match="stage1.boxes .*nope.json' does not exist"):
        load_external_boxes(job_spec(tmp_path, boxes=str(tmp_path / "nope.json")))


def test_box_images_without_boxes_is_a_spec_error(tmp_path):
    with pytest.raises(SpecError, match=r"stage1.box_images .*stage1.boxes"):
        job_spec(tmp_path, box_images="ann.json")


def test_a_changed_boxes_file_changes_the_job_fingerprint(tmp_path):
    path = tmp_path / "dets.json"
    spec = job_spec(tmp_path, boxes=str(path))
    weights = {"stage1": StageWeights("bundled", "s1"), "refiner": StageWeights("bundled", "r")}
    path.write_text(json.dumps([det([0, 0, 5, 5], 0.5)]))
    first = job_fingerprint(spec, weights, load_external_boxes(spec))
    path.write_text(json.dumps([det([0, 0, 5, 6], 0.5)]))
    assert job_fingerprint(spec, weights, load_external_boxes(spec)) != first
    # Without boxes, and with optional settings off, nothing new enters the fingerprint.
    plain = job_fingerprint(job_spec(tmp_path), weights)
    assert "stage1_boxes" not in plain and plain["filter"]["recovered_dedupe_oks"] == 0.8
    dedupe_off = JobSpec.parse(
        {
            "inputs": [str(tmp_path)],
            "output": str(tmp_path / "out"),
            "filter": {"recovered_dedupe_oks": None},
        }
    )
    assert "recovered_dedupe_oks" not in job_fingerprint(dedupe_off, weights)["filter"]


# --- the filter on stage 1's poses with external boxes ---------------------------------------


def two_people():
    kpts_a, box_a = person((150.0, 60.0), 300.0)
    kpts_b, box_b = person((450.0, 60.0), 300.0, score=0.8)
    return kpts_a, box_a, kpts_b, box_b


def test_grouped_poses_pair_with_external_boxes_by_lying_inside_them():
    kpts_a, box_a, kpts_b, box_b = two_people()
    # Stage 1 (zoo) proposed both, each with its own pose; the other detector sees only B,
    # and its box is listed with A's pose index in mind nowhere: pairing is by position.
    stage1 = CoarseProposals.grouped(
        np.stack([box_a, box_b]).astype(np.float32),
        np.array([0.9, 0.8], np.float32),
        np.stack([kpts_a, kpts_b]).astype(np.float32),
    )
    props = stage1.with_boxes(box_b[None] + [2, 1, -2, 0], np.array([0.6]))
    assert props.pose_scores.tolist() == pytest.approx([0.9, 0.8])
    out = filter_proposals(props, FilterSpec(), IMAGE_WH)
    assert len(out) == 1 and out.counts.proposals == 1
    np.testing.assert_allclose(out.coarse_kpts_xys[0], kpts_b, atol=1e-4)
    np.testing.assert_allclose(out.box_scores, [0.6])


def test_a_pooled_pose_whose_own_proposal_scored_low_is_not_used():
    kpts_a, box_a, _, _ = two_people()
    stage1 = CoarseProposals.grouped(
        box_a[None].astype(np.float32), np.array([0.01], np.float32), kpts_a[None]
    )
    out = filter_proposals(stage1.with_boxes(box_a[None], np.array([0.9])), FilterSpec(), IMAGE_WH)
    assert len(out) == 0 and out.counts.dropped_few_keypoints == 1


def test_peaks_keep_their_grouping_and_external_boxes_replace_the_proposals():
    kpts_a, box_a, kpts_b, box_b = two_people()
    stage1 = proposals_from_poses([kpts_a, kpts_b], np.stack([box_a, box_b]), np.array([0.9, 0.9]))
    props = stage1.with_boxes(np.zeros((0, 4)), np.zeros(0))  # an image without detections
    out = filter_proposals(props, FilterSpec(), IMAGE_WH)
    assert len(out) == 0 and out.counts.proposals == 0
    for mode in ("coarse", "nms", "none"):
        both = stage1.with_boxes(np.stack([box_a, box_b]), np.array([0.5, 0.4]))
        out = filter_proposals(both, FilterSpec(mode=mode), IMAGE_WH)
        assert len(out) == 2, mode
        np.testing.assert_allclose(out.box_scores, [0.5, 0.4])
