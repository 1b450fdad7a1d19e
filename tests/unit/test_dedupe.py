"""Dropping recovered persons that refine onto a person already found (after refinement)."""

from __future__ import annotations

import numpy as np
import pytest

from model.codecs.boxes import kpt2box
from model.filtering.dedupe import dedupe_recovered
from model.filtering.filters import filter_proposals
from model.filtering.synthetic_proposals import person, proposals_from_poses
from model.inference.refiner import RefinedPoses
from model.keypoints import SKELETON
from pipeline.graph.actors import RefineStage
from pipeline.graph.model_stages import unchecked_stages
from pipeline.graph.rows import RETRY_COLUMNS
from pipeline.graph.stage1_record import Stage1Record
from pipeline.graph.tasks import filter_batch
from schemas.filtering import FilterSpec
from schemas.output import FILTER_COUNT_FIELDS, ORIGIN_DETECTED
from schemas.spec import JobSpec

IMAGE_WH = (640, 480)
TORSO_LINKS = [SKELETON.index((5, 11)), SKELETON.index((6, 12))]


def pose(x: float, score: float = 0.9) -> np.ndarray:
    kpts, _ = person((x, 80.0), 300.0, score)
    return kpts


def test_a_recovered_copy_of_a_detected_person_is_dropped():
    kpts = np.stack([pose(300.0), pose(301.0)])  # one person refined twice
    keep = dedupe_recovered(kpts, np.array([0.9, 0.6]), np.array([False, True]), 0.7)
    assert keep.tolist() == [True, False]


def test_a_detected_person_is_never_dropped_even_below_a_recovered_copy():
    kpts = np.stack([pose(300.0), pose(300.0)])
    keep = dedupe_recovered(kpts, np.array([0.2, 0.9]), np.array([False, True]), 0.7)
    assert keep.tolist() == [True, False]  # the detected one stays; the copy goes
    both_detected = dedupe_recovered(kpts, np.array([0.2, 0.9]), np.array([False, False]), 0.7)
    assert both_detected.tolist() == [True, True]


def test_of_two_recovered_copies_the_higher_scoring_one_stays():
    kpts = np.stack([pose(300.0), pose(300.5)])
    keep = dedupe_recovered(kpts, np.array([0.4, 0.8]), np.array([True, True]), 0.7)
    assert keep.tolist() == [False, True]


def test_distinct_people_are_kept_and_the_threshold_is_strict():
    kpts = np.stack([pose(150.0), pose(450.0)])
    keep = dedupe_recovered(kpts, np.array([0.9, 0.6]), np.array([False, True]), 0.1)
    assert keep.tolist() == [True, True]
    # Identical poses have OKS exactly 1: "above 1" drops nothing, "above 0.999" does.
    same = np.stack([pose(300.0), pose(300.0)])
    assert dedupe_recovered(same, np.array([0.9, 0.6]), np.array([False, True]), 1.0).all()
    keep = dedupe_recovered(same, np.array([0.9, 0.6]), np.array([False, True]), 0.999)
    assert keep.tolist() == [True, False]


def test_a_dropped_person_suppresses_nothing():
    # 10 px apart: OKS 0.79 between neighbours, 0.52 between the outer two.
    kpts = np.stack([pose(300.0), pose(310.0), pose(320.0)])
    scores, recovered = np.array([0.9, 0.8, 0.7]), np.array([False, True, True])
    keep = dedupe_recovered(kpts, scores, recovered, 0.7)
    assert keep.tolist() == [True, False, True]  # 2 repeats only the dropped 1


def test_low_score_keypoints_are_left_out():
    a, b = pose(300.0), pose(300.0)
    b[:8, :2] += 80.0  # the upper body elsewhere, but scored below the keypoint threshold
    b[:8, 2] = 0.05
    kpts = np.stack([a, b])
    recovered = np.array([False, True])
    assert dedupe_recovered(kpts, np.array([0.9, 0.6]), recovered, 0.9).tolist() == [True, True]
    keep = dedupe_recovered(kpts, np.array([0.9, 0.6]), recovered, 0.9, min_keypoint_score=0.1)
    assert keep.tolist() == [True, False]


def test_no_persons_or_no_recovered_keeps_all():
    assert dedupe_recovered(np.zeros((0, 17, 3)), np.zeros(0), np.zeros(0, bool), 0.5).size == 0
    kpts = np.stack([pose(300.0), pose(300.0)])
    assert dedupe_recovered(kpts, np.ones(2), np.zeros(2, bool), 0.5).all()


# --- the split-grouping case, through the filter and the refiner stage -----------------------


