"""PoseExtractor: PAF grouping of peaks into poses, and pairing poses with box proposals."""

from __future__ import annotations

import numpy as np
import pytest

from model.filtering.grouping import assign_poses_to_boxes, group_poses, match_limb
from model.filtering.synthetic_proposals import person, proposals_from_poses
from model.keypoints import NUM_KEYPOINTS, SKELETON


def two_people() -> tuple[list[np.ndarray], np.ndarray]:
    kpts_a, box_a = person((100.0, 50.0), 200.0)
    kpts_b, box_b = person((300.0, 80.0), 160.0, score=0.8)
    return [kpts_a, kpts_b], np.stack([box_a, box_b])


def sort_poses(poses: np.ndarray) -> np.ndarray:
    return poses[np.argsort(poses[:, 0, 0])]


def test_match_limb_is_greedy_one_to_one() -> None:
    scores = np.array([[0.9, 0.8], [0.85, 0.1]])
    assert match_limb(scores, min_score=0.05) == [(0, 0, 0.9), (1, 1, 0.1)]
    assert match_limb(scores, min_score=0.2) == [(0, 0, 0.9)]
    assert match_limb(np.zeros((0, 0)), 0.05) == []


def test_two_separate_people_are_grouped_exactly() -> None:
    poses, _ = two_people()
    props = proposals_from_poses(poses, np.zeros((0, 4)), np.zeros(0), top_k=4)
    grouped = group_poses(props.peaks_xys, props.limb_scores)
    assert grouped.shape == (2, NUM_KEYPOINTS, 3)
    np.testing.assert_allclose(sort_poses(grouped), np.stack(poses), atol=1e-4)


def test_grouping_does_not_depend_on_peak_slots() -> None:
    poses, _ = two_people()
    props = proposals_from_poses(poses, np.zeros((0, 4)), np.zeros(0), top_k=3)
    rng = np.random.default_rng(0)
    perms = np.stack([rng.permutation(3) for _ in range(NUM_KEYPOINTS)])
    peaks = np.take_along_axis(props.peaks_xys, perms[:, :, None], axis=1)
    inverse = np.argsort(perms, axis=1)  # new slot of each old slot
    limbs = np.zeros_like(props.limb_scores)
    for limb, (a, b) in enumerate(SKELETON):
        limbs[limb][np.ix_(inverse[a], inverse[b])] = props.limb_scores[limb]
    grouped = group_poses(peaks, limbs)
    np.testing.assert_allclose(sort_poses(grouped), np.stack(poses), atol=1e-4)


def test_weaker_cross_person_connection_does_not_merge_people() -> None:
    poses, _ = two_people()
    props = proposals_from_poses(poses, np.zeros((0, 4)), np.zeros(0), top_k=2)
    limbs = props.limb_scores.copy()
    limbs[:, 0, 1] = 0.5  # every limb also weakly links person 0's start to person 1's end
    limbs[:, 1, 0] = 0.5
    grouped = group_poses(props.peaks_xys, limbs)
    np.testing.assert_allclose(sort_poses(grouped), np.stack(poses), atol=1e-4)


def test_stronger_single_cross_connection_cannot_give_a_pose_two_peaks_of_one_type() -> None:
    poses, _ = two_people()
    props = proposals_from_poses(poses, np.zeros((0, 4)), np.zeros(0), top_k=2)
    limbs = props.limb_scores.copy()
    limbs[10] = [[0.0, 0.95], [0.95, 0.0]]  # left elbow -> left wrist swapped, stronger
    grouped = group_poses(props.peaks_xys, limbs)
    # The swapped wrists join the other person; nobody gets two wrists, no peak is lost.
    assert grouped.shape[0] == 2
    assert (grouped[..., 2] > 0).sum() == 2 * NUM_KEYPOINTS
    wrists = sort_poses(grouped)[:, 9, 0]
    np.testing.assert_allclose(wrists, [poses[1][9, 0], poses[0][9, 0]], atol=1e-4)


def test_isolated_peaks_and_padding_form_no_pose() -> None:
    peaks = np.zeros((NUM_KEYPOINTS, 2, 3), np.float32)
    peaks[0, 0] = [10, 10, 0.9]
    peaks[5, 1] = [50, 50, 0.9]
    limbs = np.zeros((len(SKELETON), 2, 2), np.float32)
    limbs[7, 1, 1] = 0.9  # shoulders 5 -> 6, but keypoint 6 has only padding
    assert group_poses(peaks, limbs).shape == (0, NUM_KEYPOINTS, 3)


@pytest.mark.parametrize(
    ("heights", "union_pose"),
    [
        # The union box goes to the pose whose keypoint box (kpt2box) overlaps it most: the
        # taller person's, by IoU 0.552 vs 0.543 (A taller) and 0.570 vs 0.526 (B taller).
        ((200.0, 190.0), 0),
        ((190.0, 200.0), 1),
    ],
)
def test_assign_poses_to_boxes_prefers_the_tight_box(
    heights: tuple[float, float], union_pose: int
) -> None:
    kpts_a, box_a = person((200.0, 50.0), heights[0])
    kpts_b, box_b = person((250.0, 60.0), heights[1])  # overlapping neighbours
    union = np.concatenate([np.minimum(box_a[:2], box_b[:2]), np.maximum(box_a[2:], box_b[2:])])
    background = np.array([500.0, 300.0, 600.0, 400.0])
    boxes = np.stack([box_a, box_b, union, background])
    best, inside = assign_poses_to_boxes(boxes, np.stack([kpts_a, kpts_b]))
    assert best.tolist() == [0, 1, union_pose, -1]
    assert inside[2].tolist() == [True, True] and inside[3].tolist() == [False, False]
    assert inside[0].tolist() == [True, False]  # B sticks out of A's box by too much


def test_assign_poses_to_boxes_handles_no_poses_and_no_boxes() -> None:
    best, inside = assign_poses_to_boxes(np.ones((3, 4)), np.zeros((0, NUM_KEYPOINTS, 3)))
    assert best.tolist() == [-1, -1, -1] and inside.shape == (3, 0)
    best, inside = assign_poses_to_boxes(np.zeros((0, 4)), np.zeros((2, NUM_KEYPOINTS, 3)))
    assert best.shape == (0,) and inside.shape == (0, 2)
