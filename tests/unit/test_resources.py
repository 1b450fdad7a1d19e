"""GPU wiring: 'auto' resolves against the cluster, explicit numbers are kept, bad ones refused."""

from __future__ import annotations

import pytest

from pipeline.job import gpus_per_actor
from schemas.spec import JobSpec, SpecError


def spec(**stages):
    return JobSpec.parse({"inputs": ["/d"], "output": "/o", **stages})


def test_auto_takes_half_a_gpu_per_actor_only_when_the_cluster_has_gpus():
    assert gpus_per_actor(spec(), cluster_gpus=0) == {"stage1": 0.0, "refiner": 0.0}
    assert gpus_per_actor(spec(), cluster_gpus=1) == {"stage1": 0.5, "refiner": 0.5}


def test_explicit_numbers_win_over_auto():
    s = spec(stage1={"num_gpus": 1}, refiner={"num_gpus": 0.25})
    assert gpus_per_actor(s, cluster_gpus=4) == {"stage1": 1.0, "refiner": 0.25}
    assert gpus_per_actor(spec(stage1={"num_gpus": 0}), cluster_gpus=4)["stage1"] == 0.0


@pytest.mark.parametrize("value", [-1, 9, "many"])
def test_bad_gpu_counts_are_refused_naming_the_field(value):
    with pytest.raises(SpecError, match="stage1.num_gpus"):
        spec(stage1={"num_gpus": value})
