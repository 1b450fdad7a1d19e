"""What the benchmark measures: the steady-state rate, process roles, and a probed child's
memory, CPU time and written rows."""

from __future__ import annotations

import subprocess
import sys

import pytest

from jobs.bench.probe import TreeProbe, process_role, steady_rate


def test_steady_rate_leaves_out_start_up_and_the_drain():
    # 10 s of start-up with nothing done, then 10 rows/s, then a slow tail.
    progress = [(10.0 + i, 10 * i) for i in range(1, 11)] + [(30.0, 101), (40.0, 102)]
    assert steady_rate(progress, 102) == pytest.approx(10.0)
    # The whole-run rate is much lower; the steady rate must not be.
    assert steady_rate(progress, 102) > 102 / 40.0


def test_steady_rate_is_zero_without_a_window():
    assert steady_rate([], 10) == 0.0
    assert steady_rate([(5.0, 10)], 10) == 0.0  # everything arrived at once
    assert steady_rate([(1.0, 3), (2.0, 6), (3.0, 10)], 10) == 0.0  # too few observations


def test_roles_separate_the_driver_rays_own_processes_and_workers():
    assert process_role(["python", "-m", "jobs.cli", "run"], is_root=True) == "driver"
    assert process_role(["/x/ray/core/src/ray/raylet/raylet", "--foo"], False) == "ray_system"
    assert process_role(["/x/ray/core/src/ray/gcs/gcs_server"], False) == "ray_system"
    assert process_role(["ray::MapWorker(MapBatches(RefineStage))"], False) == "workers"
    # A worker's arguments name the raylet's socket: it is still a worker.
    worker = ["/v/bin/python", "/v/ray/_private/workers/default_worker.py", "--raylet-name=/r"]
    assert process_role(worker, False) == "workers"
    agent = ["/v/bin/python", "-u", "/v/ray/dashboard/agent.py", "--node-ip-address=1"]
    assert process_role(agent, False) == "ray_system"


def test_probe_sees_a_childs_memory_cpu_and_rows(tmp_path):
    rows = tmp_path / "rows"
    rows.mkdir()
    script = (
        "import time, numpy as np, pyarrow as pa, pyarrow.parquet as pq\n"
        "block = np.ones(200 * 2**20, np.uint8)\n"  # 200 MiB, touched
        "t = time.process_time()\n"
        "while time.process_time() - t < 1.0: pass\n"  # one CPU second
        f"pq.write_table(pa.table({{'x': list(range(7))}}), r'{rows}/part-0.parquet')\n"
        "time.sleep(1.5)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script])
    with TreeProbe(proc.pid, interval_s=0.1, rows_folder=rows) as probe:
        proc.wait()
    assert probe.samples > 3
    assert probe.peak_total > 200 * 2**20
    cpu = probe.cpu_seconds()
    assert cpu["driver"] >= 0.9 and cpu["total"] == pytest.approx(cpu["driver"], abs=0.01)
    assert probe.rows_over_time[-1][1] == 7
