"""The README and every page in docs/ stay true to the code.

Each page is checked for links and images that resolve, `detpose` commands and flags the CLI
has, and spec field paths (`stage1.views`) that JobSpec has; the reference pages document every
spec field, output column, statistic and command; the tables of defaults and network sizes
match the code; the README's headline numbers are those of the pages it links to.
"""

from __future__ import annotations

import argparse
import functools
import glob
import re
import types
import typing
from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel

from jobs.cli import build_parser
from pipeline.graph.resources import AUTO_BATCH
from schemas.filtering import FilterSpec
from schemas.output import ANNOTATION_SCHEMA, COUNT_FIELDS, PERSON_TYPE, JobStats
from schemas.spec import AUTO_GPUS_PER_ACTOR, JobSpec
from tests.conftest import REPO_ROOT

README_PATH = REPO_ROOT / "README.md"
DOCS = REPO_ROOT / "docs"
PAGES = [README_PATH, *sorted(DOCS.glob("*.md"))]
PAGE_IDS = [str(p.relative_to(REPO_ROOT)) for p in PAGES]


def _text(path: Path) -> str:
    return path.read_text(encoding="utf-8")


README = _text(README_PATH)


def _page(name: str) -> str:
    return _text(DOCS / name)


# --- Markdown, just enough of it ------------------------------------------------------------

_FENCE = re.compile(r"^(```|~~~)")


def _split_fences(text: str) -> tuple[str, list[list[str]]]:
    """The prose (fenced blocks blanked out, lines kept) and the fenced blocks' lines."""
    prose, blocks, block = [], [], None
    for line in text.splitlines():
        if _FENCE.match(line.lstrip()):
            if block is None:
                block = []
            else:
                blocks.append(block)
                block = None
            prose.append("")
        elif block is not None:
            block.append(line)
            prose.append("")
        else:
            prose.append(line)
    return "\n".join(prose), blocks


def _code_spans(prose: str) -> list[str]:
    """Inline code spans; a span may cross a line break inside its paragraph."""
    return [" ".join(m.group(1).split()) for m in re.finditer(r"`([^`]+)`", prose)]


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip()).lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


@functools.cache
def _anchors(path: Path) -> frozenset[str]:
    prose, _ = _split_fences(_text(path))
    seen: dict[str, int] = {}
    anchors = set()
    for line in prose.splitlines():
        m = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not m:
            continue
        slug = _slug(m.group(1))
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        anchors.add(slug if n == 0 else f"{slug}-{n}")
    return frozenset(anchors)


_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_HTML_SRC = re.compile(r"<(?:img|a)\s[^>]*?(?:src|href)=\"([^\"]+)\"")


def _links(path: Path) -> list[str]:
    prose, _ = _split_fences(_text(path))
    prose = re.sub(r"`[^`]*`", "``", prose)  # code spans are not links
    return [m.group(1) for m in _LINK.finditer(prose)] + _HTML_SRC.findall(prose)


def _link_problem(page: Path, target: str) -> str | None:
    if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
        return None
    path_part, _, anchor = target.partition("#")
    dest = (page.parent / path_part).resolve() if path_part else page
    try:
        dest.relative_to(REPO_ROOT)
    except ValueError:
        return f"{target}: outside the repository"
    if not dest.exists():
        return f"{target}: no such file"
    if anchor:
        if dest.suffix != ".md":
            return f"{target}: an anchor into a file that is not Markdown"
        if anchor not in _anchors(dest):
            return f"{target}: no heading with anchor #{anchor} in {dest.name}"
    return None


# --- The command line -----------------------------------------------------------------------


def _options(parser: argparse.ArgumentParser, public_only: bool = False) -> set[str]:
    return {
        s
        for a in parser._actions
        if not (public_only and a.help == argparse.SUPPRESS)
        for s in a.option_strings
    }


@functools.cache
def _cli() -> tuple[frozenset[str], dict[str, argparse.ArgumentParser]]:
    parser = build_parser()
    subparsers = next(a for a in parser._actions if a.dest == "command")
    return frozenset(_options(parser)), dict(subparsers.choices)


_STOP = {"|", "||", "&&", ";", "--", ">", ">>", "2>&1"}