def split_person_proposals():
    """One person whose shoulder-hip links are missing: PAF grouping splits it in two."""
    kpts, box = person((300.0, 80.0), 300.0)
    props = proposals_from_poses([kpts], box[None], np.array([0.9]))
    limbs = props.limb_scores.copy()
    limbs[TORSO_LINKS] = 0.0
    return kpts, type(props)(props.boxes_xyxy, props.box_scores, props.peaks_xys, limbs)


def test_split_grouping_gives_a_detected_and_a_recovered_person():
    _, props = split_person_proposals()
    out = filter_proposals(props, FilterSpec(), IMAGE_WH)
    assert len(out) == 2 and out.recovered.tolist() == [False, True]


class SameCropRefiner:
    """What a top-down refiner does with two crops of one person: the same pose for both."""

    def __init__(self, kpts: np.ndarray):
        self.kpts = kpts

    def __call__(self, images, boxes_per_image, coarse_per_image=None):
        return [
            RefinedPoses(np.repeat(self.kpts[None], len(b), 0), np.full(len(b), 0.8, np.float32))
            for b in boxes_per_image
        ]


def stage1_columns(props) -> dict:
    """One row of DetPoseNet's stage-1 record (peaks and limb scores) holding ``props``."""
    record = Stage1Record.of(False, False, len(props.box_scores), props.peaks_xys.shape[1])
    columns = record.empty(1)
    record.put(columns, 0, props)
    return columns


def refined_row(kpts: np.ndarray, props, filter_settings: dict) -> dict:
    """The output row of one image whose proposals are ``props``, filtered as
    ``filter_settings`` say and refined by ``SameCropRefiner(kpts)``."""
    spec = JobSpec.parse(
        {
            "inputs": ["unused.jpg"],
            "output": "unused",
            "device": "cpu",
            "refiner": {"model": "detposenet"},
            "filter": filter_settings,
        }
    )
    image = np.zeros((IMAGE_WH[1], IMAGE_WH[0], 3), np.uint8)
    images = np.empty(1, dtype=object)
    images[0] = image
    batch = {
        "image_id": np.array([1]),
        "uri": np.array(["a.jpg"]),
        "status": np.array(["ok"]),
        "error_kind": np.array([""]),
        "error_message": np.array([""]),
        "width": np.array([IMAGE_WH[0]]),
        "height": np.array([IMAGE_WH[1]]),
        "scale": np.array([1.0]),
        "image": images,
        **stage1_columns(props),
        **{column: np.zeros(1, np.int32) for column in RETRY_COLUMNS},
    }
    filtered = filter_batch(batch, spec.filter)
    assert filtered["num_persons"][0] == 2
    refiner = RefineStage(unchecked_stages(spec)["refiner"], spec.filter, max_crops=4)
    refiner.model = SameCropRefiner(kpts.astype(np.float32))
    (row,) = refiner(filtered).to_pylist()
    return row


@pytest.mark.parametrize(("dedupe_oks", "persons"), [(None, 2), (0.7, 1)])
def test_split_person_refines_to_one_person_with_dedupe_on(dedupe_oks, persons):
    kpts, props = split_person_proposals()
    row = refined_row(kpts, props, {"recovered_dedupe_oks": dedupe_oks})
    assert len(row["persons"]) == persons
    assert row["persons"][0]["origin"] == ORIGIN_DETECTED
    assert row["counts"]["recovered"] == 1
    assert row["counts"]["recovered_duplicates_removed"] == 2 - persons
    assert row["counts"]["refinement_runs"] == 2  # both were refined; one was then dropped
    assert set(FILTER_COUNT_FIELDS) <= set(row["counts"])


def test_mode_none_refines_every_box_then_keeps_one_pose_per_body():
    """The paper's top-down baseline: two boxes on one person are both refined, and OKS-NMS
    on the refined poses keeps the better; the other counts as a duplicate, not accepted."""
    kpts = pose(300.0)
    box = kpt2box(kpts[None], 0.15)[0]
    props = proposals_from_poses(
        [kpts], np.stack([box, box + [4.0, -3.0, 2.0, 5.0]]), np.array([0.9, 0.8])
    )
    row = refined_row(kpts, props, {"mode": "none"})
    counts = row["counts"]
    assert len(row["persons"]) == 1 and row["persons"][0]["box_score"] == pytest.approx(0.9)
    assert counts["refinement_runs"] == 2
    assert (counts["accepted"], counts["dropped_duplicate"]) == (1, 1)
    assert counts["proposals"] == counts["accepted"] + counts["dropped_duplicate"]
