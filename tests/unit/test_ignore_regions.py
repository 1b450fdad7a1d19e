"""Stage-1 ignore regions: crowds and people without keypoints, from COCO JSON to loss weights.

One synthetic 256 x 128 image, letterboxed to the tiny preset's 128 input (scale 0.5, output
32 x 32 cells of 8 image pixels): a red crowd over image pixels x 64..127, y 32..95 (cells
x 8..15, y 4..11), a green box-only person over x 160..223, y 16..79 (cells x 20..27, y 2..9)
and a keypointed person on the left.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as coco_mask

from model.codecs.coords import input_to_heatmap
from model.codecs.image import IMAGE_MEAN, IMAGE_STD
from model.keypoints import NUM_KEYPOINTS
from model.training.augment import AugmentParams, augmentation_affine
from model.training.datasets import CocoImage, Stage1Dataset, load_coco_keypoints
from model.training.ignore_regions import rasterise_ignore_regions
from schemas.network_configs import CoarseNetConfig, coarse_preset
from tests.helpers import REPO_ROOT

WIDTH, HEIGHT = 256, 128
CROWD_XYXY = (64, 32, 128, 96)  # image pixels, exclusive ends
BOX_ONLY_XYXY = (160, 16, 224, 80)
CROWD_CELLS = (slice(4, 12), slice(8, 16))  # (rows, cols) of the 32 x 32 output
BOX_ONLY_CELLS = (slice(2, 10), slice(20, 28))


def _rect_mask(xyxy: tuple[int, int, int, int]) -> np.ndarray:
    mask = np.zeros((HEIGHT, WIDTH), dtype=np.uint8)
    x0, y0, x1, y1 = xyxy
    mask[y0:y1, x0:x1] = 1
    return mask


def _uncompressed_rle(mask: np.ndarray) -> dict:
    """COCO's crowd format: run lengths of the column-major mask, starting with a 0-run."""
    flat = mask.flatten(order="F")
    changes = np.flatnonzero(np.diff(flat)) + 1
    runs = np.diff(np.concatenate([[0], changes, [flat.size]])).tolist()
    return {"size": [HEIGHT, WIDTH], "counts": runs if flat[0] == 0 else [0, *runs]}


def _person(ann_id: int, xyxy: tuple[int, int, int, int], labelled: bool, **extra) -> dict:
    x0, y0, x1, y1 = xyxy
    kpts = np.zeros((NUM_KEYPOINTS, 3))
    if labelled:
        kpts[:, 0] = np.linspace(x0 + 4, x1 - 4, NUM_KEYPOINTS)
        kpts[:, 1] = np.linspace(y0 + 4, y1 - 4, NUM_KEYPOINTS)
        kpts[:, 2] = 2
    return {
        "id": ann_id,
        "image_id": 1,
        "category_id": 1,
        "iscrowd": 0,
        "bbox": [x0, y0, x1 - x0, y1 - y0],
        "keypoints": kpts.flatten().tolist(),
        "num_keypoints": int(labelled) * NUM_KEYPOINTS,
        **extra,
    }


def _write_coco(tmp_path: Path, crowd_segmentation: object, box_only_segmentation: object) -> Path:
    pixels = np.full((HEIGHT, WIDTH, 3), 90, dtype=np.uint8)
    pixels[_rect_mask(CROWD_XYXY) > 0] = (255, 0, 0)
    pixels[_rect_mask(BOX_ONLY_XYXY) > 0] = (0, 255, 0)
    (tmp_path / "images").mkdir(exist_ok=True)
    Image.fromarray(pixels).save(tmp_path / "images" / "a.png")
    x0, y0, x1, y1 = CROWD_XYXY
    data = {
        "images": [{"id": 1, "file_name": "a.png", "width": WIDTH, "height": HEIGHT}],
        "annotations": [
            _person(1, (8, 8, 48, 120), labelled=True),
            {
                "id": 2,
                "image_id": 1,
                "category_id": 1,
                "iscrowd": 1,
                "bbox": [x0, y0, x1 - x0, y1 - y0],
                "segmentation": crowd_segmentation,
                "keypoints": [0] * 3 * NUM_KEYPOINTS,
                "num_keypoints": 0,
            },
            _person(3, BOX_ONLY_XYXY, labelled=False, segmentation=box_only_segmentation),
        ],
    }
    path = tmp_path / "annotations.json"
    path.write_text(json.dumps(data))
    return path