def _command_segments(path: Path) -> list[str]:
    """Every place a page shows a command: logical lines of code blocks, inline code spans."""
    prose, blocks = _split_fences(_text(path))
    segments = _code_spans(prose)
    for block in blocks:
        logical: list[str] = []
        for line in block:
            line = re.sub(r"(^|\s)#\s.*$", "", line)  # shell comments
            continued = logical and (
                logical[-1].endswith("\\") or re.match(r"^\s+(\[|--|-- )", line)
            )
            if continued:
                logical[-1] = logical[-1].rstrip("\\") + " " + line.strip()
            else:
                logical.append(line.strip())
        segments += logical
    return segments


def _commands(path: Path) -> list[tuple[str, list[str]]]:
    """(subcommand, flags) for every `detpose SUBCOMMAND ...` on the page."""
    top_flags, _ = _cli()
    found = []
    for segment in _command_segments(path):
        for piece in re.split(r"\bdetpose\b", segment)[1:]:
            tokens = piece.split()
            while tokens and tokens[0] in top_flags:
                tokens.pop(0)
            if not tokens or not re.match(r"^[a-z][a-z0-9-]*$", tokens[0].rstrip(",.;:)")):
                continue
            sub, flags, depth = tokens[0].rstrip(",.;:)"), [], 0
            for token in tokens[1:]:
                if token in _STOP and depth <= 0:  # `|` inside (a | b) is a usage choice
                    break
                depth += token.count("(") + token.count("[") - token.count(")") - token.count("]")
                m = re.match(r"^[\[(]*(--?[a-zA-Z][a-zA-Z0-9-]*)", token)
                if m:
                    flags.append(m.group(1))
            found.append((sub, flags))
    return found


# Flags of other programs that the pages show in code spans of their own.
FOREIGN_FLAGS = {"--shm-size", "--ipc", "--index-url", "--strict-markers", "--set"}


def _bare_flags(path: Path) -> set[str]:
    prose, _ = _split_fences(_text(path))
    return {
        m.group(1)
        for span in _code_spans(prose)
        for m in [re.match(r"^(--[a-z][a-z0-9-]*)", span)]
        if m
    }


# --- The spec -------------------------------------------------------------------------------


