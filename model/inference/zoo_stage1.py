"""Stage 1 with the zoo's bottom-up MoveNet: box proposals and grouped coarse poses.

MoveNet MultiPose is itself a two-branch network in the paper's sense: a detection branch
(centre heatmap, box size and offset) proposes people without NMS, and a pose branch gives
each proposal its coarse pose. Its top-K centre peaks become the proposals; Algorithm 1
(``model/filtering``) then filters them exactly as it filters CoarsePoseNet's.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from model.codecs.boxes import clip_boxes
from model.codecs.coords import letterbox_to_image, normalised_yx_to_pixels, tile_windows
from model.codecs.image import letterbox_batch
from model.inference.devices import autocast, resolve_precision
from model.networks.loaded import LoadedModel
from model.stage_data import CoarseProposals
from model.zoo.decode import decode_multi_pose

# decode_multi_pose's head arguments, in order.
MULTIPOSE_HEADS = ("centre", "box_scale", "box_offset", "heatmaps", "regress", "offsets")
# Images decoded together: one on CPU (the K x 17 x H x W weighting is ~30 MB per image and
# gains nothing from batching there), a chunk on CUDA (fewer launches and host syncs).
DECODE_CHUNK = {"cpu": 1, "cuda": 16}
# A box within this fraction of a tile's side of its inner edge is cut by that edge.
EDGE_TOLERANCE = 0.01
# A whole-image pass runs on an image only if it enlarges it at most this much (an image too
# small for every pass gets one whole-image pass at the smallest input).
MAX_WHOLE_UPSCALE = 2.0
# Whole-image proposals scoring at least this count when deciding whether to tile an image.
TILE_DECISION_SCORE = 0.1


@dataclass(frozen=True)
class View:
    """One pass over each image: letterboxed to ``input_size``, whole (``grid`` 1) or as a
    ``grid`` × ``grid`` of tiles overlapping by ``overlap`` (``schemas.spec.Stage1View``),
    those only on images with a person shorter than ``tile_below_height`` of the image."""

    input_size: int
    grid: int = 1
    overlap: float = 0.0
    tile_below_height: float = 1.0

    def windows(self, image_wh: tuple[int, int]) -> np.ndarray:
        """``[T, 4]`` int windows ``(x0, y0, x1, y1)`` of an image this pass runs on; none
        for a tiled pass whose tiles are smaller than the input (it would only upsample),
        nor for a whole-image pass that would enlarge the image more than
        ``MAX_WHOLE_UPSCALE`` times (no detail is added, only cost)."""
        tiles = tile_windows(image_wh, self.grid, self.overlap)
        longest = (tiles[0, 2:] - tiles[0, :2]).max()
        limit = longest if self.grid > 1 else MAX_WHOLE_UPSCALE * longest
        return tiles[:0] if self.input_size > limit else tiles


class ZooCoarsePoseModel:
    """Stage 1 on a batch of images with MoveNet MultiPose: proposals and coarse poses,
    pooled over every view (scales and tiles) of each image."""

    def __init__(
        self,
        loaded: LoadedModel,
        device: torch.device,
        proposals_per_image: int,
        views: Sequence[View],
        min_score: float = 0.0,
        precision: str = "auto",
    ) -> None:
        if not views:
            raise ValueError("[internal] stage 1 needs at least one view")
        self.loaded = loaded
        self.device = device
        self.precision = resolve_precision(device, precision)
        self.top_k = proposals_per_image
        # Proposals scoring below this are dropped by the filter; an instance never scores
        # above its centre, so centres below it are not decoded (they come out all zeros).
        self.min_score = min_score
        # Whole-image passes first: they decide which images the tiled passes run on.
        self.views = tuple(sorted(views, key=lambda view: view.grid > 1))

    @torch.inference_mode()
    def __call__(self, images_rgb: list[np.ndarray]) -> list[CoarseProposals]:
        """Run stage 1 on ``[H_i, W_i, 3]`` uint8 images; one result per image, same order.

        Every view's instances are mapped to image pixels; each image keeps its
        ``proposals_per_image`` best over all views (duplicates are the filter's business).
        """
        pooled: list[list[CoarseProposals]] = [[] for _ in images_rgb]
        for view in self.views:
            owners, windows = [], []
            for i, image in enumerate(images_rgb):
                if view.grid > 1 and not _has_small_person(pooled[i], image, view):
                    continue
                for window in view.windows((image.shape[1], image.shape[0])):
                    owners.append(i)
                    windows.append(window)
            crops = [
                images_rgb[i][y0:y1, x0:x1]
                for i, (x0, y0, x1, y1) in zip(owners, windows, strict=True)
            ]
            found = self._run(crops, view.input_size)
            for i, window, proposals in zip(owners, windows, found, strict=True):
                pooled[i].append(_window_to_image(proposals, window, images_rgb[i].shape))
        # An image too small for every pass still gets one: the whole image, smallest input.
        missing = [i for i, parts in enumerate(pooled) if not parts]
        smallest = min(view.input_size for view in self.views)
        fallback = self._run([images_rgb[i] for i in missing], smallest)
        for i, proposals in zip(missing, fallback, strict=True):
            pooled[i].append(proposals)
        return [self._best(parts) for parts in pooled]

    def _best(self, parts: list[CoarseProposals]) -> CoarseProposals:
        """One image's proposals of every pass (one part per network input), the ``top_k``
        best by score."""
        boxes = np.concatenate([p.boxes_xyxy for p in parts])
        scores = np.concatenate([p.box_scores for p in parts])
        poses = np.concatenate([p.poses_xys for p in parts])
        order = np.argsort(-scores, kind="stable")[: self.top_k]
        best = CoarseProposals.grouped(boxes[order], scores[order], poses[order])
        return dataclasses.replace(best, network_inputs=len(parts))

    def _run(self, crops: list[np.ndarray], size: int) -> list[CoarseProposals]:
        """The network on ``crops`` letterboxed to ``size``: instances in crop pixels."""
        if not crops:
            return []
        batch, scales = letterbox_batch(crops, size, self.device)
        heads = self.loaded.config.network.outputs
        with autocast(self.device, self.precision):
            out = self.loaded.net(batch)
        maps = {key: out[node].float() for key, node in heads.items()}
        chunk = DECODE_CHUNK[self.device.type]
        results = []
        for start in range(0, len(crops), chunk):
            # Chunks of images: the decoding's working set is K x 17 x H x W per image.
            part = slice(start, min(start + chunk, len(crops)))
            decoded = decode_multi_pose(
                *(maps[key][part] for key in MULTIPOSE_HEADS), self.top_k, self.min_score
            )
            keypoints = decoded["keypoints"].cpu().numpy().astype(np.float64)
            boxes_yx = decoded["boxes"].cpu().numpy().astype(np.float64)
            scores = decoded["scores"].cpu().numpy().astype(np.float32)
            for j, i in enumerate(range(part.start, part.stop)):
                kept = scores[j] > 0  # decoded instances, not the all-zero padding
                results.append(
                    _in_crop_pixels(
                        keypoints[j][kept],
                        boxes_yx[j][kept],
                        scores[j][kept],
                        crops[i].shape,
                        scales[i],
                        size,
                    )
                )
        return results


def _in_crop_pixels(
    keypoints: np.ndarray,
    boxes_yx: np.ndarray,
    scores: np.ndarray,
    shape: tuple[int, ...],
    scale: float,
    size: int,
) -> CoarseProposals:
    """Decoded instances (normalised letterbox coordinates) in the pixels of their crop."""
    height, width = shape[:2]
    corners = normalised_yx_to_pixels(boxes_yx.reshape(-1, 2, 2), (size, size))
    boxes = clip_boxes(letterbox_to_image(corners.reshape(-1, 4), scale), (width, height))
    poses = np.zeros(keypoints.shape, np.float32)
    poses[..., :2] = letterbox_to_image(
        normalised_yx_to_pixels(keypoints[..., :2], (size, size)), scale
    )
    poses[..., 2] = keypoints[..., 2]
    return CoarseProposals.grouped(boxes.astype(np.float32), scores, poses)


def _window_to_image(
    found: CoarseProposals, window: np.ndarray, image_shape: tuple[int, ...]
) -> CoarseProposals:
    """Proposals found in ``window`` ``(x0, y0, x1, y1)`` of an image, in its pixels (a
    window's pixel ``j`` is the image's ``x0 + j``: no resampling between them).

    A tile sees whole only the people inside it: proposals cut by an edge of the tile that
    lies inside the image are left to the neighbouring tile (overlapping it) or to a
    whole-image pass. Kept, they were fragments of people, with keypoints guessed at the
    tile's edge, that refined as a second copy of a person.
    """
    image_wh = (image_shape[1], image_shape[0])
    whole = ~_cut_by_inner_edge(found.boxes_xyxy, window, image_wh)
    offset = np.asarray(window[:2], np.float32)
    boxes = clip_boxes(found.boxes_xyxy[whole] + np.tile(offset, 2), image_wh)
    poses = found.poses_xys[whole].copy()
    poses[..., :2] += offset
    return CoarseProposals.grouped(boxes.astype(np.float32), found.box_scores[whole], poses)


def _has_small_person(found: list[CoarseProposals], image: np.ndarray, view: View) -> bool:
    """Whether a tiled ``view`` runs on ``image``: the passes so far (``found``, image
    pixels) found nobody scoring at least ``TILE_DECISION_SCORE``, or somebody shorter than
    ``view.tile_below_height`` of the image."""
    if view.tile_below_height >= 1.0:
        return True
    boxes = np.concatenate(
        [p.boxes_xyxy[p.box_scores >= TILE_DECISION_SCORE] for p in found] + [np.zeros((0, 4))]
    )
    heights = boxes[:, 3] - boxes[:, 1]
    return heights.size == 0 or bool(heights.min() < view.tile_below_height * image.shape[0])


def _cut_by_inner_edge(
    boxes_xyxy: np.ndarray, window: np.ndarray, image_wh: tuple[int, int]
) -> np.ndarray:
    """``[N]`` bool: boxes (window pixels) reaching an edge of ``window`` that lies inside
    the image, i.e. people the tile sees only in part."""
    x0, y0, x1, y1 = (int(v) for v in window)
    width, height = x1 - x0, y1 - y0
    tol_x, tol_y = 1.0 + EDGE_TOLERANCE * width, 1.0 + EDGE_TOLERANCE * height
    b = np.asarray(boxes_xyxy, np.float64).reshape(-1, 4)
    return (
        ((x0 > 0) & (b[:, 0] <= tol_x))
        | ((y0 > 0) & (b[:, 1] <= tol_y))
        | ((x1 < image_wh[0]) & (b[:, 2] >= width - 1 - tol_x))
        | ((y1 < image_wh[1]) & (b[:, 3] >= height - 1 - tol_y))
    )


def inputs_by_size(views: Sequence[View], inputs_per_image: float) -> dict[int, float]:
    """Network inputs per image at each input size, from a job's measured total
    (``counts.stage1_inputs`` per image): one per whole-image view, the rest shared among
    the tiled views by their tiles (exact with one tiled view)."""
    by_size: dict[int, float] = {}
    whole = [view for view in views if view.grid == 1]
    tiled = [view for view in views if view.grid > 1]
    for view in whole:
        by_size[view.input_size] = by_size.get(view.input_size, 0.0) + 1.0
    tiled_inputs = max(0.0, inputs_per_image - len(whole))
    tiles = sum(view.grid**2 for view in tiled)
    for view in tiled:
        share = tiled_inputs * view.grid**2 / tiles
        by_size[view.input_size] = by_size.get(view.input_size, 0.0) + share
    return by_size
