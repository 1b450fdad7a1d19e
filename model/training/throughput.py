"""Training throughput: what the training loop delivers against what its step alone could.

Both measurements run :func:`~model.training.loop.training_step` on a fresh network. The loop
rate takes each batch from :func:`~model.training.loop.device_batches` (loader workers,
prefetch, the copy to the device); the ceiling re-uses one batch already on the device, so
loading costs nothing. Their ratio says how much of the device the loader keeps busy.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable

import torch
from torch.utils.data import Dataset

from model.checkpoint import CheckpointKind
from model.networks.detposenet import build_model
from model.training.loop import (
    cpu_threads_beside_workers,
    device_batches,
    loss_function,
    place_model,
    step_threads,
    training_step,
)
from schemas.network_configs import CoarseNetConfig, RefinerConfig


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed_steps(
    kind: CheckpointKind,
    cfg: CoarseNetConfig | RefinerConfig,
    next_batch: Callable[[], dict[str, torch.Tensor]],
    device: torch.device,
    steps: int,
    warmup_steps: int,
    seed: int,
) -> float:
    """Seconds for ``steps`` training steps after ``warmup_steps`` untimed ones."""
    torch.manual_seed(seed)
    model = place_model(build_model(kind, cfg), device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.learning_rate)
    loss_fn = loss_function(kind)
    for _ in range(warmup_steps):
        training_step(model, optimizer, loss_fn, next_batch(), cfg)
    _synchronize(device)
    started = time.perf_counter()
    for _ in range(steps):
        training_step(model, optimizer, loss_fn, next_batch(), cfg)
    _synchronize(device)
    return time.perf_counter() - started


def loop_samples_per_s(
    kind: CheckpointKind,
    cfg: CoarseNetConfig | RefinerConfig,
    dataset: Dataset,
    device: torch.device,
    num_workers: int,
    steps: int,
    warmup_steps: int,
    seed: int = 0,
) -> float:
    """Samples/s of the training loop: batches from ``num_workers`` workers, then the step.

    The warm-up steps absorb the workers' start and the first batches. The step's threads
    leave the workers their cores on CPU, as in :func:`~model.training.loop.train`.
    """
    batches = device_batches(dataset, cfg.batch_size, seed, device, num_workers)
    with cpu_threads_beside_workers(device, num_workers), contextlib.closing(batches):
        seconds = _timed_steps(kind, cfg, lambda: next(batches), device, steps, warmup_steps, seed)
    return steps * cfg.batch_size / seconds


def ceiling_samples_per_s(
    kind: CheckpointKind,
    cfg: CoarseNetConfig | RefinerConfig,
    dataset: Dataset,
    device: torch.device,
    steps: int,
    warmup_steps: int,
    seed: int = 0,
) -> float:
    """Samples/s of forward, backward and optimiser step alone, on one batch already on the device."""
    batches = device_batches(dataset, cfg.batch_size, seed, device, num_workers=0)
    with contextlib.closing(batches):
        batch = next(batches)
    seconds = _timed_steps(kind, cfg, lambda: batch, device, steps, warmup_steps, seed)
    return steps * cfg.batch_size / seconds


def measure_training(
    kind: CheckpointKind,
    cfg: CoarseNetConfig | RefinerConfig,
    dataset: Dataset,
    device: torch.device,
    num_workers: int,
    steps: int,
    warmup_steps: int,
    seed: int = 0,
) -> dict[str, float]:
    """The loop's samples/s with ``num_workers`` workers and with none, its ceiling and ratios.

    The loop without workers and the ceiling run with the process's intra-op threads; the loop
    with workers with ``step_threads_with_workers`` (fewer on CPU, see
    :func:`~model.training.loop.cpu_threads_beside_workers`).
    """
    train = loop_samples_per_s(kind, cfg, dataset, device, num_workers, steps, warmup_steps, seed)
    serial = loop_samples_per_s(kind, cfg, dataset, device, 0, steps, warmup_steps, seed)
    ceiling = ceiling_samples_per_s(kind, cfg, dataset, device, steps, warmup_steps, seed)
    return {
        "train_samples_per_s": round(train, 3),
        "train_samples_per_s_no_workers": round(serial, 3),
        "ceiling_samples_per_s": round(ceiling, 3),
        "vs_ceiling": round(train / ceiling, 3),
        "vs_ceiling_no_workers": round(serial / ceiling, 3),
        "step_threads": torch.get_num_threads(),
        "step_threads_with_workers": step_threads(device, num_workers),
    }
