"""Checkpoints: round trips, and refusal of anything but tensors and primitives."""

from __future__ import annotations

import collections
from pathlib import Path

import pytest
import torch
from pydantic import ValidationError

from model.checkpoint import CheckpointError, read_checkpoint_dict, save_checkpoint
from model.codecs.targets import num_association_channels
from model.keypoints import NUM_KEYPOINTS
from model.nets.refine_net import PoseRefinementNet
from model.networks.detposenet import build_model, load_checkpoint
from model.training.loop import train
from schemas.network_configs import CoarseNetConfig, RefinerConfig, coarse_preset, refiner_preset
from tests.helpers import REPO_ROOT

BUNDLED = {
    "stage1": REPO_ROOT / "model" / "weights" / "stage1_tiny.pt",
    "refiner": REPO_ROOT / "model" / "weights" / "refiner_tiny.pt",
}

RECORD = {
    "steps": 3,
    "losses": {"total": 0.5},
    "loss_history": [[1, 0.9], [3, 0.5]],
    "dataset": "unit",
}


class Payload:
    """Any class: pickling it stores a global that weights-only loading refuses."""

    def __init__(self) -> None:
        self.value = 1


def _tiny_refiner() -> tuple[PoseRefinementNet, RefinerConfig]:
    torch.manual_seed(0)
    cfg = refiner_preset("tiny")
    return PoseRefinementNet(cfg), cfg


def test_round_trip_restores_weights_config_and_record(tmp_path: Path) -> None:
    model, cfg = _tiny_refiner()
    path = tmp_path / "refiner.pt"
    save_checkpoint(path, "refiner", model, cfg, RECORD)
    loaded, loaded_cfg, record = load_checkpoint(path, "refiner")
    assert loaded_cfg == cfg and record == RECORD and not loaded.training
    crops = torch.randn(2, 3, *cfg.input_hw)
    with torch.no_grad():
        torch.testing.assert_close(loaded(crops).heatmaps, model.eval()(crops).heatmaps)


def test_round_trip_through_an_fsspec_uri() -> None:
    cfg = coarse_preset("tiny")
    model = build_model("stage1", cfg)
    save_checkpoint("memory://ckpt/stage1.pt", "stage1", model, cfg, RECORD)
    loaded, loaded_cfg, _ = load_checkpoint("memory://ckpt/stage1.pt", "stage1")
    assert loaded_cfg == cfg
    for key, value in model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[key], value)


def test_a_pickled_object_is_refused_with_a_clear_error(tmp_path: Path) -> None:
    model, cfg = _tiny_refiner()
    path = tmp_path / "evil.pt"
    torch.save(
        {"format": 1, "kind": "refiner", "config": cfg.model_dump(mode="json"),
         "state_dict": model.state_dict(), "record": {"x": Payload()}},
        path,
    )  # fmt: skip
    with pytest.raises(
        CheckpointError, match=r"evil\.pt: refused.*tensors and primitives.*Payload"
    ):
        load_checkpoint(path, "refiner")
    whole_model = tmp_path / "model.pt"
    torch.save(model, whole_model)  # a pickled nn.Module, the classic unsafe checkpoint
    with pytest.raises(CheckpointError, match=r"model\.pt: refused"):
        load_checkpoint(whole_model, "refiner")


def test_wrong_kind_missing_keys_and_mismatched_config_are_refused(tmp_path: Path) -> None:
    model, cfg = _tiny_refiner()
    path = tmp_path / "refiner.pt"
    save_checkpoint(path, "refiner", model, cfg, RECORD)
    with pytest.raises(CheckpointError, match="holds a 'refiner' checkpoint, expected 'stage1'"):
        load_checkpoint(path, "stage1")

    bare = tmp_path / "bare.pt"
    torch.save({"state_dict": model.state_dict()}, bare)
    with pytest.raises(CheckpointError, match=r"bare\.pt: not a DetPose checkpoint, missing keys"):
        load_checkpoint(bare, "refiner")

    other = tmp_path / "other.pt"
    payload = torch.load(path, weights_only=True)
    payload["config"]["channels"] = 16  # the weights were made for 32 channels
    torch.save(payload, other)
    with pytest.raises(
        CheckpointError, match=r"other\.pt: state dict does not match its refiner config"
    ):
        load_checkpoint(other, "refiner")

    payload["config"]["channels"] = -1
    torch.save(payload, other)
    with pytest.raises(CheckpointError, match="invalid refiner config"):
        load_checkpoint(other, "refiner")

    with pytest.raises(CheckpointError, match="cannot read"):
        load_checkpoint(tmp_path / "absent.pt", "refiner")


@pytest.mark.parametrize("kind", ["stage1", "refiner"])
def test_bundled_checkpoints_load_strictly(kind: str) -> None:
    model, cfg, _ = load_checkpoint(BUNDLED[kind], kind)  # load_state_dict(strict=True)
    assert set(model.state_dict()) == set(
        torch.load(BUNDLED[kind], weights_only=True)["state_dict"]
    )
    assert "top_k" not in cfg.model_dump()


