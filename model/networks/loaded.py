"""A network loaded for inference, as every stage runner receives it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class LoadedModel:
    """A network ready for inference and where its weights came from.

    ``net`` is a ``torch.nn.Module`` or an ONNX Runtime session wrapper with the same call
    shape; ``config`` is what its adapter decodes with (a DetPoseNet config, a ``ZooModel``,
    an ONNX codec).
    """

    net: Any
    config: Any
    source: str
    random_init: bool
