"""Stage 1 over several views (scales and tiles) of an image, pooled in image pixels."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from jobs.run_cmd import sample_images
from model.inference.zoo_stage1 import View, ZooCoarsePoseModel, _cut_by_inner_edge
from model.networks.resolve import load_network
from schemas.spec import DEFAULT_STAGE1_VIEWS, JobSpec, SpecError, Stage1View

DEVICE = torch.device("cpu")


@pytest.fixture(scope="module")
def multipose():
    return load_network("stage1", "movenet-multipose", DEVICE)


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    """A bundled sample photo with several people (COCO 000000196141, 640 x 429)."""
    path = next(p for p in sample_images() if p.endswith("000000196141.jpg"))
    return np.asarray(Image.open(path).convert("RGB"))


def model(loaded, *views: View, top_k: int = 100) -> ZooCoarsePoseModel:
    return ZooCoarsePoseModel(loaded, DEVICE, top_k, views, 0.05, "float32")


def test_views_skip_images_they_would_only_enlarge():
    view = View(256, grid=2, overlap=0.25)
    assert len(view.windows((1024, 768))) == 4
    assert len(view.windows((300, 200))) == 0  # 171 x 114 tiles: smaller than the input
    assert len(View(512).windows((256, 200))) == 1  # enlarged twice: still runs
    assert len(View(512).windows((200, 150))) == 0  # 2.56 times: no detail to add


def test_an_image_too_small_for_every_view_still_gets_one_pass(multipose, photo):
    tiny = np.ascontiguousarray(photo[::4, ::4])  # 160 x 108
    (found,) = model(multipose, View(512), View(256, grid=2))([tiny])
    (alone,) = model(multipose, View(256))([tiny])  # the smallest input, whole image
    assert found.network_inputs == 1
    np.testing.assert_allclose(found.box_scores, alone.box_scores, atol=1e-5)


def test_each_tile_finds_what_the_network_finds_on_that_crop_shifted_to_the_image(multipose, photo):
    """A tiled pass is the network on each tile crop, its proposals moved by the tile's
    origin, those cut by an inner tile edge left out, pooled and ranked by score."""
    tiled = model(multipose, View(256, grid=2, overlap=0.25))
    whole_of = model(multipose, View(256))
    (pooled,) = tiled([photo])
    height, width = photo.shape[:2]
    windows = View(256, grid=2, overlap=0.25).windows((width, height))
    expected_boxes, expected_scores = [], []
    for x0, y0, x1, y1 in windows:
        (found,) = whole_of([np.ascontiguousarray(photo[y0:y1, x0:x1])])
        keep = ~_cut_by_inner_edge(found.boxes_xyxy, np.array([x0, y0, x1, y1]), (width, height))
        expected_boxes.append(found.boxes_xyxy[keep] + [x0, y0, x0, y0])
        expected_scores.append(found.box_scores[keep])
    scores = np.concatenate(expected_scores)
    order = np.argsort(-scores, kind="stable")
    assert pooled.network_inputs == 4
    np.testing.assert_allclose(pooled.box_scores, scores[order], atol=1e-5)
    np.testing.assert_allclose(pooled.boxes_xyxy, np.concatenate(expected_boxes)[order], atol=1e-3)
    # The pose of each proposal moved with its box.
    inside = (pooled.poses_xys[..., 2] > 0.3) & (pooled.box_scores[:, None] > 0.2)
    assert inside.any()
    grown = pooled.boxes_xyxy[:, None, :] + np.array([-20.0, -20.0, 20.0, 20.0])
    xs, ys = pooled.poses_xys[..., 0], pooled.poses_xys[..., 1]
    assert np.all(
        ~inside
        | (
            (xs >= grown[..., 0])
            & (xs <= grown[..., 2])
            & (ys >= grown[..., 1])
            & (ys <= grown[..., 3])
        )
    )


def test_views_pool_their_proposals_and_keep_the_best_top_k(multipose, photo):
    small, large = View(256), View(384)
    (a,) = model(multipose, small)([photo])
    (b,) = model(multipose, large)([photo])
    (both,) = model(multipose, small, large, top_k=6)([photo])
    best = np.sort(np.concatenate([a.box_scores, b.box_scores]))[::-1][:6]
    np.testing.assert_allclose(both.box_scores, best, atol=1e-5)
    assert both.network_inputs == 2


def test_tiles_run_only_on_images_with_a_small_or_no_person(multipose, photo):
    """The sample photo's people are large: a tiled view asking for someone shorter than a
    tenth of the image skips it; asking for someone shorter than the whole image tiles it."""
    whole, strict, loose = View(256), View(256, 2, 0.25, 0.1), View(256, 2, 0.25, 0.99)
    (skipped,) = model(multipose, strict, whole)([photo])  # whole-image views run first
    (tiled,) = model(multipose, whole, loose)([photo])
    assert skipped.network_inputs == 1 and tiled.network_inputs == 5
    blank = np.zeros((480, 640, 3), np.uint8)  # nobody found: tiles are the last chance
    (nobody,) = model(multipose, whole, strict)([blank])
    assert nobody.network_inputs == 5


def test_spec_views_default_and_their_rules():
    spec = JobSpec.parse({"inputs": ["a.jpg"], "output": "o"})
    assert spec.stage1.resolved_views() == DEFAULT_STAGE1_VIEWS
    one = JobSpec.parse({"inputs": ["a.jpg"], "output": "o", "stage1": {"input_size": 320}})
    assert one.stage1.resolved_views() == (Stage1View(input_size=320),)
    with pytest.raises(SpecError, match="give one of them"):
        JobSpec.parse(
            {
                "inputs": ["a.jpg"],
                "output": "o",
                "stage1": {"input_size": 256, "views": [{"input_size": 384}]},
            }
        )
    with pytest.raises(SpecError, match="multiple of 32"):
        JobSpec.parse(
            {"inputs": ["a.jpg"], "output": "o", "stage1": {"views": [{"input_size": 300}]}}
        )
    with pytest.raises(SpecError, match="unknown field"):
        JobSpec.parse({"inputs": ["a.jpg"], "output": "o", "stage1": {"views": [{"size": 384}]}})
