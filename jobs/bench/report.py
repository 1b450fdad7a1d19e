"""Markdown tables from ``bench/results.json``, for docs/benchmarks.md (``python -m jobs.bench.report``).

Printing the tables from the results file, rather than typing them, keeps the documented numbers
exactly the measured ones.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def _table(header: list[str], rows: list[list[Any]]) -> str:
    align = ["---" if i == 0 else "---:" for i in range(len(header))]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(align) + " |"]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def streaming_table(results: dict[str, Any]) -> str:
    rows = []
    for e in results.get("streaming", []):
        rows.append(
            [
                e["models"],
                _fmt(e["images"]),
                _fmt(e["images_per_s"]),
                _fmt(e["steady_images_per_s"]),
                _fmt(e["plain_loop_images_per_s"]),
                _fmt(e["plain_loop_steady_images_per_s"]),
                f"**{_fmt(e['vs_plain_loop'], 3)}**",
                f"**{_fmt(e['steady_vs_plain_loop'], 3)}**",
                _fmt(e["peak_pss_mib"], 1),
                _fmt(e["peak_memory_ratio"], 3),
                _fmt(e["cpu_s_per_image"], 3),
                _fmt(e["plain_loop_cpu_s_per_image"], 3),
            ]
        )
    header = [
        "models", "images", "job img/s", "job steady", "loop img/s", "loop steady",
        "vs_plain_loop", "steady_vs_plain_loop", "peak PSS MiB", "peak_memory_ratio",
        "job CPU s/img", "loop CPU s/img",
    ]  # fmt: skip
    return _table(header, rows)


def stages_table(results: dict[str, Any]) -> str:
    rows = [
        [
            f"{s['models']} {s['stage']} ({s['network']})",
            s["unit"],
            _fmt(s["batch"]),
            s["precision"],
            _fmt(s["ceiling_per_s"]),
            _fmt(s["job_per_s"]),
            f"**{_fmt(s['vs_ceiling'], 3)}**",
            _fmt(s["busy_per_s"]),
            _fmt(s["busy_vs_ceiling"], 3),
        ]
        for s in results.get("stages", [])
    ]
    header = [
        "stage", "unit", "batch", "precision", "ceiling /s", "job steady /s", "vs_ceiling",
        "per busy s", "busy_vs_ceiling",
    ]  # fmt: skip
    return _table(header, rows)


def variants_table(results: dict[str, Any]) -> str:
    rows = [
        [
            f"{v['stage']} ({v['network']})",
            _fmt(v["batch"]),
            v["precision"],
            "yes" if v["channels_last"] else "no",
            "yes" if v["compiled"] else "no",
            _fmt(v["items_per_s"]) if not v.get("error") else f"failed: {v['error'][:60]}",
            _fmt(v["seconds_incl_compile"], 1),
        ]
        for v in results.get("variants", [])
    ]
    header = [
        "network",
        "batch",
        "precision",
        "channels-last",
        "compiled",
        "items/s",
        "s (incl. compile)",
    ]
    return _table(header, rows)


def profile_table(results: dict[str, Any]) -> str:
    """Where the time goes in the largest run of each model set: the job's operators (busy,
    function, Ray overhead) and CPU seconds by role, the loop's seconds per step."""
    blocks = []
    largest: dict[str, dict[str, Any]] = {}
    for e in results.get("streaming", []):
        largest[e["models"]] = e
    for name, e in largest.items():
        rows = [
            [s["name"], _fmt(s["busy_s"]), _fmt(s.get("function_s")), _fmt(s.get("overhead_s"))]
            for s in e["stages"]
        ]
        blocks.append(
            f"{name} models, {e['images']:,} images: CPU seconds {e['cpu_s']} (job), "
            f"{e['plain_loop']['cpu_s']} (loop); loop seconds by step "
            f"{e['plain_loop']['seconds_by_step']}, setup {e['plain_loop']['setup_s']} s\n\n"
            + _table(["operator", "busy s", "function s", "Ray overhead s"], rows)
        )
    return "\n\n".join(blocks)


def main(argv: list[str]) -> int:
    path = Path(argv[0] if argv else "bench/results.json")
    results = json.loads(path.read_text())
    machine = results.get("machine", {})
    print(f"Machine: {machine}\n")
    for title, table in (
        ("Streaming job vs plain loop", streaming_table(results)),
        ("Model stages vs forward-only ceilings", stages_table(results)),
        ("Arithmetic variants", variants_table(results)),
        ("Profile", profile_table(results)),
    ):
        print(f"### {title}\n\n{table}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
