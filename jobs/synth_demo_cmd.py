"""``detpose synth-demo``: DetPoseNet trained and evaluated on synthetic scenes, on a CPU.

The evidence, in miniature and without downloads, that DetPoseNet's own networks learn and
that coarse-pose filtering beats NMS (issue 13). Every step is the command a user would run,
started as a subprocess: ``detpose synth`` (a training set and held-out sets drawn with
another seed), ``detpose train`` (stage 1, the refiner, and one refiner per ablation), and
``detpose eval`` (pycocotools keypoint AP per crowd level and filter mode). Finished steps
are kept: re-running the command resumes where it stopped. The report lands in
``OUT/report.json`` and ``OUT/report.md``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from jobs.common import number_in, run_detpose

logger = logging.getLogger(__name__)
POSITIVE = number_in(int, 1)

CROWD_LEVELS = ("low", "medium", "high")
FILTER_MODES = ("coarse", "nms", "oks_nms", "none")
TRAIN_SEED, TEST_SEED = 1, 2
# Post-refinement de-duplication of recovered persons, measured on the crowd-high set.
DEDUPE_OKS = 0.7


@dataclass(frozen=True)
class Refiner:
    """One refiner to train: the full method or an ablation (``--set`` overrides)."""

    name: str
    overrides: tuple[str, ...] = ()
    description: str = ""


# Each ablation switches one paper component off (docs/models.md names the alternatives).
REFINERS: tuple[Refiner, ...] = (
    Refiner("full", (), "MSS + MSR + structure-aware loss + masking fine-tuning (the paper)"),
    Refiner("no-mss", ("supervision_strides=[4]",), "MSS off: final scale supervised only"),
    Refiner("no-msr", ("msr=off",), "MSR off: the last stack's heatmaps are the output"),
    Refiner(
        "no-structure",
        ("structure_loss=keypoints",),
        "structure-aware loss off: plain per-keypoint L2, no association channels",
    ),
    Refiner(
        "no-masking",
        ("mask_background_prob=0", "mask_duplicate_prob=0"),
        "keypoint masking off",
    ),
)


@dataclass
class Demo:
    """Paths and sizes of one demo run."""

    out: Path
    train_images: int
    test_images: int
    stage1_steps: int
    refiner_steps: int
    ablations: bool
    parallel: int
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def train_set(self) -> Path:
        return self.out / "data" / "train"

    def test_set(self, level: str) -> Path:
        return self.out / "data" / f"test-{level}"

    def checkpoint(self, name: str) -> Path:
        return self.out / "checkpoints" / f"{name}.pt"

    def eval_dir(self, name: str) -> Path:
        return self.out / "eval" / name


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``synth-demo`` subcommand."""
    p = subparsers.add_parser(
        "synth-demo",
        help="train tiny DetPoseNet on synthetic scenes and evaluate it (filtering vs NMS, ablations)",
        description="Draw a synthetic training set and held-out sets per crowd level "
        "(detpose synth), train tiny DetPoseNet on the CPU (detpose train), and score it with "
        "detpose eval: keypoint AP per crowd level, coarse-pose filtering vs NMS vs OKS-NMS vs "
        "refining every proposal, and one refiner per paper component switched off. Resumes "
        "finished steps; writes OUT/report.md and OUT/report.json.",
    )
    p.add_argument("--out", default="build/synth-demo", metavar="DIR", help="working folder")
    p.add_argument("--train-images", type=POSITIVE, default=1200, metavar="N")
    p.add_argument("--test-images", type=POSITIVE, default=100, metavar="N", help="per crowd level")
    p.add_argument("--stage1-steps", type=POSITIVE, default=6000, metavar="N")
    p.add_argument("--refiner-steps", type=POSITIVE, default=6000, metavar="N")
    p.add_argument(
        "--no-ablations", action="store_true", help="train and evaluate the full method only"
    )
    p.add_argument(
        "--parallel",
        type=POSITIVE,
        default=max(1, min(4, os.cpu_count() or 1)),
        metavar="N",
        help="trainings run side by side, one thread each (default: one per core, at most 4)",
    )
    p.set_defaults(func=cmd_synth_demo)


def draw_sets(demo: Demo) -> None:
    """The training set (every crowd level mixed) and one held-out set per crowd level."""
    sets = [(demo.train_set, demo.train_images, TRAIN_SEED, "mixed")]
    sets += [(demo.test_set(level), demo.test_images, TEST_SEED, level) for level in CROWD_LEVELS]
    for folder, images, seed, crowd in sets:
        if (folder / "annotations.json").exists():
            continue
        args = ["synth", "--out", str(folder), "--images", str(images), "--seed", str(seed)]
        seconds = run_detpose(
            [*args, "--crowd", crowd], demo.out / "logs" / f"synth-{folder.name}.log"
        )
        demo.timings[f"synth {folder.name}"] = seconds
        logger.info("drew %s (%d images) in %.0f s", folder, images, seconds)


