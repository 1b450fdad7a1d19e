"""After refinement: drop recovered persons that refined onto a person already in the image.

Algorithm 1 (lines 7-10) recovers a missed person when a second valid coarse pose lies in an
accepted box. When the grouping of one person's keypoints splits (say its shoulder-hip links
are missing), the fragment is such a pose: it becomes a 'recovered' person, and the refiner,
seeing nearly the same crop, refines both to the same pose. Comparing the refined poses by
OKS finds those duplicates, which the coarse fragments (too unlike each other) could not.
"""

from __future__ import annotations

import numpy as np

from model.keypoints import NUM_KEYPOINTS, pose_oks

__all__ = ["dedupe_recovered"]


def dedupe_recovered(
    kpts_xys: np.ndarray,
    scores: np.ndarray,
    recovered: np.ndarray,
    oks_threshold: float,
    min_keypoint_score: float = 0.0,
) -> np.ndarray:
    """Which of one image's refined persons to keep.

    A recovered person is dropped when its refined pose has OKS above ``oks_threshold``
    against a detected person's (whatever the scores), or against a kept recovered person
    with a higher score. Detected persons are always kept, and a dropped person suppresses
    nothing. The OKS is Algorithm 1's (``model.keypoints.pose_oks``): symmetric, over the
    keypoints both poses have, at the larger pose's scale.

    Args:
        kpts_xys: ``[N, 17, 3]`` refined poses ``(x, y, score)``, image pixels.
        scores: ``[N]`` instance scores (ties: the lower index ranks first).
        recovered: ``[N]`` bool, True for persons recovered by Algorithm 1.
        oks_threshold: OKS above this makes a recovered person a duplicate.
        min_keypoint_score: keypoints scoring below this are left out of the OKS (a refiner
            guesses every keypoint; weak guesses of hidden ones say little).

    Returns:
        ``[N]`` bool keep mask.
    """
    kpts = np.asarray(kpts_xys, dtype=np.float64).reshape(-1, NUM_KEYPOINTS, 3).copy()
    recovered = np.asarray(recovered, dtype=bool).reshape(-1)
    keep = np.ones(len(kpts), dtype=bool)
    if not recovered.any() or len(kpts) < 2:
        return keep
    kpts[kpts[..., 2] < min_keypoint_score, 2] = 0.0
    similarity = pose_oks(kpts, kpts)
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order))
    for i in order.tolist():
        if not recovered[i]:
            continue
        # References: every detected person, and kept recovered persons ranked above i.
        reference = keep & (~recovered | (rank < rank[i]))
        reference[i] = False
        if (similarity[i, reference] > oks_threshold).any():
            keep[i] = False
    return keep
