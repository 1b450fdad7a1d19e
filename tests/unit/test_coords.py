"""Known answers for every function of ``model.codecs.coords`` (values computed by hand)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from model.codecs.affine import box_to_affine
from model.codecs.coords import (
    apply_affine,
    crop_heatmap_to_image,
    decoded_to_original,
    heatmap_to_input,
    image_to_letterbox,
    input_to_heatmap,
    invert_affine,
    letterbox_scale,
    letterbox_to_image,
    nearest_pixel,
    original_to_decoded,
    pixels_to_grid,
    rescale_pixel_coords,
    scale_affine,
    tile_windows,
)
from tests.helpers import REPO_ROOT


def test_rescale_pixel_coords_lines_up_pixel_edges() -> None:
    # Four times coarser: edge -0.5 stays the edge, centre 1.5 of input pixels 0..3 is cell 0.
    np.testing.assert_array_equal(
        rescale_pixel_coords([-0.5, 1.5, 5.5, 127.5], 0.25), [-0.5, 0.0, 1.0, 31.5]
    )
    # Twice finer: pixel 0 covers new pixels 0 and 1, its centre is 0.5.
    np.testing.assert_array_equal(rescale_pixel_coords([0.0, 1.0], 2.0), [0.5, 2.5])
    assert rescale_pixel_coords([1], 1.0).dtype == np.float64
    tensor = rescale_pixel_coords(torch.tensor([1.5], dtype=torch.float32), 0.25)
    assert tensor.dtype == torch.float32 and tensor.tolist() == [0.0]


def test_input_to_heatmap_known_answers() -> None:
    np.testing.assert_array_equal(
        input_to_heatmap([[1.5, 5.5], [0.0, 127.5]], 4), [[0.0, 1.0], [-0.375, 31.5]]
    )
    out = input_to_heatmap(torch.tensor([[9.5, 13.5]], dtype=torch.float32), 4)
    assert out.dtype == torch.float32 and out.tolist() == [[2.0, 3.0]]


def test_heatmap_to_input_known_answers_and_round_trip() -> None:
    # Heatmap pixel 0 at stride 4 is input pixel 1.5 (the centre of input pixels 0..3).
    np.testing.assert_array_equal(
        heatmap_to_input([[0.0, 1.0], [-0.5, 31.5]], 4), [[1.5, 5.5], [-0.5, 127.5]]
    )
    np.testing.assert_array_equal(heatmap_to_input([[10.0, 7.0]], 4), [[41.5, 29.5]])
    out = heatmap_to_input(torch.tensor([2.25], dtype=torch.float32), 4)
    assert out.dtype == torch.float32 and out.tolist() == [10.5]
    pts = np.array([[0.0, 0.0], [3.0, 7.5], [-0.5, 126.25]])
    np.testing.assert_array_equal(heatmap_to_input(input_to_heatmap(pts, 4), 4), pts)


def test_nearest_pixel_rounds_half_up() -> None:
    out = nearest_pixel([-0.51, -0.5, 0.49, 0.5, 2.5, 3.7])
    assert out.dtype == np.int64 and out.tolist() == [-1, 0, 0, 1, 3, 4]


def test_pixels_to_grid_known_answers() -> None:
    # Width 4: centres 0 and 3 are -0.75 and 0.75, outer edges -0.5 and 3.5 are -1 and 1.
    # Height 2: centres 0 and 1 are -0.5 and 0.5.
    coords = torch.tensor([[0.0, 0.0], [3.0, 1.0], [-0.5, -0.5], [3.5, 1.5]])
    grid = pixels_to_grid(coords, (2, 4))
    assert grid.tolist() == [[-0.75, -0.5], [0.75, 0.5], [-1.0, -1.0], [1.0, 1.0]]


def test_pixels_to_grid_samples_pixel_centres_exactly() -> None:
    values = torch.arange(8.0).reshape(1, 1, 2, 4)  # value = 4 * y + x
    centres = torch.tensor([[[[2.0, 1.0], [0.0, 0.0], [3.0, 0.0]]]])  # [1, 1, 3, 2]
    sampled = F.grid_sample(values, pixels_to_grid(centres, (2, 4)), align_corners=False)
    assert sampled.flatten().tolist() == [6.0, 0.0, 3.0]


def test_letterbox_scale_fits_the_long_side() -> None:
    assert letterbox_scale((100, 200), 128) == 0.64  # a 200 x 100 (w x h) image into 128
    assert letterbox_scale((300, 100), 60) == 0.2
    assert letterbox_scale((64, 64), 64) == 1.0


def test_image_to_letterbox_and_back() -> None:
    np.testing.assert_allclose(image_to_letterbox([199.0, 99.0], 0.64), [127.36, 63.36], rtol=1e-15)
    np.testing.assert_allclose(letterbox_to_image([127.36, 63.36], 0.64), [199.0, 99.0], rtol=1e-15)
    boxes = np.array([[10.0, 20.0, 30.0, 40.0]], dtype=np.float32)
    out = letterbox_to_image(boxes, 0.5)
    assert out.dtype == np.float32 and out.tolist() == [[20.0, 40.0, 60.0, 80.0]]
    assert image_to_letterbox(out, 0.5).tolist() == boxes.tolist()


def test_decoded_to_original_divides_by_the_decode_scale() -> None:
    # A 4000 x 3000 original decoded at 1024 x 768: scale 0.256.
    np.testing.assert_allclose(
        decoded_to_original([[332.0, 236.0]], 0.256), [[1296.875, 921.875]], rtol=1e-15
    )
    boxes = np.array([100.5, 40.25, 150.0, 90.0], dtype=np.float32)
    out = decoded_to_original(boxes, 0.25)
    assert out.dtype == np.float32 and out.tolist() == [402.0, 161.0, 600.0, 360.0]


def test_original_to_decoded_multiplies_by_the_decode_scale() -> None:
    np.testing.assert_allclose(
        original_to_decoded([[1296.875, 921.875]], 0.256), [[332.0, 236.0]], rtol=1e-15
    )
    boxes = np.array([402.0, 161.0, 600.0, 360.0], dtype=np.float32)
    out = original_to_decoded(boxes, 0.25)
    assert out.dtype == np.float32 and out.tolist() == [100.5, 40.25, 150.0, 90.0]


def test_coords_and_output_rows_import_without_torch() -> None:
    # pipeline/graph/tasks.py (CPU task workers) must not import torch, and it imports pipeline.graph.rows.
    code = "import sys, model.codecs.coords, pipeline.graph.rows; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO_ROOT)


AFFINE = np.array([[[2.0, 0.0, 10.0], [0.0, 4.0, -8.0]]])  # x' = 2x + 10, y' = 4y - 8


def test_invert_affine_known_answer() -> None:
    np.testing.assert_array_equal(invert_affine(AFFINE), [[[0.5, 0.0, -5.0], [0.0, 0.25, 2.0]]])


def test_apply_affine_known_answer() -> None:
    np.testing.assert_array_equal(
        apply_affine(AFFINE, [[[1.0, 2.0], [-5.0, 2.0]]]), [[[12.0, 0.0], [0.0, 0.0]]]
    )
    np.testing.assert_array_equal(apply_affine(invert_affine(AFFINE), [[[12.0, 0.0]]]), [[[1, 2]]])


def test_scale_affine_applies_the_pixel_centre_rule_to_the_target() -> None:
    identity = np.array([[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]])
    np.testing.assert_array_equal(
        scale_affine(identity, 0.25), [[[0.25, 0.0, -0.375], [0.0, 0.25, -0.375]]]
    )
    # (10 + 0.5) / 4 - 0.5 = 2.125 and (-8 + 0.5) / 4 - 0.5 = -2.375.
    np.testing.assert_array_equal(
        scale_affine(AFFINE, 0.25), [[[0.5, 0.0, 2.125], [0.0, 1.0, -2.375]]]
    )
    # Mapping with the scaled affine = mapping, then input_to_heatmap.
    pts = np.array([[[1.0, 2.0], [3.0, -1.0]]])
    np.testing.assert_array_equal(
        apply_affine(scale_affine(AFFINE, 0.25), pts),
        input_to_heatmap(apply_affine(AFFINE, pts), 4),
    )


def test_crop_heatmap_to_image_worked_example() -> None:
    # docs/coordinates.md: box 96 x 128 centred at (348, 264), 64 x 48 crop, padding 1.25:
    # 0.4 crop px per image px, crop centre (23.5, 31.5). Heatmap (6, 9) -> crop (25.5, 37.5)
    # -> image (348 + 2 / 0.4, 264 + 6 / 0.4) = (353, 279). Heatmap edge (-0.5, -0.5) is the
    # crop's corner, the padded 120 x 160 box's corner (348 - 60, 264 - 80) = (288, 184).
    affine = box_to_affine(np.array([[300.0, 200.0, 396.0, 328.0]]), (64, 48), padding=1.25)
    coords_hm = np.array([[[6.0, 9.0], [-0.5, -0.5]]])
    expected = [[[353.0, 279.0], [288.0, 184.0]]]
    np.testing.assert_allclose(crop_heatmap_to_image(coords_hm, affine, 4), expected, atol=1e-9)
    from_tensor = crop_heatmap_to_image(torch.tensor(coords_hm, dtype=torch.float32), affine, 4)
    assert from_tensor.dtype == np.float64
    np.testing.assert_allclose(from_tensor, expected, atol=1e-9)
    assert crop_heatmap_to_image(np.zeros((0, 17, 2)), affine[:0], 4).shape == (0, 17, 2)


def test_worked_example_of_the_docs_from_heatmaps_to_original() -> None:
    # A 4000 x 3000 original decoded at 1024 x 768 (scale 0.256), letterboxed into 128
    # (scale 0.125), heatmap stride 4: peak cell (10, 7) -> letterbox (41.5, 29.5)
    # -> decoded (332, 236) -> original (1296.875, 921.875).
    assert letterbox_scale((768, 1024), 128) == 0.125
    letterbox_px = heatmap_to_input([10.0, 7.0], 4)
    decoded_px = letterbox_to_image(letterbox_px, 0.125)
    original_px = decoded_to_original(decoded_px, 0.256)
    assert letterbox_px.tolist() == [41.5, 29.5] and decoded_px.tolist() == [332.0, 236.0]
    assert original_px.tolist() == pytest.approx([1296.875, 921.875], rel=1e-15)
    # Stage 3: crop-heatmap (6, 9) of the box above -> decoded (353, 279) -> original.
    affine = box_to_affine(np.array([[300.0, 200.0, 396.0, 328.0]]), (64, 48), padding=1.25)
    decoded_kpt = crop_heatmap_to_image(np.array([[[6.0, 9.0]]]), affine, 4)
    np.testing.assert_allclose(
        decoded_to_original(decoded_kpt, 0.256), [[[1378.90625, 1089.84375]]], rtol=1e-15
    )


def test_tile_windows_cover_the_image_with_the_asked_overlap() -> None:
    windows = tile_windows((1000, 600), grid=2, overlap=0.25)
    # A tile spans 1 / (2 - 0.25) of each side; the second starts where the first's last
    # quarter begins.
    np.testing.assert_array_equal(
        windows, [[0, 0, 571, 343], [429, 0, 1000, 343], [0, 257, 571, 600], [429, 257, 1000, 600]]
    )
    shared = windows[0, 2] - windows[1, 0]
    assert shared == pytest.approx(0.25 * 571, abs=1)


def test_tile_windows_of_grid_one_is_the_whole_image_and_bad_grids_are_refused() -> None:
    np.testing.assert_array_equal(tile_windows((640, 480), 1, 0.25), [[0, 0, 640, 480]])
    assert tile_windows((640, 480), 3, 0.0)[:, 2].max() == 640
    with pytest.raises(ValueError, match="grid"):
        tile_windows((640, 480), 0, 0.25)
    with pytest.raises(ValueError, match="overlap"):
        tile_windows((640, 480), 2, 1.0)
