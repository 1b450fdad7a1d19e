"""Mistakes a user makes, each caught by the driver before Ray starts: exit 2 and one clear line.

None of these runs reaches Ray, so each test costs one interpreter start.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import REPO_ROOT, run_cli, write_images, write_job_spec

BUNDLED = REPO_ROOT / "model" / "weights"
SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"


def assert_setup_error(result, *expected: str) -> None:
    """Exit 2, one readable message naming ``expected``, no traceback, Ray never started."""
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    for text in expected:
        assert text in result.stderr, (text, result.stderr[-2000:])
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    assert "ActorDiedError" not in result.stderr
    assert "Started a local Ray instance" not in result.stderr + result.stdout


@pytest.fixture
def images(tmp_path: Path) -> Path:
    write_images(tmp_path / "images", 2)
    return tmp_path / "images"


def test_job_id_with_a_trailing_newline_is_refused(tmp_path, images):
    result = run_cli(
        "run", "--input", str(images), "--output", "out", "--job-id", "abc\n", cwd=tmp_path
    )
    assert_setup_error(result, "job_id")
    assert not (tmp_path / "out").exists()


def test_empty_job_id_is_refused_not_ignored(tmp_path, images):
    result = run_cli("run", "--input", str(images), "--output", "out", "--job-id", "", cwd=tmp_path)
    assert_setup_error(result, "job_id")


@pytest.mark.parametrize("command", ["run", "submit"])
def test_misspelled_credential_key_is_named_and_its_value_never_printed(tmp_path, images, command):
    spec = write_job_spec(tmp_path, "j", images, f"storage: {{secret_acess_key: '{SECRET}'}}\n")
    extra = ("--address", "http://127.0.0.1:9") if command == "submit" else ()
    result = run_cli(command, "--spec", str(spec), *extra, cwd=tmp_path)
    assert_setup_error(result, "storage.secret_acess_key: unknown field")
    assert SECRET not in result.stderr + result.stdout


def test_empty_spec_file_is_refused(tmp_path):
    (tmp_path / "job.yaml").write_text("")
    assert_setup_error(run_cli("run", "--spec", "job.yaml", cwd=tmp_path), "job.yaml", "empty")


def test_empty_input_folder_is_refused(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("x")
    result = run_cli("run", "--input", str(tmp_path / "empty"), "--output", "out", cwd=tmp_path)
    assert_setup_error(result, "no images found", "1 non-image file(s) skipped")


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("absent.parquet", None, "does not exist"),
        ("list.csv", "path\n/a.jpg\n", "has no 'uri' column (columns: ['path'])"),
        ("list.txt", "# only a comment\n\n", "no images found"),
    ],
)
def test_bad_manifest_is_refused_naming_it(tmp_path, name, content, message):
    if content is not None:
        (tmp_path / name).write_text(content)
    result = run_cli("run", "--manifest", name, "--output", "out", cwd=tmp_path)
    assert_setup_error(result, name, message)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("interval", ["0", "-1", "nan"])
def test_progress_interval_must_be_a_sane_number_of_seconds(tmp_path, images, interval):
    result = run_cli("run", "--input", str(images), "--progress-interval", interval, cwd=tmp_path)
    assert result.returncode == 2 and "--progress-interval" in result.stderr


def test_cuda_without_a_gpu_is_refused(tmp_path, images):
    result = run_cli("run", "--input", str(images), "--device", "cuda", cwd=tmp_path)
    assert_setup_error(result, "device", "cuda")


@pytest.mark.parametrize(
    "output, reason", [("a_file", "Not a directory"), ("/sys/detpose-out", "not permitted")]
)
def test_output_that_cannot_be_written_is_refused(tmp_path, images, output, reason):
    (tmp_path / "a_file").write_text("I am a file")
    result = run_cli("run", "--input", str(images), "--output", output, cwd=tmp_path)
    assert_setup_error(result, "output", "cannot write", reason)


def _checkpoints(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    good = (BUNDLED / "refiner_tiny.pt").read_bytes()
    (tmp_path / "truncated.pt").write_bytes(good[: len(good) // 2])
    (tmp_path / "text.pt").write_text("these are not weights\n")
    return {
        "wrong-network": (BUNDLED / "stage1_tiny.pt", "holds a 'stage1' checkpoint"),
        "truncated": (tmp_path / "truncated.pt", "refused"),
        "text": (tmp_path / "text.pt", "refused"),
        "missing": (tmp_path / "absent.pt", "no such file"),
    }


@pytest.mark.parametrize("case", ["wrong-network", "truncated", "text", "missing"])
def test_bad_refiner_checkpoint_is_refused_naming_the_file(tmp_path, images, case):
    path, reason = _checkpoints(tmp_path)[case]
    spec = write_job_spec(tmp_path, "j", images, f"refiner: {{checkpoint: '{path}'}}\n")
    result = run_cli("run", "--spec", str(spec), cwd=tmp_path)
    assert_setup_error(result, "refiner.checkpoint", str(path), reason)
    assert not (tmp_path / "out" / "j").exists()
