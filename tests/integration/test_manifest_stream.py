"""Manifests read by Ray Data as a stream, de-duplicated and resumed by a hash aggregation
by URI (a real local Ray, the real S3-compatible server)."""

from __future__ import annotations

import boto3
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.graph.job import run_job
from pipeline.store.sink import JobPaths, read_annotations
from pipeline.store.storage import InputError
from schemas.spec import JobSpec
from tests.conftest import NO_PROGRESS_TIMEOUT_S
from tests.helpers import synthetic_jpeg

pytestmark = pytest.mark.usefixtures("ray_local")

# Small batches: the test images are few, and every stage should see several batches.
SMALL = {"stage1": {"batch_size": 2}, "refiner": {"batch_size": 2}}


def run(spec: JobSpec):
    return run_job(spec, no_progress_timeout_s=NO_PROGRESS_TIMEOUT_S)


def write_jpegs(folder, count: int) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        (folder / f"img_{i:02d}.jpg").write_bytes(synthetic_jpeg(i))
        paths.append(str(folder / f"img_{i:02d}.jpg"))
    return paths


def write_manifest(path, uris: list[str]) -> str:
    """``uris`` as a manifest in the format of ``path``'s suffix."""
    if path.suffix == ".parquet":
        pq.write_table(pa.table({"uri": uris, "note": list(range(len(uris)))}), path)
    elif path.suffix == ".csv":
        path.write_text("note,uri\n" + "".join(f"{i},{u}\n" for i, u in enumerate(uris)))
    else:
        path.write_text("# images\n" + "".join(f"  {u}\n\n" for u in uris))
    return str(path)


def output_uris(spec: JobSpec) -> list[str]:
    table = read_annotations(JobPaths.for_spec(spec).annotations, spec.storage, ["uri"])
    return sorted(table.column("uri").to_pylist())


@pytest.mark.parametrize("kind", ["parquet", "csv", "txt"])
def test_each_manifest_format_streams_and_duplicates_yield_one_row(tmp_path, kind):
    images = write_jpegs(tmp_path / "img", 3)
    missing = str(tmp_path / "img" / "gone.jpg")
    listed = [images[0], images[1], images[0], missing, images[2], images[1], missing]
    manifest = write_manifest(tmp_path / f"list.{kind}", listed)
    spec = JobSpec.parse(
        {"job_id": f"dups-{kind}", "manifest": manifest, "output": str(tmp_path / "out"), **SMALL}
    )
    stats = run(spec)
    assert output_uris(spec) == sorted({*images, missing})
    assert (stats.images_in, stats.images_this_run) == (4, 4)
    assert (stats.images_ok, stats.images_error, stats.errors_by_kind) == (3, 1, {"missing": 1})
    assert not any(w.startswith("[internal]") for w in stats.warnings)
    # The manifest was read and cleaned by Ray Data tasks, not by the driver.
    assert any("clean_uris" in s.name for s in stats.stages), stats.stages


def test_resume_processes_only_the_rest_and_the_output_holds_each_image_once(tmp_path):
    images = write_jpegs(tmp_path / "img", 6)
    base = {"job_id": "resume", "output": str(tmp_path / "out"), **SMALL}
    first = JobSpec.parse({**base, "manifest": write_manifest(tmp_path / "a.parquet", images[:2])})
    assert run(first).images_this_run == 2
    # The full manifest, listing some images twice; one of the first run's images is gone
    # from it, so its row is stale.
    again = images[1:] + images[3:5]
    second = JobSpec.parse({**base, "manifest": write_manifest(tmp_path / "b.parquet", again)})
    stats = run(second)
    assert (stats.images_in, stats.images_this_run, stats.images_ok) == (5, 4, 5)
    assert any("no longer among the inputs" in w for w in stats.warnings)
    assert not any(w.startswith("[internal]") for w in stats.warnings)
    assert output_uris(second) == sorted(images)  # each once, the stale one included
    third = run(second)
    assert (third.images_in, third.images_this_run, third.images_ok) == (5, 0, 5)


def test_a_manifest_of_blank_entries_is_refused(tmp_path):
    manifest = tmp_path / "blank.parquet"
    pq.write_table(
        pa.table({"uri": ["", None]}, schema=pa.schema([("uri", pa.string())])), manifest
    )
    spec = JobSpec.parse({"job_id": "blank", "manifest": str(manifest), "output": str(tmp_path)})
    with pytest.raises(InputError, match="no images found in"):
        run(spec)


def test_manifest_and_images_on_s3(s3_endpoint, s3_bucket):
    client = boto3.client("s3", endpoint_url=s3_endpoint)
    uris = []
    for i in range(3):
        client.put_object(Bucket=s3_bucket, Key=f"img/{i:06d}", Body=synthetic_jpeg(i))
        uris.append(f"s3://{s3_bucket}/img/{i:06d}")
    absent = f"s3://{s3_bucket}/img/absent.jpg"
    listed = [*uris, absent, uris[0]]
    client.put_object(
        Bucket=s3_bucket, Key="lists/photos.csv", Body=("uri\n" + "\n".join(listed)).encode()
    )
    spec = JobSpec.parse(
        {
            "job_id": "s3-manifest",
            "manifest": f"s3://{s3_bucket}/lists/photos.csv",
            "output": f"s3://{s3_bucket}/out",
            "storage": {"endpoint_url": s3_endpoint},
            **SMALL,
        }
    )
    stats = run(spec)
    assert output_uris(spec) == sorted([*uris, absent])
    assert (stats.images_in, stats.images_ok, stats.errors_by_kind) == (4, 3, {"missing": 1})
    assert run(spec).images_this_run == 0
