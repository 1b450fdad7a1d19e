"""The model stages as Ray Data actors: load a network once, then map batches.

Stage 1 adds fixed-shape proposal, peak and limb-score columns; stage 3 refines person
crops batched across the images of a batch and emits the final Arrow rows.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import torch

from model.codecs.boxes import box_areas, xywh_to_xyxy
from model.codecs.coords import original_to_decoded
from model.filtering.dedupe import dedupe_recovered
from model.filtering.filters import oks_nms
from model.inference.devices import resolve_device
from model.inference.refiner import PoseRefinerModel, RefinedPoses
from model.inference.stage1 import CoarsePoseModel
from model.inference.weights import DETPOSENET, LoadedModel, StageKind, load_stage_model
from model.inference.zoo_stage1 import View, ZooCoarsePoseModel
from model.keypoints import NUM_KEYPOINTS, SKELETON
from pipeline.batches import (
    Batch,
    ok_rows,
    per_image_or_isolated,
    require_columns,
    with_internal_errors,
)
from pipeline.external_boxes import ExternalBoxes
from pipeline.rows import annotation_table, person_records
from pipeline.storage import storage_options
from schemas.spec import JobSpec, StageSpec


def load_stage_weights(
    kind: StageKind, spec: JobSpec, device: torch.device, weights_sha256: str | None
) -> LoadedModel:
    """A stage's network, its checkpoint read with the job's storage settings (not the
    environment's) and, given ``weights_sha256``, checked to be the bytes the driver checked."""
    stage: StageSpec = getattr(spec, kind)
    options = storage_options(stage.checkpoint, spec.storage) if stage.checkpoint else {}
    return load_stage_model(
        kind, stage.checkpoint, device, options, weights_sha256, model=stage.model
    )


def row_boxes(boxes: ExternalBoxes, batch: Batch, i: int) -> tuple[np.ndarray, np.ndarray]:
    """Row ``i``'s boxes from ``stage1.boxes`` in decoded-image pixels, and their scores."""
    boxes_xywh, scores = boxes.for_uri(str(batch["uri"][i]))
    return original_to_decoded(xywh_to_xyxy(boxes_xywh), float(batch["scale"][i])), scores


class CoarseStage:
    """Stage 1 on each ok image: adds fixed-shape proposal columns, plus the peak and
    limb-score columns (DetPoseNet) or the grouped coarse poses (zoo MoveNet).

    With ``boxes`` (``stage1.boxes``), each image's boxes from that file replace the
    network's proposals; grouped poses then keep their own proposal's score in
    ``coarse_pose_scores`` (``CoarseProposals.with_boxes``).
    """

    def __init__(
        self,
        spec: JobSpec,
        weights_sha256: str | None = None,
        boxes: ExternalBoxes | None = None,
    ):
        if (spec.stage1.boxes is None) != (boxes is None):
            raise ValueError(
                f"[internal] stage1.boxes is {spec.stage1.boxes!r} but the stage got "
                f"{'no' if boxes is None else 'a'} box index"
            )
        self.boxes = boxes
        device = resolve_device(spec.device)
        loaded = load_stage_weights("stage1", spec, device, weights_sha256)
        self.proposals, self.peaks = spec.proposals_per_image, spec.peaks_per_keypoint
        self.grouped = spec.stage1.model != DETPOSENET
        self.model: CoarsePoseModel | ZooCoarsePoseModel
        if self.grouped:
            views = spec.stage1.resolved_views(loaded.config.network.input_size)
            self.model = ZooCoarsePoseModel(
                loaded,
                device,
                self.proposals,
                [View(v.input_size, v.grid, v.overlap, v.tile_below_height) for v in views],
                spec.filter.box_score_threshold,
                spec.precision,
            )
        else:
            self.model = CoarsePoseModel(
                loaded,
                device,
                self.proposals,
                self.peaks,
                spec.filter.keypoint_score_threshold,
                spec.precision,
            )

    def __call__(self, batch: Batch) -> Batch:
        required = ("status", "image") + (("uri", "scale") if self.boxes else ())
        require_columns(batch, required, "stage 1")
        n, ok = len(batch["status"]), ok_rows(batch)
        columns = {
            "prop_boxes": np.zeros((n, self.proposals, 4), np.float32),
            "prop_scores": np.zeros((n, self.proposals), np.float32),
            "num_proposals": np.zeros(n, np.int32),
            "count_stage1_inputs": np.zeros(n, np.int32),
        }
        if self.grouped:
            columns["coarse_poses"] = np.zeros((n, self.proposals, NUM_KEYPOINTS, 3), np.float32)
            if self.boxes:
                columns["coarse_pose_scores"] = np.zeros((n, self.proposals), np.float32)
        else:
            columns["peaks"] = np.zeros((n, NUM_KEYPOINTS, self.peaks, 3), np.float32)
            columns["limb_scores"] = np.zeros(
                (n, len(SKELETON), self.peaks, self.peaks), np.float32
            )
        results = per_image_or_isolated(self.model, [batch["image"][i] for i in ok])
        failures = {}
        for i, result in zip(ok, results, strict=True):
            if isinstance(result, Exception):
                failures[i] = result
                continue
            if self.boxes:
                result = result.with_boxes(*row_boxes(self.boxes, batch, i))
            k = len(result.box_scores)
            columns["count_stage1_inputs"][i] = result.network_inputs
            columns["prop_boxes"][i, :k] = result.boxes_xyxy
            columns["prop_scores"][i, :k] = result.box_scores
            columns["num_proposals"][i] = k
            if result.poses_xys is not None:
                columns["coarse_poses"][i, : len(result.poses_xys)] = result.poses_xys
                if result.pose_scores is not None:
                    columns["coarse_pose_scores"][i, : len(result.pose_scores)] = result.pose_scores
            else:
                columns["peaks"][i], columns["limb_scores"][i] = (
                    result.peaks_xys,
                    result.limb_scores,
                )
        return with_internal_errors({**batch, **columns}, failures, "stage 1")


class RefineStage:
    """PoseRefinementNet over person crops batched across images; emits final Arrow rows."""

    def __init__(self, spec: JobSpec, max_crops: int, weights_sha256: str | None = None):
        device = resolve_device(spec.device)
        loaded = load_stage_weights("refiner", spec, device, weights_sha256)
        self.model = PoseRefinerModel(
            loaded,
            device,
            spec.flip_test,
            max_crops,
            spec.precision,
            crop_padding=spec.refiner.crop_padding,
            guide=spec.refiner.guide,
            second_crop_padding=spec.refiner.second_crop_padding,
        )
        # The flip test and a second crop each double the refiner's passes per person;
        # stats count forward passes.
        self.passes_per_crop = (2 if spec.flip_test else 1) * (
            2 if spec.refiner.second_crop_padding is not None else 1
        )
        self.dedupe_oks = spec.filter.recovered_dedupe_oks
        self.min_keypoint_score = spec.filter.keypoint_score_threshold
        self.filter_mode = spec.filter.mode
        self.oks_nms = spec.filter.oks_nms

    def __call__(self, batch: Batch) -> pa.Table:
        require_columns(
            batch,
            ("status", "image", "scale", "person_boxes", "person_coarse", "num_persons"),
            "stage 3",
        )
        ok = ok_rows(batch)
        items = [
            (
                batch["image"][i],
                batch["person_boxes"][i, : batch["num_persons"][i]],
                batch["person_coarse"][i, : batch["num_persons"][i]],
            )
            for i in ok
        ]
        refined = per_image_or_isolated(self._refine, items)
        n = len(batch["status"])
        persons: list[list[dict[str, Any]]] = [[] for _ in range(n)]
        runs = np.zeros(n, np.int32)
        removed = np.zeros(n, np.int32)
        # Mode none's OKS-NMS after refinement moves persons from accepted to duplicates.
        duplicates = batch["count_dropped_duplicate"].astype(np.int32).copy()
        accepted = batch["count_accepted"].astype(np.int32).copy()
        failures = {}
        for i, poses in zip(ok, refined, strict=True):
            if isinstance(poses, Exception):
                failures[i] = poses
                continue
            if self._mode(batch, i) == "none":
                keep = self._top_down_keep(batch, i, poses)
                duplicates[i] += len(keep) - int(keep.sum())
                accepted[i] -= len(keep) - int(keep.sum())
            else:
                keep = self._keep(batch, i, poses)
                removed[i] = len(keep) - int(keep.sum())
            persons[i] = person_records(batch, i, poses.kpts_xys, poses.pose_scores, keep)
            runs[i] = len(poses.pose_scores) * self.passes_per_crop
        batch = {**batch, "count_dropped_duplicate": duplicates, "count_accepted": accepted}
        batch = with_internal_errors(batch, failures, "stage 3")
        return annotation_table(batch, persons, runs, removed)

    def _mode(self, batch: Batch, i: int) -> str:
        """Row ``i``'s filter mode (an evaluation's rows carry their own)."""
        return str(batch["filter_mode"][i]) if "filter_mode" in batch else self.filter_mode

    @staticmethod
    def _instance_scores(batch: Batch, i: int, poses: RefinedPoses) -> np.ndarray:
        """Row ``i``'s persons ranked as results are
        (``model.evaluation.results.instance_score``): box × pose score."""
        return batch["person_box_scores"][i, : len(poses.pose_scores)] * poses.pose_scores

    def _top_down_keep(self, batch: Batch, i: int, poses: RefinedPoses) -> np.ndarray:
        """Mode none, the paper's top-down baseline: every proposal was refined, and OKS-NMS
        on the refined poses (``filter.oks_nms``) keeps one person per body."""
        n = len(poses.pose_scores)
        kpts = poses.kpts_xys.astype(np.float64).copy()
        kpts[kpts[..., 2] < self.min_keypoint_score, 2] = 0.0
        kept = oks_nms(
            kpts,
            self._instance_scores(batch, i, poses),
            box_areas(batch["person_boxes"][i, :n]),
            self.oks_nms,
        )
        keep = np.zeros(n, bool)
        keep[kept] = True
        return keep

    def _keep(self, batch: Batch, i: int, poses: RefinedPoses) -> np.ndarray:
        """Row ``i``'s persons to write: all, or without recovered duplicates (dedupe on)."""
        n = len(poses.pose_scores)
        if self.dedupe_oks is None:
            return np.ones(n, bool)
        scores = self._instance_scores(batch, i, poses)
        return dedupe_recovered(
            poses.kpts_xys,
            scores,
            batch["person_recovered"][i, :n],
            self.dedupe_oks,
            self.min_keypoint_score,
        )

    def _refine(self, items: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> list[RefinedPoses]:
        """Crops of all ``(image, boxes, coarse poses)`` items refined together (batched
        across images), each guided by its person's coarse pose."""
        return self.model(
            [image for image, _, _ in items],
            [boxes for _, boxes, _ in items],
            [coarse for _, _, coarse in items],
        )
