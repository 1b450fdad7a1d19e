"""A torch module built from an imported TensorFlow graph (``model/zoo/tfjs_graph.py``).

The graph is TF's (NHWC semantics); the module runs NCHW inside: every 4-D tensor is held
as NCHW, and the few ops whose meaning depends on the layout (axes, constants broadcast
against feature maps, shapes) translate. Convolutions become ``nn.Conv2d`` modules with
TF's SAME padding reproduced (asymmetric when TF pads more on the bottom/right), resizes
reproduce ``ResizeBilinear``'s ``align_corners``/``half_pixel_centers`` rules, so outputs
match the original runtime. Any batch size, CPU or CUDA, float32 or under autocast.

Only the op vocabulary of the network bodies is supported; the models' single-image
decoding tails are cut off on import and rewritten as batched code (``model/zoo/decode.py``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from model.zoo.tfjs_graph import GraphNode, GraphSpec

# NHWC axis → NCHW axis, for 4-D tensors.
_NHWC_TO_NCHW = {0: 0, 1: 2, 2: 3, 3: 1}
_ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "Relu": F.relu,
    "Relu6": lambda x: x.clamp(0.0, 6.0),
    "Sigmoid": torch.sigmoid,
}

Value = torch.Tensor | list[int]


def same_padding(size: int, kernel: int, stride: int, dilation: int = 1) -> tuple[int, int]:
    """TF's SAME padding ``(before, after)`` along one spatial dimension."""
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
    return total // 2, total - total // 2


def _to_nchw_operand(const: torch.Tensor) -> torch.Tensor:
    """A constant broadcast against an NHWC feature map, re-laid out for an NCHW one."""
    if const.dim() == 0:
        return const
    shaped = const.reshape((1,) * (4 - const.dim()) + tuple(const.shape))
    return shaped.permute(0, 3, 1, 2)


def _axis(axis: int, rank: int) -> int:
    axis = axis % rank
    return _NHWC_TO_NCHW[axis] if rank == 4 else axis


def resize_bilinear(
    x: torch.Tensor, size: tuple[int, int], align_corners: bool, half_pixel_centers: bool
) -> torch.Tensor:
    """TF ``ResizeBilinear`` on NCHW ``x``."""
    if half_pixel_centers and not align_corners:
        return F.interpolate(x, size=size, mode="bilinear", align_corners=False)
    if align_corners:
        return F.interpolate(x, size=size, mode="bilinear", align_corners=True)
    # TF's legacy rule (neither flag): source = destination * in / out, no half-pixel shift.
    out = x
    for dim, new in ((2, size[0]), (3, size[1])):
        old = out.shape[dim]
        src = torch.arange(new, device=x.device, dtype=torch.float32) * (old / new)
        low = src.floor().clamp(max=old - 1)
        frac = (src - low).to(out.dtype)
        low = low.long()
        high = (low + 1).clamp(max=old - 1)
        shape = [1] * out.dim()
        shape[dim] = new
        frac = frac.view(shape)
        out = out.index_select(dim, low) * (1 - frac) + out.index_select(dim, high) * frac
    return out


class TFConv2d(nn.Module):
    """``Conv2D`` / ``DepthwiseConv2dNative`` (optionally fused with BiasAdd + activation)."""

    def __init__(
        self,
        kernel_hwio: torch.Tensor,
        bias: torch.Tensor | None,
        attrs: dict[str, Any],
        depthwise: bool,
        activation: str | None,
    ):
        super().__init__()
        kh, kw, cin, mult = kernel_hwio.shape
        weight = kernel_hwio.float().permute(3, 2, 0, 1)  # [out, in, kh, kw] (Conv2D)
        if depthwise:  # [kh, kw, in, mult] → [in * mult, 1, kh, kw]
            weight = kernel_hwio.float().permute(2, 3, 0, 1).reshape(cin * mult, 1, kh, kw)
        self.weight = nn.Parameter(weight, requires_grad=False)
        self.bias = None if bias is None else nn.Parameter(bias.float(), requires_grad=False)
        self.groups = cin if depthwise else 1
        self.stride = tuple(attrs.get("strides", [1, 1, 1, 1])[1:3])
        self.dilation = tuple(attrs.get("dilations", [1, 1, 1, 1])[1:3])
        self.kernel = (kh, kw)
        self.same = attrs.get("padding", "VALID") == "SAME"
        if attrs.get("padding", "VALID") not in ("SAME", "VALID"):
            raise ValueError(f"unsupported padding {attrs.get('padding')!r}")
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.same:
            top, bottom = same_padding(x.shape[2], self.kernel[0], self.stride[0], self.dilation[0])
            left, right = same_padding(x.shape[3], self.kernel[1], self.stride[1], self.dilation[1])
            if (top, left) == (bottom, right):
                padding: tuple[int, int] = (top, left)
            else:
                x = F.pad(x, (left, right, top, bottom))
                padding = (0, 0)
        else:
            padding = (0, 0)
        y = F.conv2d(x, self.weight, self.bias, self.stride, padding, self.dilation, self.groups)
        return _ACTIVATIONS[self.activation](y) if self.activation else y


