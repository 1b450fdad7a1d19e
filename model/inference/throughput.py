"""Forward-only throughput of a stage's network: the ceiling a pipeline stage is measured
against (``detpose bench``), with the input already on the device and nothing around it."""

from __future__ import annotations

import time
from collections.abc import Callable

import torch

from model.inference.devices import autocast


def synchronizer(device: torch.device) -> Callable[[], None]:
    """Waits for the device's queued work (CUDA runs asynchronously); a no-op on CPU."""
    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    return lambda: None


@torch.inference_mode()
def forward_items_per_s(
    net: Callable[[torch.Tensor], object],
    batch: torch.Tensor,
    device: torch.device,
    dtype: torch.dtype | None,
    min_seconds: float = 3.0,
    min_repeats: int = 3,
) -> float:
    """Items per second of ``net`` forward passes on ``batch`` (already on ``device``, in
    the layout the stage feeds it), after one warm-up pass."""
    sync = synchronizer(device)
    with autocast(device, dtype):
        net(batch)
        sync()
        repeats, started = 0, time.perf_counter()
        while repeats < min_repeats or time.perf_counter() - started < min_seconds:
            net(batch)
            repeats += 1
        sync()
    return repeats * len(batch) / (time.perf_counter() - started)


def random_batch(
    count: int, hw: tuple[int, int], device: torch.device, channels_last: bool = True
) -> torch.Tensor:
    """``[count, 3, H, W]`` float ``0..255`` on ``device`` (speed does not depend on values)."""
    generator = torch.Generator().manual_seed(0)
    batch = (torch.rand((count, 3, *hw), generator=generator) * 255.0).to(device)
    return batch.contiguous(memory_format=torch.channels_last) if channels_last else batch
