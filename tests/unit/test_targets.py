"""Known-answer tests of heatmap, PAF and detection targets."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from model.codecs.affine import box_to_affine
from model.codecs.coords import apply_affine, heatmap_to_input, input_to_heatmap, scale_affine
from model.codecs.detection import decode_proposals, encode_detection_targets
from model.codecs.targets import association_heatmaps, gaussian_heatmaps, paf_targets
from model.keypoints import NUM_KEYPOINTS, SKELETON

STRIDES = (16, 8, 4)
CROP_HW = (64, 48)


def _subpixel_peak(channel: torch.Tensor) -> tuple[float, float]:
    """Peak of a Gaussian from the 3-point parabola through its log (exact for a Gaussian)."""
    height, width = channel.shape
    row, col = divmod(int(channel.argmax()), width)
    log = channel.double().clamp(min=1e-300).log()

    def vertex(a: float, b: float, c: float) -> float:
        return 0.5 * (a - c) / (a - 2 * b + c)

    assert 0 < col < width - 1 and 0 < row < height - 1, "peak on the border"
    dx = vertex(log[row, col - 1], log[row, col], log[row, col + 1])
    dy = vertex(log[row - 1, col], log[row, col], log[row + 1, col])
    return col + float(dx), row + float(dy)


def test_target_heatmaps_peak_exactly_at_the_keypoint_at_every_scale() -> None:
    # Inside the interior of even the 4 x 3 stride-16 map, so the peak has neighbours on all sides.
    kpts_crop = np.array([[21.3, 30.6], [27.0, 20.2], [17.7, 44.5]])
    for stride in STRIDES:
        out_hw = (CROP_HW[0] // stride, CROP_HW[1] // stride)
        coords = input_to_heatmap(kpts_crop, stride)
        maps = gaussian_heatmaps(
            coords[:, None], np.ones((3, 1)), out_hw, sigma=1.0
        )  # 3 persons, 1 kpt
        one_person = gaussian_heatmaps(coords[None], np.ones((1, 3)), out_hw, sigma=1.0)
        for k, (x, y) in enumerate(coords):
            row, col = divmod(int(one_person[k].argmax()), out_hw[1])
            assert (col, row) == (round(x), round(y)), f"stride {stride} keypoint {k}"
            px, py = _subpixel_peak(one_person[k])
            assert (px, py) == pytest.approx((x, y), abs=1e-6), f"stride {stride} keypoint {k}"
        assert maps.shape == (1, *out_hw)


def test_heatmap_is_one_on_a_pixel_centre_and_empty_when_unlabelled() -> None:
    maps = gaussian_heatmaps(
        np.array([[[3.0, 2.0], [1.0, 1.0]]]), np.array([[1.0, 0.0]]), (5, 6), sigma=1.5
    )
    assert maps[0, 2, 3].item() == 1.0
    assert maps[0, 2, 4].item() == pytest.approx(np.exp(-1 / (2 * 1.5**2)))
    assert maps[1].abs().sum().item() == 0.0


def test_heatmap_coords_agree_with_the_crop_affine() -> None:
    affine = box_to_affine(np.array([[100.0, 50.0, 180.0, 210.0]]), CROP_HW)
    pts_img = np.array([[[130.0, 90.0], [170.0, 200.0]]])
    pts_crop = apply_affine(affine, pts_img)
    for stride in STRIDES:
        via_affine = apply_affine(scale_affine(affine, 1.0 / stride), pts_img)
        np.testing.assert_allclose(input_to_heatmap(pts_crop, stride), via_affine, atol=1e-9)


def test_paf_is_the_unit_vector_on_the_limb_and_zero_elsewhere() -> None:
    kpts = np.zeros((1, NUM_KEYPOINTS, 2))
    weights = np.zeros((1, NUM_KEYPOINTS))
    limb = 0
    a, b = SKELETON[limb]
    kpts[0, a], kpts[0, b] = (2.0, 5.0), (10.0, 5.0)  # horizontal, pointing +x
    weights[0, [a, b]] = 1.0
    pafs = paf_targets(kpts, weights, (10, 14), limb_width=1.0)
    assert pafs.shape == (2 * len(SKELETON), 10, 14)
    np.testing.assert_allclose(pafs[0, 4:7, 2:11].numpy(), 1.0)  # rows 4..6, columns 2..10
    assert pafs[1].abs().sum().item() == 0.0  # no y component
    assert pafs[0, 3].abs().sum().item() == 0.0 and pafs[0, 7].abs().sum().item() == 0.0
    assert pafs[0, 5, 11].item() == 0.0 and pafs[0, 5, 1].item() == 0.0  # past the ends
    assert pafs[2:].abs().sum().item() == 0.0  # other limbs unlabelled


def test_paf_averages_overlapping_limbs() -> None:
    kpts = np.zeros((2, NUM_KEYPOINTS, 2))
    weights = np.zeros((2, NUM_KEYPOINTS))
    a, b = SKELETON[0]
    kpts[0, a], kpts[0, b] = (0.0, 2.0), (4.0, 2.0)  # +x
    kpts[1, a], kpts[1, b] = (2.0, 0.0), (2.0, 4.0)  # +y
    weights[:, [a, b]] = 1.0
    pafs = paf_targets(kpts, weights, (5, 5), limb_width=0.5)
    assert (pafs[0, 2, 2].item(), pafs[1, 2, 2].item()) == pytest.approx((0.5, 0.5))


def test_detection_targets_round_trip_through_decoding() -> None:
    stride, out_hw = 4, (32, 32)
    boxes = np.array([[10.0, 20.0, 50.0, 100.0], [70.3, 15.9, 120.6, 60.2]])
    targets = encode_detection_targets(boxes, out_hw, stride)
    assert targets.reg_mask.sum().item() == 2
    assert targets.centre.max().item() == 1.0
    logits = torch.where(targets.centre >= 1.0, 5.0, -5.0)[None]
    decoded, scores = decode_proposals(
        logits, targets.size[None], targets.offset[None], top_k=4, stride=stride
    )
    assert decoded.shape == (1, 4, 4) and scores.shape == (1, 4)
    order = np.argsort(decoded[0, :2, 0].numpy())
    np.testing.assert_allclose(decoded[0, :2].numpy()[order], boxes, atol=1e-4)
    assert scores[0, :2].min().item() == pytest.approx(torch.sigmoid(torch.tensor(5.0)).item())
    assert scores[0, 2:].max().item() < 0.01  # the plateau far from boxes scores sigmoid(-5)


def test_heatmap_coords_round_trip():

    pts = np.array([[0.0, 0.0], [3.0, 7.5], [-0.5, 126.25]])
    np.testing.assert_allclose(heatmap_to_input(input_to_heatmap(pts, 4), 4), pts, atol=1e-12)
    np.testing.assert_allclose(input_to_heatmap([[1.5, 5.5]], 4), [[0.0, 1.0]])


def test_association_ridges_follow_the_chain_hand_computed() -> None:
    # One person: keypoint 0 at (2, 2), keypoint 1 at (6, 2), keypoint 2 at (6, 6), others off.
    kpts = np.zeros((1, NUM_KEYPOINTS, 2))
    kpts[0, :3] = [[2.0, 2.0], [6.0, 2.0], [6.0, 6.0]]
    weights = np.zeros((1, NUM_KEYPOINTS))
    weights[0, :3] = 1
    sigma = 1.0
    maps, chain_weights = association_heatmaps(
        kpts, weights, (9, 9), sigma, pairs=((0, 1), (1, 3)), triplets=((0, 1, 2),)
    )
    assert maps.shape == (3, 9, 9) and chain_weights.tolist() == [1.0, 0.0, 1.0]
    pair, unlabelled, triplet = maps
    # on the segment: 1; one pixel off it: exp(-1/2); beyond its end, distance to the end
    assert pair[2, 4].item() == pytest.approx(1.0)
    assert pair[3, 4].item() == pytest.approx(np.exp(-0.5), rel=1e-6)
    assert pair[2, 8].item() == pytest.approx(np.exp(-4 / 2), rel=1e-6)
    assert unlabelled.abs().max().item() == 0.0  # keypoint 3 is unlabelled
    # the triplet is the bent limb: both segments, the nearer one counts
    assert triplet[4, 6].item() == pytest.approx(1.0)  # on the second segment
    assert triplet[2, 3].item() == pytest.approx(1.0)  # on the first
    assert triplet[4, 4].item() == pytest.approx(np.exp(-4 / 2), rel=1e-6)  # 2 px from both


def test_refiner_items_carry_the_association_channels(tmp_path) -> None:
    from PIL import Image

    from model.training.datasets import CocoImage, RefinerDataset
    from schemas.network_configs import refiner_preset

    Image.new("RGB", (64, 64), (90, 90, 90)).save(tmp_path / "a.png")
    kpts = np.zeros((1, NUM_KEYPOINTS, 3))
    kpts[0, [5, 7, 9], :] = [[20, 20, 2], [30, 30, 2], [40, 30, 2]]  # left arm only
    rec = CocoImage(1, str(tmp_path / "a.png"), 64, 64, np.array([[10.0, 10, 50, 50]]), kpts)
    cfg = refiner_preset("tiny")
    item = RefinerDataset([rec], cfg, augment=False)[0]
    weight = item["weight"]
    assert weight.shape == (40,)
    assert weight[:17].nonzero().flatten().tolist() == [5, 7, 9]
    labelled_pairs = [e for e, (a, b) in enumerate(SKELETON) if {a, b} <= {5, 7, 9}]
    assert weight[17:36].nonzero().flatten().tolist() == labelled_pairs
    assert weight[36:].tolist() == [1.0, 0.0, 0.0, 0.0]  # left shoulder-elbow-wrist only
    for s in cfg.supervision_strides:
        assert item[f"heatmaps_s{s}"].shape == (40, 64 // s, 48 // s)
    assert item["heatmaps_s4"][36].max().item() > 0.9
