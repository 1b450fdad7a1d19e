"""Listing inputs and manifests, stable image ids, S3 options from spec and environment."""

from __future__ import annotations

import hashlib

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.store.storage import (
    InputError,
    absolute_if_local,
    check_manifest,
    image_id_for,
    list_inputs,
    storage_options,
)
from schemas.spec import StorageSpec

NO_STORAGE = StorageSpec()


def test_image_ids_are_stable_distinct_and_non_negative():
    ids = {image_id_for(f"s3://bucket/img_{i}.jpg") for i in range(2000)}
    assert len(ids) == 2000 and min(ids) >= 0 and max(ids) < 2**63
    # A fixed value: ids must not change between releases, or resumed jobs duplicate rows.
    assert image_id_for("s3://bucket/a.jpg") == 7544118422693856505


def test_image_id_is_the_documented_blake2b_hash_of_the_utf8_uri():
    # Independent of the code: 8-byte BLAKE2b of the UTF-8 URI, big-endian, top bit cleared.
    # This URI is non-ASCII and its digest has the top bit set, so both details matter.
    uri = "gs://photos/été/01.png"
    digest = int.from_bytes(hashlib.blake2b(uri.encode("utf-8"), digest_size=8).digest(), "big")
    assert digest >= 2**63
    assert image_id_for(uri) == digest - 2**63 == 2473090314008888597


def test_prefixes_are_listed_recursively_by_extension(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "b").mkdir()
    for name in ("a/x.jpg", "a/b/y.PNG", "a/b/notes.txt", "z.jpeg"):
        (tmp_path / name).write_bytes(b"x")
    listing = list_inputs(
        [str(tmp_path / "a"), str(tmp_path / "z.jpeg"), str(tmp_path / "a")], NO_STORAGE
    )
    found = listing.uris
    assert [p.rsplit("/", 1)[-1] for p in listing.skipped] == ["notes.txt"]
    assert [p.rsplit("/", 2)[-2:] for p in found] == [
        ["b", "y.PNG"],
        ["a", "x.jpg"],
        [tmp_path.name, "z.jpeg"],
    ]


def test_a_named_file_is_kept_even_when_missing(tmp_path):
    missing = str(tmp_path / "gone.jpg")
    assert list_inputs([missing], NO_STORAGE).uris == [missing]


@pytest.mark.parametrize("kind", ["parquet", "csv", "txt"])
def test_manifests_are_checked_without_reading_their_uris(tmp_path, kind):
    uris = ["s3://b/1.jpg", "s3://b/2.jpg", "/local/3.png"]
    path = tmp_path / f"m.{kind}"
    if kind == "parquet":
        pq.write_table(pa.table({"uri": uris, "other": [1, 2, 3]}), path)
    elif kind == "csv":
        path.write_text("uri,other\n" + "".join(f"{u},1\n" for u in uris))
    else:
        path.write_text("# a comment\n" + "\n".join(uris) + "\n\n")
    manifest = check_manifest(str(path), NO_STORAGE)
    assert manifest.format == {"txt": "text"}.get(kind, kind)
    assert (manifest.path, manifest.size_bytes) == (str(path), path.stat().st_size)
    # Only a Parquet footer says how many rows there are; the rest is known once read.
    assert (manifest.rows, manifest.row_groups) == ((3, 1) if kind == "parquet" else (None, 0))


def test_manifest_errors_name_the_manifest_and_the_fault(tmp_path):
    cases = {
        "no_uri.csv": ("path\n/a.jpg\n", "no 'uri' column"),
        "header_only.csv": ("uri,other\n", "no images found"),
        "comments_only.txt": ("# nothing here\n\n   \n", "no images found"),
    }
    for name, (text, message) in cases.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(InputError, match=message):
            check_manifest(str(tmp_path / name), NO_STORAGE)
    pq.write_table(pa.table({"path": ["/a.jpg"]}), tmp_path / "no_uri.parquet")
    pq.write_table(pa.table({"uri": [1, 2]}), tmp_path / "numbers.parquet")
    pq.write_table(pa.table({"uri": pa.array([], pa.string())}), tmp_path / "empty.parquet")
    (tmp_path / "not_parquet.parquet").write_text("uri\n/a.jpg\n")
    (tmp_path / "folder.txt").mkdir()
    for name, message in (
        ("no_uri.parquet", r"has no 'uri' column \(columns: \['path'\]\)"),
        ("numbers.parquet", "the 'uri' column holds int64, not text"),
        ("empty.parquet", "no images found"),
        ("not_parquet.parquet", "cannot read manifest"),
        ("folder.txt", "is a folder"),
        ("none.csv", "does not exist"),
    ):
        with pytest.raises(InputError, match=message) as err:
            check_manifest(str(tmp_path / name), NO_STORAGE)
        assert name in str(err.value)


def test_a_relative_path_is_made_absolute_against_the_given_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert absolute_if_local("a/../b.jpg") == str(tmp_path / "b.jpg")
    assert absolute_if_local("b.jpg", "/driver/cwd") == "/driver/cwd/b.jpg"
    for kept in ("/abs/c.jpg", "s3://bucket/c.jpg", "file:///abs/c.jpg"):
        assert absolute_if_local(kept, "/driver/cwd") == kept


def test_s3_options_prefer_spec_then_environment(monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:1")
    assert storage_options("s3://b/k", NO_STORAGE)["endpoint_url"] == "http://127.0.0.1:1"
    spec = StorageSpec(endpoint_url="http://127.0.0.1:2", access_key_id="k", secret_access_key="s")
    opts = storage_options("s3://b/k", spec)
    assert opts["endpoint_url"] == "http://127.0.0.1:2"
    assert (opts["key"], opts["secret"]) == ("k", "s")
    assert storage_options("/local/path", spec) == {}
