"""Stage 1 on a batch of plain images: CoarsePoseNet → compact proposals, peaks, limb scores.

Everything is returned in each image's own pixels; pre- and post-processing live in
``model/codecs`` (coordinate mappings in ``model/codecs/coords.py``).
"""

from __future__ import annotations

import numpy as np
import torch

from model.codecs.boxes import clip_boxes
from model.codecs.coords import heatmap_to_input, letterbox_to_image
from model.codecs.detection import decode_proposals
from model.codecs.image import letterbox_batch, normalise
from model.codecs.peaks import extract_peaks, paf_limb_scores
from model.inference.devices import autocast, resolve_precision
from model.networks.loaded import LoadedModel
from model.stage_data import CoarseProposals


class CoarsePoseModel:
    """Stage 1 on a batch of images: proposals, peaks and limb scores in image pixels."""

    def __init__(
        self,
        loaded: LoadedModel,
        device: torch.device,
        proposals_per_image: int,
        peaks_per_keypoint: int,
        keypoint_threshold: float,
        precision: str = "auto",
    ) -> None:
        self.loaded = loaded
        self.device = device
        self.precision = resolve_precision(device, precision)
        self.top_k = proposals_per_image
        self.peaks_k = peaks_per_keypoint
        self.keypoint_threshold = keypoint_threshold

    @torch.inference_mode()
    def __call__(self, images_rgb: list[np.ndarray]) -> list[CoarseProposals]:
        """Run stage 1 on ``[H_i, W_i, 3]`` uint8 images; one result per image, same order."""
        if not images_rgb:
            return []
        cfg = self.loaded.config
        batch, scales = letterbox_batch(images_rgb, cfg.input_size, self.device)
        with autocast(self.device, self.precision):
            out = self.loaded.net(normalise(batch))
        boxes_in, box_scores = decode_proposals(
            out.centre_logits.float(), out.size.float(), out.offset.float(), self.top_k, cfg.stride
        )
        peaks_hm = extract_peaks(
            out.keypoint_heatmaps.float(), self.keypoint_threshold, self.peaks_k
        )
        limb_scores = paf_limb_scores(out.pafs.float(), peaks_hm)
        boxes_in = boxes_in.cpu().numpy().astype(np.float64)
        peaks = peaks_hm.cpu().numpy().astype(np.float64)
        # Heatmap pixels → letterbox (input) pixels here, → image pixels per image below.
        peaks[..., :2] = heatmap_to_input(peaks[..., :2], cfg.stride)
        results = []
        for i, (image, scale) in enumerate(zip(images_rgb, scales, strict=True)):
            height, width = image.shape[:2]
            boxes = clip_boxes(letterbox_to_image(boxes_in[i], scale), (width, height))
            img_peaks = peaks[i].copy()
            img_peaks[..., :2] = letterbox_to_image(img_peaks[..., :2], scale)
            img_peaks[img_peaks[..., 2] <= 0] = 0.0
            results.append(
                CoarseProposals(
                    boxes_xyxy=boxes.astype(np.float32),
                    box_scores=box_scores[i].cpu().numpy().astype(np.float32),
                    peaks_xys=img_peaks.astype(np.float32),
                    limb_scores=limb_scores[i].cpu().numpy().astype(np.float32),
                )
            )
        return results
