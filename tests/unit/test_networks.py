"""Network shapes, configs and shared preprocessing."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from model.codecs.affine import box_to_affine
from model.codecs.detection import decode_proposals
from model.codecs.image import (
    IMAGE_MEAN,
    IMAGE_STD,
    letterbox,
    make_refiner_crops,
    to_network_input,
)
from model.nets.coarse_net import CoarseNetOutput, CoarsePoseNet
from model.nets.hourglass import Hourglass, stacked_hourglass_trunk
from model.nets.refine_net import PoseRefinementNet, RefinerOutput
from schemas.network_configs import CoarseNetConfig, RefinerConfig, coarse_preset, refiner_preset


def test_hourglass_exposes_down_and_up_features_at_every_level() -> None:
    hg = Hourglass(depth=3, channels=8)
    out = hg(torch.randn(1, 8, 16, 24))
    assert [tuple(f.shape[-2:]) for f in out.down] == [(8, 12), (4, 6), (2, 3)]
    assert [tuple(f.shape[-2:]) for f in out.up] == [(2, 3), (4, 6), (8, 12), (16, 24)]
    assert out.up[-1] is out.out


@pytest.mark.parametrize("network", ["stage1", "refiner"])
def test_both_networks_build_their_trunk_with_the_one_builder(network: str) -> None:
    if network == "stage1":
        cfg, make = coarse_preset("tiny").model_copy(update={"num_stacks": 2}), CoarsePoseNet
    else:
        cfg, make = refiner_preset("tiny").model_copy(update={"num_stacks": 2}), PoseRefinementNet
    torch.manual_seed(0)
    trunk = stacked_hourglass_trunk(cfg.channels, cfg.hourglass_depth, cfg.num_stacks)
    torch.manual_seed(0)
    net = make(cfg)
    # Built first, under the checkpoints' names: same modules, same seeded initial weights.
    for part in ("stem", "hourglasses", "features"):
        expected = getattr(trunk, part).state_dict()
        got = getattr(net, part).state_dict()
        assert list(got) == list(expected), part
        for key, value in expected.items():
            torch.testing.assert_close(got[key], value)
    assert len(net.joins) == cfg.num_stacks - 1


@pytest.mark.parametrize("training", [True, False])
def test_tiny_coarse_net_outputs(training: bool) -> None:
    cfg = coarse_preset("tiny")
    net = CoarsePoseNet(cfg).train(training)
    out = net(torch.randn(2, 3, cfg.input_size, cfg.input_size))
    assert isinstance(out, CoarseNetOutput)
    grid = cfg.input_size // cfg.stride
    assert out.centre_logits.shape == (2, 1, grid, grid)
    assert out.size.shape == out.offset.shape == (2, 2, grid, grid)
    assert out.keypoint_heatmaps.shape == (2, 17, grid, grid)
    assert out.pafs.shape == (2, 38, grid, grid)
    assert len(out.stack_heatmaps) == len(out.stack_pafs) == cfg.num_stacks
    top_k = 20  # the job's proposals_per_image
    boxes, scores = decode_proposals(out.centre_logits, out.size, out.offset, top_k, cfg.stride)
    assert boxes.shape == (2, top_k, 4) and scores.shape == (2, top_k)
    assert ((scores >= 0) & (scores <= 1)).all()
    assert (scores[:, :-1] >= scores[:, 1:]).all()


@pytest.mark.parametrize("training", [True, False])
def test_tiny_refiner_outputs_every_supervised_scale(training: bool) -> None:
    cfg = refiner_preset("tiny").model_copy(update={"num_stacks": 2})
    net = PoseRefinementNet(cfg).train(training)
    height, width = cfg.input_hw
    out = net(torch.randn(3, 3, height, width))
    assert isinstance(out, RefinerOutput)
    assert out.heatmaps.shape == (3, 17, height // 4, width // 4)
    # 17 keypoints + 19 skeleton pairs + 4 elbow/knee triplets (the paper's M* > M)
    per_scale = [(3, 40, height // s, width // s) for s in cfg.supervision_strides]
    assert [tuple(h.shape) for h in out.scale_heatmaps] == per_scale * 2
    # MSR (paper): one output per supervised scale; the finest holds the final keypoints
    assert [tuple(h.shape) for h in out.msr_heatmaps] == per_scale
    assert torch.equal(out.heatmaps, out.msr_heatmaps[-1][:, :17])


@pytest.mark.parametrize(
    ("msr", "structure_loss", "msr_outputs", "channels"),
    [
        ("final", "neighbours", 1, 17),
        ("off", "keypoints", 0, 17),
        ("multiscale", "keypoints", 3, 17),
    ],
)
def test_refiner_design_alternatives_stay_selectable(
    msr: str, structure_loss: str, msr_outputs: int, channels: int
) -> None:
    cfg = refiner_preset("tiny").model_copy(update={"msr": msr, "structure_loss": structure_loss})
    out = PoseRefinementNet(cfg).eval()(torch.randn(2, 3, *cfg.input_hw))
    assert len(out.msr_heatmaps) == msr_outputs
    assert {h.shape[1] for h in out.scale_heatmaps} == {channels}
    source = out.msr_heatmaps[-1] if msr_outputs else out.scale_heatmaps[-1]
    assert torch.equal(out.heatmaps, source[:, :17])


def test_msr_matches_each_scale_at_its_own_resolution() -> None:
    # A body of constant features pools to the same constant at every scale, so each
    # scale's head output is its bias everywhere, at that scale's size.
    cfg = refiner_preset("tiny")
    msr = PoseRefinementNet(cfg).msr
    assert msr is not None and msr.pool_factors == [4, 2, 1]
    for i, head in enumerate(msr.heads):
        torch.nn.init.zeros_(head.weight)
        torch.nn.init.constant_(head.bias, float(i))
    feat = torch.randn(1, cfg.channels, 16, 12)
    scales = [torch.rand(1, 40, 16 // f, 12 // f) for f in (4, 2, 1)]
    outs = msr.eval()(feat, scales)
    assert [tuple(o.shape) for o in outs] == [(1, 40, 4, 3), (1, 40, 8, 6), (1, 40, 16, 12)]
    assert [float(o.mean()) for o in outs] == [0.0, 1.0, 2.0]


def test_paper_presets_supervise_every_deconv_layer_and_offer_square_crops() -> None:
    paper = refiner_preset("coco-recipe")
    assert paper.supervision_strides == (64, 32, 16, 8, 4)  # hourglass depth 4: 5 up levels
    assert refiner_preset("coco-recipe-256x256").input_hw == (256, 256)
    assert refiner_preset("coco-recipe-384x384").input_hw == (384, 384)
    with torch.no_grad():
        out = PoseRefinementNet(
            refiner_preset("coco-recipe-384x384").model_copy(
                update={"channels": 16, "msr_channels": 16, "num_stacks": 1}
            )
        ).eval()(torch.zeros(1, 3, 384, 384))
    assert out.heatmaps.shape == (1, 17, 96, 96)
    assert [tuple(h.shape[2:]) for h in out.msr_heatmaps] == [
        (6, 6),
        (12, 12),
        (24, 24),
        (48, 48),
        (96, 96),
    ]


def test_paper_configs_build_and_run_one_forward_pass_on_cpu() -> None:
    torch.manual_seed(0)
    coarse_cfg, refiner_cfg = coarse_preset("coco-recipe"), refiner_preset("coco-recipe")
    assert coarse_cfg.channels == refiner_cfg.channels == 256
    assert refiner_cfg.input_hw == (256, 192) and refiner_cfg.num_stacks > 1
    with torch.no_grad():
        coarse = CoarsePoseNet(coarse_cfg).eval()(
            torch.randn(1, 3, coarse_cfg.input_size, coarse_cfg.input_size)
        )
        refined = PoseRefinementNet(refiner_cfg).eval()(torch.randn(1, 3, 256, 192))
    assert coarse.keypoint_heatmaps.shape == (1, 17, 128, 128)
    assert refined.heatmaps.shape == (1, 17, 64, 48)
    assert torch.isfinite(coarse.centre_logits).all() and torch.isfinite(refined.heatmaps).all()


def test_configs_reject_bad_values_naming_the_fields() -> None:
    with pytest.raises(ValidationError, match="input_size 100 must be a multiple"):
        CoarseNetConfig(input_size=100, hourglass_depth=3)
    with pytest.raises(ValidationError, match="supervision_strides"):
        RefinerConfig(input_hw=(64, 48), hourglass_depth=2, supervision_strides=(32, 4))
    with pytest.raises(ValidationError, match="input_hw"):
        RefinerConfig(input_hw=(60, 48), hourglass_depth=2)
    with pytest.raises(ValidationError, match="extra"):
        CoarseNetConfig(chanels=8)
    with pytest.raises(ValueError, match="huge"):
        coarse_preset("huge")  # type: ignore[arg-type]
    cfg = refiner_preset("tiny")
    assert RefinerConfig.model_validate(cfg.model_dump(mode="json")) == cfg


def test_letterbox_scales_the_long_side_and_pads_right_and_bottom() -> None:
    image = np.full((50, 100, 3), 200, dtype=np.uint8)
    boxed, scale = letterbox(image, 64)
    assert boxed.shape == (64, 64, 3) and scale == pytest.approx(0.64)
    assert (boxed[:32] == 200).all() and (boxed[32:] == 0).all()
    net_in = to_network_input(boxed[None], "cpu")
    assert net_in.shape == (1, 3, 64, 64) and net_in.dtype == torch.float32
    expected = (200 / 255 - IMAGE_MEAN[0]) / IMAGE_STD[0]
    assert net_in[0, 0, 0, 0].item() == pytest.approx(expected, rel=1e-5)


def test_refiner_crops_centre_the_box() -> None:
    cfg = refiner_preset("tiny")
    image = np.zeros((100, 120, 3), dtype=np.uint8)
    image[40:60, 50:70] = 255  # a white box
    boxes = np.array([[50.0, 40.0, 70.0, 60.0]])
    crops, affines = make_refiner_crops([image], np.zeros(1, int), boxes, cfg, "cpu")
    assert crops.shape == (1, 3, *cfg.input_hw)
    np.testing.assert_allclose(affines, box_to_affine(boxes, cfg.input_hw, padding=cfg.box_padding))
    height, width = cfg.input_hw
    white = (255 / 255 - IMAGE_MEAN[0]) / IMAGE_STD[0]
    assert crops[0, 0, height // 2, width // 2].item() == pytest.approx(white, rel=1e-5)
    assert crops[0, 0, 0, 0].item() < 0  # background is black
