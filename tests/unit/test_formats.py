"""Exports for review tools and imports back (pipeline.formats), on a job built from the real
COCO excerpt: file structure, visibility rule, clipping, round trips and streaming."""

from __future__ import annotations

import io
import json
import math
import tracemalloc
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from model.keypoints import KEYPOINT_NAMES, SKELETON
from pipeline.formats import FormatError, ImageNames, Thresholds, export_job, import_review
from pipeline.formats.coco import write_coco
from pipeline.formats.common import ImageRecord, JobRows, keypoint_visibility
from pipeline.formats.cvat import write_cvat
from pipeline.formats.labelstudio import read_labelstudio, write_labelstudio
from pipeline.store.job_parts import PartFileError, drop_non_finite_persons, schema_problem
from pipeline.store.outputs import OutputError
from pipeline.store.sink import NoAnnotationsError
from pipeline.store.storage import image_id_for
from schemas.output import ADDED_COUNT_FIELDS, ANNOTATION_SCHEMA, PERSON_TYPE
from tests.export_fixtures import COCO_SAMPLE, EDGE_SIZE, expected_images, make_job, sample_rows
from tests.review_fixtures import ok_row, write_part

TOL_PX = 0.01


@pytest.fixture
def rows():
    return sample_rows()


@pytest.fixture
def job(tmp_path, rows):
    return make_job(tmp_path, rows)


def kpts_of(person: dict) -> np.ndarray:
    """``[17, 3]`` x, y, v of a row's person under the default visibility rule."""
    k = np.asarray(person["keypoints"], dtype=np.float64).reshape(17, 3)
    return np.column_stack([k[:, :2], keypoint_visibility(k[:, 2], Thresholds())])


# --- the visibility rule ---------------------------------------------------------------------


def test_visibility_bands_include_their_lower_bound():
    scores = np.array([0.0, 0.19999, 0.2, 0.4999, 0.5, 0.97])
    v = keypoint_visibility(scores, Thresholds(min_score=0.2, visible_score=0.5))
    assert v.tolist() == [0, 0, 1, 1, 2, 2]


@pytest.mark.parametrize("low, high", [(0.6, 0.5), (-0.1, 0.5), (float("nan"), 0.5)])
def test_thresholds_out_of_order_are_refused(low, high):
    with pytest.raises(FormatError, match="min-score"):
        Thresholds(low, high)


# --- COCO --------------------------------------------------------------------------------------


def test_coco_export_holds_ok_images_and_persons_above_min_score(tmp_path, job, rows):
    out = tmp_path / "person_keypoints.json"
    summary = export_job(str(job), "coco", str(out))
    data = json.loads(out.read_text())
    expected = expected_images(rows)

    (category,) = data["categories"]
    assert category["keypoints"] == list(KEYPOINT_NAMES)
    assert category["skeleton"] == [[a + 1, b + 1] for a, b in SKELETON]
    assert {i["id"]: (i["file_name"], i["width"], i["height"]) for i in data["images"]} == {
        i: (r["uri"], r["width"], r["height"]) for i, r in expected.items()
    }
    ann_ids = [a["id"] for a in data["annotations"]]
    assert sorted(ann_ids) == list(range(1, len(ann_ids) + 1))
    assert len(ann_ids) == sum(len(r["persons"]) for r in expected.values()) == summary.persons
    assert summary.errors_by_kind == {"missing": 1}
    assert summary.persons_below_min_score == 2  # the sample's persons without keypoints

    by_image: dict[int, list[dict]] = {}
    for ann in data["annotations"]:
        by_image.setdefault(ann["image_id"], []).append(ann)
    for image_id, row in expected.items():
        anns = by_image.get(image_id, [])
        assert len(anns) == len(row["persons"])
        for ann, person in zip(anns, row["persons"], strict=True):
            kpts = kpts_of(person)
            got = np.asarray(ann["keypoints"], dtype=np.float64).reshape(17, 3)
            assert got[:, 2].tolist() == kpts[:, 2].tolist()
            labelled = kpts[:, 2] > 0
            np.testing.assert_allclose(got[labelled, :2], kpts[labelled, :2], atol=TOL_PX)
            assert not got[~labelled].any()  # COCO: an unlabelled keypoint is 0, 0, 0
            assert ann["num_keypoints"] == int(labelled.sum())
            np.testing.assert_allclose(ann["bbox"], person["box_xywh"], atol=TOL_PX)
            assert ann["area"] == pytest.approx(ann["bbox"][2] * ann["bbox"][3], abs=0.01)
            assert ann["pose_score"] == pytest.approx(person["pose_score"], abs=1e-4)
            assert ann["score"] == pytest.approx(person["box_score"] * person["pose_score"])
            assert (ann["iscrowd"], ann["category_id"], ann["origin"]) == (0, 1, person["origin"])
    assert sum(a["origin"] == "recovered" for a in data["annotations"]) == 1
    # the three visibility bands all occur in the sample
    assert {v for a in data["annotations"] for v in a["keypoints"][2::3]} == {0, 1, 2}


