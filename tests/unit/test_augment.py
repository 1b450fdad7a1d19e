"""Keypoint masking and geometric augmentation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from model.codecs.affine import warp_crops
from model.keypoints import KEYPOINT_NAMES, NUM_KEYPOINTS
from model.training.augment import (
    AugmentParams,
    augmentation_affine,
    compose_affines,
    mask_keypoints,
    transform_boxes,
    transform_keypoints,
)

IDX = {name: i for i, name in enumerate(KEYPOINT_NAMES)}


def _textured_image(height: int = 120, width: int = 160, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def _person(points: dict[str, tuple[float, float]]) -> np.ndarray:
    kpts = np.zeros((NUM_KEYPOINTS, 3))
    for name, (x, y) in points.items():
        kpts[IDX[name]] = (x, y, 2)
    return kpts


def _changed(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    return (before != after).any(axis=-1)


def _inside(patch: tuple[int, int, int, int], shape: tuple[int, ...]) -> np.ndarray:
    mask = np.zeros(shape[:2], dtype=bool)
    x0, y0, x1, y1 = patch
    mask[y0:y1, x0:x1] = True
    return mask


@pytest.mark.parametrize("seed", range(5))
def test_background_masking_changes_pixels_only_in_a_patch_over_the_chosen_keypoint(
    seed: int,
) -> None:
    image = _textured_image()
    kpts = _person({"left_wrist": (40.0, 50.0), "left_elbow": (60.0, 40.0), "nose": (80.0, 20.0)})
    out, patches = mask_keypoints(
        image, kpts, kpts[kpts[:, 2] > 0, :2], 12, np.random.default_rng(seed), 1.0, 0.0
    )
    assert len(patches) == 1 and patches[0].kind == "background"
    patch = patches[0]
    x, y = kpts[patch.keypoint, :2]
    x0, y0, x1, y1 = patch.dst_xyxy
    assert x0 <= x < x1 and y0 <= y < y1, "the pasted patch covers the chosen keypoint"
    changed = _changed(image, out)
    assert changed.any()
    assert not (changed & ~_inside(patch.dst_xyxy, image.shape)).any()
    sx0, sy0, sx1, sy1 = patch.src_xyxy
    np.testing.assert_array_equal(out[y0:y1, x0:x1], image[sy0:sy1, sx0:sx1])
    # The source is background: no keypoint lies in it.
    assert not (
        (kpts[:, 0] >= sx0) & (kpts[:, 0] < sx1) & (kpts[:, 1] >= sy0) & (kpts[:, 1] < sy1)
    ).any()


@pytest.mark.parametrize("seed", range(5))
def test_duplication_masking_pastes_the_keypoint_patch_onto_nearby_background(seed: int) -> None:
    image = _textured_image()
    kpts = _person({"right_knee": (90.0, 70.0), "right_ankle": (95.0, 100.0)})
    out, patches = mask_keypoints(
        image, kpts, kpts[kpts[:, 2] > 0, :2], 10, np.random.default_rng(seed), 0.0, 1.0
    )
    assert len(patches) == 1 and patches[0].kind == "duplicate"
    patch = patches[0]
    sx0, sy0, sx1, sy1 = patch.src_xyxy
    x, y = kpts[patch.keypoint, :2]
    assert sx0 <= x < sx1 and sy0 <= y < sy1, "the copied patch holds the chosen keypoint"
    changed = _changed(image, out)
    assert not (changed & ~_inside(patch.dst_xyxy, image.shape)).any()
    x0, y0, x1, y1 = patch.dst_xyxy
    np.testing.assert_array_equal(out[y0:y1, x0:x1], image[sy0:sy1, sx0:sx1])
    centre_dist = np.hypot((x0 + x1) / 2 - (sx0 + sx1) / 2, (y0 + y1) / 2 - (sy0 + sy1) / 2)
    assert centre_dist <= 3 * 10 + 10, "nearby"


def test_no_masking_at_probability_zero() -> None:
    image = _textured_image()
    kpts = _person({"nose": (50.0, 50.0)})
    out, patches = mask_keypoints(image, kpts, kpts[:1, :2], 12, np.random.default_rng(0), 0.0, 0.0)
    assert patches == [] and np.array_equal(out, image)


def test_flip_swaps_left_and_right_labels() -> None:
    """A flipped image's 'left wrist' label sits on what was the right wrist's marker."""
    height, width = 40, 30
    image = torch.zeros(1, height, width)
    left, right = (5.0, 10.0), (20.0, 30.0)
    image[0, int(left[1]), int(left[0])] = 1.0  # marker 1 at the left wrist
    image[0, int(right[1]), int(right[0])] = 2.0  # marker 2 at the right wrist
    kpts = _person({"left_wrist": left, "right_wrist": right})[None]
    affine = augmentation_affine(
        AugmentParams(scale=1.0, rotation_deg=0.0, flip=True), (height, width)
    )
    flipped = warp_crops([image], np.zeros(1, dtype=int), affine[None], (height, width))[0, 0]
    moved = transform_keypoints(affine, kpts, flipped=True, out_hw=(height, width))[0]
    lx, ly = moved[IDX["left_wrist"], :2]
    rx, ry = moved[IDX["right_wrist"], :2]
    assert (lx, ly) == pytest.approx((width - 1 - right[0], right[1]))
    assert flipped[int(ly), int(lx)].item() == pytest.approx(2.0)  # the old right wrist is now left
    assert flipped[int(ry), int(rx)].item() == pytest.approx(1.0)
    assert moved[IDX["left_wrist"], 2] == 2 and moved[IDX["nose"], 2] == 0
    twice = transform_keypoints(affine, moved[None], flipped=True, out_hw=(height, width))[0]
    np.testing.assert_allclose(twice, kpts[0], atol=1e-9)


def test_keypoints_follow_the_image_under_scale_and_rotation() -> None:
    height, width = 48, 48
    image = torch.zeros(1, height, width)
    dot = (30.0, 14.0)
    image[0, int(dot[1]) - 1 : int(dot[1]) + 2, int(dot[0]) - 1 : int(dot[0]) + 2] = 1.0  # 3x3 blob
    params = AugmentParams(scale=1.2, rotation_deg=25.0, flip=False)
    affine = augmentation_affine(params, (height, width))
    warped = warp_crops([image], np.zeros(1, dtype=int), affine[None], (height, width))[0, 0]
    moved = transform_keypoints(affine, _person({"nose": dot})[None], False, (height, width))[0, 0]
    ys, xs = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    centroid = ((warped * xs).sum() / warped.sum(), (warped * ys).sum() / warped.sum())
    assert (centroid[0].item(), centroid[1].item()) == pytest.approx(tuple(moved[:2]), abs=0.05)


def test_keypoints_pushed_outside_become_unlabelled() -> None:
    affine = augmentation_affine(AugmentParams(scale=2.0, rotation_deg=0.0, flip=False), (20, 20))
    kpts = _person({"nose": (1.0, 1.0), "left_eye": (10.0, 10.0)})[None]
    moved = transform_keypoints(affine, kpts, False, (20, 20))[0]
    assert moved[IDX["nose"], 2] == 0 and moved[IDX["left_eye"], 2] == 2


def test_compose_and_box_transform() -> None:
    a = augmentation_affine(AugmentParams(1.1, 10.0, True), (30, 40))
    b = augmentation_affine(AugmentParams(0.9, -20.0, False), (30, 40))
    pts = np.array([[3.0, 4.0], [20.0, 7.0]])
    step = pts @ b[:, :2].T + b[:, 2]
    step = step @ a[:, :2].T + a[:, 2]
    composed = compose_affines(a, b)
    np.testing.assert_allclose(pts @ composed[:, :2].T + composed[:, 2], step, atol=1e-9)
    flip = augmentation_affine(AugmentParams(1.0, 0.0, True), (30, 40))
    np.testing.assert_allclose(
        transform_boxes(flip, np.array([[2.0, 3.0, 10.0, 20.0]])), [[29.0, 3.0, 37.0, 20.0]]
    )
