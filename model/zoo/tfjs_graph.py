"""Read a TensorFlow.js graph model (``NAME.json`` topology + weight shards) into plain data.

The result is a :class:`GraphSpec`: the nodes between one input node and the chosen output
nodes, in execution order, with their attributes decoded to primitives, plus every constant
those nodes read as a tensor (float16-quantised weights dequantised exactly: float16 to
float32 is lossless, so they are kept as float16). ``model/nets/imported.py`` builds a torch
module from it. Nothing here runs a network.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

# TF dtype names in a weights manifest → numpy dtypes of the stored (unquantised) values.
_MANIFEST_DTYPES = {"float32": np.float32, "int32": np.int32, "bool": np.bool_}
# Quantised storage dtypes (``quantization.dtype``) and their byte widths.
_QUANTISED = {"float16": np.float16, "uint8": np.uint8, "uint16": np.uint16}
# Attributes that describe dtypes or shapes for TF's own checks; the importer needs none.
_IGNORED_ATTRS = frozenset(
    {
        "T",
        "dtype",
        "_output_shapes",
        "Tidx",
        "Tshape",
        "Index",
        "Tpaddings",
        "DstT",
        "SrcT",
        "Truncate",
        "TI",
        "num_args",
        "N",
        "Tindices",
        "Tparams",
        "Tdim",
        "Taxis",
        "out_type",
        "Tmultiples",
        "index_type",
        "output_type",
        "use_cudnn_on_gpu",
        "epsilon",
        "data_format",
        "explicit_paddings",
        "_grappler_ArithmeticOptimizer_MinimizeBroadcasts",
        "_grappler_ArithmeticOptimizer_AddOpsRewriteStage",
        "incompatible_shape_error",
        "Tlen",
        "num_split",
        "value",
        "shape",
    }
)


class GraphImportError(ValueError):
    """A TF.js model the importer cannot read or cut as asked; the message says why."""


@dataclass(frozen=True)
class GraphNode:
    """One operation: ``inputs`` name other nodes' outputs as ``name`` or ``name:index``."""

    name: str
    op: str
    inputs: tuple[str, ...]
    attrs: dict[str, Any]

    def as_record(self) -> dict[str, Any]:
        return {"name": self.name, "op": self.op, "inputs": list(self.inputs), "attrs": self.attrs}

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> GraphNode:
        return cls(record["name"], record["op"], tuple(record["inputs"]), dict(record["attrs"]))


@dataclass(frozen=True)
class GraphSpec:
    """The cut graph: ``nodes`` run in order from ``input_name`` to ``output_names``."""

    input_name: str
    output_names: tuple[str, ...]
    nodes: tuple[GraphNode, ...]
    consts: dict[str, torch.Tensor]

    def as_record(self) -> dict[str, Any]:
        """Primitives and tensors only, for a ``weights_only`` checkpoint."""
        return {
            "input": self.input_name,
            "outputs": list(self.output_names),
            "nodes": [node.as_record() for node in self.nodes],
            "consts": dict(self.consts),
        }

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> GraphSpec:
        return cls(
            record["input"],
            tuple(record["outputs"]),
            tuple(GraphNode.from_record(n) for n in record["nodes"]),
            dict(record["consts"]),
        )


def _decode_attr(value: dict[str, Any]) -> Any:
    """A TF ``AttrValue`` (JSON form) → int, float, bool, str or a list of them."""
    if "list" in value:
        items = value["list"]
        if "s" in items:
            return [base64.b64decode(s).decode() for s in items["s"]]
        if "i" in items:
            return [int(i) for i in items["i"]]
        if "f" in items:
            return [float(f) for f in items["f"]]
        return []
    if "s" in value:
        return base64.b64decode(value["s"]).decode()
    if "i" in value:
        return int(value["i"])
    if "f" in value:
        return float(value["f"])
    if "b" in value:
        return bool(value["b"])
    raise GraphImportError(f"unsupported attribute value {value!r}")


