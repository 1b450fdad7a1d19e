"""Pose scores from refined keypoint scores (known answers)."""

from __future__ import annotations

import numpy as np
import pytest

from model.inference.refiner import POSE_SCORE_KEYPOINT_FLOOR, pose_scores
from model.keypoints import NUM_KEYPOINTS


def keypoint_scores(*values: float) -> np.ndarray:
    """One ``[17]`` row: ``values`` first, zeros after."""
    row = np.zeros(NUM_KEYPOINTS, np.float32)
    row[: len(values)] = values
    return row


def test_pose_score_is_the_mean_of_the_keypoint_scores_above_the_floor() -> None:
    assert POSE_SCORE_KEYPOINT_FLOOR == 0.2
    scores = np.stack(
        [
            keypoint_scores(0.1, 0.5, 0.9, 0.2, 0.4),  # 0.1, 0.2 (not above) and zeros left out
            keypoint_scores(*[1.0] * NUM_KEYPOINTS),
            keypoint_scores(0.15, 0.2, 0.05),  # nothing above the floor
            keypoint_scores(),
            keypoint_scores(0.25),
        ]
    )
    result = pose_scores(scores)
    assert result.shape == (5,)
    np.testing.assert_allclose(result, [0.6, 1.0, 0.0, 0.0, 0.25], rtol=1e-6)


def test_pose_score_floor_is_a_parameter() -> None:
    scores = keypoint_scores(0.1, 0.5, 0.9, 0.4)[None]
    np.testing.assert_allclose(pose_scores(scores, floor=0.45), [0.7], rtol=1e-6)
    np.testing.assert_allclose(pose_scores(scores, floor=0.0), [0.475], rtol=1e-6)
    assert pose_scores(scores, floor=0.9).tolist() == [0.0]


@pytest.mark.parametrize("num", [0, 3])
def test_pose_scores_keep_one_score_per_pose(num: int) -> None:
    assert pose_scores(np.full((num, NUM_KEYPOINTS), 0.5, np.float32)).tolist() == [0.5] * num
