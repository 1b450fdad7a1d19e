"""A numbered set of synthetic scenes on disk: PNG images and a COCO person-keypoints file."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

from model.keypoints import KEYPOINT_NAMES, SKELETON
from model.synth.scenes import MAX_IMAGES, SYNTH_LEVELS, Scene, check_scene_args, make_scene

PERSON_CATEGORY_ID = 1
_PNG_COMPRESS_LEVEL = 1  # fast; noise-textured images barely shrink at higher levels


@dataclass(frozen=True)
class SynthSummary:
    """What ``write_synth_dataset`` wrote."""

    images: int
    persons: int  # drawn
    annotated: int  # with a visible silhouette (the file's annotations)
    crowd_index_by_level: dict[str, tuple[int, float]]  # level -> (images, mean crowd index)
    out_of_range: int  # images whose crowd index missed their level's range
    seconds: float

    def line(self) -> str:
        """One-line report."""
        levels = ", ".join(
            f"{name} {mean:.3f} ({count} images)"
            for name, (count, mean) in self.crowd_index_by_level.items()
        )
        missed = (
            f"; {self.out_of_range} images outside their level's range" if self.out_of_range else ""
        )
        return (
            f"{self.images} images, {self.persons} persons ({self.annotated} annotated); "
            f"mean crowd index {levels}{missed}; {self.seconds:.1f} s "
            f"({self.images / max(self.seconds, 1e-9):.0f} images/s)"
        )


def coco_categories() -> list[dict[str, Any]]:
    """COCO's person category with the COCO-17 names and the 1-based skeleton."""
    return [
        {
            "id": PERSON_CATEGORY_ID, "name": "person", "supercategory": "person",
            "keypoints": list(KEYPOINT_NAMES), "skeleton": [[a + 1, b + 1] for a, b in SKELETON],
        }
    ]  # fmt: skip


def scene_annotations(scene: Scene, image_id: int, first_id: int) -> list[dict[str, Any]]:
    """COCO annotations of a scene's persons with a visible silhouette, back to front.

    ``bbox``, ``area`` and ``segmentation`` (RLE, ``counts`` as text) describe the visible
    silhouette; ``num_keypoints`` counts the labelled (``v > 0``) keypoints. A person hidden
    entirely is drawn but has no annotation: nothing of it could be labelled.
    """
    annotations = []
    for person in np.flatnonzero(scene.areas > 0):
        rle = mask_utils.encode(np.asfortranarray(scene.ids == person, dtype=np.uint8))
        kpts = scene.kpts_xyv[person]
        annotations.append({
            "id": first_id + len(annotations), "image_id": image_id,
            "category_id": PERSON_CATEGORY_ID, "iscrowd": 0,
            "bbox": [float(v) for v in mask_utils.toBbox(rle)], "area": float(mask_utils.area(rle)),
            "segmentation": {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")},
            "keypoints": [round(float(v), 2) if i % 3 < 2 else int(v) for i, v in enumerate(kpts.ravel())],
            "num_keypoints": int((kpts[:, 2] > 0).sum()),
        })  # fmt: skip
    return annotations


def check_dataset_args(out_dir: Path, images: int, seed: int, crowd: str, size: int) -> None:
    """Raise ``ValueError`` naming the bad value, before anything is written."""
    if not 1 <= images <= MAX_IMAGES:
        raise ValueError(f"got {images} for images; expected an integer from 1 to {MAX_IMAGES}")
    if seed < 0:
        raise ValueError(f"got {seed} for seed; expected an integer >= 0")
    check_scene_args(crowd, size)
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"{out_dir} is a file; the output must be a directory")


def write_synth_dataset(
    out_dir: Path, images: int, seed: int, crowd: str, size: int
) -> SynthSummary:
    """Write ``out_dir/images/000000.png …`` and ``out_dir/annotations.json``.

    Image ``i`` is ``make_scene(seed, crowd, i, size)``, so the files depend only on the
    arguments and the first ``K`` images of a larger set equal a ``K``-image set.
    """
    out_dir = Path(out_dir)
    check_dataset_args(out_dir, images, seed, crowd, size)
    start = time.perf_counter()
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    entries, annotations = [], []
    persons, out_of_range = 0, 0
    by_level: dict[str, list[float]] = {name: [] for name in SYNTH_LEVELS}
    for index in range(images):
        scene = make_scene(seed, crowd, index, size)
        file_name = f"{index:06d}.png"
        Image.fromarray(scene.image).save(
            out_dir / "images" / file_name, format="PNG", compress_level=_PNG_COMPRESS_LEVEL
        )
        entries.append({
            "id": index + 1, "file_name": file_name, "width": size, "height": size,
            "crowd_index": round(scene.crowd_index, 4), "crowd": scene.level,
        })  # fmt: skip
        annotations += scene_annotations(scene, index + 1, len(annotations) + 1)
        persons += len(scene.kpts_xyv)
        out_of_range += not scene.in_range
        by_level[scene.level].append(scene.crowd_index)
    data = {
        "info": {"description": f"detpose synth --images {images} --seed {seed} --crowd {crowd} --size {size}"},
        "images": entries, "annotations": annotations, "categories": coco_categories(),
    }  # fmt: skip
    (out_dir / "annotations.json").write_text(json.dumps(data, separators=(",", ":")) + "\n")
    return SynthSummary(
        images=images, persons=persons, annotated=len(annotations),
        crowd_index_by_level={k: (len(v), float(np.mean(v))) for k, v in by_level.items() if v},
        out_of_range=out_of_range, seconds=time.perf_counter() - start,
    )  # fmt: skip