def _models_in(annotation: typing.Any) -> list[type[BaseModel]]:
    """The pydantic models inside an annotation (X, X | None, tuple[X, ...], list[X])."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _models_in(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType, tuple, list, set, frozenset):
        return [m for arg in typing.get_args(annotation) for m in _models_in(arg)]
    return []


def _literals_in(annotation: typing.Any) -> set[str] | None:
    """The allowed values of a Literal annotation (None: not a Literal, or not only one)."""
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return {str(v) for v in typing.get_args(annotation)}
    if origin in (typing.Union, types.UnionType):
        values = [_literals_in(a) for a in typing.get_args(annotation) if a is not type(None)]
        if values and all(v is not None for v in values):
            return set().union(*values)
    return None


def _spec_field(path: str):
    """The pydantic field at a dotted path of JobSpec, or None."""
    models: list[type[BaseModel]] = [JobSpec]
    field = None
    for part in path.split("."):
        field = next((m.model_fields[part] for m in models if part in m.model_fields), None)
        if field is None:
            return None
        models = _models_in(field.annotation)
    return field


SECTIONS = {n for n, f in JobSpec.model_fields.items() if _models_in(f.annotation)}
_SPEC_PATH = re.compile(r"^([a-z][a-z0-9_]*(?:\.[a-z][a-z0-9_]*)+)(?::\s*(.*))?$")
_FILE_SUFFIXES = {"py", "md", "json", "yaml", "yml", "jpg", "png", "pt", "parquet", "txt", "html"}


def _yaml_paths(data: typing.Any, prefix: str = "") -> list[tuple[str, str | None]]:
    """The field paths of a YAML mapping, with the value of each scalar leaf."""
    found = []
    for key, value in data.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            found += [(path, None), *_yaml_paths(value, path + ".")]
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            found.append((path, None))
            for item in value:
                found += _yaml_paths(item, path + ".")
        else:
            scalar = None if isinstance(value, list | dict) or value is None else str(value)
            found.append((path, scalar))
    return found


def _spec_paths(path: Path) -> list[tuple[str, str | None]]:
    """Spec field paths a page names: dotted in code spans (`stage1.views`,
    `refiner.guide: pose`), YAML in code spans (`stage1: {actors: 2}`), and the keys of its
    YAML blocks that hold a spec."""
    prose, _ = _split_fences(_text(path))
    found = []
    for span in _code_spans(prose):
        m = _SPEC_PATH.match(span)
        if m:
            parts = m.group(1).split(".")
            if parts[0] in SECTIONS and parts[-1] not in _FILE_SUFFIXES:
                value = m.group(2)
                found.append((m.group(1), value if value and " " not in value else None))
            continue
        head = re.match(r"^([a-z][a-z0-9_]*):\s*\{", span)
        if head and head.group(1) in SECTIONS:
            try:
                data = yaml.safe_load(span.replace("…", "x"))
            except yaml.YAMLError:
                continue
            if isinstance(data, dict):
                found += _yaml_paths(data)
    for block in re.findall(r"^```yaml\n(.*?)^```", _text(path), flags=re.S | re.M):
        data = yaml.safe_load(block)
        if isinstance(data, dict) and set(data) & set(JobSpec.model_fields):
            found += _yaml_paths(data)
    return found


def _field_names(model: type[BaseModel]) -> set[str]:
    names = set()
    for name, field in model.model_fields.items():
        names.add(name)
        for sub in _models_in(field.annotation):
            names |= _field_names(sub)
    return names


# --- Checks on every page -------------------------------------------------------------------


def test_the_pages_are_found():
    names = {p.name for p in PAGES}
    assert {"README.md", "cli.md", "spec.md", "output.md", "evaluation.md"} <= names


@pytest.mark.parametrize("page", PAGES, ids=PAGE_IDS)
def test_links_and_images_resolve(page):
    problems = [p for t in _links(page) if (p := _link_problem(page, t))]
    assert not problems, f"{page.name}: broken links: {problems}"


@pytest.mark.parametrize("page", PAGES, ids=PAGE_IDS)
def test_every_detpose_command_and_flag_exists(page):
    top_flags, subcommands = _cli()
    problems = []
    for sub, flags in _commands(page):
        if sub not in subcommands:
            problems.append(f"detpose {sub}: no such command")
            continue
        known = _options(subcommands[sub]) | top_flags
        problems += [f"detpose {sub} {f}: no such flag" for f in flags if f not in known]
    assert not problems, f"{page.name}: {sorted(set(problems))}"


@pytest.mark.parametrize("page", PAGES, ids=PAGE_IDS)
def test_every_flag_named_alone_exists(page):
    top_flags, subcommands = _cli()
    known = set(top_flags).union(*(_options(p) for p in subcommands.values())) | FOREIGN_FLAGS
    unknown = sorted(_bare_flags(page) - known)
    assert not unknown, f"{page.name} names flags no detpose command has: {unknown}"


@pytest.mark.parametrize("page", PAGES, ids=PAGE_IDS)
def test_every_spec_path_exists(page):
    problems = []
    for path, value in _spec_paths(page):
        field = _spec_field(path)
        if field is None:
            problems.append(f"{path}: not a JobSpec field")
            continue
        allowed = _literals_in(field.annotation)
        if value and allowed and re.match(r"^[a-z_0-9]+$", value) and value.lower() not in allowed:
            problems.append(f"{path}: {value!r} is not one of {sorted(allowed)}")
    assert not problems, f"{page.name}: {problems}"


@pytest.mark.parametrize("page", PAGES, ids=PAGE_IDS)
def test_every_yaml_spec_shown_is_valid(page):
    for block in re.findall(r"^```yaml\n(.*?)^```", _text(page), flags=re.S | re.M):
        data = yaml.safe_load(block)
        if isinstance(data, dict) and {"inputs", "manifest"} & set(data):
            JobSpec.parse(data)  # raises SpecError naming the field


_REPO_DIRS = ("schemas", "model", "pipeline", "jobs", "tests", "docs", "data", "bench", ".ci")


@pytest.mark.parametrize("page", PAGES, ids=PAGE_IDS)
def test_every_repository_path_named_exists(page):
    prose, _ = _split_fences(_text(page))
    missing = []
    for span in _code_spans(prose):
        m = re.match(r"^([A-Za-z0-9_.\-/*]+)", span)
        if not m or "/" not in m.group(1) or m.group(1).split("/")[0] not in _REPO_DIRS:
            continue
        name = m.group(1).rstrip(".:")
        if not glob.glob(str(REPO_ROOT / name)):
            missing.append(name)
    assert not missing, f"{page.name} names files that do not exist: {missing}"


def test_no_page_states_a_stale_gpu_share_or_batch_size():
    """The `auto` GPU share per actor and CUDA batch sizes, wherever a page states them."""
    problems = []
    for page in PAGES:
        text = " ".join(_text(page).split())
        for m in re.finditer(
            r"(\d+(?:\.\d+)?) GPU (?:per actor|each)|(\d+(?:\.\d+)?) per actor when the cluster"
            r"|actor (\d+(?:\.\d+)?) GPU when",
            text,
        ):
            share = float(next(g for g in m.groups() if g))
            if share != AUTO_GPUS_PER_ACTOR:
                problems.append(f"{page.name}: {m.group(0)!r}")
        for m in re.finditer(
            r"(\d+) images for stage 1 and (\d+) for the refiner on CUDA"
            r"|on CUDA (\d+) for stage 1, (\d+) for the refiner",
            text,
        ):
            sizes = [int(g) for g in m.groups() if g]
            if sizes != [AUTO_BATCH["cuda"]["stage1"], AUTO_BATCH["cuda"]["refiner"]]:
                problems.append(f"{page.name}: {m.group(0)!r}")
        if re.search(r"`batch_size`[^.|]*\b(?:is|must be) (?:an|only an) integer", text):
            problems.append(f"{page.name}: says batch_size is an integer (its default is 'auto')")
    assert not problems, problems


def test_batch_size_defaults_to_auto():
    for stage in ("stage1", "refiner"):
        (model,) = _models_in(JobSpec.model_fields[stage].annotation)
        assert model.model_fields["batch_size"].default == "auto"


# --- The README -----------------------------------------------------------------------------


def test_two_commands_come_first():
    head = README[: README.index("## What a job does")]
    assert "make run" in head and "make test" in head


def test_readme_fits_one_screen_and_links_every_page():
    assert len(README.splitlines()) < 150
    linked = {t.partition("#")[0] for t in _links(README_PATH)}
    unlinked = sorted(f"docs/{p.name}" for p in DOCS.glob("*.md") if f"docs/{p.name}" not in linked)
    assert not unlinked, f"README links no page {unlinked}"


def _readme_headline_rows() -> list[list[str]]:
    section = README[README.index("## Measured") :].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 4 and "](" in cells[3]:
            rows.append(cells)
    return rows


def test_readme_headline_numbers_are_those_of_the_linked_pages():
    """Each headline row's numbers stand together in one paragraph or table of its page."""
    rows = _readme_headline_rows()
    assert len(rows) >= 4
    problems = []
    for what, result, when, details in rows:
        target = re.search(r"\]\(([^)#]+)", details).group(1)
        text = _text(REPO_ROOT / target)
        blocks = [" ".join(b.split()) for b in re.split(r"\n\s*\n", text)]
        numbers = re.findall(r"\d[\d,]*(?:\.\d+)?", result)
        patterns = [re.compile(rf"(?<![\d.,]){re.escape(n)}(?![\d,]|\.\d)") for n in numbers]
        if not any(all(p.search(block) for p in patterns) for block in blocks):
            problems.append(f"{what}: no paragraph or table of {target} holds all of {numbers}")
        date = re.search(r"\d{4}-\d{2}-\d{2}", when).group(0)
        if date not in text:
            problems.append(f"{what}: {date} not in {target}")
        if (commit := re.search(r"commit ([0-9a-f]{7,})", when)) and commit.group(1) not in text:
            problems.append(f"{what}: commit {commit.group(1)} not in {target}")
    assert not problems, problems


