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
from model.codecs.image import images_to_float_nchw, letterbox
from model.inference.devices import autocast
from model.inference.weights import LoadedModel
from model.types import CoarseProposals
from model.zoo.decode import decode_multi_pose

# decode_multi_pose's head arguments, in order.
MULTIPOSE_HEADS = ("centre", "box_scale", "box_offset", "heatmaps", "regress", "offsets")


class ZooCoarsePoseModel:
    """Stage 1 on a batch of images with MoveNet MultiPose: proposals and coarse poses."""

    def __init__(
        self,
        loaded: LoadedModel,
        device: torch.device,
        proposals_per_image: int,
        input_size: int | None,
        min_score: float = 0.0,
    ) -> None:
        self.loaded = loaded
        self.device = device
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
        boxed = [letterbox(image, size) for image in images_rgb]
        batch = images_to_float_nchw(np.stack([square for square, _ in boxed]), self.device)
        heads = self.loaded.config.network.outputs
        with autocast(self.device):
            out = self.loaded.net(batch)
        maps = {key: out[node].float() for key, node in heads.items()}
        results = []
        for i, (image, (_, scale)) in enumerate(zip(images_rgb, boxed, strict=True)):
            # One image at a time: the decoding's working set is K x 17 x H x W.
            decoded = decode_multi_pose(
                *(maps[key][i : i + 1] for key in MULTIPOSE_HEADS), self.top_k, self.min_score
            )
            keypoints = decoded["keypoints"][0].cpu().numpy().astype(np.float64)
            boxes_yx = decoded["boxes"][0].cpu().numpy().astype(np.float64)
            scores = decoded["scores"][0].cpu().numpy().astype(np.float32)
            height, width = image.shape[:2]
            corners = normalised_yx_to_pixels(boxes_yx.reshape(-1, 2, 2), (size, size))
            boxes = clip_boxes(letterbox_to_image(corners.reshape(-1, 4), scale), (width, height))
            poses = np.zeros(keypoints.shape, np.float32)
            poses[..., :2] = letterbox_to_image(
                normalised_yx_to_pixels(keypoints[..., :2], (size, size)), scale
            )
            poses[..., 2] = keypoints[..., 2]
            results.append(CoarseProposals.grouped(boxes.astype(np.float32), scores, poses))
        return results
