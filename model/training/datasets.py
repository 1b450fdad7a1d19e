"""COCO person-keypoints training data for both networks.

Reads any ``person_keypoints`` JSON and an image root, each a local path or an fsspec URI
(``s3://…``, ``memory://…``). Crowd annotations (``iscrowd = 1``) are not persons: they, and
people without labelled keypoints, are kept as regions stage 1 ignores
(:mod:`model.training.ignore_regions`). Preprocessing is the inference preprocessing of
:mod:`model.codecs.image`.
"""

from __future__ import annotations

import io
import json
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any, NamedTuple

import fsspec
import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from model.codecs.affine import box_to_affine
from model.codecs.coords import image_to_letterbox, input_to_heatmap
from model.codecs.detection import encode_detection_targets
from model.codecs.image import (
    image_to_float_tensor,
    letterbox,
    to_network_input,
    warp_normalised_crops,
)
from model.codecs.targets import association_heatmaps, gaussian_heatmaps, paf_targets
from model.keypoints import NUM_KEYPOINTS
from model.training.augment import (
    IDENTITY_AUGMENT,
    AugmentParams,
    augmentation_affine,
    compose_affines,
    mask_keypoints,
    sample_augmentation,
    transform_boxes,
    transform_keypoints,
)
from model.training.ignore_regions import (
    IgnoreKind,
    IgnoreRegion,
    annotation_rle,
    ignore_weights,
)
from schemas.network_configs import CoarseNetConfig, RefinerConfig
from schemas.spec import join_uri, uri_scheme

# Boxes smaller than this (input pixels, either side) after augmentation are not detection targets.
_MIN_BOX_SIDE = 2.0


class CocoImage(NamedTuple):
    """One image's person annotations (image pixels)."""

    image_id: int
    uri: str  # where the image bytes live
    width: int
    height: int
    boxes_xyxy: np.ndarray  # [P, 4] every non-crowd person, with or without keypoints
    kpts_xyv: np.ndarray  # [P, 17, 3]
    # Crowds and persons without labelled keypoints, as compressed RLEs (a few hundred bytes each).
    ignore_regions: tuple[IgnoreRegion, ...] = ()


def load_coco_keypoints(
    annotations_uri: str, images_root: str, storage_options: Mapping[str, Any] | None = None
) -> list[CocoImage]:
    """Parse a COCO person-keypoints JSON into per-image records.

    Non-crowd annotations with keypoints are persons (``boxes_xyxy``, ``kpts_xyv``), including
    those with no labelled keypoint. Crowd annotations (``iscrowd = 1``) become ``crowd``
    ignore regions and persons with no labelled keypoint (every ``v = 0``) also become
    ``unlabelled`` ignore regions: their ``segmentation`` (polygons or RLE), else their box.

    Raises:
        ValueError: the file is not COCO keypoints JSON with 17 keypoints per person, or a
            crowd's or unlabelled person's segmentation is malformed.
    """
    with fsspec.open(annotations_uri, "rb", **dict(storage_options or {})) as f:
        try:
            data = json.load(f)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{annotations_uri}: not valid JSON ({exc})") from exc
    missing = [k for k in ("images", "annotations") if k not in data]
    if missing:
        raise ValueError(f"{annotations_uri}: not COCO JSON, missing keys {missing}")
    by_image: dict[int, list[dict]] = {img["id"]: [] for img in data["images"]}
    crowds_by_image: dict[int, list[dict]] = {img["id"]: [] for img in data["images"]}
    for ann in data["annotations"]:
        crowd = bool(ann.get("iscrowd", 0))
        if not crowd and "keypoints" not in ann:
            continue
        if ann["image_id"] not in by_image:
            raise ValueError(
                f"{annotations_uri}: annotation {ann.get('id')} names unknown image {ann['image_id']}"
            )
        if crowd:
            crowds_by_image[ann["image_id"]].append(ann)
            continue
        if len(ann["keypoints"]) != 3 * NUM_KEYPOINTS:
            raise ValueError(
                f"{annotations_uri}: annotation {ann.get('id')} has {len(ann['keypoints']) // 3} "
                f"keypoints; DetPose trains on the COCO-17 layout"
            )
        by_image[ann["image_id"]].append(ann)
    records = []
    for img in data["images"]:
        anns = by_image[img["id"]]
        boxes = np.array(
            [[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in anns)], dtype=np.float64
        )
        kpts = np.array([a["keypoints"] for a in anns], dtype=np.float64).reshape(
            -1, NUM_KEYPOINTS, 3
        )
        unlabelled = [a for a, k in zip(anns, kpts, strict=True) if not (k[:, 2] > 0).any()]
        regions = _ignore_regions(
            crowds_by_image[img["id"]],
            unlabelled,
            (int(img["height"]), int(img["width"])),
            annotations_uri,
        )
        records.append(
            CocoImage(
                image_id=int(img["id"]),
                uri=_image_uri(images_root, img["file_name"]),
                width=int(img["width"]),
                height=int(img["height"]),
                boxes_xyxy=boxes.reshape(-1, 4),
                kpts_xyv=kpts,
                ignore_regions=regions,
            )
        )
    return records


