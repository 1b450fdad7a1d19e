"""The model stages as Ray Data actors: load a network once, then map batches.

Each actor receives only its own stage as the driver resolved it (``ResolvedStage``: the
network adapter, checked weights, settings). Stage 1 adds the stage-1 record's columns;
stage 3 refines person crops batched across the images of a batch and emits the final
Arrow rows.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from model.codecs.boxes import box_areas, xywh_to_xyxy
from model.codecs.coords import original_to_decoded
from model.filtering.dedupe import dedupe_recovered
from model.filtering.filters import oks_nms
from model.inference.refiner import RefinedPoses
from model.networks.base import RefinerSettings, Stage1Settings
from model.networks.resolve import ResolvedStage
from pipeline.graph.batches import (
    Batch,
    map_ok_rows,
    require_columns,
    with_internal_errors,
)
from pipeline.graph.rows import annotation_table, person_records
from pipeline.graph.stage1_record import Stage1Record
from pipeline.store.external_boxes import ExternalBoxes
from schemas.filtering import FilterSpec


def row_boxes(boxes: ExternalBoxes, batch: Batch, i: int) -> tuple[np.ndarray, np.ndarray]:
    """Row ``i``'s boxes from ``stage1.boxes`` in decoded-image pixels, and their scores."""
    boxes_xywh, scores = boxes.for_uri(str(batch["uri"][i]))
    return original_to_decoded(xywh_to_xyxy(boxes_xywh), float(batch["scale"][i])), scores


class CoarseStage:
    """Stage 1 on each ok image: adds the stage-1 record's fixed-shape columns
    (``pipeline/graph/stage1_record.py``: proposals, and peaks with limb scores or grouped poses).

    With ``boxes`` (``stage1.boxes``), each image's boxes from that file replace the
    network's proposals; grouped poses then keep their own proposal's score
    (``CoarseProposals.with_boxes``).
    """

    def __init__(self, stage: ResolvedStage, boxes: ExternalBoxes | None = None):
        self.boxes = boxes
        self.model = stage.runner()
        settings = stage.settings
        assert isinstance(settings, Stage1Settings)
        self.record = Stage1Record.of(
            stage.adapter.groups_poses,
            boxes is not None,
            settings.proposals_per_image,
            settings.peaks_per_keypoint,
        )

    def __call__(self, batch: Batch) -> Batch:
        required = ("status", "image") + (("uri", "scale") if self.boxes else ())
        require_columns(batch, required, "stage 1")
        n = len(batch["status"])
        columns = self.record.empty(n)
        columns["count_stage1_inputs"] = np.zeros(n, np.int32)
        done, failures = map_ok_rows(self.model, batch, lambda i: batch["image"][i])
        for i, result in done:
            if self.boxes:
                result = result.with_boxes(*row_boxes(self.boxes, batch, i))
            columns["count_stage1_inputs"][i] = result.network_inputs
            self.record.put(columns, i, result)
        return with_internal_errors({**batch, **columns}, failures, "stage 1")


class RefineStage:
    """The refiner over person crops batched across images; emits final Arrow rows, after
    the filter's post-refinement step (mode none's OKS-NMS, the recovered-person dedupe)."""

    def __init__(self, stage: ResolvedStage, filtering: FilterSpec, max_crops: int):
        self.model = stage.runner(max_crops)
        settings = stage.settings
        assert isinstance(settings, RefinerSettings)
        # The flip test and a second crop each double the refiner's passes per person;
        # stats count forward passes.
        self.passes_per_crop = settings.passes_per_crop
        self.dedupe_oks = filtering.recovered_dedupe_oks
        self.min_keypoint_score = filtering.keypoint_score_threshold
        self.filter_mode = filtering.mode
        self.oks_nms = filtering.oks_nms

    def __call__(self, batch: Batch) -> pa.Table:
        require_columns(
            batch,
            ("status", "image", "scale", "person_boxes", "person_coarse", "num_persons"),
            "stage 3",
        )

        def person_items(i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
            k = batch["num_persons"][i]
            return batch["image"][i], batch["person_boxes"][i, :k], batch["person_coarse"][i, :k]

        refined, failures = map_ok_rows(self._refine, batch, person_items)
        n = len(batch["status"])
        persons: list[list[dict[str, Any]]] = [[] for _ in range(n)]
        runs = np.zeros(n, np.int32)
        removed = np.zeros(n, np.int32)
        # Mode none's OKS-NMS after refinement moves persons from accepted to duplicates.
        duplicates = batch["count_dropped_duplicate"].astype(np.int32).copy()
        accepted = batch["count_accepted"].astype(np.int32).copy()
        for i, poses in refined:
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