def test_min_score_leaves_out_persons_and_keypoints(tmp_path, job, rows):
    out = tmp_path / "high.json"
    summary = export_job(str(job), "coco", str(out), thresholds=Thresholds(0.88, 0.9))
    data = json.loads(out.read_text())
    # every sample person's pose score is 0.87 or less; the edge person's is 0.9
    assert [a["image_id"] for a in data["annotations"]] == [rows[-1]["image_id"]]
    assert summary.persons_below_min_score == sum(len(r["persons"]) for r in rows) - 1
    assert len(data["images"]) == len(expected_images(rows))  # images stay, persons go


# --- CVAT ----------------------------------------------------------------------------------------


def test_cvat_xml_has_a_skeleton_of_17_named_points_and_a_box_per_person(tmp_path, job, rows):
    out = tmp_path / "annotations.xml"
    summary = export_job(str(job), "cvat", str(out))
    root = ET.parse(out).getroot()
    assert root.tag == "annotations" and root.findtext("version") == "1.1"

    labels = root.findall("meta/task/labels/label")
    by_name = {label.findtext("name"): label for label in labels}
    assert by_name["person"].findtext("type") == "skeleton"
    assert by_name["person_box"].findtext("type") == "rectangle"
    sublabels = [label.findtext("name") for label in labels if label.findtext("parent") == "person"]
    assert sublabels == list(KEYPOINT_NAMES)
    svg = by_name["person"].findtext("svg")
    assert svg.count('data-type="edge"') == len(SKELETON)
    for name in KEYPOINT_NAMES:
        assert f'data-label-name="{name}"' in svg
    raw = json.loads((tmp_path / "annotations.labels.json").read_text())
    assert [s["name"] for s in raw[0]["sublabels"]] == list(KEYPOINT_NAMES)
    assert summary.outputs == [str(out), str(tmp_path / "annotations.labels.json")]

    expected = expected_images(rows)
    images = root.findall("image")
    assert {int(i.get("id")) for i in images} == set(expected)
    for image in images:
        row = expected[int(image.get("id"))]
        assert (image.get("name"), int(image.get("width"))) == (row["uri"], row["width"])
        skeletons = image.findall("skeleton")
        boxes = {b.get("group_id"): b for b in image.findall("box")}
        assert len(skeletons) == len(boxes) == len(row["persons"])
        for skeleton, person in zip(skeletons, row["persons"], strict=True):
            assert skeleton.get("group_id") in boxes
            points = skeleton.findall("points")
            assert [p.get("label") for p in points] == list(KEYPOINT_NAMES)
            v = kpts_of(person)[:, 2]
            assert [p.get("outside") == "1" for p in points] == (v == 0).tolist()
            assert [p.get("occluded") == "1" for p in points] == (v == 1).tolist()
            assert skeleton.findtext("attribute[@name='origin']") == person["origin"]


# --- Label Studio --------------------------------------------------------------------------------


