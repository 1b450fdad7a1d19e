"""Where a stage's weights come from (a checkpoint, the bundled ones, or random init), checked
on the driver before a job starts and loaded in each worker."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from model.checkpoint import (
    CheckpointError,
    check_expected_sha256,
    checkpoint_sha256,
    model_from_checkpoint_bytes,
    read_checkpoint_bytes,
)
from model.inference.devices import for_inference
from model.nets.coarse_net import CoarsePoseNet
from model.nets.refine_net import PoseRefinementNet
from model.zoo.catalog import NETWORKS
from model.zoo.weights import zoo_model_from_bytes
from schemas.model import coarse_preset, refiner_preset

logger = logging.getLogger(__name__)

StageKind = Literal["stage1", "refiner"]
WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "weights"
BUNDLED_WEIGHTS: dict[str, Path] = {
    "stage1": WEIGHTS_DIR / "stage1_tiny.pt",
    "refiner": WEIGHTS_DIR / "refiner_tiny.pt",
}
RANDOM_INIT_SEED = 0


DETPOSENET = "detposenet"


@dataclass(frozen=True)
class LoadedModel:
    """A network ready for inference and where its weights came from.

    ``config`` is the DetPoseNet config for ``detposenet``, else the zoo network's
    ``ZooModel`` (its catalog entry, decoding constants and provenance record).
    """

    net: torch.nn.Module
    config: Any
    source: str
    random_init: bool


def weights_source(kind: StageKind, checkpoint: str | None, model: str = DETPOSENET) -> str:
    """Where ``load_stage_model`` will take a stage's weights from, without loading them."""
    if checkpoint:
        return checkpoint
    if model != DETPOSENET:
        return f"zoo:{model}"
    if BUNDLED_WEIGHTS[kind].exists():
        return f"bundled:{BUNDLED_WEIGHTS[kind].name}"
    return "random-init"


def _checkpoint_path(kind: StageKind, checkpoint: str | None, model: str) -> str:
    if checkpoint:
        return checkpoint
    if model != DETPOSENET:
        if model not in NETWORKS:
            raise CheckpointError(f"got model {model!r}; the zoo has {sorted(NETWORKS)}")
        path = NETWORKS[model].checkpoint_path
        if not path.exists():
            raise CheckpointError(f"{path}: zoo weights missing; `make zoo` regenerates them")
        return str(path)
    return str(BUNDLED_WEIGHTS[kind])


def _model_from_bytes(
    data: bytes, path: str, kind: StageKind, model: str, device: torch.device | str = "cpu"
) -> tuple[torch.nn.Module, Any]:
    if model == DETPOSENET:
        net, config, _record = model_from_checkpoint_bytes(data, path, kind, device)
        return net, config
    zoo = zoo_model_from_bytes(data, path, model)
    return zoo.net.to(device), zoo


@dataclass(frozen=True)
class StageWeights:
    """A stage's weights as checked before a job starts: where they come from, their hash."""

    source: str  # the checkpoint URI, "bundled:NAME" or "random-init"
    sha256: str | None  # of the checkpoint file; None for random init


def check_stage_weights(
    kind: StageKind,
    checkpoint: str | None,
    storage_options: Mapping[str, Any] | None = None,
    model: str = DETPOSENET,
) -> StageWeights:
    """Read and fully load a stage's checkpoint on the CPU once, so that a missing, truncated,
    foreign or wrong-network file fails before any worker starts.

    Raises:
        CheckpointError: naming the file and what is wrong with it.
    """
    source = weights_source(kind, checkpoint, model)
    if source == "random-init":
        return StageWeights(source, None)
    path = _checkpoint_path(kind, checkpoint, model)
    data = read_checkpoint_bytes(path, storage_options)
    _model_from_bytes(data, path, kind, model)
    return StageWeights(source, checkpoint_sha256(data))


def load_stage_model(
    kind: StageKind,
    checkpoint: str | None,
    device: torch.device,
    storage_options: Mapping[str, Any] | None = None,
    expected_sha256: str | None = None,
    model: str = DETPOSENET,
) -> LoadedModel:
    """Load a stage's network: the given checkpoint, else the bundled weights, else random init.

    Random initialisation only happens when no checkpoint is given and none is bundled;
    ``random_init`` says so, and callers must report it. ``expected_sha256`` (from
    ``check_stage_weights``) makes sure every worker loads the bytes the job checked.
    """
    source = weights_source(kind, checkpoint, model)
    if source != "random-init":
        path = _checkpoint_path(kind, checkpoint, model)
        data = read_checkpoint_bytes(path, storage_options)
        check_expected_sha256(data, path, expected_sha256)
        net, config = _model_from_bytes(data, path, kind, model, device)
        return LoadedModel(for_inference(net, device), config, source, random_init=False)
    torch.manual_seed(RANDOM_INIT_SEED)
    if kind == "stage1":
        config = coarse_preset("tiny")
        net: torch.nn.Module = CoarsePoseNet(config)
    else:
        config = refiner_preset("tiny")
        net = PoseRefinementNet(config)
    logger.warning("%s: no checkpoint given and none bundled; using RANDOM weights", kind)
    return LoadedModel(for_inference(net, device), config, "random-init", random_init=True)
