"""Hourglass building blocks (Newell et al.): residual block, recursive hourglass, stem, stacks,
and the stacked-hourglass trunk both networks are built on."""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn


class ConvBnRelu(nn.Sequential):
    """``k x k`` convolution, batch norm, ReLU."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int = 3, stride: int = 1) -> None:
        super().__init__(
            nn.Conv2d(in_ch, out_ch, kernel, stride=stride, padding=kernel // 2, bias=False),
            nn.BatchNorm2d(out_ch),
            nn.ReLU(inplace=True),
        )


class Residual(nn.Module):
    """Pre-activation bottleneck residual block (BN-ReLU-conv 1x1, 3x3, 1x1) with a 1x1 skip."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        mid = max(out_ch // 2, 1)
        self.body = nn.Sequential(
            nn.BatchNorm2d(in_ch),
            nn.ReLU(inplace=False),
            nn.Conv2d(in_ch, mid, 1, bias=False),
            nn.BatchNorm2d(mid),
            nn.ReLU(inplace=True),
            nn.Conv2d(mid, mid, 3, padding=1, bias=False),
            nn.BatchNorm2d(mid),
            nn.ReLU(inplace=True),
            nn.Conv2d(mid, out_ch, 1),
        )
        self.skip = nn.Identity() if in_ch == out_ch else nn.Conv2d(in_ch, out_ch, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, in_ch, H, W]`` -> ``[B, out_ch, H, W]``."""
        return self.body(x) + self.skip(x)


class HourglassOutput(NamedTuple):
    """What one hourglass produces.

    Attributes:
        out: ``[B, C, H, W]`` the up-sampled output at the input resolution (== ``up[-1]``).
        down: ``depth`` down-sampling (context) features, fine to coarse: ``H/2 ... H/2**depth``.
        up: ``depth + 1`` up-sampling (structure) features, coarse to fine: ``H/2**depth ... H``.
    """

    out: torch.Tensor
    down: list[torch.Tensor]
    up: list[torch.Tensor]


class Hourglass(nn.Module):
    """Recursive conv-deconv hourglass of ``depth`` levels with skip connections at every level.

    Each spatial side of the input must be divisible by ``2**depth``.
    """

    def __init__(self, depth: int, channels: int) -> None:
        super().__init__()
        self.depth = depth
        self.skip = Residual(channels, channels)
        self.down = Residual(channels, channels)
        self.inner: nn.Module = (
            Hourglass(depth - 1, channels) if depth > 1 else Residual(channels, channels)
        )
        self.up = Residual(channels, channels)

    def forward(self, x: torch.Tensor) -> HourglassOutput:
        """``[B, C, H, W]`` -> :class:`HourglassOutput`."""
        skip = self.skip(x)
        low = self.down(F.max_pool2d(x, 2))
        if isinstance(self.inner, Hourglass):
            inner = self.inner(low)
            low_out, downs, ups = inner.out, inner.down, inner.up
        else:
            low_out, downs, ups = self.inner(low), [], []
        low_up = self.up(low_out)
        out = skip + F.interpolate(low_up, scale_factor=2.0, mode="nearest")
        if not ups:
            ups = [low_up]
        return HourglassOutput(out=out, down=[low, *downs], up=[*ups, out])


class Stem(nn.Sequential):
    """Input stem: ``[B, 3, H, W]`` -> ``[B, C, H/4, W/4]`` (7x7 conv stride 2, residuals, max-pool)."""

    def __init__(self, channels: int) -> None:
        half = max(channels // 2, 8)
        super().__init__(
            ConvBnRelu(3, half, kernel=7, stride=2),
            Residual(half, channels),
            nn.MaxPool2d(2),
            Residual(channels, channels),
        )


class StackJoin(nn.Module):
    """Feeds one stack's features and predictions into the next (Newell's intermediate supervision)."""

    def __init__(self, channels: int, pred_channels: int) -> None:
        super().__init__()
        self.feat = nn.Conv2d(channels, channels, 1)
        self.pred = nn.Conv2d(pred_channels, channels, 1)

    def forward(self, x: torch.Tensor, feat: torch.Tensor, pred: torch.Tensor) -> torch.Tensor:
        """``x, feat: [B, C, H, W]``, ``pred: [B, P, H, W]`` -> next stack's input ``[B, C, H, W]``."""
        return x + self.feat(feat) + self.pred(pred)


class StackedTrunk(NamedTuple):
    """The stacked-hourglass trunk both networks share (Newell et al.).

    Attributes:
        stem: ``[B, 3, H, W]`` -> ``[B, C, H/4, W/4]``.
        hourglasses: one :class:`Hourglass` per stack.
        features: per stack, the block that turns the hourglass output into the stack's
            features (``Residual`` then a 1x1 ``ConvBnRelu``).
    """

    stem: Stem
    hourglasses: nn.ModuleList
    features: nn.ModuleList


def stacked_hourglass_trunk(channels: int, depth: int, num_stacks: int) -> StackedTrunk:
    """Build the trunk: a stem, ``num_stacks`` hourglasses of ``depth`` levels, feature blocks.

    A network assigns the parts to ``self.stem``, ``self.hourglasses`` and ``self.features``
    (the state-dict names of its checkpoints), builds its per-stack heads, then its
    :func:`stack_joins`. Built in this order, a seeded network gets the same initial weights
    as it always has.
    """
    return StackedTrunk(
        stem=Stem(channels),
        hourglasses=nn.ModuleList(Hourglass(depth, channels) for _ in range(num_stacks)),
        features=nn.ModuleList(
            nn.Sequential(Residual(channels, channels), ConvBnRelu(channels, channels, kernel=1))
            for _ in range(num_stacks)
        ),
    )


def stack_joins(channels: int, pred_channels: int, num_stacks: int) -> nn.ModuleList:
    """The :class:`StackJoin` between consecutive stacks (``num_stacks - 1`` of them)."""
    return nn.ModuleList(StackJoin(channels, pred_channels) for _ in range(num_stacks - 1))


def head_1x1(in_ch: int, out_ch: int, bias_init: float = 0.0) -> nn.Conv2d:
    """A 1x1 output layer with small weights, so a fresh net predicts ~``bias_init`` everywhere."""
    conv = nn.Conv2d(in_ch, out_ch, 1)
    nn.init.normal_(conv.weight, std=0.001)
    nn.init.constant_(conv.bias, bias_init)
    return conv