def test_labelstudio_tasks_match_their_config_in_percent_with_unique_ids(tmp_path, job, rows):
    out = tmp_path / "tasks.json"
    export_job(str(job), "labelstudio", str(out))
    tasks = json.loads(out.read_text())
    config = ET.fromstring((tmp_path / "tasks.label_config.xml").read_text())
    controls = {c.get("name"): c for c in config if c.get("toName")}
    (image_tag,) = config.findall("Image")
    assert all(c.get("toName") == image_tag.get("name") for c in controls.values())

    expected = expected_images(rows)
    assert len(tasks) == len(expected)
    names = {r["uri"]: r for r in expected.values()}
    for task in tasks:
        row = names[task["data"][image_tag.get("value").lstrip("$")]]
        (prediction,) = task["predictions"]
        result = prediction["result"]
        ids = [r["id"] for r in result]
        assert len(ids) == len(set(ids))
        rectangles = {r["id"] for r in result if r["type"] == "rectanglelabels"}
        assert len(rectangles) == len(row["persons"])
        n_labelled = sum(int((kpts_of(p)[:, 2] > 0).sum()) for p in row["persons"])
        assert len(result) - len(rectangles) == n_labelled
        for region in result:
            control = controls[region["from_name"]]
            label_values = {label.get("value") for label in control.findall("Label")}
            kind = "rectanglelabels" if control.tag == "RectangleLabels" else "keypointlabels"
            assert region["type"] == kind and region["to_name"] == image_tag.get("name")
            assert set(region["value"][kind]) <= label_values
            assert (region["original_width"], region["original_height"]) == (
                row["width"],
                row["height"],
            )
            for key in ("x", "y", "width", "height"):
                assert 0.0 <= region["value"].get(key, 0.0) <= 100.0
            if kind == "keypointlabels":
                assert region["parentID"] in rectangles
        if row["persons"]:
            mean = np.mean([p["pose_score"] for p in row["persons"]])
            assert prediction["score"] == pytest.approx(mean, abs=1e-4)


def test_labelstudio_clips_a_person_reaching_past_the_border(tmp_path, job):
    out = tmp_path / "tasks.json"
    export_job(str(job), "labelstudio", str(out))
    (edge,) = [t for t in json.loads(out.read_text()) if t["data"]["image"].endswith("edge.jpg")]
    regions = {r["id"]: r["value"] for r in edge["predictions"][0]["result"]}
    w, h = EDGE_SIZE
    box = regions["person1"]
    assert box["x"] == 0.0 and box["y"] + box["height"] == pytest.approx(100.0)
    assert box["width"] == pytest.approx(80.0 / w * 100)  # -20..80 clipped to 0..80
    assert (regions["person1-nose"]["x"], regions["person1-right_ankle"]["y"]) == (0.0, 100.0)


# --- round trips ---------------------------------------------------------------------------------


def expected_round_trip(row: dict, fmt: str) -> list[tuple[np.ndarray, np.ndarray]]:
    """(box, kpts_xyv) per kept person, clipped to the image, v as the format carries it."""
    w, h = row["width"], row["height"]
    out = []
    for person in row["persons"]:
        x, y, bw, bh = person["box_xywh"]
        x0, x1 = np.clip([x, x + bw], 0, w)
        y0, y1 = np.clip([y, y + bh], 0, h)
        kpts = kpts_of(person)
        kpts[:, :2] = np.clip(kpts[:, :2], 0, [w, h])
        if fmt == "labelstudio":
            kpts[kpts[:, 2] > 0, 2] = 2  # Label Studio keypoints carry no occlusion
        kpts[kpts[:, 2] == 0, :2] = 0
        out.append((np.array([x0, y0, x1 - x0, y1 - y0]), kpts))
    return out


