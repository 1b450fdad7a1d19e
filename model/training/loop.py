"""Training loops for CoarsePoseNet (stage 1) and the refiner: pure torch, resumable.

Adam with a 10x learning-rate drop after ``cfg.lr_drop_at`` of the steps; bfloat16 autocast
and channels-last on CUDA only. Checkpoints (see :mod:`model.checkpoint`) are written every
``save_every`` steps and at the end, with the optimiser state so a later run can continue.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from typing import Any

import fsspec
import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from model.checkpoint import (
    CheckpointError,
    CheckpointKind,
    build_model,
    read_checkpoint_dict,
    save_checkpoint,
)
from model.training.losses import proposal_loss, refiner_loss
from schemas.model import CoarseNetConfig, RefinerConfig

logger = logging.getLogger(__name__)


def learning_rate_at(step: int, total_steps: int, base_lr: float, drop_at: float) -> float:
    """Step schedule: ``base_lr``, then ``base_lr / 10`` from ``drop_at * total_steps`` on."""
    return base_lr if step < drop_at * total_steps else base_lr * 0.1


def stage1_losses(
    model: nn.Module, batch: dict[str, torch.Tensor], cfg: CoarseNetConfig
) -> dict[str, torch.Tensor]:
    """Forward a stage-1 batch (see :class:`model.training.datasets.Stage1Dataset`) and return L_p's terms."""
    out = model(batch["image"])
    return proposal_loss(
        out.stack_heatmaps,
        out.stack_pafs,
        out.centre_logits,
        out.size,
        out.offset,
        batch,
        det_weight=cfg.det_loss_weight,
        heatmap_weight=cfg.heatmap_loss_weight,
        paf_weight=cfg.paf_loss_weight,
        size_weight=cfg.size_loss_weight,
        offset_weight=cfg.offset_loss_weight,
    )


def refiner_losses(
    model: nn.Module, batch: dict[str, torch.Tensor], cfg: RefinerConfig
) -> dict[str, torch.Tensor]:
    """Forward a refiner batch (see :class:`model.training.datasets.RefinerDataset`) and return its loss terms."""
    out = model(batch["crop"])
    targets = [batch[f"heatmaps_s{s}"] for s in cfg.supervision_strides]
    return refiner_loss(out.heatmaps, out.scale_heatmaps, targets, batch["weight"], cfg.alpha2)


def _batches(dataset: Dataset, batch_size: int, seed: int) -> Iterator[dict[str, torch.Tensor]]:
    """Shuffled batches forever (a short last batch is dropped unless the dataset is smaller)."""
    generator = torch.Generator().manual_seed(seed)
    drop_last = len(dataset) > batch_size  # type: ignore[arg-type]
    loader = DataLoader(
        dataset, batch_size=batch_size, shuffle=True, drop_last=drop_last, generator=generator
    )
    while True:
        yield from loader


def _exists(uri: str) -> bool:
    fs, path = fsspec.core.url_to_fs(uri)
    return fs.exists(path)


