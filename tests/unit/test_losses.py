"""Known-answer tests of the losses (paper eqs. 1-2, L_det, L_p)."""

from __future__ import annotations

import math

import pytest
import torch

from model.keypoints import KEYPOINT_NAMES, LIMB_TRIPLETS, NUM_KEYPOINTS, SKELETON
from model.training.losses import (
    association_neighbours,
    detection_loss,
    focal_loss,
    masked_mse,
    multiscale_loss,
    per_keypoint_l2,
    proposal_loss,
    refiner_loss,
    skeleton_neighbours,
    structure_aware_loss,
    structure_neighbours,
)

IDX = {name: i for i, name in enumerate(KEYPOINT_NAMES)}


def _three_keypoint_example() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Heatmaps [1, 3, 1, 2] with per-keypoint MSE d = (1, 2, 0) against zero predictions."""
    target = torch.tensor([[[[1.0, 1.0]], [[2.0, 0.0]], [[0.0, 0.0]]]])
    return torch.zeros_like(target), target, torch.ones(1, 3)


def test_structure_aware_loss_equals_hand_computed_value() -> None:
    pred, target, weight = _three_keypoint_example()
    chain = ((1,), (0, 2), (1,))  # 0 - 1 - 2: keypoint 1 is a triplet's middle joint
    alpha2 = 0.5
    # d = (1, 2, 0): 1/3 [(1 + .5*2) + (2 + .5*(1 + 0)) + (0 + .5*2)] = 5.5 / 3
    loss = structure_aware_loss(pred, target, weight, alpha2, neighbours=chain)
    assert loss.item() == pytest.approx(5.5 / 3, abs=1e-6)


def test_structure_aware_loss_is_mean_per_keypoint_l2_without_neighbour_weight() -> None:
    gen = torch.Generator().manual_seed(0)
    pred = torch.rand(2, NUM_KEYPOINTS, 8, 6, generator=gen)
    target = torch.rand(2, NUM_KEYPOINTS, 8, 6, generator=gen)
    weight = (torch.rand(2, NUM_KEYPOINTS, generator=gen) > 0.3).float()
    expected = (((pred - target) ** 2).mean(dim=(2, 3)) * weight).mean()
    assert structure_aware_loss(pred, target, weight, alpha2=0.0).item() == pytest.approx(
        expected.item(), rel=1e-6
    )
    assert structure_aware_loss(pred, target, weight, alpha2=0.5).item() > expected.item()


def test_invisible_keypoints_do_not_count() -> None:
    pred, target, _ = _three_keypoint_example()
    weight = torch.tensor([[1.0, 0.0, 1.0]])
    assert per_keypoint_l2(pred, target, weight).tolist() == [[1.0, 0.0, 0.0]]
    # Only d_0 = 1 is left: 1/3 (1 + 0.5 * 1 from keypoint 1's neighbour term) = 0.5
    loss = structure_aware_loss(pred, target, weight, 0.5, neighbours=((1,), (0, 2), (1,)))
    assert loss.item() == pytest.approx(0.5)


def test_legacy_neighbour_terms_are_the_neighbouring_keypoints() -> None:
    neighbours = skeleton_neighbours()
    for side in ("left", "right"):
        assert set(neighbours[IDX[f"{side}_elbow"]]) == {
            IDX[f"{side}_shoulder"],
            IDX[f"{side}_wrist"],
        }
        assert neighbours[IDX[f"{side}_wrist"]] == (IDX[f"{side}_elbow"],)


def test_association_neighbours_are_pairs_plus_elbow_and_knee_triplets() -> None:
    neighbours = association_neighbours()
    assert len(neighbours) == NUM_KEYPOINTS
    pair_channel = {frozenset(p): NUM_KEYPOINTS + e for e, p in enumerate(SKELETON)}
    triplet_channel = {t[1]: NUM_KEYPOINTS + len(SKELETON) + i for i, t in enumerate(LIMB_TRIPLETS)}
    for side in ("left", "right"):
        shoulder, elbow, wrist = (IDX[f"{side}_{j}"] for j in ("shoulder", "elbow", "wrist"))
        hip, knee, ankle = (IDX[f"{side}_{j}"] for j in ("hip", "knee", "ankle"))
        # an elbow: its two pairs and the shoulder-elbow-wrist triplet (the three-way term)
        assert set(neighbours[elbow]) == {
            pair_channel[frozenset((shoulder, elbow))],
            pair_channel[frozenset((elbow, wrist))],
            triplet_channel[elbow],
        }
        assert set(neighbours[knee]) == {
            pair_channel[frozenset((hip, knee))],
            pair_channel[frozenset((knee, ankle))],
            triplet_channel[knee],
        }
        # a wrist or ankle: its one pair, no triplet
        assert neighbours[wrist] == (pair_channel[frozenset((elbow, wrist))],)
        assert neighbours[ankle] == (pair_channel[frozenset((knee, ankle))],)
    # every neighbour is an association channel, never another keypoint's own heatmap
    assert all(c >= NUM_KEYPOINTS for ns in neighbours for c in ns)
    triplet_members = [
        n for n, ns in enumerate(neighbours) if set(ns) & set(triplet_channel.values())
    ]
    assert sorted(triplet_members) == sorted(t[1] for t in LIMB_TRIPLETS)
    assert structure_neighbours("keypoints") == tuple(() for _ in range(NUM_KEYPOINTS))


def test_structure_aware_loss_with_association_channels_hand_computed() -> None:
    # 2 keypoints + 1 association channel; d = (1, 4, 9) against zero predictions.
    target = torch.tensor([[[[1.0]], [[2.0]], [[3.0]]]])
    pred, weight = torch.zeros_like(target), torch.ones(1, 3)
    neighbours = ((2,), (2,))  # both keypoints belong to the pair in channel 2
    # 1/M sum_n (d_n + a2 * d_2) = 1/2 [(1 + .5*9) + (4 + .5*9)] = 7
    assert structure_aware_loss(pred, target, weight, 0.5, neighbours).item() == pytest.approx(7.0)
    # an unlabelled chain (weight 0) adds nothing: 1/2 (1 + 4)
    weight[0, 2] = 0.0
    assert structure_aware_loss(pred, target, weight, 0.5, neighbours).item() == pytest.approx(2.5)


def test_multiscale_loss_averages_over_scales() -> None:
    weight = torch.ones(1, 2)
    coarse_t = torch.zeros(1, 2, 2, 2)
    fine_t = torch.zeros(1, 2, 4, 4)
    coarse_p = torch.full_like(coarse_t, 1.0)  # d = (1, 1) -> L_SA = 1 at alpha2 = 0
    fine_p = torch.full_like(fine_t, 3.0)  # d = (9, 9) -> L_SA = 9
    loss = multiscale_loss([coarse_p, fine_p], [coarse_t, fine_t], weight, alpha2=0.0)
    assert loss.item() == pytest.approx((1.0 + 9.0) / 2)


def test_refiner_loss_adds_every_stacks_mss_and_the_msr_term_at_every_scale() -> None:
    weight = torch.ones(1, 2)
    targets = [torch.zeros(1, 2, 2, 2), torch.zeros(1, 2, 4, 4)]
    stack1 = [torch.full((1, 2, 2, 2), 1.0), torch.full((1, 2, 4, 4), 1.0)]  # L_MSS = 1
    stack2 = [torch.full((1, 2, 2, 2), 2.0), torch.full((1, 2, 4, 4), 2.0)]  # L_MSS = 4
    # MSR matched at each scale (paper): L_SA 0.25 at the coarse scale, 1 at the fine one
    msr = [torch.full((1, 2, 2, 2), 0.5), torch.full((1, 2, 4, 4), 1.0)]
    out = refiner_loss(stack1 + stack2, msr, targets, weight, alpha2=0.0)
    assert out["mss"].item() == pytest.approx(2.5)
    assert out["msr"].item() == pytest.approx(0.25 + 1.0)  # summed over the MSR's scales
    assert out["total"].item() == pytest.approx(2.5 + 1.25)
    # msr: final matches the final scale only; msr: off adds nothing
    final_only = refiner_loss(stack1 + stack2, msr[-1:], targets, weight, alpha2=0.0)
    assert final_only["msr"].item() == pytest.approx(1.0)
    off = refiner_loss(stack1 + stack2, [], targets, weight, alpha2=0.0)
    assert off["msr"].item() == 0.0 and off["total"].item() == pytest.approx(2.5)


def test_focal_loss_known_values() -> None:
    target = torch.tensor([[[[1.0, 0.5]]]])
    logits = torch.zeros(1, 1, 1, 2)  # p = 0.5 everywhere
    # centre: (1 - .5)^2 * ln 2; other cell: (1 - .5)^4 * .5^2 * ln 2; one centre
    expected = 0.25 * math.log(2) + 0.0625 * 0.25 * math.log(2)
    assert focal_loss(logits, target).item() == pytest.approx(expected, rel=1e-5)
    confident = torch.tensor([[[[20.0, -20.0]]]])
    assert focal_loss(confident, target).item() < 1e-6


def test_detection_loss_l1_only_at_centre_cells() -> None:
    targets = {
        "centre": torch.tensor([[[[1.0, 0.0]]]]),
        "size": torch.tensor([[[[4.0, 0.0]], [[6.0, 0.0]]]]),
        "offset": torch.tensor([[[[0.25, 0.0]], [[-0.25, 0.0]]]]),
        "reg_mask": torch.tensor([[[[1.0, 0.0]]]]),
    }
    size = torch.tensor([[[[3.0, 100.0]], [[6.0, 100.0]]]])  # error 1 at the centre, junk elsewhere
    offset = torch.zeros(1, 2, 1, 2)  # error 0.25 + 0.25
    logits = torch.tensor([[[[20.0, -20.0]]]])
    out = detection_loss(logits, size, offset, targets, size_weight=0.1, offset_weight=1.0)
    assert out["size"].item() == pytest.approx(1.0)
    assert out["offset"].item() == pytest.approx(0.5)
    assert out["det"].item() == pytest.approx(out["centre"].item() + 0.1 + 0.5, rel=1e-6)


def test_proposal_loss_is_weighted_det_plus_kpt() -> None:
    targets = {
        "centre": torch.tensor([[[[1.0, 0.0]]]]),
        "size": torch.zeros(1, 2, 1, 2),
        "offset": torch.zeros(1, 2, 1, 2),
        "reg_mask": torch.tensor([[[[1.0, 0.0]]]]),
        "heatmaps": torch.zeros(1, 17, 1, 2),
        "pafs": torch.zeros(1, 38, 1, 2),
    }
    heatmaps = [torch.full((1, 17, 1, 2), 0.1), torch.full((1, 17, 1, 2), 0.3)]  # MSE .01, .09
    pafs = [torch.full((1, 38, 1, 2), 0.2), torch.full((1, 38, 1, 2), 0.2)]  # MSE .04
    out = proposal_loss(
        heatmaps, pafs, torch.zeros(1, 1, 1, 2), targets["size"], targets["offset"], targets,
        det_weight=2.0, heatmap_weight=10.0, paf_weight=5.0, size_weight=0.1, offset_weight=1.0,
    )  # fmt: skip
    assert out["heatmap"].item() == pytest.approx(0.05)
    assert out["paf"].item() == pytest.approx(0.04)
    assert out["kpt"].item() == pytest.approx(10 * 0.05 + 5 * 0.04)
    assert out["total"].item() == pytest.approx(2.0 * out["det"].item() + out["kpt"].item())


def test_masked_mse_averages_over_channels_and_valid_pixels_only() -> None:
    pred = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]], [[0.0, 0.0], [0.0, 2.0]]]])  # [1, 2, 2, 2]
    target = torch.zeros_like(pred)
    weight = torch.tensor([[[[1.0, 0.0], [1.0, 1.0]]]])  # the pixel holding 2 and 0 is ignored
    # channel 0: 1 + 9 + 16, channel 1: 0 + 0 + 4, over 3 valid pixels x 2 channels
    assert masked_mse(pred, target, weight).item() == pytest.approx(30 / 6)
    assert masked_mse(pred, target).item() == pytest.approx(34 / 8)
    assert masked_mse(pred, target, torch.ones(1, 1, 2, 2)).item() == pytest.approx(34 / 8)
    assert masked_mse(pred, target, torch.zeros(1, 1, 2, 2)).item() == 0.0
    with pytest.raises(ValueError, match=r"\[internal\] pixel weight of shape \(1, 2, 2, 2\)"):
        masked_mse(pred, target, torch.ones(1, 2, 2, 2))


def test_focal_loss_drops_weighted_negatives_but_never_the_centre() -> None:
    target = torch.tensor([[[[1.0, 0.5], [0.0, 0.0]]]])
    logits = torch.zeros(1, 1, 2, 2)  # p = 0.5 everywhere
    ln2 = math.log(2)
    # centre .25 ln2; negatives: (1 - .5)^4 * .25 ln2 and twice .25 ln2; one centre
    assert focal_loss(logits, target).item() == pytest.approx((0.25 + 0.015625 + 0.5) * ln2)
    weight = torch.tensor([[[[0.0, 1.0], [0.0, 1.0]]]])  # the centre's own weight does not matter
    expected = (0.25 + 0.015625 + 0.25) * ln2
    assert focal_loss(logits, target, weight).item() == pytest.approx(expected, rel=1e-6)


def _stage1_targets() -> dict[str, torch.Tensor]:
    return {
        "centre": torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]]]),
        "size": torch.zeros(1, 2, 2, 2),
        "offset": torch.zeros(1, 2, 2, 2),
        "reg_mask": torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]]]),
        "heatmaps": torch.zeros(1, 17, 2, 2),
        "pafs": torch.zeros(1, 38, 2, 2),
    }


def _stage1_loss(heatmaps: torch.Tensor, pafs: torch.Tensor, targets: dict) -> dict:
    return proposal_loss(
        [heatmaps], [pafs], torch.zeros(1, 1, 2, 2), targets["size"], targets["offset"], targets,
        det_weight=1.0, heatmap_weight=100.0, paf_weight=10.0, size_weight=0.1, offset_weight=1.0,
    )  # fmt: skip


def test_a_prediction_wrong_only_where_ignored_costs_no_keypoint_loss() -> None:
    heatmaps, pafs = torch.zeros(1, 17, 2, 2), torch.zeros(1, 38, 2, 2)
    heatmaps[:, :, 1, 0], pafs[:, :, 1, 0] = 1.0, 0.5  # wrong only at pixel (row 1, col 0)
    trained = torch.tensor([[[[1.0, 1.0], [0.0, 1.0]]]])  # 0: ignored
    masked = _stage1_loss(heatmaps, pafs, {**_stage1_targets(), "kpt_weight": trained})
    assert masked["heatmap"].item() == 0.0 and masked["paf"].item() == 0.0
    assert masked["kpt"].item() == 0.0
    plain = _stage1_loss(heatmaps, pafs, _stage1_targets())
    assert plain["heatmap"].item() == pytest.approx(1 / 4)
    assert plain["paf"].item() == pytest.approx(0.25 / 4)


def test_stage1_batches_without_weights_train_every_pixel() -> None:
    gen = torch.Generator().manual_seed(0)
    heatmaps, pafs = torch.rand(1, 17, 2, 2, generator=gen), torch.rand(1, 38, 2, 2, generator=gen)
    ones = {"kpt_weight": torch.ones(1, 1, 2, 2), "det_weight": torch.ones(1, 1, 2, 2)}
    plain = _stage1_loss(heatmaps, pafs, _stage1_targets())
    weighted = _stage1_loss(heatmaps, pafs, {**_stage1_targets(), **ones})
    for key, value in plain.items():
        assert weighted[key].item() == pytest.approx(value.item(), rel=1e-6), key
    det_masked = _stage1_loss(
        heatmaps,
        pafs,
        {**_stage1_targets(), "det_weight": torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]]])},
    )
    # Only the centre's positive term is left: (1 - .5)^2 ln 2 at logit 0.
    assert det_masked["centre"].item() == pytest.approx(0.25 * math.log(2), rel=1e-6)
    assert det_masked["heatmap"].item() == pytest.approx(plain["heatmap"].item())
