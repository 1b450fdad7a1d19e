"""The job specification: what to annotate, where to write it, and how to run it.

A spec is immutable and rejects unknown fields, so a typo fails loudly instead of being
ignored. ``JobSpec.from_yaml`` is the one way to read it from a file.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import fsspec
import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from schemas.filtering import FilterSpec

_FROZEN = ConfigDict(extra="forbid", frozen=True)
# num_gpus 'auto' on a cluster with GPUs: two actors per stage share each GPU, so that the
# CPU side of one actor's batch (decoding heads, building rows) overlaps the other's GPU work.
AUTO_GPUS_PER_ACTOR = 0.25
# fullmatch, never match with "$": "$" also matches before a trailing newline ("abc\n").
_JOB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
# Windows drive letters ("C:\...") parse as a one-letter scheme; they are local paths.
LOCAL_SCHEMES = frozenset({"", "file", "local"})
# Where a job's images come from: exactly one of these is given.
SOURCE_FIELDS = ("inputs", "manifest")


class SpecError(ValueError):
    """A job spec that cannot be used; the message names the field, the value and the rule."""


def uri_scheme(uri: str) -> str:
    """The lower-cased scheme of ``uri`` ('' for a plain local path)."""
    scheme = urlsplit(uri).scheme.lower()
    return "" if len(scheme) == 1 else scheme


def check_uri(uri: str) -> str:
    """Return ``uri`` unchanged if fsspec can open its scheme, else raise ``ValueError``."""
    if not uri or not uri.strip():
        raise ValueError("got an empty URI; expected a local path or a URI such as s3://bucket/key")
    scheme = uri_scheme(uri)
    if scheme in LOCAL_SCHEMES:
        return uri
    known = set(fsspec.available_protocols())
    if scheme not in known:
        raise ValueError(
            f"got {uri!r} with unsupported scheme '{scheme}://'; expected a local path, s3://, "
            "or another fsspec protocol (e.g. gs://, az://, http://)"
        )
    return uri


def join_uri(base: str, *parts: str) -> str:
    """``base/part/...`` for local paths and URIs alike, keeping the scheme of ``base``.

    Slashes where the pieces meet are not doubled; an empty ``base`` gives the parts alone.
    """
    pieces = [base.rstrip("/")] if base else []
    return "/".join([*pieces, *(part.strip("/") for part in parts)])


class StorageSpec(BaseModel):
    """Object-storage settings. Credentials fall back to the standard AWS environment variables."""

    model_config = _FROZEN

    endpoint_url: str | None = Field(
        None,
        description="S3-compatible endpoint, e.g. http://127.0.0.1:9000; "
        "default: $AWS_ENDPOINT_URL or AWS itself.",
    )
    region: str | None = Field(
        None, description="S3 region; default: $AWS_REGION / $AWS_DEFAULT_REGION."
    )
    anonymous: bool = Field(False, description="Read public buckets without credentials.")
    access_key_id: SecretStr | None = Field(
        None, description="Prefer $AWS_ACCESS_KEY_ID. Never written to outputs or logs."
    )
    secret_access_key: SecretStr | None = Field(
        None, description="Prefer $AWS_SECRET_ACCESS_KEY. Never written to outputs or logs."
    )
    session_token: SecretStr | None = Field(None, description="Prefer $AWS_SESSION_TOKEN.")
    connect_timeout_s: float = Field(
        10.0,
        gt=0,
        le=3600,
        description="Seconds to wait for a connection to the object store; an image read that "
        "cannot connect in time is retried as a 'timeout' (decode.retries bounds it).",
    )
    read_timeout_s: float = Field(
        30.0,
        gt=0,
        le=3600,
        description="Seconds a request may wait for the next bytes of a response; a stalled "
        "image read is then retried as a 'timeout' (decode.retries bounds it).",
    )

    @model_validator(mode="after")
    def _keys_come_in_pairs(self) -> StorageSpec:
        if (self.access_key_id is None) != (self.secret_access_key is None):
            raise ValueError(
                "storage.access_key_id and storage.secret_access_key must be given together "
                "(or both left out to use the environment)"
            )
        return self


class DecodeSpec(BaseModel):
    """Fetching and decoding of each image."""

    model_config = _FROZEN

    max_pixels: int = Field(
        100_000_000,
        gt=0,
        description="Images with more pixels than this (width*height from the header) become "
        "'too_large' error rows instead of being decoded (decompression-bomb guard).",
    )
    max_bytes: int = Field(
        200 * 1024 * 1024,
        gt=0,
        description="Objects larger than this become 'too_large' error rows.",
    )
    max_side: int = Field(
        1024,
        ge=64,
        le=16384,
        description="Decoded images are shrunk so their longer side is at most this; "
        "refinement crops are cut from this copy, results are mapped back to the original.",
    )
    exposure: Literal["auto", "off"] = Field(
        "auto",
        description="'auto': an image whose mean luma is below dark_luma is denoised, and "
        "brightened when almost black, before both networks see it (each row records its "
        "luma and what was done); 'off': images as decoded.",
    )
    dark_luma: float = Field(
        0.2,
        gt=0.0,
        le=1.0,
        description="Mean Rec. 601 luma (0 black, 1 white) under which an image is dark.",
    )
    retries: int = Field(3, ge=0, le=20, description="Retries on transient storage errors.")
    retry_backoff_s: float = Field(
        0.5, ge=0.0, le=60.0, description="First backoff; doubles each retry."
    )


class StageSpec(BaseModel):
    """Resources of one model stage (an actor pool)."""

    model_config = _FROZEN

    checkpoint: str | None = Field(
        None,
        description="Checkpoint URI of the stage's model: a DetPoseNet checkpoint, or a zoo "
        "checkpoint of the named zoo network; default: the weights bundled with DetPose.",
    )
    batch_size: Annotated[int, Field(gt=0, le=4096)] | Literal["auto"] = Field(
        "auto",
        description="Images per batch sent to an actor. 'auto': what keeps the device busy "
        "(large on CUDA, small on CPU; pipeline/graph/resources.py).",
    )
    actors: Annotated[int, Field(gt=0, le=1024)] | Literal["auto"] = Field(
        "auto",
        description="Actors in the pool. 'auto': two per GPU on GPU clusters; on CPU one for "
        "stage 1 and one refiner per core of the driver's machine (pipeline/graph/resources.py).",
    )
    num_gpus: Annotated[float, Field(ge=0.0, le=8.0)] | Literal["auto"] = Field(
        "auto",
        description="GPUs per actor; a fraction packs several actors on one GPU. 'auto': "
        f"{AUTO_GPUS_PER_ACTOR} per actor when the cluster has GPUs (the two model stages "
        "share each GPU), else 0 (CPU).",
    )
    num_cpus: float = Field(
        0.25,
        gt=0.0,
        le=64.0,
        description="CPUs per actor. Keep it below 1 on small machines: actors holding every CPU "
        "starve the read and filter tasks (Ray issue 44687).",
    )
    resources: dict[str, Annotated[float, Field(gt=0.0)]] = Field(
        default_factory=dict,
        description="Custom Ray resources each actor requires, e.g. {refiner_host: 0.1} to pin "
        "the pool to nodes started with that resource; empty: any node.",
    )

    @field_validator("checkpoint")
    @classmethod
    def _checkpoint_uri(cls, value: str | None) -> str | None:
        return None if value is None else check_uri(value)

    def _check_onnx(self, stage: str) -> None:
        model, onnx = self.model, self.onnx
        if model == ONNX_MODEL:
            if onnx is None or self.checkpoint is None:
                raise ValueError(
                    f"{stage}.model 'onnx' runs the ONNX file {stage}.checkpoint with the codec "
                    f"{stage}.onnx describes; give both (docs/models.md)"
                )
            if ONNX_CODEC_STAGES[onnx.codec] != stage:
                raise ValueError(
                    f"{stage}.onnx.codec {onnx.codec!r} decodes a "
                    f"{ONNX_CODEC_STAGES[onnx.codec]} network; {stage} takes "
                    f"{sorted(c for c, s in ONNX_CODEC_STAGES.items() if s == stage)}"
                )
        elif onnx is not None:
            raise ValueError(f"{stage}.onnx describes an ONNX file; set {stage}.model: onnx")

    @field_validator("resources")
    @classmethod
    def _custom_resources_only(cls, value: dict[str, float]) -> dict[str, float]:
        for name in value:
            if not name.strip():
                raise ValueError("got an empty resource name; expected e.g. {refiner_host: 0.1}")
            if name in ("CPU", "GPU"):
                raise ValueError(
                    f"got {name!r}; set CPUs and GPUs with num_cpus and num_gpus, "
                    "'resources' is for custom resources"
                )
        return value

    def __hash__(self) -> int:
        # Frozen models are hashable; the resources dict is hashed by its sorted items.
        return hash(
            (
                type(self),
                *(
                    tuple(sorted(v.items())) if isinstance(v, dict) else v
                    for v in self.__dict__.values()
                ),
            )
        )


# A stage's ``model`` names a registered network (``model/networks/registry.py`` lists them;
# ``detpose models`` prints them) or ``onnx`` for an ONNX file described by ``stage.onnx``.
# The driver checks the name against the registry before Ray starts. The defaults were
# chosen by measured keypoint AP (docs/evaluation.md).
NetworkName = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9._-]*$")]
DEFAULT_STAGE1_MODEL = "movenet-multipose"
DEFAULT_REFINER_MODEL = "movenet-thunder"
ONNX_MODEL = "onnx"
# How an ONNX network's outputs are decoded, and the stage each codec serves
# (model/networks/onnx.py; docs/models.md, "Bring your own ONNX network").
OnnxCodec = Literal["heatmap", "simcc", "movenet", "rtmo"]
ONNX_CODEC_STAGES: dict[str, str] = {
    "heatmap": "refiner",
    "simcc": "refiner",
    "movenet": "refiner",
    "rtmo": "stage1",
}


class OnnxSpec(BaseModel):
    """An ONNX network's contract: how its inputs are made and its outputs decoded. Fields
    left out take the codec's reference values (those of the public RTMPose / RTMO / mmpose
    releases), or the file's own input shape."""

    model_config = _FROZEN

    codec: OnnxCodec = Field(
        ...,
        description="'heatmap': top-down keypoint heatmaps [N, 17, H/4, W/4] (HRNet, ViTPose, "
        "DetPoseNet's refiner); 'simcc': RTMPose's SimCC x/y vectors; 'movenet': MoveNet "
        "single-pose heads as `detpose models --export-onnx` writes them; 'rtmo': one-stage "
        "multi-person boxes [1, N, 5] and keypoints [1, N, 17, 3] (RTMO), for stage 1.",
    )
    input_hw: (
        tuple[Annotated[int, Field(ge=16, le=4096)], Annotated[int, Field(ge=16, le=4096)]] | None
    ) = Field(
        None,
        description="Network input (height, width); default: the file's static input shape.",
    )
    channels: Literal["rgb", "bgr"] | None = Field(
        None, description="Colour order the network expects; default: the codec's reference."
    )
    mean: tuple[float, float, float] | None = Field(
        None, description="Per-channel mean subtracted from 0..255 pixels (in `channels` order)."
    )
    std: (
        tuple[
            Annotated[float, Field(gt=0.0)],
            Annotated[float, Field(gt=0.0)],
            Annotated[float, Field(gt=0.0)],
        ]
        | None
    ) = Field(None, description="Per-channel std the centred pixels are divided by.")
    simcc_split_ratio: float = Field(
        2.0, gt=0.0, le=16.0, description="SimCC bins per input pixel (RTMPose: 2.0)."
    )
    crop_padding: float | None = Field(
        None,
        ge=1.0,
        le=2.0,
        description="Crop padding of a top-down codec when refiner.crop_padding is not set "
        "(reference: 1.25).",
    )


