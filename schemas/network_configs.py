"""Configurations of the two DetPoseNet networks (stage 1 and the refiner) and their presets.

Each config holds the architecture, the target encoding and the training settings, so a
checkpoint that stores its config can rebuild, train on and decode with the same numbers.
Presets: ``tiny`` trains on 2 CPU cores in minutes. ``coco-recipe`` is DetPose's recipe for
COCO at the usual hourglass scale: its optimiser, learning rate, steps and batch sizes (Adam
2.5e-4, 140k steps, batch 16 / 32) are chosen here, not taken from the paper, which names only
the refinement crops of 256×256 and 384×384 (§IV, presets ``coco-recipe-256x256`` and
``coco-recipe-384x384``; ``coco-recipe`` itself uses the usual top-down 256×192).
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

PresetName = Literal["tiny", "coco-recipe"]
RefinerPresetName = Literal["tiny", "coco-recipe", "coco-recipe-256x256", "coco-recipe-384x384"]
MoveNetPresetName = Literal["fine-tune"]
# Every preset `detpose train --config` takes; which apply depends on the network trained.
TrainPresetName = Literal[RefinerPresetName, MoveNetPresetName]
# The refiner's multi-scale regression (MSR, paper §III-C2): 'multiscale' regresses heatmaps at
# every supervised scale, each matched to its ground truth (the paper); 'final' regresses the
# final scale only (DetPose before 2026-11-26); 'off' has no MSR (the last stack's output).
MsrMode = Literal["multiscale", "final", "off"]
# The refiner's loss per scale (paper eq. 2): 'associations' adds heatmap channels for adjacent
# keypoints (M* > M) and elbow/knee triplets (the paper); 'neighbours' adds the neighbouring
# keypoints' own errors (DetPose before 2026-11-26); 'keypoints' is the plain per-keypoint L2.
StructureLoss = Literal["associations", "neighbours", "keypoints"]

# Heatmaps, PAFs and detection maps all live at 1/4 of the network input, as in the hourglass.
HEATMAP_STRIDE = 4


class _TrainingFields(BaseModel):
    """Augmentation and optimiser settings shared by both networks."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # Fields that shape the network or the meaning of its outputs. A checkpoint resumes under a
    # config that differs from its own only outside these (a new training phase, e.g. keypoint
    # masking as fine-tuning); the subclasses name theirs.
    ARCHITECTURE_FIELDS: ClassVar[frozenset[str]] = frozenset()

    flip_prob: float = Field(0.5, ge=0.0, le=1.0, description="Probability of a horizontal flip.")
    max_rotation_deg: float = Field(
        30.0, ge=0.0, le=180.0, description="Rotations are drawn uniformly in +-this many degrees."
    )
    rotation_prob: float = Field(
        0.6, ge=0.0, le=1.0, description="Probability that a sample is rotated at all."
    )
    scale_jitter: float = Field(
        0.25,
        ge=0.0,
        lt=1.0,
        description="Zoom factors are drawn uniformly in [1 - this, 1 + this].",
    )
    learning_rate: float = Field(1e-3, gt=0.0, le=1.0, description="The optimiser's learning rate.")
    optimizer: Literal["adam", "sgd"] = Field(
        "adam",
        description="'adam' (the default); 'sgd' (plain, no momentum): each step is the "
        "learning rate times the gradient, which makes data-parallel steps comparable exactly.",
    )
    freeze_batchnorm: bool = Field(
        False,
        description="Keep every BatchNorm layer in inference mode (its running statistics, not "
        "the batch's): for fine-tuning on small batches, and for data-parallel training on "
        "CPUs, where SyncBatchNorm does not run and each worker would normalise by its own "
        "shard of the batch.",
    )
    lr_drop_at: float = Field(
        0.8,
        gt=0.0,
        le=1.0,
        description="The learning rate drops by 10x after this fraction of the training steps.",
    )
    batch_size: int = Field(8, ge=1, le=4096, description="Training samples per step.")
    default_steps: int = Field(
        1000, ge=1, description="Training steps when the command line does not say."
    )


