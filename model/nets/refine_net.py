"""The pose refinement sub-net (PRS), stage 3 of DetPoseNet (paper §III-C).

* Multi-scale supervision (MSS): every hourglass stack has a 1x1 head at each supervised
  up-sampling scale (crop strides ``cfg.supervision_strides``, e.g. 16, 8, 4), trained against
  Gaussian targets of that scale.
* Multi-scale regression (MSR): after the last stack, the heatmaps of all scales are
  up-sampled to the final resolution, concatenated with the last stack's features and regressed
  by a small fully convolutional module into the final heatmaps.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from model.keypoints import NUM_KEYPOINTS
from model.nets.hourglass import ConvBnRelu, head_1x1, stack_joins, stacked_hourglass_trunk
from schemas.model import RefinerConfig


class RefinerOutput(NamedTuple):
    """Refiner outputs for ``N`` crops of size ``H x W``.

    Attributes:
        heatmaps: ``[N, 17, H/4, W/4]`` the MSR (final) heatmaps, values ~[0, 1].
        scale_heatmaps: MSS heatmaps, stack-major then coarse to fine: entry
            ``stack * S + j`` is ``[N, 17, H/s_j, W/s_j]`` for ``s_j = cfg.supervision_strides[j]``.
    """

    heatmaps: torch.Tensor
    scale_heatmaps: list[torch.Tensor]


class MultiScaleRegression(nn.Module):
    """MSR: fuses the heatmaps of all scales (and features) into the final heatmaps."""

    def __init__(self, channels: int, num_scales: int, msr_channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            ConvBnRelu(channels + num_scales * NUM_KEYPOINTS, msr_channels),
            ConvBnRelu(msr_channels, msr_channels),
            head_1x1(msr_channels, NUM_KEYPOINTS),
        )

    def forward(self, feat: torch.Tensor, scale_heatmaps: list[torch.Tensor]) -> torch.Tensor:
        """``feat [N, C, h, w]`` and per-scale heatmaps -> ``[N, 17, h, w]``."""
        size_hw = feat.shape[-2:]
        ups = [
            F.interpolate(hm, size=size_hw, mode="bilinear", align_corners=False)
            for hm in scale_heatmaps
        ]
        return self.body(torch.cat([feat, *ups], dim=1))


class PoseRefinementNet(nn.Module):
    """PRS: input crops ``[N, 3, H, W]`` made by :func:`model.codecs.image.make_refiner_crops`."""

    def __init__(self, cfg: RefinerConfig) -> None:
        super().__init__()
        self.cfg = cfg
        c = cfg.channels
        # Index into Hourglass.up (coarse to fine) of each supervised stride.
        self.up_index = [
            cfg.hourglass_depth - int(math.log2(s // cfg.stride)) for s in cfg.supervision_strides
        ]
        self.stem, self.hourglasses, self.features = stacked_hourglass_trunk(
            c, cfg.hourglass_depth, cfg.num_stacks
        )
        self.scale_heads = nn.ModuleList(
            nn.ModuleList(head_1x1(c, NUM_KEYPOINTS) for _ in cfg.supervision_strides)
            for _ in range(cfg.num_stacks)
        )
        self.joins = stack_joins(c, NUM_KEYPOINTS, cfg.num_stacks)
        self.msr = MultiScaleRegression(c, len(cfg.supervision_strides), cfg.msr_channels)

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
        final = self.msr(feat, scales)
        return RefinerOutput(heatmaps=final, scale_heatmaps=all_scales)
