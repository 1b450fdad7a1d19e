"""DetPoseNet's own networks: CoarsePoseNet (stage 1) and the pose refinement net (stage 3),
read from DetPose checkpoints (``model/checkpoint.py``); the tiny demo weights are bundled."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from model.checkpoint import (
    CheckpointKind,
    check_expected_sha256,
    checkpoint_config,
    load_state,
    parse_checkpoint_bytes,
    read_checkpoint_bytes,
)
from model.inference.devices import for_inference
from model.inference.refiner import HeatmapCropRefiner
from model.inference.stage1 import CoarsePoseModel
from model.nets.build import build_model
from model.networks.base import (
    NetworkAdapter,
    NetworkInfo,
    RefinerSettings,
    Stage1Settings,
    StageKind,
)
from model.networks.loaded import LoadedModel

if TYPE_CHECKING:
    from model.training.recipe import TrainingRecipe
from schemas.network_configs import CoarseNetConfig, RefinerConfig, coarse_preset, refiner_preset

logger = logging.getLogger(__name__)

NAME = "detposenet"
WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "weights"
BUNDLED_WEIGHTS: dict[str, Path] = {
    "stage1": WEIGHTS_DIR / "stage1_tiny.pt",
    "refiner": WEIGHTS_DIR / "refiner_tiny.pt",
}
RANDOM_INIT_SEED = 0


def model_from_checkpoint_bytes(
    data: bytes, name: str, kind: CheckpointKind, map_location: torch.device | str = "cpu"
) -> tuple[nn.Module, CoarseNetConfig | RefinerConfig, dict[str, Any]]:
    """A DetPoseNet network rebuilt from checkpoint bytes; ``name`` is used in messages.

    Returns:
        ``(model in eval mode, config, record)``.

    Raises:
        CheckpointError: pickled objects, wrong kind or network, missing keys, invalid
            config, or a state dict that does not fit the config.
    """
    payload = parse_checkpoint_bytes(data, name, map_location)
    config = checkpoint_config(payload, name, kind, NAME)
    model = build_model(kind, config)
    load_state(model, payload, name, kind)
    model.to(map_location)
    model.eval()
    record = payload["record"] if isinstance(payload["record"], dict) else {}
    return model, config, record


def load_checkpoint(
    path_or_uri: str | os.PathLike,
    kind: CheckpointKind,
    map_location: torch.device | str = "cpu",
    storage_options: Mapping[str, Any] | None = None,
    expected_sha256: str | None = None,
) -> tuple[nn.Module, CoarseNetConfig | RefinerConfig, dict[str, Any]]:
    """A DetPoseNet network from a checkpoint file (local path or fsspec URI), optionally
    refused unless its bytes hash to ``expected_sha256``.

    Raises:
        CheckpointError: as ``model_from_checkpoint_bytes``, or unreadable / changed bytes.
    """
    name = os.fspath(path_or_uri)
    data = read_checkpoint_bytes(name, storage_options)
    check_expected_sha256(data, name, expected_sha256)
    return model_from_checkpoint_bytes(data, name, kind, map_location)


@dataclass(frozen=True)
class DetPoseNetAdapter(NetworkAdapter):
    """One of DetPoseNet's two networks; the demo weights are bundled (random init when
    they are missing, reported as such)."""

    stage: StageKind
    name: str = NAME
    licence: str = "Apache-2.0"

    @property
    def description(self) -> str:  # type: ignore[override]
        if self.stage == "stage1":
            return "DetPoseNet CoarsePoseNet: person boxes and keypoint peaks with PAF scores"
        return "DetPoseNet pose refinement net (MSS + MSR) on person crops"

    @property
    def groups_poses(self) -> bool:  # type: ignore[override]
        return False  # peaks and limb scores: Algorithm 1 groups them

    def training(self, init: str | None = None) -> TrainingRecipe | None:
        from model.training.recipe import DetPoseNetRecipe

        return DetPoseNetRecipe(self.stage, init)  # type: ignore[arg-type]

    def default_weights(self) -> Path | None:
        return BUNDLED_WEIGHTS[self.stage]

    def install_hint(self) -> str:
        return "`detpose train` writes a checkpoint; without one the stage runs RANDOM weights"

    def info(self) -> NetworkInfo:
        return NetworkInfo(
            "DetPose demo weights (detpose train, tiny config; see model/weights/README.md)",
            self.licence,
        )

    def random_init_allowed(self) -> bool:
        return True

    def load(self, data: bytes | None, name: str, device: torch.device | str) -> LoadedModel:
        if data is not None:
            net, config, _ = model_from_checkpoint_bytes(data, name, self.stage, device)
            return LoadedModel(for_inference(net, device), config, name, random_init=False)
        torch.manual_seed(RANDOM_INIT_SEED)
        config = coarse_preset("tiny") if self.stage == "stage1" else refiner_preset("tiny")
        logger.warning("%s: no checkpoint given and none bundled; using RANDOM weights", self.stage)
        net = build_model(self.stage, config)
        return LoadedModel(for_inference(net, device), config, "random-init", random_init=True)

    def input_hw(
        self, loaded: LoadedModel, stage1_input_size: int | None = None
    ) -> tuple[int, int]:
        if self.stage == "refiner":
            return tuple(loaded.config.input_hw)  # type: ignore[return-value]
        size = stage1_input_size or loaded.config.input_size
        return size, size

    def runner(
        self, loaded: LoadedModel, device: torch.device, settings: Any, max_crops: int = 64
    ) -> Callable[..., list[Any]]:
        if self.stage == "stage1":
            assert isinstance(settings, Stage1Settings)
            return CoarsePoseModel(
                loaded,
                device,
                settings.proposals_per_image,
                settings.peaks_per_keypoint,
                settings.keypoint_threshold,
                settings.precision,
            )
        assert isinstance(settings, RefinerSettings)
        return HeatmapCropRefiner(loaded, device, settings, max_crops)


STAGE1 = DetPoseNetAdapter(stage="stage1")
REFINER = DetPoseNetAdapter(stage="refiner")
