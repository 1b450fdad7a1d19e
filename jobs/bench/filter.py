"""Micro-benchmark of the filter stage (Algorithm 1 and its baselines) on synthetic scenes."""

from __future__ import annotations

import time

import numpy as np

from model.filtering.filters import filter_proposals
from model.filtering.synthetic_proposals import random_scene
from schemas.filtering import FilterSpec

BENCH_IMAGE_WH = (640, 480)


def benchmark_filter(
    num_images: int = 200,
    num_proposals: int = 100,
    peaks_per_keypoint: int = 20,
    seed: int = 0,
) -> dict[str, dict[str, float]]:
    """Time ``filter_proposals`` per image in every mode on the same random scenes.

    Scene generation is not timed. Each image is filtered once per mode, modes interleaved
    so that machine noise hits them alike.

    Args:
        num_images: scenes (images) timed.
        num_proposals: box proposals per image.
        peaks_per_keypoint: peak slots per keypoint type (17 x this peaks per image).
        seed: seed of the scene generator.

    Returns:
        ``{mode: {"mean_ms", "p50_ms", "p95_ms", "persons_per_image"}}``.
    """
    rng = np.random.default_rng(seed)
    scenes = [
        random_scene(
            rng, BENCH_IMAGE_WH, num_proposals=num_proposals, peaks_per_keypoint=peaks_per_keypoint
        )[0]
        for _ in range(num_images)
    ]
    specs = {mode: FilterSpec(mode=mode) for mode in ("coarse", "nms", "oks_nms", "none")}
    times: dict[str, list[float]] = {mode: [] for mode in specs}
    persons: dict[str, int] = dict.fromkeys(specs, 0)
    for props in scenes:
        for mode, spec in specs.items():
            start = time.perf_counter()
            out = filter_proposals(props, spec, BENCH_IMAGE_WH)
            times[mode].append((time.perf_counter() - start) * 1e3)
            persons[mode] += len(out)
    return {
        mode: {
            "mean_ms": float(np.mean(ms)),
            "p50_ms": float(np.percentile(ms, 50)),
            "p95_ms": float(np.percentile(ms, 95)),
            "persons_per_image": persons[mode] / max(num_images, 1),
        }
        for mode, ms in times.items()
    }
