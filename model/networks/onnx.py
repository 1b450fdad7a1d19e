"""Bring-your-own ONNX networks, run with ONNX Runtime inside the same stage runners.

A spec names the file (``stage.checkpoint``) and its output codec (``stage.onnx``):

- ``heatmap``: top-down keypoint heatmaps ``[N, 17, H/4, W/4]`` (HRNet, ViTPose without its
  UDP decode, DetPoseNet's refiner), decoded as mmpose's MSRA heatmap codec: the argmax,
  moved a quarter cell towards the higher neighbour, times the stride.
- ``simcc``: RTMPose's ``simcc_x [N, 17, W*r]`` and ``simcc_y [N, 17, H*r]`` logits, decoded
  as mmpose's ``get_simcc_maximum``: the argmax of each, divided by ``r``; the score is the
  smaller of the two maxima.
- ``movenet``: MoveNet single-pose heads with their decoding constants in the file's
  metadata, as ``detpose models --export-onnx`` writes them; decoded by the zoo's decoder.
- ``rtmo``: one-stage multi-person ``dets [N, M, 5]`` and ``keypoints [N, M, 17, 3]`` with
  NMS inside the graph (RTMO), for stage 1.

Pre-processing follows the public RTMPose / RTMO reference code (docs/models.md): top-down
crops are the box grown by 1.25 to the input's aspect ratio, warped bilinearly with zero
borders by the matrix mapping the box centre to ``(W/2, H/2)``, then ``(x - mean) / std``
in RGB order; RTMO's input is the image resized by ``min(S/h, S/w)`` into the top-left of
an ``S × S`` canvas of 114, BGR, unnormalised. Keypoints map back by the inverse matrix.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from model.codecs.image import image_to_float_tensor
from model.inference.refiner import CropRefiner, MoveNetCropRefiner
from model.keypoints import NUM_KEYPOINTS
from model.networks.base import (
    REFINER_OPTIONS,
    NetworkAdapter,
    NetworkError,
    NetworkInfo,
    RefinerSettings,
    Stage1Settings,
    StageKind,
)
from model.networks.loaded import LoadedModel
from model.stage_data import CoarseProposals
from model.zoo.catalog import NETWORKS
from model.zoo.weights import ZooModel
from schemas.spec import ONNX_CODEC_STAGES, OnnxSpec

# mmpose's ImageNet statistics on 0..255 pixels, RGB order (RTMPose, HRNet, ViTPose configs).
IMAGENET_MEAN_255 = (123.675, 116.28, 103.53)
IMAGENET_STD_255 = (58.395, 57.12, 57.375)
TOP_DOWN_PADDING = 1.25  # mmpose GetBBoxCenterScale / rtmlib bbox_xyxy2cs
RTMO_PAD_VALUE = 114.0
# Metadata key of a MoveNet export: the zoo network it came from and its decoding constants.
MOVENET_METADATA = "detpose.movenet"
# Metadata key of a DetPose export's pre-processing; a spec's fields take precedence.
CONTRACT_METADATA = "detpose.contract"
# Guided decoding of heatmaps and SimCC: a cell's rank is its value / (distance to the
# guide + this), the distance in cells of 1/64 of the crop's longer side (MoveNet's rule).
GUIDE_DISTANCE_BIAS = 1.8
GUIDE_GRID = 64


@dataclass(frozen=True)
class CodecReference:
    """A codec's reference pre-processing (the public releases')."""

    channels: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    crop_padding: float | None


CODEC_REFERENCE: dict[str, CodecReference] = {
    "heatmap": CodecReference("rgb", IMAGENET_MEAN_255, IMAGENET_STD_255, TOP_DOWN_PADDING),
    "simcc": CodecReference("rgb", IMAGENET_MEAN_255, IMAGENET_STD_255, TOP_DOWN_PADDING),
    # MoveNet takes 0..255 RGB and normalises inside its graph; its crops are squares.
    "movenet": CodecReference("rgb", (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), 1.0),
    "rtmo": CodecReference("bgr", (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), None),
}


@dataclass(frozen=True)
class OnnxContract:
    """An ONNX network's contract resolved against its file: input size and layout, the
    pre-processing, and which outputs the codec reads."""

    codec: str
    input_hw: tuple[int, int]
    channels_last: bool
    channels: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    simcc_split_ratio: float
    outputs: tuple[str, ...]  # the codec's outputs, in the codec's order
    crop_padding: float | None  # a top-down codec's default crop padding
    movenet: ZooModel | None = field(default=None, repr=False)  # decoding constants

    def prepare(self, batch: torch.Tensor) -> np.ndarray:
        """``[B, 3, H, W]`` RGB float ``0..255`` → the network's float32 input."""
        x = batch.float()
        if self.channels == "bgr":
            x = x.flip(1)
        mean = torch.tensor(self.mean, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=x.device).view(1, 3, 1, 1)
        x = (x - mean) / std
        if self.channels_last:
            x = x.permute(0, 2, 3, 1)
        return np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float32)


