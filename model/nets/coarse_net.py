"""CoarsePoseNet, stage 1 of DetPoseNet (paper §III-A).

A stacked-hourglass trunk shared by two branches:

* person detection: fuses the last hourglass's down-sampling (context) features with its
  up-sampling (structure) output and predicts an anchor-free centre heatmap, box size and
  centre offset (see :mod:`model.codecs.detection`); proposals are the top-K centres, no NMS;
* coarse pose: light tails emitting 17 keypoint heatmaps and the part affinity fields of the
  19 COCO limbs, after every stack (intermediate supervision).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from model.keypoints import NUM_KEYPOINTS, SKELETON
from model.nets.hourglass import ConvBnRelu, head_1x1, stack_joins, stacked_hourglass_trunk
from schemas.network_configs import CoarseNetConfig

NUM_PAF_CHANNELS = 2 * len(SKELETON)

# Focal-loss prior: a fresh detector predicts centre probability ~0.1 everywhere (CenterNet).
_CENTRE_PRIOR_LOGIT = -2.19


class CoarseNetOutput(NamedTuple):
    """Stage-1 outputs; ``h, w = S / stride``.

    Attributes:
        centre_logits: ``[B, 1, h, w]`` person-centre logits (sigmoid -> score).
        size: ``[B, 2, h, w]`` box ``(w, h)`` in output-grid cells (input pixels / stride).
        offset: ``[B, 2, h, w]`` sub-cell centre offset ``(dx, dy)`` in cells.
        keypoint_heatmaps: ``[B, 17, h, w]`` last stack's keypoint heatmaps, values ~[0, 1].
        pafs: ``[B, 38, h, w]`` last stack's PAFs; channels ``2l, 2l + 1`` are the ``(x, y)``
            unit-vector components of limb ``l`` of ``SKELETON``.
        stack_heatmaps: every stack's heatmaps (the last is ``keypoint_heatmaps``).
        stack_pafs: every stack's PAFs (the last is ``pafs``).
    """

    centre_logits: torch.Tensor
    size: torch.Tensor
    offset: torch.Tensor
    keypoint_heatmaps: torch.Tensor
    pafs: torch.Tensor
    stack_heatmaps: list[torch.Tensor]
    stack_pafs: list[torch.Tensor]


class PoseTails(nn.Module):
    """Light coarse-pose tails: keypoint heatmaps and PAFs from one stack's features."""

    def __init__(self, channels: int, tail_channels: int) -> None:
        super().__init__()
        self.heatmap = nn.Sequential(
            ConvBnRelu(channels, tail_channels), head_1x1(tail_channels, NUM_KEYPOINTS)
        )
        self.paf = nn.Sequential(
            ConvBnRelu(channels, tail_channels), head_1x1(tail_channels, NUM_PAF_CHANNELS)
        )

    def forward(self, feat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``[B, C, h, w]`` -> heatmaps ``[B, 17, h, w]``, PAFs ``[B, 38, h, w]``."""
        return self.heatmap(feat), self.paf(feat)


class DetectionBranch(nn.Module):
    """Fuses context (down-path) and structure (up-path) features into centre/size/offset maps."""

    def __init__(self, channels: int, det_channels: int) -> None:
        super().__init__()
        self.context = nn.Conv2d(channels, det_channels, 1)
        self.structure = nn.Conv2d(channels, det_channels, 1)
        self.fuse = nn.Sequential(
            nn.BatchNorm2d(det_channels),
            nn.ReLU(inplace=True),
            ConvBnRelu(det_channels, det_channels),
        )
        self.centre = head_1x1(det_channels, 1, bias_init=_CENTRE_PRIOR_LOGIT)
        self.size = head_1x1(det_channels, 2)
        self.offset = head_1x1(det_channels, 2)

    def forward(
        self, down_feats: list[torch.Tensor], up_out: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Down features (``H/2 .. H/2**d``) and the up output ``[B, C, H, W]`` -> three maps."""
        size_hw = up_out.shape[-2:]
        context = sum(F.interpolate(f, size=size_hw, mode="nearest") for f in down_feats)
        fused = self.fuse(self.context(context) + self.structure(up_out))
        return self.centre(fused), self.size(fused), self.offset(fused)


class CoarsePoseNet(nn.Module):
    """Stage-1 network; input ``[B, 3, S, S]`` normalised by :func:`model.codecs.image.to_network_input`."""

    def __init__(self, cfg: CoarseNetConfig) -> None:
        super().__init__()
        self.cfg = cfg
        c = cfg.channels
        self.stem, self.hourglasses, self.features = stacked_hourglass_trunk(
            c, cfg.hourglass_depth, cfg.num_stacks
        )
        self.pose_tails = nn.ModuleList(
            PoseTails(c, cfg.pose_channels) for _ in range(cfg.num_stacks)
        )
        self.joins = stack_joins(c, NUM_KEYPOINTS + NUM_PAF_CHANNELS, cfg.num_stacks)
        self.detection = DetectionBranch(c, cfg.det_channels)

    def forward(self, x: torch.Tensor) -> CoarseNetOutput:
        """``[B, 3, S, S]`` -> :class:`CoarseNetOutput` at ``S / 4``."""
        x = self.stem(x)
        heatmaps: list[torch.Tensor] = []
        pafs: list[torch.Tensor] = []
        for i, hourglass in enumerate(self.hourglasses):
            hg = hourglass(x)
            feat = self.features[i](hg.out)
            heatmap, paf = self.pose_tails[i](feat)
            heatmaps.append(heatmap)
            pafs.append(paf)
            if i < len(self.joins):
                x = self.joins[i](x, feat, torch.cat([heatmap, paf], dim=1))
        centre, size, offset = self.detection(hg.down, feat)
        return CoarseNetOutput(
            centre_logits=centre,
            size=size,
            offset=offset,
            keypoint_heatmaps=heatmaps[-1],
            pafs=pafs[-1],
            stack_heatmaps=heatmaps,
            stack_pafs=pafs,
        )
