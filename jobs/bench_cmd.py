"""``detpose bench``: measured numbers for the README, written to ``bench/results.json``.

Two benchmarks:
- the filter micro-benchmark (stage 2 alone, per image, every mode);
- the streaming job: throughput, per-stage busy time and peak memory (driver plus every
  Ray process, as proportional set size) for growing corpora of synthetic images. Flat
  peak memory as the corpus grows is what "streaming" means.
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
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from jobs.bench_filter import benchmark_filter

DEFAULT_SIZES = (500, 2000)
IMAGE_SIZE = (320, 240)


def synthetic_corpus(folder: Path, count: int, seed: int = 0) -> list[str]:
    """``count`` small JPEGs of random stick figures (re-used when already there)."""
    from PIL import Image, ImageDraw

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        path = folder / f"img_{i:05d}.jpg"
        paths.append(str(path))
        if path.exists():
            continue
        width, height = IMAGE_SIZE
        img = Image.fromarray(rng.integers(40, 220, (height, width, 3), dtype=np.uint8))
        draw = ImageDraw.Draw(img)
        for _ in range(int(rng.integers(1, 5))):
            x, y = rng.uniform(0.1, 0.9) * width, rng.uniform(0.2, 0.8) * height
            s = rng.uniform(0.1, 0.3) * height
            draw.line((x, y - s, x, y + s), fill=(0, 0, 0), width=4)
            draw.ellipse((x - s / 4, y - 1.5 * s, x + s / 4, y - s), fill=(230, 180, 150))
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=85)
        path.write_bytes(buf.getvalue())
    return paths


def _pss_bytes(proc: Any) -> int:
    """Proportional set size: shared pages (Ray's object store) split among their users.

    Reads Linux's cheap ``smaps_rollup``; elsewhere falls back to psutil's full scan.
    """
    rollup = Path(f"/proc/{proc.pid}/smaps_rollup")
    if rollup.exists():
        for line in rollup.read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    return int(proc.memory_full_info().pss)


class MemorySampler:
    """Samples the summed PSS of a process tree every ``interval_s``; keeps the peak."""

    def __init__(self, root_pid: int, interval_s: float = 0.5) -> None:
        import psutil

        self._root = psutil.Process(root_pid)
        self._interval = interval_s
        self._stop = threading.Event()
        self.peak_bytes = 0
        self.samples = 0
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _total(self) -> int:
        import psutil

        total = 0
        for proc in [self._root, *self._root.children(recursive=True)]:
            try:
                total += _pss_bytes(proc)
            except (
                psutil.NoSuchProcess,
                psutil.AccessDenied,
                FileNotFoundError,
                ProcessLookupError,
            ):
                continue
        return total

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self.peak_bytes = max(self.peak_bytes, self._total())
                self.samples += 1
            except Exception:
                continue

    def __enter__(self) -> MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def run_streaming_job(
    images: list[str], workdir: Path, job_id: str, num_cpus: int
) -> dict[str, Any]:
    """Run one job in a fresh process (its own local Ray) and sample its memory tree."""
    manifest = workdir / f"{job_id}.txt"
    manifest.write_text("\n".join(images) + "\n")
    out = workdir / "out"
    cmd = [
        sys.executable, "-m", "jobs.cli", "run", "--manifest", str(manifest), "--output", str(out),
        "--job-id", job_id, "--num-cpus", str(num_cpus), "--progress-interval", "30",
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    started = time.perf_counter()
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    with MemorySampler(proc.pid) as sampler:
        output, _ = proc.communicate()
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark job {job_id} failed:\n{output[-3000:]}")
    stats = json.loads((out / job_id / "stats.json").read_text())
    return {
        "images": len(images),
        "process_wall_s": round(wall, 2),
        "job_wall_s": round(stats["wall_s"], 2),
        "images_per_s": round(stats["images_per_s"], 3),
        "peak_pss_mib": round(sampler.peak_bytes / 2**20, 1),
        "memory_samples": sampler.samples,
        "persons": stats["persons"],
        "refinement_runs_per_person": round(stats["refinement_runs_per_person"], 3),
        "stages": [
            {
                "name": s["name"],
                "busy_s": round(s["busy_s"], 2),
                "rows_per_s": round(s["rows_per_s"], 2),
            }
            for s in stats["stages"]
        ],
        "weights": stats["weights"],
    }


def machine_description() -> dict[str, Any]:
    import torch

    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        "cpu_cores": os.cpu_count(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none",
    }


def cmd_bench(args: argparse.Namespace) -> int:
    out_dir = Path(args.output)
    out_dir.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"machine": machine_description()}
    print("detpose bench: filter micro-benchmark ...", flush=True)
    results["filter"] = benchmark_filter(num_images=args.filter_images)
    if not args.filter_only:
        sizes = sorted(args.sizes)
        corpus_dir = Path(args.corpus) if args.corpus else out_dir / "corpus"
        images = synthetic_corpus(corpus_dir, max(sizes))
        results["streaming"] = []
        with tempfile.TemporaryDirectory(prefix="detpose-bench-") as tmp:
            for size in sizes:
                print(f"detpose bench: streaming job over {size} images ...", flush=True)
                results["streaming"].append(
                    run_streaming_job(images[:size], Path(tmp), f"bench-{size}", args.num_cpus)
                )
        small, large = results["streaming"][0], results["streaming"][-1]
        results["memory_ratio_largest_vs_smallest"] = round(
            large["peak_pss_mib"] / small["peak_pss_mib"], 3
        )
    path = out_dir / "results.json"
    path.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    print(f"detpose bench: results in {path}")
    return 0


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "bench", help="measure the filter and the streaming job; write bench/results.json"
    )
    p.add_argument("--output", default="bench", help="folder for results.json (default ./bench)")
    p.add_argument("--sizes", type=int, nargs="+", default=list(DEFAULT_SIZES), help="corpus sizes")
    p.add_argument("--corpus", help="folder for the synthetic images (default OUTPUT/corpus)")
    p.add_argument("--num-cpus", type=int, default=8, help="logical CPUs of the local Ray")
    p.add_argument("--filter-images", type=int, default=200, help="images in the filter benchmark")
    p.add_argument("--filter-only", action="store_true", help="only the filter micro-benchmark")
    p.set_defaults(func=cmd_bench)
