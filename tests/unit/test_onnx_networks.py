"""Bring-your-own ONNX networks: the project's own refiners exported with torch.onnx and
run under ONNX Runtime match the torch path; hand-built SimCC and RTMO graphs decode as
worked out by hand; a wrong file, codec or shape is refused on the driver, by name."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from jobs.run_cmd import sample_images
from model.codecs.image import crops_by_affines
from model.networks import registry
from model.networks.base import NetworkError, RefinerSettings, Stage1Settings
from model.networks.export import _write_onnx, export_refiner_onnx
from model.networks.onnx import (
    OnnxNetwork,
    decode_heatmap_reference,
    reference_affines,
)
from model.networks.resolve import load_network
from pipeline.errors import JobSetupError
from pipeline.graph.model_stages import check_weights
from schemas.spec import JobSpec, OnnxSpec, SpecError

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> dict[str, str]:
    """The built-in Thunder and DetPoseNet refiners as ONNX files."""
    folder = tmp_path_factory.mktemp("onnx")
    return {
        name: (str(folder / f"{name}.onnx"), export_refiner_onnx(name, folder / f"{name}.onnx"))
        for name in ("movenet-thunder", "detposenet")
    }


@pytest.fixture(scope="module")
def crowd_photo() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A bundled photo of several people (COCO 000000196141), two person boxes and rough
    coarse poses for them (their box centres, so the guide has something to follow)."""
    path = next(p for p in sample_images() if p.endswith("000000196141.jpg"))
    image = np.asarray(Image.open(path).convert("RGB"))
    boxes = np.array([[100, 50, 300, 420], [300, 60, 480, 420]], np.float64)
    coarse = np.zeros((2, 17, 3))
    coarse[..., :2] = ((boxes[:, :2] + boxes[:, 2:]) / 2)[:, None]
    coarse[:, :5, 2] = 0.5
    return image, boxes, coarse


def onnx_adapter(path: str, codec: str, stage: str = "refiner", **contract) -> OnnxNetwork:
    return OnnxNetwork("test-onnx", stage, OnnxSpec(codec=codec, **contract), weights=path)


def load(adapter: OnnxNetwork):
    with open(adapter.weights, "rb") as f:
        return adapter.load(f.read(), adapter.weights, CPU)


@pytest.mark.parametrize("flip_test", [False, True])
@pytest.mark.parametrize("guide", ["pose", "off"])
def test_thunder_exported_to_onnx_gives_the_torch_paths_poses(
    exported, crowd_photo, flip_test, guide
):
    image, boxes, coarse = crowd_photo
    path, codec = exported["movenet-thunder"]
    assert codec == "movenet"
    settings = RefinerSettings(flip_test=flip_test, guide=guide)
    thunder = registry.network("refiner", "movenet-thunder")
    expected = thunder.runner(load_network("refiner", "movenet-thunder"), CPU, settings)
    adapter = onnx_adapter(path, "movenet")
    got = adapter.runner(load(adapter), CPU, settings)
    want = expected([image], [boxes], [coarse])[0].kpts_xys
    have = got([image], [boxes], [coarse])[0].kpts_xys
    np.testing.assert_allclose(have[..., :2], want[..., :2], atol=0.05)
    np.testing.assert_allclose(have[..., 2], want[..., 2], atol=1e-4)


def test_detposenet_refiner_exported_to_onnx_runs_the_same_graph_and_reference_decode(
    exported, crowd_photo
):
    """The heatmap codec on DetPoseNet's export: ONNX Runtime's heatmaps equal torch's on
    the same reference crops, and the keypoints are those heatmaps' reference decode."""
    image, boxes, _ = crowd_photo
    path, codec = exported["detposenet"]
    assert codec == "heatmap"
    adapter = onnx_adapter(path, "heatmap")
    loaded = load(adapter)
    assert loaded.config.crop_padding == 1.25 and loaded.config.mean == (0.0, 0.0, 0.0)
    runner = adapter.runner(loaded, CPU, RefinerSettings(guide="off"))
    affines = runner._affines(boxes, 1.25)
    crops = crops_by_affines([image], np.zeros(2, int), affines, runner.crop_hw, CPU)
    onnx_maps = loaded.net(crops)["output"]
    from model.codecs.image import normalise

    torch_net = load_network("refiner", "detposenet").net
    with torch.inference_mode():
        torch_maps = torch_net(normalise(crops)).heatmaps
    np.testing.assert_allclose(onnx_maps.numpy(), torch_maps.numpy(), atol=1e-4)
    height, width = loaded.config.input_hw
    stride = (width / torch_maps.shape[3], height / torch_maps.shape[2])
    in_crop = decode_heatmap_reference(torch_maps, stride).numpy()
    inverse = np.linalg.inv(np.concatenate([affines, np.tile([[[0, 0, 1]]], (2, 1, 1))], 1))
    in_image = (
        np.einsum("nij,nkj->nki", inverse[:, :2, :2], in_crop[..., :2]) + inverse[:, None, :2, 2]
    )
    (poses,) = runner([image], [boxes])
    np.testing.assert_allclose(poses.kpts_xys[..., :2], in_image, atol=1e-3)


