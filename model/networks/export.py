"""The project's own refiners as ONNX files (``detpose models --export-onnx``): a way to run
them under ONNX Runtime, and the test that the ONNX path decodes as the torch path does.

DetPoseNet's refiner exports as codec ``heatmap`` (its normalisation inside the graph), the
zoo's MoveNet as codec ``movenet`` (its raw heads, with the decoding constants in the
file's metadata). Each file also carries its pre-processing (``detpose.contract``), which
``model/networks/onnx.py`` takes where the spec leaves a field out.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import torch
from torch import nn

from model.codecs.image import normalise
from model.networks import registry
from model.networks.base import NetworkError
from model.networks.detposenet import DetPoseNetAdapter
from model.networks.onnx import CONTRACT_METADATA, MOVENET_METADATA
from model.networks.zoo import ZooAdapter
from model.zoo.weights import ZooModel

ONNX_OPSET = 17


class _HeatmapsOnly(nn.Module):
    """DetPoseNet's refiner from float ``0..255`` RGB crops to its final heatmaps."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, crops: torch.Tensor) -> torch.Tensor:
        return self.net(normalise(crops)).heatmaps


class _Heads(nn.Module):
    """An imported MoveNet from float ``0..255`` RGB crops to its four heads, in order."""

    def __init__(self, net: nn.Module, heads: tuple[str, ...]) -> None:
        super().__init__()
        self.net = net
        self.heads = heads

    def forward(self, crops: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.net(crops)
        return tuple(out[name] for name in self.heads)


def export_refiner_onnx(name: str, out: str | os.PathLike) -> str:
    """Write the registered refiner ``name`` (its installed weights) as ONNX to ``out``;
    returns the codec to run it with.

    Raises:
        NetworkError: not a built-in refiner, no weights installed, or no ``onnx`` package.
    """
    adapter = registry.network("refiner", name)
    path = adapter.weights_path(None)
    if path is None or not isinstance(adapter, DetPoseNetAdapter | ZooAdapter):
        raise NetworkError(
            f"refiner {name!r}: only the built-in refiners with installed weights export "
            "(movenet-thunder, movenet-lightning, detposenet)"
        )
    loaded = adapter.load(Path(path).read_bytes(), path, "cpu")
    height, width = adapter.input_hw(loaded)
    metadata: dict[str, str] = {}
    if isinstance(loaded.config, ZooModel):
        zoo = loaded.config
        heads = tuple(zoo.network.outputs.values())
        module: nn.Module = _Heads(loaded.net, heads)
        output_names = list(heads)
        codec, padding = "movenet", adapter.crop_padding
        metadata[MOVENET_METADATA] = json.dumps(
            {
                "network": zoo.network.name,
                "decode": {k: v.tolist() for k, v in zoo.decode.items()},
            }
        )
    else:
        module = _HeatmapsOnly(loaded.net)
        output_names = ["output"]
        codec, padding = "heatmap", float(loaded.config.box_padding)
    metadata[CONTRACT_METADATA] = json.dumps(
        {
            "codec": codec,
            "channels": "rgb",
            "mean": [0.0, 0.0, 0.0],
            "std": [1.0, 1.0, 1.0],
            "crop_padding": padding,
            "exported_from": name,
            "weights": Path(path).name,
        }
    )
    _write_onnx(module.eval(), (height, width), output_names, metadata, Path(out))
    return codec


def _write_onnx(
    module: nn.Module,
    input_hw: tuple[int, int],
    output_names: list[str],
    metadata: dict[str, str],
    out: Path,
) -> None:
    """``torch.onnx.export`` (TorchScript-based: it handles the imported graphs) with a
    dynamic batch, the metadata added, written atomically."""
    try:
        import onnx
    except ImportError as exc:
        raise NetworkError(f"exporting ONNX needs the onnx package ({exc})") from exc
    buffer = io.BytesIO()
    example = torch.zeros((1, 3, *input_hw))
    with torch.no_grad():
        torch.onnx.export(
            module,
            (example,),
            buffer,
            input_names=["input"],
            output_names=output_names,
            dynamic_axes={name: {0: "batch"} for name in ["input", *output_names]},
            opset_version=ONNX_OPSET,
            dynamo=False,
        )
    proto = onnx.load_from_string(buffer.getvalue())
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f"{out.name}.tmp-{os.getpid()}")
    tmp.write_bytes(proto.SerializeToString())
    os.replace(tmp, out)
