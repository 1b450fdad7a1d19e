"""Every imported zoo network against the original TensorFlow.js runtime.

``tests/data/zoo/`` holds, per network, a real photo letterboxed to its input size and
what ``@tensorflow/tfjs`` computed on it (``tests/zoo_reference``; regenerate with
``make goldens``): samples of every head DetPose imports and the graph's own decoded
output. The committed checkpoints in ``model/weights/zoo`` must reproduce both.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from model.zoo.catalog import NETWORKS
from model.zoo.decode import decode_multi_pose, decode_single_pose
from model.zoo.weights import zoo_model_from_bytes
from tests.helpers import REPO_ROOT

GOLDEN_DIR = REPO_ROOT / "tests" / "data" / "zoo"
# The graph's own tail decodes this many people (TopK k=6 in movenet-multipose).
MULTIPOSE_GRAPH_INSTANCES = 6
# Decoded outputs are coordinates and scores in [0, 1] (the bound).
DECODED_TOLERANCE = 1e-3
# Heads are logits and cell offsets of magnitude up to ~100: float32 rounding over ~100
# layers, relative to the head's largest value.
HEAD_RELATIVE_TOLERANCE = 1e-5


def _golden(name: str) -> tuple[dict, np.ndarray, torch.Tensor]:
    meta = json.loads((GOLDEN_DIR / f"{name}.golden.json").read_text())
    values = np.fromfile(GOLDEN_DIR / f"{name}.golden.bin", "<f4")
    size = NETWORKS[name].input_size
    image = np.fromfile(GOLDEN_DIR / f"{name}.input.bin", np.uint8).reshape(1, size, size, 3)
    return meta, values, torch.from_numpy(image.astype(np.float32)).permute(0, 3, 1, 2)


def _samples(meta: dict, values: np.ndarray, node: str) -> tuple[dict, np.ndarray]:
    entry = meta["nodes"][node]
    return entry, values[entry["offset"] // 4 :][: entry["count"]]


@pytest.fixture(scope="module", params=sorted(NETWORKS))
def imported(request):
    name = request.param
    path: Path = NETWORKS[name].checkpoint_path
    zoo = zoo_model_from_bytes(path.read_bytes(), str(path), name)
    meta, values, image = _golden(name)
    with torch.no_grad():
        outputs = zoo.net(image)
    return name, zoo, meta, values, outputs


def test_goldens_come_from_the_pinned_package_and_the_original_runtime(imported):
    name, zoo, meta, _, _ = imported
    assert meta["model"] == name and meta["backend"] == "cpu"
    assert meta["tfjs_version"] == "4.22.0"
    # The checkpoint was converted from the very files the goldens were computed with.
    assert zoo.record["sha256"][f"models/{name}.json"] == meta["model_json_sha256"]
    assert zoo.record["sha256"][f"models/{name}.bin"] == meta["model_bin_sha256"]


def test_every_head_matches_tensorflow_js(imported):
    name, zoo, meta, values, outputs = imported
    for head, node in zoo.network.outputs.items():
        entry, expected = _samples(meta, values, node)
        ours = outputs[node].permute(0, 2, 3, 1).reshape(-1).numpy().astype(np.float64)
        assert list(outputs[node].permute(0, 2, 3, 1).shape) == entry["shape"], head
        scale = max(abs(entry["min"]), abs(entry["max"]))
        error = np.abs(ours[:: entry["stride"]] - expected).max()
        assert error <= HEAD_RELATIVE_TOLERANCE * scale, f"{name} {head}: max |error| {error}"
        # Whole-tensor checksums: the unsampled values agree too.
        assert ours.sum() == pytest.approx(entry["sum"], rel=1e-5, abs=1e-2), head
        assert np.abs(ours).sum() == pytest.approx(entry["abs_sum"], rel=1e-5), head


def test_batched_decoding_matches_the_graphs_own_tail(imported):
    name, zoo, meta, values, outputs = imported
    heads = {head: outputs[node] for head, node in zoo.network.outputs.items()}
    if zoo.network.role == "single_pose":
        decoded = decode_single_pose(
            heads["centre"],
            heads["heatmaps"],
            heads["regress"],
            heads["offsets"],
            zoo.decode["centre_weight"][..., 0],
            float(zoo.decode["distance_bias"]),
            zoo.decode["cell_to_normalised"],
        )  # [1, 17, 3] (y, x, score) as the graph's [1, 1, 17, 3]
        ours = decoded.reshape(-1)
    else:
        out = decode_multi_pose(
            heads["centre"],
            heads["box_scale"],
            heads["box_offset"],
            heads["heatmaps"],
            heads["regress"],
            heads["offsets"],
            MULTIPOSE_GRAPH_INSTANCES,
        )  # the graph's rows: 17 x (y, x, score), box (y1, x1, y2, x2), score
        keypoints = out["keypoints"].reshape(1, MULTIPOSE_GRAPH_INSTANCES, -1)
        ours = torch.cat([keypoints, out["boxes"], out["scores"][..., None]], -1).reshape(-1)
    entry, expected = _samples(meta, values, "Identity")
    assert entry["stride"] == 1 and entry["count"] == ours.numel()
    error = np.abs(ours.numpy() - expected).max()
    assert error <= DECODED_TOLERANCE, f"{name}: max |error| {error}"
    # The photo has people in it: the comparison is not of two empty outputs.
    assert expected.max() > 0.3


def test_decoding_a_batch_equals_decoding_each_image(imported):
    name, zoo, _, _, _ = imported
    _, _, image = _golden(name)
    batch = torch.cat([image, torch.flip(image, dims=[3])])
    with torch.no_grad():
        together = zoo.net(batch)
        alone = zoo.net(batch[1:])
    for node in zoo.network.outputs.values():
        torch.testing.assert_close(together[node][1:], alone[node], rtol=1e-4, atol=1e-4)
