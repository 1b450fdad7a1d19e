"""The review gallery: streaming selection, overlays and a self-contained page."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

import pipeline.review.gallery as review
from jobs.cli import main
from pipeline.review.gallery import build_gallery, select_for_review
from pipeline.review.overlay import draw_poses
from pipeline.store.job_parts import PartFileError
from pipeline.store.sink import NoAnnotationsError
from schemas.spec import StorageSpec
from tests.review_fixtures import make_job, ok_row, person, write_part

STORAGE = StorageSpec()


def _all_rows(job: Path) -> list[dict]:
    rows = []
    for path in sorted((job / "annotations").glob("run-*.parquet")):
        rows += pq.ParquetFile(path).read().to_pylist()  # not read_table: tests refuse it
    return rows


def _expected_order(job: Path, empty: str = "first") -> list[str]:
    """Every ok row's uri, most uncertain first: the brute-force reference."""
    keyed = []
    for row in _all_rows(job):
        if row["status"] != "ok":
            continue
        scores = [p["pose_score"] for p in row["persons"]]
        key = min(scores) if scores else (-1.0 if empty == "first" else 2.0)
        keyed.append((key, row["uri"]))
    return [uri for _, uri in sorted(keyed)]


@pytest.fixture
def job(tmp_path: Path) -> Path:
    return make_job(tmp_path, n_ok=30, n_empty=3, n_errors=5, parts=3)


@pytest.fixture
def small_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    """Several batches per part file, so the heap works across batches and files."""
    monkeypatch.setattr(review, "BATCH_ROWS", 4)


@pytest.fixture
def no_whole_table_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("the review must stream batches, not read whole tables")

    monkeypatch.setattr(pq, "read_table", refuse)


@pytest.mark.parametrize("limit", [1, 5, 12, 100])
def test_selection_returns_exactly_the_n_most_uncertain(
    job, limit, small_batches, no_whole_table_reads
):
    expected = _expected_order(job)
    sel = select_for_review(str(job), STORAGE, limit=limit)
    assert [item.uri for item in sel.items] == expected[:limit]
    assert sel.files == 3 and sel.rows == 30 + 3 + 1 + 5
    assert sel.ok == 34 and sel.error_rows == 5 and sel.empty == 3
    assert sel.recovered == 1
    assert sel.errors_by_kind == {"missing": 2, "unreadable": 3}


@pytest.fixture
def expected_orders(job) -> dict[str, list[str]]:
    return {"first": _expected_order(job, "first"), "last": _expected_order(job, "last")}


def test_selection_streams_and_ranks_empty_images_as_asked(
    job, expected_orders, small_batches, no_whole_table_reads
):
    first = select_for_review(str(job), STORAGE, limit=6, empty="first")
    assert [i.uri for i in first.items] == expected_orders["first"][:6]
    assert all(not i.persons for i in first.items[:3]) and first.items[3].persons
    last = select_for_review(str(job), STORAGE, limit=34, empty="last")
    assert [i.uri for i in last.items] == expected_orders["last"]
    assert all(not i.persons for i in last.items[-3:])
    # The items carry the rows' poses and their lowest and mean scores.
    item = last.items[0]
    scores = [p["pose_score"] for p in item.persons]
    assert item.min_score == pytest.approx(min(scores))
    assert item.mean_score == pytest.approx(np.mean(scores))
    assert len(item.persons[0]["keypoints"]) == 51


def test_errors_are_counted_all_but_listed_up_to_the_cap(job, small_batches):
    sel = select_for_review(str(job), STORAGE, limit=3, max_errors=2)
    assert len(sel.errors) == 2 and sel.error_rows == 5
    assert {e.kind for e in sel.errors} <= {"missing", "unreadable"}
    assert all(e.message.startswith("<broken>") for e in sel.errors)


def test_foreign_files_are_ignored_and_unreadable_ones_fatal_unless_partial(job):
    annotations = job / "annotations"
    (annotations / "notes.parquet").write_bytes(b"not ours")
    assert select_for_review(str(job), STORAGE, limit=3).rows == 39
    broken = annotations / "run-001-part-000000-broken.parquet"
    broken.write_bytes(b"PAR1 truncated")
    with pytest.raises(PartFileError, match=str(broken)):
        select_for_review(str(job), STORAGE, limit=3)
    sel = select_for_review(str(job), STORAGE, limit=3, allow_partial=True)
    assert len(sel.items) == 3 and sel.rows == 39
    assert sel.parts.partial and list(sel.parts.skipped) == [str(broken)]


def test_a_job_without_annotations_is_a_clear_error(tmp_path):
    with pytest.raises(NoAnnotationsError, match="no annotation files"):
        select_for_review(str(tmp_path / "nothing"), STORAGE)


def test_the_annotations_folder_itself_is_accepted(job):
    sel = select_for_review(str(job / "annotations"), STORAGE, limit=2)
    assert len(sel.items) == 2


# --- overlays -------------------------------------------------------------------------------


def _diff(a: Image.Image, b: Image.Image) -> np.ndarray:
    return np.abs(np.asarray(a, dtype=np.int16) - np.asarray(b, dtype=np.int16)).sum(axis=2)


