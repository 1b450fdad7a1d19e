"""The one list of networks the stages can run. Adding a network is one adapter file
(``model/networks/base.py`` says what it provides) and one line in ``BUILT_IN`` — or, at run
time, one ``register`` call: the spec's model names, the driver's weight checks, the stage
dispatch, ``detpose models``, the throughput probes and training all read this registry.
"""

from __future__ import annotations

from model.networks import detposenet, zoo
from model.networks.base import STAGE_KINDS, NetworkAdapter, NetworkError, StageKind

# A spec's ``model: onnx`` names no registered network: the ONNX file and its codec come
# from the spec (``stage.checkpoint``, ``stage.onnx``; ``model/networks/onnx.py``).
SPEC_ONNX = "onnx"

BUILT_IN: tuple[NetworkAdapter, ...] = (
    zoo.MOVENET_MULTIPOSE,
    zoo.MOVENET_THUNDER,
    zoo.MOVENET_LIGHTNING,
    detposenet.STAGE1,
    detposenet.REFINER,
)

_NETWORKS: dict[tuple[StageKind, str], NetworkAdapter] = {}


def register(adapter: NetworkAdapter, replace: bool = False) -> NetworkAdapter:
    """Add ``adapter`` under ``(adapter.stage, adapter.name)``; returns it.

    Raises:
        NetworkError: the name is taken (unless ``replace``), reserved, or the stage unknown.
    """
    if adapter.stage not in STAGE_KINDS:
        raise NetworkError(
            f"network {adapter.name!r}: stage {adapter.stage!r} is not one of {STAGE_KINDS}"
        )
    if adapter.name == SPEC_ONNX:
        raise NetworkError(f"network name {SPEC_ONNX!r} is reserved for ONNX files named by a spec")
    key = (adapter.stage, adapter.name)
    if key in _NETWORKS and not replace:
        raise NetworkError(f"{adapter.stage} network {adapter.name!r} is already registered")
    _NETWORKS[key] = adapter
    return adapter


def unregister(stage: StageKind, name: str) -> None:
    """Remove a network registered at run time (tests, plugins)."""
    _NETWORKS.pop((stage, name), None)


def names(stage: StageKind) -> list[str]:
    """The model names a spec's ``stage`` accepts, ``onnx`` last."""
    return [name for kind, name in _NETWORKS if kind == stage] + [SPEC_ONNX]


def network(stage: StageKind, name: str) -> NetworkAdapter:
    """The registered network ``name`` of ``stage``.

    Raises:
        NetworkError: no such network for that stage, naming the ones there are.
    """
    try:
        return _NETWORKS[(stage, name)]
    except KeyError:
        raise NetworkError(
            f"got {stage}.model {name!r}; expected one of {', '.join(names(stage))}"
        ) from None


def networks() -> list[NetworkAdapter]:
    """Every registered network, in registration order."""
    return list(_NETWORKS.values())


for _adapter in BUILT_IN:
    register(_adapter)
