"""DetPoseNet's two networks from their configs."""

from __future__ import annotations

from torch import nn

from model.checkpoint import CheckpointKind
from model.nets.coarse_net import CoarsePoseNet
from model.nets.refine_net import PoseRefinementNet
from schemas.network_configs import CoarseNetConfig, RefinerConfig


def build_model(kind: CheckpointKind, config: CoarseNetConfig | RefinerConfig) -> nn.Module:
    """The DetPoseNet network of ``kind`` for ``config``."""
    if kind == "stage1" and isinstance(config, CoarseNetConfig):
        return CoarsePoseNet(config)
    if kind == "refiner" and isinstance(config, RefinerConfig):
        return PoseRefinementNet(config)
    raise ValueError(
        f"got kind {kind!r} with a {type(config).__name__}; expected stage1/CoarseNetConfig or "
        "refiner/RefinerConfig"
    )
