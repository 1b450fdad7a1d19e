"""Regions stage-1 training leaves out of its loss: crowds and people without keypoints.

COCO labels a dense group of people as one ``iscrowd = 1`` annotation (an RLE or polygon blob
with no keypoints), and many single people with a box but no keypoints (``num_keypoints = 0``).
Trained as background, both teach CoarsePoseNet that the people there are not people, so, as
in OpenPose's training masks:

* a **crowd** region is left out of the keypoint-heatmap and PAF losses (``kpt_weight``) and out
  of the negative terms of the centre focal loss (``det_weight``); a labelled person's centre
  inside it still counts as a positive;
* an **unlabelled** person's region (their segmentation, else their box) is left out of the
  keypoint-heatmap and PAF losses only: the person stays a detection target.

Records keep each region as one compressed COCO RLE in image pixels (a few hundred bytes, no
full-resolution mask). A training item rasterises them at image resolution, warps them with the
image's own image→input affine, composed with the input→output scaling (bilinear, 2 × 2 samples
per output cell), and averages each cell's samples: an output cell is ignored when at least
half of it lies inside a region.
"""

from __future__ import annotations

from typing import Any, Literal, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from pycocotools import mask as coco_mask

from model.codecs.affine import warp_crops
from model.codecs.coords import scale_affine

IgnoreKind = Literal["crowd", "unlabelled"]

# An output cell is ignored when at least this fraction of it lies inside an ignore region.
_MIN_IGNORED_COVERAGE = 0.5
# Samples per output-cell side when warping the masks (bilinear, so each sample blends four
# source pixels); 2 costs a quarter of warping at full input resolution.
_SAMPLES_PER_CELL_SIDE = 2
# Fewer polygon coordinates than this (3 points) enclose no area; pycocotools would read a
# 4-number polygon as a box.
_MIN_POLYGON_COORDS = 6


class IgnoreRegion(NamedTuple):
    """One region of an image that stage-1 training ignores."""

    kind: IgnoreKind  # "crowd": keypoint, PAF and centre-negative losses; "unlabelled": keypoint and PAF
    rle: dict[str, Any]  # compressed COCO RLE in image pixels: {"size": [H, W], "counts": bytes}


def annotation_rle(
    segmentation: object, box_xywh: object, image_hw: tuple[int, int], where: str
) -> dict[str, Any] | None:
    """One compressed RLE of an annotation: its segmentation, else its box.

    Args:
        segmentation: COCO ``segmentation``: polygons (a list of ``[x, y, x, y, …]`` lists), an
            uncompressed RLE (``counts`` a list of run lengths) or a compressed one (``counts`` a
            string); ``None`` or empty: use the box.
        box_xywh: COCO ``bbox`` ``[x, y, w, h]`` in image pixels, or ``None``.
        image_hw: the image's ``(height, width)``.
        where: names the annotation in error messages.

    Returns:
        ``{"size": [H, W], "counts": bytes}``, or ``None`` when neither covers any pixel.

    Raises:
        ValueError: a segmentation that is none of the COCO formats, or an RLE of another size.
    """
    height, width = image_hw
    if isinstance(segmentation, dict):
        if "counts" not in segmentation or "size" not in segmentation:
            raise ValueError(f"{where}: RLE segmentation needs 'counts' and 'size'")
        if list(segmentation["size"]) != [height, width]:
            raise ValueError(
                f"{where}: RLE segmentation has size {list(segmentation['size'])}; "
                f"expected the image's [height, width] = [{height}, {width}]"
            )
        counts = segmentation["counts"]
        if isinstance(counts, list):
            # pycocotools does not check the total and can hang on a wrong one.
            if sum(counts) != height * width:
                raise ValueError(
                    f"{where}: RLE run lengths add up to {sum(counts)}; expected "
                    f"height * width = {height * width}"
                )
            rle = coco_mask.frPyObjects(segmentation, height, width)
        elif isinstance(counts, str | bytes):
            rle = {
                "size": [height, width],
                "counts": counts.encode() if isinstance(counts, str) else counts,
            }
        else:
            raise ValueError(f"{where}: RLE counts must be a list or a string")
    elif isinstance(segmentation, list) and segmentation:
        if not all(isinstance(p, list) for p in segmentation):
            raise ValueError(f"{where}: polygon segmentation must be a list of coordinate lists")
        polygons = [p for p in segmentation if len(p) >= _MIN_POLYGON_COORDS]
        if not polygons:
            return _box_rle(box_xywh, image_hw)
        rle = coco_mask.merge(coco_mask.frPyObjects(polygons, height, width))
    elif segmentation is None or segmentation == []:
        return _box_rle(box_xywh, image_hw)
    else:
        raise ValueError(
            f"{where}: segmentation must be polygons (a list of lists) or an RLE dict, "
            f"got {type(segmentation).__name__}"
        )
    return rle if coco_mask.area(rle) > 0 else None


