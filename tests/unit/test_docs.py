"""The README stays true: it documents every spec field, output column and CLI command."""

from __future__ import annotations

from pydantic import BaseModel

from jobs.cli import build_parser
from schemas.output import ANNOTATION_SCHEMA, COUNT_FIELDS, PERSON_TYPE, JobStats
from schemas.spec import JobSpec
from tests.conftest import REPO_ROOT

README = (REPO_ROOT / "README.md").read_text()


def _field_names(model: type[BaseModel]) -> set[str]:
    names = set()
    for name, field in model.model_fields.items():
        names.add(name)
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            names |= _field_names(annotation)
    return names


def test_two_commands_come_first():
    head = README[: README.index("## What a job does")]
    assert "make run" in head and "make test" in head


def test_every_spec_field_is_documented():
    missing = sorted(n for n in _field_names(JobSpec) if f"`{n}`" not in README)
    assert not missing, f"README lacks spec fields: {missing}"


def test_every_output_column_and_stat_is_documented():
    names = [f.name for f in ANNOTATION_SCHEMA] + [
        PERSON_TYPE.field(i).name for i in range(PERSON_TYPE.num_fields)
    ]
    names += list(COUNT_FIELDS) + [
        n for n in JobStats.model_fields if n not in ("job_id", "started_at", "finished_at")
    ]
    missing = sorted(n for n in names if f"`{n}`" not in README)
    assert not missing, f"README lacks output names: {missing}"


def test_every_cli_command_is_documented():
    subparsers = next(a for a in build_parser()._actions if a.dest == "command")
    missing = sorted(c for c in subparsers.choices if f"detpose {c}" not in README)
    assert not missing, f"README lacks commands: {missing}"
