"""The command line as a user runs it: the default job on the bundled samples."""

from __future__ import annotations

import json

import pyarrow.dataset as pds

from tests.helpers import REPO_ROOT, run_cli

SAMPLES = REPO_ROOT / "jobs" / "samples"


def test_default_run_writes_the_documented_layout(tmp_path):
    result = run_cli(
        "run",
        "--output",
        str(tmp_path / "out"),
        "--job-id",
        "demo",
        "--no-progress-timeout",
        "300",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    root = tmp_path / "out" / "demo"
    assert (root / "spec.yaml").is_file() and (root / "stats.parquet").is_file()
    stats = json.loads((root / "stats.json").read_text())
    n_samples = len(list(SAMPLES.glob("*.jpg")))
    assert stats["images_in"] == n_samples == stats["images_ok"] + stats["images_error"]
    table = pds.dataset(root / "annotations", format="parquet").to_table()
    assert table.num_rows == n_samples
    assert len(set(table.column("uri").to_pylist())) == n_samples
    assert "images/s" in result.stdout and str(root / "annotations") in result.stdout


def test_bad_spec_fails_with_a_message_naming_the_field(tmp_path):
    spec = tmp_path / "job.yaml"
    spec.write_text("inputs: [/tmp/x]\noutput: /tmp/o\nstage1: {batch_size: 0}\n")
    result = run_cli("run", "--spec", str(spec), cwd=tmp_path)
    assert result.returncode == 2
    assert "stage1.batch_size" in result.stderr
