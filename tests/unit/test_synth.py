"""``detpose synth``: deterministic synthetic scenes whose COCO keypoints are exact."""

from __future__ import annotations

import json

import numpy as np
import pytest
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from jobs.cli import main
from model.codecs.coords import nearest_pixel
from model.evaluation.coco import evaluate_keypoints, ground_truth_as_results, load_ground_truth
from model.keypoints import KEYPOINT_NAMES, SKELETON
from model.synth.dataset import scene_annotations, write_synth_dataset
from model.synth.figures import Pose, face_points, pose_figure, sample_body
from model.synth.scenes import SYNTH_LEVELS, crowd_index, make_scene, render_scene
from tests.helpers import run_cli

SIZE = 128  # small images keep the tests fast; the rules do not depend on the size
L_SH, R_SH, L_EL, L_WR, L_HIP, L_KN, L_AN = 5, 6, 7, 9, 11, 13, 15


def _files(folder) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}  # fmt: skip


def test_crowd_index_known_answer():
    boxes = np.array([[0, 0, 10, 10], [5, 5, 20, 20], [0, 0, 30, 30]], dtype=float)
    kpts = np.zeros((3, 4, 3))
    kpts[0] = [[1, 1, 2], [6, 6, 1], [9, 9, 2], [7, 7, 0]]  # N_a = 3
    kpts[1] = [[8, 8, 2], [15, 15, 2], [2, 2, 0], [0, 0, 0]]  # N_a = 2
    # Person 0's box holds (8, 8) of person 1: 1/3. Person 1's box holds (6, 6) and (9, 9):
    # 2/2; (7, 7) is unlabelled. Person 2 has no labelled keypoint: left out of the mean.
    assert crowd_index(boxes, kpts) == pytest.approx((1 / 3 + 2 / 2) / 2)
    assert crowd_index(boxes[:1], kpts[:1]) == 0.0
    assert crowd_index(np.zeros((0, 4)), np.zeros((0, 17, 3))) == 0.0


def test_same_arguments_give_the_same_bytes_and_a_prefix_of_a_larger_set(tmp_path):
    write_synth_dataset(tmp_path / "a", 3, 1, "mixed", SIZE)
    write_synth_dataset(tmp_path / "b", 3, 1, "mixed", SIZE)
    write_synth_dataset(tmp_path / "c", 3, 2, "mixed", SIZE)
    write_synth_dataset(tmp_path / "d", 2, 1, "mixed", SIZE)
    a, b, c, d = (_files(tmp_path / n) for n in "abcd")
    assert a == b
    assert all(a[name] != c[name] for name in a)
    assert {k: v for k, v in a.items() if k.startswith("images/")} == {
        **{k: v for k, v in d.items() if k.startswith("images/")}, "images/000002.png": a["images/000002.png"]
    }  # fmt: skip
    ja, jd = (json.loads(x["annotations.json"]) for x in (a, d))
    assert ja["images"][:2] == jd["images"]
    assert [x for x in ja["annotations"] if x["image_id"] <= 2] == jd["annotations"]


def test_ground_truth_scored_against_itself_is_ap_1(tmp_path, capsys):
    write_synth_dataset(tmp_path, 8, 5, "mixed", SIZE)
    path = tmp_path / "annotations.json"
    coco = COCO(str(path))  # pycocotools reads the file as it is
    assert len(coco.getImgIds()) == 8 and coco.getAnnIds()
    data = json.loads(path.read_text())
    (category,) = data["categories"]
    assert category["keypoints"] == list(KEYPOINT_NAMES)
    assert category["skeleton"] == [[a + 1, b + 1] for a, b in SKELETON]
    gt = load_ground_truth(data, "coco", str(path))
    kpt_results, _ = ground_truth_as_results(gt)
    assert evaluate_keypoints(gt, kpt_results, "coco")["AP"] == pytest.approx(1.0)
    for ann in data["annotations"]:
        rle = {**ann["segmentation"], "counts": ann["segmentation"]["counts"].encode()}
        assert ann["area"] == float(mask_utils.decode(rle).sum()) > 0
        assert ann["bbox"] == [float(v) for v in mask_utils.toBbox(rle)]
        kpts = np.array(ann["keypoints"]).reshape(17, 3)
        assert ann["num_keypoints"] == int((kpts[:, 2] > 0).sum())
    # The stored crowd index is the one the file's own boxes and keypoints give.
    for image in data["images"]:
        anns = [a for a in data["annotations"] if a["image_id"] == image["id"]]
        boxes = np.array([[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in anns)])
        kpts = np.array([a["keypoints"] for a in anns], dtype=float).reshape(-1, 17, 3)
        assert image["crowd_index"] == pytest.approx(crowd_index(boxes, kpts), abs=1e-4)
        assert image["crowd"] in SYNTH_LEVELS


