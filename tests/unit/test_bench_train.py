"""``detpose bench --train``'s measurement on the bundled sample data, a few steps only."""

from __future__ import annotations

import pytest

from jobs.bench.train import benchmark_training

RATE_KEYS = (
    "train_samples_per_s",
    "train_samples_per_s_no_workers",
    "ceiling_samples_per_s",
    "vs_ceiling",
    "vs_ceiling_no_workers",
)


def test_benchmark_training_measures_both_tiny_networks() -> None:
    result = benchmark_training(steps=1, warmup_steps=0, device="cpu", num_workers=1)
    assert result["device"] == "cpu" and result["num_workers"] == 1
    assert result["skipped"], "paper configs are skipped without CUDA, and the result says so"
    runs = {(run["network"], run["config"]): run for run in result["runs"]}
    assert set(runs) == {("stage1", "tiny"), ("refiner", "tiny")}
    for run in runs.values():
        assert run["steps"] == 1 and run["batch_size"] > 0
        for key in RATE_KEYS:
            assert run[key] > 0, (key, run)
        ratio = run["train_samples_per_s"] / run["ceiling_samples_per_s"]
        assert run["vs_ceiling"] == pytest.approx(ratio, rel=0.02)
