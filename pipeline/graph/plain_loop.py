"""The same job as a plain single-process loop, without Ray: the benchmark's baseline.

Batch by batch it runs exactly the callables the Ray graph maps (``decode_batch``, the
stage-1 actor class, ``filter_batch``, the refiner actor class) with the same batch sizes,
and writes the same Parquet rows. What the streaming job must beat is this loop's speed on
the same machine; what it adds (overlapping stages, more processes, Ray's own work) is
what the comparison measures.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from model.inference.devices import resolve_device
from pipeline.graph.actors import CoarseStage, RefineStage
from pipeline.graph.batches import Batch
from pipeline.graph.model_stages import unchecked_stages
from pipeline.graph.resources import max_crops_per_forward, resolved_batch_sizes
from pipeline.graph.tasks import decode_batch, filter_batch
from schemas.spec import JobSpec


@dataclass
class LoopRun:
    """What one plain-loop run did and when: ``progress`` holds ``(seconds since start,
    images done)`` after each batch; ``setup_s`` is the time to load both models."""

    images: int = 0
    setup_s: float = 0.0
    wall_s: float = 0.0
    progress: list[tuple[float, int]] = field(default_factory=list)
    seconds_by_step: dict[str, float] = field(default_factory=dict)


def _slices(count: int, size: int) -> list[slice]:
    return [slice(start, min(start + size, count)) for start in range(0, count, size)]


def _concat(parts: list[Batch]) -> Batch:
    if len(parts) == 1:
        return parts[0]
    out: Batch = {}
    for key in parts[0]:
        values = [part[key] for part in parts]
        if values[0].dtype == object:  # ragged images: keep one object per row
            joined = np.empty(sum(len(v) for v in values), dtype=object)
            joined[:] = [item for v in values for item in v]
            out[key] = joined
        else:
            out[key] = np.concatenate(values)
    return out


def run_plain_loop(
    spec: JobSpec, uris: list[str], out_dir: Path, device_sync: Callable[[], None] | None = None
) -> LoopRun:
    """Annotate ``uris`` in this process, stage after stage per batch; Parquet into ``out_dir``.

    Decoding runs in batches of the decode batch size, stage 1 and the filter per stage-1
    batch, the refiner per refiner batch: the sizes the streaming job uses.
    ``device_sync`` (e.g. ``torch.cuda.synchronize``) makes the step timings honest on GPUs.
    """
    on_gpu = resolve_device(spec.device).type == "cuda"
    sizes = resolved_batch_sizes(spec, on_gpu)
    sync = device_sync or (lambda: None)
    run = LoopRun(seconds_by_step={"decode": 0.0, "stage1": 0.0, "filter": 0.0, "refine": 0.0})
    start = time.perf_counter()
    stages = unchecked_stages(spec)
    coarse = CoarseStage(stages["stage1"])
    refine = RefineStage(stages["refiner"], spec.filter, max_crops_per_forward(on_gpu))
    run.setup_s = time.perf_counter() - start
    out_dir.mkdir(parents=True, exist_ok=True)

    def timed(step: str, fn: Callable[[], Batch]) -> Batch:
        t = time.perf_counter()
        result = fn()
        sync()
        run.seconds_by_step[step] += time.perf_counter() - t
        return result

    for index, chunk in enumerate(_slices(len(uris), sizes.stage1)):
        names = np.array(uris[chunk], dtype=object)
        decoded = timed(
            "decode",
            lambda names=names: _concat(
                [
                    decode_batch({"uri": names[part]}, spec.decode, spec.storage)
                    for part in _slices(len(names), sizes.decode)
                ]
            ),
        )
        proposals = timed("stage1", lambda decoded=decoded: coarse(decoded))
        persons = timed("filter", lambda proposals=proposals: filter_batch(proposals, spec.filter))
        for part in _slices(len(names), sizes.refiner):
            rows = {key: value[part] for key, value in persons.items()}
            t = time.perf_counter()
            table = refine(rows)
            pq.write_table(table, out_dir / f"part-{index:06d}-{part.start:04d}.parquet")
            sync()
            run.seconds_by_step["refine"] += time.perf_counter() - t
        run.images += len(names)
        run.progress.append((time.perf_counter() - start, run.images))
    run.wall_s = time.perf_counter() - start
    return run
