"""What the benchmark watches while a job runs in a child process: the memory and CPU time
of the whole process tree (driver, Ray's own processes, its workers), and the rows written.

Memory is proportional set size (PSS): shared pages are split among their users, so the
tree's sum counts each page once. CPU time is split by role, which makes Ray's own cost
(raylet, GCS, the driver's scheduling) visible next to the work of the stages.
"""

from __future__ import annotations

import contextlib
import threading
import time
from pathlib import Path
from typing import Any

import fsspec

from pipeline.graph.progress import count_written_rows

# Ray's own processes, by the program or script they run (workers run default_worker.py,
# and rename themselves "ray::<actor or task>").
RAY_SYSTEM_PROGRAMS = frozenset(
    {"raylet", "gcs_server", "dashboard.py", "agent.py", "log_monitor.py", "monitor.py",
     "runtime_env_agent.py", "setup_worker.py"}
)  # fmt: skip


def pss_bytes(pid: int) -> tuple[int, int]:
    """``(process, shared)`` PSS of one process, in bytes. ``shared`` is shared memory (Ray's
    object store lives there); ``process`` is the rest (heaps, libraries, model weights).
    Reads Linux's ``smaps_rollup``; elsewhere psutil's PSS, all of it as ``process``."""
    rollup = Path(f"/proc/{pid}/smaps_rollup")
    if not rollup.exists():
        import psutil

        return int(psutil.Process(pid).memory_full_info().pss), 0
    fields = {}
    for line in rollup.read_text().splitlines():
        name, _, rest = line.partition(":")
        if name in ("Pss", "Pss_Shmem"):
            fields[name] = int(rest.split()[0]) * 1024
    shared = fields.get("Pss_Shmem", 0)
    return fields.get("Pss", 0) - shared, shared


def process_role(cmdline: list[str], is_root: bool) -> str:
    """``driver`` (the job's own process), ``ray_system`` (raylet, GCS, monitors) or
    ``workers`` (Ray workers running the stages, and anything else)."""
    if is_root:
        return "driver"
    programs = {Path(arg).name for arg in cmdline[:3] if not arg.startswith("-")}
    return "ray_system" if programs & RAY_SYSTEM_PROGRAMS else "workers"


def process_title(cmdline: list[str], role: str) -> str:
    """A short name for a process: a Ray worker's title (``ray::...``), Ray's program name,
    or the role."""
    if cmdline and cmdline[0].startswith("ray::"):
        return cmdline[0].split(" ")[0]
    if role == "ray_system":
        return next((Path(a).name for a in cmdline[:3] if not a.startswith("-")), role)
    return role


class PeriodicSampler:
    """Calls ``sample()`` every ``interval_s`` on a daemon thread while used as a context
    manager; a failing sample (a process that just ended) is skipped. ``finish()`` runs once
    after the thread stops."""

    def __init__(self, interval_s: float) -> None:
        self._interval = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def sample(self) -> None:
        raise NotImplementedError

    def finish(self) -> None:
        """Runs after the last periodic sample; nothing by default."""

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self.sample()
            except Exception:
                continue

    def __enter__(self):  # noqa: ANN204 - returns the subclass
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        with contextlib.suppress(Exception):
            self.finish()


