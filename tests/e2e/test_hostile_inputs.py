"""``eval``, ``export``, ``import`` and ``review`` as a hostile user runs them (issue 23).

One table, one row per case: each row makes real files, runs the command line's entry point
(``jobs.cli.main``, in this process: a ``detpose`` process costs seconds of imports, so only
a few rows at the end run as one), and checks the exit code, a message naming the problem,
that no traceback is printed, that Ray never starts, and that nothing is written, or that
what is written parses with a strict JSON parser. No row reaches the network: storage rows
point at a closed loopback port.
"""

from __future__ import annotations

import json
import math
import os
import stat
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jobs.cli import main
from tests.export_fixtures import COCO_SAMPLE, make_job, sample_rows
from tests.helpers import run_cli
from tests.review_fixtures import write_part

CLOSED_PORT = "http://127.0.0.1:1"  # nothing listens there: connection refused at once
COCO = json.loads((COCO_SAMPLE / "annotations.json").read_text())


# --- what a row checks ------------------------------------------------------------------------


def strict_json(text: str) -> Any:
    """``json.loads`` that refuses ``NaN``, ``Infinity`` and ``-Infinity``."""

    def refuse(name: str) -> Any:
        raise ValueError(f"non-standard JSON constant {name}")

    return json.loads(text, parse_constant=refuse)


def snapshot(root: Path) -> dict[str, tuple]:
    """Every entry under ``root``, links and devices included, without following or opening
    any: type, size, modification time, device number and link target."""
    found = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = os.path.join(folder, name)
            st = os.lstat(path)
            target = os.readlink(path) if stat.S_ISLNK(st.st_mode) else None
            key = os.path.relpath(path, root)
            found[key] = (stat.S_IFMT(st.st_mode), st.st_size, st.st_mtime_ns, st.st_rdev, target)
    return found


def make_device(path: Path) -> None:
    """A character device (the full device, 1:7, as in the issue), or a FIFO where mknod is
    not allowed (not root). Neither may ever be opened by a test: a FIFO would block."""
    try:
        os.mknod(path, 0o600 | stat.S_IFCHR, os.makedev(1, 7))
    except PermissionError:
        os.mkfifo(path)


