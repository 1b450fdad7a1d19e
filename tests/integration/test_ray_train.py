"""`detpose train --workers N` on Ray Train: DDP is exact, data streams from S3 through Ray
Data, checkpoints land in S3 (the DetPose checkpoint and Ray Train's copy), and a killed
worker is replaced, the run resuming from its last checkpoint."""

from __future__ import annotations

import os
import signal
import threading
import time

import boto3
import pytest
import torch

from model.networks.detposenet import build_model, load_checkpoint
from model.training.datasets import load_coco_keypoints
from model.training.recipe import DetPoseNetRecipe
from pipeline.store.storage import storage_options
from pipeline.training.trainer import RayTrainPlan, read_progress, train_on_ray
from schemas.network_configs import refiner_preset
from schemas.spec import StorageSpec

pytestmark = pytest.mark.usefixtures("ray_local")


def plan_for(out: str, workers: int, steps: int, **changes) -> RayTrainPlan:
    config = refiner_preset("tiny").model_copy(update={"batch_size": 4, **changes})
    return RayTrainPlan(
        recipe=DetPoseNetRecipe("refiner"),
        config=config.model_dump(mode="json"),
        steps=steps,
        out=out,
        workers=workers,
        cpus_per_worker=0.5,
        seed=3,
        log_every=2,
        save_every=2,
        max_failures=2,
    )


def test_one_ddp_step_on_two_workers_equals_one_step_on_one(sample_data, tmp_path):
    """Same seed, same global batch of 4 samples: 1 worker x 4 or 2 workers x 2 give the same
    parameters after one step. Plain SGD makes a step the gradient itself (Adam's first step
    is its sign, where rounding noise flips tiny gradients), and frozen BatchNorm normalises
    by running statistics, not by each worker's half of the batch."""
    records = load_coco_keypoints(
        str(sample_data / "coco_sample" / "annotations.json"),
        str(sample_data / "coco_sample" / "images"),
    )
    exact = {"optimizer": "sgd", "freeze_batchnorm": True, "learning_rate": 0.5}
    params = {}
    for workers in (1, 2):
        out = str(tmp_path / f"w{workers}" / "refiner.pt")
        record = train_on_ray(plan_for(out, workers, steps=1, **exact), records)
        assert record["steps"] == 1 and record["workers"] == workers
        model, _, _ = load_checkpoint(out, "refiner")
        params[workers] = model.state_dict()
    torch.manual_seed(3)
    initial = build_model("refiner", refiner_preset("tiny")).state_dict()
    moved = [k for k in initial if not torch.equal(initial[k], params[1][k])]
    assert len(moved) > 10  # the step did move the network
    for name, value in params[1].items():
        torch.testing.assert_close(params[2][name], value, rtol=1e-5, atol=1e-6, msg=name)


def _upload_sample(sample_data, bucket: str, endpoint: str) -> None:
    client = boto3.client("s3", endpoint_url=endpoint)
    folder = sample_data / "coco_sample"
    client.upload_file(str(folder / "annotations.json"), bucket, "coco/annotations.json")
    for image in (folder / "images").iterdir():
        client.upload_file(str(image), bucket, f"coco/images/{image.name}")


def _kill_rank0_once_past(plan: RayTrainPlan, step: int, killed: list[int]) -> None:
    """Poll the run's progress file; once it is past ``step``, SIGKILL the process of the
    first attempt's rank 0 (a real worker death: Ray Train sees its actor die)."""
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        try:
            progress = read_progress(plan)
        except Exception:  # the file is being rewritten: read it again
            progress = {"step": 0, "attempts": []}
        if progress["attempts"] and progress["step"] > step:
            pid = int(progress["attempts"][0]["rank0"].rsplit(":", 1)[1])
            os.kill(pid, signal.SIGKILL)
            killed.append(progress["step"])
            return
        time.sleep(0.05)


def test_two_workers_stream_from_s3_survive_a_killed_worker_and_checkpoint_to_s3(
    sample_data, s3_endpoint, s3_bucket
):
    """A 2-worker run reads its samples from the moto S3 server through Ray Data and writes
    its checkpoints there. Rank 0 is SIGKILLed mid-run: the worker group is replaced, the new
    attempt resumes from the last checkpoint, and no step is repeated beyond the checkpoint
    interval."""
    _upload_sample(sample_data, s3_bucket, s3_endpoint)
    storage = StorageSpec(endpoint_url=s3_endpoint)
    images = f"s3://{s3_bucket}/coco/images"
    records = load_coco_keypoints(
        f"s3://{s3_bucket}/coco/annotations.json",
        images,
        storage_options(images, storage),
    )
    assert records and records[0].uri.startswith("s3://")
    out = f"s3://{s3_bucket}/ckpt/refiner.pt"
    steps, save_every, kill_after = 40, 4, 5
    plan = plan_for(out, workers=2, steps=steps)
    plan = RayTrainPlan(
        **{
            **plan.__dict__,
            "save_every": save_every,
            "storage_options": storage_options(out, storage),
        }
    )
    killed: list[int] = []
    killer = threading.Thread(target=_kill_rank0_once_past, args=(plan, kill_after, killed))
    killer.start()
    record = train_on_ray(plan, records)
    killer.join()
    assert killed and killed[0] < steps, "the run ended before its worker could be killed"
    assert record["steps"] == steps and record["workers"] == 2
    progress = read_progress(plan)
    assert progress["step"] == steps
    first, *restarts = progress["attempts"]
    assert first["start_step"] == 0 and first["workers"] == 2
    assert len(restarts) == 1, progress["attempts"]
    resumed = restarts[0]
    # The new attempt starts at a checkpoint written before the kill ...
    assert resumed["start_step"] % save_every == 0 and resumed["start_step"] > 0
    # ... and repeats only the steps done since it: at most one checkpoint interval.
    assert resumed["last_step_before"] >= killed[0]
    assert resumed["last_step_before"] - resumed["start_step"] <= save_every
    assert resumed["rank0"] != first["rank0"]
    client = boto3.client("s3", endpoint_url=s3_endpoint)
    listed = client.list_objects_v2(Bucket=s3_bucket, Prefix="ckpt/refiner.pt.ray/")
    assert any("checkpoint" in o["Key"] for o in listed.get("Contents", []))  # Ray Train's copy
    model, cfg, saved = load_checkpoint(
        out, "refiner", storage_options=storage_options(out, storage)
    )
    assert saved["trainer"] == "ray-train-ddp" and saved["steps"] == steps
    assert len(saved["attempts"]) == 2
