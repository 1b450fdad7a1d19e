"""``detpose bench``: measured numbers for the README, written to ``bench/results.json``.

Two benchmarks:
- the filter micro-benchmark (stage 2 alone, per image, every mode);
- the streaming job: throughput, per-stage busy time and peak memory (driver plus every
  Ray process, as proportional set size) for growing corpora made from the bundled sample
  photos. Flat peak memory as the corpus grows is what "streaming" means.
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
CORPUS_LONG_SIDE = 480


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


def _pss_bytes(proc: Any) -> tuple[int, int]:
    """``(process, shared)`` proportional set sizes of one process, in bytes.

    PSS splits shared pages among their users, so the tree's sum counts each page once.
    ``shared`` is shared memory (Ray's object store lives there); ``process`` is the rest
    (heaps, libraries, model weights). Reads Linux's ``smaps_rollup``; elsewhere psutil.
    """
    rollup = Path(f"/proc/{proc.pid}/smaps_rollup")
    if not rollup.exists():
        return int(proc.memory_full_info().pss), 0
    fields = {}
    for line in rollup.read_text().splitlines():
        name, _, rest = line.partition(":")
        if name in ("Pss", "Pss_Shmem"):
            fields[name] = int(rest.split()[0]) * 1024
    shared = fields.get("Pss_Shmem", 0)
    return fields.get("Pss", 0) - shared, shared


class MemorySampler:
    """Samples the summed PSS of a process tree every ``interval_s``; keeps the peaks."""

    def __init__(self, root_pid: int, interval_s: float = 0.5) -> None:
        import psutil

        self._root = psutil.Process(root_pid)
        self._interval = interval_s
        self._stop = threading.Event()
        self.peak_total = self.peak_process = self.peak_shared = 0
        self.samples = 0
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _sample(self) -> tuple[int, int]:
        import psutil

        process = shared = 0
        for proc in [self._root, *self._root.children(recursive=True)]:
            try:
                own, shm = _pss_bytes(proc)
            except (psutil.NoSuchProcess, psutil.AccessDenied, OSError):
                continue  # exited between the listing and the read
            process, shared = process + own, shared + shm
        return process, shared

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                process, shared = self._sample()
            except Exception:
                continue
            self.peak_total = max(self.peak_total, process + shared)
            self.peak_process = max(self.peak_process, process)
            self.peak_shared = max(self.peak_shared, shared)
            self.samples += 1

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
        "peak_pss_mib": round(sampler.peak_total / 2**20, 1),
        "peak_process_pss_mib": round(sampler.peak_process / 2**20, 1),
        "peak_shared_pss_mib": round(sampler.peak_shared / 2**20, 1),
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
        images = sample_corpus(corpus_dir, max(sizes))
        results["streaming"] = []
        with tempfile.TemporaryDirectory(prefix="detpose-bench-") as tmp:
            for size in sizes:
                print(f"detpose bench: streaming job over {size} images ...", flush=True)
                results["streaming"].append(
                    run_streaming_job(images[:size], Path(tmp), f"bench-{size}", args.num_cpus)
                )
        small, large = results["streaming"][0], results["streaming"][-1]
        results["memory_ratio_largest_vs_smallest"] = {
            key: round(large[key] / small[key], 3) if small[key] else None
            for key in ("peak_pss_mib", "peak_process_pss_mib", "peak_shared_pss_mib")
        }
    path = out_dir / "results.json"
    path.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    print(f"detpose bench: results in {path}")
    return 0


def cmd_bench_any(args: argparse.Namespace) -> int:
    """``--driver``: the driver-memory benchmark (``jobs.bench_driver``); else ``cmd_bench``."""
    if args.driver is not None:
        from jobs.bench_driver import cmd_bench_driver

        return cmd_bench_driver(args)
    return cmd_bench(args)


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
    p.add_argument(
        "--driver",
        type=int,
        nargs="*",
        metavar="URIS",
        help="only the driver's peak memory over manifests of missing files with these many "
        "URIs (default 10000 100000 1000000); merged into results.json under 'driver'",
    )
    p.set_defaults(func=cmd_bench_any)