def run_main(argv: list[str], capfd: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """``detpose ARGV`` in this process: its exit code and everything it printed."""
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse refuses a value
        code = int(exc.code or 0)
    out, err = capfd.readouterr()
    return code, out + err


@dataclass(frozen=True)
class Case:
    """One row: ``setup(tmp)`` makes the files and returns the command line (run in tmp)."""

    id: str
    setup: Callable[[Path], list[str]]
    says: tuple[str, ...]
    code: int = 2
    env: dict[str, str] = field(default_factory=dict)
    check: Callable[[Path, str], None] | None = None  # more checks of a row that succeeds


# --- inputs -----------------------------------------------------------------------------------


def coco(tmp: Path, mutate: Callable[[dict], Any] | None = None, text: str | bytes | None = None) -> str:  # fmt: skip
    """``tmp/gt.json``: the real COCO excerpt, changed by ``mutate`` (or ``text`` as is)."""
    data = json.loads(json.dumps(COCO))
    if mutate is not None:
        mutate(data)
    body = json.dumps(data) if text is None else text
    (tmp / "gt.json").write_bytes(body.encode() if isinstance(body, str) else body)
    return "gt.json"


def big_integer_text() -> str:
    data = json.loads(json.dumps(COCO))
    data["annotations"][0]["bbox"][0] = "BIG"
    return json.dumps(data).replace('"BIG"', "1" + "0" * 400)


def rect(region_id: Any = "r1", **value: Any) -> dict:
    box = {"x": 10.0, "y": 10.0, "width": 20.0, "height": 30.0, "rotation": 0}
    return {
        "id": region_id, "type": "rectanglelabels", "from_name": "box", "to_name": "image",
        "original_width": 100, "original_height": 80,
        "value": {**box, "rectanglelabels": ["person"], **value},
    }  # fmt: skip


def point(region_id: Any = "r1-nose", name: str = "nose", **value: Any) -> dict:
    return {
        "id": region_id, "type": "keypointlabels", "from_name": "keypoints", "to_name": "image",
        "original_width": 100, "original_height": 80, "parentID": "r1",
        "value": {"x": 15.0, "y": 15.0, "width": 0.5, "keypointlabels": [name], **value},
    }  # fmt: skip


def task(image: str = "a.jpg", result: Any = None, task_id: int = 1, **data: Any) -> dict:
    regions = [rect(), point()] if result is None else result
    return {
        "id": task_id,
        "data": {"image": image, "width": 100, "height": 80, **data},
        "annotations": [{"id": 1, "result": regions}],
    }


def ls_import(tasks: Any = None, text: str | None = None) -> Callable[[Path], list[str]]:
    def setup(tmp: Path) -> list[str]:
        body = text if text is not None else json.dumps([task()] if tasks is None else tasks)
        (tmp / "tasks.json").write_text(body)
        return ["import", "--format", "labelstudio", "tasks.json", "--out", "train.json"]

    return setup


def cvat_image(name: str = "a.jpg", width: str = "100", height: str = "80", shapes: str | None = None) -> str:  # fmt: skip
    if shapes is None:
        shapes = (
            '<box label="person_box" xtl="10" ytl="10" xbr="30" ybr="40" group_id="1"/>'
            '<skeleton label="person" group_id="1">'
            '<points label="nose" occluded="0" outside="0" points="15,15"/></skeleton>'
        )
    return f'<image id="0" name="{name}" width="{width}" height="{height}">{shapes}</image>'


def cvat_import(*images: str, text: str | None = None) -> Callable[[Path], list[str]]:
    def setup(tmp: Path) -> list[str]:
        body = "".join(images or (cvat_image(),))
        xml = f'<?xml version="1.0"?><annotations><version>1.1</version>{body}</annotations>'
        (tmp / "ann.xml").write_text(text if text is not None else xml)
        return ["import", "--format", "cvat", "ann.xml", "--out", "train.json"]

    return setup


def job(tmp: Path, rows: list[dict] | None = None) -> str:
    """``tmp/out/job``: the real COCO excerpt's persons as a job's rows, in two part files."""
    make_job(tmp, rows)
    return "out/job"


def parts(tmp: Path) -> list[Path]:
    return sorted((tmp / "out" / "job" / "annotations").glob("run-*.parquet"))


def truncated_job(tmp: Path) -> str:
    name = job(tmp)
    first = parts(tmp)[0]
    first.write_bytes(first.read_bytes()[: first.stat().st_size // 2])
    return name


def wrong_schema_job(tmp: Path) -> str:
    name = job(tmp)
    pq.write_table(
        pa.table({"a": [1, 2]}), parts(tmp)[0].with_name("run-000-part-000009-x.parquet")
    )
    return name


def nan_job(tmp: Path) -> str:
    rows = sample_rows()
    rows[0]["persons"][0]["keypoints"][0] = math.nan
    rows[3]["persons"][0]["box_score"] = math.inf
    return job(tmp, rows)


def row_job(tmp: Path, **changes: Any) -> str:
    """A job whose first row is changed (written with the annotation schema)."""
    rows = sample_rows()
    rows[0] = {**rows[0], **changes}
    write_part(tmp / "out" / "job" / "annotations", 0, rows)
    return "out/job"


def export(job_setup: Callable[[Path], str], *extra: str, out: str = "x.json", fmt: str = "coco"):
    def setup(tmp: Path) -> list[str]:
        return ["export", "--job", job_setup(tmp), "--format", fmt, "--out", out, *extra]

    return setup


def review(job_setup: Callable[[Path], str], *extra: str, out: str = "gallery"):
    def setup(tmp: Path) -> list[str]:
        return ["review", "--job", job_setup(tmp), "--out", out, "--limit", "2", *extra]

    return setup


def eval_job(annotations: Callable[[Path], str] = coco, job_setup=job, *extra: str, out="ev"):
    """``eval --job``: scored without Ray."""

    def setup(tmp: Path) -> list[str]:
        return ["eval", "--annotations", annotations(tmp), "--job", job_setup(tmp),
                "--output", out, *extra]  # fmt: skip

    return setup


def eval_gt(mutate: Callable[[dict], Any] | None = None, text: str | None = None, *extra: str):
    """``eval --images --gt-boxes`` on the real sample: must fail before Ray starts."""

    def setup(tmp: Path) -> list[str]:
        return ["eval", "--annotations", coco(tmp, mutate, text), "--images",
                str(COCO_SAMPLE / "images"), "--output", "ev", "--gt-boxes", *extra]  # fmt: skip

    return setup


def ann(field_name: str, value: Any, index: int = 0) -> Callable[[dict], None]:
    return lambda d: d["annotations"][index].__setitem__(field_name, value)


def image(field_name: str, value: Any, index: int = 0) -> Callable[[dict], None]:
    return lambda d: d["images"][index].__setitem__(field_name, value)


def with_file(name: str, make: Callable[[Path], None], then: Callable[[Path], list[str]]):
    def setup(tmp: Path) -> list[str]:
        make(tmp / name)
        return then(tmp)

    return setup


def link_to(target: str) -> Callable[[Path], None]:
    return lambda path: path.symlink_to(target)


def folder(path: Path) -> None:
    path.mkdir(parents=True)


def regular(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("precious\n")


UNREACHABLE = {"AWS_ENDPOINT_URL": CLOSED_PORT, "AWS_MAX_ATTEMPTS": "1"}


def drop_image_field(name: str) -> Callable[[dict], None]:
    return lambda d: d["images"][0].pop(name)


def _second(key: str, copy_from: int = 0, **changes: Any) -> Callable[[dict], None]:
    """Append a copy of ``d[key][copy_from]`` with ``changes``."""
    return lambda d: d[key].append({**d[key][copy_from], **changes})


# --- checks of rows that succeed ---------------------------------------------------------------


def says_partial_in(name: str) -> Callable[[Path, str], None]:
    def check(tmp: Path, printed: str) -> None:
        assert "PARTIAL" in printed and "PARTIAL" in (tmp / name).read_text()

    return check


def link_replaced_target_kept(tmp: Path, printed: str) -> None:
    assert (tmp / "x.json").is_file() and not (tmp / "x.json").is_symlink()
    assert (tmp / "precious.txt").read_text() == "precious\n"


# --- the table --------------------------------------------------------------------------------

ISSUE_CASES = [
    # 1. export --out replaces what it should not.
    Case(
        "export-out-char-device",
        with_file("dev", make_device, export(job, out="dev")),
        ("'dev'", "not a regular file"),
    ),
    Case(
        "export-out-symlink-to-stdout",
        with_file("x.json", link_to("/proc/self/fd/1"), export(job)),
        ("x.json", "symbolic link", "--replace-symlink"),
    ),
    # 2. bad inputs that ended in a traceback.
    Case(
        "eval-images-is-a-string",
        eval_job(lambda t: coco(t, lambda d: d.update(images="abc"))),
        ("gt.json", "images", "valid list"),
    ),
    Case(
        "eval-image-without-file-name",
        eval_job(lambda t: coco(t, drop_image_field("file_name"))),
        ("gt.json", "images[0] (id 785).file_name", "Field required"),
    ),
    Case(
        "eval-bbox-is-a-string",
        eval_job(lambda t: coco(t, ann("bbox", "1,2,3,4"))),
        ("annotations[0] (id 442619).bbox", "valid list"),
    ),
    Case(
        "eval-keypoints-are-a-string",
        eval_job(lambda t: coco(t, ann("keypoints", "1 2 2"))),
        ("annotations[0] (id 442619).keypoints", "valid list"),
    ),
    Case(
        "eval-annotations-null",
        eval_job(lambda t: coco(t, lambda d: d.update(annotations=None))),
        ("gt.json", "annotations", "valid list"),
    ),
    Case(
        "eval-integer-too-large-for-a-float",
        eval_job(lambda t: coco(t, text=big_integer_text())),
        ("annotations[0] (id 442619).bbox[0]", "valid number"),
    ),
    Case(
        "eval-output-is-an-existing-file",
        with_file("ev", regular, eval_job()),
        ("'ev'", "expected a folder"),
    ),
    Case(
        "import-ls-region-value-null",
        ls_import([task(result=[{**rect(), "value": None}])]),
        ("tasks.json", "tasks[0] (id 1).annotations[0] (id 1).result[0] (id 'r1').value"),
    ),
    Case(
        "import-ls-x-is-a-string",
        ls_import([task(result=[rect(x="10")])]),
        ("result[0] (id 'r1').value.x", "valid number", "'10'"),
    ),
    Case(
        "import-ls-result-is-a-string",
        ls_import([task(result="regions")]),
        ("tasks[0] (id 1).annotations[0] (id 1).result", "valid list"),
    ),
    Case(
        "import-ls-100000-nested-brackets",
        ls_import(text="[" * 100_000),
        ("tasks.json", "nested too deeply"),
    ),
    Case(
        "import-a-directory",
        with_file(
            "tasks.json",
            folder,
            lambda t: ["import", "--format", "labelstudio", "tasks.json", "--out", "o.json"],
        ),
        ("tasks.json", "is a folder"),
    ),
    Case(
        "export-part-with-the-wrong-schema",
        export(wrong_schema_job),
        ("run-000-part-000009-x.parquet", "no column"),
    ),
    Case(
        "review-part-with-the-wrong-schema",
        review(wrong_schema_job),
        ("run-000-part-000009-x.parquet", "no column"),
    ),
    Case(
        "eval-job-part-with-the-wrong-schema",
        eval_job(coco, wrong_schema_job),
        ("run-000-part-000009-x.parquet", "no column"),
    ),
    Case(
        "import-from-unreachable-storage",
        lambda t: ["import", "--format", "cvat", "s3://b/ann.xml", "--out", "train.json"],
        ("cannot read 's3://b/ann.xml'", "EndpointConnectionError"),
        env=UNREACHABLE,
    ),
    Case(
        "export-to-unreachable-storage",
        export(job, out="s3://b/x.json"),
        ("cannot write 's3://b/x.json'", "EndpointConnectionError"),
        env=UNREACHABLE,
    ),
    Case(
        "eval-annotations-on-unreachable-storage",
        eval_job(lambda t: "s3://b/gt.json"),
        ("cannot read 's3://b/gt.json'", "EndpointConnectionError"),
        env=UNREACHABLE,
    ),
    Case(
        "review-job-on-unreachable-storage",
        review(lambda t: "s3://b/job"),
        ("cannot list 's3://b/job/annotations'", "EndpointConnectionError"),
        env=UNREACHABLE,
    ),
    Case(
        "export-job-on-unreachable-storage",
        export(lambda t: "s3://b/job"),
        ("cannot list 's3://b/job/annotations'", "EndpointConnectionError"),
        env=UNREACHABLE,
    ),
    # 3. NaN and Infinity written into JSON.
    Case(
        "import-cvat-box-without-coordinates",
        cvat_import(cvat_image(shapes='<box label="person_box" group_id="1"/>')),
        ("ann.xml", "<image> 0 ('a.jpg')", "<box> 0: xtl", "expected a number"),
    ),
    Case(
        "import-cvat-points-inf-nan",
        cvat_import(
            cvat_image(
                shapes='<skeleton label="person"><points label="nose" points="inf,nan"/></skeleton>'
            )
        ),
        ("<image> 0 ('a.jpg')", "<points label='nose'>", "finite number"),
    ),
    Case(
        "import-ls-x-nan",
        ls_import(text=json.dumps([task(result=[rect(x=math.nan)])])),
        ("result[0] (id 'r1').value.x", "finite number", "nan"),
    ),
    Case(
        "eval-gt-boxes-nan-box",
        eval_gt(ann("bbox", [math.nan, 10, 20, 30])),
        ("annotations[0] (id 442619).bbox[0]", "finite number"),
    ),
    Case(
        "eval-gt-boxes-negative-box",
        eval_gt(ann("bbox", [10, 10, -20, 30])),
        ("annotations[0] (id 442619).bbox", "width and height must be >= 0"),
    ),
    Case(
        "eval-gt-boxes-1e308-box",
        eval_gt(ann("bbox", [1e308, 10, 1e308, 30])),
        ("annotations[0] (id 442619)", "outside its image"),
    ),
    Case(
        "export-nan-keypoints-coco", export(nan_job), ("left out 2 persons", "non-finite"), code=0
    ),
    Case(
        "export-nan-keypoints-labelstudio",
        export(nan_job, fmt="labelstudio"),
        ("left out 2 persons", "non-finite"),
        code=0,
    ),
    # 4. an unreadable part file gives an output that looks complete.
    Case(
        "export-truncated-part",
        export(truncated_job),
        ("run-000-part-000000-test0.parquet", "cannot be read", "--allow-partial"),
    ),
    Case(
        "review-truncated-part",
        review(truncated_job),
        ("run-000-part-000000-test0.parquet", "cannot be read"),
    ),
    Case(
        "eval-job-truncated-part",
        eval_job(coco, truncated_job),
        ("run-000-part-000000-test0.parquet", "cannot be read"),
    ),
    # 5. duplicates vanish or multiply.
    Case(
        "import-ls-two-rectangles-one-id",
        ls_import([task(result=[rect("p"), rect("p", x=50.0)])]),
        ("regions [0] and [1]", "rectanglelabels with id 'p'"),
    ),
    Case(
        "import-cvat-image-listed-twice",
        cvat_import(cvat_image(), cvat_image()),
        ("'a.jpg' is listed twice", "<image> 0 ('a.jpg') and <image> 1 ('a.jpg')"),
    ),
    Case(
        "import-ls-image-listed-twice",
        ls_import([task(), task(task_id=2)]),
        ("'a.jpg' is listed twice", "tasks[0] (id 1) and tasks[1] (id 2)"),
    ),
    Case(
        "eval-duplicate-image-ids",
        eval_job(lambda t: coco(t, _second("images", file_name="b.jpg"))),
        ("images[0] and images[4]", "same id 785"),
    ),
    Case(
        "eval-duplicate-annotation-ids",
        eval_job(lambda t: coco(t, _second("annotations"))),
        ("annotations[0] and annotations[14]", "same id 442619"),
    ),
    Case(
        "eval-orphan-image-id",
        eval_job(lambda t: coco(t, ann("image_id", 12345))),
        ("annotations[0] (id 442619)", "image_id 12345 is not the id of any image"),
    ),
    # 6. no upper bounds.
    Case(
        "synth-size-100000",
        lambda t: ["synth", "--out", "s", "--images", "1", "--seed", "1", "--size", "100000"],
        ("got 100000 for size", "64 to 4096"),
    ),
    Case(
        "import-ls-width-1e300",
        ls_import([task(width=1e300)]),
        ("tasks[0] (id 1).data.width", "valid integer"),
    ),
    Case(
        "import-cvat-width-1e300",
        cvat_import(cvat_image(width="1e300")),
        ("<image> 0 ('a.jpg')", "width", "'1e300'"),
    ),
    Case(
        "import-cvat-file-name-climbs-out",
        cvat_import(cvat_image(name="../x.jpg")),
        ("'../x.jpg' climbs out of the image root",),
    ),
    Case(
        "eval-images-file-name-climbs-out",
        eval_gt(image("file_name", "../secret.txt")),
        ("images[0] (id 785)", "'../secret.txt' climbs out of --images"),
    ),
]

OWN_CASES = [
    # Outputs.
    Case(
        "export-out-fifo", with_file("pipe", os.mkfifo, export(job, out="pipe")), ("'pipe'", "FIFO")
    ),
    Case("export-out-folder", with_file("x.json", folder, export(job)), ("x.json", "is a folder")),
    Case(
        "export-out-symlink-replaced-when-asked",
        with_file(
            "x.json",
            link_to("precious.txt"),
            with_file("precious.txt", regular, export(job, "--replace-symlink")),
        ),
        ("exported 6 images",),
        code=0,
        check=link_replaced_target_kept,
    ),
    Case(
        "export-out-parent-is-a-file",
        with_file("notdir", regular, export(job, out="notdir/x.json")),
        ("notdir/x.json", "cannot be created"),
    ),
    Case(
        "export-cvat-sidecar-is-a-device",
        with_file("x.labels.json", make_device, export(job, out="x.xml", fmt="cvat")),
        ("x.labels.json", "not a regular file"),
    ),
    Case(
        "import-out-device",
        with_file("train.json", make_device, ls_import()),
        ("train.json", "not a regular file"),
    ),
    Case(
        "import-out-symlink",
        with_file("train.json", link_to("/proc/self/fd/1"), ls_import()),
        ("train.json", "symbolic link"),
    ),
    Case(
        "import-input-fifo",
        with_file(
            "in.json",
            os.mkfifo,
            lambda t: ["import", "--format", "labelstudio", "in.json", "--out", "o.json"],
        ),
        ("in.json", "is a FIFO"),
    ),
    Case(
        "review-out-is-a-file",
        with_file("gallery", regular, review(job)),
        ("'gallery'", "expected a folder"),
    ),
    Case(
        "review-index-html-is-a-symlink",
        with_file(
            "gallery",
            folder,
            with_file("gallery/index.html", link_to("/proc/self/fd/1"), review(job)),
        ),
        ("index.html", "symbolic link"),
    ),
    Case(
        "review-thumbs-is-a-file",
        with_file("gallery/thumbs", regular, review(job)),
        ("thumbs", "expected a folder"),
    ),
    Case("review-limit-unbounded", review(job, "--limit", "1000000000"), ("--limit", "1 to 10000")),
    Case(
        "review-out-on-unreachable-storage",
        review(job, out="s3://b/gallery"),
        ("cannot write 's3://b/gallery'", "EndpointConnectionError"),
        env=UNREACHABLE,
    ),
    Case(
        "eval-eval-json-is-a-symlink",
        with_file("ev", folder, with_file("ev/eval.json", link_to("/proc/self/fd/1"), eval_job())),
        ("eval.json", "symbolic link"),
    ),
    Case(
        "eval-rows-is-a-file",
        with_file("ev/rows", regular, eval_job()),
        ("rows", "expected a folder"),
    ),
    Case(
        "eval-output-on-unreachable-storage",
        eval_job(out="s3://b/ev"),
        ("cannot write 's3://b/ev'", "EndpointConnectionError"),
        env=UNREACHABLE,
    ),
    # COCO keypoints (eval --annotations).
    Case(
        "eval-width-zero",
        eval_job(lambda t: coco(t, image("width", 0))),
        ("images[0] (id 785).width", "greater than or equal to 1"),
    ),
    Case(
        "eval-width-1e300",
        eval_job(lambda t: coco(t, image("width", 1e300))),
        ("images[0] (id 785).width", "valid integer"),
    ),
    Case(
        "eval-bbox-of-three-numbers",
        eval_job(lambda t: coco(t, ann("bbox", [1, 2, 3]))),
        ("annotations[0] (id 442619).bbox", "at least 4"),
    ),
    Case(
        "eval-wrong-dataset",
        eval_job(coco, job, "--dataset", "crowdpose"),
        ("annotations[0] (id 442619)", "17 keypoints", "wrong --dataset"),
    ),
    Case(
        "eval-iscrowd-is-a-string",
        eval_job(lambda t: coco(t, ann("iscrowd", "no"))),
        ("annotations[0] (id 442619).iscrowd", "expected 0 or 1"),
    ),
    Case(
        "eval-orphan-category",
        eval_job(lambda t: coco(t, ann("category_id", 7))),
        ("annotations[0] (id 442619)", "category_id 7 is not in categories"),
    ),
    Case(
        "eval-one-file-name-twice",
        eval_job(lambda t: coco(t, _second("images", id=1))),
        ("images[0] and images[4]", "same file_name '000000000785.jpg'"),
    ),
    Case("eval-not-json", eval_job(lambda t: coco(t, text="{images: []")), ("gt.json", "not JSON")),
    Case(
        "eval-not-utf8", eval_job(lambda t: coco(t, text=b"\xff\xfe{}")), ("gt.json", "not UTF-8")
    ),
    Case(
        "eval-a-list-not-an-object",
        eval_job(lambda t: coco(t, text="[]")),
        ("gt.json", "valid dictionary"),
    ),
    Case(
        "eval-visibility-3",
        eval_job(lambda t: coco(t, ann("keypoints", [1, 1, 3] * 17))),
        ("annotations[0] (id 442619).keypoints", "visibility 3"),
    ),
    Case(
        "eval-keypoint-far-outside",
        eval_job(lambda t: coco(t, ann("keypoints", [9e6, 1, 2] * 17))),
        ("annotations[0] (id 442619)", "keypoint lies more than an image size outside"),
    ),
    Case(
        "eval-annotations-missing",
        eval_job(lambda t: "absent.json"),
        ("'absent.json' does not exist",),
    ),
    Case(
        "eval-annotations-a-folder",
        with_file("gt.json", folder, eval_job(lambda t: "gt.json")),
        ("'gt.json' is a folder",),
    ),
    Case(
        "eval-allow-partial-needs-job",
        eval_gt(None, None, "--allow-partial"),
        ("--allow-partial", "goes with --job"),
    ),
    # Partial results, accepted and said so.
    Case(
        "eval-job-partial-accepted",
        eval_job(coco, truncated_job, "--allow-partial"),
        ("PARTIAL", "run-000-part-000000-test0.parquet"),
        code=0,
        check=says_partial_in("ev/eval.json"),
    ),
    Case(
        "export-partial-accepted",
        export(truncated_job, "--allow-partial"),
        ("PARTIAL", "run-000-part-000000-test0.parquet"),
        code=0,
        check=says_partial_in("x.json"),
    ),
    Case(
        "review-partial-accepted",
        review(truncated_job, "--allow-partial"),
        ("PARTIAL", "run-000-part-000000-test0.parquet"),
        code=0,
        check=says_partial_in("gallery/index.html"),
    ),
    Case(
        "review-nan-persons-left-out-and-said",
        review(nan_job),
        ("left out 2 persons", "non-finite"),
        code=0,
    ),
    # The job's own rows.
    Case(
        "export-part-row-with-an-unknown-status",
        export(lambda t: row_job(t, status="maybe")),
        ("run-000-part-000000-test0.parquet", "row 0: status 'maybe'"),
    ),
    Case(
        "review-part-ok-row-of-width-zero",
        review(lambda t: row_job(t, width=0)),
        ("run-000-part-000000-test0.parquet", "row 0: an ok row with width 0"),
    ),
    # Label Studio.
    Case("import-ls-task-not-an-object", ls_import(["a.jpg"]), ("tasks[0]", "valid dictionary")),
    Case(
        "import-ls-without-data-image",
        ls_import([{"id": 3, "data": {}}]),
        ("tasks[0] (id 3).data.image", "Field required"),
    ),
    Case(
        "import-ls-rotation-nan",
        ls_import(text=json.dumps([task(result=[rect(rotation=math.nan)])])),
        ("value.rotation", "finite number"),
    ),
    Case(
        "import-ls-original-width-zero",
        ls_import([task(result=[{**rect(), "original_width": 0}])]),
        ("result[0] (id 'r1').original_width", "greater than or equal to 1"),
    ),
    Case(
        "import-ls-x-far-outside",
        ls_import([task(result=[rect(x=500.0)])]),
        ("result[0] (id 'r1').value.x", "less than or equal to 200"),
    ),
    Case(
        "import-ls-two-keypoints-one-id",
        ls_import([task(result=[rect(), point("k"), point("k", "left_eye")])]),
        ("regions [1] and [2]", "keypointlabels with id 'k'"),
    ),
    Case(
        "import-ls-annotations-a-string",
        ls_import([{**task(), "annotations": "done"}]),
        ("tasks[0] (id 1).annotations", "valid list"),
    ),
    Case(
        "import-ls-file-name-climbs-out",
        ls_import([task(image="a/../../b.jpg")]),
        ("'a/../../b.jpg' climbs out of the image root",),
    ),
    Case("import-ls-not-a-list", ls_import({"tasks": []}), ("tasks.json", "not a list of tasks")),
    # CVAT.
    Case(
        "import-cvat-not-xml", cvat_import(text="<annotations><image"), ("ann.xml", "not CVAT XML")
    ),
    Case("import-cvat-width-text", cvat_import(cvat_image(width="wide")), ("width", "'wide'")),
    Case(
        "import-cvat-points-of-three-numbers",
        cvat_import(
            cvat_image(
                shapes='<skeleton label="person"><points label="nose" points="1,2,3"/></skeleton>'
            )
        ),
        ("<points label='nose'>", "expected 'x,y'"),
    ),
    Case(
        "import-cvat-box-upside-down",
        cvat_import(
            cvat_image(shapes='<box label="person_box" xtl="30" ytl="10" xbr="10" ybr="40"/>')
        ),
        ("<box> 0", "above or left of top-left"),
    ),
    Case(
        "import-cvat-group-id-text",
        cvat_import(
            cvat_image(
                shapes='<box label="person_box" xtl="1" ytl="1" xbr="2" ybr="2" group_id="one"/>'
            )
        ),
        ("<box> 0", "group_id", "'one'"),
    ),
    Case(
        "import-cvat-point-far-outside",
        cvat_import(
            cvat_image(
                shapes='<skeleton label="person"><points label="nose" points="1e9,5"/></skeleton>'
            )
        ),
        ("<points label='nose'>", "outside the image"),
    ),
    Case(
        "import-cvat-one-keypoint-twice",
        cvat_import(
            cvat_image(
                shapes='<skeleton label="person"><points label="nose" points="1,1"/>'
                '<points label="nose" points="2,2"/></skeleton>'
            )
        ),
        ("<points label='nose'>", "second keypoint"),
    ),
    Case(
        "synth-images-unbounded",
        lambda t: ["synth", "--out", "s", "--images", "100000000", "--seed", "1"],
        ("got 100000000 for images", "1 to 100000"),
    ),
    # What works must still work, and write strict JSON.
    Case("import-ls-clean", ls_import(), ("imported 1 images, 1 persons",), code=0),
    Case("import-cvat-clean", cvat_import(), ("imported 1 images, 1 persons",), code=0),
]

CASES = ISSUE_CASES + OWN_CASES


def test_the_table_is_as_long_as_the_issue_asks():
    assert len({c.id for c in CASES}) == len(CASES)
    assert len(OWN_CASES) >= 30, len(OWN_CASES)


def check_outcome(case: Case, tmp: Path, code: int, printed: str, before: dict) -> None:
    """The row's exit code and message, no traceback, and nothing written on a refusal, or
    only regular, whole, strict-JSON files on success."""
    assert code == case.code, (code, printed[-3000:])
    for text in case.says:
        assert text in printed, (text, printed[-3000:])
    assert "Traceback" not in printed, printed[-3000:]
    after = snapshot(tmp)
    if case.code != 0:
        assert after == before, "a refused command wrote or changed files"
        return
    changed = [k for k in after if after[k] != before.get(k) and stat.S_ISREG(after[k][0])]
    assert changed, "a command that succeeded wrote nothing"
    for name in changed:
        assert not name.endswith(".partial") and not os.path.basename(name).startswith(".")
        if name.endswith(".json"):
            strict_json((tmp / name).read_text())
    if case.check is not None:
        case.check(tmp, printed)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_hostile_input(case: Case, tmp_path, monkeypatch, capfd, caplog):
    monkeypatch.chdir(tmp_path)
    for name, value in case.env.items():
        monkeypatch.setenv(name, value)
    argv = case.setup(tmp_path)
    capfd.readouterr()
    ray = sys.modules.get("ray")
    ray_was_up = ray is not None and ray.is_initialized()
    before = snapshot(tmp_path)

    code, printed = run_main(argv, capfd)

    check_outcome(case, tmp_path, code, printed + caplog.text, before)
    ray = sys.modules.get("ray")
    assert ray_was_up or ray is None or not ray.is_initialized(), "the command started Ray"


# --- the console path: a few rows as a real `detpose` process -----------------------------------

CONSOLE_CASES = [
    "export-out-char-device",
    "eval-gt-boxes-nan-box",  # eval --images: Ray would start if the file were not checked first
    "review-truncated-part",
]


@pytest.mark.parametrize("case_id", CONSOLE_CASES)
def test_hostile_input_from_the_console(case_id, tmp_path):
    case = next(c for c in CASES if c.id == case_id)
    argv = case.setup(tmp_path)
    before = snapshot(tmp_path)
    result = run_cli(*argv, cwd=tmp_path, timeout=120)
    printed = result.stdout + result.stderr
    check_outcome(case, tmp_path, result.returncode, printed, before)
    assert "Started a local Ray instance" not in printed


# --- devices, links and truncated part files, command by command ----------------------------------

TARGETS = {  # command → (the path it would replace, its command line)
    "export": ("x.json", lambda t, out: ["export", "--job", job(t), "--format", "coco", "--out", out]),
    "review": ("gallery/index.html", lambda t, out: ["review", "--job", job(t), "--out", out]),
    "eval": ("ev/eval.json", lambda t, out: ["eval", "--annotations", coco(t), "--job", job(t),
                                             "--output", out]),
}  # fmt: skip


@pytest.mark.parametrize("kind", ["device", "symlink"])
@pytest.mark.parametrize("command", sorted(TARGETS))
def test_devices_and_links_are_left_untouched(command, kind, tmp_path, monkeypatch, capfd):
    """A device (or FIFO) where the output goes, or a link where a file would be replaced:
    exit 2 naming it, and the device, the link and the link's target stay as they were."""
    monkeypatch.chdir(tmp_path)
    file_name, argv = TARGETS[command]
    (tmp_path / "precious.txt").write_text("precious\n")
    if kind == "device":  # the output itself: export's file, review's and eval's folder
        target = tmp_path / file_name.split("/")[0]
        make_device(target)
    else:
        target = tmp_path / file_name
        target.parent.mkdir(exist_ok=True)
        target.symlink_to(tmp_path / "precious.txt")
    out = file_name.split("/")[0]
    command_line = argv(tmp_path, out)
    before = snapshot(tmp_path)

    code, printed = run_main(command_line, capfd)

    assert code == 2, printed
    assert str(target.relative_to(tmp_path)) in printed and "Traceback" not in printed
    assert snapshot(tmp_path) == before
    assert (tmp_path / "precious.txt").read_text() == "precious\n"


@pytest.mark.parametrize("command", sorted(TARGETS))
def test_a_truncated_part_file_stops_the_command_naming_it(command, tmp_path, monkeypatch, capfd):
    monkeypatch.chdir(tmp_path)
    file_name, argv = TARGETS[command]
    command_line = argv(tmp_path, file_name.split("/")[0])
    truncated = parts(tmp_path)[1]
    truncated.write_bytes(truncated.read_bytes()[: truncated.stat().st_size // 2])
    before = snapshot(tmp_path)

    code, printed = run_main(command_line, capfd)

    assert code == 2, printed
    assert str(truncated) in printed and "cannot be read" in printed
    assert "Traceback" not in printed
    assert snapshot(tmp_path) == before
