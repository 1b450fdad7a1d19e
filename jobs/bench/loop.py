"""The plain-loop baseline of ``detpose bench``, run in a child process so that its start-up
and memory are measured like the streaming job's:

    python -m jobs.bench.loop SPEC.yaml MANIFEST.txt OUT_DIR RESULT.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from model.inference.devices import resolve_device
from model.inference.throughput import synchronizer
from pipeline.graph.plain_loop import run_plain_loop
from schemas.spec import JobSpec


def main(argv: list[str]) -> int:
    spec_path, manifest, out_dir, result_path = argv
    spec = JobSpec.from_yaml(spec_path, {"manifest": manifest})
    uris = [line for line in Path(manifest).read_text().splitlines() if line]
    run = run_plain_loop(spec, uris, Path(out_dir), synchronizer(resolve_device(spec.device)))
    result = {
        "images": run.images,
        "setup_s": round(run.setup_s, 3),
        "wall_s": round(run.wall_s, 3),
        "seconds_by_step": {k: round(v, 3) for k, v in run.seconds_by_step.items()},
        "progress": [[round(t, 3), n] for t, n in run.progress],
    }
    Path(result_path).write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