def _train_args(
    demo: Demo, network: str, steps: int, out: Path, overrides: Sequence[str]
) -> list[str]:
    data = demo.train_set
    args = ["train", network, "--config", "tiny", "--out", str(out), "--steps", str(steps)]
    args += ["--annotations", str(data / "annotations.json"), "--images", str(data / "images")]
    args += ["--workers", "0", "--log-every", "100", "--save-every", "500"]
    for override in overrides:
        args += ["--set", override]
    return args


def train_networks(demo: Demo) -> None:
    """Stage 1 and every refiner, ``demo.parallel`` at a time with one thread each."""
    refiners = REFINERS if demo.ablations else REFINERS[:1]
    runs = [("stage1", "stage1", demo.stage1_steps, ())]
    runs += [(f"refiner-{r.name}", "refiner", demo.refiner_steps, r.overrides) for r in refiners]

    def run(item: tuple[str, str, int, Sequence[str]]) -> None:
        name, network, steps, overrides = item
        args = _train_args(demo, network, steps, demo.checkpoint(name), overrides)
        seconds = run_detpose(args, demo.out / "logs" / f"train-{name}.log", threads=1)
        demo.timings[f"train {name}"] = seconds
        logger.info("trained %s (%d steps) in %.0f s", name, steps, seconds)

    with ThreadPoolExecutor(max_workers=demo.parallel) as pool:
        list(pool.map(run, runs))


def write_spec(demo: Demo, refiner: str, dedupe: bool = False) -> Path:
    """A job spec with the demo's stage 1 and refiner ``refiner``."""
    spec: dict[str, Any] = {
        "output": str(demo.out / "jobs"),
        "stage1": {"model": "detposenet", "checkpoint": str(demo.checkpoint("stage1").resolve())},
        "refiner": {
            "model": "detposenet",
            "checkpoint": str(demo.checkpoint(f"refiner-{refiner}").resolve()),
        },
    }
    if dedupe:
        spec["filter"] = {"recovered_dedupe_oks": DEDUPE_OKS}
    path = demo.out / "specs" / f"{refiner}{'-dedupe' if dedupe else ''}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def evaluate(demo: Demo, name: str, level: str, spec: Path, modes: Sequence[str]) -> dict:
    """``detpose eval`` of one held-out set; returns its per-mode reports (cached)."""
    out = demo.eval_dir(name)
    result = out / "eval.json"
    if not result.exists():
        data = demo.test_set(level)
        args = ["eval", "--annotations", str(data / "annotations.json")]
        args += ["--images", str(data / "images"), "--output", str(out), "--spec", str(spec)]
        args += ["--filter", ",".join(modes), "--no-progress-timeout", "600"]
        seconds = run_detpose(args, demo.out / "logs" / f"eval-{name}.log")
        demo.timings[f"eval {name}"] = seconds
        logger.info("evaluated %s in %.0f s", name, seconds)
    return json.loads(result.read_text())["modes"]


def _summary(report: dict[str, Any]) -> dict[str, Any]:
    keys = ("AP", "AP50", "AP75", "AR")
    return {
        **{k: report["keypoints"][k] for k in keys},
        "box_AP": report["boxes"]["AP"],
        "persons": report["persons"],
        "ground_truth_persons": report["ground_truth_persons"],
        "refinement_runs_per_person": report["refinement_runs_per_person"],
        "recovered": report.get("recovered", 0),
        "recovered_duplicates_removed": report.get("recovered_duplicates_removed", 0),
    }


def run_evaluations(demo: Demo) -> dict[str, Any]:
    """Every crowd level × filter mode with the full method; ablations and dedupe on crowd high."""
    full = write_spec(demo, "full")
    results: dict[str, Any] = {"levels": {}, "ablations": {}}
    for level in CROWD_LEVELS:
        reports = evaluate(demo, f"full-{level}", level, full, FILTER_MODES)
        results["levels"][level] = {mode: _summary(r) for mode, r in reports.items()}
    if demo.ablations:
        for refiner in REFINERS[1:]:
            spec = write_spec(demo, refiner.name)
            reports = evaluate(demo, f"{refiner.name}-high", "high", spec, ("coarse",))
            results["ablations"][refiner.name] = _summary(reports["coarse"])
    reports = evaluate(
        demo, "full-dedupe-high", "high", write_spec(demo, "full", True), ("coarse",)
    )
    results["dedupe_high"] = _summary(reports["coarse"])
    return results


