"""Settings of the stage between the two networks: coarse-pose filtering or a baseline."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

FilterMode = Literal["coarse", "nms", "oks_nms", "none"]


class FilterSpec(BaseModel):
    """How proposals from stage 1 become persons for stage 3 (paper Algorithm 1 or a baseline)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    mode: FilterMode = Field(
        "coarse",
        description="'coarse': Algorithm 1 (coarse-pose filtering); 'nms': IoU-NMS on boxes; "
        "'oks_nms': NMS by OKS of the coarse poses; 'none': every proposal above the score floor.",
    )
    box_score_threshold: float = Field(
        0.05, ge=0.0, le=1.0, description="Proposals scoring below this are ignored in every mode."
    )
    keypoint_score_threshold: float = Field(
        0.1, ge=0.0, le=1.0, description="A coarse keypoint counts as found at or above this score."
    )
    min_keypoints: int = Field(
        3,
        ge=0,
        le=17,
        description="delta_kpt of Algorithm 1: a proposal whose coarse pose has n_kpt <= this is dropped.",
    )
    duplicate_oks: float = Field(
        0.5,
        gt=0.0,
        le=1.0,
        description="A box whose coarse pose has OKS above this against an accepted pose is a "
        "duplicate. The OKS is symmetric: over the keypoints both poses found, at the larger "
        "pose's scale. Two boxes on one person share one grouped pose (OKS 1); 0.5 was "
        "measured best on the real crowd set (docs/evaluation.md, 'Crowds').",
    )
    inside_fraction: float = Field(
        0.8,
        gt=0.0,
        le=1.0,
        description="PoseExtractor: a coarse pose lies in a box when at least this fraction of its "
        "found keypoints are inside the box (grown by 10% per side); used to pair poses with "
        "boxes and to find a second person inside an accepted box.",
    )
    nms_iou: float = Field(0.5, gt=0.0, le=1.0, description="IoU threshold of the 'nms' baseline.")
    oks_nms: float = Field(
        0.5,
        gt=0.0,
        le=1.0,
        description="OKS threshold of the 'oks_nms' baseline, and of mode 'none''s OKS-NMS on "
        "the refined poses (0.5 measured best for both on the real crowd set).",
    )
    kpt2box_margin: float = Field(
        0.15,
        ge=0.0,
        le=1.0,
        description="kpt2box: relative margin added on every side of a recovered person's keypoint extent.",
    )
    max_persons: int = Field(
        30, ge=1, le=1000, description="At most this many persons per image go to refinement."
    )
    recovered_dedupe_oks: float | None = Field(
        0.8,
        gt=0.0,
        le=1.0,
        description="After refinement, a recovered person whose refined pose has OKS above "
        "this against a detected person's, or a higher-scoring recovered person's, in the same "
        "image is dropped (a person whose keypoint grouping split refines twice to one pose); "
        "counted in recovered_duplicates_removed. None: off. 0.8 removed half the persons "
        "refined twice onto one body on the real crowd set at no cost in AP.",
    )