class OnnxNet:
    """An ONNX Runtime session with a torch module's call shape: ``[B, 3, H, W]`` RGB float
    ``0..255`` in, ``{output name: tensor}`` out on the input's device. The CUDA provider
    is used on a CUDA device when this ONNX Runtime has it, else the CPU."""

    def __init__(self, data: bytes, name: str, device: torch.device | str) -> None:
        try:
            import onnxruntime as ort
        except ImportError as exc:  # a broken install: onnxruntime is a dependency
            raise NetworkError(f"{name}: onnxruntime is not importable ({exc})") from exc
        device = torch.device(device)
        available = ort.get_available_providers()
        providers = ["CPUExecutionProvider"]
        if device.type == "cuda" and "CUDAExecutionProvider" in available:
            providers.insert(0, "CUDAExecutionProvider")
        options = ort.SessionOptions()
        # Ray gives an actor its share of the CPUs through torch's thread count.
        options.intra_op_num_threads = max(1, torch.get_num_threads())
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(data, options, providers=providers)
        except Exception as exc:  # noqa: BLE001 - ORT raises its own types for bad files
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise NetworkError(
                f"{name}: not an ONNX model ONNX Runtime can load ({reason})"
            ) from exc
        self.name = name
        self.providers = tuple(self.session.get_providers())
        inputs = self.session.get_inputs()
        if len(inputs) != 1:
            raise NetworkError(
                f"{name}: has {len(inputs)} inputs {[i.name for i in inputs]}; a DetPose ONNX "
                "network takes one image batch"
            )
        self.input_name = inputs[0].name
        self.input_shape = tuple(inputs[0].shape)
        self.output_names = tuple(o.name for o in self.session.get_outputs())
        self.metadata = dict(self.session.get_modelmeta().custom_metadata_map)
        self.contract: OnnxContract | None = None

    def __call__(self, batch: torch.Tensor) -> dict[str, torch.Tensor]:
        assert self.contract is not None, "[internal] OnnxNet used before its contract was set"
        arrays = self.session.run(
            list(self.contract.outputs), {self.input_name: self.contract.prepare(batch)}
        )
        return {
            name: torch.from_numpy(np.asarray(a)).to(batch.device)
            for name, a in zip(self.contract.outputs, arrays, strict=True)
        }


def _input_layout(net: OnnxNet, spec: OnnxSpec) -> tuple[tuple[int, int], bool]:
    """``(input_hw, channels_last)`` from the file's input shape and the spec.

    Raises:
        NetworkError: not an image batch, or no size in the file nor in the spec.
    """
    shape = net.input_shape
    if len(shape) != 4 or (shape[1] != 3 and shape[3] != 3):
        raise NetworkError(
            f"{net.name}: input {net.input_name!r} has shape {list(shape)}; expected an image "
            "batch [N, 3, H, W] or [N, H, W, 3]"
        )
    channels_last = shape[1] != 3
    dims = shape[1:3] if channels_last else shape[2:4]
    static = tuple(d for d in dims if isinstance(d, int))
    if spec.input_hw is not None:
        if len(static) == 2 and static != tuple(spec.input_hw):
            raise NetworkError(
                f"{net.name}: onnx.input_hw {list(spec.input_hw)} does not match the file's "
                f"input {list(shape)}"
            )
        return (int(spec.input_hw[0]), int(spec.input_hw[1])), channels_last
    if len(static) != 2:
        raise NetworkError(
            f"{net.name}: the input {list(shape)} has no fixed size; give onnx.input_hw"
        )
    return (int(static[0]), int(static[1])), channels_last