def test_overlay_marks_every_keypoint_and_fades_low_scores():
    base = Image.new("RGB", (400, 300), (128, 128, 128))
    scores = [0.9] * 17
    scores[0] = 0.05  # the nose: below the threshold, drawn faded
    p = person((100, 50, 100, 200), 0.8, keypoint_scores=scores)
    drawn = draw_poses(base, [p], scale=1.0)
    assert drawn.size == base.size and base.getpixel((0, 0)) == (128, 128, 128)
    diff = _diff(drawn, base)
    kp = np.array(p["keypoints"]).reshape(17, 3)
    for k, (x, y, _) in enumerate(kp):
        patch = diff[int(y) - 2 : int(y) + 3, int(x) - 2 : int(x) + 3]
        assert patch.max() > 40, f"keypoint {k} not drawn"

    # Faded, not hidden: the low-score keypoint changes its pixels less than a confident one.
    def around(k: int) -> float:
        x, y = int(kp[k, 0]), int(kp[k, 1])
        return float(diff[y - 4 : y + 5, x - 4 : x + 5].mean())

    assert 0 < around(0) < around(15)
    # Scale maps original coordinates: at half size the ankle is drawn at half the position.
    half = draw_poses(base.resize((200, 150)), [p], scale=0.5)
    x, y = kp[15, :2] / 2
    assert _diff(half, base.resize((200, 150)))[int(y), int(x)] > 40


def test_recovered_persons_have_a_dashed_box():
    base = Image.new("RGB", (300, 200), (0, 0, 0))
    box = (40, 60, 200, 100)
    kp_off = [0.0] * 17  # faded keypoints only: the box edge is what changes on the bottom line
    solid = _diff(draw_poses(base, [person(box, 0.5, "detected", kp_off)], 1.0), base)
    dashed = _diff(draw_poses(base, [person(box, 0.5, "recovered", kp_off)], 1.0), base)
    bottom = 60 + 100  # the bottom edge, away from the label and limbs
    solid_edge = solid[bottom, 50:230] > 0
    dashed_edge = dashed[bottom, 50:230] > 0
    assert solid_edge.all()
    assert 0.3 < dashed_edge.mean() < 0.8


# --- the gallery ----------------------------------------------------------------------------


class _Refs(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.refs: list[str] = []
        self.imgs: list[dict[str, str | None]] = []

    def handle_starttag(self, tag, attrs):
        attrs_d = dict(attrs)
        for name in ("src", "href"):
            if attrs_d.get(name) is not None:
                self.refs.append(attrs_d[name])
        if tag == "img":
            self.imgs.append(attrs_d)


def test_gallery_references_only_files_that_exist_under_it(job, tmp_path, monkeypatch):
    fetched: list[str] = []
    real_fetch = review.fetch_and_decode

    def counting_fetch(fs, path, spec, retries=None):
        fetched.append(path)
        return real_fetch(fs, path, spec, retries)

    monkeypatch.setattr(review, "fetch_and_decode", counting_fetch)
    out = tmp_path / "gallery"
    result = build_gallery(str(job), str(out), STORAGE, limit=34, max_errors=3, side=240)

    assert len(fetched) == 34  # the selected images only, each once
    page = (out / "index.html").read_text()
    parser = _Refs()
    parser.feed(page)
    assert len(parser.imgs) == 34
    for ref in parser.refs:
        assert not re.match(r"^[a-z][a-z0-9+.-]*:|^/|^//", ref, re.I), f"not relative: {ref}"
        assert ".." not in ref.split("/")
        assert (out / ref).is_file(), f"{ref} is referenced but not written"
    assert "<link" not in page and "@import" not in page and "url(" not in page
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert files == sorted(["index.html", *(img["src"] for img in parser.imgs)])
    for img in parser.imgs:
        with Image.open(out / img["src"]) as thumb:
            assert thumb.format == "JPEG" and max(thumb.size) == 240
            assert thumb.size == (int(img["width"]), int(img["height"]))

    # Tiles in uncertainty order; the missing image is a placeholder saying why.
    uris = re.findall(r'data-uri="([^"]+)"', page)
    assert uris == _expected_order(job)[:34]
    assert result.unavailable == 1
    gone = next(t for t in result.tiles if t.item.uri.endswith("gone.jpg"))
    assert gone.unavailable is not None and gone.unavailable.startswith("missing")
    assert "image unavailable" in page and "unavailable" in re.search(
        r"<figure[^>]*gone\.jpg[^>]*>", page
    ).group(0)
    # Errors: a capped table with kind and (escaped) message, and the cap said.
    assert "Listing the first 3 of 5 error rows" in page
    assert page.count('<tr data-kind="') == 3
    assert "&lt;broken&gt;" in page and "<broken>" not in page
    assert "1 recovered" in page and "no person found" in page


def test_an_unreadable_image_is_a_placeholder_tile(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    (images / "truncated.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    rows = [ok_row(str(images / "truncated.jpg"), (200, 150), [person((10, 10, 50, 100), 0.4)])]
    job = tmp_path / "out" / "job"
    write_part(job / "annotations", 0, rows)
    result = build_gallery(str(job), str(tmp_path / "g"), STORAGE, side=200)
    (tile,) = result.tiles
    assert tile.unavailable is not None and tile.unavailable.startswith("unreadable")
    with Image.open(tmp_path / "g" / tile.thumb) as thumb:
        assert thumb.size == (200, 150)


def test_review_command(job, tmp_path, capsys):
    out = tmp_path / "cli-gallery"
    assert main(["review", "--job", str(job), "--out", str(out), "--limit", "4"]) == 0
    printed = capsys.readouterr().out
    assert "4 images shown" in printed and f"file://{out}/index.html" in printed
    assert len(list((out / "thumbs").glob("*.jpg"))) == 4
    assert main(["review", "--job", str(tmp_path / "none"), "--out", str(out)]) == 2
    assert "no annotation files" in capsys.readouterr().err
