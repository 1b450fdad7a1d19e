"""A job's model stages resolved once, on the driver: which network adapter, which weights
(checked by loading them, identified by their SHA-256) and the settings its runner needs.
Each actor receives only its own ``ResolvedStage``, never the whole job spec."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from model.checkpoint import check_expected_sha256, checkpoint_sha256, read_checkpoint_bytes
from model.inference.devices import resolve_device
from model.inference.zoo_stage1 import View
from model.networks import registry
from model.networks.base import (
    REFINER_OPTIONS,
    STAGE1_OPTIONS,
    NetworkAdapter,
    NetworkError,
    RefinerSettings,
    Stage1Settings,
    StageKind,
)
from model.networks.loaded import LoadedModel
from model.networks.onnx import OnnxNetwork
from schemas.spec import ONNX_MODEL, JobSpec, RefinerSpec, Stage1Spec


@dataclass(frozen=True)
class ResolvedStage:
    """One model stage as the driver resolved it; an actor loads and runs it."""

    kind: StageKind
    adapter: NetworkAdapter
    checkpoint: str | None  # the spec's; None: the network's default weights
    source: str  # where the weights come from, as stats record it
    sha256: str | None  # of the weight file the driver checked; None: random init
    device: str
    settings: Stage1Settings | RefinerSettings
    # fsspec options to read ``checkpoint`` (credentials: never logged or recorded).
    storage_options: Mapping[str, Any] = field(default_factory=dict, repr=False)

    def load(self, device: torch.device | str) -> LoadedModel:
        """The network on ``device``, from the very bytes the driver checked.

        Raises:
            CheckpointError / NetworkError: unreadable, changed or foreign weights.
        """
        path = self.adapter.weights_path(self.checkpoint)
        if path is None:
            return self.adapter.load(None, "random-init", device)
        options = self.storage_options if self.checkpoint else None
        data = read_checkpoint_bytes(path, options)
        check_expected_sha256(data, path, self.sha256)
        return dataclasses.replace(self.adapter.load(data, path, device), source=self.source)

    def runner(self, max_crops: int = 64) -> Callable[..., list[Any]]:
        """The stage's runner on the job's device (``Stage1Settings`` / ``RefinerSettings``)."""
        device = resolve_device(self.device)
        return self.adapter.runner(self.load(device), device, self.settings, max_crops)


def stage_adapter(kind: StageKind, stage: Stage1Spec | RefinerSpec) -> NetworkAdapter:
    """The adapter a stage's ``model`` names: a registered network, or the spec's ONNX file.

    Raises:
        NetworkError: an unknown name, or an option the network does not take.
    """
    if stage.model == ONNX_MODEL:
        assert stage.onnx is not None  # the spec requires it
        adapter: NetworkAdapter = OnnxNetwork(name=ONNX_MODEL, stage=kind, contract=stage.onnx)
    else:
        adapter = registry.network(kind, stage.model)
    options = STAGE1_OPTIONS if kind == "stage1" else REFINER_OPTIONS
    refused = sorted((options & stage.model_fields_set) - adapter.options)
    if refused:
        raise NetworkError(
            f"{kind}.{f', {kind}.'.join(refused)} do not apply to {kind}.model "
            f"{stage.model!r}; it takes {sorted(adapter.options) or 'none of them'}"
        )
    return adapter


def stage_settings(
    kind: StageKind, spec: JobSpec, adapter: NetworkAdapter
) -> Stage1Settings | RefinerSettings:
    """What ``adapter``'s runner needs from ``spec``, the network's defaults filled in."""
    if kind == "stage1":
        views = None
        if "views" in adapter.options:
            views = tuple(
                View(v.input_size, v.grid, v.overlap, v.tile_below_height)
                for v in spec.stage1.resolved_views()
            )
        return Stage1Settings(
            spec.proposals_per_image,
            spec.peaks_per_keypoint,
            spec.filter.keypoint_score_threshold,
            spec.filter.box_score_threshold,
            views,
            spec.precision,
        )
    refiner = spec.refiner
    guide = refiner.guide if refiner.guide is not None else adapter.default_guide
    return RefinerSettings(
        spec.flip_test, refiner.crop_padding, refiner.second_crop_padding, guide, spec.precision
    )


def resolve_stage(
    kind: StageKind,
    spec: JobSpec,
    storage_options: Mapping[str, Any] | None = None,
    check: bool = True,
) -> ResolvedStage:
    """Resolve ``spec``'s stage ``kind``; with ``check`` read its weights and fully load them
    on the CPU once, so that a missing, truncated, foreign or wrong-network file (or an ONNX
    file whose shapes do not fit its codec) fails before any worker starts.

    Raises:
        NetworkError / CheckpointError: naming the network or file and what is wrong.
    """
    stage: Stage1Spec | RefinerSpec = getattr(spec, kind)
    adapter = stage_adapter(kind, stage)
    sha256 = None
    if check:
        path = adapter.weights_path(stage.checkpoint)
        if path is not None:
            data = read_checkpoint_bytes(path, storage_options if stage.checkpoint else None)
            adapter.load(data, path, "cpu")
            sha256 = checkpoint_sha256(data)
    return ResolvedStage(
        kind,
        adapter,
        stage.checkpoint,
        adapter.weights_source(stage.checkpoint),
        sha256,
        spec.device,
        stage_settings(kind, spec, adapter),
        dict(storage_options or {}),
    )


def resolve_stages(
    spec: JobSpec, storage_options: Callable[[str], Mapping[str, Any]] | None = None
) -> dict[StageKind, ResolvedStage]:
    """Both model stages of ``spec``, checked; ``storage_options(uri)`` gives the fsspec
    options of a checkpoint URI (the job's storage settings)."""
    out: dict[StageKind, ResolvedStage] = {}
    for kind in ("stage1", "refiner"):
        checkpoint = getattr(spec, kind).checkpoint
        options = storage_options(checkpoint) if storage_options and checkpoint else {}
        out[kind] = resolve_stage(kind, spec, options)
    return out


def load_network(kind: StageKind, name: str, device: torch.device | str = "cpu") -> LoadedModel:
    """The registered network ``name`` of stage ``kind`` with its default weights (bundled
    or installed), for probes, exports and tests."""
    adapter = registry.network(kind, name)
    path = adapter.weights_path(None)
    if path is None:
        return adapter.load(None, "random-init", device)
    return adapter.load(read_checkpoint_bytes(path), path, device)