def _records(
    tmp_path: Path, crowd_segmentation: object = None, box_only_seg: object = None
) -> list[CocoImage]:
    if crowd_segmentation is None:
        crowd_segmentation = _uncompressed_rle(_rect_mask(CROWD_XYXY))
    path = _write_coco(tmp_path, crowd_segmentation, [] if box_only_seg is None else box_only_seg)
    return load_coco_keypoints(str(path), str(tmp_path / "images"))


def _tiny(**update: object) -> CoarseNetConfig:
    return coarse_preset("tiny").model_copy(update=update)


def _item(record: CocoImage, params: AugmentParams | None = None, **update: object) -> dict:
    dataset = Stage1Dataset([record], _tiny(**update), augment=params is not None)
    if params is not None:
        dataset._draw_augmentation = lambda: params  # type: ignore[method-assign]
    return dataset[0]


def test_the_record_keeps_the_crowd_and_the_box_only_person_as_ignore_regions(
    tmp_path: Path,
) -> None:
    (record,) = _records(tmp_path)
    assert [r.kind for r in record.ignore_regions] == ["crowd", "unlabelled"]
    assert all(isinstance(r.rle["counts"], bytes) for r in record.ignore_regions)
    # The box-only person stays a detection target; the crowd is no person.
    assert record.boxes_xyxy.tolist() == [[8, 8, 48, 120], list(BOX_ONLY_XYXY)]
    masks = rasterise_ignore_regions(record.ignore_regions, (HEIGHT, WIDTH))
    assert np.array_equal(masks[0], _rect_mask(CROWD_XYXY))
    assert np.array_equal(masks[1], _rect_mask(CROWD_XYXY) | _rect_mask(BOX_ONLY_XYXY))


def test_every_coco_segmentation_format_gives_the_same_region(tmp_path: Path) -> None:
    crowd = _rect_mask(CROWD_XYXY)
    compressed = coco_mask.encode(np.asfortranarray(crowd))
    x0, y0, x1, y1 = CROWD_XYXY
    # Polygon vertices on the pixels' outer edges, as COCO draws them.
    polygon = [[x0, y0, x1, y0, x1, y1, x0, y1]]
    box_polygon = [[160, 16, 224, 16, 224, 80, 160, 80]]
    for crowd_seg, box_seg in (
        ({"size": [HEIGHT, WIDTH], "counts": compressed["counts"].decode()}, box_polygon),
        (polygon, [[1, 2, 3, 4]]),  # a 2-point polygon has no area: the box is used
    ):
        (record,) = _records(tmp_path, crowd_seg, box_seg)
        masks = rasterise_ignore_regions(record.ignore_regions, (HEIGHT, WIDTH))
        assert np.array_equal(masks[0], crowd)
        assert np.array_equal(masks[1], crowd | _rect_mask(BOX_ONLY_XYXY))


def test_malformed_crowd_segmentations_are_refused_with_the_annotation_named(
    tmp_path: Path,
) -> None:
    rle = _uncompressed_rle(_rect_mask(CROWD_XYXY))
    for bad, message in (
        ({**rle, "size": [HEIGHT, WIDTH + 1]}, r"annotation 2: RLE segmentation has size"),
        ({**rle, "counts": rle["counts"][:-1]}, r"annotation 2: RLE run lengths add up to"),
        ("not a mask", r"annotation 2: segmentation must be polygons"),
    ):
        with pytest.raises(ValueError, match=message):
            _records(tmp_path, bad)


