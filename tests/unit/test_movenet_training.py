"""Fine-tuning the zoo's MoveNet SinglePose networks: targets in the network's own cell
convention, a checkpoint `detpose run` takes, provenance, resuming, and learning."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch

from model.inference.refiner import ZOO_CROP_PADDING
from model.networks import registry
from model.networks.base import RefinerSettings
from model.training.datasets import CocoImage, load_coco_keypoints, read_image_rgb
from model.training.loop import train
from model.training.movenet import movenet_losses
from model.training.recipe import MoveNetRecipe
from model.zoo.catalog import NETWORKS
from model.zoo.weights import zoo_model_from_bytes
from schemas.network_configs import MoveNetConfig

LIGHTNING = "movenet-lightning"


def _logit(p: torch.Tensor) -> torch.Tensor:
    p = p.clamp(1e-6, 1 - 1e-6)
    return torch.log(p / (1 - p))


def _heads_for(keypoints_xy: np.ndarray, centre_xy: np.ndarray, size: int, cfg: MoveNetConfig):
    """Heads that predict the targets exactly, built from the convention written out by
    hand: crop pixel p is cell c = (p + 0.5) / 4, peaking in cell floor(c), offset c - floor."""
    cells = size // 4
    ys, xs = torch.meshgrid(torch.arange(cells), torch.arange(cells), indexing="ij")
    ys, xs = ys.float(), xs.float()
    c = (torch.as_tensor(keypoints_xy, dtype=torch.float32) + 0.5) / 4  # (x, y)
    heat = torch.zeros(1, 17, cells, cells)
    offsets = torch.zeros(1, 34, cells, cells)
    for j, (cx, cy) in enumerate(c.tolist()):
        ix, iy = int(np.floor(cx)), int(np.floor(cy))
        heat[0, j] = torch.exp(-((ys - iy) ** 2 + (xs - ix) ** 2) / (2 * cfg.heatmap_sigma**2))
        offsets[0, 2 * j, iy, ix] = cy - iy
        offsets[0, 2 * j + 1, iy, ix] = cx - ix
    ccx, ccy = ((torch.as_tensor(centre_xy, dtype=torch.float32) + 0.5) / 4).tolist()
    icx, icy = int(np.floor(ccx)), int(np.floor(ccy))
    centre = torch.exp(-((ys - icy) ** 2 + (xs - icx) ** 2) / (2 * cfg.centre_sigma**2))
    regress = torch.zeros(1, 34, cells, cells)
    for j, (cx, cy) in enumerate(c.tolist()):
        regress[0, 2 * j, icy, icx] = cy - icy
        regress[0, 2 * j + 1, icy, icx] = cx - icx
    return {
        "heatmaps": _logit(heat),
        "centre": _logit(centre)[None, None],
        "regress": regress,
        "offsets": offsets,
    }


def test_losses_vanish_where_the_heads_match_the_released_cell_convention() -> None:
    cfg = MoveNetConfig()
    rng = np.random.default_rng(0)
    keypoints = rng.uniform(3.0, 60.0, size=(17, 2))
    keypoints[0] = [9.7, 21.3]  # cell (y 5, x 2), offset (0.45, 0.55)
    labelled = torch.ones(1, 17, 1)
    batch_kpts = torch.cat([torch.as_tensor(keypoints, dtype=torch.float32)[None], labelled], -1)
    centre = keypoints.mean(axis=0)
    heads = _heads_for(keypoints, centre, 64, cfg)
    exact = movenet_losses(heads, batch_kpts, torch.as_tensor(centre)[None].float(), 4.0, cfg)
    assert float(exact["regress"]) < 1e-5 and float(exact["offset"]) < 1e-5
    # One pixel off in every keypoint: the heatmaps then peak a cell off for some of them and
    # every offset is wrong; the loss sees both.
    moved = movenet_losses(
        heads, batch_kpts + torch.tensor([4.0, 0.0, 0.0]), torch.as_tensor(centre)[None].float(),
        4.0, cfg,
    )  # fmt: skip
    assert float(moved["heatmap"]) > 1.5 * float(exact["heatmap"])
    assert float(moved["offset"]) > 0.1
    # An unlabelled keypoint costs nothing, wherever it is.
    unlabelled = batch_kpts.clone()
    unlabelled[0, 0, :2] += 20.0
    unlabelled[0, 0, 2] = 0.0
    partial = movenet_losses(heads, unlabelled, torch.as_tensor(centre)[None].float(), 4.0, cfg)
    assert float(partial["offset"]) < 1e-5 and float(partial["regress"]) < 1e-5


def test_crop_samples_are_the_refiner_stages_crops_with_keypoints_in_crop_pixels(
    sample_data,
) -> None:
    records = load_coco_keypoints(
        str(sample_data / "coco_sample" / "annotations.json"),
        str(sample_data / "coco_sample" / "images"),
    )
    recipe = MoveNetRecipe(LIGHTNING)
    cfg = recipe.preset_config(None)
    assert cfg.box_padding == ZOO_CROP_PADDING  # trains on the crops the stage refines
    dataset = recipe.dataset(records, cfg, augment=False, seed=0)
    item = dataset[0]
    size = NETWORKS[LIGHTNING].input_size
    assert item["crop"].shape == (3, size, size)
    assert float(item["crop"].max()) > 2.0  # float 0..255, not normalised
    image_idx, person = dataset.persons[0]
    kpts = records[image_idx].kpts_xyv[person]
    labelled = item["keypoints"][:, 2] > 0
    assert labelled.sum() >= cfg.min_keypoints
    assert torch.equal(labelled, torch.as_tensor(kpts[:, 2] > 0))
    # The crop is the box grown to a square: box edges map into the crop linearly.
    box = records[image_idx].boxes_xyxy[person]
    side = max(box[2] - box[0], box[3] - box[1]) * cfg.box_padding
    scale = size / side
    xy = item["keypoints"][labelled, :2].numpy()
    expected = (kpts[kpts[:, 2] > 0, :2] - (box[:2] + box[2:]) / 2) * scale + (size - 1) / 2
    np.testing.assert_allclose(xy, expected, atol=0.6)
    np.testing.assert_allclose(item["centre"].numpy(), xy.mean(axis=0), atol=1e-4)


def _one_person(sample_data) -> list[CocoImage]:
    records = load_coco_keypoints(
        str(sample_data / "coco_sample" / "annotations.json"),
        str(sample_data / "coco_sample" / "images"),
    )
    rec = max(records, key=lambda r: int((r.kpts_xyv[..., 2] > 0).sum(axis=1).max(initial=0)))
    best = int(np.argmax((rec.kpts_xyv[..., 2] > 0).sum(axis=1)))
    return [
        rec._replace(
            boxes_xyxy=rec.boxes_xyxy[best : best + 1], kpts_xyv=rec.kpts_xyv[best : best + 1]
        )
    ]


def test_fine_tuned_lightning_is_a_refiner_checkpoint_with_provenance_and_resumes(
    sample_data, tmp_path
) -> None:
    recipe = registry.network("refiner", LIGHTNING).training()
    assert isinstance(recipe, MoveNetRecipe)
    assert registry.network("stage1", "movenet-multipose").training() is None
    records = _one_person(sample_data)
    cfg = recipe.config(None, {"lr_drop_at": 1.0}, batch_size=2)
    dataset = recipe.dataset(records, cfg, augment=False, seed=0)
    out = tmp_path / "lightning.pt"
    record = train(recipe, cfg, dataset, 6, out, log_every=1, num_workers=0, data_description="d")
    history = [total for _, total in record["loss_history"]]
    assert history[-1] < 0.8 * history[0]  # it learns the one person it sees

    data = out.read_bytes()
    zoo = zoo_model_from_bytes(data, str(out), LIGHTNING)  # what `detpose run` loads
    base_path = NETWORKS[LIGHTNING].checkpoint_path
    base = zoo_model_from_bytes(base_path.read_bytes(), "base", LIGHTNING)
    fine_tune = zoo.record["fine_tune"]
    assert fine_tune["base_sha256"] == hashlib.sha256(base_path.read_bytes()).hexdigest()
    assert fine_tune["steps"] == 6 and fine_tune["dataset"] == "d"
    assert zoo.record["upstream"] == base.record["upstream"]  # the base's provenance stays
    moved = [
        name
        for (name, p), q in zip(zoo.net.named_parameters(), base.net.parameters(), strict=True)
        if not torch.equal(p, q)
    ]
    assert len(moved) > 10

    adapter = registry.network("refiner", LIGHTNING)
    loaded = adapter.load(data, str(out), "cpu")
    runner = adapter.runner(loaded, torch.device("cpu"), RefinerSettings())
    image = read_image_rgb(records[0].uri)
    (poses,) = runner([image], [records[0].boxes_xyxy], None)
    assert poses.kpts_xys.shape == (1, 17, 3) and np.isfinite(poses.kpts_xys).all()
    labelled = records[0].kpts_xyv[0, :, 2] > 0
    error = np.linalg.norm(
        poses.kpts_xys[0, labelled, :2] - records[0].kpts_xyv[0, labelled, :2], axis=1
    )
    box = records[0].boxes_xyxy[0]
    assert np.median(error) < 0.1 * max(box[2] - box[0], box[3] - box[1])

    resumed = train(recipe, cfg, dataset, 7, out, log_every=1, num_workers=0)
    assert resumed["steps"] == 7 and [s for s, _ in resumed["loss_history"]] == list(range(1, 8))


def test_resuming_refuses_another_networks_checkpoint(sample_data, tmp_path) -> None:
    records = _one_person(sample_data)
    lightning = MoveNetRecipe(LIGHTNING)
    cfg = lightning.config(None, {}, batch_size=1)
    out = tmp_path / "x.pt"
    out.write_bytes(NETWORKS["movenet-thunder"].checkpoint_path.read_bytes())
    with pytest.raises(ValueError, match="movenet-thunder"):
        train(lightning, cfg, lightning.dataset(records, cfg, False, 0), 1, out, num_workers=0)
