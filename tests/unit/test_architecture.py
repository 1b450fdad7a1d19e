"""The house rules, read from the source: dependencies point one way and never in a circle."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO_ROOT

LAYERS = ("jobs", "pipeline", "model", "schemas")  # each may import only those after it
# Third-party packages a layer must not import (anywhere, lazily included).
FORBIDDEN = {"schemas": {"torch", "ray"}, "model": {"ray"}}


def modules() -> dict[str, Path]:
    """Dotted module name → file, for every module of the four packages."""
    found = {}
    for package in LAYERS:
        for path in sorted((REPO_ROOT / package).rglob("*.py")):
            parts = path.relative_to(REPO_ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


def imports(path: Path, top_level_only: bool) -> set[str]:
    """Dotted names ``path`` imports (``from a.b import c`` yields ``a.b`` and ``a.b.c``)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    names: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def test_the_four_packages_are_found():
    names = modules()
    assert {"jobs.cli", "pipeline.graph.job", "model.nets.coarse_net", "schemas.spec"} <= set(names)


@pytest.mark.parametrize("package", LAYERS)
def test_no_import_runs_against_jobs_pipeline_model_schemas(package):
    allowed = set(LAYERS[LAYERS.index(package) :])
    bad = []
    for name, path in modules().items():
        if name.split(".")[0] != package:
            continue
        for imported in imports(path, top_level_only=False):
            top = imported.split(".")[0]
            if (top in LAYERS and top not in allowed) or top in FORBIDDEN.get(package, ()):
                bad.append(f"{path.relative_to(REPO_ROOT)} imports {imported}")
    assert not bad, "\n".join(sorted(set(bad)))


def test_no_import_cycle_between_modules():
    known = modules()
    graph = {
        # Lazy imports count too: a cycle hidden in a function is still a tangle.
        name: {i for i in imports(path, top_level_only=False) if i in known and i != name}
        for name, path in known.items()
    }
    state: dict[str, int] = {}  # 1 visiting, 2 done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for name in sorted(graph):
        if name not in state and (cycle := visit(name)):
            pytest.fail("import cycle: " + " → ".join(cycle))


def test_the_command_line_starts_without_importing_ray():
    # Ray reads RAY_AUTH_MODE when imported: `submit` must set it first (token-auth clusters),
    # and only the commands that run a job pay Ray's start-up.
    code = "import sys, jobs.cli; print('ray' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "False", out.stderr


@pytest.mark.parametrize("module", ["pipeline.graph.tasks", "pipeline.store.part_files"])
def test_what_task_workers_unpickle_does_not_import_torch(module):
    # Decode, filter and write tasks import these; torch would add ~500 MB to every worker.
    code = f"import sys, {module}; print('torch' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "False", out.stderr
