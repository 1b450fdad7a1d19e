"""The review loop measured on real photos: fine-tuning MoveNet Thunder on reviewed labels,
and distilling a DetPoseNet refiner from Thunder's own job output.

Run with the project's environment: ``make review-loop`` (about 40 minutes on 2 CPU cores;
each finished step is kept under ``--work`` and skipped when run again). It writes
``bench/review_loop.json``; docs/training.md ("The review loop, measured") reports it.

The set is ``data/crowds`` (66 real photos, 300 labelled persons), split by image:
- held out: every other image, in id order, of the 48 that are not from COCO train2017
  (MoveNet was trained on train2017): 24 images;
- tune: the other 42 images. Their labels stand in for a reviewer's corrections; for
  distillation only their pixels are used.

Every number is ``detpose eval`` (pycocotools keypoint AP, the default job: two-view
MoveNet MultiPose stage 1, Algorithm 1's coarse filter) on the held-out images; only the
refiner changes between rows.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CROWDS = ROOT / "data" / "crowds"
DETPOSE = [sys.executable, "-m", "jobs.cli"]


def split(work: Path) -> tuple[Path, Path]:
    """Write the tune and held-out annotation files; returns their paths."""
    data = json.loads((CROWDS / "annotations.json").read_text())
    candidates = sorted(
        image["id"] for image in data["images"] if image.get("split") != "train2017"
    )
    held_out = set(candidates[::2])
    paths = []
    for name, keep in (("tune", lambda i: i not in held_out), ("held_out", held_out.__contains__)):
        images = [image for image in data["images"] if keep(image["id"])]
        ids = {image["id"] for image in images}
        part = {
            **data,
            "images": images,
            "annotations": [a for a in data["annotations"] if a["image_id"] in ids],
        }
        path = work / f"{name}.json"
        path.write_text(json.dumps(part))
        paths.append(path)
    return paths[0], paths[1]


def run(args: list[str], log: Path) -> float:
    """Run a detpose command (its output to ``log``); returns its seconds."""
    started = time.monotonic()
    with log.open("w") as f:
        subprocess.run([*DETPOSE, *args], cwd=ROOT, stdout=f, stderr=subprocess.STDOUT, check=True)
    return time.monotonic() - started


def evaluate(work: Path, name: str, held_out: Path, spec: dict[str, Any] | None) -> dict:
    """``detpose eval`` of the held-out images with ``spec``'s refiner; cached by ``name``."""
    out = work / f"eval-{name}"
    if not (out / "eval.json").exists():
        args = ["eval", "--annotations", str(held_out), "--images", str(CROWDS / "images")]
        args += ["--output", str(out), "--replace-symlink"]
        if spec is not None:
            spec_path = work / f"{name}.yaml"
            spec_path.write_text(json.dumps(spec))  # JSON is YAML
            args += ["--spec", str(spec_path)]
        run(args, work / f"eval-{name}.log")
    report = json.loads((out / "eval.json").read_text())
    mode = next(iter(report["modes"].values()))
    return {
        "ap": round(mode["keypoints"]["AP"], 4),
        "ar": round(mode["keypoints"]["AR"], 4),
        "found": f"{mode['found_persons']}/{mode['ground_truth_persons']}",
        "refiner": report["weights"]["refiner"],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", default=str(ROOT / "build" / "review-loop"))
    parser.add_argument("--steps", type=int, default=300, help="Thunder fine-tuning steps")
    parser.add_argument("--student-steps", type=int, default=400, help="distillation steps")
    parser.add_argument("--out", default=str(ROOT / "bench" / "review_loop.json"))
    args = parser.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    tune, held_out = split(work)
    results: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{os.cpu_count()} CPU cores, no GPU",
        "split": {
            "tune_images": len(json.loads(tune.read_text())["images"]),
            "held_out_images": len(json.loads(held_out.read_text())["images"]),
            "rule": "held out: every other image (id order) not from COCO train2017",
        },
    }
    seconds: dict[str, float] = {}

    # 1. Thunder before and after fine-tuning on the tune part's labels.
    results["thunder"] = evaluate(work, "thunder", held_out, None)
    tuned = work / "thunder-tuned.pt"
    if not tuned.exists():
        seconds["fine_tune"] = run(
            ["train", "refiner", "--model", "movenet-thunder", "--annotations", str(tune),
             "--images", str(CROWDS / "images"), "--out", str(tuned), "--steps", str(args.steps),
             "--save-every", "100", "--log-every", "20"],
            work / "fine-tune.log",
        )  # fmt: skip
    results["thunder_fine_tuned"] = evaluate(
        work, "thunder-tuned", held_out,
        {"refiner": {"model": "movenet-thunder", "checkpoint": str(tuned)}},
    )  # fmt: skip
    results["fine_tune"] = {"steps": args.steps, "preset": "fine-tune", "batch_size": 8}

    # 2. Distillation: Thunder's job on the tune images (labels unused) teaches DetPoseNet's
    # refiner, from the bundled weights; the bundled refiner is the student before.
    job_root = work / "teacher"
    job = job_root / "teacher"
    if not (job / "stats.json").exists():
        manifest = work / "tune-images.txt"
        manifest.write_text(
            "".join(
                f"{CROWDS / 'images' / image['file_name']}\n"
                for image in json.loads(tune.read_text())["images"]
            )
        )
        run(
            ["run", "--manifest", str(manifest), "--output", str(job_root), "--job-id", "teacher"],
            work / "teacher.log",
        )
    student = work / "student.pt"
    bundled = ROOT / "model" / "weights" / "refiner_tiny.pt"
    if not student.exists():
        seconds["distill"] = run(
            ["train", "refiner", "--labels", str(job), "--init", str(bundled), "--out",
             str(student), "--steps", str(args.student_steps), "--save-every", "100",
             "--log-every", "20"],
            work / "distill.log",
        )  # fmt: skip
    results["student_before"] = evaluate(
        work, "student-before", held_out, {"refiner": {"model": "detposenet"}}
    )
    results["student_distilled"] = evaluate(
        work, "student", held_out,
        {"refiner": {"model": "detposenet", "checkpoint": str(student)}},
    )  # fmt: skip
    results["distill"] = {"steps": args.student_steps, "init": "model/weights/refiner_tiny.pt"}
    results["seconds"] = seconds
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