ZOO_INPUT_MULTIPLE = 32


class Stage1View(BaseModel):
    """One pass of a zoo stage 1 over an image: the whole image (``grid`` 1) or a grid of
    overlapping tiles, each letterboxed to ``input_size``."""

    model_config = _FROZEN

    input_size: int = Field(
        ...,
        ge=ZOO_INPUT_MULTIPLE,
        le=2048,
        description="Side of the square letterboxed network input, a multiple of 32.",
    )
    grid: int = Field(
        1,
        ge=1,
        le=6,
        description="Tiles per side: 1 is the whole image, 2 a 2x2 grid of overlapping tiles "
        "(each the image's aspect ratio). A tiled pass is skipped on an image whose tiles "
        "would be smaller than input_size (it would only upsample).",
    )
    overlap: float = Field(
        0.25,
        ge=0.0,
        le=0.5,
        description="Fraction of a tile's width (height) it shares with its neighbour, so a "
        "person cut by one tile's edge is whole in the next.",
    )
    tile_below_height: float = Field(
        1.0,
        gt=0.0,
        le=1.0,
        description="A tiled pass runs on an image only when the whole-image passes found "
        "nobody (scoring at least 0.1), or somebody shorter than this fraction of the image's "
        "height: small people are what tiles find. 1 tiles every image.",
    )

    @field_validator("input_size")
    @classmethod
    def _multiple_of_32(cls, value: int) -> int:
        if value % ZOO_INPUT_MULTIPLE:
            raise ValueError(f"got {value}; expected a multiple of {ZOO_INPUT_MULTIPLE}")
        return value


