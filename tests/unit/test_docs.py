"""The README stays true: it documents every spec field, output column and CLI command."""

from __future__ import annotations

from pydantic import BaseModel

from jobs.cli import build_parser
from schemas.filtering import FilterSpec
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


def _readme_model_rows() -> dict[tuple[str, str], tuple[int, float]]:
    rows = {}
    for line in README.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 5 and cells[1] in ("CoarsePoseNet", "PoseRefinementNet"):
            rows[(cells[0].strip("`"), cells[1])] = (
                int(cells[3].replace(",", "")),
                float(cells[4]),
            )
    return rows


def test_model_table_matches_the_code():
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from model.nets.coarse_net import CoarsePoseNet
    from model.nets.refine_net import PoseRefinementNet
    from schemas.model import coarse_preset, refiner_preset

    rows = _readme_model_rows()
    assert len(rows) == 4
    for (preset, network), (params, gflops) in rows.items():
        if network == "CoarsePoseNet":
            cfg = coarse_preset(preset)
            net, shape = CoarsePoseNet(cfg), (1, 3, cfg.input_size, cfg.input_size)
        else:
            cfg = refiner_preset(preset)
            net, shape = PoseRefinementNet(cfg), (1, 3, *cfg.input_hw)
        assert sum(p.numel() for p in net.parameters()) == params, (preset, network)
        if preset == "tiny":
            counter = FlopCounterMode(display=False)
            with counter, torch.no_grad():
                net.eval()(torch.zeros(shape))
            assert round(counter.get_total_flops() / 1e9, 3) == gflops, (preset, network)


def test_filter_parameter_table_matches_the_spec_defaults():
    """docs/filtering.md's parameter table states each FilterSpec default; it must not go stale."""
    text = (REPO_ROOT / "docs" / "filtering.md").read_text()
    table = text[text.index("## Parameters") :].split("\n## ", 1)[0]
    documented = {}
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[0].startswith("`"):
            documented[cells[0].strip("`")] = cells[1].split()[0].strip("`")
    assert set(documented) == set(FilterSpec.model_fields)
    for name, field in FilterSpec.model_fields.items():
        assert documented[name] == str(field.default), (name, documented[name], field.default)
