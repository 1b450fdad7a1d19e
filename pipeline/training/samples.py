"""Training samples as a Ray Data stream: images read from any fsspec/S3 URI, decoded and
augmented in Ray Data actors, each training worker iterating its own shard.

Row ``g`` of a run is the ``g``-th sample position of the whole run: epoch ``g // n`` of the
``n`` samples, sample ``permutation(seed, epoch)[g % n]``, augmented from its own random
stream ``(seed, g)``, at training progress ``(g // global batch) / steps``. A sample's
content therefore depends on its position only, not on which worker or process makes it:
a run resumed at step ``s`` streams rows from ``s × global batch`` on and sees the very
samples it would have seen, and 1 or N workers train on the same global batches.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import ray
from ray.data import ActorPoolStrategy, Dataset

from model.training.datasets import CocoImage, SampleKey
from model.training.recipe import TrainingConfig, TrainingRecipe

# Rows one Ray Data call makes: small, so samples reach the workers early and memory stays
# a few batches deep whatever the dataset's size.
SAMPLE_BATCH_ROWS = 4
SAMPLE_NUM_CPUS = 0.25  # below 1: the training workers need the cores (docs/throughput.md)


class SampleMaker:
    """A Ray Data actor that turns row positions into training samples (numpy columns)."""

    def __init__(
        self,
        recipe: TrainingRecipe,
        records: Sequence[CocoImage],
        cfg: TrainingConfig,
        augment: bool,
        seed: int,
        steps: int,
        global_batch: int,
        storage_options: Mapping[str, Any],
    ) -> None:
        self.dataset: Any = recipe.dataset(records, cfg, augment, seed, storage_options)
        self.seed, self.steps, self.global_batch = seed, steps, global_batch
        self.count = len(self.dataset)
        self.takes_progress = getattr(self.dataset, "takes_progress", False)

    def sample_at(self, position: int) -> dict[str, np.ndarray]:
        """The sample at run position ``position``."""
        epoch, slot = divmod(position, self.count)
        index = int(np.random.default_rng([self.seed, epoch]).permutation(self.count)[slot])
        self.dataset.reseed(position)
        progress = min(position // self.global_batch / max(self.steps, 1), 1.0)
        key: Any = SampleKey(index, progress) if self.takes_progress else index
        return {name: value.numpy() for name, value in self.dataset[key].items()}

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        samples = [self.sample_at(int(p)) for p in batch["position"]]
        return {name: np.stack([s[name] for s in samples]) for name in samples[0]}


def sample_stream(
    recipe: TrainingRecipe,
    records: Sequence[CocoImage],
    cfg: TrainingConfig,
    augment: bool,
    seed: int,
    steps: int,
    start_step: int,
    storage_options: Mapping[str, Any],
    makers: int = 1,
) -> Dataset:
    """The rows of steps ``start_step .. steps`` (``cfg.batch_size`` per step), made by
    ``makers`` Ray Data actors that each hold the records once."""
    first = start_step * cfg.batch_size
    rows = max(steps - start_step, 0) * cfg.batch_size
    positions = ray.data.range(rows).map_batches(
        _offset, fn_kwargs={"first": first}, batch_format="numpy", num_cpus=SAMPLE_NUM_CPUS
    )
    return positions.map_batches(
        SampleMaker,
        fn_constructor_kwargs={
            "recipe": recipe,
            "records": list(records),
            "cfg": cfg,
            "augment": augment,
            "seed": seed,
            "steps": steps,
            "global_batch": cfg.batch_size,
            "storage_options": dict(storage_options),
        },
        compute=ActorPoolStrategy(size=makers),
        batch_size=SAMPLE_BATCH_ROWS,
        batch_format="numpy",
        num_cpus=SAMPLE_NUM_CPUS,
    )


def _offset(batch: dict[str, np.ndarray], first: int) -> dict[str, np.ndarray]:
    return {"position": batch["id"] + first}