# Stage 1's passes when a spec names neither stage1.views nor stage1.input_size; chosen by
# measured keypoint AP per unit of cost on the real crowd set (docs/evaluation.md, "Crowds").
DEFAULT_STAGE1_VIEWS: tuple[Stage1View, ...] = (
    Stage1View(input_size=256),
    Stage1View(input_size=512),
)


class Stage1Spec(StageSpec):
    """Stage 1: which network proposes boxes and coarse poses, and its actor pool."""

    model: NetworkName = Field(
        DEFAULT_STAGE1_MODEL,
        description="A registered stage-1 network (`detpose models`): 'movenet-multipose', the "
        "zoo's bottom-up MoveNet (box and pose branches); 'detposenet', DetPoseNet's "
        "CoarsePoseNet from `checkpoint` (default: the bundled demo weights); 'onnx', the ONNX "
        "file `checkpoint` decoded as `onnx` says.",
    )
    onnx: OnnxSpec | None = Field(
        None, description="The contract of an ONNX stage 1 (model: onnx); codec 'rtmo'."
    )
    input_size: int | None = Field(
        None,
        ge=ZOO_INPUT_MULTIPLE,
        le=2048,
        description="Side of the square letterboxed input of a zoo model, a multiple of 32, "
        "for a single whole-image pass (stage1.views gives several). Default: stage1.views.",
    )
    views: tuple[Stage1View, ...] | None = Field(
        None,
        min_length=1,
        max_length=8,
        description="The passes of a zoo stage 1 over each image: whole-image scales and "
        "grids of tiles. Their proposals are mapped back to image pixels and pooled per image "
        "before filtering, which removes the cross-scale and cross-tile duplicates. Default: "
        "one pass at input_size when that is given, else DEFAULT_STAGE1_VIEWS.",
    )

    boxes: str | None = Field(
        None,
        description="A COCO detections file (the COCO results format: a JSON list of "
        "{image_id or file_name, category_id, bbox [x, y, w, h] in original pixels, score}) "
        "whose person boxes (category 1), top proposals_per_image by score per image, replace "
        "stage 1's box proposals; stage 1 still gives the coarse poses. An entry's file_name "
        "(or its image_id's, through box_images) matches an input URI ending with it; images "
        "without detections get no persons. Read once on the driver (docs/spec.md, 'Boxes from "
        "another detector').",
    )
    box_images: str | None = Field(
        None,
        description="A COCO annotation file whose 'images' list ({id, file_name}) maps the "
        "image_id of each stage1.boxes entry without a file_name; `detpose eval` uses its "
        "--annotations file when this is left out.",
    )

    @field_validator("input_size")
    @classmethod
    def _multiple_of_32(cls, value: int | None) -> int | None:
        if value is not None and value % ZOO_INPUT_MULTIPLE:
            raise ValueError(f"got {value}; expected a multiple of {ZOO_INPUT_MULTIPLE}")
        return value

    @field_validator("boxes", "box_images")
    @classmethod
    def _boxes_uri(cls, value: str | None) -> str | None:
        return None if value is None else check_uri(value)

    @model_validator(mode="after")
    def _one_way_to_size_the_input(self) -> Stage1Spec:
        if self.views is not None and self.input_size is not None:
            raise ValueError(
                f"stage1.input_size ({self.input_size}) and stage1.views both size stage 1's "
                "input; give one of them (a view has its own input_size)"
            )
        self._check_onnx("stage1")
        return self

    def resolved_views(self) -> tuple[Stage1View, ...]:
        """The passes a multi-view stage 1 makes: ``views``, else one at ``input_size``, else
        the default (a network that takes no views runs its own single pass)."""
        if self.views is not None:
            return self.views
        if self.input_size is not None:
            return (Stage1View(input_size=self.input_size),)
        return DEFAULT_STAGE1_VIEWS

    @model_validator(mode="after")
    def _box_images_need_boxes(self) -> Stage1Spec:
        if self.box_images is not None and self.boxes is None:
            raise ValueError(
                f"stage1.box_images ({self.box_images!r}) maps the image ids of stage1.boxes, "
                "which is not set; give stage1.boxes or drop stage1.box_images"
            )
        return self


