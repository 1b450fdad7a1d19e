"""``detpose bench --train``: training samples/s against the forward+backward ceiling.

Trains on the real COCO and OCHuman excerpts in ``tests/data`` (7 images, 19 persons: what
the bundled DetPoseNet weights were trained on), with augmentation on and no image cache, so
every sample decodes its JPEG as it would in a COCO epoch, where a cache of a few hundred
images almost never hits.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from model.inference.devices import resolve_device
from model.training.datasets import RefinerDataset, Stage1Dataset, load_coco_keypoints
from model.training.loop import NumWorkers, resolve_num_workers, worker_start_method
from model.training.throughput import measure_training
from schemas.network_configs import coarse_preset, refiner_preset

SAMPLE_DATA = Path(__file__).resolve().parents[2] / "tests" / "data"
DEFAULT_DATA = (
    (SAMPLE_DATA / "coco_sample" / "annotations.json", SAMPLE_DATA / "coco_sample" / "images"),
    (
        SAMPLE_DATA / "ochuman_sample" / "annotations.json",
        SAMPLE_DATA / "ochuman_sample" / "images",
    ),
)


def benchmark_training(
    steps: int = 30,
    warmup_steps: int = 5,
    paper_steps: int = 10,
    device: str = "auto",
    num_workers: NumWorkers = "auto",
    data: tuple[tuple[Path, Path], ...] = DEFAULT_DATA,
    seed: int = 0,
) -> dict[str, Any]:
    """Measure both networks' training loop, with and without workers, and its ceiling.

    ``tiny`` configs always; ``paper`` configs only on CUDA (see ``skipped``), over
    ``paper_steps`` steps: a paper stage-1 sample took about a second of CPU time to load on
    the 2-core build machine, so the loop without workers is slow. Samples/s are over the timed steps after
    ``warmup_steps`` untimed ones.
    """
    torch_device = resolve_device(device)
    workers = resolve_num_workers(num_workers, torch_device)
    records = [rec for ann, images in data for rec in load_coco_keypoints(str(ann), str(images))]
    presets = ["tiny", "coco-recipe"] if torch_device.type == "cuda" else ["tiny"]
    runs = []
    for preset in presets:
        for kind in ("stage1", "refiner"):
            cfg = coarse_preset(preset) if kind == "stage1" else refiner_preset(preset)
            dataset_type = Stage1Dataset if kind == "stage1" else RefinerDataset
            dataset = dataset_type(records, cfg, augment=True, seed=seed, cache_images=0)  # type: ignore[arg-type]
            timed = steps if preset == "tiny" else paper_steps
            rates = measure_training(
                kind, cfg, dataset, torch_device, workers, timed, warmup_steps, seed
            )
            runs.append(
                {
                    "network": kind,
                    "config": preset,
                    "batch_size": cfg.batch_size,
                    "samples": len(dataset),
                    "steps": timed,
                    **rates,
                }
            )
    return {
        "device": str(torch_device),
        "num_workers": workers,
        "worker_start_method": worker_start_method() if workers else None,
        "warmup_steps": warmup_steps,
        "annotations": [str(ann) for ann, _ in data],
        "image_cache": 0,
        "skipped": None
        if torch_device.type == "cuda"
        else "paper configs: no CUDA here, and a paper step (about 6.4 TFLOPs for stage 1 at "
        "batch 16, 2.8 for the refiner at batch 32) takes minutes on a CPU",
        "runs": runs,
        # Other work on the machine slows every rate, the threaded step most: say how busy it was.
        "load_average_1_5_15_min": [round(x, 2) for x in os.getloadavg()]
        if hasattr(os, "getloadavg")
        else None,
    }
