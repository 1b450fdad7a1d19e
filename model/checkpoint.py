"""Checkpoints: a state dict plus the config that built the model, and a training record.

A checkpoint file is ``torch.save`` of a dict holding only tensors and primitives::

    {"format": 1, "kind": "stage1" | "refiner", "network": "detposenet", "config": {...},
     "state_dict": {...}, "record": {...}, "optimizer": {...} (optional, for resuming)}

``network`` names the registered network that reads it (``model/networks/registry.py``);
files written before it existed are DetPoseNet's. This module knows the file format only:
building a network from its config is the network adapter's (``model/networks``).

It is always read with ``torch.load(weights_only=True)``: nothing pickled is trusted.
"""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Mapping
from typing import Any, Literal

import fsspec
import torch
from pydantic import ValidationError
from torch import nn

from schemas.network_configs import CoarseNetConfig, RefinerConfig

CheckpointKind = Literal["stage1", "refiner"]
CHECKPOINT_FORMAT = 1
_REQUIRED_KEYS = ("format", "kind", "config", "state_dict", "record")
_CONFIG_TYPES: dict[str, type[CoarseNetConfig] | type[RefinerConfig]] = {
    "stage1": CoarseNetConfig,
    "refiner": RefinerConfig,
}
# Config fields that older checkpoints store but the configs no longer have. They never
# shaped the network or its weights, so reading drops them; any other unknown field is
# still refused (the configs forbid extra fields).
#   stage1 top_k: proposals per image, now the job spec's proposals_per_image.
_RETIRED_CONFIG_FIELDS: dict[str, tuple[str, ...]] = {"stage1": ("top_k",), "refiner": ()}
# Config fields added later, with the value that reproduces the older checkpoints' networks
# and training. A stored config that lacks a field gets this value, not today's default:
#   refiner msr, structure_loss, mask_from (2026-11-26): before the paper's multi-scale MSR,
#   association channels and masking as fine-tuning, the MSR regressed the final scale only,
#   the neighbour terms added neighbouring keypoints' errors and masking ran all along.
_LEGACY_CONFIG_VALUES: dict[str, dict[str, Any]] = {
    "stage1": {},
    "refiner": {"msr": "final", "structure_loss": "neighbours", "mask_from": 0.0},
}


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message names the file and the problem."""


def checkpoint_sha256(data: bytes) -> str:
    """Hex SHA-256 of a checkpoint's bytes: its identity in a job's fingerprint."""
    return hashlib.sha256(data).hexdigest()


def check_expected_sha256(data: bytes, name: str, expected_sha256: str | None) -> None:
    """Refuse checkpoint bytes that are not the ones a job checked (``None``: no check)."""
    if expected_sha256 is not None and checkpoint_sha256(data) != expected_sha256:
        raise CheckpointError(
            f"{name}: changed since the job checked it (sha256 {checkpoint_sha256(data)[:12]}…, "
            f"expected {expected_sha256[:12]}…)"
        )


def check_primitives(value: Any, where: str) -> None:
    """Refuse anything ``torch.load(weights_only=True)`` would not read back."""
    # Exact types: subclasses (e.g. torch's TorchVersion str) are pickled as globals.
    if value is None or type(value) in (bool, int, float, str) or isinstance(value, torch.Tensor):
        return
    if type(value) in (list, tuple):
        for i, item in enumerate(value):
            check_primitives(item, f"{where}[{i}]")
        return
    if type(value) is dict:
        for key, item in value.items():
            if type(key) not in (str, int):
                raise TypeError(
                    f"{where} has a key of type {type(key).__name__}; keys must be str or int"
                )
            check_primitives(item, f"{where}[{key!r}]")
        return
    raise TypeError(
        f"{where} holds a {type(value).__name__}; a checkpoint stores only tensors and primitives"
    )


def save_checkpoint(
    path_or_uri: str | os.PathLike,
    kind: CheckpointKind,
    model: nn.Module,
    config: CoarseNetConfig | RefinerConfig,
    record: dict[str, Any],
    optimizer_state: dict[str, Any] | None = None,
    network: str = "detposenet",
    storage_options: Mapping[str, Any] | None = None,
) -> None:
    """Write a checkpoint (local path or fsspec URI); local files are replaced atomically.

    Args:
        path_or_uri: destination.
        kind: ``stage1`` or ``refiner``.
        model: the network; its state dict is saved on CPU.
        config: the config that built ``model``.
        record: training record of primitives (steps, losses, time, versions, data).
        optimizer_state: optional optimiser state dict, for resuming.
        network: the registered network the checkpoint is for.
        storage_options: fsspec options for a URI (endpoint, credentials).
    """
    if kind not in _CONFIG_TYPES or not isinstance(config, _CONFIG_TYPES[kind]):
        raise ValueError(f"got kind {kind!r} with a {type(config).__name__}")
    payload: dict[str, Any] = {
        "format": CHECKPOINT_FORMAT,
        "kind": kind,
        "network": network,
        "config": config.model_dump(mode="json"),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "record": record,
    }
    if optimizer_state is not None:
        payload["optimizer"] = optimizer_state
    check_primitives(payload, "checkpoint")
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    target = os.fspath(path_or_uri)
    if "://" in target:
        with fsspec.open(target, "wb", **dict(storage_options or {})) as f:
            f.write(buffer.getvalue())
        return
    directory = os.path.dirname(os.path.abspath(target))
    os.makedirs(directory, exist_ok=True)
    tmp = f"{target}.tmp-{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(buffer.getvalue())
    os.replace(tmp, target)


def _load_failure_reason(exc: Exception) -> str:
    """The informative line of a ``torch.load`` error (e.g. the pickled global it refused)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    for line in lines:
        if "Unsupported global" in line or "Unsupported operand" in line:
            return line.removeprefix("WeightsUnpickler error: ")
    return lines[0] if lines else type(exc).__name__


