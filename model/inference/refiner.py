"""Stage 3 on person crops batched across images: the refiner → final keypoints and scores."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from model.codecs.coords import crop_heatmap_to_image, normalised_yx_to_pixels
from model.codecs.heatmaps import decode_heatmaps, flip_heatmaps_back
from model.codecs.image import cut_crops, make_refiner_crops
from model.inference.devices import autocast, resolve_precision
from model.inference.weights import LoadedModel
from model.keypoints import FLIP_PAIRS, NUM_KEYPOINTS, flip_permutation
from model.zoo.decode import decode_single_pose
from model.zoo.weights import ZooModel

FLIP_PERMUTATION = flip_permutation(NUM_KEYPOINTS, FLIP_PAIRS)
# A zoo crop covers the person box grown by this (MoveNet sees the whole person with margin).
ZOO_CROP_PADDING = 1.25
# Keypoints scoring below this do not count towards a pose's score (top-down practice).
POSE_SCORE_KEYPOINT_FLOOR = 0.2


def pose_scores(
    keypoint_scores: np.ndarray, floor: float = POSE_SCORE_KEYPOINT_FLOOR
) -> np.ndarray:
    """Mean keypoint score over keypoints above ``floor`` (0 when none). ``[N, 17]`` → ``[N]``."""
    above = keypoint_scores > floor
    total = np.where(above, keypoint_scores, 0.0).sum(axis=1)
    return np.where(above.any(axis=1), total / np.maximum(above.sum(axis=1), 1), 0.0)


@dataclass(frozen=True)
class RefinedPoses:
    """Final poses of one image's persons, in that image's pixels."""

    kpts_xys: np.ndarray  # [N, 17, 3] x, y, score
    pose_scores: np.ndarray  # [N]


class PoseRefinerModel:
    """Stage 3 on person crops batched across images."""

    def __init__(
        self,
        loaded: LoadedModel,
        device: torch.device,
        flip_test: bool,
        max_crops: int = 64,
        precision: str = "auto",
    ) -> None:
        self.loaded = loaded
        self.device = device
        self.precision = resolve_precision(device, precision)
        self.flip_test = flip_test
        self.max_crops = max_crops

    @torch.inference_mode()
    def __call__(
        self, images_rgb: list[np.ndarray], boxes_xyxy: list[np.ndarray]
    ) -> list[RefinedPoses]:
        """Refine ``boxes_xyxy[i]`` (``[N_i, 4]``) of each image; one result per image."""
        counts = [len(b) for b in boxes_xyxy]
        total = sum(counts)
        kpts = np.zeros((total, NUM_KEYPOINTS, 3), dtype=np.float32)
        if total:
            image_index = np.repeat(np.arange(len(images_rgb)), counts)
            all_boxes = np.concatenate([b for b in boxes_xyxy if len(b)]).astype(np.float64)
            for start in range(0, total, self.max_crops):
                chunk = slice(start, min(start + self.max_crops, total))
                kpts[chunk] = self._refine(images_rgb, image_index[chunk], all_boxes[chunk])
        scores = pose_scores(kpts[:, :, 2]).astype(np.float32)
        bounds = np.cumsum([0, *counts])
        return [
            RefinedPoses(kpts[a:b], scores[a:b])
            for a, b in zip(bounds[:-1], bounds[1:], strict=True)
        ]

    def _refine(
        self, images_rgb: list[np.ndarray], image_index: np.ndarray, boxes: np.ndarray
    ) -> np.ndarray:
        if isinstance(self.loaded.config, ZooModel):
            return self._refine_zoo(images_rgb, image_index, boxes)
        cfg = self.loaded.config
        crops, affines = make_refiner_crops(images_rgb, image_index, boxes, cfg, self.device)
        with autocast(self.device, self.precision):
            heatmaps = self.loaded.net(crops).heatmaps.float()
            if self.flip_test:
                flipped = self.loaded.net(torch.flip(crops, dims=[3])).heatmaps.float()
                heatmaps = (heatmaps + flip_heatmaps_back(flipped, FLIP_PAIRS)) / 2.0
        coords_hm, maxvals = decode_heatmaps(heatmaps)
        coords_img = crop_heatmap_to_image(
            _numpy(coords_hm), affines, cfg.input_hw[0] / heatmaps.shape[2]
        )
        out = np.zeros((len(boxes), NUM_KEYPOINTS, 3), dtype=np.float32)
        out[:, :, :2] = coords_img
        out[:, :, 2] = np.clip(_numpy(maxvals), 0.0, 1.0)
        return out

    def _refine_zoo(
        self, images_rgb: list[np.ndarray], image_index: np.ndarray, boxes: np.ndarray
    ) -> np.ndarray:
        """A zoo single-pose network (MoveNet) on square crops: keypoints decoded from its
        heads, the flip test averaging the mirrored pass's unmirrored keypoints."""
        zoo: ZooModel = self.loaded.config
        size = zoo.network.input_size
        crops, affines = cut_crops(
            images_rgb, image_index, boxes, (size, size), ZOO_CROP_PADDING, self.device
        )
        kpts = self._zoo_keypoints(crops)
        if self.flip_test:
            mirrored = self._zoo_keypoints(torch.flip(crops, dims=[3]))[:, FLIP_PERMUTATION]
            mirrored[..., 0] = size - 1 - mirrored[..., 0]
            kpts = (kpts + mirrored) / 2.0
        out = np.zeros((len(boxes), NUM_KEYPOINTS, 3), dtype=np.float32)
        out[:, :, :2] = crop_heatmap_to_image(kpts[..., :2], affines, 1.0)
        out[:, :, 2] = np.clip(kpts[..., 2], 0.0, 1.0)
        return out

    def _zoo_keypoints(self, crops: torch.Tensor) -> np.ndarray:
        """``[N, 17, 3]`` (x, y) in crop pixels and score, from float ``0..255`` crops."""
        zoo: ZooModel = self.loaded.config
        heads = zoo.network.outputs
        with autocast(self.device, self.precision):
            out = self.loaded.net(crops)
        decoded = (
            decode_single_pose(
                out[heads["centre"]].float(),
                out[heads["heatmaps"]].float(),
                out[heads["regress"]].float(),
                out[heads["offsets"]].float(),
                zoo.decode["centre_weight"].to(self.device)[..., 0],
                float(zoo.decode["distance_bias"]),
                zoo.decode["cell_to_normalised"],
            )
            .cpu()
            .numpy()
            .astype(np.float64)
        )
        size = zoo.network.input_size
        kpts = np.zeros(decoded.shape, np.float64)
        kpts[..., :2] = normalised_yx_to_pixels(decoded[..., :2], (size, size))
        kpts[..., 2] = decoded[..., 2]
        return kpts


def _numpy(value: Any) -> np.ndarray:
    return value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