def _box_rle(box_xywh: object, image_hw: tuple[int, int]) -> dict[str, Any] | None:
    """Compressed RLE of a COCO ``[x, y, w, h]`` box; ``None`` for no box or no area."""
    if not isinstance(box_xywh, list | tuple) or len(box_xywh) != 4:
        return None
    if box_xywh[2] <= 0 or box_xywh[3] <= 0:
        return None
    height, width = image_hw
    rle = coco_mask.frPyObjects(np.asarray([box_xywh], dtype=np.float64), height, width)[0]
    return rle if coco_mask.area(rle) > 0 else None


def rasterise_ignore_regions(
    regions: tuple[IgnoreRegion, ...] | list[IgnoreRegion], image_hw: tuple[int, int]
) -> np.ndarray:
    """Ignore masks in image pixels.

    Returns:
        ``[2, H, W]`` uint8, 1 = ignored: channel 0 the detection mask (crowds), channel 1 the
        keypoint mask (crowds and unlabelled people).
    """
    height, width = image_hw
    masks = np.zeros((2, height, width), dtype=np.uint8)
    crowd = [r.rle for r in regions if r.kind == "crowd"]
    if crowd:
        masks[0] = coco_mask.decode(coco_mask.merge(crowd))
    if regions:
        masks[1] = coco_mask.decode(coco_mask.merge([r.rle for r in regions]))
    return masks


def ignore_weights(
    regions: tuple[IgnoreRegion, ...] | list[IgnoreRegion],
    image_hw: tuple[int, int],
    affine_img_to_input: np.ndarray,
    input_size: int,
    stride: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-cell loss weights of a stage-1 item from its ignore regions.

    Args:
        regions: the image's regions (empty: all-ones maps, nothing rasterised).
        image_hw: the image's ``(height, width)``.
        affine_img_to_input: ``[2, 3]`` image→network-input affine (letterbox and augmentation),
            the one the image and its keypoints went through.
        input_size: side of the square network input.
        stride: input pixels per output cell.

    Returns:
        ``kpt_weight [1, h, w]`` and ``det_weight [1, h, w]`` float32, 1 = train, 0 = ignore,
        ``h = w = input_size // stride``.
    """
    out = input_size // stride
    if not regions:
        return torch.ones((1, out, out)), torch.ones((1, out, out))
    masks = torch.from_numpy(rasterise_ignore_regions(regions, image_hw)).float()
    samples = out * _SAMPLES_PER_CELL_SIDE
    affine_img_to_samples = scale_affine(
        np.asarray(affine_img_to_input)[None], samples / input_size
    )
    warped = warp_crops(
        [masks], np.zeros(1, dtype=int), affine_img_to_samples, (samples, samples)
    )  # [1, 2, h * n, w * n]
    coverage = F.avg_pool2d(warped, _SAMPLES_PER_CELL_SIDE)[0]  # [2, h, w]
    keep = (coverage < _MIN_IGNORED_COVERAGE).float()
    return keep[1:2], keep[0:1]
