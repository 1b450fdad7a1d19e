"""Ctrl-C ends a job with exit 130 and a resume hint; -v never prints a credential."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import boto3

from tests.helpers import (
    cli_command,
    cli_env,
    run_cli,
    synthetic_jpeg,
    write_images,
    write_job_spec,
)

ACCESS_KEY_ID = "AKIAIOSFODNN7EXAMPLE"
SECRET_KEY = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
SESSION_TOKEN = "FwoGZXIvYXdzEXAMPLESESSIONTOKEN0123456789"


IMAGES = 60


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_exits_130_with_a_resume_hint_and_the_rerun_completes(tmp_path):
    images = tmp_path / "images"
    write_images(images, IMAGES)
    # DetPoseNet's small demo networks: the test is about Ctrl-C, not the models.
    spec = write_job_spec(
        tmp_path,
        "intr",
        images,
        "stage1: {batch_size: 2, model: detposenet}\nrefiner: {batch_size: 2, model: detposenet}\n",
    )
    args = ("run", "--spec", str(spec), "--no-progress-timeout", "300")
    proc = subprocess.Popen(
        cli_command(*args),
        env=cli_env(),
        cwd=tmp_path,
        start_new_session=True,  # its own process group, as a terminal's foreground job is
        # ... and Ctrl-C reaching it: a test run started in the background (`make test &`)
        # ignores SIGINT, and an ignored signal stays ignored in every child.
        preexec_fn=_default_sigint,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    annotations = tmp_path / "out" / "intr" / "annotations"
    deadline = time.monotonic() + 600
    while not (annotations.exists() and any(annotations.glob("run-000-*.parquet"))):
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.monotonic() < deadline, "the run wrote nothing in time"
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)  # what Ctrl-C delivers to the driver
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr[-3000:]
    assert "interrupted" in stderr and "resume" in stderr and "'intr'" in stderr
    assert "Traceback" not in stderr, stderr[-3000:]

    rerun = run_cli(*args, cwd=tmp_path)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    stats = json.loads((tmp_path / "out" / "intr" / "stats.json").read_text())
    assert stats["images_in"] == stats["images_ok"] == IMAGES
    assert not [w for w in stats["warnings"] if w.startswith("[internal]")]


def test_verbose_s3_job_never_prints_credentials(tmp_path, s3_endpoint, s3_bucket):
    client = boto3.client("s3", endpoint_url=s3_endpoint)
    for i in range(2):
        client.put_object(Bucket=s3_bucket, Key=f"in/{i}.jpg", Body=synthetic_jpeg(i))
    spec = tmp_path / "job.yaml"
    spec.write_text(
        f"job_id: quiet\ninputs: ['s3://{s3_bucket}/in/']\noutput: '{tmp_path / 'out'}'\n"
        f"storage: {{endpoint_url: '{s3_endpoint}'}}\n"
    )
    env = {
        **cli_env(),
        "AWS_ACCESS_KEY_ID": ACCESS_KEY_ID,
        "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        "AWS_SESSION_TOKEN": SESSION_TOKEN,
    }
    result = subprocess.run(
        cli_command("-v", "run", "--spec", str(spec), "--no-progress-timeout", "300"),
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    written = "".join(p.read_text(errors="replace") for p in Path(tmp_path / "out").rglob("*.*"))
    for secret in (ACCESS_KEY_ID, SECRET_KEY, SESSION_TOKEN):
        assert secret not in result.stdout + result.stderr
        assert secret not in written
    # -v really shows the S3 client's debug lines, with the credential fields redacted.
    assert "botocore" in result.stderr and "<redacted>" in result.stderr
