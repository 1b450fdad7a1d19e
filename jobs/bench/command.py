"""``detpose bench``: measured numbers for docs/benchmarks.md, written to ``bench/results.json``.

- the filter micro-benchmark (stage 2 alone, per image, every mode);
- the streaming job against a plain single-process loop on the same images, models,
  batch sizes and machine (``pipeline/graph/plain_loop.py``): whole-job and steady-state
  throughput, peak memory (driver plus every Ray process, as PSS) and CPU seconds by role;
- the forward-only ceiling of each model stage, and how close the job comes to it;
- the arithmetic variants of each network (layout, precision, compilation), which chose
  the defaults of ``model/inference/devices.py``.

Two model sets: the defaults (zoo MoveNet) and ``paper``-size DetPoseNet (random weights
in checkpoints written for the run: its speed, not its poses, is what is measured).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from jobs.bench.filter import benchmark_filter
from jobs.bench.probe import TreeProbe, describe_peaks, steady_rate

DEFAULT_SIZES = (500, 2000)
# paper-size DetPoseNet costs seconds per image on a CPU: a few images show its rate there.
DEFAULT_PAPER_SIZES_CPU = (16,)
DEFAULT_PAPER_SIZES_CUDA = (500, 2000)
# Persons refined per image with paper-size DetPoseNet (random weights, filter 'none'):
# the reference load on a GPU, a small one on CPU.
PAPER_PERSONS = {"cpu": 4, "cuda": 30}
PAPER_CPU_BATCH = 2
CORPUS_LONG_SIDE = 480
MODEL_SETS = ("default", "single-scale", "paper")
# The default models with one 256-px stage-1 pass: what multi-scale stage 1 costs.
SINGLE_SCALE = {"stage1": {"input_size": 256}}
STAGE_KEYS = ("name", "busy_s", "function_s", "overhead_s", "rows", "rows_per_s", "output_mib")


def sample_corpus(folder: Path, count: int, seed: int = 0) -> list[str]:
    """``count`` JPEGs made from the bundled sample photos by random crops, flips and scales.

    Real people, so every stage (refinement included) does its real share of the work; the
    files are re-used when already there.
    """
    from PIL import Image, ImageOps

    from jobs.run_cmd import sample_images

    folder.mkdir(parents=True, exist_ok=True)
    sources = [Image.open(p).convert("RGB") for p in sample_images()]
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        path = folder / f"img_{i:05d}.jpg"
        paths.append(str(path))
        source = sources[i % len(sources)]
        frac = rng.uniform(0.6, 1.0)  # drawn for every index so files do not depend on re-use
        x0, y0 = rng.uniform(0, 1 - frac, size=2)
        flip = rng.uniform() < 0.5
        if path.exists():
            continue
        w, h = source.size
        img = source.crop((int(x0 * w), int(y0 * h), int((x0 + frac) * w), int((y0 + frac) * h)))
        img = ImageOps.mirror(img) if flip else img
        img.thumbnail((CORPUS_LONG_SIDE, CORPUS_LONG_SIDE))
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=90)
        path.write_bytes(buf.getvalue())
    return paths


@dataclass(frozen=True)
class ModelSet:
    """The spec fields of one model set, and its name in the results."""

    name: str
    spec: dict[str, Any]


def paper_model_set(folder: Path, device: str) -> ModelSet:
    """``paper``-size DetPoseNet with random weights, saved as ordinary checkpoints."""
    import torch

    from model.checkpoint import save_checkpoint
    from model.networks.detposenet import build_model
    from schemas.network_configs import coarse_preset, refiner_preset

    paths = {}
    for kind, config in (
        ("stage1", coarse_preset("coco-recipe")),
        ("refiner", refiner_preset("coco-recipe")),
    ):
        torch.manual_seed(0)
        paths[kind] = folder / f"paper-{kind}.pt"
        if not paths[kind].exists():
            record = {"note": "random weights, for throughput benchmarks only"}
            save_checkpoint(paths[kind], kind, build_model(kind, config), config, record)
    persons = PAPER_PERSONS[device]
    # On a CPU a paper-size image takes seconds: small batches give the few images of the
    # run enough written blocks for a steady-state rate.
    batch = {"batch_size": PAPER_CPU_BATCH} if device == "cpu" else {}
    return ModelSet(
        "paper",
        {
            "stage1": {"model": "detposenet", "checkpoint": str(paths["stage1"]), **batch},
            "refiner": {"model": "detposenet", "checkpoint": str(paths["refiner"]), **batch},
            "filter": {"mode": "none", "max_persons": persons},
            "proposals_per_image": max(persons, 30),
        },
    )


def _child_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}


def _run_probed(cmd: list[str], rows_folder: Path | None) -> tuple[float, TreeProbe, str]:
    """Run ``cmd`` in a child process under a ``TreeProbe``; ``(wall seconds, probe, output)``."""
    started = time.perf_counter()
    proc = subprocess.Popen(
        cmd, env=_child_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    with TreeProbe(proc.pid, rows_folder=rows_folder) as probe:
        output, _ = proc.communicate()
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark command failed: {' '.join(cmd)}\n{output[-3000:]}")
    return wall, probe, output


def run_streaming_job(
    spec_path: Path, manifest: Path, out: Path, job_id: str, num_cpus: int
) -> dict[str, Any]:
    """One ``detpose run`` in a fresh process (its own local Ray), probed."""
    cmd = [
        sys.executable, "-m", "jobs.cli", "run", "--spec", str(spec_path), "--manifest",
        str(manifest), "--output", str(out), "--job-id", job_id, "--num-cpus", str(num_cpus),
        "--progress-interval", "30",
    ]  # fmt: skip
    wall, probe, _ = _run_probed(cmd, out / job_id / "annotations")
    stats = json.loads((out / job_id / "stats.json").read_text())
    images = stats["images_this_run"]
    runs = round(stats["refinement_runs_per_person"] * stats["persons"])
    return {
        "images": images,
        "process_wall_s": round(wall, 2),
        "job_wall_s": round(stats["wall_s"], 2),
        "images_per_s": round(images / wall, 3),
        "steady_images_per_s": round(steady_rate(probe.rows_over_time, images), 3),
        **describe_peaks(probe),
        "cpu_s": probe.cpu_seconds(),
        "cpu_s_by_process": probe.cpu_seconds_by_process(),
        "persons": stats["persons"],
        "refinement_runs": runs,
        "stage1_inputs": stats.get("stage1_inputs", images),
        "stages": [
            {key: round(s[key], 2) if isinstance(s[key], float) else s[key] for key in STAGE_KEYS}
            for s in stats["stages"]
        ],
        "weights": stats["weights"],
    }


def run_plain_loop(spec_path: Path, manifest: Path, out: Path) -> dict[str, Any]:
    """The plain-loop baseline (``jobs/bench/loop.py``) in a fresh process, probed."""
    result_path = out / "loop-result.json"
    cmd = [
        sys.executable,
        "-m",
        "jobs.bench.loop",
        str(spec_path),
        str(manifest),
        str(out),
        str(result_path),
    ]
    wall, probe, _ = _run_probed(cmd, None)
    result = json.loads(result_path.read_text())
    progress = [(t, n) for t, n in result["progress"]]
    return {
        "images_per_s": round(result["images"] / wall, 3),
        "steady_images_per_s": round(steady_rate(progress, result["images"]), 3),
        "process_wall_s": round(wall, 2),
        "setup_s": result["setup_s"],
        "seconds_by_step": result["seconds_by_step"],
        "peak_pss_mib": describe_peaks(probe)["peak_pss_mib"],
        "cpu_s": probe.cpu_seconds(),
    }


def _ratio(a: float, b: float) -> float | None:
    return round(a / b, 3) if b else None


def compare_sizes(
    model_set: ModelSet, images: list[str], sizes: list[int], workdir: Path, num_cpus: int
) -> list[dict[str, Any]]:
    """The streaming job and the plain loop on the first ``size`` images, for each size."""
    entries = []
    for size in sorted(sizes):
        run_dir = workdir / f"{model_set.name}-{size}"
        run_dir.mkdir(parents=True, exist_ok=True)
        spec_path = run_dir / "spec.yaml"
        spec_path.write_text(yaml.safe_dump({"output": str(run_dir / "out"), **model_set.spec}))
        manifest = run_dir / "manifest.txt"
        manifest.write_text("\n".join(images[:size]) + "\n")
        print(
            f"detpose bench: {model_set.name} models, {size} images: streaming job ...", flush=True
        )
        job = run_streaming_job(spec_path, manifest, run_dir / "out", f"bench-{size}", num_cpus)
        print(f"detpose bench: {model_set.name} models, {size} images: plain loop ...", flush=True)
        loop = run_plain_loop(spec_path, manifest, run_dir / "loop")
        entries.append(
            {
                "models": model_set.name,
                **job,
                "plain_loop_images_per_s": loop["images_per_s"],
                "plain_loop_steady_images_per_s": loop["steady_images_per_s"],
                "vs_plain_loop": _ratio(job["images_per_s"], loop["images_per_s"]),
                "steady_vs_plain_loop": _ratio(
                    job["steady_images_per_s"], loop["steady_images_per_s"]
                ),
                "cpu_s_per_image": round(job["cpu_s"]["total"] / job["images"], 4),
                "plain_loop_cpu_s_per_image": round(loop["cpu_s"]["total"] / job["images"], 4),
                "plain_loop": loop,
            }
        )
    smallest = entries[0]["peak_pss_mib"]
    for entry in entries:
        entry["peak_memory_ratio"] = _ratio(entry["peak_pss_mib"], smallest)
    return entries


def stage_ceilings(model_set: ModelSet, job: dict[str, Any], device: str) -> list[dict[str, Any]]:
    """Forward-only ceiling of each model stage, in this process, and the job's share of it.

    ``job``: the largest streaming entry of the model set. Stage 1's unit is an image; the
    refiner's a person crop, its batch the job's mean crops per refiner batch.
    """

    from model.inference.devices import resolve_device, resolve_precision
    from model.inference.throughput import forward_items_per_s, random_batch
    from model.networks.resolve import resolve_stage
    from pipeline.graph.resources import max_crops_per_forward, resolved_batch_sizes
    from schemas.spec import JobSpec

    spec = JobSpec.parse({"inputs": ["/bench"], "output": "/bench", **model_set.spec})
    torch_device = resolve_device(device)
    on_gpu = torch_device.type == "cuda"
    sizes = resolved_batch_sizes(spec, on_gpu)
    dtype = resolve_precision(torch_device, spec.precision)
    images = job["images"]
    crops_per_image = job["refinement_runs"] / images
    crops_batch = max(1, min(max_crops_per_forward(on_gpu), round(crops_per_image * sizes.refiner)))
    out = []
    for kind, stage, batch, per_image, unit in (
        ("stage1", spec.stage1, sizes.stage1, 1.0, "images"),
        ("refiner", spec.refiner, crops_batch, crops_per_image, "crops"),
    ):
        resolved = resolve_stage(kind, spec, check=False)
        loaded = resolved.load(torch_device)
        forward = resolved.adapter.forward_fn(loaded)
        hw = resolved.adapter.input_hw(loaded, spec.stage1.input_size if kind == "stage1" else None)
        if kind == "stage1":
            ceiling = stage1_ceiling(resolved, forward, hw, batch, job, torch_device, dtype)
        else:
            ceiling = forward_items_per_s(
                forward, random_batch(batch, hw, torch_device), torch_device, dtype
            )
        job_rate = job["steady_images_per_s"] * per_image  # 0: the run had no steady window
        busy = next(
            (
                s["busy_s"]
                for s in job["stages"]
                if ("Coarse" if kind == "stage1" else "Refine") in s["name"]
            ),
            0.0,
        )
        busy_rate = images * per_image / busy if busy else 0.0
        out.append(
            {
                "models": model_set.name,
                "stage": kind,
                "network": stage.model,
                "images": images,
                "unit": unit,
                "batch": batch,
                "input_hw": list(hw),
                "precision": str(dtype).replace("torch.", "") if dtype else "float32",
                "ceiling_per_s": round(ceiling, 2),
                "job_per_s": round(job_rate, 2) if job_rate else None,
                "vs_ceiling": _ratio(job_rate, ceiling) if job_rate else None,
                "busy_per_s": round(busy_rate, 2),
                "busy_vs_ceiling": _ratio(busy_rate, ceiling),
            }
        )
        del loaded
    return out


def stage1_ceiling(
    resolved: Any,
    forward: Any,
    input_hw: tuple[int, int],
    batch: int,
    job: dict[str, Any],
    device: Any,
    dtype: Any,
) -> float:
    """Stage 1's forward-only images/s over all its views: the inputs per image the job
    ran at each size (``inputs_by_size`` of its ``stage1_inputs``), each at its own rate
    (a network without views: one input of its own size)."""
    from model.inference.throughput import forward_items_per_s, random_batch
    from model.inference.zoo_stage1 import View, inputs_by_size

    views = resolved.settings.views or (View(input_hw[0]),)
    per_image = inputs_by_size(views, job.get("stage1_inputs", job["images"]) / job["images"])
    seconds = 0.0
    for size, inputs in per_image.items():
        example = random_batch(batch, (size, size), device)
        seconds += inputs / forward_items_per_s(forward, example, device, dtype)
    return 1.0 / seconds


def arithmetic_variants(device: str, compile_networks: bool) -> list[dict[str, Any]]:
    """Forward-only items/s of each default network in each layout and precision (and
    compiled with ``torch.compile``): the measurements behind ``for_inference`` and
    ``resolve_precision`` (``model/inference/devices.py``)."""
    import torch

    from model.inference.devices import resolve_device
    from model.inference.throughput import forward_items_per_s, random_batch
    from model.networks.resolve import resolve_stage
    from pipeline.graph.resources import AUTO_BATCH
    from schemas.spec import JobSpec

    spec = JobSpec.parse({"inputs": ["/bench"], "output": "/bench"})
    torch_device = resolve_device(device)
    low = torch.float16 if device == "cuda" else torch.bfloat16
    variants = [
        ("float32", False, None, False),
        ("float32", True, None, False),
        (str(low).replace("torch.", ""), True, low, False),
    ]
    if compile_networks:
        variants.append((str(low).replace("torch.", ""), True, low, True))
    out = []
    for kind, stage in (("stage1", spec.stage1), ("refiner", spec.refiner)):
        batch = AUTO_BATCH[device][kind] if kind == "stage1" else 16
        for precision, channels_last, dtype, compiled in variants:
            resolved = resolve_stage(kind, spec, check=False)
            loaded = resolved.load(torch_device)
            net = loaded.net
            if not channels_last:
                net = net.to(memory_format=torch.contiguous_format)
            hw = resolved.adapter.input_hw(loaded)
            inputs = random_batch(batch, hw, torch_device, channels_last)
            started = time.perf_counter()
            if compiled:
                net = torch.compile(net)
            try:
                rate = forward_items_per_s(net, inputs, torch_device, dtype)
                error = ""
            except Exception as exc:  # a compiler missing here is a result, not a crash
                rate, error = 0.0, f"{type(exc).__name__}: {str(exc)[:200]}"
            entry = {
                "stage": kind,
                "network": stage.model,
                "batch": batch,
                "precision": precision,
                "channels_last": channels_last,
                "compiled": compiled,
                "items_per_s": round(rate, 2),
                "seconds_incl_compile": round(time.perf_counter() - started, 1),
            }
            out.append({**entry, "error": error} if error else entry)
            print(f"detpose bench: variant {entry}", flush=True)
    return out


def machine_description() -> dict[str, Any]:
    import torch

    from model.inference.devices import cpu_has_native_bfloat16

    cpu_model = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True,
            cwd=Path(__file__).resolve().parent,
        ).stdout.strip()  # fmt: skip
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
            text=True, check=True, cwd=Path(__file__).resolve().parent,
        ).stdout.strip()  # fmt: skip
        commit += "+changes" if dirty else ""
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown"
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        "commit": commit,
        "cpu_model": cpu_model,
        "cpu_cores": os.cpu_count(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cpu_native_bfloat16": cpu_has_native_bfloat16(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none",
    }


def _merge_results(path: Path, new: dict[str, Any]) -> dict[str, Any]:
    """``new`` over what ``path`` holds, so that partial runs (``--train``, ``--filter-only``)
    keep the other sections."""
    old = json.loads(path.read_text()) if path.exists() else {}
    return {**old, **new}


def cmd_bench(args: argparse.Namespace) -> int:
    import torch

    out_dir = Path(args.output)
    out_dir.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"machine": machine_description()}
    print("detpose bench: filter micro-benchmark ...", flush=True)
    results["filter"] = benchmark_filter(num_images=args.filter_images)
    if not args.filter_only:
        device = "cuda" if torch.cuda.is_available() else "cpu"
        corpus_dir = Path(args.corpus) if args.corpus else out_dir / "corpus"
        paper_sizes = args.paper_sizes or list(
            DEFAULT_PAPER_SIZES_CUDA if device == "cuda" else DEFAULT_PAPER_SIZES_CPU
        )
        images = sample_corpus(corpus_dir, max([*args.sizes, *paper_sizes]))
        results["device"] = device
        results["streaming"], results["stages"] = [], []
        if not args.no_variants:
            print("detpose bench: arithmetic variants of the default networks ...", flush=True)
            results["variants"] = arithmetic_variants(device, compile_networks=not args.no_compile)
        with tempfile.TemporaryDirectory(prefix="detpose-bench-") as tmp:
            workdir = Path(tmp)
            for name in args.models:
                model_set = {
                    "default": lambda: ModelSet("default", {}),
                    "single-scale": lambda: ModelSet("single-scale", SINGLE_SCALE),
                    "paper": lambda workdir=workdir: paper_model_set(workdir, device),
                }[name]()
                sizes = paper_sizes if name == "paper" else args.sizes
                entries = compare_sizes(model_set, images, sizes, workdir, args.num_cpus)
                results["streaming"] += entries
                print(f"detpose bench: {name} models: forward-only ceilings ...", flush=True)
                results["stages"] += stage_ceilings(model_set, entries[-1], device)
    path = out_dir / "results.json"
    merged = _merge_results(path, results)
    path.write_text(json.dumps(merged, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    print(f"detpose bench: results in {path}")
    return 0


def cmd_bench_train(args: argparse.Namespace) -> int:
    """``detpose bench --train``: only the training benchmark, merged into ``results.json``."""
    from jobs.bench.train import benchmark_training

    out_dir = Path(args.output)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "results.json"
    try:
        results = json.loads(path.read_text()) if path.exists() else {}
    except json.JSONDecodeError as exc:
        print(f"detpose bench: {path} is not JSON ({exc}); move it away first", file=sys.stderr)
        return 2
    print("detpose bench: training throughput (stage 1 and refiner) ...", flush=True)
    results["training"] = {"machine": machine_description(), **benchmark_training()}
    path.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results["training"], indent=2))
    print(f"detpose bench: training results in {path} (key 'training')")
    return 0


def cmd_bench_any(args: argparse.Namespace) -> int:
    """``--train`` / ``--driver``: only that benchmark (merged into results.json); else ``cmd_bench``."""
    if args.train:
        return cmd_bench_train(args)
    if args.driver is not None:
        from jobs.bench.driver import cmd_bench_driver

        return cmd_bench_driver(args)
    return cmd_bench(args)


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "bench",
        help="measure the streaming job against a plain loop, the stages against their "
        "forward-only ceilings, and the filter; write bench/results.json",
    )
    p.add_argument("--output", default="bench", help="folder for results.json (default ./bench)")
    p.add_argument(
        "--sizes",
        type=int,
        nargs="+",
        default=list(DEFAULT_SIZES),
        help="corpus sizes (default models)",
    )
    p.add_argument(
        "--paper-sizes",
        type=int,
        nargs="+",
        help="corpus sizes for paper-size DetPoseNet (default: 16 on CPU, 500 2000 on CUDA)",
    )
    p.add_argument(
        "--models",
        nargs="+",
        choices=MODEL_SETS,
        default=list(MODEL_SETS),
        help="model sets to run",
    )
    p.add_argument("--corpus", help="folder for the synthetic images (default OUTPUT/corpus)")
    p.add_argument("--num-cpus", type=int, default=8, help="logical CPUs of the local Ray")
    p.add_argument("--filter-images", type=int, default=200, help="images in the filter benchmark")
    p.add_argument("--filter-only", action="store_true", help="only the filter micro-benchmark")
    p.add_argument(
        "--no-variants", action="store_true", help="skip the layout/precision/compile variants"
    )
    p.add_argument("--no-compile", action="store_true", help="skip the torch.compile variant")
    p.add_argument(
        "--train",
        action="store_true",
        help="only the training benchmark (samples/s vs the forward+backward ceiling); "
        "merged into results.json under 'training'",
    )
    p.add_argument(
        "--driver",
        type=int,
        nargs="*",
        metavar="URIS",
        help="only the driver's peak memory over manifests of missing files with these many "
        "URIs (default 10000 100000 1000000); merged into results.json under 'driver'",
    )
    p.set_defaults(func=cmd_bench_any)
