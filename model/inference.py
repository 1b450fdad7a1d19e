"""Batched inference of the two model stages on plain arrays (no Ray).

``CoarsePoseModel`` turns RGB images into compact stage-1 results (box proposals, heatmap
peaks, PAF limb scores) in image pixels; ``PoseRefinerModel`` turns images plus person
boxes into final keypoints. The pipeline's Ray wrappers only unpack and pack columns
around these two callables.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from model.boxes import clip_boxes
from model.checkpoint import (
    checkpoint_sha256,
    load_checkpoint,
    model_from_checkpoint_bytes,
    read_checkpoint_bytes,
)
from model.coarse_net import CoarsePoseNet
from model.decode import decode_heatmaps, flip_heatmaps_back, heatmap_coords_to_image
from model.detection import decode_proposals
from model.image import letterbox, make_refiner_crops, to_network_input
from model.keypoints import FLIP_PAIRS, NUM_KEYPOINTS
from model.peaks import extract_peaks, paf_limb_scores
from model.refine_net import PoseRefinementNet
from model.targets import from_heatmap_coords
from model.types import CoarseProposals
from schemas.model import coarse_preset, refiner_preset

logger = logging.getLogger(__name__)

StageKind = Literal["stage1", "refiner"]
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
BUNDLED_WEIGHTS: dict[str, Path] = {
    "stage1": WEIGHTS_DIR / "stage1_tiny.pt",
    "refiner": WEIGHTS_DIR / "refiner_tiny.pt",
}
# Keypoints scoring below this do not count towards a pose's score (top-down practice).
POSE_SCORE_KEYPOINT_FLOOR = 0.2
RANDOM_INIT_SEED = 0


class DeviceError(RuntimeError):
    """A device that cannot be used here; the message says which and why."""


def resolve_device(name: str) -> torch.device:
    """``'auto'`` → CUDA when available, else CPU; ``'cuda'`` without CUDA is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise DeviceError("device 'cuda' requested but torch sees no CUDA device on this worker")
    if name not in ("cpu", "cuda"):
        raise ValueError(f"got {name!r} for device; expected 'auto', 'cpu' or 'cuda'")
    return torch.device(name)


@dataclass(frozen=True)
class LoadedModel:
    """A network ready for inference and where its weights came from."""

    net: torch.nn.Module
    config: Any
    source: str
    random_init: bool


def weights_source(kind: StageKind, checkpoint: str | None) -> str:
    """Where ``load_stage_model`` will take a stage's weights from, without loading them."""
    if checkpoint:
        return checkpoint
    if BUNDLED_WEIGHTS[kind].exists():
        return f"bundled:{BUNDLED_WEIGHTS[kind].name}"
    return "random-init"


@dataclass(frozen=True)
class StageWeights:
    """A stage's weights as checked before a job starts: where they come from, their hash."""

    source: str  # the checkpoint URI, "bundled:NAME" or "random-init"
    sha256: str | None  # of the checkpoint file; None for random init


def check_stage_weights(
    kind: StageKind, checkpoint: str | None, storage_options: Mapping[str, Any] | None = None
) -> StageWeights:
    """Read and fully load a stage's checkpoint on the CPU once, so that a missing, truncated,
    foreign or wrong-network file fails before any worker starts.

    Raises:
        CheckpointError: naming the file and what is wrong with it.
    """
    source = weights_source(kind, checkpoint)
    if source == "random-init":
        return StageWeights(source, None)
    path = checkpoint or str(BUNDLED_WEIGHTS[kind])
    data = read_checkpoint_bytes(path, storage_options)
    model_from_checkpoint_bytes(data, path, kind)
    return StageWeights(source, checkpoint_sha256(data))


def load_stage_model(
    kind: StageKind,
    checkpoint: str | None,
    device: torch.device,
    storage_options: Mapping[str, Any] | None = None,
    expected_sha256: str | None = None,
) -> LoadedModel:
    """Load a stage's network: the given checkpoint, else the bundled weights, else random init.

    Random initialisation only happens when no checkpoint is given and none is bundled;
    ``random_init`` says so, and callers must report it. ``expected_sha256`` (from
    ``check_stage_weights``) makes sure every worker loads the bytes the job checked.
    """
    source = weights_source(kind, checkpoint)
    if source != "random-init":
        path = checkpoint or str(BUNDLED_WEIGHTS[kind])
        net, config, _record = load_checkpoint(
            path, kind, device, storage_options=storage_options, expected_sha256=expected_sha256
        )
        return LoadedModel(net.to(device).eval(), config, source, random_init=False)
    torch.manual_seed(RANDOM_INIT_SEED)
    if kind == "stage1":
        config = coarse_preset("tiny")
        net: torch.nn.Module = CoarsePoseNet(config)
    else:
        config = refiner_preset("tiny")
        net = PoseRefinementNet(config)
    logger.warning("%s: no checkpoint given and none bundled; using RANDOM weights", kind)
    return LoadedModel(net.to(device).eval(), config, "random-init", random_init=True)