class TreeProbe(PeriodicSampler):
    """Samples a process tree every ``interval_s``: peak PSS (total, process, shared), CPU
    seconds per role, and, given ``rows_folder``, the rows durably written over time."""

    def __init__(
        self, root_pid: int, interval_s: float = 0.5, rows_folder: Path | None = None
    ) -> None:
        import psutil

        super().__init__(interval_s)
        self._root = psutil.Process(root_pid)
        self._rows_folder = rows_folder
        self._footers: dict[tuple[str, int], int] = {}
        self._started = time.perf_counter()
        self.peak_total = self.peak_process = self.peak_shared = 0
        self.samples = 0
        self.cpu_by_pid: dict[int, tuple[str, float]] = {}
        self.title_by_pid: dict[int, str] = {}
        self.rows_over_time: list[tuple[float, int]] = []

    def sample(self) -> None:
        self._sample_tree()
        self._sample_rows()

    def finish(self) -> None:
        self._sample_rows()  # the last rows, written after the last periodic sample

    def _sample_tree(self) -> None:
        import psutil

        process = shared = 0
        for proc in [self._root, *self._root.children(recursive=True)]:
            try:
                own, shm = pss_bytes(proc.pid)
                cpu = proc.cpu_times()
                role = process_role(proc.cmdline(), proc.pid == self._root.pid)
            except (psutil.NoSuchProcess, psutil.AccessDenied, OSError):
                continue  # exited between the listing and the read
            self.cpu_by_pid[proc.pid] = (role, cpu.user + cpu.system)
            self.title_by_pid[proc.pid] = process_title(proc.cmdline(), role)
            process, shared = process + own, shared + shm
        self.peak_total = max(self.peak_total, process + shared)
        self.peak_process = max(self.peak_process, process)
        self.peak_shared = max(self.peak_shared, shared)
        self.samples += 1

    def _sample_rows(self) -> None:
        if self._rows_folder is None:
            return
        fs = fsspec.filesystem("file")
        rows = count_written_rows(fs, str(self._rows_folder), self._footers)
        if not self.rows_over_time or rows != self.rows_over_time[-1][1]:
            self.rows_over_time.append((time.perf_counter() - self._started, rows))

    def cpu_seconds(self) -> dict[str, float]:
        """CPU seconds per role (as last sampled: a process's final half second may be
        missed), and their total."""
        out = {"driver": 0.0, "ray_system": 0.0, "workers": 0.0}
        for role, seconds in self.cpu_by_pid.values():
            out[role] += seconds
        out["total"] = sum(out.values())
        return {k: round(v, 2) for k, v in out.items()}

    def cpu_seconds_by_process(self) -> dict[str, float]:
        """CPU seconds per process title (a Ray worker names the actor or task it ran last,
        e.g. ``ray::MapWorker(MapBatches(RefineStage))``): the profile of a job's CPU."""
        out: dict[str, float] = {}
        for pid, (_, seconds) in self.cpu_by_pid.items():
            title = self.title_by_pid.get(pid, "?")
            out[title] = out.get(title, 0.0) + seconds
        return {k: round(v, 2) for k, v in sorted(out.items(), key=lambda kv: -kv[1])}


# Fewer observations than this inside the window (a short run written in a few blocks)
# give no steady-state rate.
MIN_STEADY_OBSERVATIONS = 5


def steady_rate(
    progress: list[tuple[float, int]], total: int, low: float = 0.1, high: float = 0.9
) -> float:
    """Rows per second between the moments ``low`` and ``high`` of ``total`` rows were done:
    the steady state, without start-up (model loading, Ray's ramp-up) or the drain at the end.

    ``progress``: ``(seconds, rows done)`` in time order. Returns 0 when the window holds
    fewer than ``MIN_STEADY_OBSERVATIONS`` observations.
    """
    first = next((i for i, (_, n) in enumerate(progress) if n >= low * total), None)
    last = next((i for i, (_, n) in enumerate(progress) if n >= high * total), None)
    if first is None or last is None or last - first < MIN_STEADY_OBSERVATIONS - 1:
        return 0.0
    (t0, n0), (t1, n1) = progress[first], progress[last]
    return (n1 - n0) / (t1 - t0) if t1 > t0 else 0.0


def describe_peaks(probe: TreeProbe) -> dict[str, Any]:
    return {
        "peak_pss_mib": round(probe.peak_total / 2**20, 1),
        "peak_process_pss_mib": round(probe.peak_process / 2**20, 1),
        "peak_shared_pss_mib": round(probe.peak_shared / 2**20, 1),
        "memory_samples": probe.samples,
    }
