"""Write the fixed inputs and the requests file for ``make_goldens.mjs``.

    python tests/zoo_reference/prepare_inputs.py PACKAGE_DIR OUT_DIR

Each zoo network gets one real photo from ``tests/data`` letterboxed to its input size
(uint8 NHWC bytes, ``NAME.input.bin``); the requests ask for the heads DetPose imports and
the graph's own decoded output. ``make goldens`` runs this, then the Node tool, and copies
the results into ``tests/data/zoo/``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from model.codecs.image import letterbox  # noqa: E402
from model.zoo.catalog import NETWORKS  # noqa: E402

# A crowded photo for the bottom-up model, a single person for the top-down ones.
PHOTOS = {
    "bottom_up": ROOT / "tests/data/crowdpose_sample/images/106848.jpg",
    "single_pose": ROOT / "tests/data/coco_sample/images/000000000785.jpg",
}
# Node names of the graphs' raw inputs and dtypes (before the cut DetPose makes).
GRAPH_INPUTS = {
    "movenet-multipose": "input",
    "movenet-thunder": "input",
    "movenet-lightning": "input",
}


def main(package_dir: Path, out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    requests = []
    for name, network in sorted(NETWORKS.items()):
        photo = np.asarray(Image.open(PHOTOS[network.role]).convert("RGB"))
        square, _ = letterbox(photo, network.input_size)
        input_path = out_dir / f"{name}.input.bin"
        input_path.write_bytes(square[None].tobytes())
        requests.append(
            {
                "model": name,
                "input": str(input_path),
                "input_node": GRAPH_INPUTS[name],
                "input_shape": [1, network.input_size, network.input_size, 3],
                "input_dtype": "int32",
                "nodes": [*network.outputs.values(), *network.reference_nodes],
                "output": name,
            }
        )
    spec = {"package_dir": str(package_dir), "out_dir": str(out_dir), "requests": requests}
    (out_dir / "requests.json").write_text(json.dumps(spec, indent=1) + "\n")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(Path(sys.argv[1]).resolve(), Path(sys.argv[2]).resolve())