def format_report(demo: Demo, results: dict[str, Any], records: dict[str, Any]) -> str:
    """The markdown tables of ``report.md``."""
    lines = [
        f"# DetPoseNet `tiny` on synthetic scenes ({time.strftime('%Y-%m-%d')})",
        "",
        f"Training set: {demo.train_images} images (seed {TRAIN_SEED}, crowd mixed); held-out "
        f"sets: {demo.test_images} images per crowd level (seed {TEST_SEED}). Stage 1: "
        f"{demo.stage1_steps} steps; refiners: {demo.refiner_steps} steps each.",
        "",
        "## Keypoint AP per crowd level and filter mode (full method)",
        "",
        "| crowd | mode | AP | AP50 | AP75 | AR | box AP | persons / GT | refinement runs per person |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for level, modes in results["levels"].items():
        for mode, r in modes.items():
            lines.append(
                f"| {level} | {mode} | {r['AP']:.3f} | {r['AP50']:.3f} | {r['AP75']:.3f} | "
                f"{r['AR']:.3f} | {r['box_AP']:.3f} | {r['persons']} / {r['ground_truth_persons']} "
                f"| {r['refinement_runs_per_person']:.2f} |"
            )
    if results["ablations"]:
        base = results["levels"]["high"]["coarse"]["AP"]
        lines += [
            "",
            "## Ablations on crowd high (coarse-pose filtering), one component off at a time",
            "",
            "| refiner | AP | Δ AP vs full | what is off |",
            "| --- | ---: | ---: | --- |",
            f"| full | {base:.3f} | | nothing: {REFINERS[0].description} |",
        ]
        for refiner in REFINERS[1:]:
            ap = results["ablations"][refiner.name]["AP"]
            lines.append(
                f"| {refiner.name} | {ap:.3f} | {ap - base:+.3f} | {refiner.description} |"
            )
    dedupe = results["dedupe_high"]
    lines += [
        "",
        f"Post-refinement OKS de-duplication of recovered persons (OKS > {DEDUPE_OKS}) on crowd "
        f"high: AP {dedupe['AP']:.3f} vs {results['levels']['high']['coarse']['AP']:.3f} without; "
        f"{dedupe['recovered_duplicates_removed']} of {dedupe['recovered']} recovered persons removed.",
        "",
        "## Training",
        "",
        "| network | steps | seconds | loss, first window → last |",
        "| --- | ---: | ---: | --- |",
    ]
    for name, record in records.items():
        first = record.get("first_losses", {}).get("total", float("nan"))
        last = record.get("losses", {}).get("total", float("nan"))
        lines.append(
            f"| {name} | {record['steps']} | {record['seconds']:.0f} | {first:.4g} → {last:.4g} |"
        )
    return "\n".join(lines) + "\n"


def _training_records(demo: Demo) -> dict[str, Any]:
    from model.checkpoint import read_checkpoint_dict

    names = ["stage1"] + [
        f"refiner-{r.name}" for r in (REFINERS if demo.ablations else REFINERS[:1])
    ]
    return {name: read_checkpoint_dict(demo.checkpoint(name))["record"] for name in names}


def cmd_synth_demo(args: argparse.Namespace) -> int:
    """Run ``detpose synth-demo``; returns the exit status."""
    demo = Demo(
        Path(args.out), args.train_images, args.test_images, args.stage1_steps,
        args.refiner_steps, not args.no_ablations, args.parallel,
    )  # fmt: skip
    started = time.perf_counter()
    draw_sets(demo)
    train_networks(demo)
    results = run_evaluations(demo)
    records = _training_records(demo)
    report = {
        "settings": {
            "train_images": demo.train_images, "test_images": demo.test_images,
            "stage1_steps": demo.stage1_steps, "refiner_steps": demo.refiner_steps,
            "train_seed": TRAIN_SEED, "test_seed": TEST_SEED,
        },
        "results": results,
        "training": {
            name: {k: r.get(k) for k in ("steps", "seconds", "first_losses", "losses")}
            for name, r in records.items()
        },
        "timings_s": demo.timings,
        "wall_s": time.perf_counter() - started,
    }  # fmt: skip
    (demo.out / "report.json").write_text(json.dumps(report, indent=2))
    (demo.out / "report.md").write_text(format_report(demo, results, records))
    print((demo.out / "report.md").read_text())
    return 0