def assert_round_trip(coco: dict, rows: list[dict], fmt: str, names: ImageNames) -> None:
    expected = expected_images(rows)
    images = {i["id"]: i for i in coco["images"]}
    assert set(images) == set(expected)  # DetPose's ids come back
    anns: dict[int, list[dict]] = {}
    for ann in coco["annotations"]:
        anns.setdefault(ann["image_id"], []).append(ann)
    for image_id, row in expected.items():
        image = images[image_id]
        assert names.uri_for(image["file_name"]) == row["uri"]
        assert (image["width"], image["height"]) == (row["width"], row["height"])
        got = anns.get(image_id, [])
        want = expected_round_trip(row, fmt)
        assert len(got) == len(want)
        for ann, (box, kpts) in zip(got, want, strict=True):
            np.testing.assert_allclose(ann["bbox"], box, atol=TOL_PX)
            back = np.asarray(ann["keypoints"], dtype=np.float64).reshape(17, 3)
            assert back[:, 2].tolist() == kpts[:, 2].tolist()
            np.testing.assert_allclose(back[:, :2], kpts[:, :2], atol=TOL_PX)
            assert "score" not in ann  # reviewed ground truth


@pytest.mark.parametrize("fmt", ["cvat", "labelstudio"])
@pytest.mark.parametrize(
    "names",
    [ImageNames(), ImageNames(str(COCO_SAMPLE / "images")), ImageNames(None, "/data/x?d=")],
    ids=["uris", "root", "prefix"],
)
def test_import_of_an_export_gives_back_its_poses(tmp_path, job, rows, fmt, names):
    exported = tmp_path / f"review.{fmt}"
    export_job(str(job), fmt, str(exported), names=names)
    out = tmp_path / "train.json"
    summary = import_review(fmt, str(exported), str(out), names=names)
    coco = json.loads(out.read_text())
    assert_round_trip(coco, rows, fmt, names)
    assert summary.persons == len(coco["annotations"]) and not summary.ignored
    if names.root:  # relative, as `detpose train --images ROOT` joins them
        assert {i["file_name"] for i in coco["images"]} >= {"000000000785.jpg", "edge.jpg"}
    assert summary.absolute_names == (0 if names.root else summary.images)


# --- imports of files the tools wrote ------------------------------------------------------------

CVAT_EXPORT = """<?xml version="1.0" encoding="utf-8"?>
<annotations>
  <version>1.1</version>
  <meta><job><id>7</id><size>2</size><mode>annotation</mode><labels>
    <label><name>person</name><type>skeleton</type><attributes/></label>
    <label><name>car</name><type>rectangle</type><attributes/></label>
  </labels></job></meta>
  <image id="0" name="a/one.jpg" width="100" height="80">
    <skeleton label="person" source="manual" z_order="0">
      <points label="nose" source="manual" outside="0" occluded="0" points="10.50,20.25"/>
      <points label="left_eye" source="manual" outside="0" occluded="1" points="12.00,18.00"/>
      <points label="right_eye" source="manual" outside="1" occluded="0" points="9.00,18.00"/>
      <points label="left_hip" source="manual" outside="0" occluded="0" points="30.00,60.00"/>
    </skeleton>
    <box label="car" source="manual" occluded="0" xtl="1" ytl="1" xbr="5" ybr="5" z_order="0"/>
    <box label="person_box" source="manual" occluded="0" xtl="50" ytl="10" xbr="90" ybr="70"
         z_order="0"/>
  </image>
  <image id="1" name="a/two.jpg" width="100" height="80"></image>
</annotations>
"""


def test_cvat_import_of_a_cvat_export_fills_in_what_the_reviewer_left(tmp_path):
    src = tmp_path / "annotations.xml"
    src.write_text(CVAT_EXPORT)
    out = tmp_path / "train.json"
    summary = import_review("cvat", str(src), str(out), names=ImageNames("s3://bucket/photos"))
    coco = json.loads(out.read_text())
    assert [i["file_name"] for i in coco["images"]] == ["a/one.jpg", "a/two.jpg"]
    assert coco["images"][0]["id"] == image_id_for("s3://bucket/photos/a/one.jpg")
    skeleton, box_only = coco["annotations"]
    kpts = np.asarray(skeleton["keypoints"]).reshape(17, 3)
    assert kpts[0].tolist() == [10.5, 20.25, 2] and kpts[1].tolist() == [12, 18, 1]
    assert kpts[2].tolist() == [0, 0, 0]  # outside: not labelled
    assert skeleton["num_keypoints"] == 3
    assert skeleton["bbox"] == [10.5, 18, 19.5, 42]  # no grouped box: around its keypoints
    assert box_only["bbox"] == [50, 10, 40, 60] and box_only["num_keypoints"] == 0
    assert summary.ignored == {"<box label='car'>": 1}


