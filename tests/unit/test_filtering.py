"""Coarse-pose filtering (Algorithm 1, the paper's Fig. 3) and its baselines."""

from __future__ import annotations

import json

import numpy as np
import pytest

from model.codecs.boxes import box_iou, kpt2box
from model.filtering.filters import filter_proposals, nms_iou, oks_nms
from model.filtering.synthetic_proposals import person, proposals_from_poses, random_scene
from model.keypoints import NUM_KEYPOINTS
from model.stage_data import CoarseProposals, FilteredPersons
from schemas.filtering import FilterSpec
from tests.helpers import REPO_ROOT

IMAGE_WH = (640, 480)
COARSE = FilterSpec(mode="coarse", min_keypoints=3, duplicate_oks=0.7)
MODES = ("coarse", "nms", "oks_nms", "none")


def union(box_a: np.ndarray, box_b: np.ndarray) -> np.ndarray:
    return np.concatenate([np.minimum(box_a[:2], box_b[:2]), np.maximum(box_a[2:], box_b[2:])])


def check_counts(out: FilteredPersons, num_proposals: int) -> None:
    c = out.counts
    assert c.proposals == num_proposals
    assert (
        c.proposals
        == c.dropped_low_score + c.dropped_few_keypoints + c.dropped_duplicate + c.accepted
    )
    assert len(out) == c.accepted + c.recovered
    assert int(out.recovered.sum()) == c.recovered


# --- Fig. 3a: false-positive removal -------------------------------------------------------


def test_fig3a_two_near_identical_boxes_on_one_person_keep_one() -> None:
    kpts, box = person((300.0, 100.0), 250.0)
    boxes = np.stack([box, box + [3.0, -2.0, 4.0, 1.0]])
    props = proposals_from_poses([kpts], boxes, np.array([0.8, 0.9]))
    out = filter_proposals(props, COARSE, IMAGE_WH)
    assert len(out) == 1 and out.counts.dropped_duplicate == 1 and out.counts.accepted == 1
    np.testing.assert_allclose(out.boxes_xyxy[0], boxes[1], atol=1e-4)  # the higher score wins
    np.testing.assert_allclose(out.coarse_kpts_xys[0], kpts, atol=1e-4)
    assert not out.recovered.any()
    check_counts(out, 2)


@pytest.mark.parametrize(("num_kpts", "kept"), [(3, False), (4, True)])
def test_fig3a_box_with_too_few_keypoints_is_dropped(num_kpts: int, kept: bool) -> None:
    kpts, box = person((300.0, 100.0), 250.0)
    kpts[num_kpts:, 2] = 0.0  # only the face's first keypoints: nose, eyes, ...
    props = proposals_from_poses([kpts], box[None], np.array([0.9]))
    out = filter_proposals(props, COARSE, IMAGE_WH)  # delta_kpt = 3: n_kpt <= 3 is dropped
    assert len(out) == int(kept)
    assert out.counts.dropped_few_keypoints == int(not kept)
    check_counts(out, 1)


def test_box_without_any_pose_is_dropped_for_few_keypoints() -> None:
    kpts, box = person((100.0, 100.0), 250.0)
    background = np.array([[400.0, 50.0, 600.0, 400.0]])
    props = proposals_from_poses(
        [kpts], np.concatenate([box[None], background]), np.array([0.7, 0.95])
    )
    out = filter_proposals(props, COARSE, IMAGE_WH)
    assert len(out) == 1 and out.counts.dropped_few_keypoints == 1
    np.testing.assert_allclose(out.boxes_xyxy[0], box, atol=1e-4)


# --- Fig. 3b: miss-detection recovery ------------------------------------------------------


def overlapping_players() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    kpts_a, box_a = person((280.0, 80.0), 300.0)
    kpts_b, box_b = person((305.0, 88.0), 290.0, score=0.8)
    return kpts_a, box_a, kpts_b, box_b