def train(
    kind: CheckpointKind,
    cfg: CoarseNetConfig | RefinerConfig,
    dataset: Dataset,
    steps: int,
    out_uri: str | os.PathLike,
    device: torch.device | str = "cpu",
    resume: bool = True,
    seed: int = 0,
    log_every: int = 10,
    save_every: int = 200,
    data_description: str = "",
) -> dict[str, Any]:
    """Train a network to ``steps`` total steps and save its checkpoint at ``out_uri``.

    With ``resume`` and an existing checkpoint at ``out_uri`` of the same kind and config,
    training continues from its step count (and optimiser state).

    Args:
        kind: ``stage1`` or ``refiner``.
        cfg: the network's config (its training fields are used too).
        dataset: a :class:`~model.training.datasets.Stage1Dataset` or ``RefinerDataset``.
        steps: total optimisation steps.
        out_uri: checkpoint path or fsspec URI.
        device: ``cpu``, ``cuda``, ...
        resume: continue from ``out_uri`` if it exists.
        seed: seeds the model initialisation and the batch order.
        log_every: log (and record) the mean losses every this many steps.
        save_every: write the checkpoint every this many steps.
        data_description: stored in the record (which annotations / images trained it).

    Returns:
        The training record saved in the checkpoint: ``steps``, ``losses`` (last window means),
        ``first_losses`` (first window means), ``loss_history`` (``[step, total]`` pairs),
        ``seconds``, ``device``, ``torch_version``, ``dataset``, ``batch_size``, ``seed``.
    """
    if len(dataset) == 0:  # type: ignore[arg-type]
        raise ValueError(f"no training samples for {kind}: the annotations hold no usable persons")
    device = torch.device(device)
    torch.manual_seed(seed)
    model = build_model(kind, cfg)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.learning_rate)
    out_name = os.fspath(out_uri)
    record: dict[str, Any] = {
        "steps": 0,
        "seconds": 0.0,
        "loss_history": [],
        "first_losses": {},
        "losses": {},
    }
    if resume and _exists(out_name):
        payload = read_checkpoint_dict(out_name)
        if payload["kind"] != kind or payload["config"] != cfg.model_dump(mode="json"):
            raise CheckpointError(
                f"{out_name}: cannot resume a {kind} run from it: it holds a {payload['kind']} "
                "checkpoint whose config differs; choose a new output path or turn resuming off"
            )
        model.load_state_dict(payload["state_dict"])
        if "optimizer" in payload:
            optimizer.load_state_dict(payload["optimizer"])
        record.update(payload["record"])
        logger.info("resuming %s from %s at step %d", kind, out_name, record["steps"])
    model.to(device)
    use_cuda = device.type == "cuda"
    if use_cuda:
        model.to(memory_format=torch.channels_last)
    # Move restored optimiser state next to the parameters.
    for state in optimizer.state.values():
        for key, value in state.items():
            if isinstance(value, torch.Tensor) and key != "step":
                state[key] = value.to(device)
    loss_fn = stage1_losses if kind == "stage1" else refiner_losses
    batches = _batches(dataset, cfg.batch_size, seed + int(record["steps"]))
    start_step = int(record["steps"])
    model.train()
    window: dict[str, list[float]] = {}
    started = time.monotonic()
    seconds_before = float(record["seconds"])
    for step in range(start_step, steps):
        lr = learning_rate_at(step, steps, cfg.learning_rate, cfg.lr_drop_at)
        for group in optimizer.param_groups:
            group["lr"] = lr
        batch = {k: v.to(device, non_blocking=True) for k, v in next(batches).items()}
        if use_cuda:
            batch = {
                k: v.contiguous(memory_format=torch.channels_last) if v.dim() == 4 else v
                for k, v in batch.items()
            }
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_cuda):
            losses = loss_fn(model, batch, cfg)  # type: ignore[arg-type]
        optimizer.zero_grad(set_to_none=True)
        losses["total"].backward()
        optimizer.step()
        for name, value in losses.items():
            window.setdefault(name, []).append(float(value.detach()))
        done = step + 1
        if done % log_every == 0 or done == steps:
            means = {name: float(np.mean(values)) for name, values in window.items()}
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
            _save(out_name, kind, model, cfg, record, optimizer, device, seed, data_description)
    if start_step >= steps:
        logger.info(
            "%s already trained to %d steps (asked for %d); nothing to do", kind, start_step, steps
        )
    model.eval()
    return record


def _save(
    out_name: str,
    kind: CheckpointKind,
    model: nn.Module,
    cfg: CoarseNetConfig | RefinerConfig,
    record: dict[str, Any],
    optimizer: torch.optim.Optimizer,
    device: torch.device,
    seed: int,
    data_description: str,
) -> None:
    record.update(
        {
            "device": str(device),
            "torch_version": str(torch.__version__),
            "dataset": data_description,
            "batch_size": cfg.batch_size,
            "seed": seed,
        }
    )
    save_checkpoint(out_name, kind, model, cfg, record, optimizer_state=optimizer.state_dict())
    logger.info("saved %s checkpoint at step %d to %s", kind, record["steps"], out_name)
