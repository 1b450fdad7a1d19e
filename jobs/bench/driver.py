"""``detpose bench --driver``: the driver's peak memory as the manifest grows.

Each size is a Parquet manifest of local files that do not exist
(``/nonexistent/img_000000123.jpg``). A missing file becomes an ``error`` row at decode, so
the models never run and the job costs little per URI, while the driver does all it would do
for real images: check the manifest, plan the work, run the job and rebuild the statistics.
Each job runs in a fresh ``detpose run`` process; only that process (the driver) is sampled,
not Ray's own processes or workers. Flat peaks from 10 thousand to 1 million URIs are what
"the driver does not hold the URIs" means.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from jobs.bench.probe import PeriodicSampler

DEFAULT_SIZES = (10_000, 100_000, 1_000_000)
MANIFEST_ROW_GROUP = 100_000
# The cheapest models for rows that never reach them: the small bundled stage 1, the small
# zoo refiner, one proposal and one peak per image, and large batches (less per-batch work).
CHEAP_SPEC = """\
stage1: {model: detposenet, batch_size: 64}
refiner: {model: movenet-lightning, batch_size: 64}
proposals_per_image: 1
peaks_per_keypoint: 1
"""


def missing_uri(index: int) -> str:
    """The ``index``-th URI of a synthetic manifest: a local file that does not exist."""
    return f"/nonexistent/img_{index:09d}.jpg"


def write_missing_manifest(path: Path, count: int) -> Path:
    """A Parquet manifest (``uri`` column) of ``count`` missing local files, written in row
    groups so this process never holds them all."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema([pa.field("uri", pa.string(), nullable=False)])
    with pq.ParquetWriter(path, schema) as writer:
        for start in range(0, count, MANIFEST_ROW_GROUP):
            stop = min(count, start + MANIFEST_ROW_GROUP)
            uris = pa.array([missing_uri(i) for i in range(start, stop)], pa.string())
            writer.write_table(pa.table({"uri": uris}, schema=schema))
    return path


class ProcessPeakSampler(PeriodicSampler):
    """Samples one process (not its children) every ``interval_s``; keeps its peak resident
    set size and proportional set size (psutil's ``memory_full_info``), in bytes."""

    def __init__(self, pid: int, interval_s: float = 0.2) -> None:
        import psutil

        super().__init__(interval_s)
        self._proc = psutil.Process(pid)
        self.peak_rss = self.peak_pss = self.samples = 0

    def sample(self) -> None:
        info = self._proc.memory_full_info()
        self.peak_rss = max(self.peak_rss, info.rss)
        self.peak_pss = max(self.peak_pss, getattr(info, "pss", info.rss))
        self.samples += 1


def run_driver_job(
    manifest: Path, workdir: Path, job_id: str, num_cpus: int, code_dir: Path | None = None
) -> dict[str, Any]:
    """Run ``detpose run --manifest`` in a fresh process and sample that process alone.

    ``code_dir``: run the DetPose checkout there instead of this one (to measure another
    version with the same harness).
    """
    spec = workdir / "driver-bench.yaml"
    spec.write_text(CHEAP_SPEC)
    out = workdir / "out"
    cmd = [
        sys.executable, "-m", "jobs.cli", "run", "--spec", str(spec), "--manifest", str(manifest),
        "--output", str(out), "--job-id", job_id, "--num-cpus", str(num_cpus),
        "--progress-interval", "60",
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    if code_dir is not None:
        env["PYTHONPATH"] = str(code_dir)
    started = time.perf_counter()
    proc = subprocess.Popen(
        cmd,
        env=env,
        cwd=code_dir,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    with ProcessPeakSampler(proc.pid) as sampler:
        output, _ = proc.communicate()
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"driver benchmark job {job_id} failed:\n{output[-3000:]}")
    stats = json.loads((out / job_id / "stats.json").read_text())
    if stats["images_in"] != stats["images_error"] or stats["errors_by_kind"] != {
        "missing": stats["images_in"]
    }:
        raise RuntimeError(f"[internal] {job_id}: expected only 'missing' error rows: {stats}")
    return {
        "uris": stats["images_in"],
        "driver_peak_mib": round(sampler.peak_rss / 2**20, 1),
        "driver_peak_pss_mib": round(sampler.peak_pss / 2**20, 1),
        "wall_s": round(wall, 2),
        "job_wall_s": round(stats["wall_s"], 2),
        "images_per_s": round(stats["images_per_s"], 1),
        "memory_samples": sampler.samples,
    }


def benchmark_driver(
    sizes: list[int], workdir: Path, num_cpus: int, code_dir: Path | None = None
) -> dict[str, Any]:
    """One driver-memory measurement per manifest size, smallest first, and the ratio of the
    largest size's peak to the smallest's."""
    runs = []
    for size in sorted(sizes):
        print(f"detpose bench --driver: {size} URIs ...", flush=True)
        manifest = write_missing_manifest(workdir / f"missing-{size}.parquet", size)
        runs.append(run_driver_job(manifest, workdir, f"driver-{size}", num_cpus, code_dir))
        print(f"detpose bench --driver: {json.dumps(runs[-1])}", flush=True)
    result: dict[str, Any] = {"runs": runs}
    by_size = {run["uris"]: run["driver_peak_mib"] for run in runs}
    if 10_000 in by_size and 1_000_000 in by_size:
        result["driver_memory_ratio_1m_vs_10k"] = round(by_size[1_000_000] / by_size[10_000], 3)
    result["driver_memory_ratio_largest_vs_smallest"] = round(
        runs[-1]["driver_peak_mib"] / runs[0]["driver_peak_mib"], 3
    )
    return result


def merge_result(path: Path, key: str, value: Any) -> None:
    """Set ``key`` in the JSON object at ``path`` (created when absent), keeping the rest."""
    data = json.loads(path.read_text()) if path.exists() else {}
    data[key] = value
    path.write_text(json.dumps(data, indent=2) + "\n")


def machine_now() -> dict[str, Any]:
    """Date, cores, platform and load: the machine may be shared, and load skews wall times."""
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        "cpu_cores": os.cpu_count(),
        "platform": platform.platform(),
        "load_average_1m": round(os.getloadavg()[0], 2),
    }


def cmd_bench_driver(args: argparse.Namespace) -> int:
    sizes = list(args.driver) or list(DEFAULT_SIZES)
    out_dir = Path(args.output)
    out_dir.mkdir(parents=True, exist_ok=True)
    machine = machine_now()
    with tempfile.TemporaryDirectory(prefix="detpose-driver-bench-") as tmp:
        result = benchmark_driver(sizes, Path(tmp), args.num_cpus)
    result["machine"] = {**machine, "load_average_1m_after": round(os.getloadavg()[0], 2)}
    path = out_dir / "results.json"
    merge_result(path, "driver", result)
    print(json.dumps(result, indent=2))
    print(f"detpose bench --driver: results in {path} (key 'driver')")
    return 0
