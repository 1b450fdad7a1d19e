"""Image preprocessing shared by training and inference, so both see identical inputs.

* Stage 1: :func:`letterbox` to a square, then :func:`to_network_input`.
* Refiner: :func:`make_refiner_crops` warps the uint8 image as float ``0..255`` with a bilinear
  ``grid_sample`` (outside the image: black), then normalises like :func:`to_network_input`.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from model.codecs.affine import box_to_affine, warp_crops
from model.codecs.coords import letterbox_scale
from schemas.network_configs import RefinerConfig

# ImageNet statistics of RGB values in [0, 1].
IMAGE_MEAN = (0.485, 0.456, 0.406)
IMAGE_STD = (0.229, 0.224, 0.225)


def to_device_uint8(array: np.ndarray, device: torch.device | str) -> torch.Tensor:
    """A uint8 numpy array as a tensor on ``device``, copied as uint8 (a quarter of float32's
    bytes); to CUDA through pinned memory without blocking, so the copy overlaps other work."""
    array = np.ascontiguousarray(array)
    tensor = torch.from_numpy(array if array.flags.writeable else array.copy())
    if torch.device(device).type == "cuda":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)


def letterbox_batch(
    images_rgb: list[np.ndarray],
    size: int,
    device: torch.device | str,
    resize_on_device: bool | None = None,
) -> tuple[torch.Tensor, np.ndarray]:
    """Letterbox ``[H_i, W_i, 3]`` uint8 images into ``[B, 3, size, size]`` float ``0..255``
    on ``device``, and their scales (as :func:`letterbox`).

    ``resize_on_device`` (default: on CUDA) copies the uint8 images to the device and
    resizes them there (antialiased bilinear, Pillow's filter); otherwise Pillow resizes
    them, which is the faster way on a CPU.
    """
    if resize_on_device is None:
        resize_on_device = torch.device(device).type == "cuda"
    if not resize_on_device:
        boxed = [letterbox(image, size) for image in images_rgb]
        batch = images_to_float_nchw(np.stack([square for square, _ in boxed]), device)
        return batch, np.array([scale for _, scale in boxed], dtype=np.float64)
    batch = torch.zeros((len(images_rgb), 3, size, size), device=device)
    scales = np.zeros(len(images_rgb), dtype=np.float64)
    for i, image in enumerate(images_rgb):
        height, width = image.shape[:2]
        scales[i] = letterbox_scale((height, width), size)
        new_h = min(size, max(1, round(height * scales[i])))
        new_w = min(size, max(1, round(width * scales[i])))
        source = to_device_uint8(image, device).permute(2, 0, 1)[None].float()
        resized = torch.nn.functional.interpolate(
            source, size=(new_h, new_w), mode="bilinear", align_corners=False, antialias=True
        )
        batch[i, :, :new_h, :new_w] = resized[0].round().clamp(0, 255)
    return batch, scales


def letterbox(image_rgb: np.ndarray, size: int) -> tuple[np.ndarray, float]:
    """Scale an image so its longer side is ``size`` and pad right/bottom with zeros.

    Args:
        image_rgb: ``[H, W, 3]`` uint8.
        size: side of the square output.

    Returns:
        ``([size, size, 3] uint8, scale)``; map coordinates with
        ``model.codecs.coords.image_to_letterbox`` / ``letterbox_to_image`` (input coords =
        image coords * ``scale``; resampling shifts content by at most ``0.5 * |1 - scale|``
        input pixels).
    """
    height, width = image_rgb.shape[:2]
    scale = letterbox_scale((height, width), size)
    new_w = min(size, max(1, round(width * scale)))
    new_h = min(size, max(1, round(height * scale)))
    resized = np.asarray(Image.fromarray(image_rgb).resize((new_w, new_h), Image.BILINEAR))
    out = np.zeros((size, size, 3), dtype=np.uint8)
    out[:new_h, :new_w] = resized
    return out, scale


def normalise(images_float255: torch.Tensor) -> torch.Tensor:
    """``[B, 3, H, W]`` RGB float in ``0..255`` -> ImageNet-normalised float32."""
    mean = torch.tensor(IMAGE_MEAN, device=images_float255.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGE_STD, device=images_float255.device).view(1, 3, 1, 1)
    return (images_float255.float() / 255.0 - mean) / std


def images_to_float_nchw(
    images_uint8: np.ndarray | torch.Tensor, device: torch.device | str
) -> torch.Tensor:
    """``[B, H, W, 3]`` uint8 RGB (numpy or torch) -> ``[B, 3, H, W]`` float32 in ``0..255`` on
    ``device`` (the zoo networks normalise inside their graphs)."""
    if isinstance(images_uint8, np.ndarray):
        return to_device_uint8(images_uint8, device).permute(0, 3, 1, 2).float()
    return images_uint8.to(device).permute(0, 3, 1, 2).float()


def to_network_input(
    images_uint8: np.ndarray | torch.Tensor, device: torch.device | str
) -> torch.Tensor:
    """``[B, H, W, 3]`` uint8 RGB (numpy or torch) -> normalised ``[B, 3, H, W]`` float32 on ``device``."""
    return normalise(images_to_float_nchw(images_uint8, device))


def image_to_float_tensor(image_rgb: np.ndarray, device: torch.device | str) -> torch.Tensor:
    """``[H, W, 3]`` uint8 -> ``[3, H, W]`` float32 in ``0..255`` on ``device`` (copied as uint8)."""
    return to_device_uint8(image_rgb, device).permute(2, 0, 1).float()


def warp_normalised_crops(
    images_float255: list[torch.Tensor],
    image_index: np.ndarray,
    affine_img_to_crop: np.ndarray,
    out_hw: tuple[int, int],
) -> torch.Tensor:
    """Warp crops out of ``[3, H_i, W_i]`` float ``0..255`` images and normalise them.

    Returns:
        ``[N, 3, H, W]`` normalised float32.
    """
    return normalise(warp_crops(images_float255, image_index, affine_img_to_crop, out_hw))


def make_refiner_crops(
    images_rgb_uint8: list[np.ndarray],
    image_index: np.ndarray,
    boxes_xyxy: np.ndarray,
    cfg: RefinerConfig,
    device: torch.device | str,
    rotation_deg: np.ndarray | None = None,
) -> tuple[torch.Tensor, np.ndarray]:
    """Refiner inputs for person boxes.

    Args:
        images_rgb_uint8: per-image ``[H_i, W_i, 3]`` uint8.
        image_index: ``[N]`` image of each box.
        boxes_xyxy: ``[N, 4]`` boxes in image pixels.
        cfg: refiner config (``input_hw``, ``box_padding``).
        device: where the crops are made.
        rotation_deg: optional ``[N]`` rotations (see :func:`model.codecs.affine.box_to_affine`).

    Returns:
        ``crops [N, 3, H, W]`` normalised float32 and ``affine_img_to_crop [N, 2, 3]`` float64.
    """
    crops, affines = cut_crops(
        images_rgb_uint8,
        image_index,
        boxes_xyxy,
        cfg.input_hw,
        cfg.box_padding,
        device,
        rotation_deg,
    )
    return normalise(crops), affines


def cut_crops(
    images_rgb_uint8: list[np.ndarray],
    image_index: np.ndarray,
    boxes_xyxy: np.ndarray,
    out_hw: tuple[int, int],
    padding: float,
    device: torch.device | str,
    rotation_deg: np.ndarray | None = None,
) -> tuple[torch.Tensor, np.ndarray]:
    """Crops of person boxes, grown by ``padding`` to the ``out_hw`` aspect ratio, as float
    ``0..255`` ``[N, 3, H, W]``, and their ``[N, 2, 3]`` image→crop affines. Only the images
    that have a box are moved to ``device``."""
    affines = box_to_affine(boxes_xyxy, out_hw, padding=padding, rotation_deg=rotation_deg)
    return crops_by_affines(images_rgb_uint8, image_index, affines, out_hw, device), affines


def crops_by_affines(
    images_rgb_uint8: list[np.ndarray],
    image_index: np.ndarray,
    affines: np.ndarray,
    out_hw: tuple[int, int],
    device: torch.device | str,
) -> torch.Tensor:
    """Float ``0..255`` ``[N, 3, H, W]`` crops cut by ``[N, 2, 3]`` image→crop ``affines``
    (bilinear, zero outside the image). Only the images that have a crop go to ``device``."""
    used = set(np.asarray(image_index).tolist())
    tensors = [
        image_to_float_tensor(img, device) if i in used else torch.zeros((3, 1, 1), device=device)
        for i, img in enumerate(images_rgb_uint8)
    ]
    return warp_crops(tensors, np.asarray(image_index), affines, out_hw)
