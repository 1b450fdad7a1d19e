"""Stage 3 on person crops batched across images: the refiner → final keypoints and scores."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, get_args

import numpy as np
import torch

from model.codecs.affine import box_to_affine
from model.codecs.boxes import grow_boxes
from model.codecs.coords import apply_affine, crop_heatmap_to_image, normalised_yx_to_pixels
from model.codecs.heatmaps import decode_heatmaps, flip_heatmaps_back
from model.codecs.image import crops_by_affines, make_refiner_crops
from model.inference.devices import autocast, resolve_precision
from model.keypoints import FLIP_PAIRS, NUM_KEYPOINTS, flip_permutation
from model.networks.loaded import LoadedModel
from model.zoo.decode import decode_single_pose
from model.zoo.weights import ZooModel
from schemas.spec import RefinerGuide

if TYPE_CHECKING:
    from model.networks.base import RefinerSettings

FLIP_PERMUTATION = flip_permutation(NUM_KEYPOINTS, FLIP_PAIRS)
# A zoo crop covers the person box grown to a square times this (docs/evaluation.md, "Crowds": 1.0
# measured best with stage 1's and with ground-truth boxes; MoveNet's own rule is 1.25).
ZOO_CROP_PADDING = 1.0
REFINER_GUIDES: tuple[str, ...] = get_args(RefinerGuide)
# With a guide, keypoints are sought inside the person's box grown by this on every side.
GUIDE_BOX_MARGIN = 0.1
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


class CropRefiner:
    """Stage 3 on person crops batched across images: the chunking, crop passes and scoring
    every refiner shares; a subclass turns the crops of one padding into keypoints (``_pass``)."""

    default_padding = ZOO_CROP_PADDING  # a crop covers the box grown to a square times this

    def __init__(
        self,
        loaded: LoadedModel,
        device: torch.device,
        settings: RefinerSettings,
        max_crops: int = 64,
    ) -> None:
        self.loaded = loaded
        self.device = device
        self.precision = resolve_precision(device, settings.precision)
        self.flip_test = settings.flip_test
        self.max_crops = max_crops
        if settings.guide not in REFINER_GUIDES:
            raise ValueError(
                f"got guide={settings.guide!r}; expected one of {', '.join(REFINER_GUIDES)}"
            )
        self.guide = settings.guide
        padding = self.default_padding if settings.crop_padding is None else settings.crop_padding
        # One crop per padding (a second one is test-time averaging).
        self.crop_paddings = (padding,) + (
            () if settings.second_crop_padding is None else (settings.second_crop_padding,)
        )

    @torch.inference_mode()
    def __call__(
        self,
        images_rgb: list[np.ndarray],
        boxes_xyxy: list[np.ndarray],
        coarse_kpts_xys: list[np.ndarray] | None = None,
    ) -> list[RefinedPoses]:
        """Refine ``boxes_xyxy[i]`` (``[N_i, 4]``) of each image; one result per image.

        ``coarse_kpts_xys[i]``: ``[N_i, 17, 3]`` each person's coarse pose (image pixels,
        score 0 where not found), which says which person of a crowded crop is meant.
        """
        counts = [len(b) for b in boxes_xyxy]
        total = sum(counts)
        kpts = np.zeros((total, NUM_KEYPOINTS, 3), dtype=np.float32)
        if total:
            image_index = np.repeat(np.arange(len(images_rgb)), counts)
            all_boxes = np.concatenate([b for b in boxes_xyxy if len(b)]).astype(np.float64)
            guides = np.zeros((total, NUM_KEYPOINTS, 3), np.float64)
            if coarse_kpts_xys is not None:
                guides = np.concatenate(
                    [
                        np.asarray(c, np.float64).reshape(-1, NUM_KEYPOINTS, 3)
                        for c in coarse_kpts_xys
                    ]
                )
            for start in range(0, total, self.max_crops):
                chunk = slice(start, min(start + self.max_crops, total))
                kpts[chunk] = self._refine(
                    images_rgb, image_index[chunk], all_boxes[chunk], guides[chunk]
                )
        scores = pose_scores(kpts[:, :, 2]).astype(np.float32)
        bounds = np.cumsum([0, *counts])
        return [
            RefinedPoses(kpts[a:b], scores[a:b])
            for a, b in zip(bounds[:-1], bounds[1:], strict=True)
        ]

    def _refine(
        self,
        images_rgb: list[np.ndarray],
        image_index: np.ndarray,
        boxes: np.ndarray,
        guides: np.ndarray,
    ) -> np.ndarray:
        """``[N, 17, 3]`` keypoints (image pixels, score) of one chunk of boxes, ``guides``
        ``[N, 17, 3]`` each person's coarse pose (score 0: not found): one pass per crop
        padding, the passes' keypoints averaged, each coordinate weighted by its score."""
        passes = np.stack(
            [
                self._pass(images_rgb, image_index, boxes, guides, padding)
                for padding in self.crop_paddings
            ]
        )  # [P, N, 17, 3]
        weights = passes[..., 2:] / np.maximum(passes[..., 2:].sum(axis=0), 1e-6)
        out = np.zeros(passes.shape[1:], np.float32)
        out[..., :2] = np.where(
            passes[..., 2:].sum(axis=0) > 0,
            (weights * passes[..., :2]).sum(axis=0),
            passes[..., :2].mean(axis=0),
        )
        out[..., 2] = passes[..., 2].mean(axis=0)
        return out

    @property
    def crop_hw(self) -> tuple[int, int]:
        """``(height, width)`` of the network's crops."""
        raise NotImplementedError

    def _affines(self, boxes: np.ndarray, padding: float) -> np.ndarray:
        """``[N, 2, 3]`` image→crop affines of the boxes grown by ``padding`` (DetPose's crop
        rule, ``box_to_affine``; a network trained with another rule overrides this)."""
        return box_to_affine(boxes, self.crop_hw, padding=padding)

    def _keypoints(
        self,
        crops: torch.Tensor,
        guide_xy: np.ndarray,
        guide_found: np.ndarray,
        box_xy: np.ndarray | None,
    ) -> np.ndarray:
        """``[N, 17, 3]`` (x, y) in crop pixels and score, from float ``0..255`` crops and
        each crop's guide: ``[N, 17, 2]`` keypoints in crop pixels, ``[N, 17]`` which of them
        to seek near, ``[N, 4]`` the box to stay inside (``None``: anywhere)."""
        raise NotImplementedError

    def _pass(
        self,
        images_rgb: list[np.ndarray],
        image_index: np.ndarray,
        boxes: np.ndarray,
        guides: np.ndarray,
        padding: float,
    ) -> np.ndarray:
        """Keypoints ``[N, 17, 3]`` (image pixels, score) from crops of the boxes grown by
        ``padding``, each decode guided by the person's coarse pose (``guide``), the flip
        test averaging the mirrored pass's unmirrored keypoints."""
        width = self.crop_hw[1]
        affines = self._affines(boxes, padding)
        crops = crops_by_affines(images_rgb, image_index, affines, self.crop_hw, self.device)
        guide_xy = apply_affine(affines, guides[..., :2])  # crop pixels
        guide_found = (guides[..., 2] > 0) & (self.guide == "pose")
        box_xy = None
        if self.guide != "off":
            box_xy = apply_affine(affines, grow_boxes(boxes, GUIDE_BOX_MARGIN).reshape(-1, 2, 2))
            box_xy = box_xy.reshape(-1, 4)
        kpts = self._keypoints(crops, guide_xy, guide_found, box_xy)
        if self.flip_test:
            mirrored_guide = guide_xy[:, FLIP_PERMUTATION].copy()
            mirrored_guide[..., 0] = width - 1 - mirrored_guide[..., 0]
            mirrored_box = None
            if box_xy is not None:
                mirrored_box = box_xy.copy()
                mirrored_box[:, [0, 2]] = width - 1 - box_xy[:, [2, 0]]
            mirrored = self._keypoints(
                torch.flip(crops, dims=[3]),
                mirrored_guide,
                guide_found[:, FLIP_PERMUTATION],
                mirrored_box,
            )[:, FLIP_PERMUTATION]
            mirrored[..., 0] = width - 1 - mirrored[..., 0]
            kpts = (kpts + mirrored) / 2.0
        out = np.zeros((len(boxes), NUM_KEYPOINTS, 3), dtype=np.float64)
        out[:, :, :2] = crop_heatmap_to_image(kpts[..., :2], affines, 1.0)
        out[:, :, 2] = np.clip(kpts[..., 2], 0.0, 1.0)
        return out


