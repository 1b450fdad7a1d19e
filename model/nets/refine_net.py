"""The pose refinement sub-net (PRS), stage 3 of DetPoseNet (paper §III-C).

* Multi-scale supervision (MSS, §III-C1): every hourglass stack has a 1x1 head at each
  supervised up-sampling scale (crop strides ``cfg.supervision_strides``; by default every
  deconv layer), trained against Gaussian targets of that scale.
* Multi-scale regression (MSR, §III-C2): after the last stack, the heatmaps of all scales are
  up-sampled to the final resolution, concatenated with the last stack's features and
  regressed by a small fully convolutional module into heatmaps at every supervised scale,
  each matched to the ground truth of its scale; the finest is the final output.
* Heatmap channels: the 17 keypoints, then (``structure_loss: associations``) one channel per
  skeleton pair and per elbow/knee triplet (the paper's ``M* > M``), see
  :func:`model.codecs.targets.association_heatmaps`.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from model.codecs.targets import num_association_channels
from model.keypoints import NUM_KEYPOINTS
from model.nets.hourglass import ConvBnRelu, head_1x1, stack_joins, stacked_hourglass_trunk
from schemas.network_configs import RefinerConfig


class RefinerOutput(NamedTuple):
    """Refiner outputs for ``N`` crops of size ``H x W``; ``M*`` heatmap channels.

    Attributes:
        heatmaps: ``[N, 17, H/4, W/4]`` the final keypoint heatmaps, values ~[0, 1].
        scale_heatmaps: MSS heatmaps, stack-major then coarse to fine: entry
            ``stack * S + j`` is ``[N, M*, H/s_j, W/s_j]`` for ``s_j = cfg.supervision_strides[j]``.
        msr_heatmaps: the MSR's heatmaps ``[N, M*, H/s, W/s]``, coarse to fine: one per
            supervised scale (``msr: multiscale``), the final scale only (``final``) or none
            (``off``).
    """

    heatmaps: torch.Tensor
    scale_heatmaps: list[torch.Tensor]
    msr_heatmaps: list[torch.Tensor]


def upsample_to(maps: list[torch.Tensor], size_hw: torch.Size) -> list[torch.Tensor]:
    """Bilinear up-sampling of each ``[N, C, h, w]`` map to ``size_hw``."""
    return [F.interpolate(m, size=size_hw, mode="bilinear", align_corners=False) for m in maps]


class MultiScaleRegression(nn.Module):
    """MSR: regresses heatmaps at every supervised scale from all scales' heatmaps and features.

    One fully convolutional body at the final resolution reads the last stack's features and
    its heatmaps of every scale (up-sampled); a 1x1 head per scale reads the body's features
    average-pooled to that scale, so each scale's output is matched to its own ground truth.
    """

    def __init__(
        self, channels: int, heatmap_channels: int, pool_factors: list[int], msr_channels: int
    ) -> None:
        super().__init__()
        self.pool_factors = pool_factors
        self.body = nn.Sequential(
            ConvBnRelu(channels + len(pool_factors) * heatmap_channels, msr_channels),
            ConvBnRelu(msr_channels, msr_channels),
        )
        self.heads = nn.ModuleList(head_1x1(msr_channels, heatmap_channels) for _ in pool_factors)

    def forward(self, feat: torch.Tensor, scale_heatmaps: list[torch.Tensor]) -> list[torch.Tensor]:
        """``feat [N, C, h, w]`` and per-scale heatmaps -> per-scale heatmaps, coarse to fine."""
        body = self.body(torch.cat([feat, *upsample_to(scale_heatmaps, feat.shape[-2:])], dim=1))
        return [
            head(F.avg_pool2d(body, factor) if factor > 1 else body)
            for head, factor in zip(self.heads, self.pool_factors, strict=True)
        ]


class FinalScaleRegression(nn.Module):
    """MSR of the final scale only (``msr: final``, DetPose's design before 2026-11-26)."""

    def __init__(self, channels: int, heatmap_channels: int, num_scales: int, msr_channels: int):
        super().__init__()
        self.body = nn.Sequential(
            ConvBnRelu(channels + num_scales * heatmap_channels, msr_channels),
            ConvBnRelu(msr_channels, msr_channels),
            head_1x1(msr_channels, heatmap_channels),
        )

    def forward(self, feat: torch.Tensor, scale_heatmaps: list[torch.Tensor]) -> list[torch.Tensor]:
        """``feat [N, C, h, w]`` and per-scale heatmaps -> ``[[N, M*, h, w]]``."""
        ups = upsample_to(scale_heatmaps, feat.shape[-2:])
        return [self.body(torch.cat([feat, *ups], dim=1))]


class PoseRefinementNet(nn.Module):
    """PRS: input crops ``[N, 3, H, W]`` made by :func:`model.codecs.image.make_refiner_crops`."""

    def __init__(self, cfg: RefinerConfig) -> None:
        super().__init__()
        self.cfg = cfg
        c = cfg.channels
        m_star = NUM_KEYPOINTS + num_association_channels(cfg.structure_loss)
        # Index into Hourglass.up (coarse to fine) of each supervised stride.
        self.up_index = [
            cfg.hourglass_depth - int(math.log2(s // cfg.stride)) for s in cfg.supervision_strides
        ]
        self.stem, self.hourglasses, self.features = stacked_hourglass_trunk(
            c, cfg.hourglass_depth, cfg.num_stacks
        )
        self.scale_heads = nn.ModuleList(
            nn.ModuleList(head_1x1(c, m_star) for _ in cfg.supervision_strides)
            for _ in range(cfg.num_stacks)
        )
        self.joins = stack_joins(c, m_star, cfg.num_stacks)
        self.msr: nn.Module | None = None
        if cfg.msr == "multiscale":
            factors = [s // cfg.stride for s in cfg.supervision_strides]
            self.msr = MultiScaleRegression(c, m_star, factors, cfg.msr_channels)
        elif cfg.msr == "final":
            self.msr = FinalScaleRegression(
                c, m_star, len(cfg.supervision_strides), cfg.msr_channels
            )

    def forward(self, crops: torch.Tensor) -> RefinerOutput:
        """``[N, 3, H, W]`` -> :class:`RefinerOutput`."""
        x = self.stem(crops)
        all_scales: list[torch.Tensor] = []
        for i, hourglass in enumerate(self.hourglasses):
            hg = hourglass(x)
            feat = self.features[i](hg.out)
            # The finest scale reads the stack's refined features; coarser ones the raw up path.
            sources = [hg.up[k] for k in self.up_index[:-1]] + [feat]
            scales = [head(src) for head, src in zip(self.scale_heads[i], sources, strict=True)]
            all_scales.extend(scales)
            if i < len(self.joins):
                x = self.joins[i](x, feat, scales[-1])
        msr = self.msr(feat, scales) if self.msr is not None else []
        final = msr[-1] if msr else scales[-1]
        return RefinerOutput(
            heatmaps=final[:, :NUM_KEYPOINTS], scale_heatmaps=all_scales, msr_heatmaps=msr
        )
