"""``detpose crowd-report``: DetPose on the real crowd set (``data/crowds``), every setting
docs/evaluation.md's "Crowds" section reports, and the report itself.

Each run is the command a user would run, started as a subprocess: ``detpose eval`` with a
spec that changes one thing from the defaults (or puts back the single-scale defaults that
came before coarse-pose guidance and multi-scale stage 1). Dark photos are measured on
low-light copies of the set (``model.synth.darken``: less light, and shot and read noise)
and on its real low-light frames. Every run is then scored per part of the set (all of
it, the part no network was trained on, the crowded part, OCHuman, low light) from its rows.
Finished runs are kept: re-running the command resumes. The report lands in
``OUT/report.json`` and ``OUT/report.md``.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from PIL import Image

from jobs.common import run_detpose

logger = logging.getLogger(__name__)

FILTER_MODES = ("coarse", "nms", "oks_nms", "none")
# The defaults before issue 20: one 256-px pass of stage 1, Algorithm 1's thresholds then,
# no post-refinement dedupe, MoveNet's own crop (1.25) and decoding, no exposure correction.
FILTER_BEFORE = {"duplicate_oks": 0.7, "oks_nms": 0.9, "recovered_dedupe_oks": None}
BEFORE = {
    "stage1": {"input_size": 256},
    "filter": FILTER_BEFORE,
    "refiner": {"crop_padding": 1.25, "guide": "off"},
    "decode": {"exposure": "off"},
}
TILES = {"input_size": 256, "grid": 2, "tile_below_height": 0.35}  # on images with small people
# Light that reaches the low-light copies: about 3.6 and 5.3 stops less than the photo's.
DARK_LIGHT = {"dark-12": 1 / 12, "dark-40": 1 / 40}


@dataclass(frozen=True)
class Run:
    """One ``detpose eval`` of the set: a spec over the defaults, its filter modes."""

    name: str
    description: str
    spec: dict[str, Any] = field(default_factory=dict)
    modes: tuple[str, ...] = ("coarse",)
    gt_boxes: bool = False
    images: str = "set"  # "set", or a key of DARK_LIGHT


RUNS: tuple[Run, ...] = (
    Run("default", "the defaults (multi-scale stage 1, guided refiner)", modes=FILTER_MODES),
    Run(
        "thresholds-before",
        "the defaults with Algorithm 1's and the baselines' thresholds before issue 20",
        {"filter": FILTER_BEFORE},
        FILTER_MODES,
    ),
    Run(
        "single-scale",
        "the defaults with one 256-px stage-1 pass",
        {"stage1": {"input_size": 256}},
        FILTER_MODES,
    ),
    Run("before", "the single-scale defaults before issue 20", BEFORE),
    *(
        Run(f"views-{name}", f"stage-1 views {name}", {"stage1": {"views": views}})
        for name, views in (
            ("384", [{"input_size": 384}]),
            ("512", [{"input_size": 512}]),
            ("384+tiles", [{"input_size": 384}, TILES]),
            ("256+512+tiles", [{"input_size": 256}, {"input_size": 512}, TILES]),
            ("256+512+tiles-everywhere", [
                {"input_size": 256}, {"input_size": 512}, {"input_size": 256, "grid": 2},
            ]),
            ("256+tiles+tiles3", [
                {"input_size": 256}, TILES, {**TILES, "grid": 3},
            ]),
        )
    ),  # fmt: skip
    Run("gt-boxes", "ground-truth boxes, the default refiner (guided by the box)", gt_boxes=True),
    Run(
        "gt-boxes-before",
        "ground-truth boxes, the refiner before issue 20",
        {"refiner": BEFORE["refiner"]},
        gt_boxes=True,
    ),
    Run("guide-box", "refiner guided by the box only", {"refiner": {"guide": "box"}}),
    Run("guide-off", "refiner unguided (MoveNet's own rule)", {"refiner": {"guide": "off"}}),
    Run("crop-1.25", "refiner crops grown by 1.25", {"refiner": {"crop_padding": 1.25}}),
    Run(
        "second-crop",
        "a second refiner crop grown by 1.25, averaged",
        {"refiner": {"second_crop_padding": 1.25}},
    ),
    Run("flip", "the flip test", {"flip_test": True}),
    Run(
        "dedupe-off",
        "recovered persons refined onto another's body kept (no post-refinement dedupe)",
        {"filter": {"recovered_dedupe_oks": None}},
    ),
    Run("exposure-off", "no exposure correction", {"decode": {"exposure": "off"}}),
    *(
        Run(f"{dark}-{exposure}", f"low-light copies ({dark}), exposure {exposure}",
            {"decode": {"exposure": exposure}}, images=dark)
        for dark in DARK_LIGHT for exposure in ("auto", "off")
    ),
)  # fmt: skip


def _part(image: dict[str, Any], name: str) -> bool:
    """Whether an image entry of ``data/crowds`` belongs to the part ``name``."""
    parts: dict[str, Callable[[dict[str, Any]], bool]] = {
        "all": lambda im: True,
        "held-out": lambda im: im.get("split") != "train2017",
        "crowded": lambda im: float(im.get("crowd_index", 0.0)) >= CROWDED_INDEX,
        "uncrowded": lambda im: float(im.get("crowd_index", 0.0)) < CROWDED_INDEX,
        "ochuman": lambda im: im.get("source") == "ochuman",
        "low-light": lambda im: bool(im.get("low_light")),
    }
    return parts[name](image)


PARTS = ("all", "held-out", "crowded", "uncrowded", "ochuman", "low-light")
# CrowdPose's medium and hard levels: crowd index of at least 0.1.
CROWDED_INDEX = 0.1


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "crowd-report",
        help="score DetPose on the real crowd set under every reported setting (docs/evaluation.md, Crowds)",
        description="Run `detpose eval` on data/crowds with the defaults, the single-scale "
        "defaults before, ground-truth boxes, each refiner choice and low-light copies; "
        "score each part of the set and write OUT/report.md and OUT/report.json.",
    )
    p.add_argument("--out", default="build/crowd-report", help="output folder")
    p.add_argument("--annotations", default="data/crowds/annotations.json", metavar="JSON")
    p.add_argument("--images", default="data/crowds/images", metavar="DIR")
    p.add_argument("--only", nargs="+", choices=[run.name for run in RUNS], help="these runs only")
    p.set_defaults(func=cmd_crowd_report)


def darken_set(annotations: Path, images: Path, out: Path, light: float) -> Path:
    """Low-light copies of every image of the set in ``out``, saved in its own format (JPEG
    at quality 95, as a camera would); returns ``out``. Kept when already there."""
    from model.synth.darken import darken

    out.mkdir(parents=True, exist_ok=True)
    data = json.loads(annotations.read_text())
    for image in data["images"]:
        target = out / image["file_name"]
        if target.exists():
            continue
        rgb = np.asarray(Image.open(images / image["file_name"]).convert("RGB"))
        dark = darken(rgb, light, seed=int(image["id"]))
        Image.fromarray(dark).save(target, quality=95)
    return out


def evaluate(run: Run, annotations: Path, images: Path, out: Path) -> float:
    """``detpose eval`` of ``run`` into ``out / run.name``; its seconds (0 when kept)."""
    folder = out / run.name
    spec_file = out / "specs" / f"{run.name}.yaml"
    spec_text = yaml.safe_dump(run.spec or {"flip_test": False}, sort_keys=True)
    if (
        (folder / "eval.json").exists()
        and spec_file.exists()
        and spec_file.read_text() == spec_text
    ):
        return 0.0
    spec_file.parent.mkdir(parents=True, exist_ok=True)
    spec_file.write_text(spec_text)
    args = ["eval", "--annotations", str(annotations), "--images", str(images)]
    args += ["--output", str(folder), "--spec", str(spec_file), "--filter", ",".join(run.modes)]
    args += ["--gt-boxes"] if run.gt_boxes else []
    seconds = run_detpose(args, out / "logs" / f"{run.name}.log")
    logger.info("evaluated %s in %.0f s", run.name, seconds)
    return seconds


def score_run(run: Run, annotations: Path, images: Path, out: Path) -> dict[str, Any]:
    """Per filter mode and part of the set: ``{mode: {part: report}}``; for the default run
    also each person ranking (``{"rank:NAME": {part: report}}``)."""
    import pyarrow.compute as pc

    from model.evaluation.results import RANKINGS
    from pipeline.graph.evaluation import load_benchmark, read_eval_rows, subset_reports
    from schemas.spec import StorageSpec

    storage = StorageSpec()
    benchmark = load_benchmark(str(annotations), str(images), "coco", storage)
    rows = read_eval_rows(str(out / run.name / "rows"), storage)
    parts = {name: (lambda im, name=name: _part(im, name)) for name in PARTS}
    scored = subset_reports(rows, benchmark, parts)
    if run.name == "default":
        coarse = rows.filter(pc.equal(rows.column("filter_mode"), "coarse"))
        for rank_by in RANKINGS:
            scored[f"rank:{rank_by}"] = subset_reports(coarse, benchmark, parts, rank_by)["coarse"]
    for by_part in scored.values():
        for report in by_part.values():
            report["gflops_per_image"] = model_gflops(run, report)
    return scored


@functools.cache
def _network_costs() -> tuple[dict[tuple[str, str], float], dict[tuple[str, str], int]]:
    """GFLOPs per input and input side of every installed network, by (name, stage)."""
    from model.inference.inventory import installed_models

    models = [m for m in installed_models() if m.installed]
    flops = {(m.name, m.stage): m.gflops or 0.0 for m in models}
    sides = {(m.name, m.stage): int(m.input_size.split("x")[0]) for m in models}
    return flops, sides


def model_gflops(run: Run, report: dict[str, Any]) -> float:
    """The networks' GFLOPs per image of a run: stage 1's at each input size it ran
    (``counts.stage1_inputs``), the refiner's per pass (``refinement_runs``), each network's
    FLOPs as ``detpose models`` measures them (stage 1's scaled by its input's pixels)."""
    from model.inference.zoo_stage1 import inputs_by_size
    from schemas.spec import JobSpec

    spec = JobSpec.parse({"inputs": ["x"], "output": "x", **run.spec})
    flops, sides = _network_costs()
    base = sides[(spec.stage1.model, "stage1")]
    images = max(report["images_ok"], 1)
    stage1 = 0.0
    if not run.gt_boxes:
        views = spec.stage1.resolved_views()
        for size, inputs in inputs_by_size(views, report["stage1_inputs"] / images).items():
            stage1 += inputs * (size / base) ** 2 * flops[(spec.stage1.model, "stage1")]
    refiner = report["refinement_runs"] / images * flops[(spec.refiner.model, "refiner")]
    return stage1 + refiner


def _row(label: str, report: dict[str, Any]) -> str:
    k = report["keypoints"]
    return (
        f"| {label} | {k['AP']:.3f} | {k['AR']:.3f} | {report['found_persons']}/"
        f"{report['ground_truth_persons']} | {report['refinement_runs_per_person']:.2f} | "
        f"{report['collapsed_pairs']} | {report.get('gflops_per_image', 0.0):.1f} |"
    )


HEAD = (
    "| run | AP | AR | found / labelled | runs / person | collapsed pairs | GFLOPs / image |\n"
    "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"
)


def format_report(scores: dict[str, dict[str, Any]], parts: Sequence[str]) -> str:
    """The report's tables: every run and mode, per part of the set."""
    lines = ["# DetPose on the real crowd set (data/crowds)", ""]
    for part in parts:
        lines += [f"## Part: {part}", "", HEAD]
        for run in RUNS:
            if run.name not in scores:
                continue
            for mode, by_part in scores[run.name].items():
                if part in by_part:
                    lines.append(_row(f"{run.name} ({mode})", by_part[part]))
        lines.append("")
    return "\n".join(lines)


def cmd_crowd_report(args: argparse.Namespace) -> int:
    """Run ``detpose crowd-report``; returns the exit status."""
    out, annotations, images = Path(args.out), Path(args.annotations), Path(args.images)
    started = time.perf_counter()
    runs = [run for run in RUNS if not args.only or run.name in args.only]
    timings, scores = {}, {}
    for run in runs:
        folder = images
        if run.images != "set":
            folder = darken_set(annotations, images, out / run.images, DARK_LIGHT[run.images])
        timings[run.name] = evaluate(run, annotations, folder, out)
        scores[run.name] = score_run(run, annotations, folder, out)
    report = {
        "runs": {run.name: {"description": run.description, "spec": run.spec} for run in runs},
        "scores": scores,
        "timings_s": timings,
        "wall_s": time.perf_counter() - started,
    }
    (out / "report.json").write_text(json.dumps(report, indent=1))
    (out / "report.md").write_text(format_report(scores, PARTS))
    print((out / "report.md").read_text())
    return 0
