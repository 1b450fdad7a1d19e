"""What models are installed: each registered network a stage can run, its provenance, size
and cost.

``detpose models`` prints this. Costs are measured, not quoted: parameters are counted and
FLOPs are those of one forward pass at the network's input size, counted by
``torch.utils.flop_counter`` (a multiply-add counts as 2), as for DetPoseNet's configs. An
ONNX network's cost is not counted (``-``): the counter cannot see inside ONNX Runtime.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from model.checkpoint import checkpoint_sha256
from model.networks import registry
from model.networks.base import NetworkAdapter


@dataclass(frozen=True)
class ModelInfo:
    """One registered network."""

    name: str
    stage: str
    installed: bool
    path: str
    source: str
    licence: str
    input_size: str
    parameters: int | None
    gflops: float | None
    megabytes: float | None
    sha256: str | None
    trainable: bool
    install_hint: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def network_info(adapter: NetworkAdapter) -> ModelInfo:
    """What is known of one network: its default weights loaded and measured when installed."""
    info = adapter.info()
    path = adapter.default_weights()
    missing = ModelInfo(
        adapter.name,
        adapter.stage,
        False,
        str(path) if path else "-",
        info.source,
        info.licence,
        "-",
        None,
        None,
        None,
        None,
        adapter.trainable,
        adapter.install_hint(),
    )
    if path is None or not path.exists():
        return missing
    data = path.read_bytes()
    loaded = adapter.load(data, str(path), "cpu")
    params, gflops = adapter.measure(loaded)
    height, width = adapter.input_hw(loaded)
    return ModelInfo(
        adapter.name,
        adapter.stage,
        True,
        str(path),
        info.source,
        info.licence,
        f"{height}x{width}",
        params,
        gflops,
        len(data) / 1e6,
        checkpoint_sha256(data),
        adapter.trainable,
        adapter.install_hint(),
    )


def installed_models() -> list[ModelInfo]:
    """Every registered network, in registration order (the zoo first)."""
    return [network_info(adapter) for adapter in registry.networks()]
