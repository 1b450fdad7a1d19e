"""Data passed between stage 1 (coarse proposals), the filter (Algorithm 1) and stage 3.

All coordinates here are ORIGINAL IMAGE pixels (pixel ``i`` has its centre at ``i``); the
conversion from heatmap pixels happens before a :class:`CoarseProposals` is built.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

import numpy as np

from model.keypoints import NUM_KEYPOINTS, SKELETON
from schemas.output import FILTER_COUNT_FIELDS

NUM_LIMBS = len(SKELETON)


def _check_shape(name: str, array: np.ndarray, expected: tuple[int | None, ...]) -> None:
    """Raise a ``ValueError`` naming ``name`` unless ``array`` has ``expected`` shape (None = any)."""
    ok = array.ndim == len(expected) and all(
        e is None or e == s for e, s in zip(expected, array.shape, strict=True)
    )
    if not ok:
        wanted = "[" + ", ".join("*" if e is None else str(e) for e in expected) + "]"
        raise ValueError(f"got shape {list(array.shape)} for {name}; expected {wanted}")


@dataclass(frozen=True)
class CoarseProposals:
    """One image's stage-1 output, compact enough to ship between processes.

    Attributes:
        boxes_xyxy: ``[P, 4]`` float32 box proposals ``(x1, y1, x2, y2)``, no NMS applied.
        box_scores: ``[P]`` float32 detection scores.
        peaks_xys: ``[17, K, 3]`` float32 keypoint peaks ``(x, y, score)`` per keypoint type;
            score 0 marks a padding slot.
        limb_scores: ``[19, K, K]`` float32 PAF scores: ``[l, i, j]`` scores peak ``i`` of
            keypoint ``SKELETON[l][0]`` against peak ``j`` of ``SKELETON[l][1]``.
        poses_xys: ``[P, 17, 3]`` float32 coarse pose of each proposal, already grouped by a
            bottom-up model (the zoo's MoveNet groups keypoints by their person's centre), or
            ``None`` when the filter groups the peaks itself with the limb scores (DetPoseNet).
            With ``pose_scores``, ``[M, 17, 3]``: a pool of poses not paired with the boxes.
        pose_scores: ``[M]`` float32 score of each pooled pose (its own stage-1 proposal's),
            when the boxes came from elsewhere (:meth:`with_boxes`); ``None``: pose ``p``
            belongs to proposal ``p``.
        network_inputs: the network inputs stage 1 ran on for the image (views and tiles).
    """

    boxes_xyxy: np.ndarray
    box_scores: np.ndarray
    peaks_xys: np.ndarray
    limb_scores: np.ndarray
    poses_xys: np.ndarray | None = None
    pose_scores: np.ndarray | None = None
    network_inputs: int = 1

    def __post_init__(self) -> None:
        _check_shape("CoarseProposals.boxes_xyxy", self.boxes_xyxy, (None, 4))
        num = self.boxes_xyxy.shape[0]
        _check_shape("CoarseProposals.box_scores", self.box_scores, (num,))
        _check_shape("CoarseProposals.peaks_xys", self.peaks_xys, (NUM_KEYPOINTS, None, 3))
        top_k = self.peaks_xys.shape[1]
        _check_shape("CoarseProposals.limb_scores", self.limb_scores, (NUM_LIMBS, top_k, top_k))
        if self.pose_scores is not None:
            if self.poses_xys is None:
                raise ValueError("CoarseProposals.pose_scores needs poses_xys")
            _check_shape("CoarseProposals.poses_xys", self.poses_xys, (None, NUM_KEYPOINTS, 3))
            pooled = self.poses_xys.shape[0]
            _check_shape("CoarseProposals.pose_scores", self.pose_scores, (pooled,))
        elif self.poses_xys is not None:
            _check_shape("CoarseProposals.poses_xys", self.poses_xys, (num, NUM_KEYPOINTS, 3))

    @classmethod
    def grouped(
        cls,
        boxes_xyxy: np.ndarray,
        box_scores: np.ndarray,
        poses_xys: np.ndarray,
        pose_scores: np.ndarray | None = None,
    ) -> CoarseProposals:
        """Proposals of a stage 1 that grouped each proposal's coarse pose itself (no peaks);
        ``pose_scores`` when the poses are a pool not paired with the boxes."""
        empty = cls.empty()
        return cls(
            boxes_xyxy, box_scores, empty.peaks_xys, empty.limb_scores, poses_xys, pose_scores
        )

    def with_boxes(self, boxes_xyxy: np.ndarray, box_scores: np.ndarray) -> CoarseProposals:
        """These coarse poses with another detector's boxes in place of the proposals.

        Peaks and limb scores do not depend on the boxes. Grouped poses become a pool, each
        with its own proposal's score (which still decides whether the filter trusts it):
        the filter pairs them with the new boxes by PoseExtractor's rule (poses inside a
        box), never by their original proposal.

        Args:
            boxes_xyxy: ``[B, 4]`` the other detector's boxes, same pixels as the poses.
            box_scores: ``[B]`` their scores.
        """
        boxes = np.asarray(boxes_xyxy, np.float32).reshape(-1, 4)
        scores = np.asarray(box_scores, np.float32).reshape(-1)
        pose_scores = self.pose_scores
        if self.poses_xys is not None and pose_scores is None:
            pose_scores = self.box_scores
        return CoarseProposals(
            boxes,
            scores,
            self.peaks_xys,
            self.limb_scores,
            self.poses_xys,
            pose_scores,
            self.network_inputs,
        )

    @classmethod
    def empty(cls, top_k: int = 0) -> CoarseProposals:
        """Proposals of an image with nothing detected (``K = top_k`` padding slots)."""
        return cls(
            boxes_xyxy=np.zeros((0, 4), np.float32),
            box_scores=np.zeros((0,), np.float32),
            peaks_xys=np.zeros((NUM_KEYPOINTS, top_k, 3), np.float32),
            limb_scores=np.zeros((NUM_LIMBS, top_k, top_k), np.float32),
        )


@dataclass(frozen=True)
class FilterCounts:
    """Per-image bookkeeping of the filter: the counters of ``schemas.output.FILTER_COUNTERS``.

    Their meanings are declared there, once (and carried into ``JobStats``); the fields here
    must be exactly ``FILTER_COUNT_FIELDS``, in that order, which is checked on import. Every
    proposal ends in exactly one bucket::

        proposals == dropped_low_score + dropped_few_keypoints + dropped_duplicate + accepted

    and persons out == ``accepted + recovered``.
    """

    proposals: int = 0
    dropped_low_score: int = 0
    dropped_few_keypoints: int = 0
    dropped_duplicate: int = 0
    recovered: int = 0
    accepted: int = 0

    def as_dict(self) -> dict[str, int]:
        """The counters as a plain ``{name: int}`` dict (for stats records)."""
        return {k: int(v) for k, v in asdict(self).items()}


if tuple(f.name for f in fields(FilterCounts)) != FILTER_COUNT_FIELDS:
    raise TypeError(
        f"FilterCounts fields {[f.name for f in fields(FilterCounts)]} differ from "
        f"schemas.output.FILTER_COUNT_FIELDS {list(FILTER_COUNT_FIELDS)}"
    )


@dataclass(frozen=True)
class FilteredPersons:
    """The persons of one image that go to refinement, sorted by decreasing score.

    Attributes:
        boxes_xyxy: ``[N, 4]`` float32 boxes in image pixels, clipped to the image.
        box_scores: ``[N]`` float32 scores.
        coarse_kpts_xys: ``[N, 17, 3]`` float32 coarse pose ``(x, y, score)``; zeros where the
            person has no coarse pose (or lacks that keypoint).
        recovered: ``[N]`` bool, True for persons recovered by ``kpt2box``.
        counts: the image's counters.
    """

    boxes_xyxy: np.ndarray
    box_scores: np.ndarray
    coarse_kpts_xys: np.ndarray
    recovered: np.ndarray
    counts: FilterCounts = field(default_factory=FilterCounts)

    def __post_init__(self) -> None:
        _check_shape("FilteredPersons.boxes_xyxy", self.boxes_xyxy, (None, 4))
        num = self.boxes_xyxy.shape[0]
        _check_shape("FilteredPersons.box_scores", self.box_scores, (num,))
        _check_shape(
            "FilteredPersons.coarse_kpts_xys", self.coarse_kpts_xys, (num, NUM_KEYPOINTS, 3)
        )
        _check_shape("FilteredPersons.recovered", self.recovered, (num,))

    def __len__(self) -> int:
        return int(self.boxes_xyxy.shape[0])

    @classmethod
    def empty(cls, counts: FilterCounts | None = None) -> FilteredPersons:
        """No persons (``counts`` defaults to all zeros)."""
        return cls(
            boxes_xyxy=np.zeros((0, 4), np.float32),
            box_scores=np.zeros((0,), np.float32),
            coarse_kpts_xys=np.zeros((0, NUM_KEYPOINTS, 3), np.float32),
            recovered=np.zeros((0,), bool),
            counts=counts if counts is not None else FilterCounts(),
        )