class HeatmapCropRefiner(CropRefiner):
    """DetPoseNet's refiner: crops its checkpoint was trained on, heatmap argmax."""

    def _refine(
        self,
        images_rgb: list[np.ndarray],
        image_index: np.ndarray,
        boxes: np.ndarray,
        guides: np.ndarray,
    ) -> np.ndarray:
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


class MoveNetCropRefiner(CropRefiner):
    """A MoveNet single-pose network (the zoo's, or its ONNX export) on square crops, each
    decode guided by the person's coarse pose."""

    @property
    def crop_hw(self) -> tuple[int, int]:
        size = self.loaded.config.network.input_size
        return size, size

    def _keypoints(
        self,
        crops: torch.Tensor,
        guide_xy: np.ndarray,
        guide_found: np.ndarray,
        box_xy: np.ndarray | None = None,
    ) -> np.ndarray:
        """``[N, 17, 3]`` (x, y) in crop pixels and score, from float ``0..255`` crops and
        each crop's guide: ``[N, 17, 2]`` keypoints in crop pixels, ``[N, 17]`` found."""
        zoo: ZooModel = self.loaded.config
        heads = zoo.network.outputs
        with autocast(self.device, self.precision):
            out = self.loaded.net(crops)
        size = zoo.network.input_size
        cell_to_normalised = zoo.decode["cell_to_normalised"]
        # Crop pixels -> cells: the inverse of cells -> normalised -> pixels below.
        factors = cell_to_normalised.reshape(2).double().cpu().numpy()[::-1] * size  # (x, y)
        guide_cells_xy = (guide_xy + 0.5) / factors
        decoded = (
            decode_single_pose(
                out[heads["centre"]].float(),
                out[heads["heatmaps"]].float(),
                out[heads["regress"]].float(),
                out[heads["offsets"]].float(),
                zoo.decode["centre_weight"].to(self.device)[..., 0],
                float(zoo.decode["distance_bias"]),
                cell_to_normalised,
                torch.as_tensor(
                    guide_cells_xy[..., ::-1].copy(), dtype=torch.float32, device=self.device
                ),
                torch.as_tensor(guide_found, device=self.device),
                None
                if box_xy is None
                else torch.as_tensor(
                    ((box_xy.reshape(-1, 2, 2) + 0.5) / factors)[..., ::-1].reshape(-1, 4).copy(),
                    dtype=torch.float32,
                    device=self.device,
                ),
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