def read_weights(model_dir: Path, manifest: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    """Every weight of a TF.js weights manifest, dequantised (float16 kept as float16)."""
    weights: dict[str, np.ndarray] = {}
    for group in manifest:
        data = b"".join((model_dir / path).read_bytes() for path in group["paths"])
        offset = 0
        for spec in group["weights"]:
            shape = tuple(int(d) for d in spec["shape"])
            count = int(np.prod(shape, dtype=np.int64))
            quant = spec.get("quantization")
            if quant:
                stored = _QUANTISED.get(quant["dtype"])
                if stored is None:
                    raise GraphImportError(f"{spec['name']}: unsupported quantisation {quant}")
                raw = np.frombuffer(data, stored, count, offset)
                offset += count * np.dtype(stored).itemsize
                if stored is np.float16:
                    value = raw.copy()
                else:  # affine integer quantisation: value = q * scale + min
                    value = (raw.astype(np.float32) * quant["scale"] + quant["min"]).astype(
                        np.float32
                    )
            else:
                dtype = _MANIFEST_DTYPES.get(spec["dtype"])
                if dtype is None:
                    raise GraphImportError(f"{spec['name']}: unsupported dtype {spec['dtype']}")
                value = np.frombuffer(data, dtype, count, offset).copy()
                offset += count * np.dtype(dtype).itemsize
            weights[spec["name"]] = value.reshape(shape)
        if offset != len(data):
            raise GraphImportError(
                f"weights of {group['paths']} hold {len(data)} bytes; the manifest describes {offset}"
            )
    return weights


def _node_name(tensor_ref: str) -> str:
    """``"^name"`` / ``"name:1"`` → ``"name"``."""
    return tensor_ref.lstrip("^").split(":")[0]


def read_graph(model_json: Path, input_name: str, output_names: tuple[str, ...]) -> GraphSpec:
    """The nodes of ``model_json`` needed to compute ``output_names`` from ``input_name``.

    ``input_name`` may be any node: the graph is cut there and the node's output becomes
    the module's input (used to skip a model's single-image pre-processing).

    Raises:
        GraphImportError: an unknown node, or an output that needs a placeholder other
            than ``input_name``.
    """
    model = json.loads(model_json.read_text())
    nodes = {n["name"]: n for n in model["modelTopology"]["node"]}
    weights = read_weights(model_json.parent, model["weightsManifest"])
    for name in (input_name, *output_names):
        if name not in nodes:
            raise GraphImportError(f"{model_json.name} has no node {name!r}")

    order: list[str] = []
    seen: set[str] = set()

    def visit(name: str) -> None:  # depth-first post-order = a valid execution order
        stack = [(name, False)]
        while stack:
            current, expanded = stack.pop()
            if expanded:
                order.append(current)
                continue
            if current in seen:
                continue
            seen.add(current)
            stack.append((current, True))
            if current == input_name or nodes[current]["op"] == "Const":
                continue
            if nodes[current]["op"] == "Placeholder":
                raise GraphImportError(
                    f"{model_json.name}: {output_names} need placeholder {current!r}, "
                    f"which is before the cut at {input_name!r}"
                )
            for ref in reversed(nodes[current].get("input", [])):
                if not ref.startswith("^"):
                    stack.append((_node_name(ref), False))

    for name in output_names:
        visit(name)
    consts: dict[str, torch.Tensor] = {}
    graph_nodes = []
    for name in order:
        node = nodes[name]
        if node["op"] == "Const":
            if name not in weights:
                raise GraphImportError(f"{model_json.name}: constant {name!r} has no weights")
            consts[name] = torch.from_numpy(np.ascontiguousarray(weights[name]))
            continue
        if name == input_name:
            continue
        attrs = {
            key: _decode_attr(value)
            for key, value in sorted(node.get("attr", {}).items())
            if key not in _IGNORED_ATTRS
        }
        inputs = tuple(ref for ref in node.get("input", []) if not ref.startswith("^"))
        graph_nodes.append(GraphNode(name, node["op"], inputs, attrs))
    return GraphSpec(input_name, tuple(output_names), tuple(graph_nodes), consts)
