"""The job's two model stages, resolved on the driver before Ray starts (no Ray here: the
plain loop and the CLI use it too)."""

from __future__ import annotations

from typing import Any

from model.checkpoint import CheckpointError
from model.networks.base import NetworkError
from model.networks.resolve import ResolvedStage, resolve_stage
from pipeline.errors import JobSetupError
from pipeline.store.storage import storage_options
from schemas.spec import JobSpec


def check_weights(spec: JobSpec) -> dict[str, ResolvedStage]:
    """Both model stages resolved once on the driver: the network each names, its weights
    read with the spec's storage settings and loaded on the CPU (a bad file costs seconds,
    not a cluster start), their SHA-256, and the settings each actor needs.

    Raises:
        JobSetupError: an unknown network, an option it does not take, or bad weights.
    """
    stages = {}
    for kind in ("stage1", "refiner"):
        checkpoint = getattr(spec, kind).checkpoint
        options = storage_options(checkpoint, spec.storage) if checkpoint else {}
        try:
            stages[kind] = resolve_stage(kind, spec, options)
        except NetworkError as exc:
            raise JobSetupError(f"{kind}.model: {exc}") from None
        except CheckpointError as exc:
            raise JobSetupError(f"{kind}.checkpoint: {exc}") from None
    return stages


def unchecked_stages(spec: JobSpec) -> dict[str, ResolvedStage]:
    """Both model stages resolved without reading their weights (tests, the plain loop):
    each actor still loads and checks them itself."""
    return {
        kind: resolve_stage(kind, spec, _checkpoint_options(spec, kind), check=False)
        for kind in ("stage1", "refiner")
    }


def _checkpoint_options(spec: JobSpec, kind: str) -> dict[str, Any]:
    checkpoint = getattr(spec, kind).checkpoint
    return storage_options(checkpoint, spec.storage) if checkpoint else {}