def _fused_activation(node: GraphNode) -> str | None:
    fused = node.attrs.get("fused_ops", [])
    if not fused:
        return None
    if (
        fused[0] != "BiasAdd"
        or len(fused) > 2
        or (len(fused) == 2 and fused[1] not in _ACTIVATIONS)
    ):
        raise ValueError(f"{node.name}: unsupported fused ops {fused}")
    return fused[1] if len(fused) == 2 else None


class ImportedGraphNet(nn.Module):
    """Runs a :class:`GraphSpec` on NCHW input; returns its outputs by name (4-D as NCHW)."""

    def __init__(self, graph: GraphSpec):
        super().__init__()
        self.graph = graph
        self.convs = nn.ModuleDict()
        self._conv_of: dict[str, str] = {}
        # conv module key → the graph constants it was built from: (kernel, bias or None).
        self._conv_consts: dict[str, tuple[str, str | None]] = {}
        for index, node in enumerate(graph.nodes):
            if node.op in (
                "Conv2D",
                "_FusedConv2D",
                "DepthwiseConv2dNative",
                "FusedDepthwiseConv2dNative",
            ):
                kernel = graph.consts[node.inputs[1].split(":")[0]]
                fused = node.op.startswith(("_Fused", "Fused"))
                bias = graph.consts[node.inputs[2].split(":")[0]] if fused else None
                key = f"n{index}"
                self.convs[key] = TFConv2d(
                    kernel, bias, node.attrs, "Depthwise" in node.op, _fused_activation(node)
                )
                self._conv_of[node.name] = key
                self._conv_consts[key] = (
                    node.inputs[1].split(":")[0],
                    node.inputs[2].split(":")[0] if fused else None,
                )
            elif node.op not in _OPS:
                raise ValueError(f"{node.name}: op {node.op} is not supported by the importer")
        # Constants read at run time: float operands of elementwise ops (broadcast against
        # feature maps, so re-laid out for NCHW) and integer shapes and axes.
        used = {
            ref.split(":")[0]
            for node in graph.nodes
            if node.name not in self._conv_of
            for ref in node.inputs
        }
        self._const_keys: dict[str, str] = {}
        for i, name in enumerate(sorted(used & graph.consts.keys())):
            value = graph.consts[name]
            buffer = _to_nchw_operand(value.float()) if value.is_floating_point() else value
            self.register_buffer(f"c{i}", buffer, persistent=False)
            self._const_keys[name] = f"c{i}"
        # After each node, the values no later node reads: dropped as the pass goes, so a
        # forward pass holds only live activations, not every layer's.
        last_use = {
            ref.split(":")[0]: i for i, node in enumerate(graph.nodes) for ref in node.inputs
        }
        produced = {node.name for node in graph.nodes} | {graph.input_name}
        self._dead_after: list[list[str]] = [[] for _ in graph.nodes]
        for name, i in last_use.items():
            if name in produced and name not in graph.output_names:
                self._dead_after[i].append(name)

    def trained_consts(self) -> dict[str, torch.Tensor]:
        """The convolutions' current weights as the graph's constants (TF's HWIO kernel
        layout, float32), to write back into a :class:`GraphSpec` after training."""
        consts: dict[str, torch.Tensor] = {}
        for key, (kernel_name, bias_name) in self._conv_consts.items():
            conv = self.convs[key]
            weight = conv.weight.detach().float().cpu()
            if conv.groups > 1:  # depthwise [in * mult, 1, kh, kw] → [kh, kw, in, mult]
                cin = conv.groups
                mult = weight.shape[0] // cin
                kernel = weight.reshape(cin, mult, *weight.shape[2:]).permute(2, 3, 0, 1)
            else:  # [out, in, kh, kw] → [kh, kw, in, out]
                kernel = weight.permute(2, 3, 1, 0)
            if kernel_name in consts:
                raise ValueError(f"kernel {kernel_name} is shared by two convolutions")
            consts[kernel_name] = kernel.contiguous()
            if bias_name is not None and conv.bias is not None:
                consts[bias_name] = conv.bias.detach().float().cpu().clone()
        return consts

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        values: dict[str, Value] = {self.graph.input_name: x}
        for name, key in self._const_keys.items():
            values[name] = getattr(self, key)
        for node, dead in zip(self.graph.nodes, self._dead_after, strict=True):
            if node.name in self._conv_of:
                values[node.name] = self.convs[self._conv_of[node.name]](
                    values[node.inputs[0].split(":")[0]]
                )
            else:
                args = [values[ref.split(":")[0]] for ref in node.inputs]
                values[node.name] = _OPS[node.op](node, args)
            for name in dead:
                del values[name]
        return {name: values[name] for name in self.graph.output_names}  # type: ignore[misc]