def _codec_outputs(net: OnnxNet, codec: str) -> tuple[str, ...]:
    """The outputs ``codec`` reads, by their reference names, else in the file's order."""
    wanted = {
        "heatmap": ("output",),
        "simcc": ("simcc_x", "simcc_y"),
        "rtmo": ("dets", "keypoints"),
    }
    if codec == "movenet":
        return ()  # named by the export's metadata (``_movenet_decoding``)
    names = wanted[codec]
    if all(n in net.output_names for n in names):
        return names
    if len(net.output_names) < len(names):
        raise NetworkError(
            f"{net.name}: has outputs {list(net.output_names)}; codec {codec!r} reads "
            f"{len(names)} ({', '.join(names)})"
        )
    return net.output_names[: len(names)]


def _movenet_decoding(net: OnnxNet) -> ZooModel:
    """The MoveNet decoding constants a ``detpose models --export-onnx`` file carries."""
    raw = net.metadata.get(MOVENET_METADATA)
    if raw is None:
        raise NetworkError(
            f"{net.name}: codec 'movenet' needs the decoding constants that `detpose models "
            f"--export-onnx` writes into the file's metadata ({MOVENET_METADATA!r}); this "
            "file has none"
        )
    try:
        record = json.loads(raw)
        network = NETWORKS[record["network"]]
        decode = {k: torch.tensor(v, dtype=torch.float32) for k, v in record["decode"].items()}
    except (KeyError, TypeError, ValueError) as exc:
        raise NetworkError(f"{net.name}: damaged {MOVENET_METADATA!r} metadata ({exc})") from exc
    missing = sorted(set(network.outputs.values()) - set(net.output_names))
    if missing:
        raise NetworkError(f"{net.name}: lacks the MoveNet heads {missing}")
    return ZooModel(network, net, decode, {"onnx": net.name})  # type: ignore[arg-type]


def _expected_shapes(contract: OnnxContract) -> dict[str, tuple[int, ...]]:
    """Per output, the trailing dimensions the codec needs (0: any)."""
    height, width = contract.input_hw
    if contract.codec == "heatmap":
        return {contract.outputs[0]: (NUM_KEYPOINTS, 0, 0)}
    if contract.codec == "simcc":
        ratio = contract.simcc_split_ratio
        return {
            contract.outputs[0]: (NUM_KEYPOINTS, round(width * ratio)),
            contract.outputs[1]: (NUM_KEYPOINTS, round(height * ratio)),
        }
    if contract.codec == "rtmo":
        return {contract.outputs[0]: (0, 5), contract.outputs[1]: (0, NUM_KEYPOINTS, 3)}
    return {}


def check_outputs(net: OnnxNet, contract: OnnxContract) -> None:
    """Run the network once on a blank input and check its outputs fit the codec.

    Raises:
        NetworkError: naming the output, its shape and what the codec needs.
    """
    try:
        out = net(torch.zeros((1, 3, *contract.input_hw)))
    except NetworkError:
        raise
    except Exception as exc:  # noqa: BLE001 - ORT's errors for shape mismatches vary
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise NetworkError(
            f"{net.name}: fails on a {list(contract.input_hw)} input ({reason})"
        ) from exc
    for name, tail in _expected_shapes(contract).items():
        shape = tuple(out[name].shape)
        fits = len(shape) == len(tail) + 1 and all(
            t == 0 or t == s for t, s in zip(tail, shape[1:], strict=True)
        )
        if not fits:
            wanted = "[N, " + ", ".join("*" if t == 0 else str(t) for t in tail) + "]"
            raise NetworkError(
                f"{net.name}: output {name!r} has shape {list(shape)}; codec "
                f"{contract.codec!r} needs {wanted} for a {list(contract.input_hw)} input"
            )