RefinerGuide = Literal["pose", "box", "off"]


class RefinerSpec(StageSpec):
    """Stage 3: which network refines each person crop, and its actor pool."""

    model: NetworkName = Field(
        DEFAULT_REFINER_MODEL,
        description="A registered refiner (`detpose models`): 'movenet-thunder' (256 px crops) "
        "or 'movenet-lightning' (192 px, faster), the zoo's top-down MoveNet; 'detposenet', "
        "DetPoseNet's refiner from `checkpoint` (default: the bundled demo weights); 'onnx', "
        "the ONNX file `checkpoint` decoded as `onnx` says.",
    )
    onnx: OnnxSpec | None = Field(
        None,
        description="The contract of an ONNX refiner (model: onnx); codec 'heatmap', 'simcc' "
        "or 'movenet'.",
    )
    crop_padding: float | None = Field(
        None,
        ge=1.0,
        le=2.0,
        description="A top-down refiner's crop covers the person's box grown to the crop's "
        "aspect ratio, times this: more context, but more of the neighbours in a crowd. "
        "Default: the network's own (MoveNet 1.0, measured best on the crowd set; an ONNX "
        "codec's reference 1.25); DetPoseNet's refiner keeps its checkpoint's own crop.",
    )
    second_crop_padding: float | None = Field(
        None,
        ge=1.0,
        le=2.0,
        description="A zoo refiner also refines a crop grown by this, and averages the two "
        "passes' keypoints, each weighted by its score (twice the refiner's work); None: "
        "one crop.",
    )
    guide: RefinerGuide | None = Field(
        None,
        description="Which person of a crowded crop a top-down refiner decodes. 'pose': the one "
        "the person's coarse pose names (each keypoint is sought where the coarse pose has it, "
        "inside the box); 'box': the salient person near the middle, keypoints inside the "
        "box; 'off': the network's own rule (MoveNet: the salient person near the middle; an "
        "ONNX codec: its reference decode). Default: the network's own ('pose' for MoveNet, "
        "measured on the crowd set; 'off' for the heatmap and SimCC codecs).",
    )

    @model_validator(mode="after")
    def _onnx_contract(self) -> RefinerSpec:
        self._check_onnx("refiner")
        return self