class _Fixed(nn.Module):
    """Outputs fixed tensors for every image of a batch (a hand-made network)."""

    def __init__(self, *outputs: torch.Tensor) -> None:
        super().__init__()
        for i, value in enumerate(outputs):
            self.register_buffer(f"out{i}", value)
        self.count = len(outputs)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        zero = x.mean() * 0.0  # ties every output to the input's batch
        return tuple(
            getattr(self, f"out{i}").expand(x.shape[0], *getattr(self, f"out{i}").shape[1:]) + zero
            for i in range(self.count)
        )


def write_fixed(path, input_hw, names, *outputs) -> str:
    _write_onnx(_Fixed(*outputs).eval(), input_hw, list(names), {}, path)
    return str(path)


def test_simcc_decodes_as_worked_out_by_hand(tmp_path):
    # Input 16 x 12, split ratio 2: 24 x-bins, 32 y-bins. Keypoint 0 peaks at x-bin 9 (0.7)
    # and y-bin 21 (0.9); keypoint 1 at 3 (1.3) and 5 (1.1): logits above 1; the others
    # have no positive maximum.
    simcc_x = torch.full((1, 17, 24), -1.0)
    simcc_y = torch.full((1, 17, 32), -1.0)
    simcc_x[0, 0, 9], simcc_y[0, 0, 21] = 0.7, 0.9
    simcc_x[0, 1, 3], simcc_y[0, 1, 5] = 1.3, 1.1
    path = write_fixed(tmp_path / "simcc.onnx", (16, 12), ["simcc_x", "simcc_y"], simcc_x, simcc_y)
    adapter = onnx_adapter(path, "simcc")
    runner = adapter.runner(load(adapter), CPU, RefinerSettings(guide="off"))
    # Box (10, 20)-(50, 100), padded 1.25 to 50 x 100, widened to the 3:4 input: 75 x 100,
    # centred on (30, 60). Crop = 0.16 * image + (6 - 4.8, 8 - 9.6) = 0.16 * image + (1.2, -1.6).
    image = np.zeros((120, 80, 3), np.uint8)
    (poses,) = runner([image], [np.array([[10.0, 20.0, 50.0, 100.0]])])
    kpts = poses.kpts_xys[0]
    # Keypoint 0: crop (9 / 2, 21 / 2) = (4.5, 10.5) → image ((4.5 - 1.2) / 0.16, (10.5 + 1.6) / 0.16).
    np.testing.assert_allclose(kpts[0], [20.625, 75.625, 0.7], atol=1e-4)
    # Keypoint 1: crop (1.5, 2.5) → image (1.875, 25.625); score min(1.3, 1.1), clipped to 1.
    np.testing.assert_allclose(kpts[1], [1.875, 25.625, 1.0], atol=1e-4)
    assert (kpts[2:, 2] == 0).all()  # a maximum <= 0 scores 0


def test_reference_crop_maps_the_box_centre_to_the_input_centre():
    affine = reference_affines(np.array([[10.0, 20.0, 50.0, 100.0]]), (16, 12), 1.25)[0]
    np.testing.assert_allclose(affine, [[0.16, 0, 1.2], [0, 0.16, -1.6]])
    assert affine @ [30, 60, 1] == pytest.approx([6, 8])


def test_heatmap_decode_moves_a_quarter_cell_towards_the_higher_neighbour():
    maps = torch.zeros((1, 17, 8, 6))
    maps[0, 0, 4, 3] = 1.0
    maps[0, 0, 4, 4] = 0.5  # right neighbour higher: +0.25 in x
    maps[0, 0, 3, 3] = 0.2  # upper neighbour higher: -0.25 in y
    maps[0, 1, 0, 0] = 0.9  # on the border: not refined
    out = decode_heatmap_reference(maps, (4.0, 4.0)).numpy()
    np.testing.assert_allclose(out[0, 0], [(3 + 0.25) * 4, (4 - 0.25) * 4, 1.0])
    np.testing.assert_allclose(out[0, 1], [0.0, 0.0, 0.9])


def test_a_guided_heatmap_decode_takes_the_peak_near_the_coarse_keypoint():
    maps = torch.zeros((1, 17, 8, 8))
    maps[0, 0, 1, 1] = 1.0  # the salient peak
    maps[0, 0, 6, 6] = 0.8  # the guided person's
    guide = torch.full((1, 17, 2), 24.0)  # crop pixels near cell (6, 6) at stride 4
    found = torch.zeros((1, 17), dtype=torch.bool)
    found[0, 0] = True
    out = decode_heatmap_reference(maps, (4.0, 4.0), guide, found).numpy()
    np.testing.assert_allclose(out[0, 0], [24.0, 24.0, 0.8])
    plain = decode_heatmap_reference(maps, (4.0, 4.0)).numpy()
    np.testing.assert_allclose(plain[0, 0], [4.0, 4.0, 1.0])


