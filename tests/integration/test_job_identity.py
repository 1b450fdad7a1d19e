"""Re-running a job id: same settings resume, changed settings are refused or recorded; the
driver reads checkpoints through the spec's storage; odd but valid inputs and outputs."""

from __future__ import annotations

import json

import boto3
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.graph.job import run_job
from pipeline.store.identity import SettingsChangedError
from pipeline.store.sink import JobPaths, read_annotations
from schemas.spec import JobSpec
from tests.conftest import NO_PROGRESS_TIMEOUT_S
from tests.helpers import REPO_ROOT, synthetic_jpeg

pytestmark = pytest.mark.usefixtures("ray_local")


def run(spec: JobSpec, **kwargs):
    return run_job(spec, no_progress_timeout_s=NO_PROGRESS_TIMEOUT_S, **kwargs)


def write_jpegs(folder, names):
    folder.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        (folder / name).write_bytes(synthetic_jpeg(i))
    return [str(folder / n) for n in names]


def test_changed_filter_is_refused_then_recorded_when_allowed(tmp_path):
    uris = write_jpegs(tmp_path / "img", ["a.jpg", "b.jpg", "c.jpg"])
    base = {"job_id": "ident", "output": str(tmp_path / "out")}
    first = run(JobSpec.parse({**base, "inputs": uris[:2], "filter": {"mode": "coarse"}}))
    assert first.images_this_run == 2
    # The write operator's rows are the rows written, not Ray Data's per-block summaries.
    (write,) = [s for s in first.stages if s.name.startswith("Write")]
    assert write.rows == 2
    root = tmp_path / "out" / "ident"
    spec_before = (root / "spec.yaml").read_text()

    changed = JobSpec.parse({**base, "inputs": uris, "filter": {"mode": "none"}})
    with pytest.raises(SettingsChangedError, match=r"filter\.mode: 'coarse' → 'none'"):
        run(changed)
    # A refused run leaves the job exactly as it was.
    assert (root / "spec.yaml").read_text() == spec_before
    assert len(json.loads((root / "runs.json").read_text())) == 1
    assert read_annotations(str(root / "annotations"), changed.storage).num_rows == 2

    stats = run(changed, allow_changed_settings=True)
    assert (stats.images_in, stats.images_ok, stats.images_this_run) == (3, 3, 1)
    assert [r.settings_changed for r in stats.runs] == [[], ["filter.mode: 'coarse' → 'none'"]]
    assert stats.runs[0].fingerprint["filter"]["mode"] == "coarse"
    assert any("different settings" in w for w in stats.warnings)
    # The same settings again resume quietly.
    again = run(changed)
    assert again.images_this_run == 0 and again.runs[-1].settings_changed == []


def test_numeric_looking_csv_manifest_keys_stay_text_and_resume_adds_nothing(tmp_path, monkeypatch):
    write_jpegs(tmp_path, ["000123", "000124"])
    (tmp_path / "list.csv").write_text("uri\n000123\n000124\n")
    monkeypatch.chdir(tmp_path)  # relative manifest entries resolve against the driver's cwd
    spec = JobSpec.parse({"job_id": "csv", "manifest": "list.csv", "output": str(tmp_path / "o")})
    stats = run(spec)
    expected = sorted(str(tmp_path / n) for n in ("000123", "000124"))
    assert (stats.images_in, stats.images_ok) == (2, 2)
    assert run(spec).images_this_run == 0
    table = read_annotations(JobPaths.for_spec(spec).annotations, spec.storage)
    assert sorted(table.column("uri").to_pylist()) == expected


def test_colons_in_a_local_name_and_foreign_files_in_the_output(tmp_path):
    uris = write_jpegs(tmp_path / "img", ["a::b.jpg", "plain.jpg"])
    spec = JobSpec.parse({"job_id": "odd", "inputs": uris, "output": str(tmp_path / "out")})
    annotations = tmp_path / "out" / "odd" / "annotations"
    annotations.mkdir(parents=True)
    foreign = annotations / "notes-from-someone.parquet"
    pq.write_table(pa.table({"x": [1, 2]}), foreign)
    stats = run(spec)
    assert (stats.images_ok, stats.images_error) == (2, 0)
    assert any("not written by DetPose" in w and foreign.name in w for w in stats.warnings)
    assert pq.read_table(foreign).num_rows == 2  # left alone
    assert run(spec).images_this_run == 0  # and never read as the job's rows


def test_checkpoint_is_read_with_the_specs_storage_not_the_environments(
    tmp_path, s3_endpoint, s3_bucket, monkeypatch
):
    boto3.client("s3", endpoint_url=s3_endpoint).upload_file(
        str(REPO_ROOT / "model" / "weights" / "refiner_tiny.pt"), s3_bucket, "ckpt/refiner.pt"
    )
    # The environment points elsewhere (nothing listens there); the spec names the server.
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    uris = write_jpegs(tmp_path / "img", ["a.jpg"])
    spec = JobSpec.parse(
        {
            "job_id": "ckpt",
            "inputs": uris,
            "output": str(tmp_path / "out"),
            "refiner": {"model": "detposenet", "checkpoint": f"s3://{s3_bucket}/ckpt/refiner.pt"},
            "storage": {"endpoint_url": s3_endpoint},
        }
    )
    stats = run(spec)
    assert stats.images_ok == 1
    assert stats.weights["refiner"] == f"s3://{s3_bucket}/ckpt/refiner.pt"
    bundled = run(
        JobSpec.parse(
            {**spec.model_dump(mode="json"), "job_id": "ckpt2", "refiner": {"model": "detposenet"}}
        )
    )
    assert bundled.weights["refiner"] == "bundled:refiner_tiny.pt"
    # Same bytes as the bundled refiner: same fingerprint whatever the path.
    assert bundled.runs[0].fingerprint["weights"] == stats.runs[0].fingerprint["weights"]
