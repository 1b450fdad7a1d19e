"""Refiner decoding: sub-pixel argmax, flip test, and crop -> decode -> back-projection."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from model.codecs.affine import box_to_affine, warp_crops
from model.codecs.coords import crop_heatmap_to_image
from model.codecs.heatmaps import decode_heatmaps, flip_heatmaps_back
from model.keypoints import FLIP_PAIRS, NUM_KEYPOINTS, flip_permutation


def gaussians(
    centres_xy: np.ndarray, hw: tuple[int, int], sigma: float | np.ndarray
) -> torch.Tensor:
    """``[C, h, w]`` maps, channel ``c`` a Gaussian at ``centres_xy[c]`` (pixel centres at integers)."""
    height, width = hw
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
    sig = np.broadcast_to(np.asarray(sigma, dtype=np.float64), (len(centres_xy),))
    maps = [
        np.exp(-((xs - x) ** 2 + (ys - y) ** 2) / (2 * s**2))
        for (x, y), s in zip(centres_xy, sig, strict=True)
    ]
    return torch.tensor(np.stack(maps), dtype=torch.float32)


def test_single_gaussian_peak_decodes_within_005_px() -> None:
    rng = np.random.default_rng(1)
    centres = np.stack([rng.uniform(3, 44, NUM_KEYPOINTS), rng.uniform(3, 60, NUM_KEYPOINTS)], 1)
    heatmaps = gaussians(centres, (64, 48), sigma=2.0)[None]
    coords, maxvals = decode_heatmaps(heatmaps)
    assert coords.shape == (1, NUM_KEYPOINTS, 2) and maxvals.shape == (1, NUM_KEYPOINTS)
    np.testing.assert_allclose(coords[0].numpy(), centres, atol=0.05)
    assert (maxvals > 0.85).all()


def test_integer_argmax_without_refinement_is_off_by_subpixel() -> None:
    # Guards the known-answer test above: the plain integer argmax of this heatmap misses the
    # centre by 0.3 px on each axis, so only the sub-pixel refinement gets within 0.05 px.
    centre = np.array([10.3, 20.7])
    heatmaps = gaussians(centre[None], (32, 32), sigma=2.0)[None]
    flat_index = int(heatmaps[0, 0].flatten().argmax())
    argmax_xy = np.array([flat_index % 32, flat_index // 32], dtype=np.float64)
    assert argmax_xy.tolist() == [10.0, 21.0]
    assert (np.abs(argmax_xy - centre) > 0.05).all()
    coords, _ = decode_heatmaps(heatmaps)
    assert (np.abs(coords[0, 0].numpy() - centre) < 0.05).all()


def test_peak_on_border_and_empty_heatmaps_decode_without_nan() -> None:
    heatmaps = torch.zeros((2, NUM_KEYPOINTS, 16, 12))
    heatmaps[0, 0, 0, 5] = 1.0
    coords, maxvals = decode_heatmaps(heatmaps)
    assert torch.isfinite(coords).all()
    assert coords[0, 0].tolist() == [5.0, 0.0] and maxvals[0, 0].item() == 1.0
    empty_coords, empty_vals = decode_heatmaps(torch.zeros((0, NUM_KEYPOINTS, 16, 12)))
    assert empty_coords.shape == (0, NUM_KEYPOINTS, 2) and empty_vals.shape == (0, NUM_KEYPOINTS)


def test_flip_back_is_an_involution() -> None:
    heatmaps = torch.rand((3, NUM_KEYPOINTS, 8, 6))
    twice = flip_heatmaps_back(flip_heatmaps_back(heatmaps, FLIP_PAIRS), FLIP_PAIRS)
    assert torch.equal(twice, heatmaps)


def test_flip_back_of_mirrored_person_matches_original() -> None:
    rng = np.random.default_rng(2)
    width = 48
    centres = np.stack([rng.uniform(2, 45, NUM_KEYPOINTS), rng.uniform(2, 60, NUM_KEYPOINTS)], 1)
    original = gaussians(centres, (64, width), 1.5)
    # What the net sees for the mirrored crop: x -> w - 1 - x, and left/right labels swapped.
    mirrored = centres[flip_permutation()].copy()
    mirrored[:, 0] = width - 1 - mirrored[:, 0]
    predicted_on_flipped = gaussians(mirrored, (64, width), 1.5)
    back = flip_heatmaps_back(predicted_on_flipped[None], FLIP_PAIRS)[0]
    torch.testing.assert_close(back, original, atol=1e-5, rtol=0)


CROP_HW, STRIDE = (256, 192), 4


@pytest.mark.parametrize(
    ("box", "rotation_deg"),
    [
        ((200.0, 120.0, 260.0, 280.0), 0.0),  # small box: the crop scales up
        ((40.0, 20.0, 420.0, 590.0), 0.0),  # large box: the crop scales down
        ((100.0, 200.0, 500.0, 330.0), 0.0),  # wide box: aspect-ratio padding
        ((150.0, 100.0, 350.0, 420.0), 30.0),
        ((150.0, 100.0, 350.0, 420.0), -65.0),
    ],
)
def test_crop_decode_backproject_round_trip_within_half_pixel(
    box: tuple[float, float, float, float], rotation_deg: float
) -> None:
    rng = np.random.default_rng(3)
    x1, y1, x2, y2 = box
    kpts_img = np.stack(
        [rng.uniform(x1 + 5, x2 - 5, NUM_KEYPOINTS), rng.uniform(y1 + 5, y2 - 5, NUM_KEYPOINTS)], 1
    )
    affine = box_to_affine(np.array([box]), CROP_HW, rotation_deg=np.array([rotation_deg]))
    crop_px_per_img_px = float(np.sqrt(abs(np.linalg.det(affine[0, :, :2]))))
    # Blobs about 2 heatmap pixels wide whatever the box's scale.
    image = gaussians(kpts_img, (640, 560), sigma=2.0 * STRIDE / crop_px_per_img_px)
    crops = warp_crops([image], np.array([0]), affine, CROP_HW)
    heatmaps = F.avg_pool2d(crops, kernel_size=STRIDE)  # heatmap pixel j = crop pixels 4j..4j+3
    coords_hm, _ = decode_heatmaps(heatmaps)
    coords_img = crop_heatmap_to_image(coords_hm, affine, STRIDE)
    np.testing.assert_allclose(coords_img[0], kpts_img, atol=0.5)


def test_crop_heatmap_to_image_known_answer_for_unrotated_box() -> None:
    # Box 96 x 128 at (10, 20) with padding 1 fills a 128 x 96 crop at 1 crop px per image px:
    # the box's edge x = 10 is the crop's left edge (crop x = -0.5), so crop pixel c sits at
    # image 10.5 + c. Heatmap pixel 0 covers crop pixels 0..3, centre 1.5, i.e. image 12.
    affine = box_to_affine(np.array([[10.0, 20.0, 106.0, 148.0]]), (128, 96), padding=1.0)
    coords_img = crop_heatmap_to_image(np.array([[[0.0, 0.0], [23.0, 31.0]]]), affine, 4)
    np.testing.assert_allclose(
        coords_img[0], [[12.0, 22.0], [12.0 + 92.0, 22.0 + 124.0]], atol=1e-9
    )