def test_readme_states_the_test_markers_that_exist():
    import tomllib

    markers = tomllib.loads(_text(REPO_ROOT / "pyproject.toml"))["tool"]["pytest"]["ini_options"]
    declared = {m.split(":")[0].strip() for m in markers["markers"]}
    named = set(re.findall(r'-m "(?:not )?([a-z_]+)"', README))
    assert named and named <= declared, (named, declared)
    assert "PYTEST_ARGS" in _text(REPO_ROOT / "Makefile")


# --- The reference pages document everything -----------------------------------------------


def test_every_spec_field_is_documented():
    spec = _page("spec.md")
    missing = sorted(n for n in _field_names(JobSpec) if f"`{n}`" not in spec)
    assert not missing, f"docs/spec.md lacks spec fields: {missing}"


def test_the_spec_table_states_the_top_level_defaults():
    spec = _page("spec.md")
    rows = {}
    for line in spec.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and re.fullmatch(r"`[a-z_0-9]+`", cells[0]) and cells[1]:
            rows[cells[0].strip("`")] = cells[1].strip("`")
    checked = 0
    for name, field in JobSpec.model_fields.items():
        if name in rows and rows[name] != "—":
            assert rows[name] == str(field.default).lower(), (name, rows[name], field.default)
            checked += 1
    assert checked >= 5


