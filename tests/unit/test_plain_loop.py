"""The plain-loop baseline runs the job's own stage callables without Ray: one row per
image, bad images included, Parquet like the job's, timings that add up."""

from __future__ import annotations

import pyarrow.parquet as pq

from jobs.run_cmd import sample_images
from pipeline.graph.plain_loop import run_plain_loop
from schemas.output import STATUS_ERROR, STATUS_OK
from schemas.spec import JobSpec

DEMO_MODELS = {"stage1": {"model": "detposenet"}, "refiner": {"model": "detposenet"}}


def test_every_image_leaves_one_row_and_the_batches_are_timed(tmp_path):
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8 not a jpeg")
    uris = [*sample_images()[:3], str(tmp_path / "missing.jpg"), str(corrupt)]
    spec = JobSpec.parse(
        {
            "inputs": uris,
            "output": str(tmp_path / "o"),
            **DEMO_MODELS,
            "stage1": {"model": "detposenet", "batch_size": 2},
            "refiner": {"model": "detposenet", "batch_size": 1},
        }
    )
    run = run_plain_loop(spec, uris, tmp_path / "rows")

    table = pq.read_table(tmp_path / "rows")
    assert sorted(table.column("uri").to_pylist()) == sorted(uris)
    status = dict(
        zip(table.column("uri").to_pylist(), table.column("status").to_pylist(), strict=True)
    )
    assert [status[u] for u in uris] == [STATUS_OK] * 3 + [STATUS_ERROR] * 2
    # Stage-1 batches of 2 images: 2 + 2 + 1, each recorded when done.
    assert run.images == 5
    assert [n for _, n in run.progress] == [2, 4, 5]
    times = [t for t, _ in run.progress]
    assert times == sorted(times) and times[-1] <= run.wall_s
    assert set(run.seconds_by_step) == {"decode", "stage1", "filter", "refine"}
    assert all(v > 0 for v in run.seconds_by_step.values())
    assert run.setup_s + sum(run.seconds_by_step.values()) <= run.wall_s