DeviceName = Literal["auto", "cpu", "cuda"]
PrecisionName = Literal["auto", "float32", "bfloat16", "float16"]


class JobSpec(BaseModel):
    """One batch annotation job."""

    model_config = _FROZEN

    job_id: str = Field(
        "default",
        description="Names the output folder OUTPUT/JOB_ID; re-running an id resumes it.",
    )
    inputs: tuple[str, ...] = Field(
        (),
        description="Image files or prefixes (local paths or URIs); prefixes are listed recursively.",
    )
    manifest: str | None = Field(
        None, description="A Parquet, CSV or text file listing image URIs (a 'uri' column)."
    )
    output: str = Field(..., description="Where OUTPUT/JOB_ID/ is written (local path or URI).")
    device: DeviceName = Field(
        "auto", description="'auto' uses CUDA when the actor sees a GPU, else the CPU."
    )
    precision: PrecisionName = Field(
        "auto",
        description="Arithmetic of the model stages. 'auto': float16 autocast on CUDA, float32 "
        "on CPU; 'bfloat16' is faster on CPUs with native bfloat16 instructions but less "
        "accurate (docs/benchmarks.md).",
    )
    stage1: Stage1Spec = Field(
        default_factory=Stage1Spec, description="Stage 1 (proposals and coarse poses)."
    )
    refiner: RefinerSpec = Field(
        default_factory=RefinerSpec, description="Stage 3 (refinement of each person)."
    )
    filter: FilterSpec = Field(
        default_factory=FilterSpec, description="Stage 2: proposal filtering."
    )
    decode: DecodeSpec = Field(default_factory=DecodeSpec, description="Fetch and decode settings.")
    storage: StorageSpec = Field(
        default_factory=StorageSpec, description="Object-storage settings."
    )
    proposals_per_image: int = Field(
        100, gt=0, le=1000, description="Top-K box proposals stage 1 emits per image (no NMS)."
    )
    peaks_per_keypoint: int = Field(
        20, gt=0, le=200, description="Top-K heatmap peaks stage 1 ships per keypoint type."
    )
    flip_test: bool = Field(
        False, description="Average the refiner's output with that of a mirrored pass."
    )

    @field_validator("job_id")
    @classmethod
    def _job_id_is_a_name(cls, value: str) -> str:
        if not _JOB_ID.fullmatch(value):
            raise ValueError(
                f"got {value!r}; expected 1-128 characters from A-Z a-z 0-9 . _ - "
                "starting with a letter or digit"
            )
        return value

    @field_validator("inputs")
    @classmethod
    def _inputs_are_uris(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for uri in value:
            check_uri(uri)
        return value

    @field_validator("manifest", "output")
    @classmethod
    def _single_uri(cls, value: str | None) -> str | None:
        return None if value is None else check_uri(value)

    @model_validator(mode="after")
    def _one_source(self) -> JobSpec:
        if bool(self.inputs) == (self.manifest is not None):
            raise ValueError(
                "give exactly one of 'inputs' (paths/URIs) and 'manifest' (a file listing URIs); "
                f"got inputs={list(self.inputs)!r}, manifest={self.manifest!r}"
            )
        return self

    # -- construction -------------------------------------------------------------------

    @classmethod
    def parse(cls, data: dict[str, Any], source: str = "spec") -> JobSpec:
        """Validate ``data``; raise ``SpecError`` naming field, value and rule for each problem."""
        if not isinstance(data, dict):
            raise SpecError(f"{source}: expected a mapping of fields, got {type(data).__name__}")
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise SpecError(format_validation_error(exc, source)) from None

    @classmethod
    def from_yaml(
        cls,
        path: str | Path | None,
        overrides: Mapping[str, Any] | None = None,
        defaults: Mapping[str, Any] | None = None,
    ) -> JobSpec:
        """Load a spec from a YAML file (safe loader; ``None``: no file), under ``overrides``.

        - ``overrides`` win over the file (see :func:`merge_spec_data`): a section given as a
          mapping is merged field by field, so ``{"filter": {"mode": "nms"}}`` keeps the
          file's other filter fields, and an override naming ``inputs`` or ``manifest``
          replaces the file's source.
        - ``defaults`` fill what neither gives; a default source only when neither names a
          non-empty one.

        Errors name ``path`` ("command line" without a file).
        """
        data = load_yaml_mapping(path) if path is not None else {}
        data = merge_spec_data(data, overrides or {})
        for key, value in (defaults or {}).items():
            if key not in SOURCE_FIELDS:
                data.setdefault(key, value)
            elif not any(data.get(field) for field in SOURCE_FIELDS):
                data[key] = value
        return cls.parse(data, source="command line" if path is None else str(path))

    def to_public_dict(self) -> dict[str, Any]:
        """The spec as plain data with every secret removed (safe to write to outputs and logs)."""
        data = self.model_dump(mode="json")
        for key in _SECRET_FIELDS:
            if data["storage"].get(key) is not None:
                data["storage"][key] = "<redacted>"
        return data

    def to_yaml(self) -> str:
        """The redacted spec as YAML, in field order."""
        return yaml.safe_dump(self.to_public_dict(), sort_keys=False)


def merge_spec_data(base: Mapping[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    """Spec data ``base`` with ``top`` laid over it.

    A field ``top`` gives replaces ``base``'s, except that a section given as a mapping in both
    (``filter``, ``stage1``, ``decode``, ...) is merged field by field, one level deep. A job
    has one source: when ``top`` names ``inputs`` or ``manifest``, ``base``'s source is dropped.
    """
    out = dict(base)
    if any(field in top for field in SOURCE_FIELDS):
        for field in SOURCE_FIELDS:
            out.pop(field, None)
    for key, value in top.items():
        section = out.get(key)
        if isinstance(section, Mapping) and isinstance(value, Mapping):
            out[key] = {**section, **value}
        else:
            out[key] = value
    return out


def load_yaml_mapping(path: str | Path) -> dict[str, Any]:
    """The top-level mapping of a YAML file, read with the safe loader.

    An empty file is an error, not an empty spec: running the defaults (the bundled samples)
    because a spec file came out empty would be a silent surprise.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise SpecError(
            f"{path}: spec file is not UTF-8 text (byte {exc.start}: {exc.reason})"
        ) from None
    except OSError as exc:
        raise SpecError(f"{path}: cannot read spec file: {exc.strerror or exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise SpecError(f"{path}: not valid YAML: {exc}") from None
    if data is None:
        raise SpecError(f"{path}: spec file is empty; expected a mapping of fields")
    if not isinstance(data, dict):
        raise SpecError(f"{path}: expected a mapping of fields at the top level")
    return data


def format_validation_error(exc: ValidationError, source: str) -> str:
    """One line per problem: ``field.path: got VALUE; RULE``."""
    lines = [f"{source}: invalid job spec ({exc.error_count()} problem(s))"]
    for err in exc.errors():
        field = ".".join(str(p) for p in err["loc"]) or "(top level)"
        msg = err["msg"].removeprefix("Value error, ")
        value = _printable(field, err.get("input"))
        if err["type"] == "extra_forbidden":
            # Never echo the value: a misspelled credential key would print the secret.
            lines.append(f"  {field}: unknown field; check its spelling")
        elif "got " in msg or value is None:
            lines.append(f"  {field}: {msg}")
        else:
            lines.append(f"  {field}: got {value}; {msg}")
    return "\n".join(lines)


_SECRET_FIELDS = ("access_key_id", "secret_access_key", "session_token")


def _printable(field: str, value: Any) -> str | None:
    """A short repr of a rejected value, or None for mappings/lists (which may hold secrets).

    Nothing under ``storage`` is echoed: a value put in the wrong place there may be a key.
    """
    if field.rsplit(".", 1)[-1] in _SECRET_FIELDS or field.split(".", 1)[0] == "storage":
        return "<redacted>"
    if isinstance(value, dict | list | tuple):
        return None
    text = repr(value)
    return text if len(text) <= 200 else text[:197] + "..."
