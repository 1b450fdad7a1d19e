"""The record stage 1 hands the filter, declared in one place.

Each row says its layout in the ``stage1_layout`` column, so the filter reads what stage 1
wrote instead of guessing from which columns exist:

- ``peaks``: DetPoseNet's keypoint peaks and PAF limb scores, grouped by Algorithm 1;
- ``grouped``: a bottom-up network's coarse pose per proposal (pose ``p`` is proposal ``p``'s);
- ``pool``: grouped poses with boxes from ``stage1.boxes``: a pool, each pose with its own
  proposal's score (``CoarseProposals.with_boxes``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from model.keypoints import NUM_KEYPOINTS, SKELETON
from model.stage_data import CoarseProposals
from pipeline.graph.batches import Batch, require_columns

LAYOUT_COLUMN = "stage1_layout"
PEAKS, GROUPED, POOL = "peaks", "grouped", "pool"
_COMMON = ("prop_boxes", "prop_scores", "num_proposals")
_BY_LAYOUT = {
    PEAKS: ("peaks", "limb_scores"),
    GROUPED: ("coarse_poses",),
    POOL: ("coarse_poses", "coarse_pose_scores"),
}
# Every column of the record: the filter drops them once it has read them.
STAGE1_COLUMNS = (
    *_COMMON,
    LAYOUT_COLUMN,
    "peaks",
    "limb_scores",
    "coarse_poses",
    "coarse_pose_scores",
)


@dataclass(frozen=True)
class Stage1Record:
    """How one stage-1 actor writes its rows: fixed shapes, one layout for the whole pool."""

    layout: str
    proposals: int
    peaks: int

    @classmethod
    def of(cls, groups_poses: bool, pooled: bool, proposals: int, peaks: int) -> Stage1Record:
        """The record of a stage 1 that groups poses itself (or not), its boxes replaced."""
        layout = (POOL if pooled else GROUPED) if groups_poses else PEAKS
        return cls(layout, proposals, peaks)

    def empty(self, n: int) -> Batch:
        """Zeroed columns for ``n`` rows."""
        p, k = self.proposals, self.peaks
        shapes = {
            "prop_boxes": ((n, p, 4), np.float32),
            "prop_scores": ((n, p), np.float32),
            "num_proposals": ((n,), np.int32),
            "peaks": ((n, NUM_KEYPOINTS, k, 3), np.float32),
            "limb_scores": ((n, len(SKELETON), k, k), np.float32),
            "coarse_poses": ((n, p, NUM_KEYPOINTS, 3), np.float32),
            "coarse_pose_scores": ((n, p), np.float32),
        }
        columns = {name: np.zeros(*shapes[name]) for name in (*_COMMON, *_BY_LAYOUT[self.layout])}
        columns[LAYOUT_COLUMN] = np.full(n, self.layout)
        return columns

    def put(self, columns: Batch, i: int, result: CoarseProposals) -> None:
        """Write row ``i``'s proposals into ``columns`` (from ``empty``)."""
        k = len(result.box_scores)
        columns["prop_boxes"][i, :k] = result.boxes_xyxy
        columns["prop_scores"][i, :k] = result.box_scores
        columns["num_proposals"][i] = k
        if self.layout == PEAKS:
            columns["peaks"][i], columns["limb_scores"][i] = result.peaks_xys, result.limb_scores
            return
        if result.poses_xys is None:
            raise ValueError(f"[internal] a {self.layout!r} stage 1 returned no grouped poses")
        columns["coarse_poses"][i, : len(result.poses_xys)] = result.poses_xys
        if self.layout == POOL:
            assert result.pose_scores is not None
            columns["coarse_pose_scores"][i, : len(result.pose_scores)] = result.pose_scores


def read_proposals(batch: Batch, i: int) -> CoarseProposals:
    """Row ``i``'s stage-1 proposals, read by the layout the row declares.

    Raises:
        ValueError: an unknown layout, or a column it needs is missing.
    """
    require_columns(batch, (*_COMMON, LAYOUT_COLUMN), "filter")
    layout = str(batch[LAYOUT_COLUMN][i])
    if layout not in _BY_LAYOUT:
        raise ValueError(
            f"[internal] unknown stage-1 layout {layout!r}; expected {sorted(_BY_LAYOUT)}"
        )
    require_columns(batch, _BY_LAYOUT[layout], f"filter ({layout} layout)")
    k = int(batch["num_proposals"][i])
    boxes, scores = batch["prop_boxes"][i, :k], batch["prop_scores"][i, :k]
    if layout == PEAKS:
        return CoarseProposals(boxes, scores, batch["peaks"][i], batch["limb_scores"][i])
    if layout == POOL:
        pool = batch["coarse_pose_scores"][i]
        return CoarseProposals.grouped(boxes, scores, batch["coarse_poses"][i], pool)
    return CoarseProposals.grouped(boxes, scores, batch["coarse_poses"][i][:k])