def pose_scores(
    keypoint_scores: np.ndarray, floor: float = POSE_SCORE_KEYPOINT_FLOOR
) -> np.ndarray:
    """Mean keypoint score over keypoints above ``floor`` (0 when none). ``[N, 17]`` → ``[N]``."""
    above = keypoint_scores > floor
    total = np.where(above, keypoint_scores, 0.0).sum(axis=1)
    return np.where(above.any(axis=1), total / np.maximum(above.sum(axis=1), 1), 0.0)


class CoarsePoseModel:
    """Stage 1 on a batch of images: proposals, peaks and limb scores in image pixels."""

    def __init__(
        self,
        loaded: LoadedModel,
        device: torch.device,
        proposals_per_image: int,
        peaks_per_keypoint: int,
        keypoint_threshold: float,
    ) -> None:
        self.loaded = loaded
        self.device = device
        self.top_k = proposals_per_image
        self.peaks_k = peaks_per_keypoint
        self.keypoint_threshold = keypoint_threshold

    @torch.inference_mode()
    def __call__(self, images_rgb: list[np.ndarray]) -> list[CoarseProposals]:
        """Run stage 1 on ``[H_i, W_i, 3]`` uint8 images; one result per image, same order."""
        if not images_rgb:
            return []
        cfg = self.loaded.config
        boxed = [letterbox(image, cfg.input_size) for image in images_rgb]
        batch = np.stack([square for square, _ in boxed])
        scales = np.array([scale for _, scale in boxed], dtype=np.float64)
        with _autocast(self.device):
            out = self.loaded.net(to_network_input(batch, self.device))
        boxes_in, box_scores = decode_proposals(
            out.centre_logits.float(), out.size.float(), out.offset.float(), self.top_k, cfg.stride
        )
        peaks_hm = extract_peaks(
            out.keypoint_heatmaps.float(), self.keypoint_threshold, self.peaks_k
        )
        limb_scores = paf_limb_scores(out.pafs.float(), peaks_hm)
        boxes_in = boxes_in.cpu().numpy().astype(np.float64)
        peaks = peaks_hm.cpu().numpy().astype(np.float64)
        # Heatmap pixels → input pixels here, → image pixels per image below.
        peaks[..., :2] = from_heatmap_coords(peaks[..., :2], cfg.stride)
        results = []
        for i, (image, scale) in enumerate(zip(images_rgb, scales, strict=True)):
            height, width = image.shape[:2]
            boxes = clip_boxes(boxes_in[i] / scale, (width, height))
            img_peaks = peaks[i].copy()
            img_peaks[..., :2] /= scale
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


@dataclass(frozen=True)
class RefinedPoses:
    """Final poses of one image's persons, in that image's pixels."""

    kpts_xys: np.ndarray  # [N, 17, 3] x, y, score
    pose_scores: np.ndarray  # [N]


class PoseRefinerModel:
    """Stage 3 on person crops batched across images."""

    def __init__(
        self, loaded: LoadedModel, device: torch.device, flip_test: bool, max_crops: int = 64
    ) -> None:
        self.loaded = loaded
        self.device = device
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
        cfg = self.loaded.config
        crops, affines = make_refiner_crops(images_rgb, image_index, boxes, cfg, self.device)
        with _autocast(self.device):
            heatmaps = self.loaded.net(crops).heatmaps.float()
            if self.flip_test:
                flipped = self.loaded.net(torch.flip(crops, dims=[3])).heatmaps.float()
                heatmaps = (heatmaps + flip_heatmaps_back(flipped, FLIP_PAIRS)) / 2.0
        coords_hm, maxvals = decode_heatmaps(heatmaps)
        coords_img = heatmap_coords_to_image(
            _numpy(coords_hm), affines, cfg.input_hw[0] / heatmaps.shape[2]
        )
        out = np.zeros((len(boxes), NUM_KEYPOINTS, 3), dtype=np.float32)
        out[:, :, :2] = coords_img
        out[:, :, 2] = np.clip(_numpy(maxvals), 0.0, 1.0)
        return out


def _numpy(value: Any) -> np.ndarray:
    return value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)


def _autocast(device: torch.device) -> Any:
    """Mixed precision on CUDA only; CPU runs in float32."""
    return torch.autocast("cuda", dtype=torch.float16, enabled=device.type == "cuda")