@pytest.mark.parametrize("crowd", ["low", "medium", "high"])
def test_labelled_keypoints_lie_in_the_image_and_visible_ones_on_their_person(crowd):
    for index in range(4):
        scene = make_scene(3, crowd, index, SIZE)
        v = scene.kpts_xyv[..., 2]
        px = nearest_pixel(scene.kpts_xyv[..., :2])
        labelled = v > 0
        assert ((px >= 0) & (px < SIZE)).all(axis=-1)[labelled].all()
        assert (scene.kpts_xyv[~labelled][:, :2] == 0).all()
        person, joint = np.nonzero(v == 2)
        assert (scene.ids[px[person, joint, 1], px[person, joint, 0]] == person).all()
        assert [(scene.ids == p).sum() for p in range(len(v))] == scene.areas.tolist()
        assert SYNTH_LEVELS[crowd].people[0] <= len(v) <= SYNTH_LEVELS[crowd].people[1]


def _standing(back_view: bool = False, head_yaw: float = 0.0) -> Pose:
    return Pose(
        lean=0.0, rotation=0.0, head_roll=0.0, head_yaw=head_yaw, back_view=back_view,
        shoulders=(0.2, 0.2), elbows=(0.1, -0.1), hips=(0.05, 0.05), knees=(0.0, 0.0),
        foreshortening=(1.0,) * 8,
    )  # fmt: skip


def test_a_person_behind_another_is_hidden_where_covered():
    body = sample_body(np.random.default_rng(0), 100.0)
    front = pose_figure(body, _standing(), (60.0, 55.0))
    rng = np.random.default_rng(0)
    # Exactly behind: everything hidden, nothing to annotate.
    scene = render_scene(rng, [pose_figure(body, _standing(), (60.0, 55.0)), front], SIZE)
    assert (scene.kpts_xyv[0, :, 2] == 1).all()
    assert (scene.kpts_xyv[1, :, 2] == 2).all()
    assert scene.areas[0] == 0 and len(scene_annotations(scene, 1, 1)) == 1
    # Behind and 20 px to the right: its right shoulder is under the front torso, its left arm free.
    scene = render_scene(rng, [pose_figure(body, _standing(), (80.0, 55.0)), front], SIZE)
    assert scene.kpts_xyv[0, R_SH, 2] == 1
    assert (scene.kpts_xyv[0, [L_SH, L_EL, L_WR], 2] == 2).all()
    assert (scene.kpts_xyv[1, :, 2] == 2).all()


def test_the_head_hides_face_keypoints_turned_away():
    # nose, left eye, right eye, left ear, right ear
    assert not face_points(_standing())[2].any()
    assert face_points(_standing(back_view=True))[2].tolist() == [True, True, True, False, False]
    # Turned to its own left (profile): the left eye and ear go behind the head.
    assert face_points(_standing(head_yaw=np.pi / 2))[2].tolist() == [
        False,
        True,
        False,
        True,
        False,
    ]
    body = sample_body(np.random.default_rng(1), 100.0)
    scene = render_scene(
        np.random.default_rng(1), [pose_figure(body, _standing(back_view=True), (60, 55))], SIZE
    )
    assert scene.kpts_xyv[0, :5, 2].tolist() == [1, 1, 1, 2, 2]
    # A back view mirrors the body: the left shoulder is on the image's left.
    assert scene.kpts_xyv[0, L_SH, 0] < scene.kpts_xyv[0, R_SH, 0]


def test_crowd_levels_order_the_crowd_index():
    means = {}
    for crowd in ("low", "medium", "high"):
        scenes = [make_scene(7, crowd, i, SIZE) for i in range(20)]
        low, high = SYNTH_LEVELS[crowd].ci_range
        assert all(low <= s.crowd_index < high for s in scenes if s.in_range)
        assert sum(s.in_range for s in scenes) >= 18
        means[crowd] = np.mean([s.crowd_index for s in scenes])
    assert means["high"] > means["medium"] > means["low"]


def test_cli_writes_images_and_annotations(tmp_path):
    result = run_cli(
        "synth", "--out", "tmp", "--images", "3", "--seed", "1", "--crowd", "high", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "3 images" in result.stdout and "high" in result.stdout
    names = sorted(p.name for p in (tmp_path / "tmp" / "images").iterdir())
    assert names == ["000000.png", "000001.png", "000002.png"]
    data = json.loads((tmp_path / "tmp" / "annotations.json").read_text())
    assert [i["crowd"] for i in data["images"]] == ["high"] * 3


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--images", "0"], "got 0 for images"),
        (["--size", "32"], "got 32 for size"),
        (["--seed", "-1"], "got -1 for seed"),
        (["--out", "FILE"], "is a file"),
    ],
)
def test_cli_refuses_bad_arguments(tmp_path, capsys, args, message):
    (tmp_path / "FILE").write_text("")
    base = {"--out": str(tmp_path / "out"), "--images": "2", "--seed": "1", "--size": "64"}
    base.update({args[0]: str(tmp_path / args[1]) if args[1] == "FILE" else args[1]})
    assert main(["synth", *[x for kv in base.items() for x in kv]]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_cli_refuses_an_unknown_crowd_level(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["synth", "--out", "x", "--images", "1", "--seed", "1", "--crowd", "huge"])
    assert exc.value.code == 2
    assert "invalid choice: 'huge'" in capsys.readouterr().err