def _image_uri(images_root: str, file_name: str) -> str:
    """Where an image is: ``file_name`` itself when it is a URI or an absolute path (as in a
    job's exports), else joined onto ``images_root``."""
    if uri_scheme(file_name) or file_name.startswith("/"):
        return file_name
    return join_uri(images_root, file_name)


def _ignore_regions(
    crowds: list[dict], unlabelled: list[dict], image_hw: tuple[int, int], annotations_uri: str
) -> tuple[IgnoreRegion, ...]:
    """The ignore regions of one image's crowd and unlabelled-person annotations."""
    regions = []
    groups: tuple[tuple[IgnoreKind, list[dict]], ...] = (
        ("crowd", crowds),
        ("unlabelled", unlabelled),
    )
    for kind, anns in groups:
        for ann in anns:
            where = f"{annotations_uri}: annotation {ann.get('id')}"
            rle = annotation_rle(ann.get("segmentation"), ann.get("bbox"), image_hw, where)
            if rle is not None:
                regions.append(IgnoreRegion(kind, rle))
    return tuple(regions)


def read_image_rgb(uri: str, storage_options: Mapping[str, Any] | None = None) -> np.ndarray:
    """Decode an image file (local or fsspec URI, opened with ``storage_options``) as
    ``[H, W, 3]`` uint8 RGB.

    EXIF orientation is not applied: COCO annotations refer to the stored pixel grid.
    """
    with fsspec.open(uri, "rb", **dict(storage_options or {})) as f:
        data = f.read()
    with Image.open(io.BytesIO(data)) as img:
        return np.asarray(img.convert("RGB"))


class _ImageCache:
    """Keeps the last ``capacity`` decoded images."""

    def __init__(self, capacity: int, storage_options: Mapping[str, Any] | None = None) -> None:
        self.capacity = capacity
        self.storage_options = dict(storage_options or {})
        self.images: OrderedDict[str, np.ndarray] = OrderedDict()

    def __getstate__(self) -> dict:
        # A copy sent to a loader worker starts empty: each worker fills its own.
        return {
            "capacity": self.capacity,
            "storage_options": self.storage_options,
            "images": OrderedDict(),
        }

    def get(self, uri: str) -> np.ndarray:
        if uri in self.images:
            self.images.move_to_end(uri)
            return self.images[uri]
        image = read_image_rgb(uri, self.storage_options)
        if self.capacity > 0:
            self.images[uri] = image
            if len(self.images) > self.capacity:
                self.images.popitem(last=False)
        return image