class CoarseNetConfig(_TrainingFields):
    """Stage 1, CoarsePoseNet: stacked hourglass trunk, detection branch and coarse-pose branch."""

    ARCHITECTURE_FIELDS: ClassVar[frozenset[str]] = frozenset(
        {"input_size", "stride", "channels", "num_stacks", "hourglass_depth", "pose_channels",
         "det_channels"}
    )  # fmt: skip

    input_size: int = Field(
        512, ge=32, description="Side of the square, letterboxed network input, in pixels."
    )
    stride: Literal[4] = Field(
        HEATMAP_STRIDE, description="Output stride of heatmaps, PAFs and detection maps."
    )
    channels: int = Field(256, ge=8, description="Feature channels of the hourglass trunk.")
    num_stacks: int = Field(2, ge=1, le=8, description="Hourglass stacks in the trunk.")
    hourglass_depth: int = Field(
        4, ge=1, le=6, description="Down-sampling levels inside each hourglass."
    )
    pose_channels: int = Field(
        128, ge=8, description="Width of the light coarse-pose tails (heatmaps and PAFs)."
    )
    det_channels: int = Field(128, ge=8, description="Width of the person-detection branch.")
    heatmap_sigma: float = Field(
        1.5, gt=0.0, le=16.0, description="Std of the keypoint target Gaussians, in output pixels."
    )
    paf_width: float = Field(
        1.0,
        gt=0.0,
        le=16.0,
        description="Half-width of a limb in the PAF targets, in output pixels.",
    )
    det_loss_weight: float = Field(
        1.0, ge=0.0, description="Weight of L_det in the proposal loss L_p = w*L_det + L_kpt."
    )
    size_loss_weight: float = Field(
        0.1, ge=0.0, description="Weight of the L1 box-size term inside L_det."
    )
    offset_loss_weight: float = Field(
        1.0, ge=0.0, description="Weight of the L1 centre-offset term inside L_det."
    )
    heatmap_loss_weight: float = Field(
        100.0,
        ge=0.0,
        description="Weight of the keypoint-heatmap MSE inside L_kpt (MSE of sparse maps is tiny).",
    )
    paf_loss_weight: float = Field(10.0, ge=0.0, description="Weight of the PAF MSE inside L_kpt.")
    ignore_crowd_and_unlabelled: bool = Field(
        True,
        description="Leave crowd regions (iscrowd) out of the heatmap, PAF and centre-negative "
        "losses, and people without labelled keypoints out of the heatmap and PAF losses "
        "(OpenPose-style masks); false trains both as background. Training only: configs "
        "stored before this field existed read it as true.",
    )

    @model_validator(mode="after")
    def _input_fits_hourglass(self) -> CoarseNetConfig:
        unit = self.stride * 2**self.hourglass_depth
        if self.input_size % unit:
            raise ValueError(
                f"input_size {self.input_size} must be a multiple of stride * 2**hourglass_depth "
                f"= {self.stride} * 2**{self.hourglass_depth} = {unit}"
            )
        return self


