"""The zoo's imported MoveNet networks (``model/zoo``): MultiPose as stage 1, SinglePose
Thunder and Lightning as refiners. Their weights are the zoo checkpoints ``make zoo`` writes."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from model.inference.devices import for_inference
from model.inference.refiner import ZOO_CROP_PADDING, MoveNetCropRefiner
from model.inference.zoo_stage1 import ZooCoarsePoseModel
from model.networks.base import (
    REFINER_OPTIONS,
    STAGE1_OPTIONS,
    NetworkAdapter,
    NetworkInfo,
    RefinerSettings,
    Stage1Settings,
    StageKind,
)
from model.networks.loaded import LoadedModel

if TYPE_CHECKING:
    from model.training.recipe import TrainingRecipe
from model.zoo.catalog import NETWORKS, PACKAGE, PACKAGE_VERSION
from model.zoo.weights import zoo_model_from_bytes

_ROLE_STAGES: dict[str, StageKind] = {"bottom_up": "stage1", "single_pose": "refiner"}


@dataclass(frozen=True)
class ZooAdapter(NetworkAdapter):
    """One imported zoo network, by its catalog name."""

    name: str

    @property
    def stage(self) -> StageKind:  # type: ignore[override]
        return _ROLE_STAGES[NETWORKS[self.name].role]

    @property
    def description(self) -> str:  # type: ignore[override]
        return NETWORKS[self.name].description

    @property
    def licence(self) -> str:  # type: ignore[override]
        return NETWORKS[self.name].licence

    @property
    def options(self) -> frozenset[str]:  # type: ignore[override]
        return STAGE1_OPTIONS if self.stage == "stage1" else REFINER_OPTIONS

    @property
    def crop_padding(self) -> float | None:  # type: ignore[override]
        return ZOO_CROP_PADDING if self.stage == "refiner" else None

    @property
    def default_guide(self) -> str:  # type: ignore[override]
        return "pose"  # measured best on the crowd set (docs/evaluation.md)

    def training(self, init: str | None = None) -> TrainingRecipe | None:
        if NETWORKS[self.name].role != "single_pose":
            return None  # MultiPose: its box heads have no training targets here
        from model.training.recipe import MoveNetRecipe

        return MoveNetRecipe(self.name, init)

    def default_weights(self) -> Path | None:
        return NETWORKS[self.name].checkpoint_path

    def install_hint(self) -> str:
        return "make zoo (regenerates the zoo weights)"

    def weights_source(self, checkpoint: str | None) -> str:
        return checkpoint or f"zoo:{self.name}"

    def load(self, data: bytes | None, name: str, device: torch.device | str) -> LoadedModel:
        assert data is not None  # weights_path never gives None for the zoo
        zoo = zoo_model_from_bytes(data, name, self.name)
        return LoadedModel(for_inference(zoo.net.to(device), device), zoo, name, False)

    def input_hw(
        self, loaded: LoadedModel, stage1_input_size: int | None = None
    ) -> tuple[int, int]:
        size = stage1_input_size or NETWORKS[self.name].input_size
        return size, size

    def runner(
        self, loaded: LoadedModel, device: torch.device, settings: Any, max_crops: int = 64
    ) -> Callable[..., list[Any]]:
        if self.stage == "stage1":
            assert isinstance(settings, Stage1Settings) and settings.views
            return ZooCoarsePoseModel(
                loaded,
                device,
                settings.proposals_per_image,
                settings.views,
                settings.box_score_threshold,
                settings.precision,
            )
        assert isinstance(settings, RefinerSettings)
        return MoveNetCropRefiner(loaded, device, settings, max_crops)

    def info(self) -> NetworkInfo:
        network = NETWORKS[self.name]
        source = f"{PACKAGE}@{PACKAGE_VERSION} models/{self.name}.json ({network.upstream})"
        return NetworkInfo(source, network.licence)


MOVENET_MULTIPOSE = ZooAdapter("movenet-multipose")
MOVENET_THUNDER = ZooAdapter("movenet-thunder")
MOVENET_LIGHTNING = ZooAdapter("movenet-lightning")