def test_fig3b_one_box_holding_two_people_gives_two_persons_one_recovered() -> None:
    kpts_a, box_a, kpts_b, box_b = overlapping_players()
    both = union(box_a, box_b)
    boxes = np.stack([both, both + [2.0, 3.0, -2.0, 1.0]])  # what a detector emits around the pair
    props = proposals_from_poses([kpts_a, kpts_b], boxes, np.array([0.9, 0.85]))
    out = filter_proposals(props, COARSE, IMAGE_WH)
    assert len(out) == 2
    assert (
        out.counts.accepted == 1 and out.counts.recovered == 1 and out.counts.dropped_duplicate == 1
    )
    check_counts(out, 2)
    assert out.recovered.tolist() == [False, True]
    np.testing.assert_allclose(out.boxes_xyxy[0], both, atol=1e-4)
    # The two outputs carry the two people, the recovered one with a box from its keypoints.
    people = {round(float(k[0, 0])) for k in out.coarse_kpts_xys}
    assert people == {round(float(kpts_a[0, 0])), round(float(kpts_b[0, 0]))}
    rec_kpts = out.coarse_kpts_xys[1]
    np.testing.assert_allclose(
        out.boxes_xyxy[1], kpt2box(rec_kpts[None], COARSE.kpt2box_margin)[0], atol=1e-3
    )
    assert out.box_scores[1] < out.box_scores[0]

    # IoU-NMS at 0.5 loses the second person.
    nms = filter_proposals(props, FilterSpec(mode="nms", nms_iou=0.5), IMAGE_WH)
    assert len(nms) == 1 and nms.counts.dropped_duplicate == 1
    check_counts(nms, 2)


def test_tight_boxes_of_overlapping_people_survive_coarse_but_not_iou_nms() -> None:
    kpts_a, box_a, kpts_b, box_b = overlapping_players()
    assert box_iou(box_a[None], box_b[None])[0, 0] > 0.5
    props = proposals_from_poses([kpts_a, kpts_b], np.stack([box_a, box_b]), np.array([0.9, 0.8]))
    coarse = filter_proposals(props, COARSE, IMAGE_WH)
    assert len(coarse) == 2 and coarse.counts.accepted == 2 and coarse.counts.recovered == 0
    nms = filter_proposals(props, FilterSpec(mode="nms", nms_iou=0.5), IMAGE_WH)
    assert len(nms) == 1


def test_a_real_box_beats_a_recovered_one() -> None:
    # The union box comes first, but B has its own (lower-scoring) box: no recovery needed.
    kpts_a, box_a, kpts_b, box_b = overlapping_players()
    boxes = np.stack([union(box_a, box_b), box_b])
    props = proposals_from_poses([kpts_a, kpts_b], boxes, np.array([0.9, 0.6]))
    out = filter_proposals(props, COARSE, IMAGE_WH)
    assert len(out) == 2 and out.counts.recovered == 0 and out.counts.accepted == 2


# --- public helpers --------------------------------------------------------------------------


def test_nms_iou_known_answer() -> None:
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [0, 0, 10, 9]], float)
    scores = np.array([0.9, 0.8, 0.7, 0.95])
    assert nms_iou(boxes, scores, 0.5).tolist() == [3, 2]
    assert nms_iou(boxes, scores, 0.95).tolist() == [3, 0, 1, 2]
    assert nms_iou(np.zeros((0, 4)), np.zeros(0), 0.5).tolist() == []


def test_oks_nms_suppresses_the_same_pose_not_a_neighbour() -> None:
    kpts_a, box_a = person((100.0, 50.0), 200.0)
    kpts_b, _ = person((220.0, 50.0), 200.0)
    poses = np.stack([kpts_a, kpts_a + [1.0, 1.0, 0.0], kpts_b])
    area = (box_a[2] - box_a[0]) * (box_a[3] - box_a[1])
    keep = oks_nms(poses, np.array([0.5, 0.9, 0.8]), np.full(3, area), 0.9)
    assert keep.tolist() == [1, 2]


def test_kpt2box_known_answer() -> None:
    kpts = np.zeros((2, NUM_KEYPOINTS, 3))
    kpts[0, 0] = [10, 20, 0.9]
    kpts[0, 5] = [30, 60, 0.5]
    kpts[0, 6] = [99, 99, 0.0]  # not found: ignored
    boxes = kpt2box(kpts, margin=0.25)
    np.testing.assert_allclose(boxes[0], [10 - 5, 20 - 10, 30 + 5, 60 + 10])
    assert (boxes[1] == 0).all()


def test_low_scores_and_boxes_outside_the_image_are_dropped_and_others_clipped() -> None:
    kpts, box = person((300.0, 300.0), 250.0)  # reaches below the image's bottom (480)
    outside = np.array([700.0, 10.0, 800.0, 100.0])
    props = proposals_from_poses(
        [kpts], np.stack([box, box + 1.0, outside]), np.array([0.9, 0.01, 0.9])
    )
    out = filter_proposals(props, COARSE, IMAGE_WH)
    assert out.counts.dropped_low_score == 2 and len(out) == 1
    assert out.boxes_xyxy[0, 3] == IMAGE_WH[1]