def _stored_contract(net: OnnxNet) -> dict[str, Any]:
    """The pre-processing a DetPose export recorded in its metadata (empty for others)."""
    raw = net.metadata.get(CONTRACT_METADATA)
    if raw is None:
        return {}
    try:
        stored = json.loads(raw)
    except ValueError as exc:
        raise NetworkError(f"{net.name}: damaged {CONTRACT_METADATA!r} metadata ({exc})") from exc
    return stored if isinstance(stored, dict) else {}


def _triple(value: Any) -> tuple[float, float, float] | None:
    return None if value is None else (float(value[0]), float(value[1]), float(value[2]))


def load_onnx(data: bytes, name: str, device: torch.device | str, spec: OnnxSpec) -> LoadedModel:
    """An ONNX network with its contract resolved against the file and checked by one run.

    Raises:
        NetworkError: not loadable, or inputs/outputs that do not fit ``spec``'s codec.
    """
    net = OnnxNet(data, name, device)
    reference = CODEC_REFERENCE[spec.codec]
    stored = _stored_contract(net)
    input_hw, channels_last = _input_layout(net, spec)
    movenet = _movenet_decoding(net) if spec.codec == "movenet" else None
    outputs = (
        tuple(movenet.network.outputs.values()) if movenet else _codec_outputs(net, spec.codec)
    )
    contract = OnnxContract(
        spec.codec,
        input_hw,
        channels_last,
        spec.channels or stored.get("channels") or reference.channels,
        spec.mean or _triple(stored.get("mean")) or reference.mean,
        spec.std or _triple(stored.get("std")) or reference.std,
        spec.simcc_split_ratio,
        outputs,
        spec.crop_padding or stored.get("crop_padding") or reference.crop_padding,
        movenet,
    )
    net.contract = contract
    check_outputs(net, contract)
    return LoadedModel(net, movenet or contract, name, random_init=False)


def reference_affines(
    boxes_xyxy: np.ndarray, out_hw: tuple[int, int], padding: float
) -> np.ndarray:
    """mmpose's top-down crop matrices (``bbox_xyxy2cs``, ``_fix_aspect_ratio``,
    ``get_warp_matrix`` without rotation): ``[N, 2, 3]`` image→crop, mapping the box centre
    to ``(W/2, H/2)`` and the padded, aspect-fixed box onto the crop."""
    boxes = np.asarray(boxes_xyxy, np.float64).reshape(-1, 4)
    out_h, out_w = out_hw
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2.0
    w = (boxes[:, 2] - boxes[:, 0]) * padding
    h = (boxes[:, 3] - boxes[:, 1]) * padding
    aspect = out_w / out_h
    w = np.where(w > h * aspect, w, h * aspect)
    w = np.maximum(w, 1e-6)
    scale = out_w / w
    affines = np.zeros((len(boxes), 2, 3))
    affines[:, 0, 0] = affines[:, 1, 1] = scale
    affines[:, 0, 2] = out_w / 2.0 - scale * centre[:, 0]
    affines[:, 1, 2] = out_h / 2.0 - scale * centre[:, 1]
    return affines


def _guided_pick(
    values: torch.Tensor,
    positions: list[torch.Tensor],
    guide: torch.Tensor,
    found: torch.Tensor,
    inside: torch.Tensor | None,
    cell: float,
) -> torch.Tensor:
    """Index of the chosen cell per ``[N, K]`` map: the argmax (``found`` false), or the cell
    ranking highest by value / (distance to the guide + bias) (``found``), only among cells
    ``inside`` the box where the box leaves any.

    ``values``: ``[N, K, C]`` flattened maps; ``positions``: per axis ``[C]`` coordinate of
    each cell in crop pixels; ``guide``: ``[N, K, len(positions)]`` crop pixels.
    """
    allowed = torch.ones_like(values, dtype=torch.bool)
    if inside is not None:  # a box that leaves no cell constrains nothing
        allowed = inside | ~inside.any(dim=-1, keepdim=True)
    plain = torch.where(allowed, values, -torch.inf)
    distance = torch.sqrt(
        sum((pos[None, None] - guide[..., i, None]) ** 2 for i, pos in enumerate(positions))
    )
    near = torch.where(allowed, values.clamp(min=0) / (distance / cell + GUIDE_DISTANCE_BIAS), -1.0)
    # A guided keypoint with no positive cell left falls back to the plain maximum.
    use_guide = found & (near.amax(dim=-1) > 0)
    return torch.where(use_guide[..., None], near, plain).argmax(dim=-1)


