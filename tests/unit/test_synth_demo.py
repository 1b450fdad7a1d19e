"""``detpose synth-demo``: its ablations are valid configs and its report says what it measured."""

from __future__ import annotations

from pathlib import Path

import pytest

from jobs.synth_demo_cmd import REFINERS, Demo, format_report, write_spec
from jobs.train_cmd import _config_override, training_config
from schemas.spec import JobSpec


@pytest.mark.parametrize("refiner", REFINERS[1:], ids=lambda r: r.name)
def test_each_ablation_switches_one_component_off(refiner) -> None:
    full = training_config("refiner", "tiny", [], None)
    cfg = training_config("refiner", "tiny", [_config_override(o) for o in refiner.overrides], None)
    changed = {k for k, v in cfg.model_dump().items() if full.model_dump()[k] != v}
    expected = {
        "no-mss": {"supervision_strides"},
        "no-msr": {"msr"},
        "no-structure": {"structure_loss"},
        "no-masking": {"mask_background_prob", "mask_duplicate_prob"},
    }[refiner.name]
    assert changed == expected


def _summary(ap: float, runs: float = 1.2) -> dict:
    return {
        "AP": ap, "AP50": ap, "AP75": ap, "AR": ap, "box_AP": 0.5, "persons": 9,
        "ground_truth_persons": 10, "refinement_runs_per_person": runs, "recovered": 3,
        "recovered_duplicates_removed": 1,
    }  # fmt: skip


def test_the_report_tables_hold_every_level_mode_and_ablation(tmp_path: Path) -> None:
    demo = Demo(tmp_path, 10, 5, 7, 8, ablations=True, parallel=1)
    levels = {
        level: {mode: _summary(0.5, 1.3 if mode == "coarse" else 2.0) for mode in ("coarse", "nms")}
        for level in ("low", "medium", "high")
    }
    results = {
        "levels": levels,
        "ablations": {r.name: _summary(0.4) for r in REFINERS[1:]},
        "dedupe_high": _summary(0.45),
    }
    records = {
        "stage1": {
            "steps": 7,
            "seconds": 12.0,
            "first_losses": {"total": 2.0},
            "losses": {"total": 1.0},
        }
    }
    text = format_report(demo, results, records)
    assert "| high | coarse | 0.500 |" in text and text.count("| nms |") == 3
    assert "| 1.30 |" in text and "| 2.00 |" in text
    assert "| no-msr | 0.400 | -0.100 |" in text
    assert "AP 0.450 vs 0.500 without; 1 of 3 recovered persons removed" in text
    assert "| stage1 | 7 | 12 | 2 → 1 |" in text


def test_the_eval_specs_are_valid_job_specs(tmp_path: Path) -> None:
    demo = Demo(tmp_path, 10, 5, 7, 8, ablations=True, parallel=1)
    # detpose eval supplies the inputs (the held-out set's images)
    spec = JobSpec.from_yaml(write_spec(demo, "no-msr", dedupe=True), {"inputs": [str(tmp_path)]})
    assert spec.stage1.model == spec.refiner.model == "detposenet"
    assert spec.refiner.checkpoint.endswith("refiner-no-msr.pt")
    assert spec.filter.recovered_dedupe_oks == 0.7


def test_sizes_must_be_positive(capsys: pytest.CaptureFixture[str]) -> None:
    from jobs.cli import build_parser

    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(["synth-demo", "--refiner-steps", "0"])
    assert exit_info.value.code == 2
    assert "got '0'; expected at least 1" in capsys.readouterr().err
