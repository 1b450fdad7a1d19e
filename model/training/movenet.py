"""Fine-tuning the zoo's MoveNet SinglePose networks (Thunder, Lightning) on COCO labels.

The imported graph's convolutions become trainable (its BatchNorms are folded into them by
the TF.js conversion, so there are no normalisation statistics to keep). Each sample is one
labelled person, cut as the refiner stage cuts it at inference (``box_to_affine`` with the
zoo's crop padding, float 0..255 RGB), then augmented. The losses follow the CenterNet
recipe MoveNet is trained with, on the four heads the importer exposes:

- keypoint heatmaps and the person-centre heatmap: penalty-reduced focal loss on the
  sigmoid against a Gaussian peaking at 1 in the cell holding the point;
- keypoint regression from the centre cell, and the sub-cell offsets at each keypoint's
  cell: L1, labelled keypoints only.

Cells follow the network's own decoding (``model/zoo/decode.py``): crop pixel ``p`` lies at
continuous cell ``c = (p + 0.5) / stride``; its cell is ``floor(c)`` and its offset
``c - floor(c)`` (measured on the released weights: their offsets at heatmap peaks have a
median of 0.5, range 0..1). Only the target person is supervised: others in the crop are
background, which is what a top-down refiner should learn.

A fine-tuned network is saved as a zoo checkpoint of the same network (``detpose run`` takes
it as ``refiner.checkpoint`` with the same ``model``), its conv weights in float32, with the
base network's file and SHA-256, the data and the training record under
``record["fine_tune"]``.
"""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import fsspec
import numpy as np
import torch
from torch import nn

from model.checkpoint import check_primitives, parse_checkpoint_bytes
from model.codecs.affine import box_to_affine
from model.codecs.image import image_to_float_tensor, warp_crops
from model.keypoints import NUM_KEYPOINTS
from model.nets.imported import ImportedGraphNet
from model.training.augment import (
    augmentation_affine,
    compose_affines,
    transform_keypoints,
)
from model.training.datasets import CocoImage, SampleKey, _AugmentedImages, labelled_persons
from model.zoo.weights import ZOO_FORMAT, ZooModel
from schemas.network_configs import MoveNetConfig

# CenterNet's focal-loss exponents (Law & Deng 2018; Zhou et al. 2019).
FOCAL_ALPHA = 2.0
FOCAL_BETA = 4.0


