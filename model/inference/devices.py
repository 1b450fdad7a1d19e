"""Devices for inference and training: the one parser of a ``device`` name, and the
arithmetic (precision, memory layout) the model stages run with on each device."""

from __future__ import annotations

from typing import Any

import torch

# Precision names a job spec accepts (schemas/spec.py ``precision``).
PRECISIONS = {"float32": None, "bfloat16": torch.bfloat16, "float16": torch.float16}


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


def cpu_has_native_bfloat16() -> bool:
    """Whether oneDNN runs bfloat16 natively here (AVX512-BF16 or AMX); elsewhere bfloat16
    is emulated and slower than float32."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def resolve_precision(device: torch.device, precision: str = "auto") -> torch.dtype | None:
    """The autocast dtype of the model stages on ``device``, ``None`` for float32.

    ``auto``: float16 on CUDA, float32 on CPU. bfloat16 on a CPU with native bfloat16 is
    faster but measurably less accurate (docs/benchmarks.md), so it is asked for by name.
    """
    if precision != "auto":
        return PRECISIONS[precision]
    return torch.float16 if device.type == "cuda" else None


def autocast(device: torch.device, dtype: torch.dtype | None = torch.float16) -> Any:
    """Mixed precision in ``dtype`` (``None``: plain float32). float16 is used on CUDA only:
    on CPU it would be emulated."""
    enabled = dtype is not None and not (dtype == torch.float16 and device.type != "cuda")
    return torch.autocast(device.type, dtype=dtype or torch.float32, enabled=enabled)


def for_inference(net: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """``net`` on ``device`` in eval mode, its weights channels-last: convolutions then run
    in the layout oneDNN and cuDNN are fastest in (measured on CPU: ``detpose bench``)."""
    return net.to(device).to(memory_format=torch.channels_last).eval()
