"""``detpose export`` and ``detpose import`` as a user runs them (no Ray is started)."""

from __future__ import annotations

import json

import pytest

from tests.export_fixtures import COCO_SAMPLE, make_job
from tests.helpers import run_cli


def assert_usage_error(result, *expected: str) -> None:
    """Exit 2 with a readable message naming ``expected``, no traceback."""
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    for text in expected:
        assert text in result.stderr, (text, result.stderr[-2000:])
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("fmt, name", [("cvat", "annotations.xml"), ("labelstudio", "tasks.json")])
def test_export_then_import_from_the_command_line(tmp_path, fmt, name):
    job = make_job(tmp_path)
    root = str(COCO_SAMPLE / "images")
    exported = run_cli(
        "export", "--job", str(job), "--format", fmt, "--out", f"review/{name}",
        "--image-root", root, cwd=tmp_path,
    )  # fmt: skip
    assert exported.returncode == 0, exported.stderr[-3000:]
    assert "exported 6 images, 13 persons" in exported.stdout
    assert "left out 1 error rows (missing: 1)" in exported.stdout
    assert "left out 2 persons with a pose score below 0.2" in exported.stdout
    sidecar = {"cvat": "annotations.labels.json", "labelstudio": "tasks.label_config.xml"}[fmt]
    assert (tmp_path / "review" / name).is_file() and (tmp_path / "review" / sidecar).is_file()

    imported = run_cli(
        "import", "--format", fmt, f"review/{name}", "--out", "train.json", "--image-root", root,
        cwd=tmp_path,
    )  # fmt: skip
    assert imported.returncode == 0, imported.stderr[-3000:]
    assert "imported 6 images, 13 persons" in imported.stdout
    assert f"--annotations train.json --images {root}" in imported.stdout
    coco = json.loads((tmp_path / "train.json").read_text())
    assert len(coco["annotations"]) == 13
    assert "000000000785.jpg" in {i["file_name"] for i in coco["images"]}


def test_coco_export_from_the_command_line(tmp_path):
    job = make_job(tmp_path)
    result = run_cli("export", "--job", str(job), "--format", "coco", "--out", "gt.json",
                     "--min-score", "0.3", cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    coco = json.loads((tmp_path / "gt.json").read_text())
    assert coco["info"]["detpose"]["min_score"] == 0.3
    assert len(coco["images"]) == 6 and len(coco["annotations"]) == 13


def test_a_missing_job_folder_is_named(tmp_path):
    result = run_cli("export", "--job", str(tmp_path / "out" / "nojob"), "--format", "coco",
                     "--out", "x.json", cwd=tmp_path)  # fmt: skip
    assert_usage_error(result, "no annotation files", str(tmp_path / "out" / "nojob"))
    assert not (tmp_path / "x.json").exists()


@pytest.mark.parametrize("command", ["export", "import"])
def test_an_unknown_format_is_refused(tmp_path, command):
    args = ["--job", "j", "--out", "x"] if command == "export" else ["f.xml", "--out", "x"]
    result = run_cli(command, "--format", "yolo", *args, cwd=tmp_path)
    assert_usage_error(result, "invalid choice: 'yolo'")


def test_thresholds_out_of_order_are_refused(tmp_path):
    job = make_job(tmp_path)
    result = run_cli("export", "--job", str(job), "--format", "coco", "--out", "x.json",
                     "--min-score", "0.6", "--visible-score", "0.5", cwd=tmp_path)  # fmt: skip
    assert_usage_error(result, "expected 0 <= min-score <= visible-score")


def test_import_of_a_missing_file_is_named(tmp_path):
    result = run_cli("import", "--format", "labelstudio", "gone.json", "--out", "x.json",
                     cwd=tmp_path)  # fmt: skip
    assert_usage_error(result, "'gone.json' does not exist")
