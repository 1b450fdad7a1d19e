"""Devices for inference and training: the one parser of a ``device`` name, and mixed precision."""

from __future__ import annotations

from typing import Any

import torch


class DeviceError(ValueError):
    """A device that cannot be used here; the message says which and why."""


def resolve_device(name: str) -> torch.device:
    """``'auto'`` → CUDA when available, else CPU; ``'cpu'``; ``'cuda'`` or ``'cuda:N'``.

    Raises:
        DeviceError: an unknown name, or CUDA asked for where torch sees none.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise DeviceError(
            f"got {name!r} for device; expected 'auto', 'cpu' or 'cuda[:N]'"
        ) from None
    if device.type not in ("cpu", "cuda"):
        raise DeviceError(f"got {name!r} for device; expected 'auto', 'cpu' or 'cuda[:N]'")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DeviceError(f"device {name!r} requested but torch sees no CUDA device here")
    return device


def autocast(device: torch.device) -> Any:
    """Mixed precision on CUDA only; CPU runs in float32."""
    return torch.autocast("cuda", dtype=torch.float16, enabled=device.type == "cuda")