def test_the_item_ignores_crowd_and_box_only_cells_and_nothing_else(tmp_path: Path) -> None:
    (record,) = _records(tmp_path)
    item = _item(record)
    kpt_expected = torch.ones(1, 32, 32)
    kpt_expected[(0, *CROWD_CELLS)] = 0.0
    kpt_expected[(0, *BOX_ONLY_CELLS)] = 0.0
    det_expected = torch.ones(1, 32, 32)
    det_expected[(0, *CROWD_CELLS)] = 0.0
    assert torch.equal(item["kpt_weight"], kpt_expected)
    assert torch.equal(item["det_weight"], det_expected)
    # The box-only person is still a detection target, at its centre cell (24, 6).
    assert item["reg_mask"][0, 6, 24] == 1.0 and item["reg_mask"].sum() == 2


def test_without_regions_or_with_the_switch_off_every_cell_trains(tmp_path: Path) -> None:
    (record,) = _records(tmp_path)
    for item in (
        _item(record._replace(ignore_regions=())),
        _item(record, ignore_crowd_and_unlabelled=False),
    ):
        assert torch.equal(item["kpt_weight"], torch.ones(1, 32, 32))
        assert torch.equal(item["det_weight"], torch.ones(1, 32, 32))


def _centroid(cells: torch.Tensor) -> np.ndarray:
    """``(x, y)`` mean of the true cells of ``[h, w]``."""
    rows, cols = torch.nonzero(cells, as_tuple=True)
    return np.array([cols.float().mean().item(), rows.float().mean().item()])


def _colour_cells(image: torch.Tensor, channel: int) -> torch.Tensor:
    """Output cells that are mostly pure red (0) or green (1) in a normalised input image."""
    mean = torch.tensor(IMAGE_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGE_STD).view(3, 1, 1)
    rgb = image * std + mean
    others = [c for c in range(3) if c != channel]
    pure = (rgb[channel] > 0.75) & (rgb[others] < 0.25).all(dim=0)
    return torch.nn.functional.avg_pool2d(pure[None].float(), 4)[0] >= 0.5


@pytest.mark.parametrize(
    "params",
    [
        AugmentParams(scale=1.0, rotation_deg=0.0, flip=True),
        AugmentParams(scale=1.0, rotation_deg=90.0, flip=True),
        AugmentParams(scale=0.8, rotation_deg=-30.0, flip=False),
        AugmentParams(scale=1.1, rotation_deg=20.0, flip=True),
    ],
)
def test_the_masks_move_with_the_image(tmp_path: Path, params: AugmentParams) -> None:
    (record,) = _records(tmp_path)
    item = _item(record, params)
    crowd_cells = item["det_weight"][0] == 0
    box_only_cells = (item["kpt_weight"][0] == 0) & ~crowd_cells
    affine = augmentation_affine(params, (128, 128))
    for cells, xyxy, channel in ((crowd_cells, CROWD_XYXY, 0), (box_only_cells, BOX_ONLY_XYXY, 1)):
        # Region centre: image pixels -> letterbox (x 0.5) -> augmented input -> output cells.
        centre_in = (np.array([xyxy[0] + xyxy[2] - 1, xyxy[1] + xyxy[3] - 1]) / 2) * 0.5
        expected = input_to_heatmap(affine[:, :2] @ centre_in + affine[:, 2], 4)
        assert np.abs(_centroid(cells) - expected).max() < 0.5
        painted = _colour_cells(item["image"], channel)
        overlap = (painted & cells).sum() / (painted | cells).sum()
        assert overlap > 0.8, f"the mask left the image's region (IoU {overlap:.2f})"


def test_configs_stored_before_the_switch_read_it_as_on() -> None:
    stored = torch.load(REPO_ROOT / "model" / "weights" / "stage1_tiny.pt", weights_only=True)
    assert "ignore_crowd_and_unlabelled" not in stored["config"]
    assert CoarseNetConfig.model_validate(
        {k: v for k, v in stored["config"].items() if k != "top_k"}
    ).ignore_crowd_and_unlabelled