def test_retired_config_field_top_k_is_dropped_and_other_unknown_fields_refused(
    tmp_path: Path,
) -> None:
    # The bundled stage-1 checkpoint predates the removal of CoarseNetConfig.top_k.
    assert "top_k" in torch.load(BUNDLED["stage1"], weights_only=True)["config"]
    cfg = coarse_preset("tiny")
    path = tmp_path / "old.pt"
    save_checkpoint(path, "stage1", build_model("stage1", cfg), cfg, RECORD)
    payload = torch.load(path, weights_only=True)
    payload["config"]["top_k"] = 20
    torch.save(payload, path)
    _, loaded_cfg, _ = load_checkpoint(path, "stage1")
    assert loaded_cfg == cfg
    assert read_checkpoint_dict(path)["config"] == cfg.model_dump(mode="json")  # resume compares
    with pytest.raises(ValidationError):
        CoarseNetConfig(top_k=20)  # gone from the config itself
    payload["config"]["top_kk"] = 20
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match="invalid stage1 config"):
        load_checkpoint(path, "stage1")


def test_saving_refuses_records_that_would_need_pickle(tmp_path: Path) -> None:
    model, cfg = _tiny_refiner()
    with pytest.raises(TypeError, match="Payload"):
        save_checkpoint(tmp_path / "x.pt", "refiner", model, cfg, {"obj": Payload()})
    with pytest.raises(TypeError, match="OrderedDict"):
        save_checkpoint(
            tmp_path / "x.pt", "refiner", model, cfg, {"d": collections.OrderedDict(a=1)}
        )
    assert not (tmp_path / "x.pt").exists()


def _random_refiner_items(cfg: RefinerConfig, count: int) -> list[dict[str, torch.Tensor]]:
    gen = torch.Generator().manual_seed(0)
    height, width = cfg.input_hw
    items = []
    for _ in range(count):
        channels = NUM_KEYPOINTS + num_association_channels(cfg.structure_loss)
        item = {
            "crop": torch.randn(3, height, width, generator=gen),
            "weight": torch.ones(channels),
        }
        for s in cfg.supervision_strides:
            item[f"heatmaps_s{s}"] = torch.rand(channels, height // s, width // s, generator=gen)
        items.append(item)
    return items


def test_training_resumes_from_its_checkpoint(tmp_path: Path) -> None:
    cfg = refiner_preset("tiny").model_copy(update={"batch_size": 2})
    items = _random_refiner_items(cfg, 2)
    path = tmp_path / "run.pt"
    first = train("refiner", cfg, items, 2, path, log_every=1)
    assert first["steps"] == 2 and len(first["loss_history"]) == 2
    resumed = train("refiner", cfg, items, 3, path, log_every=1)
    assert resumed["steps"] == 3
    assert [step for step, _ in resumed["loss_history"]] == [1, 2, 3]
    assert resumed["first_losses"] == first["first_losses"]
    payload = torch.load(path, weights_only=True)
    assert payload["optimizer"]["state"], "the optimiser state travels with the checkpoint"
    other = cfg.model_copy(update={"msr": "off"})
    with pytest.raises(CheckpointError, match=r"cannot resume .* network differs \(msr\)"):
        train("refiner", other, items, 4, path)


def test_a_changed_training_setting_resumes_as_a_new_phase(tmp_path: Path) -> None:
    # Keypoint masking as fine-tuning (paper §III-C4) can be a second run on the same
    # checkpoint with other training settings; the record keeps where each phase began.
    cfg = refiner_preset("tiny").model_copy(update={"batch_size": 2, "mask_background_prob": 0.0})
    items = _random_refiner_items(cfg, 2)
    path = tmp_path / "run.pt"
    train("refiner", cfg, items, 2, path, log_every=1)
    finetune = cfg.model_copy(update={"mask_background_prob": 0.3, "learning_rate": 1e-4})
    record = train("refiner", finetune, items, 3, path, log_every=1)
    assert record["steps"] == 3
    assert record["phases"] == [
        {"step": 2, "learning_rate": [cfg.learning_rate, 1e-4], "mask_background_prob": [0.0, 0.3]}
    ]
    assert read_checkpoint_dict(path)["config"]["mask_background_prob"] == 0.3


def test_older_refiner_checkpoints_load_with_the_design_they_were_trained_with() -> None:
    # The bundled demonstration refiner predates the multi-scale MSR and association channels.
    payload = read_checkpoint_dict(BUNDLED["refiner"])
    assert (
        payload["config"]["msr"] == "final" and payload["config"]["structure_loss"] == "neighbours"
    )
    model, cfg, _ = load_checkpoint(BUNDLED["refiner"], "refiner")
    assert isinstance(cfg, RefinerConfig) and cfg.mask_from == 0.0
    height, width = cfg.input_hw
    out = model(torch.zeros(1, 3, height, width))
    assert out.heatmaps.shape == (1, NUM_KEYPOINTS, height // 4, width // 4)
    assert [tuple(h.shape[1:2]) for h in out.msr_heatmaps] == [(NUM_KEYPOINTS,)]
