"""Training loops for CoarsePoseNet (stage 1) and the refiner: pure torch, resumable.

Adam with a 10x learning-rate drop after ``cfg.lr_drop_at`` of the steps; bfloat16 autocast
and channels-last on CUDA only. Checkpoints (see :mod:`model.checkpoint`) are written every
``save_every`` steps and at the end, with the optimiser state so a later run can continue.
Batches are loaded and augmented in worker processes that prepare them ahead of the step.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, Literal

import fsspec
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler, get_worker_info

from model.checkpoint import CheckpointKind
from model.training.datasets import SampleKey
from model.training.losses import refiner_losses, stage1_losses
from schemas.network_configs import CoarseNetConfig, RefinerConfig

if TYPE_CHECKING:
    from model.training.recipe import TrainingConfig, TrainingRecipe

logger = logging.getLogger(__name__)

NumWorkers = int | Literal["auto"]
LossFn = Callable[[nn.Module, dict[str, torch.Tensor], Any], dict[str, torch.Tensor]]

# Batches each loader worker keeps ready ahead of the step: slack for slow images (a large
# decode, a storage retry) without holding many batches in shared memory.
PREFETCH_BATCHES_PER_WORKER = 4


def make_optimizer(
    params: Iterator[nn.Parameter], cfg: CoarseNetConfig | RefinerConfig
) -> torch.optim.Optimizer:
    """The optimiser ``cfg.optimizer`` names, at ``cfg.learning_rate``."""
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.learning_rate)
    return torch.optim.Adam(params, lr=cfg.learning_rate)


def set_training_mode(model: nn.Module, cfg: CoarseNetConfig | RefinerConfig) -> None:
    """``model.train()``, BatchNorm layers kept in inference mode with ``freeze_batchnorm``."""
    model.train()
    if cfg.freeze_batchnorm:
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()


def learning_rate_at(step: int, total_steps: int, base_lr: float, drop_at: float) -> float:
    """Step schedule: ``base_lr``, then ``base_lr / 10`` from ``drop_at * total_steps`` on."""
    return base_lr if step < drop_at * total_steps else base_lr * 0.1


def loss_function(kind: CheckpointKind) -> LossFn:
    """The forward-and-loss function of a network kind."""
    return stage1_losses if kind == "stage1" else refiner_losses  # type: ignore[return-value]


def usable_cpu_cores() -> int:
    """CPU cores this process may run on (its affinity mask, where the platform has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def resolve_num_workers(num_workers: NumWorkers, device: torch.device) -> int:
    """Loader worker processes for ``num_workers`` (``'auto'`` or a count; 0 loads in-process).

    Raises:
        ValueError: neither ``'auto'`` nor an integer >= 0.
    """
    if num_workers == "auto":
        # One core stays with the main process: it runs the step on CPU and launches kernels
        # and copies batches on CUDA. On CPU the step's own threads use the other cores too and
        # loading is a small share of a step, so a few workers hide it (at most 4). On CUDA the
        # loader is the bottleneck, so every other core loads, up to 8: each worker holds its
        # own image cache and PREFETCH_BATCHES_PER_WORKER batches in shared memory.
        cap = 8 if device.type == "cuda" else 4
        return max(0, min(cap, usable_cpu_cores() - 1))
    if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 0:
        raise ValueError(f"got {num_workers!r} for num_workers; expected 'auto' or an integer >= 0")
    return num_workers


def worker_start_method() -> str | None:
    """How loader workers start: ``fork`` from a single-threaded process, else ``forkserver``.

    ``fork`` starts a worker in milliseconds, but it copies only the calling thread: a lock
    that another thread (Ray's driver, a gRPC client, a notebook kernel) held at that moment
    stays locked in the worker forever. ``forkserver`` forks from a clean single-threaded
    server instead, at about 1.5 s per loader start on 2 cores, and needs the caller's script
    to guard its entry point with ``if __name__ == "__main__"``. Off Linux: the platform's
    default (``spawn`` on macOS and Windows).
    """
    if not sys.platform.startswith("linux"):
        return None
    return "fork" if threading.active_count() == 1 else "forkserver"


def step_threads(device: torch.device, num_workers: int) -> int:
    """Intra-op threads the step gets beside ``num_workers`` loader workers (see below)."""
    threads = torch.get_num_threads()
    if device.type == "cpu" and num_workers > 0:
        return max(1, min(threads, usable_cpu_cores() - num_workers))
    return threads


@contextlib.contextmanager
def cpu_threads_beside_workers(device: torch.device, num_workers: int) -> Iterator[None]:
    """On CPU, leave the loader workers their cores while the block runs.

    The step's intra-op threads are cut to the usable cores minus the workers (at least 1),
    then restored. Oversubscribed, each of the step's many small parallel regions can wait for
    a descheduled thread: on a busy 2-core machine a tiny stage-1 step took 1 to 16 s with two
    threads and 0.06 s with one.
    The setting is process-wide, like every ``torch.set_num_threads``.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(step_threads(device, num_workers))
    try:
        yield
    finally:
        torch.set_num_threads(before)


class _ShuffledBatchIndices(Sampler[list[Any]]):
    """Index batches of endless reshuffled epochs.

    A short last batch of an epoch is dropped unless the dataset is smaller than a batch.
    One endless sampler (not one loader pass per epoch) keeps the workers' prefetch running
    across epoch boundaries, which matters when an epoch is only a few batches.
    With ``phases = (first_step, total_steps)`` every index is a :class:`SampleKey` carrying
    the training progress of the step its batch feeds, so a dataset can switch augmentation
    by phase (keypoint masking as fine-tuning) although its workers load batches ahead.
    """

    def __init__(
        self,
        size: int,
        batch_size: int,
        generator: torch.Generator,
        phases: tuple[int, int] | None = None,
    ) -> None:
        self.size = size
        self.batch_size = batch_size
        self.generator = generator
        self.phases = phases

    def __iter__(self) -> Iterator[list[Any]]:
        drop_last = self.size > self.batch_size
        step, total = self.phases or (0, 0)
        while True:
            order = torch.randperm(self.size, generator=self.generator).tolist()
            for start in range(0, self.size, self.batch_size):
                indices = order[start : start + self.batch_size]
                if drop_last and len(indices) < self.batch_size:
                    break
                if self.phases is not None:
                    progress = step / total
                    yield [SampleKey(i, progress) for i in indices]
                    step += 1
                else:
                    yield indices


def _seed_worker(worker_id: int) -> None:
    """Give a worker's copy of the dataset its own augmentation stream.

    The datasets draw augmentation from their own ``numpy.random.Generator``, which every
    worker inherits in the same state; left alone, all workers would draw the same sequence.
    The worker's seed (the loader generator's base seed plus ``worker_id``) is deterministic
    for a given training seed. torch itself seeds ``random``, ``numpy.random`` and torch.
    """
    info = get_worker_info()
    reseed = getattr(info.dataset, "reseed", None) if info is not None else None
    if reseed is not None:
        reseed(info.seed)  # type: ignore[union-attr]


def batch_to_device(
    batch: dict[str, torch.Tensor], device: torch.device
) -> dict[str, torch.Tensor]:
    """Copy a batch to ``device`` without blocking; images go channels-last on CUDA."""
    moved = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
    if device.type == "cuda":
        moved = {
            k: v.contiguous(memory_format=torch.channels_last) if v.dim() == 4 else v
            for k, v in moved.items()
        }
    return moved


def device_batches(
    dataset: Dataset,
    batch_size: int,
    seed: int,
    device: torch.device,
    num_workers: int,
    steps: tuple[int, int] | None = None,
) -> Iterator[dict[str, torch.Tensor]]:
    """Shuffled batches forever, on ``device``, loaded by ``num_workers`` worker processes.

    The batch order depends on ``seed`` only (not on ``num_workers``). Workers are started on
    the first ``next`` and stopped when the generator is closed. ``steps = (first step, total
    steps)`` tags the samples with their training progress for datasets that take it.
    """
    generator = torch.Generator().manual_seed(seed)
    phases = steps if getattr(dataset, "takes_progress", False) else None
    sampler = _ShuffledBatchIndices(len(dataset), batch_size, generator, phases)  # type: ignore[arg-type]
    workers: dict[str, Any] = {}
    if num_workers > 0:
        # No persistent_workers: the sampler is endless, so one iterator lives for the whole
        # run and its workers are never restarted.
        workers = {
            "num_workers": num_workers,
            "prefetch_factor": PREFETCH_BATCHES_PER_WORKER,
            "worker_init_fn": _seed_worker,
            "multiprocessing_context": worker_start_method(),
        }
        logger.info(
            "loading batches in %d worker processes (%s)",
            num_workers, workers["multiprocessing_context"] or "platform default",
        )  # fmt: skip
    loader = DataLoader(
        dataset,
        batch_sampler=sampler,
        generator=generator,
        pin_memory=device.type == "cuda",
        **workers,
    )
    for batch in loader:
        yield batch_to_device(batch, device)


def place_model(model: nn.Module, device: torch.device) -> nn.Module:
    """Move a model to ``device`` (channels-last on CUDA) and return it."""
    model.to(device)
    if device.type == "cuda":
        model.to(memory_format=torch.channels_last)
    return model


def training_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    loss_fn: LossFn,
    batch: dict[str, torch.Tensor],
    cfg: CoarseNetConfig | RefinerConfig,
) -> dict[str, torch.Tensor]:
    """One forward, backward and optimiser step on a device batch.

    Returns the loss terms, detached and still on the device: reading them (``float``) waits
    for the GPU, so the loop reads them only when it logs.
    """
    device_type = next(iter(batch.values())).device.type
    with torch.autocast(
        device_type=device_type, dtype=torch.bfloat16, enabled=device_type == "cuda"
    ):
        losses = loss_fn(model, batch, cfg)
    optimizer.zero_grad(set_to_none=True)
    losses["total"].backward()
    optimizer.step()
    return {name: value.detach() for name, value in losses.items()}


def _exists(uri: str) -> bool:
    fs, path = fsspec.core.url_to_fs(uri)
    return fs.exists(path)


def train(
    recipe: TrainingRecipe | CheckpointKind,
    cfg: TrainingConfig,
    dataset: Dataset,
    steps: int,
    out_uri: str | os.PathLike,
    device: torch.device | str = "cpu",
    resume: bool = True,
    seed: int = 0,
    log_every: int = 10,
    save_every: int = 200,
    data_description: str = "",
    num_workers: NumWorkers = "auto",
) -> dict[str, Any]:
    """Train a network to ``steps`` total steps and save its checkpoint at ``out_uri``.

    With ``resume`` and an existing checkpoint at ``out_uri`` of the same network and
    architecture, training continues from its step count (and optimiser state).

    Args:
        recipe: how the network trains (``model/training/recipe.py``); ``stage1`` or
            ``refiner`` for DetPoseNet's networks from random weights.
        cfg: the network's config (its training fields are used too).
        dataset: the recipe's dataset (``recipe.dataset``).
        steps: total optimisation steps.
        out_uri: checkpoint path or fsspec URI.
        device: ``cpu``, ``cuda``, ...
        resume: continue from ``out_uri`` if it exists.
        seed: seeds the model initialisation and the batch order.
        log_every: log (and record) the mean losses every this many steps.
        save_every: write the checkpoint every this many steps.
        data_description: stored in the record (which annotations / images trained it).
        num_workers: loader worker processes (see :func:`resolve_num_workers`); 0 loads and
            augments in this process. Each worker draws its own augmentation, so a run is
            reproducible for a given seed and worker count.

    Returns:
        The training record saved in the checkpoint: ``steps``, ``losses`` (last window means),
        ``first_losses`` (first window means), ``loss_history`` (``[step, total]`` pairs),
        ``seconds``, ``device``, ``torch_version``, ``dataset``, ``batch_size``, ``seed``,
        ``num_workers`` (of the latest run).
    """
    if isinstance(recipe, str):
        from model.training.recipe import DetPoseNetRecipe

        recipe = DetPoseNetRecipe(recipe)  # type: ignore[arg-type]
    kind = recipe.stage
    if len(dataset) == 0:  # type: ignore[arg-type]
        raise ValueError(f"no training samples for {kind}: the annotations hold no usable persons")
    device = torch.device(device)
    workers = resolve_num_workers(num_workers, device)
    torch.manual_seed(seed)
    model = recipe.new_model(cfg)
    optimizer = make_optimizer(model.parameters(), cfg)
    out_name = os.fspath(out_uri)
    record: dict[str, Any] = {
        "steps": 0,
        "seconds": 0.0,
        "loss_history": [],
        "first_losses": {},
        "losses": {},
    }
    if resume and _exists(out_name):
        payload = recipe.read_resumable(out_name)
        changed = recipe.resumable_changes(out_name, payload, cfg)
        recipe.load_weights(model, payload)
        if "optimizer" in payload:
            optimizer.load_state_dict(payload["optimizer"])
        record.update(recipe.training_record(payload))
        if changed:
            # A new training phase (e.g. keypoint masking as fine-tuning): same network, other
            # training settings from this step on; the record keeps the history.
            record["phases"] = [*record.get("phases", []), {"step": record["steps"], **changed}]
            logger.info(
                "new %s training phase from step %d: %s", kind, record["steps"],
                ", ".join(f"{k} {v[0]!r} -> {v[1]!r}" for k, v in changed.items()),
            )  # fmt: skip
        logger.info("resuming %s from %s at step %d", kind, out_name, record["steps"])
    place_model(model, device)
    # Move restored optimiser state next to the parameters.
    for state in optimizer.state.values():
        for key, value in state.items():
            if isinstance(value, torch.Tensor) and key != "step":
                state[key] = value.to(device)
    start_step = int(record["steps"])
    batches = device_batches(
        dataset, cfg.batch_size, seed + start_step, device, workers, (start_step, steps)
    )
    set_training_mode(model, cfg)
    window: dict[str, list[torch.Tensor]] = {}
    started = time.monotonic()
    seconds_before = float(record["seconds"])
    with cpu_threads_beside_workers(device, workers), contextlib.closing(batches):
        # Closing the batches stops the loader workers, also on an error.
        for step in range(start_step, steps):
            lr = learning_rate_at(step, steps, cfg.learning_rate, cfg.lr_drop_at)
            for group in optimizer.param_groups:
                group["lr"] = lr
            losses = training_step(model, optimizer, recipe.loss, next(batches), cfg)
            for name, value in losses.items():
                window.setdefault(name, []).append(value)
            done = step + 1
            if done % log_every == 0 or done == steps:
                means = {
                    name: float(torch.stack(values).double().mean())
                    for name, values in window.items()
                }
                window = {}
                if not record["first_losses"]:
                    record["first_losses"] = means
                record["losses"] = means
                record["loss_history"].append([done, means["total"]])
                logger.info(
                    "%s step %d/%d lr %.2e %s", kind, done, steps, lr,
                    " ".join(f"{k}={v:.4g}" for k, v in means.items()),
                )  # fmt: skip
            record["steps"] = done
            record["seconds"] = seconds_before + time.monotonic() - started
            if done % save_every == 0 or done == steps:
                record.update(
                    {
                        "device": str(device),
                        "torch_version": str(torch.__version__),
                        "dataset": data_description,
                        "batch_size": cfg.batch_size,
                        "seed": seed,
                        "num_workers": workers,
                    }
                )
                recipe.save(out_name, model, cfg, record, optimizer.state_dict())  # type: ignore[arg-type]
                logger.info("saved %s checkpoint at step %d to %s", kind, done, out_name)
    if start_step >= steps:
        logger.info(
            "%s already trained to %d steps (asked for %d); nothing to do", kind, start_step, steps
        )
    model.eval()
    return record