def decode_heatmap_reference(
    heatmaps: torch.Tensor,
    stride: tuple[float, float],
    guide_xy: torch.Tensor | None = None,
    found: torch.Tensor | None = None,
    box_xy: torch.Tensor | None = None,
) -> torch.Tensor:
    """mmpose MSRA heatmap decode → ``[N, K, 3]`` (x, y) in crop pixels and the value at the
    peak: argmax, a quarter cell towards the higher neighbour (``refine_keypoints``), times
    the ``(x, y)`` stride. With a guide, the peak is chosen by ``_guided_pick``."""
    num, k, height, width = heatmaps.shape
    flat = heatmaps.reshape(num, k, -1).float()
    if guide_xy is None:
        index = flat.argmax(dim=-1)
    else:
        ys = torch.arange(height).repeat_interleave(width).float() * stride[1]
        xs = torch.arange(width).repeat(height).float() * stride[0]
        inside = None
        if box_xy is not None:
            inside = (
                (xs[None, None] >= box_xy[:, None, None, 0])
                & (xs[None, None] <= box_xy[:, None, None, 2])
                & (ys[None, None] >= box_xy[:, None, None, 1])
                & (ys[None, None] <= box_xy[:, None, None, 3])
            ).expand(num, k, -1)
        cell = max(height * stride[1], width * stride[0]) / GUIDE_GRID
        index = _guided_pick(flat, [xs, ys], guide_xy, found, inside, cell)
    values = flat.gather(-1, index[..., None])[..., 0]
    x, y = index % width, index // width
    padded = F.pad(heatmaps.float(), (1, 1, 1, 1))

    def at(dy: int, dx: int) -> torch.Tensor:
        rows = padded.reshape(num, k, -1)
        return rows.gather(-1, ((y + 1 + dy) * (width + 2) + (x + 1 + dx))[..., None])[..., 0]

    # refine_keypoints: x moves where 1 < x < W - 1 (and 0 < y < H), y where 1 < y < H - 1.
    dx = torch.where((x > 1) & (x < width - 1) & (y > 0), at(0, 1) - at(0, -1), 0.0)
    dy = torch.where((y > 1) & (y < height - 1) & (x > 0), at(1, 0) - at(-1, 0), 0.0)
    out = torch.zeros((num, k, 3))
    out[..., 0] = (x.float() + 0.25 * torch.sign(dx)) * stride[0]
    out[..., 1] = (y.float() + 0.25 * torch.sign(dy)) * stride[1]
    out[..., 2] = values
    return out


def decode_simcc_reference(
    simcc_x: torch.Tensor,
    simcc_y: torch.Tensor,
    split_ratio: float,
    guide_xy: torch.Tensor | None = None,
    found: torch.Tensor | None = None,
    box_xy: torch.Tensor | None = None,
) -> torch.Tensor:
    """mmpose ``get_simcc_maximum`` → ``[N, K, 3]``: each axis's argmax divided by
    ``split_ratio`` (crop pixels), the score the smaller of the two maxima. With a guide,
    each axis's bin is chosen by ``_guided_pick`` along that axis."""
    xs_all = torch.arange(simcc_x.shape[-1]).float() / split_ratio
    ys_all = torch.arange(simcc_y.shape[-1]).float() / split_ratio
    if guide_xy is None:
        ix, iy = simcc_x.argmax(dim=-1), simcc_y.argmax(dim=-1)
    else:
        cell = max(xs_all[-1].item(), ys_all[-1].item()) / GUIDE_GRID
        inside_x = inside_y = None
        if box_xy is not None:
            inside_x = (xs_all[None, None] >= box_xy[:, None, None, 0]) & (
                xs_all[None, None] <= box_xy[:, None, None, 2]
            )
            inside_y = (ys_all[None, None] >= box_xy[:, None, None, 1]) & (
                ys_all[None, None] <= box_xy[:, None, None, 3]
            )
            inside_x = inside_x.expand(*simcc_x.shape[:2], -1)
            inside_y = inside_y.expand(*simcc_y.shape[:2], -1)
        ix = _guided_pick(simcc_x.float(), [xs_all], guide_xy[..., :1], found, inside_x, cell)
        iy = _guided_pick(simcc_y.float(), [ys_all], guide_xy[..., 1:], found, inside_y, cell)
    max_x = simcc_x.float().gather(-1, ix[..., None])[..., 0]
    max_y = simcc_y.float().gather(-1, iy[..., None])[..., 0]
    out = torch.zeros((*simcc_x.shape[:2], 3))
    out[..., 0] = ix.float() / split_ratio
    out[..., 1] = iy.float() / split_ratio
    out[..., 2] = torch.minimum(max_x, max_y)
    return out