def _binary(fn: Callable[[Any, Any], Any]) -> Callable[[GraphNode, list[Value]], Value]:
    def run(node: GraphNode, args: list[Value]) -> Value:
        a, b = args
        if isinstance(a, list) or isinstance(b, list):  # shape arithmetic on python ints
            a_list = a if isinstance(a, list) else a.reshape(-1).tolist()
            b_list = b if isinstance(b, list) else b.reshape(-1).tolist()
            if len(a_list) == 1:
                a_list = a_list * len(b_list)
            if len(b_list) == 1:
                b_list = b_list * len(a_list)
            return [int(fn(p, q)) for p, q in zip(a_list, b_list, strict=True)]
        return fn(a, b)

    return run


def _resize(node: GraphNode, args: list[Value]) -> Value:
    x, size = args
    size_hw = size if isinstance(size, list) else [int(v) for v in size.reshape(-1).tolist()]
    return resize_bilinear(
        x,
        (size_hw[0], size_hw[1]),
        node.attrs.get("align_corners", False),
        node.attrs.get("half_pixel_centers", False),
    )


def _max_pool(node: GraphNode, args: list[Value]) -> Value:
    (x,) = args
    kh, kw = node.attrs["ksize"][1:3]
    sh, sw = node.attrs["strides"][1:3]
    if node.attrs.get("padding") == "SAME":
        top, bottom = same_padding(x.shape[2], kh, sh)
        left, right = same_padding(x.shape[3], kw, sw)
        x = F.pad(x, (left, right, top, bottom), value=float("-inf"))
    return F.max_pool2d(x, (kh, kw), (sh, sw))


def _shape(node: GraphNode, args: list[Value]) -> Value:
    (x,) = args
    shape = list(x.shape)
    return [shape[0], shape[2], shape[3], shape[1]] if len(shape) == 4 else shape


def _strided_slice(node: GraphNode, args: list[Value]) -> Value:
    x, begin, end, strides = args
    if not isinstance(x, list):
        raise ValueError(f"{node.name}: StridedSlice is only supported on shapes")
    attrs = node.attrs
    if attrs.get("ellipsis_mask", 0) or attrs.get("new_axis_mask", 0):
        raise ValueError(f"{node.name}: StridedSlice masks {attrs} are not supported")
    b, e, s = (int(t.reshape(-1)[0]) for t in (begin, end, strides))  # type: ignore[union-attr]
    b = None if attrs.get("begin_mask", 0) & 1 else b
    e = None if attrs.get("end_mask", 0) & 1 else e
    if attrs.get("shrink_axis_mask", 0) & 1:
        return [x[b if b is not None else 0]]
    return x[b:e:s]


def _concat(node: GraphNode, args: list[Value]) -> Value:
    *parts, axis = args
    tensors = [p for p in parts if isinstance(p, torch.Tensor)]
    return torch.cat(tensors, dim=_axis(int(axis), tensors[0].dim()))


def _mean(node: GraphNode, args: list[Value]) -> Value:
    x, axes = args
    dims = [_axis(int(a), x.dim()) for a in axes.reshape(-1).tolist()]  # type: ignore[union-attr]
    return x.mean(dim=dims, keepdim=bool(node.attrs.get("keep_dims", False)))


def _pack(node: GraphNode, args: list[Value]) -> Value:
    if all(isinstance(a, list) for a in args) and node.attrs.get("axis", 0) == 0:
        return [v for a in args for v in a]  # type: ignore[union-attr]
    raise ValueError(f"{node.name}: Pack is only supported on shapes")


_OPS: dict[str, Callable[[GraphNode, list[Value]], Value]] = {
    "Identity": lambda node, args: args[0],
    "Cast": lambda node, args: args[0].float() if isinstance(args[0], torch.Tensor) else args[0],
    "Add": _binary(lambda a, b: a + b),
    "AddV2": _binary(lambda a, b: a + b),
    "Sub": _binary(lambda a, b: a - b),
    "Mul": _binary(lambda a, b: a * b),
    "RealDiv": _binary(lambda a, b: a / b),
    "Maximum": _binary(
        lambda a, b: torch.maximum(a, b) if isinstance(a, torch.Tensor) else max(a, b)
    ),
    "Minimum": _binary(
        lambda a, b: torch.minimum(a, b) if isinstance(a, torch.Tensor) else min(a, b)
    ),
    "Relu": lambda node, args: F.relu(args[0]),
    "Relu6": lambda node, args: args[0].clamp(0.0, 6.0),
    "Sigmoid": lambda node, args: torch.sigmoid(args[0]),
    "ResizeBilinear": _resize,
    "MaxPool": _max_pool,
    "Shape": _shape,
    "StridedSlice": _strided_slice,
    "Pack": _pack,
    "ConcatV2": _concat,
    "Mean": _mean,
}
