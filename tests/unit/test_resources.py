"""Resource wiring: 'auto' GPUs, batch sizes and pool sizes resolve against the device and
the cluster, explicit numbers are kept, bad ones refused."""

from __future__ import annotations

import pytest

from pipeline.graph.job import gpus_per_actor, on_gpu
from pipeline.graph.resources import (
    AUTO_BATCH,
    MAX_AUTO_CPU_REFINERS,
    resolved_batch_sizes,
    resolved_pool_sizes,
)
from schemas.spec import JobSpec, SpecError


def spec(**fields):
    return JobSpec.parse({"inputs": ["/d"], "output": "/o", **fields})


def test_auto_takes_a_quarter_gpu_per_actor_only_when_the_cluster_has_gpus():
    assert gpus_per_actor(spec(), cluster_gpus=0) == {"stage1": 0.0, "refiner": 0.0}
    assert gpus_per_actor(spec(), cluster_gpus=1) == {"stage1": 0.25, "refiner": 0.25}


def test_explicit_numbers_win_over_auto():
    s = spec(stage1={"num_gpus": 1}, refiner={"num_gpus": 0.25})
    assert gpus_per_actor(s, cluster_gpus=4) == {"stage1": 1.0, "refiner": 0.25}
    assert gpus_per_actor(spec(stage1={"num_gpus": 0}), cluster_gpus=4)["stage1"] == 0.0


@pytest.mark.parametrize("value", [-1, 9, "many"])
def test_bad_gpu_counts_are_refused_naming_the_field(value):
    with pytest.raises(SpecError, match="stage1.num_gpus"):
        spec(stage1={"num_gpus": value})


def test_auto_pools_fill_one_gpu_with_two_actors_per_stage():
    s = spec()
    gpus = gpus_per_actor(s, cluster_gpus=1)
    pools = resolved_pool_sizes(s, on_gpu(s, gpus), cluster_gpus=1)
    assert (pools.stage1, pools.refiner) == (2, 2)
    assert pools.stage1 * gpus["stage1"] + pools.refiner * gpus["refiner"] == 1.0
    assert resolved_pool_sizes(s, True, cluster_gpus=4).refiner == 8


def test_auto_pools_on_cpu_give_the_refiner_one_actor_per_core():
    s = spec()
    assert not on_gpu(s, gpus_per_actor(s, cluster_gpus=0))
    pools = resolved_pool_sizes(s, False, cpu_cores=2)
    assert (pools.stage1, pools.refiner) == (1, 2)
    assert resolved_pool_sizes(s, False, cpu_cores=96).refiner == MAX_AUTO_CPU_REFINERS


def test_device_cpu_keeps_cpu_sizes_on_a_gpu_cluster():
    s = spec(device="cpu")
    assert not on_gpu(s, gpus_per_actor(s, cluster_gpus=1))


def test_auto_batches_are_large_on_gpu_small_on_cpu_and_explicit_sizes_win():
    s = spec()
    cpu, gpu = resolved_batch_sizes(s, False), resolved_batch_sizes(s, True)
    assert (cpu.stage1, cpu.refiner) == (AUTO_BATCH["cpu"]["stage1"], AUTO_BATCH["cpu"]["refiner"])
    assert gpu.stage1 > cpu.stage1 and gpu.refiner > cpu.refiner
    explicit = spec(stage1={"batch_size": 3, "actors": 5}, refiner={"batch_size": 7})
    assert resolved_batch_sizes(explicit, True).stage1 == 3
    assert resolved_batch_sizes(explicit, False).refiner == 7
    assert resolved_pool_sizes(explicit, True, cluster_gpus=1).stage1 == 5


@pytest.mark.parametrize("field", ["batch_size", "actors"])
def test_auto_or_a_positive_number_only(field):
    with pytest.raises(SpecError, match=f"refiner.{field}"):
        spec(refiner={field: "lots"})
    with pytest.raises(SpecError, match=f"refiner.{field}"):
        spec(refiner={field: 0})


def test_precision_auto_is_float16_on_cuda_and_float32_on_cpu_and_names_win():
    import torch

    from model.inference.devices import resolve_precision

    assert resolve_precision(torch.device("cpu")) is None
    assert resolve_precision(torch.device("cuda")) == torch.float16
    assert resolve_precision(torch.device("cpu"), "bfloat16") == torch.bfloat16
    assert resolve_precision(torch.device("cuda"), "float32") is None
    with pytest.raises(SpecError, match="precision"):
        spec(precision="float8")
