"""What one network adapter provides: how to load the network safely, its input size, how
its stage runs it (pre-processing, forward, decoding into the stage's contract), what
`detpose models` says of it, and whether `detpose train` can train it.

A stage runner is a callable: stage 1's maps ``[H, W, 3]`` uint8 images to one
``CoarseProposals`` each; the refiner's maps images, person boxes and coarse poses to one
``RefinedPoses`` each (``model/inference``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch.utils.flop_counter import FlopCounterMode

from model.inference.zoo_stage1 import View
from model.networks.loaded import LoadedModel

if TYPE_CHECKING:
    from model.training.recipe import TrainingRecipe

StageKind = Literal["stage1", "refiner"]
STAGE_KINDS: tuple[StageKind, ...] = ("stage1", "refiner")
# Stage options a spec may set only for the networks that take them (``NetworkAdapter.options``).
STAGE1_OPTIONS = frozenset({"views", "input_size"})
REFINER_OPTIONS = frozenset({"crop_padding", "second_crop_padding", "guide"})


def count_flops(net: torch.nn.Module, example: torch.Tensor) -> float:
    """FLOPs per input of one forward pass on ``example`` (a multiply-add counts as 2)."""
    counter = FlopCounterMode(display=False)
    with counter, torch.inference_mode():
        net(example)
    return counter.get_total_flops() / example.shape[0]


class NetworkError(ValueError):
    """A network that cannot be used as asked; the message names it and what is wrong."""


@dataclass(frozen=True)
class Stage1Settings:
    """What a stage-1 runner needs from the job spec."""

    proposals_per_image: int
    peaks_per_keypoint: int
    keypoint_threshold: float
    box_score_threshold: float
    views: tuple[View, ...] | None  # None: the network's own single pass
    precision: str = "auto"


@dataclass(frozen=True)
class RefinerSettings:
    """What a refiner runner needs from the job spec (``None``: the network's own choice)."""

    flip_test: bool = False
    crop_padding: float | None = None
    second_crop_padding: float | None = None
    guide: str = "pose"
    precision: str = "auto"

    @property
    def passes_per_crop(self) -> int:
        """Forward passes per person: the flip test and a second crop each double them."""
        return (2 if self.flip_test else 1) * (2 if self.second_crop_padding is not None else 1)


@dataclass(frozen=True)
class NetworkInfo:
    """What ``detpose models`` prints of a network that is not installed or not measured."""

    source: str
    licence: str


class NetworkAdapter(ABC):
    """One network of one stage, registered under ``name`` (``model/networks/registry.py``).

    Subclasses are frozen dataclasses, so an adapter pickles by value into Ray workers: an
    adapter registered at run time (a test's, a plugin's) runs in every actor.
    """

    name: str
    stage: StageKind
    description: str
    licence: str
    groups_poses: bool = True  # stage 1: emits grouped coarse poses (else peaks + limb scores)
    options: frozenset[str] = frozenset()  # STAGE1_OPTIONS / REFINER_OPTIONS it takes
    crop_padding: float | None = None  # a top-down refiner's crop padding by default
    default_guide: str = "off"  # a top-down refiner's guide by default (RefinerSettings.guide)

    def default_weights(self) -> Path | None:
        """The weights used when the spec names no checkpoint (bundled files); None: none."""
        return None

    def training(self, init: str | None = None) -> TrainingRecipe | None:
        """How `detpose train` trains this network, starting from ``init`` (a checkpoint of
        it) when given; None: it cannot be trained here."""
        return None

    @property
    def trainable(self) -> bool:
        return self.training() is not None

    def weights_source(self, checkpoint: str | None) -> str:
        """Where the weights come from, as the job's stats record it."""
        if checkpoint:
            return checkpoint
        default = self.default_weights()
        if default is not None and default.exists():
            return f"bundled:{default.name}"
        return "random-init"

    def weights_path(self, checkpoint: str | None) -> str | None:
        """The file to read: the checkpoint, else the default weights; None: random init.

        Raises:
            NetworkError: no checkpoint given, and no weights installed for this network.
        """
        if checkpoint:
            return checkpoint
        default = self.default_weights()
        if default is not None and default.exists():
            return str(default)
        if self.random_init_allowed():
            return None
        raise NetworkError(
            f"{self.stage} network {self.name!r} has no weights: "
            + (f"{default} is missing ({self.install_hint()})" if default else "give a checkpoint")
        )

    def random_init_allowed(self) -> bool:
        """Whether the network may run with random weights when it has none (demo only)."""
        return False

    def install_hint(self) -> str:
        return "give a checkpoint"

    @abstractmethod
    def load(self, data: bytes | None, name: str, device: torch.device | str) -> LoadedModel:
        """The network from weight-file bytes (``None``: random init), ready for inference
        on ``device``. ``name`` names the file in errors.

        Raises:
            CheckpointError / NetworkError: a file that is not this network's.
        """

    @abstractmethod
    def input_hw(
        self, loaded: LoadedModel, stage1_input_size: int | None = None
    ) -> tuple[int, int]:
        """``(height, width)`` of one network input (a stage-1 square, a refiner crop)."""

    @abstractmethod
    def runner(
        self, loaded: LoadedModel, device: torch.device, settings: Any, max_crops: int = 64
    ) -> Callable[..., list[Any]]:
        """The stage runner for ``loaded`` with ``settings`` (``Stage1Settings`` or
        ``RefinerSettings``); ``max_crops`` bounds a refiner's crops per forward pass."""

    def forward_fn(self, loaded: LoadedModel) -> Callable[[torch.Tensor], Any]:
        """One forward pass on ``[B, 3, H, W]`` float ``0..255`` inputs (throughput probes)."""
        return loaded.net

    def measure(self, loaded: LoadedModel) -> tuple[int | None, float | None]:
        """``(parameters, GFLOPs per input)`` of one forward pass; None where unknown."""
        height, width = self.input_hw(loaded)
        net = loaded.net
        params = sum(p.numel() for p in net.parameters())
        return params, count_flops(net, torch.zeros(1, 3, height, width)) / 1e9

    def info(self) -> NetworkInfo:
        """Provenance for ``detpose models``."""
        return NetworkInfo(self.description, self.licence)
