"""Zoo checkpoints: an imported network saved as a DetPose checkpoint, and loaded back.

A zoo checkpoint is ``torch.save`` of tensors and primitives only (read back with
``weights_only=True``)::

    {"format": "detpose-zoo/1", "kind": "zoo", "network": NAME, "graph": {...},
     "decode": {name: tensor}, "record": {package, version, file, sha256s, licence, ...}}

Weights stay float16, exactly as the package stores them (float16 → float32 is lossless),
so a checkpoint is about half the size of a float32 one and identical in what it computes.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from model.checkpoint import (
    CheckpointError,
    check_primitives,
    parse_checkpoint_bytes,
    require_keys,
)
from model.nets.imported import ImportedGraphNet
from model.zoo.catalog import NETWORKS, PACKAGE, PACKAGE_LICENCE, PACKAGE_VERSION, ZooNetwork
from model.zoo.tfjs_graph import GraphSpec, read_graph, read_weights

ZOO_FORMAT = "detpose-zoo/1"
ZOO_KIND = "zoo"


@dataclass(frozen=True)
class ZooModel:
    """An imported network ready to run: its module, decode constants and record."""

    network: ZooNetwork
    net: ImportedGraphNet
    decode: dict[str, torch.Tensor]
    record: dict[str, Any]


def _sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def convert_network(network: ZooNetwork, package_dir: Path) -> dict[str, Any]:
    """The checkpoint payload of ``network``, read from an unpacked npm package."""
    model_json = package_dir / "models" / f"{network.name}.json"
    if not model_json.exists():
        raise CheckpointError(f"{model_json}: not found; is {package_dir} the unpacked {PACKAGE}?")
    graph = read_graph(model_json, network.input_node, tuple(network.outputs.values()))
    manifest = json.loads(model_json.read_text())["weightsManifest"]
    all_weights = read_weights(model_json.parent, manifest)
    decode = {
        key: torch.from_numpy(all_weights[node].copy())
        for key, node in network.decode_consts.items()
    }
    bins = sorted({path for group in manifest for path in group["paths"]})
    record = {
        "package": PACKAGE,
        "package_version": PACKAGE_VERSION,
        "package_licence": PACKAGE_LICENCE,
        "file": f"models/{network.name}.json",
        "sha256": {
            f"models/{name}": _sha256_file(package_dir / "models" / name)
            for name in [f"{network.name}.json", *bins]
        },
        "upstream": network.upstream,
        "upstream_url": network.upstream_url,
        "licence": network.licence,
        "input_size": network.input_size,
        "converted_by": "detpose model.zoo.convert",
    }
    payload = {
        "format": ZOO_FORMAT,
        "kind": ZOO_KIND,
        "network": network.name,
        "graph": graph.as_record(),
        "decode": decode,
        "record": record,
    }
    check_primitives(payload, "checkpoint")
    return payload


def save_zoo_checkpoint(payload: dict[str, Any], path: Path) -> None:
    """Write ``payload`` to ``path`` atomically (byte-identical for identical payloads)."""
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    tmp.write_bytes(buffer.getvalue())
    os.replace(tmp, path)


def zoo_model_from_bytes(data: bytes, name: str, expected_network: str) -> ZooModel:
    """Rebuild an imported network from checkpoint bytes (read with ``weights_only=True``).

    Raises:
        CheckpointError: not a zoo checkpoint, or one of another network.
    """
    payload = parse_checkpoint_bytes(data, name, required=("format", "kind"), expected_format=None)
    return zoo_model_from_payload(payload, name, expected_network)


def zoo_model_from_payload(payload: dict[str, Any], name: str, expected_network: str) -> ZooModel:
    """Rebuild an imported network from a parsed checkpoint dict (``zoo_model_from_bytes``).

    Raises:
        CheckpointError: not a zoo checkpoint, or one of another network.
    """
    if payload["kind"] != ZOO_KIND:
        raise CheckpointError(
            f"{name}: holds a {payload['kind']!r} checkpoint of DetPoseNet, not the zoo network "
            f"{expected_network!r} (DetPoseNet checkpoints need `model: detposenet`)"
        )
    require_keys(
        payload, name, ("format", "kind", "network", "graph", "decode", "record"), ZOO_FORMAT
    )
    if payload["network"] != expected_network:
        raise CheckpointError(
            f"{name}: holds zoo network {payload['network']!r}, expected {expected_network!r}"
        )
    if expected_network not in NETWORKS:
        raise CheckpointError(f"{name}: unknown zoo network {expected_network!r}")
    try:
        net = ImportedGraphNet(GraphSpec.from_record(payload["graph"])).eval()
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{name}: damaged zoo graph: {exc}") from exc
    decode = {key: value.float() for key, value in payload["decode"].items()}
    return ZooModel(NETWORKS[expected_network], net, decode, dict(payload["record"]))
