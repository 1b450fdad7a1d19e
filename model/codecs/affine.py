"""Person crops: the image→crop affine of a box, and cutting the crops out of images.

Coordinates follow ``model.codecs.coords`` (pixel ``i`` centred at ``i``; ``[N, 2, 3]`` float64
affines). Mapping points through affines (``apply_affine``, ``invert_affine``, ``scale_affine``)
lives there and is re-exported here for existing callers.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from model.codecs.coords import invert_affine, pixels_to_grid

# Top-down practice: the crop covers the box enlarged by this factor so limbs at its edge fit.
DEFAULT_BOX_PADDING = 1.25


def box_to_affine(
    boxes_xyxy: np.ndarray,
    out_hw: tuple[int, int],
    padding: float = DEFAULT_BOX_PADDING,
    rotation_deg: np.ndarray | None = None,
) -> np.ndarray:
    """Affines that map image pixels into ``out_hw`` crops centred on each box.

    The box is grown to the crop's aspect ratio (never squashed), scaled by ``padding``
    and optionally rotated about its centre (positive degrees turn the content clockwise
    in the crop, i.e. the crop window turns counter-clockwise in the image).

    Args:
        boxes_xyxy: ``[N, 4]`` boxes ``(x1, y1, x2, y2)`` in image pixels.
        out_hw: crop size ``(height, width)``.
        padding: scale applied to the aspect-corrected box.
        rotation_deg: optional ``[N]`` rotations.

    Returns:
        ``[N, 2, 3]`` image→crop affines.
    """
    boxes = np.asarray(boxes_xyxy, dtype=np.float64).reshape(-1, 4)
    out_h, out_w = out_hw
    cx = (boxes[:, 0] + boxes[:, 2]) / 2.0
    cy = (boxes[:, 1] + boxes[:, 3]) / 2.0
    w = np.maximum(boxes[:, 2] - boxes[:, 0], 1.0)
    h = np.maximum(boxes[:, 3] - boxes[:, 1], 1.0)
    aspect = out_w / out_h
    w, h = np.where(w > aspect * h, w, aspect * h), np.where(w > aspect * h, w / aspect, h)
    w, h = w * padding, h * padding
    s = out_w / w  # == out_h / h after the aspect correction
    theta = np.deg2rad(rotation_deg if rotation_deg is not None else np.zeros(len(boxes)))
    cos, sin = np.cos(theta) * s, np.sin(theta) * s
    # crop = R·S·(p - c) + crop_centre, with crop_centre at ((W - 1) / 2, (H - 1) / 2).
    affine = np.zeros((len(boxes), 2, 3))
    affine[:, 0, 0], affine[:, 0, 1] = cos, -sin
    affine[:, 1, 0], affine[:, 1, 1] = sin, cos
    affine[:, 0, 2] = (out_w - 1) / 2.0 - (cos * cx - sin * cy)
    affine[:, 1, 2] = (out_h - 1) / 2.0 - (sin * cx + cos * cy)
    return affine


def warp_crops(
    images: list[torch.Tensor],
    image_index: np.ndarray,
    affine_img_to_crop: np.ndarray,
    out_hw: tuple[int, int],
) -> torch.Tensor:
    """Cut person crops out of images with a batched bilinear ``grid_sample``.

    Args:
        images: per-image ``[C, H_i, W_i]`` float tensors (sizes may differ), all on one device.
        image_index: ``[N]`` which image each crop comes from.
        affine_img_to_crop: ``[N, 2, 3]`` image→crop affines.
        out_hw: crop size ``(height, width)``.

    Returns:
        ``[N, C, H, W]`` crops; outside the image they are zero.
    """
    num = len(image_index)
    out_h, out_w = out_hw
    if num == 0:
        channels = images[0].shape[0] if images else 3
        device = images[0].device if images else torch.device("cpu")
        return torch.zeros((0, channels, out_h, out_w), device=device)
    device, dtype = images[0].device, images[0].dtype
    crop_to_img = torch.as_tensor(
        invert_affine(affine_img_to_crop), dtype=torch.float32, device=device
    )
    ys, xs = torch.meshgrid(
        torch.arange(out_h, device=device, dtype=torch.float32),
        torch.arange(out_w, device=device, dtype=torch.float32),
        indexing="ij",
    )
    homog = torch.stack([xs, ys, torch.ones_like(xs)], dim=-1)  # [H, W, 3]
    src = torch.einsum("nij,hwj->nhwi", crop_to_img, homog)  # [N, H, W, 2] image pixels
    crops = torch.empty((num, images[0].shape[0], out_h, out_w), device=device, dtype=dtype)
    index = torch.as_tensor(np.asarray(image_index), dtype=torch.long)
    for img_id in torch.unique(index).tolist():
        sel = (index == img_id).nonzero(as_tuple=True)[0]
        image = images[img_id]
        height, width = image.shape[-2:]
        grid = pixels_to_grid(src[sel.to(device)], (height, width))
        batch = image[None].expand(len(sel), -1, -1, -1)
        crops[sel.to(device)] = F.grid_sample(
            batch, grid.to(dtype), mode="bilinear", padding_mode="zeros", align_corners=False
        )
    return crops
