"""Stage-1 compaction: heatmap peaks and PAF line-integral scores."""

from __future__ import annotations

import numpy as np
import torch

from model.codecs.peaks import extract_peaks, paf_limb_scores
from model.keypoints import NUM_KEYPOINTS, SKELETON

NUM_LIMBS = len(SKELETON)


def gaussian(
    hw: tuple[int, int], x: float, y: float, peak: float, sigma: float = 1.5
) -> torch.Tensor:
    ys, xs = torch.meshgrid(torch.arange(hw[0]).float(), torch.arange(hw[1]).float(), indexing="ij")
    return peak * torch.exp(-((xs - x) ** 2 + (ys - y) ** 2) / (2 * sigma**2))


def test_extract_peaks_finds_separate_maxima_sorted_and_padded() -> None:
    heatmaps = torch.zeros((2, NUM_KEYPOINTS, 40, 48))
    heatmaps[0, 3] = gaussian((40, 48), 10.3, 12.6, 0.9) + gaussian((40, 48), 30.0, 25.2, 0.6)
    heatmaps[0, 3] += gaussian((40, 48), 40.0, 5.0, 0.05)  # below the threshold
    heatmaps[1, 0] = gaussian((40, 48), 5.5, 30.0, 0.7)
    peaks = extract_peaks(heatmaps, threshold=0.1, top_k=3)
    assert peaks.shape == (2, NUM_KEYPOINTS, 3, 3)
    np.testing.assert_allclose(peaks[0, 3, 0].numpy(), [10.3, 12.6, 0.9], atol=0.05)
    np.testing.assert_allclose(peaks[0, 3, 1].numpy(), [30.0, 25.2, 0.6], atol=0.05)
    assert peaks[0, 3, 2].tolist() == [0.0, 0.0, 0.0]
    np.testing.assert_allclose(peaks[1, 0, 0].numpy(), [5.5, 30.0, 0.7], atol=0.05)
    # Channels with nothing above the threshold are all padding.
    assert peaks[0, 0].abs().sum() == 0 and peaks[1, 3].abs().sum() == 0


def test_extract_peaks_keeps_top_k_by_score_and_pads_small_maps() -> None:
    heatmaps = torch.zeros((1, NUM_KEYPOINTS, 3, 3))
    heatmaps[0, 1, 0, 0], heatmaps[0, 1, 2, 2], heatmaps[0, 1, 0, 2] = 0.3, 0.8, 0.5
    peaks = extract_peaks(heatmaps, threshold=0.1, top_k=2)
    assert peaks[0, 1, :, 2].tolist() == [0.800000011920929, 0.5]
    assert peaks[0, 1, :, :2].tolist() == [[2.0, 2.0], [2.0, 0.0]]
    more = extract_peaks(heatmaps, threshold=0.1, top_k=12)  # more slots than pixels
    assert more.shape == (1, NUM_KEYPOINTS, 12, 3) and (more[0, 1, 3:] == 0).all()


def straight_limb_field(
    hw: tuple[int, int], limb: int, segments: list[tuple[float, float, float, float]]
) -> torch.Tensor:
    """``[1, 38, h, w]`` PAFs with a unit field along each segment (width 1.5 px) for ``limb``."""
    pafs = torch.zeros((1, 2 * NUM_LIMBS, *hw))
    ys, xs = torch.meshgrid(torch.arange(hw[0]).float(), torch.arange(hw[1]).float(), indexing="ij")
    for x1, y1, x2, y2 in segments:
        d = torch.tensor([x2 - x1, y2 - y1], dtype=torch.float32)
        length = d.norm()
        u = d / length
        along = (xs - x1) * u[0] + (ys - y1) * u[1]
        across = ((xs - x1) * u[1] - (ys - y1) * u[0]).abs()
        on = (along >= 0) & (along <= length) & (across <= 1.5)
        pafs[0, 2 * limb] += on * u[0]
        pafs[0, 2 * limb + 1] += on * u[1]
    return pafs


def test_paf_score_is_one_for_true_pairs_and_zero_for_crossing_pairs() -> None:
    limb = 10  # left elbow (7) -> left wrist (9)
    a, b = SKELETON[limb]
    hw = (64, 64)
    pafs = straight_limb_field(hw, limb, [(10, 10, 40, 12), (10, 30, 40, 30)])
    peaks = torch.zeros((1, NUM_KEYPOINTS, 3, 3))
    peaks[0, a, 0], peaks[0, a, 1] = torch.tensor([10, 10, 0.9]), torch.tensor([10, 30, 0.9])
    peaks[0, b, 0], peaks[0, b, 1] = torch.tensor([40, 12, 0.9]), torch.tensor([40, 30, 0.9])
    scores = paf_limb_scores(pafs, peaks)
    assert scores.shape == (1, NUM_LIMBS, 3, 3)
    assert scores[0, limb, 0, 0] > 0.95 and scores[0, limb, 1, 1] > 0.95
    assert scores[0, limb, 0, 1] < 0.05 and scores[0, limb, 1, 0] < 0.05
    assert (scores[0, limb, 2] == 0).all() and (scores[0, limb, :, 2] == 0).all()  # padding
    others = [other for other in range(NUM_LIMBS) if other != limb]
    assert scores[0, others].abs().max() == 0  # no field, no score


def test_paf_score_is_zero_against_the_field_direction() -> None:
    limb = 3
    a, b = SKELETON[limb]
    pafs = straight_limb_field((48, 48), limb, [(30, 20, 10, 20)])  # field points from x=30 to x=10
    peaks = torch.zeros((1, NUM_KEYPOINTS, 1, 3))
    peaks[0, a, 0], peaks[0, b, 0] = torch.tensor([10, 20, 1.0]), torch.tensor([30, 20, 1.0])
    assert paf_limb_scores(pafs, peaks)[0, limb, 0, 0] == 0


def test_paf_score_penalises_limbs_longer_than_the_length_prior() -> None:
    limb = 0
    a, b = SKELETON[limb]
    pafs = straight_limb_field((40, 100), limb, [(5, 20, 95, 20)])
    peaks = torch.zeros((1, NUM_KEYPOINTS, 1, 3))
    peaks[0, a, 0], peaks[0, b, 0] = torch.tensor([5, 20, 1.0]), torch.tensor([95, 20, 1.0])
    # 90 px long against a prior of 0.5 * 40 = 20 px: 1 + (20 / 90 - 1) = 0.22.
    score = paf_limb_scores(pafs, peaks, length_prior=0.5)[0, limb, 0, 0].item()
    assert abs(score - 20 / 90) < 0.02
    assert paf_limb_scores(pafs, peaks, length_prior=3.0)[0, limb, 0, 0].item() > 0.95


def test_neighbourhood_maximum_equals_max_pool() -> None:
    from model.codecs.peaks import _max_3x3

    maps = torch.rand((2, 3, 9, 7))
    maps[0, 0, 0, 0] = 5.0  # a corner maximum: padding must not leak in
    assert torch.equal(_max_3x3(maps), torch.nn.functional.max_pool2d(maps, 3, stride=1, padding=1))
