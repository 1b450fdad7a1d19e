"""Custom Ray resources per model stage: validated in the spec, passed to that stage's actors."""

from __future__ import annotations

import pytest

from pipeline.graph.actors import CoarseStage, RefineStage
from pipeline.graph.job import build_dataset
from schemas.spec import JobSpec, SpecError


def spec(**stages) -> JobSpec:
    return JobSpec.parse({"inputs": ["/d"], "output": "/o", **stages})


def test_resources_default_to_none_and_are_accepted_per_stage():
    assert spec().stage1.resources == {} and spec().refiner.resources == {}
    pinned = spec(refiner={"resources": {"refiner_host": 0.1, "accelerator_x": 2}})
    assert pinned.refiner.resources == {"refiner_host": 0.1, "accelerator_x": 2.0}
    assert pinned.stage1.resources == {}


def test_resources_survive_the_saved_spec_and_keep_it_hashable(tmp_path):
    pinned = spec(refiner={"resources": {"refiner_host": 0.5}})
    saved = tmp_path / "spec.yaml"
    saved.write_text(pinned.to_yaml())
    assert JobSpec.from_yaml(saved) == pinned
    assert hash(pinned) == hash(JobSpec.from_yaml(saved))
    assert hash(pinned) != hash(spec(refiner={"resources": {"refiner_host": 0.25}}))


@pytest.mark.parametrize("value", [0, -1, -0.5])
def test_non_positive_amounts_are_refused_naming_the_field(value):
    with pytest.raises(SpecError, match=r"refiner\.resources\.refiner_host: got .*greater than 0"):
        spec(refiner={"resources": {"refiner_host": value}})


@pytest.mark.parametrize(
    ("resources", "rule"),
    [
        ({"refiner_host": "lots"}, "valid number"),
        ({"CPU": 1}, "num_cpus and num_gpus"),
        ({"GPU": 1}, "num_cpus and num_gpus"),
        ({" ": 1}, "empty resource name"),
        ([1], "valid dictionary"),
    ],
)
def test_bad_resources_are_refused_with_the_rule(resources, rule):
    with pytest.raises(SpecError, match=r"stage1\.resources") as err:
        spec(stage1={"resources": resources})
    assert rule in str(err.value)


class _RecordingDataset:
    """Stands in for a Ray Dataset: records each ``map_batches`` call, runs nothing."""

    def __init__(self) -> None:
        self.calls: dict[object, dict] = {}

    def map_batches(self, fn, **kwargs):
        self.calls[fn] = kwargs
        return self


def test_only_the_stage_that_asks_gets_resources():
    recorded = _RecordingDataset()
    pinned = spec(refiner={"resources": {"refiner_host": 0.1}})
    build_dataset(pinned, recorded, {"stage1": 0.0, "refiner": 0.0})
    assert recorded.calls[RefineStage]["resources"] == {"refiner_host": 0.1}
    assert recorded.calls[CoarseStage].get("resources") is None
    tasks = [kw for fn, kw in recorded.calls.items() if fn not in (CoarseStage, RefineStage)]
    assert tasks and all(kw.get("resources") is None for kw in tasks)