def read_checkpoint_bytes(
    path_or_uri: str | os.PathLike, storage_options: Mapping[str, Any] | None = None
) -> bytes:
    """The bytes of a checkpoint file (local path or fsspec URI opened with ``storage_options``).

    Raises:
        CheckpointError: missing or unreadable.
    """
    name = os.fspath(path_or_uri)
    try:
        if "://" not in name:  # a local path; fsspec would read "::" in a name as a URL chain
            with open(name, "rb") as f:
                return f.read()
        with fsspec.open(name, "rb", **dict(storage_options or {})) as f:
            return f.read()
    except (OSError, ValueError) as exc:
        reason = "no such file" if isinstance(exc, FileNotFoundError) else str(exc)
        raise CheckpointError(f"{name}: cannot read checkpoint ({reason})") from exc


def require_keys(
    payload: Mapping[str, Any],
    name: str,
    required: tuple[str, ...],
    expected_format: int | str | None,
) -> None:
    """Refuse a checkpoint dict lacking ``required`` keys or of another format (``None``: any).

    Raises:
        CheckpointError: naming the file and the missing keys or the format.
    """
    missing = [k for k in required if k not in payload]
    if missing:
        raise CheckpointError(f"{name}: not a DetPose checkpoint, missing keys {missing}")
    if expected_format is not None and payload["format"] != expected_format:
        raise CheckpointError(
            f"{name}: checkpoint format {payload['format']!r}; expected {expected_format!r} here"
        )


def parse_checkpoint_bytes(
    data: bytes,
    name: str,
    map_location: str | torch.device = "cpu",
    required: tuple[str, ...] = _REQUIRED_KEYS,
    expected_format: int | str | None = CHECKPOINT_FORMAT,
) -> dict[str, Any]:
    """The checkpoint dict in ``data``, read with ``weights_only=True`` and checked for its keys
    (``required``) and format (DetPose's own checkpoints by default; zoo ones pass theirs;
    ``None``: any).

    Raises:
        CheckpointError: holds pickled objects, is not a checkpoint, or lacks required keys.
    """
    try:
        payload = torch.load(io.BytesIO(data), map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for untrusted input
        raise CheckpointError(
            f"{name}: refused; it is not a checkpoint of tensors and primitives only, so it is "
            f"not loaded (torch.load(weights_only=True): {_load_failure_reason(exc)})"
        ) from exc
    if not isinstance(payload, dict):
        raise CheckpointError(
            f"{name}: refused; holds a {type(payload).__name__}, expected a checkpoint dict"
        )
    require_keys(payload, name, required, expected_format)
    kind = payload["kind"]
    retired = _RETIRED_CONFIG_FIELDS.get(kind, ()) if isinstance(kind, str) else ()
    if retired and isinstance(payload["config"], dict):
        payload["config"] = {k: v for k, v in payload["config"].items() if k not in retired}
    legacy = _LEGACY_CONFIG_VALUES.get(kind, {}) if isinstance(kind, str) else {}
    if legacy and isinstance(payload["config"], dict):
        payload["config"] = {**legacy, **payload["config"]}
    return payload


def read_checkpoint_dict(
    path_or_uri: str | os.PathLike,
    map_location: str | torch.device = "cpu",
    storage_options: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The raw checkpoint dict, read with ``weights_only=True`` and checked for its keys.

    Raises:
        CheckpointError: unreadable, holds pickled objects, or lacks required keys.
    """
    name = os.fspath(path_or_uri)
    return parse_checkpoint_bytes(read_checkpoint_bytes(name, storage_options), name, map_location)


def checkpoint_config(
    payload: Mapping[str, Any], name: str, kind: CheckpointKind, network: str
) -> CoarseNetConfig | RefinerConfig:
    """The validated config of a parsed checkpoint of ``kind`` for ``network``.

    Raises:
        CheckpointError: another kind or network, or an invalid config.
    """
    if kind not in _CONFIG_TYPES:
        raise CheckpointError(f"{name}: got kind {kind!r}; expected 'stage1' or 'refiner'")
    if payload["kind"] != kind:
        raise CheckpointError(f"{name}: holds a {payload['kind']!r} checkpoint, expected {kind!r}")
    stored = payload.get("network", "detposenet")
    if stored != network:
        raise CheckpointError(f"{name}: holds a checkpoint of network {stored!r}, not {network!r}")
    try:
        return _CONFIG_TYPES[kind].model_validate(payload["config"])
    except ValidationError as exc:
        raise CheckpointError(f"{name}: invalid {kind} config: {exc}") from exc


def load_state(net: nn.Module, payload: Mapping[str, Any], name: str, kind: str) -> None:
    """Load a parsed checkpoint's state dict into ``net`` (strict).

    Raises:
        CheckpointError: the state dict does not fit the network.
    """
    try:
        net.load_state_dict(payload["state_dict"], strict=True)
    except (RuntimeError, TypeError) as exc:
        raise CheckpointError(
            f"{name}: state dict does not match its {kind} config: {str(exc).splitlines()[0]}"
        ) from exc