def test_cvat_video_tracks_are_refused(tmp_path):
    src = tmp_path / "video.xml"
    src.write_text(
        '<annotations><version>1.1</version><track id="0" label="person"/></annotations>'
    )
    with pytest.raises(FormatError, match="CVAT for images"):
        import_review("cvat", str(src), str(tmp_path / "out.json"))


def _kp(region_id, name, x, y, parent=None):
    region = {
        "id": region_id,
        "type": "keypointlabels",
        "original_width": 200,
        "original_height": 100,
        "value": {"x": x, "y": y, "width": 0.5, "keypointlabels": [name]},
    }
    return region | ({"parentID": parent} if parent else {})


def _rect(region_id, x, y, w, h):
    value = {"x": x, "y": y, "width": w, "height": h, "rectanglelabels": ["person"]}
    return {"id": region_id, "type": "rectanglelabels", "value": value}


def test_labelstudio_import_takes_the_latest_annotation_and_places_loose_keypoints():
    prediction = {"result": [_rect("p", 0, 0, 10, 10)]}
    reviewed = [
        _rect("big", 0, 0, 100, 100),
        _rect("small", 50, 50, 20, 20),
        _kp("k1", "nose", 55, 55),  # no parentID: the smallest rectangle around it
        _kp("k2", "nose", 10, 10),  # the big one
        _kp("k3", "left_eye", 60, 60, parent="big"),  # parentID wins over containment
        _kp("k4", "nose", 56, 56),  # both rectangles have a nose already
        _kp("k5", "neck", 5, 5, parent="big"),
    ]
    tasks = [
        {
            "data": {"image": "s3://b/x.jpg"},
            "annotations": [
                {"result": [], "updated_at": "2026-01-01T00:00:00Z"},
                {"result": reviewed, "updated_at": "2026-02-01T00:00:00Z"},
                {"result": [], "updated_at": "2026-03-01T00:00:00Z", "was_cancelled": True},
            ],
            "predictions": [prediction],
        },
        {"data": {"image": "s3://b/y.jpg", "width": 40, "height": 30}, "predictions": [prediction]},
    ]
    records, summary = read_labelstudio(json.dumps(tasks), ImageNames(), "tasks.json")
    big, small = records[0].poses
    assert (records[0].width, records[0].height) == (200, 100)
    np.testing.assert_allclose(big.box_xywh, [0, 0, 200, 100])
    np.testing.assert_allclose(small.box_xywh, [100, 50, 40, 20])
    np.testing.assert_allclose(small.kpts_xyv[0], [110, 55, 2])
    np.testing.assert_allclose(big.kpts_xyv[:2], [[20, 10, 2], [120, 60, 2]])
    assert summary.ignored == {
        "second keypoint of one name in a person": 1,
        "keypoint labelled ['neck'] (not a COCO-17 keypoint)": 1,
    }
    assert summary.unreviewed == 1 and len(records[1].poses) == 1
    reviewed_only, _ = read_labelstudio(json.dumps(tasks), ImageNames(), "t", reviewed_only=True)
    assert [r.name for r in reviewed_only] == ["s3://b/x.jpg"]


def test_labelstudio_rotated_rectangle_becomes_the_box_around_it():
    region = _rect("r", 10, 10, 20, 10) | {"original_width": 100, "original_height": 100}
    region["value"]["rotation"] = 90  # clockwise about the top-left corner
    task = {"data": {"image": "x.jpg"}, "annotations": [{"result": [region]}]}
    (record,), _ = read_labelstudio(json.dumps([task]), ImageNames(), "t")
    np.testing.assert_allclose(record.poses[0].box_xywh, [0, 10, 10, 20], atol=1e-9)


