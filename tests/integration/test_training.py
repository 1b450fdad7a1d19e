"""Learning test: the tiny networks fit the four real COCO sample images.

Proof that the training path learns (targets, losses, optimiser, checkpoint), not an accuracy
claim. Augmentation is off and the items are built once so the test stays short on 2 cores.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from model.codecs.coords import apply_affine, invert_affine, scale_affine
from model.codecs.image import make_refiner_crops
from model.networks.detposenet import load_checkpoint
from model.training.datasets import (
    RefinerDataset,
    Stage1Dataset,
    load_coco_keypoints,
    read_image_rgb,
)
from model.training.loop import train
from schemas.network_configs import coarse_preset, refiner_preset

STEPS = 100
MIN_LOSS_CUT = 5.0


def _records(sample_data: Path) -> list:
    root = sample_data / "coco_sample"
    return load_coco_keypoints(str(root / "annotations.json"), str(root / "images"))


def _argmax_coords(heatmaps: torch.Tensor) -> np.ndarray:
    """``[N, K, h, w]`` -> ``[N, K, 2]`` integer peak ``(x, y)`` (decoding lives elsewhere)."""
    width = heatmaps.shape[-1]
    index = heatmaps.flatten(2).argmax(-1)
    return torch.stack([index % width, index // width], dim=-1).double().numpy()


def _loss_cut(record: dict) -> float:
    return record["first_losses"]["total"] / record["losses"]["total"]


@pytest.mark.slow
def test_tiny_stage1_cuts_its_loss(sample_data: Path, tmp_path: Path) -> None:
    torch.set_num_threads(2)
    cfg = coarse_preset("tiny")
    dataset = Stage1Dataset(_records(sample_data), cfg, augment=False)
    items = [dataset[i] for i in range(len(dataset))]
    record = train("stage1", cfg, items, STEPS, tmp_path / "stage1.pt", log_every=10)
    assert _loss_cut(record) >= MIN_LOSS_CUT, record
    model, _, saved = load_checkpoint(tmp_path / "stage1.pt", "stage1")
    assert saved["steps"] == STEPS and not model.training


@pytest.mark.slow
def test_tiny_refiner_cuts_its_loss_and_localises_training_keypoints(
    sample_data: Path, tmp_path: Path
) -> None:
    torch.set_num_threads(2)
    records = _records(sample_data)
    cfg = refiner_preset("tiny")
    dataset = RefinerDataset(records, cfg, augment=False)
    items = [dataset[i] for i in range(len(dataset))]
    record = train("refiner", cfg, items, STEPS, tmp_path / "refiner.pt", log_every=10)
    assert _loss_cut(record) >= MIN_LOSS_CUT, record

    model, cfg, _ = load_checkpoint(tmp_path / "refiner.pt", "refiner")
    hits = total = 0
    for rec in records:
        keep = (rec.kpts_xyv[..., 2] > 0).sum(axis=1) >= cfg.min_keypoints
        if not keep.any():
            continue
        boxes, gt = rec.boxes_xyxy[keep], rec.kpts_xyv[keep]
        crops, affines = make_refiner_crops(
            [read_image_rgb(rec.uri)], np.zeros(len(boxes), int), boxes, cfg, "cpu"
        )
        with torch.no_grad():
            heatmaps = model(crops).heatmaps
        coords_img = apply_affine(
            invert_affine(scale_affine(affines, 1.0 / cfg.stride)), _argmax_coords(heatmaps)
        )
        box_side = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
        labelled = gt[..., 2] > 0
        close = np.linalg.norm(coords_img - gt[..., :2], axis=-1) <= 0.1 * box_side[:, None]
        hits += int((close & labelled).sum())
        total += int(labelled.sum())
    assert total == 181  # every labelled keypoint of the sample
    assert hits / total >= 0.9, f"PCK@0.1 = {hits / total:.3f}"
