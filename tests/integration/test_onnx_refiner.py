"""A network added by registering one adapter, with no source file edited: the built-in
Thunder exported to ONNX, registered at run time, runs a whole job on local Ray (each actor
receives the adapter with its resolved stage), shows up in `detpose models`, and gives the
torch path's keypoint AP on the real COCO sample."""

from __future__ import annotations

import argparse
import contextlib
import io

import pytest
from pycocotools.coco import COCO

from jobs.models_cmd import run_models
from model.networks import registry
from model.networks.export import export_refiner_onnx
from model.networks.onnx import OnnxNetwork
from pipeline.graph.job import run_job
from pipeline.store.sink import JobPaths, read_annotations
from schemas.spec import JobSpec, OnnxSpec
from tests.conftest import NO_PROGRESS_TIMEOUT_S
from tests.integration.test_pipeline_accuracy import keypoint_ap

pytestmark = pytest.mark.usefixtures("ray_local")


@pytest.fixture
def thunder_onnx(tmp_path):
    path = tmp_path / "thunder.onnx"
    export_refiner_onnx("movenet-thunder", path)
    adapter = registry.register(
        OnnxNetwork(
            "thunder-onnx",
            "refiner",
            OnnxSpec(codec="movenet"),
            weights=str(path),
            description="MoveNet Thunder exported to ONNX (test)",
            licence="Apache-2.0",
        )
    )
    yield adapter
    registry.unregister("refiner", "thunder-onnx")


def job_ap(sample_data, tmp_path, job_id: str, refiner: dict) -> tuple[float, dict]:
    spec = JobSpec.parse(
        {
            "job_id": job_id,
            "inputs": [str(sample_data / "coco_sample" / "images")],
            "output": str(tmp_path),
            "refiner": refiner,
        }
    )
    stats = run_job(spec, no_progress_timeout_s=NO_PROGRESS_TIMEOUT_S)
    rows = read_annotations(JobPaths.for_spec(spec).annotations, spec.storage).to_pylist()
    assert [row["status"] for row in rows] == ["ok"] * 4
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(sample_data / "coco_sample" / "annotations.json"))
    return keypoint_ap(gt, rows), stats.weights


def test_a_registered_onnx_refiner_runs_a_job_and_matches_the_torch_paths_ap(
    sample_data, tmp_path, thunder_onnx, capsys
):
    torch_ap, _ = job_ap(sample_data, tmp_path, "torch", {"model": "movenet-thunder"})
    onnx_ap, weights = job_ap(sample_data, tmp_path, "onnx", {"model": "thunder-onnx"})
    assert weights["refiner"] == "bundled:thunder.onnx"
    assert torch_ap > 0.3  # real poses, not a degenerate agreement
    assert onnx_ap == pytest.approx(torch_ap, abs=0.005)
    assert run_models(argparse.Namespace(json=False, export_onnx=None, out=None)) == 0
    listed = [line for line in capsys.readouterr().out.splitlines() if "thunder-onnx" in line]
    assert len(listed) == 1 and "refiner" in listed[0] and "256x256" in listed[0]
