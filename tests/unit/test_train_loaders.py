"""Training batches from loader worker processes: what workers change and what they must not."""

from __future__ import annotations

import contextlib
import threading
from pathlib import Path

import pytest
import torch

from model.networks.detposenet import load_checkpoint
from model.training.datasets import CocoImage, RefinerDataset, SampleKey, load_coco_keypoints
from model.training.loop import (
    _ShuffledBatchIndices,
    device_batches,
    resolve_num_workers,
    train,
    worker_start_method,
)
from schemas.network_configs import RefinerConfig, refiner_preset

CPU = torch.device("cpu")


def _records(sample_data: Path) -> list[CocoImage]:
    root = sample_data / "coco_sample"
    return load_coco_keypoints(str(root / "annotations.json"), str(root / "images"))


def _small_refiner() -> RefinerConfig:
    return refiner_preset("tiny").model_copy(update={"batch_size": 3})


def _first_batches(stream, count: int) -> list[dict[str, torch.Tensor]]:
    with contextlib.closing(stream):
        return [next(stream) for _ in range(count)]


def test_training_with_workers_is_reproducible_and_records_them(
    sample_data: Path, tmp_path: Path
) -> None:
    cfg = _small_refiner()
    histories = []
    for run in ("a", "b"):
        dataset = RefinerDataset(_records(sample_data), cfg, augment=True, seed=3)
        path = tmp_path / f"{run}.pt"
        record = train("refiner", cfg, dataset, 4, path, seed=3, log_every=1, num_workers=2)
        histories.append(record["loss_history"])
        _, _, saved = load_checkpoint(path, "refiner")
        assert saved["num_workers"] == 2 and saved["steps"] == 4
    assert [step for step, _ in histories[0]] == [1, 2, 3, 4]
    assert histories[0] == histories[1]


def test_batch_order_does_not_depend_on_the_worker_count(sample_data: Path) -> None:
    cfg = _small_refiner()
    dataset = RefinerDataset(_records(sample_data), cfg, augment=False)
    serial = _first_batches(device_batches(dataset, 5, 5, CPU, num_workers=0), 6)
    parallel = _first_batches(device_batches(dataset, 5, 5, CPU, num_workers=2), 6)
    for one, other in zip(serial, parallel, strict=True):
        assert one.keys() == other.keys()
        assert all(torch.equal(one[k], other[k]) for k in one)
    # Three epochs of 12 persons in batches of 5: each epoch's short last batch is dropped.
    assert len(dataset) == 12 and all(len(b["crop"]) == 5 for b in parallel)


def test_each_worker_draws_its_own_augmentation(sample_data: Path) -> None:
    """One person, one sample per batch: batches 0 and 1 come from different workers."""
    cfg = _small_refiner()
    record = max(_records(sample_data), key=lambda r: len(r.kpts_xyv))
    best = int((record.kpts_xyv[..., 2] > 0).sum(axis=1).argmax())
    one_person = record._replace(
        boxes_xyxy=record.boxes_xyxy[best : best + 1], kpts_xyv=record.kpts_xyv[best : best + 1]
    )
    dataset = RefinerDataset([one_person], cfg, augment=True)
    assert len(dataset) == 1
    crops = [b["crop"] for b in _first_batches(device_batches(dataset, 1, 0, CPU, 2), 3)]
    assert not torch.equal(crops[0], crops[1]), "two workers drew the same augmentation"
    assert not torch.equal(crops[0], crops[2]), "a worker repeated its augmentation"


def test_workers_start_from_a_process_with_threads(sample_data: Path) -> None:
    """Another thread running: workers come from a forkserver and get the dataset pickled."""
    cfg = _small_refiner()
    dataset = RefinerDataset(_records(sample_data), cfg, augment=False)
    dataset[0]  # fills the image cache, which must not travel to the workers
    expected = _first_batches(device_batches(dataset, 3, 1, CPU, num_workers=0), 2)
    seen: dict[str, object] = {}

    def load() -> None:
        seen["method"] = worker_start_method()
        seen["batches"] = _first_batches(device_batches(dataset, 3, 1, CPU, num_workers=1), 2)

    thread = threading.Thread(target=load)
    thread.start()
    thread.join(timeout=300)
    assert seen["method"] == "forkserver"
    for one, other in zip(expected, seen["batches"], strict=True):  # type: ignore[call-overload]
        assert all(torch.equal(one[k], other[k]) for k in one)


def test_worker_counts() -> None:
    assert resolve_num_workers(0, CPU) == 0
    assert resolve_num_workers(3, CPU) == 3
    assert 0 <= resolve_num_workers("auto", CPU) <= 4
    for bad in (-1, True, "4", 2.0):
        with pytest.raises(ValueError, match="num_workers"):
            resolve_num_workers(bad, CPU)  # type: ignore[arg-type]


def test_the_loader_workers_flag(capsys: pytest.CaptureFixture[str]) -> None:
    from jobs.cli import build_parser

    base = ["train", "stage1", "--annotations", "a.json", "--images", "img", "--out", "c.pt"]
    parser = build_parser()
    assert parser.parse_args(base).loader_workers == "auto"
    assert parser.parse_args(base).workers is None  # no Ray Train unless asked for
    assert parser.parse_args([*base, "--loader-workers", "0"]).loader_workers == 0
    assert parser.parse_args([*base, "--loader-workers", "6"]).loader_workers == 6
    for bad in ("-1", "two", "1.5"):
        with pytest.raises(SystemExit) as exited:
            parser.parse_args([*base, "--loader-workers", bad])
        assert exited.value.code == 2
        assert (
            f"--loader-workers: got '{bad}'; expected 'auto' or an integer >= 0"
            in capsys.readouterr().err
        )


def test_keypoint_masking_is_a_fine_tuning_phase(tmp_path: Path) -> None:
    # paper §III-C4: masking fine-tunes. Before mask_from of the steps a sample is the plain
    # crop; from there on (and for a plain index) the masking patches are pasted.
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(tmp_path / "a.png")
    kpts = np.zeros((1, 17, 3))
    kpts[0, 5:11] = [[20, 20, 2], [40, 20, 2], [18, 32, 2], [42, 32, 2], [16, 44, 2], [44, 44, 2]]
    rec = CocoImage(1, str(tmp_path / "a.png"), 64, 64, np.array([[8.0, 8, 56, 56]]), kpts)
    cfg = refiner_preset("tiny").model_copy(
        update={"flip_prob": 0.0, "rotation_prob": 0.0, "scale_jitter": 0.0,
                "mask_background_prob": 1.0, "mask_duplicate_prob": 1.0, "mask_from": 0.5}
    )  # fmt: skip
    plain = RefinerDataset([rec], cfg, augment=False)[0]["crop"]
    data = RefinerDataset([rec], cfg, augment=True)
    assert torch.equal(data[SampleKey(0, 0.25)]["crop"], plain)
    assert not torch.equal(data[SampleKey(0, 0.5)]["crop"], plain)
    assert not torch.equal(data[0]["crop"], plain)


def test_the_sampler_tags_each_batch_with_its_steps_progress() -> None:
    sampler = _ShuffledBatchIndices(4, 2, torch.Generator().manual_seed(0), phases=(1, 4))
    batches = iter(sampler)
    progress = [{key.progress for key in next(batches)} for _ in range(4)]
    assert progress == [{0.25}, {0.5}, {0.75}, {1.0}]
    untagged = next(iter(_ShuffledBatchIndices(4, 2, torch.Generator().manual_seed(0))))
    assert all(isinstance(i, int) for i in untagged)
