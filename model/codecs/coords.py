"""Every coordinate rule of DetPose, once: mapping points and boxes between pixel spaces.

Spaces, from the file to the networks (``docs/coordinates.md`` has the full picture):

* **original**: pixels of the image file as stored (after EXIF rotation);
* **decoded**: the copy the pipeline decodes, shrunk so its long side is at most
  ``decode.max_side``; ``decoded = original * scale`` (``scale`` = decoded / original width);
* **letterbox**: stage 1's square network input, the decoded image scaled by
  ``letterbox_scale`` and padded right and bottom; ``letterbox = decoded * scale``;
* **crop**: a refiner input cut from the decoded image by an image→crop affine
  (``model.codecs.affine.box_to_affine``);
* **heatmap**: network outputs ``stride`` times coarser than their input (letterbox or crop);
* **normalised**: the zoo's (MoveNet's) outputs, ``0`` at an input's left/top edge and ``1``
  at its right/bottom edge, ``(y, x)`` ordered as TensorFlow has them.

Pixel-centre convention: pixel ``i`` has its centre at coordinate ``i`` and covers
``[i - 0.5, i + 0.5)``, in every space. Points are ``(x, y)`` in the last axis; boxes are
``(x1, y1, x2, y2)``. Affines are ``[N, 2, 3]`` float64 matrices mapping ``(x, y, 1)`` of their
source space to their target space.

This module does not import torch (the CPU task workers of ``pipeline/graph/tasks.py`` use it without
torch); functions given tensors work on them with the tensors' own methods.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, overload

import numpy as np
from numpy.typing import ArrayLike

if TYPE_CHECKING:
    import torch


def _is_tensor(value: object) -> bool:
    """Whether ``value`` is a torch tensor, without importing torch."""
    torch_module = sys.modules.get("torch")
    return torch_module is not None and isinstance(value, torch_module.Tensor)


@overload
def rescale_pixel_coords(coords: torch.Tensor, factor: float) -> torch.Tensor: ...
@overload
def rescale_pixel_coords(coords: ArrayLike, factor: float) -> np.ndarray: ...
def rescale_pixel_coords(
    coords: ArrayLike | torch.Tensor, factor: float
) -> np.ndarray | torch.Tensor:
    """The pixel-centre rule: the same points on a grid with ``factor`` times as many pixels.

    A grid ``factor`` times finer covers the same extent, so pixel edges (not centres) line
    up: ``c' + 0.5 = (c + 0.5) * factor``.

    Args:
        coords: ``[..., 2]`` (or any shape) coordinates; a tensor keeps its dtype and device,
            anything else becomes a float64 array.
        factor: new pixels per old pixel (``1 / stride`` to go to a heatmap).

    Returns:
        Same shape: ``(coords + 0.5) * factor - 0.5``.
    """
    if not _is_tensor(coords):
        coords = np.asarray(coords, dtype=np.float64)
    return (coords + 0.5) * factor - 0.5


@overload
def input_to_heatmap(coords_in: torch.Tensor, stride: float) -> torch.Tensor: ...
@overload
def input_to_heatmap(coords_in: ArrayLike, stride: float) -> np.ndarray: ...
def input_to_heatmap(
    coords_in: ArrayLike | torch.Tensor, stride: float
) -> np.ndarray | torch.Tensor:
    """Network-input pixels (letterbox or crop) → pixels of a map ``stride`` times coarser.

    Args:
        coords_in: ``[..., 2]`` ``(x, y)`` in input pixels (tensor: dtype kept; else float64).
        stride: input pixels per map pixel.

    Returns:
        ``[..., 2]`` in map pixels: ``(c + 0.5) / stride - 0.5``.
    """
    return rescale_pixel_coords(coords_in, 1.0 / stride)


@overload
def heatmap_to_input(coords_hm: torch.Tensor, stride: float) -> torch.Tensor: ...
@overload
def heatmap_to_input(coords_hm: ArrayLike, stride: float) -> np.ndarray: ...
def heatmap_to_input(
    coords_hm: ArrayLike | torch.Tensor, stride: float
) -> np.ndarray | torch.Tensor:
    """Inverse of :func:`input_to_heatmap`: map pixels → network-input pixels.

    Args:
        coords_hm: ``[..., 2]`` ``(x, y)`` in map pixels (tensor: dtype kept; else float64).
        stride: input pixels per map pixel.

    Returns:
        ``[..., 2]`` in input pixels: ``(c + 0.5) * stride - 0.5``.
    """
    return rescale_pixel_coords(coords_hm, stride)


def nearest_pixel(coords: ArrayLike) -> np.ndarray:
    """Index of the pixel whose square holds each coordinate: ``floor(c + 0.5)``.

    Args:
        coords: any shape, pixel coordinates.

    Returns:
        Same shape, int64 (a coordinate on a pixel edge goes to the higher pixel).
    """
    return np.floor(np.asarray(coords, dtype=np.float64) + 0.5).astype(np.int64)


def pixels_to_grid(coords: torch.Tensor, size_hw: tuple[int, int]) -> torch.Tensor:
    """Pixel coordinates → ``grid_sample``'s normalised ``[-1, 1]`` (``align_corners=False``).

    With ``align_corners=False``, -1 and 1 are the outer edges of the border pixels, so pixel
    centre ``i`` of ``n`` pixels is ``(2 i + 1) / n - 1``.

    Args:
        coords: ``[..., 2]`` ``(x, y)`` in pixels of the sampled map.
        size_hw: the sampled map's ``(height, width)``.

    Returns:
        ``[..., 2]`` ``(x, y)`` grid coordinates, same dtype and device.
    """
    height, width = size_hw
    grid = coords.clone()
    grid[..., 0] = (2.0 * coords[..., 0] + 1.0) / width - 1.0
    grid[..., 1] = (2.0 * coords[..., 1] + 1.0) / height - 1.0
    return grid


def letterbox_scale(image_hw: tuple[int, int], size: int) -> float:
    """Scale of stage 1's letterbox: the long side of a ``(height, width)`` image becomes ``size``."""
    height, width = image_hw
    return size / max(height, width)


