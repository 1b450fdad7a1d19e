"""The JSON annotation formats DetPose reads from other tools, as pydantic models: COCO person
keypoints (``detpose eval --annotations``) and Label Studio's JSON export (``detpose import``).

Strict about the fields DetPose uses: types are never coerced (``"10"`` is not a number,
``true`` is not an id), every number is finite and every size and coordinate bounded, so
nothing read through these models can put ``NaN`` or ``Infinity`` into an output or make a
command allocate without limit. Tolerant of the rest: these files come from other tools,
which add fields of their own, so unknown fields are allowed and ignored. Validation never
changes the data; callers keep the parsed JSON and use it once it has passed.

Rules that relate records (duplicate ids, an annotation's image, coordinates against its
image's size) are checked by the readers in ``pipeline.formats``, which can name both records.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    Tag,
    field_validator,
)

# The largest image side any format may claim, in pixels: far above real photos (a JPEG
# stops at 65,535), far below sizes whose arrays would not fit in memory.
MAX_IMAGE_SIDE = 100_000
# Coordinates may lie outside their image (a keypoint past the border) by at most one image
# size: in pixels x in [-width, 2 * width]; in Label Studio's percentages, -100 to 200.
MIN_PERCENT, MAX_PERCENT = -100.0, 200.0
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1

Finite = Annotated[float, Field(strict=True, allow_inf_nan=False)]
NonNegative = Annotated[float, Field(strict=True, allow_inf_nan=False, ge=0.0)]
Id = Annotated[int, Field(strict=True, ge=INT64_MIN, le=INT64_MAX)]
ImageSide = Annotated[int, Field(strict=True, ge=1, le=MAX_IMAGE_SIDE)]
Name = Annotated[str, Field(strict=True, min_length=1)]
Percent = Annotated[float, Field(strict=True, allow_inf_nan=False, ge=MIN_PERCENT, le=MAX_PERCENT)]
PercentExtent = Annotated[
    float, Field(strict=True, allow_inf_nan=False, ge=0.0, le=MAX_PERCENT - MIN_PERCENT)
]


class _Foreign(BaseModel):
    """A record written by another tool: its own extra fields are kept and ignored."""

    model_config = ConfigDict(extra="allow", frozen=True)


# --- COCO person keypoints --------------------------------------------------------------------


class CocoImage(_Foreign):
    """An entry of ``images``."""

    id: Id = Field(description="The image id annotations refer to; unique in the file.")
    file_name: Name = Field(description="Path of the image relative to --images.")
    width: ImageSide = Field(description=f"Pixels, 1 to {MAX_IMAGE_SIDE:,}.")
    height: ImageSide = Field(description=f"Pixels, 1 to {MAX_IMAGE_SIDE:,}.")
    crowdIndex: Finite | None = Field(None, description="CrowdPose's crowd index of the image.")


class CocoAnnotation(_Foreign):
    """An entry of ``annotations``: one person."""

    id: Id = Field(description="Unique in the file.")
    image_id: Id = Field(description="The id of an entry of images.")
    category_id: Id = Field(description="The id of an entry of categories.")
    bbox: Annotated[list[Finite], Field(min_length=4, max_length=4)] = Field(
        description="[x, y, w, h] in pixels, w and h >= 0."
    )
    keypoints: list[Finite] = Field(description="x, y, v per keypoint; v is 0, 1 or 2.")
    num_keypoints: Annotated[int, Field(strict=True, ge=0)] | None = None
    iscrowd: Any = Field(0, description="0 or 1 (false or true).")
    area: NonNegative | None = None

    @field_validator("bbox")
    @classmethod
    def _size_not_negative(cls, bbox: list[float]) -> list[float]:
        if bbox[2] < 0 or bbox[3] < 0:
            raise ValueError(f"width and height must be >= 0, got {bbox[2]:g} x {bbox[3]:g}")
        return bbox

    @field_validator("keypoints")
    @classmethod
    def _triples_with_flags(cls, keypoints: list[float]) -> list[float]:
        if len(keypoints) % 3:
            raise ValueError(f"expected x, y, v triples, got {len(keypoints)} numbers")
        bad = next((k for k, v in enumerate(keypoints[2::3]) if v not in (0, 1, 2)), None)
        if bad is not None:
            raise ValueError(
                f"keypoint {bad}: visibility {keypoints[3 * bad + 2]:g}; expected 0, 1 or 2"
            )
        return keypoints

    @field_validator("iscrowd")
    @classmethod
    def _zero_or_one(cls, value: Any) -> Any:
        if type(value) not in (int, bool) or value not in (0, 1):
            raise ValueError(f"got {value!r}; expected 0 or 1")
        return value


class CocoCategory(_Foreign):
    """An entry of ``categories``."""

    id: Id


class CocoKeypointsFile(_Foreign):
    """A COCO person-keypoints file (COCO, OCHuman and CrowdPose ship their ground truth so)."""

    images: list[CocoImage]
    annotations: list[CocoAnnotation]
    categories: list[CocoCategory]


# --- Label Studio JSON export -----------------------------------------------------------------


class LsRectangleValue(_Foreign):
    """A ``rectanglelabels`` region's ``value``: percentages of the image; rotation in degrees
    clockwise about the top-left corner."""

    x: Percent
    y: Percent
    width: PercentExtent
    height: PercentExtent
    rotation: Finite | None = None


class LsKeypointValue(_Foreign):
    """A ``keypointlabels`` region's ``value``: percentages of the image and the label."""

    x: Percent
    y: Percent
    keypointlabels: list[StrictStr] = []


class _LsRegion(_Foreign):
    id: StrictStr | StrictInt | None = Field(None, description="Unique among regions of its type.")
    original_width: ImageSide | None = None
    original_height: ImageSide | None = None


class LsRectangle(_LsRegion):
    type: Literal["rectanglelabels"]
    value: LsRectangleValue


class LsKeypoint(_LsRegion):
    type: Literal["keypointlabels"]
    value: LsKeypointValue
    parentID: StrictStr | StrictInt | None = None


class LsOtherRegion(_LsRegion):
    """A region of a kind DetPose does not read (a choice, a polygon, …): counted, not used."""

    type: Any = None


def _region_kind(region: Any) -> str:
    kind = region.get("type") if isinstance(region, dict) else None
    return kind if kind in ("rectanglelabels", "keypointlabels") else "other"


LsRegion = Annotated[
    Annotated[LsRectangle, Tag("rectanglelabels")]
    | Annotated[LsKeypoint, Tag("keypointlabels")]
    | Annotated[LsOtherRegion, Tag("other")],
    Discriminator(_region_kind),
]


class LsAnnotation(_Foreign):
    """One reviewer's annotation of a task."""

    result: list[LsRegion] | None = None
    was_cancelled: StrictBool | None = None
    updated_at: StrictStr | None = None
    created_at: StrictStr | None = None


class LsPrediction(_Foreign):
    """A model's prediction for a task (what ``detpose export`` wrote)."""

    result: list[LsRegion] | None = None


class LsData(_Foreign):
    """A task's ``data``: the image and, from ``detpose export``, its size."""

    image: Name
    width: ImageSide | None = None
    height: ImageSide | None = None


class LsTask(_Foreign):
    """One task of Label Studio's JSON export."""

    id: StrictInt | StrictStr | None = None
    data: LsData
    annotations: list[LsAnnotation] | None = None
    predictions: list[LsPrediction] | None = None