class OnnxTopDownRefiner(CropRefiner):
    """A top-down ONNX refiner (codec ``heatmap`` or ``simcc``) on the reference crops."""

    @property
    def default_padding(self) -> float:  # type: ignore[override]
        return self.loaded.config.crop_padding or TOP_DOWN_PADDING

    @property
    def crop_hw(self) -> tuple[int, int]:
        return self.loaded.config.input_hw

    def _affines(self, boxes: np.ndarray, padding: float) -> np.ndarray:
        return reference_affines(boxes, self.crop_hw, padding)

    def _keypoints(
        self,
        crops: torch.Tensor,
        guide_xy: np.ndarray,
        guide_found: np.ndarray,
        box_xy: np.ndarray | None,
    ) -> np.ndarray:
        contract: OnnxContract = self.loaded.config
        out = self.loaded.net(crops)
        guided = self.guide != "off"
        guide = torch.as_tensor(guide_xy, dtype=torch.float32) if guided else None
        found = torch.as_tensor(guide_found) if guided else None
        box = torch.as_tensor(box_xy, dtype=torch.float32) if box_xy is not None else None
        if contract.codec == "simcc":
            decoded = decode_simcc_reference(
                out[contract.outputs[0]].cpu(),
                out[contract.outputs[1]].cpu(),
                contract.simcc_split_ratio,
                guide,
                found,
                box,
            )
        else:
            heatmaps = out[contract.outputs[0]].cpu()
            height, width = contract.input_hw
            stride = (width / heatmaps.shape[3], height / heatmaps.shape[2])
            decoded = decode_heatmap_reference(heatmaps, stride, guide, found, box)
        return decoded.numpy().astype(np.float64)


class OnnxRtmoStage1:
    """Stage 1 with a one-stage multi-person ONNX network (codec ``rtmo``): its boxes are
    the proposals, its keypoints their grouped coarse poses."""

    def __init__(self, loaded: LoadedModel, device: torch.device, settings: Stage1Settings):
        self.loaded = loaded
        self.device = device
        self.top_k = settings.proposals_per_image
        self.min_score = settings.box_score_threshold

    def _letterbox(self, image: np.ndarray) -> tuple[torch.Tensor, float]:
        """rtmlib's RTMO input: resized by ``min(S/h, S/w)`` (bilinear, no antialiasing,
        as ``cv2.resize``), rounded to uint8, in the top-left of an ``S × S`` canvas of 114."""
        size_h, size_w = self.loaded.config.input_hw
        height, width = image.shape[:2]
        ratio = min(size_h / height, size_w / width)
        new_h, new_w = max(1, int(height * ratio)), max(1, int(width * ratio))
        tensor = image_to_float_tensor(image, self.device)[None]
        if (new_h, new_w) != (height, width):
            tensor = (
                F.interpolate(
                    tensor,
                    size=(new_h, new_w),
                    mode="bilinear",
                    align_corners=False,
                    antialias=False,
                )
                .round()
                .clamp(0, 255)
            )
        canvas = torch.full((3, size_h, size_w), RTMO_PAD_VALUE, device=self.device)
        canvas[:, :new_h, :new_w] = tensor[0]
        return canvas, ratio

    @torch.inference_mode()
    def __call__(self, images_rgb: list[np.ndarray]) -> list[CoarseProposals]:
        if not images_rgb:
            return []
        prepared = [self._letterbox(image) for image in images_rgb]
        batch = torch.stack([canvas for canvas, _ in prepared])
        contract: OnnxContract = self.loaded.config
        out = self.loaded.net(batch)
        dets = out[contract.outputs[0]].cpu().numpy().astype(np.float64)
        kpts = out[contract.outputs[1]].cpu().numpy().astype(np.float64)
        results = []
        for i, (image, (_, ratio)) in enumerate(zip(images_rgb, prepared, strict=True)):
            scores = dets[i, :, 4]
            # The graph pads its NMS output with junk rows: keep only scored ones.
            order = np.argsort(-scores, kind="stable")
            order = order[scores[order] > max(self.min_score, 0.0)][: self.top_k]
            boxes = dets[i, order, :4] / ratio
            height, width = image.shape[:2]
            boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, width - 1)
            boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, height - 1)
            poses = kpts[i, order].copy()
            poses[..., :2] /= ratio
            poses[..., 2] = poses[..., 2].clip(0.0, 1.0)
            results.append(
                CoarseProposals.grouped(
                    boxes.astype(np.float32),
                    scores[order].astype(np.float32),
                    poses.astype(np.float32),
                )
            )
        return results