class RefinerConfig(_TrainingFields):
    """Stage 3, the pose refinement sub-net (PRS): MSS hourglass stacks plus the MSR module."""

    ARCHITECTURE_FIELDS: ClassVar[frozenset[str]] = frozenset(
        {"input_hw", "stride", "channels", "num_stacks", "hourglass_depth",
         "supervision_strides", "msr_channels", "msr", "structure_loss"}
    )  # fmt: skip

    input_hw: tuple[int, int] = Field(
        (256, 192), description="Person crop size (height, width) in pixels."
    )
    stride: Literal[4] = Field(
        HEATMAP_STRIDE, description="Stride of the final heatmaps relative to the crop."
    )
    channels: int = Field(256, ge=8, description="Feature channels of the hourglass stacks.")
    num_stacks: int = Field(4, ge=1, le=8, description="MSS hourglass stacks.")
    hourglass_depth: int = Field(
        4, ge=1, le=6, description="Down-sampling levels inside each hourglass."
    )
    supervision_strides: tuple[int, ...] = Field(
        (64, 32, 16, 8, 4),
        description="Crop strides of the up-sampling scales that get a 1x1 head and MSS "
        "supervision, coarse to fine; must end with `stride` (the final heatmap scale). The "
        "paper supervises every deconv layer: stride * 2**k for k = hourglass_depth ... 0.",
    )
    msr: MsrMode = Field(
        "multiscale",
        description="Multi-scale regression: 'multiscale' (the paper) regresses heatmaps at "
        "every supervised scale from all the last stack's scales, each matched to its ground "
        "truth; 'final' regresses the final scale only; 'off' uses the last stack's output.",
    )
    msr_channels: int = Field(128, ge=8, description="Width of the multi-scale regression module.")
    structure_loss: StructureLoss = Field(
        "associations",
        description="Loss at each scale (eq. 2): 'associations' (the paper) adds heatmap "
        "channels for every skeleton pair and the elbow/knee triplets, each keypoint's term "
        "adding its pairs' (and an elbow's or knee's triplet's) errors times alpha2; "
        "'neighbours' adds the neighbouring keypoints' errors instead; 'keypoints' is the "
        "plain per-keypoint L2.",
    )
    box_padding: float = Field(
        1.25, ge=1.0, le=3.0, description="A crop covers the aspect-corrected box grown by this."
    )
    heatmap_sigma: float = Field(
        1.0,
        gt=0.0,
        le=16.0,
        description="Std of the target Gaussians in pixels of each scale's heatmap (paper: 1 px).",
    )
    alpha2: float = Field(
        0.5, ge=0.0, description="alpha_2 of eq. 2: weight of the skeleton-neighbour terms."
    )
    mask_background_prob: float = Field(
        0.2,
        ge=0.0,
        le=1.0,
        description="Probability of background keypoint masking (background patch over a keypoint).",
    )
    mask_duplicate_prob: float = Field(
        0.2,
        ge=0.0,
        le=1.0,
        description="Probability of keypoint duplication masking (keypoint patch onto background).",
    )
    mask_from: float = Field(
        0.5,
        ge=0.0,
        le=1.0,
        description="Keypoint masking is a fine-tuning phase (paper §III-C4): it applies from "
        "this fraction of the training steps on (0: the whole run; 1: never).",
    )
    mask_patch_frac: float = Field(
        0.12,
        gt=0.0,
        le=0.5,
        description="Side of a masking patch as a fraction of the person box's longer side.",
    )
    min_keypoints: int = Field(
        1, ge=1, le=17, description="Persons with fewer labelled keypoints are not trained on."
    )

    @model_validator(mode="after")
    def _scales_fit_hourglass(self) -> RefinerConfig:
        height, width = self.input_hw
        deepest = self.stride * 2**self.hourglass_depth
        if height <= 0 or width <= 0 or height % deepest or width % deepest:
            raise ValueError(
                f"input_hw {self.input_hw} must be positive multiples of stride * 2**hourglass_depth "
                f"= {self.stride} * 2**{self.hourglass_depth} = {deepest}"
            )
        strides = self.supervision_strides
        valid = {self.stride * 2**k for k in range(self.hourglass_depth + 1)}
        if not strides or strides[-1] != self.stride:
            raise ValueError(
                f"supervision_strides {strides} must end with stride {self.stride} (the final scale)"
            )
        if any(s not in valid for s in strides) or list(strides) != sorted(
            set(strides), reverse=True
        ):
            raise ValueError(
                f"supervision_strides {strides} must be distinct, decreasing and drawn from "
                f"{sorted(valid, reverse=True)} (stride * 2**k for k <= hourglass_depth)"
            )
        return self


class MoveNetConfig(_TrainingFields):
    """Fine-tuning a zoo MoveNet SinglePose network (``model/training/movenet.py``): the
    network is the imported one, so only the crops, the targets and the training are set."""

    box_padding: float = Field(
        1.0,
        ge=0.5,
        le=3.0,
        description="A crop covers the person box grown to a square times this: the refiner "
        "stage's zoo crop padding, so the network trains on the crops it refines.",
    )
    heatmap_sigma: float = Field(
        1.1,
        gt=0.0,
        le=8.0,
        description="Std of the keypoint target Gaussians, in heatmap cells (the released "
        "networks' peaks fall to 0.66 one cell away: a std of about 1.1).",
    )
    centre_sigma: float = Field(
        2.0, gt=0.0, le=8.0, description="Std of the person-centre target Gaussian, in cells."
    )
    heatmap_loss_weight: float = Field(1.0, ge=0.0, description="Weight of the heatmap focal loss.")
    centre_loss_weight: float = Field(1.0, ge=0.0, description="Weight of the centre focal loss.")
    regress_loss_weight: float = Field(
        0.1, ge=0.0, description="Weight of the L1 keypoint regression (cells) from the centre."
    )
    offset_loss_weight: float = Field(
        1.0, ge=0.0, description="Weight of the L1 sub-cell keypoint offsets."
    )
    min_keypoints: int = Field(
        4, ge=1, le=17, description="Persons with fewer labelled keypoints are not trained on."
    )


