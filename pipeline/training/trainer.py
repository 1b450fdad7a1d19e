"""``detpose train --workers N``: data-parallel training on Ray Train (TorchTrainer, DDP).

- **Data.** Samples stream through Ray Data (``pipeline/training/samples.py``); each worker
  reads its own shard. Nothing is copied to local disk.
- **Checkpoints.** Rank 0 writes the DetPose checkpoint at ``--out`` (what ``detpose run``
  takes as a stage's ``checkpoint``) every ``save_every`` steps. It also reports it to Ray
  Train with the step's metrics, and Ray keeps the reported checkpoints under
  ``--out``'s folder (``<name>.ray/``).
- **Failures.** A worker that dies is replaced (``FailureConfig``). The new worker group
  resumes from ``--out``, and its data stream starts at that step (the dataset is rebuilt
  for each attempt). A re-run with the same ``--out`` resumes the same way.
- **Progress.** Rank 0 logs each window's losses, steps/s, images/s and the ETA. It also
  writes ``<out>.progress.json`` (the last step done and the attempts so far), so a restart
  can record how many steps it repeats.

On CPUs, workers talk over gloo and BatchNorm normalises per worker unless
``freeze_batchnorm`` is set; on GPUs, BatchNorm layers become SyncBatchNorm.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import fsspec
import pyarrow.fs
import ray
import ray.train
import ray.train.torch
import torch
from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig

from model.checkpoint import CheckpointError
from model.training.datasets import CocoImage
from model.training.loop import (
    learning_rate_at,
    make_optimizer,
    set_training_mode,
    training_step,
)
from model.training.recipe import TrainingConfig, TrainingRecipe, unwrap
from pipeline.training.samples import sample_stream

logger = logging.getLogger(__name__)

TRAIN_DATASET = "train"
# Ray Data actors making samples per training worker.
MAKERS_PER_WORKER = 1


@dataclass(frozen=True)
class RayTrainPlan:
    """Everything a training worker needs (it travels to every worker)."""

    recipe: TrainingRecipe  # the network and how it trains
    config: dict[str, Any]  # the network config, JSON
    steps: int
    out: str  # the DetPose checkpoint URI
    workers: int
    gpus_per_worker: float = 0.0
    cpus_per_worker: float = 0.5
    seed: int = 0
    log_every: int = 10
    save_every: int = 200
    augment: bool = True
    resume: bool = True
    max_failures: int = 2
    data_description: str = ""
    storage_options: Mapping[str, Any] = field(default_factory=dict, repr=False)

    def network_config(self) -> TrainingConfig:
        return self.recipe.config_from_json(self.config)

    @property
    def kind(self) -> str:
        return self.recipe.stage

    @property
    def progress_uri(self) -> str:
        return f"{self.out}.progress.json"


def _fs(uri: str, options: Mapping[str, Any]) -> tuple[fsspec.AbstractFileSystem, str]:
    return fsspec.core.url_to_fs(uri, **dict(options))


def checkpoint_step(plan: RayTrainPlan) -> int:
    """The step of the checkpoint at ``plan.out`` (0: none, or resuming is off)."""
    fs, path = _fs(plan.out, plan.storage_options)
    if not plan.resume or not fs.exists(path):
        return 0
    payload = plan.recipe.read_resumable(plan.out, plan.storage_options)
    return int(plan.recipe.training_record(payload).get("steps", 0))


def read_progress(plan: RayTrainPlan) -> dict[str, Any]:
    fs, path = _fs(plan.progress_uri, plan.storage_options)
    if not fs.exists(path):
        return {"step": 0, "attempts": []}
    with fs.open(path, "r") as f:
        return json.load(f)


def write_progress(plan: RayTrainPlan, progress: dict[str, Any]) -> None:
    fs, path = _fs(plan.progress_uri, plan.storage_options)
    with fs.open(path, "w") as f:
        json.dump(progress, f)


def _eta(done: int, start: int, steps: int, seconds: float) -> float:
    rate = (done - start) / seconds if seconds > 0 else 0.0
    return (steps - done) / rate if rate > 0 else float("inf")


def train_worker(config: dict[str, Any]) -> None:
    """One DDP worker: build or resume the network, then step through its shard."""
    plan: RayTrainPlan = config["plan"]
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    cfg = plan.network_config()
    if cfg.batch_size % world:
        raise ValueError(f"batch_size {cfg.batch_size} does not split over {world} workers")
    per_worker = cfg.batch_size // world
    recipe = plan.recipe
    torch.manual_seed(plan.seed)
    model = recipe.new_model(cfg)
    optimizer = make_optimizer(model.parameters(), cfg)
    record: dict[str, Any] = {"steps": 0, "seconds": 0.0, "loss_history": [], "losses": {}}
    fs, path = _fs(plan.out, plan.storage_options)
    if plan.resume and fs.exists(path):
        payload = recipe.read_resumable(plan.out, plan.storage_options)
        changed = recipe.resumable_changes(plan.out, payload, cfg)
        if changed:
            raise CheckpointError(
                f"{plan.out}: a distributed run resumes only the same training settings; "
                f"changed: {sorted(changed)}"
            )
        recipe.load_weights(model, payload)
        optimizer.load_state_dict(payload["optimizer"])
        record.update(recipe.training_record(payload))
    start = int(record["steps"])
    progress = read_progress(plan)
    if rank == 0:
        # How far the last attempt got past its checkpoint: the steps this one repeats.
        # The process of rank 0 is named so an operator (or a test) can find the attempt's
        # workers.
        attempt = {
            "start_step": start,
            "last_step_before": int(progress["step"]),
            "workers": world,
            "rank0": f"{socket.gethostname()}:{os.getpid()}",
        }
        progress = {"step": start, "attempts": [*progress["attempts"], attempt]}
        record["attempts"] = progress["attempts"]
        write_progress(plan, progress)
    device = ray.train.torch.get_device()
    if device.type == "cuda" and world > 1:
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model = ray.train.torch.prepare_model(model)
    for state in optimizer.state.values():
        for key, value in state.items():
            if isinstance(value, torch.Tensor) and key != "step":
                state[key] = value.to(device)
    set_training_mode(model, cfg)
    shard = ray.train.get_dataset_shard(TRAIN_DATASET)
    batches = iter(shard.iter_torch_batches(batch_size=per_worker, drop_last=True, device=device))
    window: dict[str, list[torch.Tensor]] = {}
    started, seconds_before = time.monotonic(), float(record["seconds"])
    for step in range(start, plan.steps):
        for group in optimizer.param_groups:
            group["lr"] = learning_rate_at(step, plan.steps, cfg.learning_rate, cfg.lr_drop_at)
        losses = training_step(model, optimizer, recipe.loss, next(batches), cfg)
        for name, value in losses.items():
            window.setdefault(name, []).append(value)
        done = step + 1
        record["steps"] = done
        record["seconds"] = seconds_before + time.monotonic() - started
        logged = done % plan.log_every == 0 or done == plan.steps
        saved = done % plan.save_every == 0 or done == plan.steps
        if not (logged or saved):
            continue
        means = {k: float(torch.stack(v).double().mean()) for k, v in window.items()}
        window = {}
        elapsed = time.monotonic() - started
        metrics = {
            "step": done,
            **{f"loss_{k}": v for k, v in means.items()},
            "steps_per_s": (done - start) / elapsed if elapsed > 0 else 0.0,
            "images_per_s": (done - start) * cfg.batch_size / elapsed if elapsed > 0 else 0.0,
            "eta_s": _eta(done, start, plan.steps, elapsed),
        }
        if means:
            record["losses"] = means
            record["loss_history"].append([done, means.get("total", 0.0)])
        checkpoint = None
        if rank == 0:
            logger.info(
                "%s step %d/%d %s %.2f steps/s %.1f images/s ETA %.0f s",
                plan.kind, done, plan.steps,
                " ".join(f"{k}={v:.4g}" for k, v in means.items()),
                metrics["steps_per_s"], metrics["images_per_s"], metrics["eta_s"],
            )  # fmt: skip
            if saved:
                checkpoint = _save(plan, model, cfg, record, optimizer, world)
            write_progress(plan, {**progress, "step": done})
        # Every worker reports (Ray Train synchronises on it); rank 0 adds the checkpoint.
        if checkpoint is not None:
            with tempfile.TemporaryDirectory() as tmp:
                with open(os.path.join(tmp, "checkpoint.pt"), "wb") as f:
                    f.write(checkpoint)
                ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))
        else:
            ray.train.report(metrics)


def _save(
    plan: RayTrainPlan,
    model: torch.nn.Module,
    cfg: TrainingConfig,
    record: dict[str, Any],
    optimizer: torch.optim.Optimizer,
    world: int,
) -> bytes:
    """Write the checkpoint at ``plan.out``; returns its bytes for Ray Train."""
    # SyncBatchNorm holds BatchNorm2d's state dict: the file loads into the plain network.
    net = unwrap(model)
    record.update(
        {
            "device": str(next(net.parameters()).device),
            "torch_version": str(torch.__version__),
            "dataset": plan.data_description,
            "batch_size": cfg.batch_size,
            "seed": plan.seed,
            "workers": world,
            "trainer": "ray-train-ddp",
        }
    )
    plan.recipe.save(
        plan.out,
        net,
        cfg,
        record,
        optimizer.state_dict(),
        plan.storage_options,  # type: ignore[arg-type]
    )
    fs, path = _fs(plan.out, plan.storage_options)
    with fs.open(path, "rb") as f:
        return f.read()


def train_on_ray(
    plan: RayTrainPlan, records: Sequence[CocoImage], storage_path: str | None = None
) -> dict[str, Any]:
    """Run ``plan`` on the connected Ray cluster; returns the final checkpoint's record.

    ``storage_path``: where Ray Train keeps its run (reported checkpoints); default: beside
    ``plan.out``.
    """
    cfg = plan.network_config()

    def dataset() -> ray.data.Dataset:
        # Called for every attempt: a restarted worker group streams from its checkpoint on.
        start = checkpoint_step(plan)
        return sample_stream(
            plan.recipe, records, cfg, plan.augment, plan.seed, plan.steps, start,
            plan.storage_options, makers=MAKERS_PER_WORKER * plan.workers,
        )  # fmt: skip

    base, name = os.path.split(plan.out.rstrip("/"))
    filesystem, base_path = _pyarrow_storage(base, plan.storage_options)
    trainer = ray.train.torch.TorchTrainer(
        train_worker,
        train_loop_config={"plan": plan},
        scaling_config=ScalingConfig(
            num_workers=plan.workers,
            use_gpu=plan.gpus_per_worker > 0,
            resources_per_worker={
                "CPU": plan.cpus_per_worker,
                **({"GPU": plan.gpus_per_worker} if plan.gpus_per_worker > 0 else {}),
            },
        ),
        run_config=RunConfig(
            name=f"{name}.ray",
            storage_path=storage_path or base_path,
            storage_filesystem=None if storage_path else filesystem,
            failure_config=FailureConfig(max_failures=plan.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=2),
        ),
        datasets={TRAIN_DATASET: dataset},
    )
    trainer.fit()
    payload = plan.recipe.read_resumable(plan.out, plan.storage_options)
    return plan.recipe.training_record(payload)


def _pyarrow_storage(
    uri: str, options: Mapping[str, Any]
) -> tuple[pyarrow.fs.FileSystem | None, str]:
    """Ray Train's storage for ``uri``: a local path as it is, a URI through its fsspec
    filesystem (with the job's endpoint and credentials) wrapped for pyarrow."""
    if "://" not in uri:
        return None, os.path.abspath(uri or ".")
    fs, path = _fs(uri, options)
    return pyarrow.fs.PyFileSystem(pyarrow.fs.FSSpecHandler(fs)), path