@pytest.mark.parametrize(
    "text, message",
    [("{not json", "not JSON"), ('{"a": 1}', "list of tasks"), ('[{"data": {}}]', "data.image")],
)
def test_labelstudio_files_that_are_not_an_export_are_refused(text, message):
    with pytest.raises(FormatError, match=message):
        read_labelstudio(text, ImageNames(), "tasks.json")


# --- job folders and streaming -------------------------------------------------------------------


def test_an_existing_output_is_replaced_but_a_folder_is_refused(tmp_path, job):
    out = tmp_path / "gt.json"
    out.write_text("old")
    export_job(str(job), "coco", str(out))
    assert json.loads(out.read_text())["images"]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(("gt", ".gt"))] == ["gt.json"]
    with pytest.raises(OutputError, match="is a folder"):
        export_job(str(job), "coco", str(tmp_path))


def test_a_missing_job_folder_names_the_folder(tmp_path):
    with pytest.raises(NoAnnotationsError, match="no annotation files") as info:
        export_job(str(tmp_path / "nope"), "coco", str(tmp_path / "x.json"))
    assert str(tmp_path / "nope") in str(info.value)
    assert not (tmp_path / "x.json").exists()


@pytest.mark.parametrize("fmt", ["coco", "labelstudio"])
def test_an_unreadable_part_file_stops_the_export_unless_partial_is_accepted(
    tmp_path, job, rows, fmt
):
    dead = job / "annotations" / "run-001-part-000000-dead.parquet"
    dead.write_bytes(b"PAR1 truncated")
    out = tmp_path / "out.json"
    with pytest.raises(PartFileError, match=str(dead)):
        export_job(str(job), fmt, str(out))
    assert not out.exists()
    summary = export_job(str(job), fmt, str(out), allow_partial=True)
    assert summary.images == len(expected_images(rows))
    assert list(summary.parts.skipped) == [str(dead)]
    written = json.loads(out.read_text())
    assert len(written["images"] if fmt == "coco" else written) == summary.images
    if fmt == "coco":
        assert "PARTIAL" in written["info"]["description"]
        assert list(written["info"]["detpose"]["partial"]["unreadable_files"]) == [str(dead)]
    else:
        assert all("PARTIAL" in t["predictions"][0]["model_version"] for t in written)


def test_a_part_file_failing_half_way_is_left_out_whole(tmp_path, job):
    """Footer fine, keypoint pages corrupt: COCO's first pass (no poses) reads the file, its
    second fails. With --allow-partial the file is written again without it, so the images
    and the annotations come from the same rows."""
    bad = sorted((job / "annotations").glob("*.parquet"))[0]
    keypoints = pq.ParquetFile(bad).metadata.row_group(0).column(9)
    assert keypoints.path_in_schema.startswith("persons.list.element.keypoints")
    data = bytearray(bad.read_bytes())
    for k in range(keypoints.data_page_offset + 40, keypoints.data_page_offset + 240):
        data[k] ^= 0x5A
    bad.write_bytes(bytes(data))
    out = tmp_path / "gt.json"
    with pytest.raises(PartFileError, match=str(bad)):
        export_job(str(job), "coco", str(out))
    assert not out.exists()
    export_job(str(job), "coco", str(out), allow_partial=True)
    written = json.loads(out.read_text())
    bad_ids = set(pq.read_table(bad, columns=["image_id"]).column(0).to_pylist())
    image_ids = {image["id"] for image in written["images"]}
    assert image_ids and not image_ids & bad_ids
    assert {a["image_id"] for a in written["annotations"]} <= image_ids
    assert list(written["info"]["detpose"]["partial"]["unreadable_files"]) == [str(bad)]