_MOVENET_PRESETS: dict[str, dict] = {
    # Fine-tuning, not training: Adam at 1e-5, a few hundred steps, the default augmentation.
    # Chosen here, not MoveNet's recipe: on one person, Adam at 1e-4 jumps the loss 5x on its
    # first (sign-like) step and plain SGD at 1e-3 diverges, while 1e-5 falls steadily
    # (docs/training.md has the fine-tuning measurement).
    "fine-tune": dict(learning_rate=1e-5, batch_size=8, default_steps=300),
}


def movenet_preset(name: MoveNetPresetName) -> MoveNetConfig:
    """The MoveNet fine-tuning config called ``name`` (``fine-tune``)."""
    if name not in _MOVENET_PRESETS:
        raise ValueError(
            f"got {name!r} for the MoveNet preset; expected one of {sorted(_MOVENET_PRESETS)}"
        )
    return MoveNetConfig(**_MOVENET_PRESETS[name])


_COARSE_PRESETS: dict[str, dict] = {
    "tiny": dict(
        input_size=128,
        channels=32,
        num_stacks=1,
        hourglass_depth=3,
        pose_channels=32,
        det_channels=32,
        heatmap_sigma=1.0,
        flip_prob=0.5,
        max_rotation_deg=15.0,
        scale_jitter=0.15,
        learning_rate=2e-3,
        batch_size=4,
        default_steps=400,
    ),
    "coco-recipe": dict(
        input_size=512,
        channels=256,
        num_stacks=2,
        hourglass_depth=4,
        pose_channels=128,
        det_channels=128,
        learning_rate=2.5e-4,
        batch_size=16,
        default_steps=140_000,
    ),
}

_REFINER_PRESETS: dict[str, dict] = {
    "tiny": dict(
        input_hw=(64, 48),
        channels=32,
        num_stacks=1,
        hourglass_depth=2,
        supervision_strides=(16, 8, 4),
        msr_channels=32,
        max_rotation_deg=20.0,
        scale_jitter=0.15,
        learning_rate=2e-3,
        batch_size=12,
        default_steps=400,
    ),
    "coco-recipe": dict(
        input_hw=(256, 192),
        channels=256,
        num_stacks=4,
        hourglass_depth=4,
        supervision_strides=(64, 32, 16, 8, 4),
        msr_channels=128,
        learning_rate=2.5e-4,
        batch_size=32,
        default_steps=140_000,
    ),
}
# The paper's refinement input sizes (§IV): square crops of 256 and 384 pixels.
_REFINER_PRESETS["coco-recipe-256x256"] = {
    **_REFINER_PRESETS["coco-recipe"],
    "input_hw": (256, 256),
}
_REFINER_PRESETS["coco-recipe-384x384"] = {
    **_REFINER_PRESETS["coco-recipe"],
    "input_hw": (384, 384),
}


def coarse_preset(name: PresetName) -> CoarseNetConfig:
    """The stage-1 config called ``name`` (``tiny`` or ``coco-recipe``)."""
    if name not in _COARSE_PRESETS:
        raise ValueError(
            f"got {name!r} for the stage-1 preset; expected one of {sorted(_COARSE_PRESETS)}"
        )
    return CoarseNetConfig(**_COARSE_PRESETS[name])


def refiner_preset(name: RefinerPresetName) -> RefinerConfig:
    """The refiner config called ``name`` (``tiny``, ``coco-recipe``, ``coco-recipe-256x256``,
    ``coco-recipe-384x384``)."""
    if name not in _REFINER_PRESETS:
        raise ValueError(
            f"got {name!r} for the refiner preset; expected one of {sorted(_REFINER_PRESETS)}"
        )
    return RefinerConfig(**_REFINER_PRESETS[name])
