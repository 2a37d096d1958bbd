"""The `trainer:` section reaches the experiment's ranker stage: the plain loop's accelerator
and precision (ranker.train.fit_device), and the stage's cache key only when not "auto"."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from coldstart.experiment import stages
from coldstart.experiment.config import (
    ExperimentConfig,
    RankerStageConfig,
    StageTrainerConfig,
    TrainerConfig,
    load_config,
    resolve_trainer,
)
from coldstart.experiment.pipeline import ranker_stage_section
from tests.coldstart.test_encoder_stage import _base_embed, _split

REPO = Path(__file__).resolve().parents[2]


def test_ranker_key_changes_with_a_non_auto_trainer_only() -> None:
    default = ranker_stage_section(ExperimentConfig())
    assert "trainer" not in default and "checkpoint_every" not in default
    explicit_auto = ExperimentConfig(
        trainer=TrainerConfig(accelerator="auto", precision="auto"),
    )
    explicit_auto.ranker.trainer = StageTrainerConfig(precision="auto", strategy="auto")
    assert ranker_stage_section(explicit_auto) == default
    bf16 = ExperimentConfig()
    bf16.ranker.trainer = StageTrainerConfig(precision="bf16-mixed")
    assert ranker_stage_section(bf16) == {**default, "trainer": {"precision": "bf16-mixed"}}
    gpu = load_config(
        REPO / "configs/experiments/movielens.yaml",
        ["trainer.accelerator=gpu", "trainer.precision=bf16-mixed"],
    )
    section = ranker_stage_section(gpu)
    assert section["trainer"] == {"accelerator": "gpu", "precision": "bf16-mixed"}
    shipped = load_config(REPO / "configs/experiments/movielens.yaml", [])
    assert ranker_stage_section(shipped) == {k: v for k, v in section.items() if k != "trainer"}


def test_devices_and_strategy_the_plain_loop_does_not_take_are_logged() -> None:
    auto = resolve_trainer(TrainerConfig(), StageTrainerConfig())
    assert stages.ranker_trainer_notes(auto) == []
    assert stages.ranker_trainer_notes({**auto, "devices": 1, "strategy": "single_device"}) == []
    notes = stages.ranker_trainer_notes({**auto, "devices": 2, "strategy": "ddp"})
    assert len(notes) == 2
    assert "one device" in notes[0] and "strategy='ddp' ignored" in notes[1]


def test_ranker_stage_trains_under_the_resolved_trainer(tmp_path, monkeypatch) -> None:
    import coldstart.ranker.methods as methods_mod
    import coldstart.ranker.train as train_mod

    split_dir = _split(tmp_path)
    base = _base_embed(split_dir, tmp_path / "base")
    seen = []

    class Stop(Exception):
        pass

    def spy(*args, **kwargs):
        seen.append(train_mod._FIT_DEVICE.get())
        raise Stop

    monkeypatch.setattr(methods_mod, "fit_method", spy)
    trainer = resolve_trainer(TrainerConfig(precision="bf16-mixed"), StageTrainerConfig())
    cfg = RankerStageConfig(methods=["ours"])
    with pytest.raises(Stop):
        stages.build_ranker(split_dir, base, cfg, tmp_path / "out", trainer=trainer)
    assert seen == [train_mod.FitDevice("auto", "bf16-mixed")]
    assert train_mod._FIT_DEVICE.get() is None  # the context ends with the fit


def test_ranker_stage_on_gpu_without_cuda_fails_before_training(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    config = dataclasses.replace(ExperimentConfig(), trainer=TrainerConfig(accelerator="gpu"))
    trainer = resolve_trainer(config.trainer, config.ranker.trainer)
    with pytest.raises(RuntimeError, match=r"accelerator='gpu' for the ranker.*no CUDA device"):
        stages.build_ranker(tmp_path, tmp_path, config.ranker, tmp_path / "out", trainer=trainer)
