"""How much work each Ray Data operator takes at a time, and how many actors run it.

The spec's ``auto`` values are resolved here, for the device the model stages run on, so
the streaming job (``pipeline/graph/job.py``) and the plain-loop baseline (``pipeline/graph/plain_loop.py``)
use the very same sizes. The numbers come from ``detpose bench`` (docs/benchmarks.md).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from schemas.spec import JobSpec, StageSpec

# Images per fetch+decode task. Small: a task is one round of storage reads, and many small
# tasks spread over the cluster's CPUs.
DECODE_BATCH = 4
# Tasks take a fraction of a CPU so reads and filtering overlap with the model pools; the
# filter's share differs from the actors' so Ray Data keeps it a separate operator (own stats).
DECODE_NUM_CPUS = 0.5
FILTER_NUM_CPUS = 0.5
# Person crops per refiner forward pass: bounds the activation memory of crowded batches.
MAX_CROPS_PER_FORWARD = {"cpu": 64, "cuda": 256}
# Images per model batch. On CUDA, large batches keep the GPU busy between the actor's
# CPU steps; on CPU, small ones keep the pipeline's latency (and memory) low, since a
# forward pass costs the same per image at any batch size there.
AUTO_BATCH = {"cpu": {"stage1": 8, "refiner": 8}, "cuda": {"stage1": 64, "refiner": 32}}
# Actors per GPU for each stage when num_gpus is 'auto' (see AUTO_GPUS_PER_ACTOR).
AUTO_ACTORS_PER_GPU = 2
# On CPU an actor runs torch on one thread (Ray sets OMP_NUM_THREADS from its fractional
# CPU share); several single-threaded actors use the cores better than one multi-threaded
# one, and the refiner does ~85 % of the work: one refiner per core, one stage-1 actor.
AUTO_CPU_STAGE1_ACTORS = 1
MAX_AUTO_CPU_REFINERS = 16


@dataclass(frozen=True)
class BatchSizes:
    """Images per batch of each operator."""

    decode: int
    stage1: int
    refiner: int


@dataclass(frozen=True)
class PoolSizes:
    """Actors in each model stage's pool."""

    stage1: int
    refiner: int


def device_kind(on_gpu: bool) -> str:
    return "cuda" if on_gpu else "cpu"


def resolved_batch_sizes(spec: JobSpec, on_gpu: bool) -> BatchSizes:
    """The spec's batch sizes with ``auto`` resolved for the model stages' device."""
    auto = AUTO_BATCH[device_kind(on_gpu)]

    def resolve(stage: StageSpec, name: str) -> int:
        return auto[name] if stage.batch_size == "auto" else int(stage.batch_size)

    return BatchSizes(
        decode=DECODE_BATCH,
        stage1=resolve(spec.stage1, "stage1"),
        refiner=resolve(spec.refiner, "refiner"),
    )


def resolved_pool_sizes(
    spec: JobSpec, on_gpu: bool, cluster_gpus: float = 0.0, cpu_cores: int | None = None
) -> PoolSizes:
    """The spec's actor counts with ``auto`` resolved.

    ``cluster_gpus``: GPUs in the cluster (at least one is assumed when ``on_gpu``).
    ``cpu_cores``: cores for CPU pools (default: this machine's; on a CPU-only cluster set
    the pool sizes in the spec).
    """
    if on_gpu:
        per_stage = max(1, round(AUTO_ACTORS_PER_GPU * max(cluster_gpus, 1.0)))
        auto = PoolSizes(stage1=per_stage, refiner=per_stage)
    else:
        cores = cpu_cores or os.cpu_count() or 1
        auto = PoolSizes(stage1=AUTO_CPU_STAGE1_ACTORS, refiner=min(cores, MAX_AUTO_CPU_REFINERS))
    return PoolSizes(
        stage1=auto.stage1 if spec.stage1.actors == "auto" else int(spec.stage1.actors),
        refiner=auto.refiner if spec.refiner.actors == "auto" else int(spec.refiner.actors),
    )


def max_crops_per_forward(on_gpu: bool) -> int:
    return MAX_CROPS_PER_FORWARD[device_kind(on_gpu)]