def test_rtmo_boxes_and_keypoints_map_back_from_the_top_left_letterbox(tmp_path):
    dets = torch.tensor([[[100, 50, 200, 250, 0.9], [300, 10, 340, 90, 0.6], [0, 0, 5, 5, 0.05]]])
    kpts = torch.zeros((1, 3, 17, 3))
    kpts[0, 0, :, 0], kpts[0, 0, :, 1], kpts[0, 0, :, 2] = 150.0, 100.0, 0.8
    path = write_fixed(tmp_path / "rtmo.onnx", (640, 640), ["dets", "keypoints"], dets, kpts)
    adapter = onnx_adapter(path, "rtmo", stage="stage1")
    settings = Stage1Settings(20, 5, 0.1, 0.1, None)
    runner = adapter.runner(load(adapter), CPU, settings)
    # A 1280 x 640 image is resized by min(640 / 640, 640 / 1280) = 0.5 into the top left.
    (props,) = runner([np.zeros((640, 1280, 3), np.uint8)])
    np.testing.assert_allclose(props.boxes_xyxy, [[200, 100, 400, 500], [600, 20, 680, 180]])
    np.testing.assert_allclose(props.box_scores, [0.9, 0.6], atol=1e-6)
    np.testing.assert_allclose(props.poses_xys[0, 0], [300.0, 200.0, 0.8], atol=1e-5)


def test_rtmo_input_is_the_bgr_image_top_left_on_a_canvas_of_114(tmp_path):
    path = write_fixed(
        tmp_path / "rtmo.onnx", (64, 64), ["dets", "keypoints"], torch.zeros(1, 1, 5),
        torch.zeros(1, 1, 17, 3),
    )  # fmt: skip
    adapter = onnx_adapter(path, "rtmo", stage="stage1")
    loaded = load(adapter)
    runner = adapter.runner(loaded, CPU, Stage1Settings(20, 5, 0.1, 0.1, None))
    image = np.zeros((32, 64, 3), np.uint8)
    image[..., 0] = 200  # red
    canvas, ratio = runner._letterbox(image)
    prepared = loaded.config.prepare(canvas[None])[0]  # BGR, unnormalised
    assert ratio == 1.0
    assert prepared[2, :32].min() == 200 and prepared[0, :32].max() == 0  # red is last
    assert (prepared[:, 32:] == 114).all()


def test_a_wrong_file_codec_or_shape_fails_on_the_driver_before_ray(tmp_path, exported):
    def spec(**refiner) -> JobSpec:
        return JobSpec.parse({"inputs": ["/x.jpg"], "output": str(tmp_path), "refiner": refiner})

    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a protobuf at all")
    with pytest.raises(JobSetupError, match=r"junk.onnx: not an ONNX model ONNX Runtime can load"):
        check_weights(spec(model="onnx", checkpoint=str(junk), onnx={"codec": "heatmap"}))
    thunder = exported["movenet-thunder"][0]
    with pytest.raises(JobSetupError, match=r"output .* has shape .* codec 'simcc' needs"):
        check_weights(spec(model="onnx", checkpoint=thunder, onnx={"codec": "simcc"}))
    detposenet = exported["detposenet"][0]
    with pytest.raises(JobSetupError, match=r"onnx.input_hw \[256, 256\] does not match"):
        check_weights(
            spec(
                model="onnx",
                checkpoint=detposenet,
                onnx={"codec": "heatmap", "input_hw": [256, 256]},
            )
        )
    with pytest.raises(JobSetupError, match=r"codec 'movenet' needs the decoding constants"):
        check_weights(spec(model="onnx", checkpoint=detposenet, onnx={"codec": "movenet"}))
    with pytest.raises(SpecError, match=r"codec 'rtmo' decodes a stage1 network"):
        spec(model="onnx", checkpoint=thunder, onnx={"codec": "rtmo"})
    with pytest.raises(SpecError, match=r"refiner.onnx describes an ONNX file"):
        spec(onnx={"codec": "simcc"})
    with pytest.raises(JobSetupError, match=r"expected one of movenet-thunder"):
        check_weights(spec(model="no-such-net"))


def test_an_option_a_network_does_not_take_is_refused_by_name(tmp_path):
    spec = JobSpec.parse(
        {
            "inputs": ["/x.jpg"],
            "output": str(tmp_path),
            "stage1": {"model": "detposenet", "views": [{"input_size": 256}]},
        }
    )
    with pytest.raises(
        JobSetupError, match=r"stage1.views do not apply to stage1.model 'detposenet'"
    ):
        check_weights(spec)


def test_registering_a_network_twice_or_under_the_reserved_name_is_refused(exported):
    adapter = onnx_adapter(exported["movenet-thunder"][0], "movenet")
    with pytest.raises(NetworkError, match="reserved"):
        registry.register(adapter.__class__("onnx", "refiner", adapter.contract))
    with pytest.raises(NetworkError, match="already registered"):
        registry.register(adapter.__class__("movenet-thunder", "refiner", adapter.contract))
    with pytest.raises(NetworkError, match="decodes a stage1 network"):
        OnnxNetwork("x", "refiner", OnnxSpec(codec="rtmo"))