def _resize(coords: ArrayLike, scale: float) -> np.ndarray:
    """Coordinates in an image → in its copy resized by ``scale``, anchored at the top-left.

    Top-left anchored (``c * scale``), not pixel-centre: the copies are made by resampling,
    which this approximates to within ``0.5 * |1 - scale|`` pixels of the copy.
    """
    return np.asarray(coords) * scale


def _undo_resize(coords: ArrayLike, scale: float) -> np.ndarray:
    """Inverse of :func:`_resize`: coordinates in the resized copy → in the source image."""
    return np.asarray(coords) / scale


def image_to_letterbox(coords: ArrayLike, scale: float) -> np.ndarray:
    """Image pixels → letterbox pixels: ``coords * scale`` (content is anchored top-left).

    Args:
        coords: ``[..., 2]`` points or ``[..., 4]`` ``xyxy`` boxes in image pixels.
        scale: from :func:`letterbox_scale`.

    Returns:
        Same shape; a float array keeps its dtype.
    """
    return _resize(coords, scale)


def letterbox_to_image(coords: ArrayLike, scale: float) -> np.ndarray:
    """Inverse of :func:`image_to_letterbox`: letterbox pixels → image pixels (``/ scale``).

    Args:
        coords: ``[..., 2]`` points or ``[..., 4]`` ``xyxy`` boxes in letterbox pixels.
        scale: from :func:`letterbox_scale`.

    Returns:
        Same shape; a float array keeps its dtype.
    """
    return _undo_resize(coords, scale)


def original_to_decoded(coords: ArrayLike, scale: float) -> np.ndarray:
    """Pixels of the original image → pixels of the decoded copy: ``coords * scale``.

    Args:
        coords: ``[..., 2]`` points or ``[..., 4]`` ``xyxy`` boxes in original pixels.
        scale: the decode's ``scale``, decoded width / original width (1 when not shrunk).

    Returns:
        Same shape; a float array keeps its dtype.
    """
    return _resize(coords, scale)


def decoded_to_original(coords: ArrayLike, scale: float) -> np.ndarray:
    """Pixels of the decoded (possibly shrunk) copy → pixels of the original image (``/ scale``).

    Args:
        coords: ``[..., 2]`` points or ``[..., 4]`` ``xyxy`` boxes in decoded pixels.
        scale: the decode's ``scale``, decoded width / original width (1 when not shrunk).

    Returns:
        Same shape; a float array keeps its dtype (float32 stays float32).
    """
    return _undo_resize(coords, scale)


