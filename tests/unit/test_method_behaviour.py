"""The refiner's multi-scale supervision (MSS) and multi-scale regression (MSR) do what the
paper says, tested by behaviour rather than shapes: each supervised scale's head reads its
own deconv level, and the MSR's output depends on the heatmaps it regresses from.

Two mutants of `model/nets/refine_net.py` pass the shape tests and must fail here: MSS
heads reading the pooled final features instead of each deconv level, and an MSR whose
heatmap inputs are zeroed.
"""

from __future__ import annotations

import pytest
import torch

from model.nets.refine_net import PoseRefinementNet
from model.networks.detposenet import build_model
from schemas.network_configs import refiner_preset


@pytest.fixture(scope="module")
def net() -> PoseRefinementNet:
    torch.manual_seed(0)
    model = build_model("refiner", refiner_preset("tiny"))
    assert isinstance(model, PoseRefinementNet)
    return model.eval()


@pytest.fixture(scope="module")
def crops() -> torch.Tensor:
    height, width = refiner_preset("tiny").input_hw
    return torch.rand((2, 3, height, width), generator=torch.Generator().manual_seed(1))


def _shift_up_level(level: int, stack: int, net: PoseRefinementNet):
    """A forward hook that adds 1 to deconv level ``level`` of hourglass ``stack`` after it
    ran: only what reads that level itself sees the change."""

    def hook(_module, _inputs, output):
        up = list(output.up)
        up[level] = up[level] + 1.0
        return output._replace(up=up)

    return net.hourglasses[stack].register_forward_hook(hook)


@torch.inference_mode()
def test_each_supervised_scale_reads_its_own_deconv_level(net, crops):
    cfg = net.cfg
    base = net(crops).scale_heatmaps
    coarse = range(len(cfg.supervision_strides) - 1)  # the finest reads the stack's features
    for scale in coarse:
        level = net.up_index[scale]
        handle = _shift_up_level(level, 0, net)
        try:
            shifted = net(crops).scale_heatmaps
        finally:
            handle.remove()
        changed = [not torch.allclose(a, b) for a, b in zip(base, shifted, strict=True)]
        assert changed[scale], (
            f"scale {scale} (stride {cfg.supervision_strides[scale]}) ignores level {level}"
        )
        # Other scales of the same stack read other levels: untouched.
        others = [changed[s] for s in coarse if s != scale]
        assert not any(others)


def test_gradients_reach_every_supervised_deconv_level(net, crops):
    """Each scale's loss alone puts a gradient on its own deconv level's output."""
    captured: list[torch.Tensor] = []

    def keep(_module, _inputs, output):
        for tensor in output.up:
            tensor.retain_grad()
        captured[:] = list(output.up)

    handle = net.hourglasses[0].register_forward_hook(keep)
    try:
        for scale, level in enumerate(net.up_index[:-1]):
            net.zero_grad()
            out = net(crops)
            out.scale_heatmaps[scale].square().mean().backward()
            grad = captured[level].grad
            assert grad is not None and grad.abs().sum() > 0
            # A coarser scale's loss reaches no finer level directly than its own.
            finer = captured[net.up_index[-1]].grad
            assert finer is None or finer.abs().sum() == 0
    finally:
        handle.remove()


@torch.inference_mode()
def test_msr_output_changes_with_the_heatmaps_it_regresses_from(net, crops):
    assert net.cfg.msr == "multiscale" and net.msr is not None
    out = net(crops)
    stack = net.cfg.num_stacks
    scales = out.scale_heatmaps[-len(net.cfg.supervision_strides) :]
    assert len(out.scale_heatmaps) == stack * len(scales)
    captured: dict[str, torch.Tensor] = {}
    handle = net.features[-1].register_forward_hook(lambda _m, _i, o: captured.update(feat=o))
    try:
        net(crops)
    finally:
        handle.remove()
    feat = captured["feat"]
    regressed = net.msr(feat, scales)
    moved = net.msr(feat, [s + torch.randn_like(s) for s in scales])
    for a, b in zip(regressed, moved, strict=True):
        assert not torch.allclose(a, b, atol=1e-4)
    # And the final heatmaps are the MSR's, not the last stack's own.
    assert torch.equal(out.heatmaps, regressed[-1][:, : out.heatmaps.shape[1]])
