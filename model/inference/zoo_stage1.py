"""Stage 1 with the zoo's bottom-up MoveNet: box proposals and grouped coarse poses.

MoveNet MultiPose is itself a two-branch network in the paper's sense: a detection branch
(centre heatmap, box size and offset) proposes people without NMS, and a pose branch gives
each proposal its coarse pose. Its top-K centre peaks become the proposals; Algorithm 1
(``model/filtering``) then filters them exactly as it filters CoarsePoseNet's.
"""

from __future__ import annotations

import numpy as np
import torch

from model.codecs.boxes import clip_boxes
from model.codecs.coords import letterbox_to_image, normalised_yx_to_pixels
from model.codecs.image import letterbox_batch
from model.inference.devices import autocast, resolve_precision
from model.inference.weights import LoadedModel
from model.types import CoarseProposals
from model.zoo.decode import decode_multi_pose

# decode_multi_pose's head arguments, in order.
MULTIPOSE_HEADS = ("centre", "box_scale", "box_offset", "heatmaps", "regress", "offsets")
# Images decoded together: one on CPU (the K x 17 x H x W weighting is ~30 MB per image and
# gains nothing from batching there), a chunk on CUDA (fewer launches and host syncs).
DECODE_CHUNK = {"cpu": 1, "cuda": 16}


class ZooCoarsePoseModel:
    """Stage 1 on a batch of images with MoveNet MultiPose: proposals and coarse poses."""

    def __init__(
        self,
        loaded: LoadedModel,
        device: torch.device,
        proposals_per_image: int,
        input_size: int | None,
        min_score: float = 0.0,
        precision: str = "auto",
    ) -> None:
        self.loaded = loaded
        self.device = device
        self.precision = resolve_precision(device, precision)
        self.top_k = proposals_per_image
        # Proposals scoring below this are dropped by the filter; an instance never scores
        # above its centre, so centres below it are not decoded (they come out all zeros).
        self.min_score = min_score
        self.input_size = input_size or loaded.config.network.input_size

    @torch.inference_mode()
    def __call__(self, images_rgb: list[np.ndarray]) -> list[CoarseProposals]:
        """Run stage 1 on ``[H_i, W_i, 3]`` uint8 images; one result per image, same order."""
        if not images_rgb:
            return []
        size = self.input_size
        batch, scales = letterbox_batch(images_rgb, size, self.device)
        heads = self.loaded.config.network.outputs
        with autocast(self.device, self.precision):
            out = self.loaded.net(batch)
        maps = {key: out[node].float() for key, node in heads.items()}
        chunk = DECODE_CHUNK[self.device.type]
        results = []
        for start in range(0, len(images_rgb), chunk):
            # Chunks of images: the decoding's working set is K x 17 x H x W per image.
            part = slice(start, min(start + chunk, len(images_rgb)))
            decoded = decode_multi_pose(
                *(maps[key][part] for key in MULTIPOSE_HEADS), self.top_k, self.min_score
            )
            keypoints = decoded["keypoints"].cpu().numpy().astype(np.float64)
            boxes_yx = decoded["boxes"].cpu().numpy().astype(np.float64)
            scores = decoded["scores"].cpu().numpy().astype(np.float32)
            for j, i in enumerate(range(part.start, part.stop)):
                results.append(
                    self._in_image_pixels(
                        keypoints[j], boxes_yx[j], scores[j], images_rgb[i].shape, scales[i]
                    )
                )
        return results

    def _in_image_pixels(
        self,
        keypoints: np.ndarray,
        boxes_yx: np.ndarray,
        scores: np.ndarray,
        shape: tuple[int, ...],
        scale: float,
    ) -> CoarseProposals:
        """One image's decoded instances (normalised letterbox coordinates) in its pixels."""
        size = self.input_size
        height, width = shape[:2]
        corners = normalised_yx_to_pixels(boxes_yx.reshape(-1, 2, 2), (size, size))
        boxes = clip_boxes(letterbox_to_image(corners.reshape(-1, 4), scale), (width, height))
        poses = np.zeros(keypoints.shape, np.float32)
        poses[..., :2] = letterbox_to_image(
            normalised_yx_to_pixels(keypoints[..., :2], (size, size)), scale
        )
        poses[..., 2] = keypoints[..., 2]
        return CoarseProposals.grouped(boxes.astype(np.float32), scores, poses)
