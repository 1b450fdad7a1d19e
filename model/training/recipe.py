"""How `detpose train` trains one registered network: a :class:`TrainingRecipe`.

A network adapter that can be trained returns its recipe (``NetworkAdapter.training``). The
single-process loop (``model/training/loop.py``) and the Ray Train workers
(``pipeline/training/trainer.py``) drive any recipe the same way: build the network (from
random weights or from a base checkpoint), draw samples, compute the loss terms, save and
resume checkpoints in the network's own format.

- :class:`DetPoseNetRecipe`: CoarsePoseNet or the refinement net, DetPose checkpoints; from
  random weights, or fine-tuned from ``init`` (a checkpoint whose architecture it keeps).
- :class:`MoveNetRecipe`: a zoo MoveNet SinglePose network fine-tuned from its released
  weights (or from ``init``, an earlier fine-tune), zoo checkpoints
  (``model/training/movenet.py``).
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, get_args

import torch
from pydantic import ValidationError
from torch import nn
from torch.utils.data import Dataset

from model.checkpoint import (
    CheckpointError,
    CheckpointKind,
    checkpoint_config,
    load_state,
    parse_checkpoint_bytes,
    read_checkpoint_bytes,
    save_checkpoint,
)
from model.nets.build import build_model
from model.training.datasets import CocoImage, RefinerDataset, Stage1Dataset
from model.training.losses import refiner_losses, stage1_losses
from model.training.movenet import (
    MoveNetCropDataset,
    TrainableMoveNet,
    fine_tuned_payload,
    movenet_losses,
    read_base,
    write_payload,
)
from model.zoo.catalog import NETWORKS
from model.zoo.weights import zoo_model_from_payload
from schemas.network_configs import (
    CoarseNetConfig,
    MoveNetConfig,
    MoveNetPresetName,
    PresetName,
    RefinerConfig,
    RefinerPresetName,
    coarse_preset,
    movenet_preset,
    refiner_preset,
)

TrainingConfig = CoarseNetConfig | RefinerConfig | MoveNetConfig


def read_payload(
    uri: str, storage_options: Mapping[str, Any] | None = None, zoo: bool = False
) -> dict[str, Any]:
    """A checkpoint dict read with ``weights_only=True`` (a zoo one with ``zoo``)."""
    data = read_checkpoint_bytes(uri, storage_options)
    if zoo:
        return parse_checkpoint_bytes(data, uri, required=("format", "kind"), expected_format=None)
    return parse_checkpoint_bytes(data, uri)


class TrainingRecipe(ABC):
    """What training one network takes. Subclasses are frozen dataclasses: a recipe travels
    by value to every Ray Train worker."""

    network: str  # the registry name
    stage: str  # stage1 / refiner
    init: str | None  # a checkpoint to start from (None: the recipe's own start)
    checkpoint_kind: str  # the "kind" its checkpoints hold
    default_preset: str

    @property
    @abstractmethod
    def presets(self) -> tuple[str, ...]:
        """The ``--config`` presets it takes."""

    @abstractmethod
    def preset_config(self, preset: str | None) -> TrainingConfig:
        """The config of ``preset`` (None: the default, or the ``init`` checkpoint's own)."""

    @abstractmethod
    def config_from_json(self, data: Mapping[str, Any]) -> TrainingConfig:
        """A config from its JSON form (what travels to workers and checkpoints store)."""

    def config(
        self, preset: str | None, changes: Mapping[str, Any], batch_size: int | None = None
    ) -> TrainingConfig:
        """The preset's config with ``changes`` (``--set``) and ``batch_size`` applied.

        Raises:
            ValueError: an unknown preset for this network, an unknown field or a bad value.
        """
        if preset is not None and preset not in self.presets:
            raise ValueError(
                f"{self.stage} network {self.network!r} trains with --config "
                f"{' or '.join(self.presets)}, not {preset!r}"
            )
        base = self.preset_config(preset)
        update = dict(changes)
        if batch_size is not None:
            update["batch_size"] = batch_size
        try:
            return type(base).model_validate({**base.model_dump(), **update})
        except ValidationError as exc:
            raise ValueError(f"--set: invalid {self.stage} config: {exc}") from exc

    @abstractmethod
    def dataset(
        self,
        records: Sequence[CocoImage],
        cfg: TrainingConfig,
        augment: bool,
        seed: int,
        storage_options: Mapping[str, Any] | None = None,
    ) -> Dataset:
        """The map-style sample dataset of ``records``."""

    @abstractmethod
    def new_model(self, cfg: TrainingConfig) -> nn.Module:
        """The network a fresh run starts from (random weights seeded by the caller, or the
        base checkpoint's)."""

    @abstractmethod
    def loss(
        self, model: nn.Module, batch: dict[str, torch.Tensor], cfg: TrainingConfig
    ) -> dict[str, torch.Tensor]:
        """Forward a batch; the loss terms, ``total`` among them."""

    @abstractmethod
    def read_resumable(
        self, uri: str, storage_options: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        """The checkpoint at ``uri`` as a dict a run can resume from.

        Raises:
            CheckpointError: unreadable, or not a checkpoint of this network's training.
        """

    @abstractmethod
    def training_record(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        """The training record (steps, losses, ...) inside a checkpoint dict."""

    @abstractmethod
    def load_weights(self, model: nn.Module, payload: Mapping[str, Any]) -> None:
        """Put a checkpoint's weights into ``model`` (built by :meth:`new_model`)."""

    @abstractmethod
    def save(
        self,
        uri: str,
        model: nn.Module,
        cfg: TrainingConfig,
        record: dict[str, Any],
        optimizer_state: dict[str, Any] | None,
        storage_options: Mapping[str, Any] | None = None,
    ) -> None:
        """Write the network's checkpoint (its training ``record`` inside) to ``uri``."""

    def resumable_changes(
        self, name: str, payload: Mapping[str, Any], cfg: TrainingConfig
    ) -> dict[str, list[Any]]:
        """The training settings ``cfg`` changes against a checkpoint it may resume from.

        Returns:
            ``{field: [stored value, new value]}`` for the changed fields; empty when none.

        Raises:
            CheckpointError: the checkpoint is of another kind or network, or ``cfg`` changes
                a field of ``cfg.ARCHITECTURE_FIELDS`` (it cannot continue this network).
        """
        if payload.get("kind") != self.checkpoint_kind or payload.get("network", "detposenet") != (
            self.network
        ):
            raise CheckpointError(
                f"{name}: cannot resume training {self.stage} network {self.network!r} from it: "
                f"it holds a {payload.get('kind')} checkpoint of {payload.get('network')!r}; "
                "choose a new output path or turn resuming off"
            )
        if "config" not in payload:
            raise CheckpointError(
                f"{name}: holds no training config (not written by `detpose train`); choose a "
                "new output path or turn resuming off"
            )
        new = cfg.model_dump(mode="json")
        # A field added after the checkpoint was written reads as its default there.
        fields = type(cfg).model_fields
        stored = {
            **{k: fields[k].default for k in new if k not in payload["config"]},
            **payload["config"],
        }
        changed = {k: [stored.get(k), v] for k, v in new.items() if stored.get(k) != v}
        architecture = sorted(set(changed) & cfg.ARCHITECTURE_FIELDS)
        if architecture or set(stored) - set(new):
            raise CheckpointError(
                f"{name}: cannot resume a {self.stage} run from it: its network differs "
                f"({', '.join(architecture or sorted(set(stored) - set(new)))}); choose a new "
                "output path or turn resuming off"
            )
        return changed


@dataclass(frozen=True)
class DetPoseNetRecipe(TrainingRecipe):
    """DetPoseNet's stage-1 network or refiner, from random weights or from ``init``."""

    stage: CheckpointKind
    init: str | None = None
    network: str = "detposenet"
    default_preset: str = "tiny"

    @property
    def checkpoint_kind(self) -> str:  # type: ignore[override]
        return self.stage

    @property
    def presets(self) -> tuple[str, ...]:
        return get_args(PresetName if self.stage == "stage1" else RefinerPresetName)

    def preset_config(self, preset: str | None) -> TrainingConfig:
        if preset is None and self.init is not None:
            # Fine-tuning keeps the network it starts from: its config, with --set on top.
            return checkpoint_config(read_payload(self.init), self.init, self.stage, self.network)
        name = preset or self.default_preset
        return coarse_preset(name) if self.stage == "stage1" else refiner_preset(name)  # type: ignore[arg-type]

    def config_from_json(self, data: Mapping[str, Any]) -> TrainingConfig:
        config_type = CoarseNetConfig if self.stage == "stage1" else RefinerConfig
        return config_type.model_validate(dict(data))

    def dataset(
        self,
        records: Sequence[CocoImage],
        cfg: TrainingConfig,
        augment: bool,
        seed: int,
        storage_options: Mapping[str, Any] | None = None,
    ) -> Dataset:
        dataset_type = Stage1Dataset if self.stage == "stage1" else RefinerDataset
        return dataset_type(
            list(records),
            cfg,
            augment=augment,
            seed=seed,
            storage_options=storage_options,  # type: ignore[arg-type]
        )

    def new_model(self, cfg: TrainingConfig) -> nn.Module:
        model = build_model(self.stage, cfg)  # type: ignore[arg-type]
        if self.init is not None:
            load_state(model, read_payload(self.init), self.init, self.stage)
        return model

    def loss(
        self, model: nn.Module, batch: dict[str, torch.Tensor], cfg: TrainingConfig
    ) -> dict[str, torch.Tensor]:
        losses = stage1_losses if self.stage == "stage1" else refiner_losses
        return losses(model, batch, cfg)  # type: ignore[arg-type]

    def read_resumable(
        self, uri: str, storage_options: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        return read_payload(uri, storage_options)

    def training_record(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        record = payload.get("record")
        return dict(record) if isinstance(record, dict) else {}

    def load_weights(self, model: nn.Module, payload: Mapping[str, Any]) -> None:
        model.load_state_dict(payload["state_dict"])

    def save(
        self,
        uri: str,
        model: nn.Module,
        cfg: TrainingConfig,
        record: dict[str, Any],
        optimizer_state: dict[str, Any] | None,
        storage_options: Mapping[str, Any] | None = None,
    ) -> None:
        if self.init is not None:
            record = {**record, "init": self.init, "init_sha256": _sha256(self.init)}
        save_checkpoint(
            uri, self.stage, model, cfg, record,  # type: ignore[arg-type]
            optimizer_state=optimizer_state, storage_options=storage_options,
        )  # fmt: skip


@dataclass(frozen=True)
class MoveNetRecipe(TrainingRecipe):
    """A zoo MoveNet SinglePose network, fine-tuned from its released weights or ``init``."""

    network: str
    init: str | None = None
    stage: str = "refiner"
    checkpoint_kind: str = "zoo"
    default_preset: str = "fine-tune"

    @property
    def presets(self) -> tuple[str, ...]:
        return get_args(MoveNetPresetName)

    @property
    def base_uri(self) -> str:
        """The checkpoint a fresh run starts from: ``init``, else the released weights."""
        if self.init is not None:
            return self.init
        path = NETWORKS[self.network].checkpoint_path
        if not path.exists():
            raise CheckpointError(f"{path} is missing: make zoo (regenerates the zoo weights)")
        return str(path)

    def preset_config(self, preset: str | None) -> TrainingConfig:
        return movenet_preset(preset or self.default_preset)  # type: ignore[arg-type]

    def config_from_json(self, data: Mapping[str, Any]) -> TrainingConfig:
        return MoveNetConfig.model_validate(dict(data))

    @property
    def input_size(self) -> int:
        return NETWORKS[self.network].input_size

    def dataset(
        self,
        records: Sequence[CocoImage],
        cfg: TrainingConfig,
        augment: bool,
        seed: int,
        storage_options: Mapping[str, Any] | None = None,
    ) -> Dataset:
        return MoveNetCropDataset(
            list(records), cfg, augment, seed, self.input_size,  # type: ignore[arg-type]
            storage_options=storage_options,
        )  # fmt: skip

    def new_model(self, cfg: TrainingConfig) -> nn.Module:
        base = read_base(self.base_uri)
        return TrainableMoveNet(zoo_model_from_payload(base.payload, base.uri, self.network))

    def loss(
        self, model: nn.Module, batch: dict[str, torch.Tensor], cfg: TrainingConfig
    ) -> dict[str, torch.Tensor]:
        heads = model(batch["crop"])
        stride = batch["crop"].shape[-1] / heads["heatmaps"].shape[-1]
        return movenet_losses(heads, batch["keypoints"], batch["centre"], stride, cfg)  # type: ignore[arg-type]

    def read_resumable(
        self, uri: str, storage_options: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        return read_payload(uri, storage_options, zoo=True)

    def training_record(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        record = payload.get("record", {}).get("fine_tune", {})
        return {k: v for k, v in record.items() if not k.startswith("base_")}

    def load_weights(self, model: nn.Module, payload: Mapping[str, Any]) -> None:
        trained = TrainableMoveNet(zoo_model_from_payload(dict(payload), "resume", self.network))
        model.load_state_dict(trained.state_dict())

    def save(
        self,
        uri: str,
        model: nn.Module,
        cfg: TrainingConfig,
        record: dict[str, Any],
        optimizer_state: dict[str, Any] | None,
        storage_options: Mapping[str, Any] | None = None,
    ) -> None:
        base = read_base(self.base_uri)
        payload = fine_tuned_payload(base, model, cfg, record, optimizer_state)  # type: ignore[arg-type]
        write_payload(uri, payload, storage_options or {})


def _sha256(uri: str) -> str:
    return hashlib.sha256(read_checkpoint_bytes(uri)).hexdigest()


def unwrap(model: nn.Module) -> nn.Module:
    """The network inside a DDP wrapper (itself otherwise)."""
    return model.module if hasattr(model, "module") else model


__all__ = [
    "DetPoseNetRecipe",
    "MoveNetRecipe",
    "TrainingConfig",
    "TrainingRecipe",
    "read_payload",
    "unwrap",
]