def test_persons_with_non_finite_numbers_are_dropped_row_by_row():
    good = sample_rows()[0]["persons"][0]
    nan_box = {**good, "box_xywh": [math.nan, 1.0, 2.0, 3.0]}
    inf_score = {**good, "pose_score": math.inf}
    rows = [[good, nan_box], None, [], [inf_score, good, good], [nan_box]]
    persons = pa.array(rows, pa.list_(PERSON_TYPE)).slice(1)  # an offset, as batches have
    kept, dropped = drop_non_finite_persons(persons)
    assert dropped.tolist() == [0, 0, 1, 1]
    assert pc.list_value_length(kept).to_pylist() == [None, 0, 2, 0]
    assert kept.type == persons.type


def test_older_part_files_fit_the_schema_and_foreign_columns_do_not():
    counts = ANNOTATION_SCHEMA.field("counts").type
    older = pa.struct([f for f in counts if f.name not in ADDED_COUNT_FIELDS])
    assert schema_problem(pa.schema([("counts", older)]), ["counts"]) is None
    wrong = pa.schema([("persons", pa.list_(pa.float64()))])
    assert "column 'persons' holds" in schema_problem(wrong, ["persons"])
    assert "no column 'uri'" in schema_problem(wrong, ["uri"])


def big_job(folder: Path, parts: int, rows_per_part: int) -> Path:
    """``parts`` part files of ``rows_per_part`` ok rows with one real person each."""
    one = sample_rows()[0]["persons"][:1]
    rows = [ok_row(f"/img/{i:06d}.jpg", (640, 480), one) for i in range(rows_per_part)]
    for p in range(parts):
        write_part(folder / "out" / "job" / "annotations", p, rows)
    return folder / "out" / "job"


def test_job_rows_are_read_one_batch_at_a_time(tmp_path):
    job = big_job(tmp_path, parts=3, rows_per_part=1000)
    reader = JobRows(str(job), batch_rows=256)
    sizes = [b.num_rows for b in reader.batches(["uri"])]
    assert sizes == [256, 256, 256, 232] * 3
    images = reader.images(ImageNames(), Thresholds())
    assert iter(images) is images  # a generator: nothing is read before it is asked for
    assert sum(1 for _ in images) == 3000


def test_export_memory_is_one_batch_not_the_job(tmp_path):
    """COCO, the format that reads the job twice; the others share its reader and write as
    they read (test_writers_write_each_image_before_reading_the_next)."""
    job = big_job(tmp_path, parts=8, rows_per_part=2500)
    tracemalloc.start()
    try:
        whole = [r for f in sorted((job / "annotations").iterdir()) for r in _rows(f)]
        _, all_rows_peak = tracemalloc.get_traced_memory()
        del whole
        tracemalloc.reset_peak()
        base, _ = tracemalloc.get_traced_memory()
        summary = export_job(str(job), "coco", str(tmp_path / "gt.json"), batch_rows=256)
        _, export_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert summary.images == summary.persons == 20_000
    # Python objects of every row at once: about 65 MB; the export holds one batch of 256.
    assert all_rows_peak > 40e6
    assert export_peak - base < all_rows_peak / 10, (export_peak - base, all_rows_peak)


@pytest.mark.parametrize("fmt", ["coco", "cvat", "labelstudio"])
def test_writers_write_each_image_before_reading_the_next(fmt):
    records = [
        ImageRecord(image_id=i, name=f"img{i}.jpg", width=10, height=10, poses=[]) for i in range(5)
    ]
    out = io.StringIO()

    def images(*_: object):
        for i, record in enumerate(records):
            if i:
                assert f"img{i - 1}.jpg" in out.getvalue()
            yield record

    if fmt == "coco":
        write_coco(images, out, info={})
    elif fmt == "cvat":
        write_cvat(images(), out, task_name="t")
    else:
        write_labelstudio(images(), out, model_version="m")
    assert "img4.jpg" in out.getvalue()


def _rows(path: Path) -> list[dict]:
    return pq.read_table(path).to_pylist()