def test_max_persons_cuts_the_lowest_scores_and_keeps_counts_consistent() -> None:
    people = [person((60.0 + 100 * i, 100.0), 200.0) for i in range(5)]
    props = proposals_from_poses(
        [k for k, _ in people], np.stack([b for _, b in people]), np.linspace(0.9, 0.5, 5)
    )
    out = filter_proposals(props, COARSE.model_copy(update={"max_persons": 3}), IMAGE_WH)
    assert len(out) == 3 and out.counts.accepted == 3 and out.counts.dropped_low_score == 2
    np.testing.assert_allclose(out.box_scores, [0.9, 0.8, 0.7], atol=1e-6)
    check_counts(out, 5)


@pytest.mark.parametrize("mode", MODES)
def test_no_proposals_gives_no_persons(mode: str) -> None:
    out = filter_proposals(CoarseProposals.empty(top_k=4), FilterSpec(mode=mode), IMAGE_WH)
    assert len(out) == 0 and out.coarse_kpts_xys.shape == (0, NUM_KEYPOINTS, 3)
    assert out.counts.as_dict() == FilteredPersons.empty().counts.as_dict()


def test_coarse_proposals_reject_bad_shapes_with_the_field_name() -> None:
    with pytest.raises(ValueError, match="CoarseProposals.limb_scores"):
        CoarseProposals(
            np.zeros((1, 4)), np.zeros(1), np.zeros((NUM_KEYPOINTS, 3, 3)), np.zeros((19, 3, 2))
        )


# --- properties over random scenes ---------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_random_scenes_valid_boxes_consistent_counts_and_order_independence(mode: str) -> None:
    rng = np.random.default_rng(1234)
    spec = FilterSpec(mode=mode, max_persons=20)
    total_out = 0
    for _ in range(15):
        width, height = int(rng.integers(200, 900)), int(rng.integers(200, 900))
        props, _ = random_scene(
            rng, (width, height), num_proposals=int(rng.integers(1, 60)), peaks_per_keypoint=8
        )
        out = filter_proposals(props, spec, (width, height))
        total_out += len(out)
        boxes = out.boxes_xyxy
        assert (boxes[:, 0] >= 0).all() and (boxes[:, 2] <= width).all()
        assert (boxes[:, 1] >= 0).all() and (boxes[:, 3] <= height).all()
        assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all()
        assert (np.diff(out.box_scores) <= 0).all() and len(out) <= spec.max_persons
        check_counts(out, len(props.box_scores))

        perm = rng.permutation(len(props.box_scores))
        shuffled = CoarseProposals(
            props.boxes_xyxy[perm], props.box_scores[perm], props.peaks_xys, props.limb_scores
        )
        again = filter_proposals(shuffled, spec, (width, height))
        np.testing.assert_array_equal(again.boxes_xyxy, out.boxes_xyxy)
        np.testing.assert_array_equal(again.box_scores, out.box_scores)
        np.testing.assert_array_equal(again.coarse_kpts_xys, out.coarse_kpts_xys)
        np.testing.assert_array_equal(again.recovered, out.recovered)
        assert again.counts == out.counts
    assert total_out > 0


# --- Algorithm 1's duplicate test on a real fragment -----------------------------------------


def test_real_fragment_of_an_accepted_person_is_a_duplicate_not_a_second_person() -> None:
    """Stage 1's two proposals on COCO 000000000785.jpg (tests/data/fragments): the skier
    and a fragment of the skier (face and shoulders). OKS with the skier as reference is
    0.41, so a one-sided duplicate test recovered the fragment as a second person; over the
    keypoints both poses found it is 0.99."""
    pair = json.loads((REPO_ROOT / "tests/data/fragments/coco-000000000785.json").read_text())
    poses = np.asarray(pair["coarse_poses"], np.float32)
    props = CoarseProposals.grouped(
        np.asarray(pair["boxes_xyxy"], np.float32),
        np.asarray(pair["box_scores"], np.float32),
        poses,
    )
    assert (poses[1, :, 2] >= COARSE.keypoint_score_threshold).sum() > COARSE.min_keypoints
    out = filter_proposals(props, COARSE, (640, 425))
    # The fragment's box holds too little of its pose to own it (dropped), and the fragment
    # pose inside the skier's box repeats the skier: nobody is recovered from it.
    assert len(out) == 1 and not out.recovered.any()
    assert out.counts.recovered == 0 and out.counts.accepted == 1
    np.testing.assert_allclose(out.coarse_kpts_xys[0], poses[0], atol=1e-4)
    check_counts(out, 2)
