"""What models are installed: each network a stage can run, its provenance, size and cost.

``detpose models`` prints this. Costs are measured, not quoted: parameters are counted and
FLOPs are those of one forward pass at the network's input size, counted by
``torch.utils.flop_counter`` (a multiply-add counts as 2), as for DetPoseNet's configs.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from model.checkpoint import checkpoint_sha256, model_from_checkpoint_bytes
from model.inference.weights import BUNDLED_WEIGHTS, DETPOSENET, StageKind
from model.zoo.catalog import NETWORKS, PACKAGE, PACKAGE_VERSION
from model.zoo.weights import zoo_model_from_bytes

# The stage(s) each zoo role serves.
_ROLE_STAGES = {"bottom_up": "stage1", "single_pose": "refiner", "detector": "stage1"}


@dataclass(frozen=True)
class ModelInfo:
    """One installed network."""

    name: str
    stage: str
    installed: bool
    path: str
    source: str
    licence: str
    input_size: str
    parameters: int | None
    gflops: float | None
    megabytes: float | None
    sha256: str | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def count_flops(net: nn.Module, example: torch.Tensor) -> float:
    """FLOPs per input of one forward pass on ``example`` (a multiply-add counts as 2)."""
    counter = FlopCounterMode(display=False)
    with counter, torch.inference_mode():
        net(example)
    return counter.get_total_flops() / example.shape[0]


def _measured(net: nn.Module, example: torch.Tensor) -> tuple[int, float]:
    return sum(p.numel() for p in net.parameters()), count_flops(net, example) / 1e9


def _zoo_info(name: str) -> ModelInfo:
    network = NETWORKS[name]
    path = network.checkpoint_path
    stage = _ROLE_STAGES[network.role]
    source = f"{PACKAGE}@{PACKAGE_VERSION} models/{name}.json ({network.upstream})"
    size = f"{network.input_size}x{network.input_size}"
    if not path.exists():
        return ModelInfo(
            name, stage, False, str(path), source, network.licence, size, None, None, None, None
        )
    data = path.read_bytes()
    zoo = zoo_model_from_bytes(data, str(path), name)
    params, gflops = _measured(zoo.net, torch.zeros(1, 3, network.input_size, network.input_size))
    return ModelInfo(
        name,
        stage,
        True,
        str(path),
        source,
        network.licence,
        size,
        params,
        gflops,
        len(data) / 1e6,
        checkpoint_sha256(data),
    )


def _detposenet_info(kind: StageKind) -> ModelInfo:
    path: Path = BUNDLED_WEIGHTS[kind]
    source = "DetPose demo weights (detpose train, tiny config; see model/weights/README.md)"
    if not path.exists():
        return ModelInfo(
            DETPOSENET, kind, False, str(path), source, "Apache-2.0", "-", None, None, None, None
        )
    data = path.read_bytes()
    net, config, _ = model_from_checkpoint_bytes(data, str(path), kind)
    height, width = (config.input_size,) * 2 if kind == "stage1" else config.input_hw
    params, gflops = _measured(net, torch.zeros(1, 3, height, width))
    return ModelInfo(
        DETPOSENET,
        kind,
        True,
        str(path),
        source,
        "Apache-2.0",
        f"{height}x{width}",
        params,
        gflops,
        len(data) / 1e6,
        checkpoint_sha256(data),
    )


def installed_models() -> list[ModelInfo]:
    """Every network the stages can name, zoo first, with what is known about each."""
    return [
        *(_zoo_info(name) for name in NETWORKS),
        _detposenet_info("stage1"),
        _detposenet_info("refiner"),
    ]