class _AugmentedImages(Dataset):
    """Shared state of the training datasets: records, image cache and augmentation draws."""

    def __init__(
        self,
        records: list[CocoImage],
        cfg: CoarseNetConfig | RefinerConfig,
        augment: bool,
        seed: int = 0,
        cache_images: int = 256,
        storage_options: Mapping[str, Any] | None = None,
    ) -> None:
        self.records = records
        self.cfg = cfg
        self.augment = augment
        self.seed = seed
        self.rng = np.random.default_rng(seed)
        self.cache = _ImageCache(cache_images, storage_options)

    def reseed(self, stream: int) -> None:
        """Draw augmentation from a stream of its own, from the dataset seed and ``stream``.

        Each loader worker holds a copy of the dataset and calls this with its worker seed,
        so the copies do not all draw the same augmentation.
        """
        self.rng = np.random.default_rng([self.seed, stream])

    def _draw_augmentation(self) -> AugmentParams:
        """Random scale / rotation / flip when augmenting, else the identity."""
        if not self.augment:
            return IDENTITY_AUGMENT
        cfg = self.cfg
        return sample_augmentation(
            self.rng, cfg.flip_prob, cfg.max_rotation_deg, cfg.rotation_prob, cfg.scale_jitter
        )


class Stage1Dataset(_AugmentedImages):
    """Letterboxed images with CoarsePoseNet targets.

    Items are dicts: ``image [3, S, S]`` normalised; ``heatmaps [17, h, w]``; ``pafs [38, h, w]``;
    ``centre [1, h, w]``, ``size [2, h, w]``, ``offset [2, h, w]``, ``reg_mask [1, h, w]``;
    ``kpt_weight [1, h, w]`` (0 over crowds and people without keypoints: no heatmap or PAF
    loss) and ``det_weight [1, h, w]`` (0 over crowds: no centre negatives), both all ones when
    the image has no such region or ``cfg.ignore_crowd_and_unlabelled`` is off.
    """

    cfg: CoarseNetConfig

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        cfg, rec = self.cfg, self.records[index]
        size, out_hw = cfg.input_size, (cfg.input_size // cfg.stride,) * 2
        boxed, scale = letterbox(self.cache.get(rec.uri), size)
        params = self._draw_augmentation()
        if params == IDENTITY_AUGMENT:
            affine = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
            image = to_network_input(boxed[None], "cpu")[0]
        else:
            affine = augmentation_affine(params, (size, size))
            image = warp_normalised_crops(
                [image_to_float_tensor(boxed, "cpu")],
                np.zeros(1, dtype=int),
                affine[None],
                (size, size),
            )[0]
        kpts_in = rec.kpts_xyv.copy()
        kpts_in[..., :2] = image_to_letterbox(kpts_in[..., :2], scale)
        kpts = transform_keypoints(affine, kpts_in, params.flip, (size, size))
        boxes = transform_boxes(affine, image_to_letterbox(rec.boxes_xyxy, scale))
        boxes = boxes.clip(0.0, size - 1.0)
        keep = ((boxes[:, 2] - boxes[:, 0]) >= _MIN_BOX_SIDE) & (
            (boxes[:, 3] - boxes[:, 1]) >= _MIN_BOX_SIDE
        )
        kpts_hm = input_to_heatmap(kpts[..., :2], cfg.stride)
        weights = kpts[..., 2] > 0
        det = encode_detection_targets(boxes[keep], out_hw, cfg.stride)
        kpt_weight, det_weight = ignore_weights(
            rec.ignore_regions if cfg.ignore_crowd_and_unlabelled else (),
            (rec.height, rec.width),
            compose_affines(affine, np.array([[scale, 0.0, 0.0], [0.0, scale, 0.0]])),
            size,
            cfg.stride,
        )
        return {
            "image": image,
            "heatmaps": gaussian_heatmaps(kpts_hm, weights, out_hw, cfg.heatmap_sigma),
            "pafs": paf_targets(kpts_hm, weights, out_hw, cfg.paf_width),
            **det._asdict(),
            "kpt_weight": kpt_weight,
            "det_weight": det_weight,
        }


class SampleKey(NamedTuple):
    """A sample index tagged with how far training is (``step / total steps``, in [0, 1)).

    The training loop's sampler hands these to datasets that schedule augmentation by the
    training phase (:attr:`RefinerDataset.takes_progress`).
    """

    index: int
    progress: float


def labelled_persons(records: list[CocoImage], min_keypoints: int) -> list[tuple[int, int]]:
    """``(image, person)`` of every person with at least ``min_keypoints`` labelled: the
    samples of a top-down network (one crop each)."""
    return [
        (i, p)
        for i, rec in enumerate(records)
        for p in range(len(rec.kpts_xyv))
        if (rec.kpts_xyv[p, :, 2] > 0).sum() >= min_keypoints
    ]


class RefinerDataset(_AugmentedImages):
    """Person crops with multi-scale refiner targets, one item per annotated person.

    Items are dicts: ``crop [3, H, W]`` normalised; ``weight [M*]`` (a keypoint's: 1 where
    labelled and inside the crop; an association's: 1 where its whole chain is);
    ``heatmaps_s{stride} [M*, H/stride, W/stride]`` for each supervised stride: the 17
    keypoint Gaussians, then (``structure_loss: associations``) the pair and triplet ridges.

    Keypoint masking is a fine-tuning phase: an item looked up by a :class:`SampleKey` is
    masked only when its ``progress`` has reached ``cfg.mask_from``; a plain index counts as
    fully trained (masking on when augmenting).
    """

    takes_progress = True

    def __init__(
        self,
        records: list[CocoImage],
        cfg: RefinerConfig,
        augment: bool,
        seed: int = 0,
        cache_images: int = 256,
        storage_options: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(records, cfg, augment, seed, cache_images, storage_options)
        self.persons = labelled_persons(records, cfg.min_keypoints)

    def __len__(self) -> int:
        return len(self.persons)

    def __getitem__(self, key: int | SampleKey) -> dict[str, torch.Tensor]:
        cfg = self.cfg
        index, progress = key if isinstance(key, SampleKey) else (key, 1.0)
        image_idx, person = self.persons[index]
        rec = self.records[image_idx]
        image = self.cache.get(rec.uri)
        box = rec.boxes_xyxy[person]
        kpts = rec.kpts_xyv[person]
        if self.augment and progress >= cfg.mask_from:
            labelled = rec.kpts_xyv[rec.kpts_xyv[..., 2] > 0][:, :2]
            patch = max(2, round(cfg.mask_patch_frac * max(box[2] - box[0], box[3] - box[1])))
            image, _ = mask_keypoints(
                image,
                kpts,
                labelled,
                patch,
                self.rng,
                cfg.mask_background_prob,
                cfg.mask_duplicate_prob,
            )
        params = self._draw_augmentation()
        affine = box_to_affine(box[None], cfg.input_hw, padding=cfg.box_padding)[0]
        affine = compose_affines(augmentation_affine(params, cfg.input_hw), affine)
        crop = warp_normalised_crops(
            [image_to_float_tensor(image, "cpu")],
            np.zeros(1, dtype=int),
            affine[None],
            cfg.input_hw,
        )[0]
        kpts_crop = transform_keypoints(affine, kpts[None], params.flip, cfg.input_hw)[0]
        weight = (kpts_crop[:, 2] > 0).astype(np.float32)
        associations = cfg.structure_loss == "associations"
        height, width = cfg.input_hw
        weights, item = [torch.from_numpy(weight)], {"crop": crop}
        for stride in cfg.supervision_strides:
            coords = input_to_heatmap(kpts_crop[None, :, :2], stride)
            out_hw = (height // stride, width // stride)
            maps = gaussian_heatmaps(coords, weight[None], out_hw, cfg.heatmap_sigma)
            if associations:
                ridges, chain_weight = association_heatmaps(
                    coords, weight[None], out_hw, cfg.heatmap_sigma
                )
                maps = torch.cat([maps, ridges])
                if len(weights) == 1:
                    weights.append(chain_weight)
            item[f"heatmaps_s{stride}"] = maps
        item["weight"] = torch.cat(weights)
        return item