@dataclass(frozen=True)
class OnnxNetwork(NetworkAdapter):
    """An ONNX network: the spec's (``model: onnx``) or a registered one with its own file.

    Register a downloaded or exported file under a name of its own with
    ``register(OnnxNetwork("rtmpose-m", "refiner", OnnxSpec(codec="simcc"), "/models/x.onnx"))``.
    """

    name: str
    stage: StageKind
    contract: OnnxSpec
    weights: str | None = None  # the file used when the spec names no checkpoint
    description: str = ""
    licence: str = "see the file's source"

    def __post_init__(self) -> None:
        if ONNX_CODEC_STAGES[self.contract.codec] != self.stage:
            raise NetworkError(
                f"network {self.name!r}: codec {self.contract.codec!r} decodes a "
                f"{ONNX_CODEC_STAGES[self.contract.codec]} network, not a {self.stage}"
            )
        if not self.description:
            object.__setattr__(
                self, "description", f"ONNX network, codec {self.contract.codec!r} (ONNX Runtime)"
            )

    @property
    def options(self) -> frozenset[str]:  # type: ignore[override]
        return REFINER_OPTIONS if self.stage == "refiner" else frozenset()

    @property
    def crop_padding(self) -> float | None:  # type: ignore[override]
        if self.stage != "refiner":
            return None
        return self.contract.crop_padding or CODEC_REFERENCE[self.contract.codec].crop_padding

    @property
    def default_guide(self) -> str:  # type: ignore[override]
        # MoveNet heads decode as the zoo's (guided); the reference codecs as published.
        return "pose" if self.contract.codec == "movenet" else "off"

    def default_weights(self) -> Path | None:
        return Path(self.weights) if self.weights else None

    def install_hint(self) -> str:
        return "download the file, or give the stage a checkpoint"

    def load(self, data: bytes | None, name: str, device: torch.device | str) -> LoadedModel:
        if data is None:
            raise NetworkError(f"network {self.name!r}: no ONNX file")
        return load_onnx(data, name, device, self.contract)

    def input_hw(
        self, loaded: LoadedModel, stage1_input_size: int | None = None
    ) -> tuple[int, int]:
        return loaded.net.contract.input_hw

    def runner(
        self, loaded: LoadedModel, device: torch.device, settings: Any, max_crops: int = 64
    ) -> Callable[..., list[Any]]:
        if self.stage == "stage1":
            assert isinstance(settings, Stage1Settings)
            return OnnxRtmoStage1(loaded, device, settings)
        assert isinstance(settings, RefinerSettings)
        if self.contract.codec == "movenet":
            return MoveNetCropRefiner(loaded, device, settings, max_crops)
        return OnnxTopDownRefiner(loaded, device, settings, max_crops)

    def measure(self, loaded: LoadedModel) -> tuple[int | None, float | None]:
        return None, None  # torch's FLOP counter cannot see inside an ONNX Runtime session

    def info(self) -> NetworkInfo:
        return NetworkInfo(f"ONNX file {self.weights or '(the spec’s checkpoint)'}", self.licence)