def normalised_yx_to_pixels(coords_yx: ArrayLike, size_hw: tuple[int, int]) -> np.ndarray:
    """Normalised ``(y, x)`` (edges at 0 and 1) → ``(x, y)`` pixels of an ``size_hw`` input.

    An edge-based coordinate ``u`` in pixels lies at ``u - 0.5`` under the pixel-centre
    rule, so ``x = x_norm * width - 0.5``.
    """
    coords = np.asarray(coords_yx, dtype=np.float64)
    height, width = size_hw
    return np.stack([coords[..., 1] * width - 0.5, coords[..., 0] * height - 0.5], axis=-1)


def invert_affine(affine: ArrayLike) -> np.ndarray:
    """Inverse of ``[N, 2, 3]`` affines, same shape, float64."""
    affine = np.asarray(affine, dtype=np.float64)
    linear_inv = np.linalg.inv(affine[:, :, :2])
    offset = -np.einsum("nij,nj->ni", linear_inv, affine[:, :, 2])
    return np.concatenate([linear_inv, offset[:, :, None]], axis=2)


def apply_affine(affine: ArrayLike, points_xy: ArrayLike) -> np.ndarray:
    """Map ``[N, K, 2]`` points with ``[N, 2, 3]`` affines; returns ``[N, K, 2]`` float64."""
    affine = np.asarray(affine, dtype=np.float64)
    pts = np.asarray(points_xy, dtype=np.float64)
    return np.einsum("nij,nkj->nki", affine[:, :, :2], pts) + affine[:, None, :, 2]


def scale_affine(affine: ArrayLike, factor: float) -> np.ndarray:
    """Compose ``[N, 2, 3]`` affines with :func:`rescale_pixel_coords` of their target space.

    Maps an image→crop affine to image→heatmap when the heatmap has ``factor`` times the
    crop's resolution (``1 / stride``). Returns ``[N, 2, 3]`` float64.
    """
    out = np.asarray(affine, dtype=np.float64).copy()
    out[:, :, :2] *= factor
    out[:, :, 2] = rescale_pixel_coords(out[:, :, 2], factor)
    return out


def crop_heatmap_to_image(
    coords_hm: np.ndarray | torch.Tensor, affine_img_to_crop: ArrayLike, stride: float
) -> np.ndarray:
    """Refiner heatmap pixels → pixels of the image the crops were cut from.

    Args:
        coords_hm: ``[N, K, 2]`` ``(x, y)`` in heatmap pixels (array or tensor, any device).
        affine_img_to_crop: ``[N, 2, 3]`` the affines the crops were cut with
            (``model.codecs.affine.box_to_affine``).
        stride: crop pixels per heatmap pixel (e.g. 4).

    Returns:
        ``[N, K, 2]`` float64 image pixels.
    """
    if _is_tensor(coords_hm):
        coords_hm = coords_hm.detach().cpu().numpy()
    coords_hm = np.asarray(coords_hm, dtype=np.float64)
    if len(coords_hm) == 0:
        return np.zeros_like(coords_hm)
    hm_to_img = invert_affine(scale_affine(affine_img_to_crop, 1.0 / stride))
    return apply_affine(hm_to_img, coords_hm)


def tile_windows(image_wh: tuple[int, int], grid: int, overlap: float) -> np.ndarray:
    """Overlapping tiles covering an image: ``grid`` × ``grid`` windows of its aspect ratio.

    A tile spans ``1 / (grid - (grid - 1) * overlap)`` of the image's width (height), and
    neighbours share ``overlap`` of it; origins are whole pixels, so a tile's pixel ``j`` is
    the image's pixel ``origin + j`` (no resampling between the two spaces).

    Args:
        image_wh: image ``(width, height)`` in pixels.
        grid: tiles per side (1: the whole image).
        overlap: fraction of a tile shared with its neighbour, in ``[0, 1)``.

    Returns:
        ``[grid * grid, 4]`` int64 windows ``(x0, y0, x1, y1)``, ``x1``/``y1`` exclusive,
        row by row.
    """
    if grid < 1 or not 0.0 <= overlap < 1.0:
        raise ValueError(
            f"got grid={grid}, overlap={overlap}; expected grid >= 1, 0 <= overlap < 1"
        )

    def spans(length: int) -> list[tuple[int, int]]:
        tile = min(length, max(1, round(length / (grid - (grid - 1) * overlap))))
        starts = np.round(np.linspace(0, length - tile, grid)).astype(np.int64)
        return [(int(s), int(s) + tile) for s in starts]

    width, height = image_wh
    return np.array(
        [(x0, y0, x1, y1) for y0, y1 in spans(height) for x0, x1 in spans(width)], np.int64
    ).reshape(-1, 4)