def test_every_output_column_and_stat_is_documented():
    output = _page("output.md")
    names = [f.name for f in ANNOTATION_SCHEMA] + [
        PERSON_TYPE.field(i).name for i in range(PERSON_TYPE.num_fields)
    ]
    names += list(COUNT_FIELDS) + [
        n for n in JobStats.model_fields if n not in ("job_id", "started_at", "finished_at")
    ]
    missing = sorted(n for n in names if f"`{n}`" not in output)
    assert not missing, f"docs/output.md lacks output names: {missing}"


def test_readme_columns_repeat_those_of_the_output_page():
    output_rows = set(_page("output.md").splitlines())
    readme_rows = [line for line in README.splitlines() if re.match(r"^\| `[a-z_]+` \|", line)]
    assert readme_rows and all(row in output_rows for row in readme_rows)


def test_every_cli_command_and_flag_is_documented():
    _, subcommands = _cli()
    cli = _page("cli.md")
    missing = sorted(c for c in subcommands if f"detpose {c}" not in cli)
    assert not missing, f"docs/cli.md lacks commands: {missing}"
    shown: dict[str, set[str]] = {}
    for page in PAGES:
        for sub, flags in _commands(page):
            shown.setdefault(sub, set()).update(flags)
    undocumented = sorted(
        f"detpose {sub} {flag}"
        for sub, parser in subcommands.items()
        for flag in _options(parser, public_only=True) - {"-h", "--help"}
        if flag not in shown.get(sub, set())
    )
    assert not undocumented, f"no page shows: {undocumented}"


def _model_size_rows() -> dict[tuple[str, str], tuple[int, float]]:
    """Every table row of a page that states a network config's parameters and GFLOPs."""
    rows = {}
    for page in PAGES:
        header: list[str] = []
        for line in _text(page).splitlines():
            if not line.startswith("|"):
                header = []
                continue
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if not header:
                header = cells
                continue
            if "parameters" in header and "GFLOPs / input" in header and len(cells) == len(header):
                network = cells[header.index("network")]
                if network in ("CoarsePoseNet", "PoseRefinementNet"):
                    key = (cells[header.index("config")].strip("`"), network)
                    value = (
                        int(cells[header.index("parameters")].replace(",", "")),
                        float(cells[header.index("GFLOPs / input")]),
                    )
                    assert rows.setdefault(key, value) == value, (page.name, key, value)
    return rows


def test_model_tables_match_the_code():
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from model.nets.coarse_net import CoarsePoseNet
    from model.nets.refine_net import PoseRefinementNet
    from schemas.network_configs import coarse_preset, refiner_preset

    rows = _model_size_rows()
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
    text = _page("filtering.md")
    table = text[text.index("## Parameters") :].split("\n## ", 1)[0]
    documented = {}
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[0].startswith("`"):
            documented[cells[0].strip("`")] = cells[1].split()[0].strip("`")
    assert set(documented) == set(FilterSpec.model_fields)
    for name, field in FilterSpec.model_fields.items():
        assert documented[name] == str(field.default), (name, documented[name], field.default)