class MoveNetCropDataset(_AugmentedImages):
    """One item per labelled person: ``crop [3, S, S]`` float 0..255 RGB, ``keypoints
    [17, 3]`` (x, y in crop pixels, 1 where labelled and inside the crop), ``centre [2]``
    (crop pixels): the mean of the labelled keypoints, where the released networks' centre
    peaks lie (on COCO crops 2.6 / 1.1 cells off in y / x, against 6.7 / 4.6 for the box
    centre), the box centre for a person with none inside the crop."""

    takes_progress = True

    def __init__(
        self,
        records: list[CocoImage],
        cfg: MoveNetConfig,
        augment: bool,
        seed: int = 0,
        input_size: int = 256,
        cache_images: int = 256,
        storage_options: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(records, cfg, augment, seed, cache_images, storage_options)  # type: ignore[arg-type]
        self.input_size = input_size
        self.persons = labelled_persons(records, cfg.min_keypoints)

    def __len__(self) -> int:
        return len(self.persons)

    def __getitem__(self, key: int | SampleKey) -> dict[str, torch.Tensor]:
        index = key.index if isinstance(key, SampleKey) else key
        image_idx, person = self.persons[index]
        rec = self.records[image_idx]
        size = (self.input_size, self.input_size)
        box = rec.boxes_xyxy[person]
        params = self._draw_augmentation()
        affine = box_to_affine(box[None], size, padding=self.cfg.box_padding)[0]  # type: ignore[attr-defined]
        affine = compose_affines(augmentation_affine(params, size), affine)
        crop = warp_crops(
            [image_to_float_tensor(self.cache.get(rec.uri), "cpu")],
            np.zeros(1, dtype=int),
            affine[None],
            size,
        )[0]
        kpts = transform_keypoints(affine, rec.kpts_xyv[person][None], params.flip, size)[0]
        labelled = (kpts[:, 2] > 0).astype(np.float32)
        if labelled.any():  # MoveNet's centre: nearest the labelled keypoints' mean (measured)
            centre = kpts[labelled > 0, :2].mean(axis=0)
        else:
            middle = np.array([(box[0] + box[2]) / 2.0, (box[1] + box[3]) / 2.0])
            centre = affine[:, :2] @ middle + affine[:, 2]
        return {
            "crop": crop,
            "keypoints": torch.from_numpy(
                np.concatenate([kpts[:, :2], labelled[:, None]], axis=1).astype(np.float32)
            ),
            "centre": torch.from_numpy(centre.astype(np.float32)),
        }


def focal_loss(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """CenterNet's penalty-reduced focal loss, summed over the cells of the maps ``weight``
    (``[B, C]``, 1: supervised) keeps, divided by their count of peaks (cells at 1)."""
    prob = torch.sigmoid(logits.float()).clamp(1e-4, 1 - 1e-4)
    peak = target >= 1.0
    positive = -torch.log(prob) * (1 - prob) ** FOCAL_ALPHA
    negative = -torch.log(1 - prob) * prob**FOCAL_ALPHA * (1 - target) ** FOCAL_BETA
    per_cell = torch.where(peak, positive, negative) * weight[..., None, None]
    peaks = (peak.float() * weight[..., None, None]).sum().clamp(min=1.0)
    return per_cell.sum() / peaks


def _gaussians(cells_yx: torch.Tensor, height: int, width: int, sigma: float) -> torch.Tensor:
    """``[B, C, H, W]`` Gaussians of std ``sigma`` cells, each 1 at its integer cell
    ``cells_yx [B, C, 2]`` (long)."""
    ys = torch.arange(height, device=cells_yx.device, dtype=torch.float32)[:, None]
    xs = torch.arange(width, device=cells_yx.device, dtype=torch.float32)[None, :]
    dy = ys - cells_yx[..., 0, None, None].float()
    dx = xs - cells_yx[..., 1, None, None].float()
    return torch.exp(-(dy**2 + dx**2) / (2 * sigma**2))


def _at_cells(maps: torch.Tensor, cells_yx: torch.Tensor) -> torch.Tensor:
    """``maps [B, C, H, W]`` read at one cell per batch item and channel pair: ``cells_yx
    [B, C, 2]`` → ``[B, C]``."""
    width = maps.shape[3]
    flat = (cells_yx[..., 0] * width + cells_yx[..., 1]).long()
    return maps.flatten(2).gather(2, flat[..., None])[..., 0]


def movenet_losses(
    heads: dict[str, torch.Tensor],
    keypoints: torch.Tensor,
    centre: torch.Tensor,
    stride: float,
    cfg: MoveNetConfig,
) -> dict[str, torch.Tensor]:
    """The fine-tuning loss terms from the four heads (``centre [B, 1, H, W]``, ``heatmaps
    [B, 17, H, W]``, ``regress`` and ``offsets [B, 34, H, W]``, logits / cells) against one
    person per crop: ``keypoints [B, 17, 3]`` (crop pixels, labelled flag), ``centre [B, 2]``
    (crop pixels)."""
    batch, _, height, width = heads["heatmaps"].shape
    limit = torch.tensor([height - 1, width - 1], device=keypoints.device)
    kpt_c = (keypoints[..., [1, 0]] + 0.5) / stride  # [B, 17, 2] continuous (y, x) cells
    kpt_cell = kpt_c.floor().long().clamp(min=0)
    kpt_cell = torch.minimum(kpt_cell, limit)
    labelled = keypoints[..., 2]  # [B, 17]
    centre_c = (centre[:, [1, 0]] + 0.5) / stride  # [B, 2]
    centre_cell = torch.minimum(centre_c.floor().long().clamp(min=0), limit)[:, None]  # [B, 1, 2]

    heat_target = _gaussians(kpt_cell, height, width, cfg.heatmap_sigma)
    heatmap = focal_loss(heads["heatmaps"], heat_target, labelled)
    centre_target = _gaussians(centre_cell, height, width, cfg.centre_sigma)
    centre_term = focal_loss(heads["centre"], centre_target, torch.ones_like(labelled[:, :1]))

    count = labelled.sum().clamp(min=1.0)
    # Regression: from the centre cell to each keypoint, in cells.
    regress = heads["regress"].float()
    at_centre = _at_cells(regress, centre_cell.expand(batch, 2 * NUM_KEYPOINTS, 2))
    reg_pred = at_centre.reshape(batch, NUM_KEYPOINTS, 2)
    reg_target = kpt_c - centre_cell.float()
    regress_term = ((reg_pred - reg_target).abs().sum(-1) * labelled).sum() / count
    # Offsets: the sub-cell position at each keypoint's own cell.
    offsets = heads["offsets"].float()
    cells = kpt_cell.repeat_interleave(2, dim=1)  # [B, 34, 2]: (y, x) channels of keypoint j
    off_pred = _at_cells(offsets, cells).reshape(batch, NUM_KEYPOINTS, 2)
    off_target = kpt_c - kpt_cell.float()
    offset_term = ((off_pred - off_target).abs().sum(-1) * labelled).sum() / count

    total = (
        cfg.heatmap_loss_weight * heatmap
        + cfg.centre_loss_weight * centre_term
        + cfg.regress_loss_weight * regress_term
        + cfg.offset_loss_weight * offset_term
    )
    return {
        "total": total,
        "heatmap": heatmap.detach(),
        "centre": centre_term.detach(),
        "regress": regress_term.detach(),
        "offset": offset_term.detach(),
    }


class TrainableMoveNet(nn.Module):
    """A zoo single-pose network with trainable convolutions; ``forward`` maps float 0..255
    crops to its four heads by DetPose's names."""

    def __init__(self, zoo: ZooModel) -> None:
        super().__init__()
        self.net: ImportedGraphNet = zoo.net
        self.heads = dict(zoo.network.outputs)
        for param in self.net.parameters():
            param.requires_grad_(True)

    def forward(self, crops: torch.Tensor) -> dict[str, torch.Tensor]:
        out = self.net(crops)
        return {name: out[node] for name, node in self.heads.items()}


@dataclass(frozen=True)
class BaseNetwork:
    """The zoo checkpoint a fine-tuning run starts from."""

    uri: str
    sha256: str
    payload: dict[str, Any]


def read_base(uri: str) -> BaseNetwork:
    """The zoo checkpoint at ``uri`` (read with ``weights_only=True``; ``zoo_model_from_payload``
    checks its network when the run builds it)."""
    with fsspec.open(uri, "rb") as f:
        data = f.read()
    payload = parse_checkpoint_bytes(data, uri, required=("format", "kind"), expected_format=None)
    return BaseNetwork(uri, hashlib.sha256(data).hexdigest(), payload)


def fine_tuned_payload(
    base: BaseNetwork,
    model: TrainableMoveNet,
    cfg: MoveNetConfig,
    record: dict[str, Any],
    optimizer_state: dict[str, Any] | None,
) -> dict[str, Any]:
    """The zoo checkpoint of ``model``: the base's graph with the trained conv weights
    (float32, TF layout), its decoding constants, and the provenance of both."""
    graph = dict(base.payload["graph"])
    graph["consts"] = {**graph["consts"], **model.net.trained_consts()}
    provenance = dict(base.payload["record"])
    # A base that was itself fine-tuned keeps its own history one level down.
    earlier = provenance.pop("fine_tune", None)
    provenance["fine_tune"] = {
        **record,
        "base_checkpoint": base.uri,
        "base_sha256": base.sha256,
        **({"base_fine_tune": earlier} if earlier else {}),
    }
    payload: dict[str, Any] = {
        **{k: v for k, v in base.payload.items() if k not in ("optimizer", "config")},
        "format": ZOO_FORMAT,
        "graph": graph,
        "record": provenance,
        "config": cfg.model_dump(mode="json"),
    }
    if optimizer_state is not None:
        payload["optimizer"] = optimizer_state
    check_primitives(payload, "checkpoint")
    return payload


def write_payload(uri: str, payload: dict[str, Any], storage_options: Mapping[str, Any]) -> None:
    """``torch.save`` of ``payload`` to ``uri`` (a local file is replaced atomically)."""
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    if "://" in uri:
        with fsspec.open(uri, "wb", **dict(storage_options)) as f:
            f.write(buffer.getvalue())
        return
    os.makedirs(os.path.dirname(os.path.abspath(uri)), exist_ok=True)
    tmp = f"{uri}.tmp-{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(buffer.getvalue())
    os.replace(tmp, uri)
