"""The experiment's encoder stage: it learns from the TRAIN part and warm items only, its
checkpoint feeds the embed stage by itself, and the trainer section resolves per stage."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import coldstart.data.io as io_mod
from coldstart.data.split import PARTS, cold_start_split, load_split, write_split
from coldstart.data.synthetic import SyntheticConfig, load_synthetic
from coldstart.experiment import stages
from coldstart.experiment.config import (
    DataConfig,
    EmbedStageConfig,
    EncoderStageConfig,
    ExperimentConfig,
    StageTrainerConfig,
    TrainerConfig,
    load_config,
    resolve_trainer,
    trainer_key,
)
from tests.exports import write_export

REPO = Path(__file__).resolve().parents[2]


def _split(root: Path) -> Path:
    data = load_synthetic(SyntheticConfig(n_items=120, n_users=60, interactions_per_user=12))
    split = cold_start_split(data, seed=0)
    write_split(split, root / "split")
    return root / "split"


def _base_embed(split_dir: Path, out: Path) -> Path:
    """A stand-in untuned export: random text vectors for every catalogue item."""
    items = io_mod.read_table(split_dir / "items.parquet")
    ids = items["item_id"].tolist()
    x = np.random.default_rng(0).standard_normal((len(ids), 64)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return write_export(out, ids, x, modality="text", encoder="tiny-clip")


def _stage(split_dir: Path, base: Path, out: Path) -> dict:
    cfg = EncoderStageConfig(enabled=True, epochs=1, batch_size=32, window_s=1e9)
    return stages.build_encoder(
        split_dir,
        base,
        cfg,
        EmbedStageConfig(encoder="tiny-clip"),
        DataConfig(),
        {"accelerator": "cpu", "devices": 1},
        out,
    )


def test_no_val_test_or_cold_interaction_reaches_the_encoder_stage(tmp_path, monkeypatch):
    split_dir = _split(tmp_path)
    base = _base_embed(split_dir, tmp_path / "base")
    read: list[str] = []
    real = io_mod.read_table
    monkeypatch.setattr(
        io_mod, "read_table", lambda p, *a, **k: read.append(Path(p)) or real(p, *a, **k)
    )
    import coldstart.encoders.engagement as engagement

    seen = {}
    real_fit = engagement.fit_item_encoder

    def spy(encoder, pretrained, item_ids, train, cfg, out, trainer=None, **kw):
        seen.update(item_ids=np.asarray(item_ids), train=train.copy())
        return real_fit(encoder, pretrained, item_ids, train, cfg, out, trainer, **kw)

    monkeypatch.setattr(engagement, "fit_item_encoder", spy)
    _stage(split_dir, base, tmp_path / "a")
    # The split files it opened: the catalogue and the train part, nothing else.
    opened = {p.name for p in read if p.parent == split_dir}
    assert opened == {"items.parquet", "train.parquet"}
    split = load_split(split_dir)
    assert set(seen["item_ids"]) == set(split.warm_item_ids)
    pd.testing.assert_frame_equal(
        seen["train"].reset_index(drop=True), split.train.reset_index(drop=True)
    )
    # No cold item is ever a pair member.
    from coldstart.encoders.engagement import training_pairs

    pairs, _ = training_pairs(seen["train"], seen["item_ids"], EncoderStageConfig(window_s=1e9))
    paired = set(seen["item_ids"][np.unique(pairs)])
    assert paired and not paired & set(split.cold_item_ids)

    # Replace every held-out part with other interactions (cold items included): the stage's
    # checkpoint is bit-identical, so nothing of those parts reached it.
    monkeypatch.setattr(io_mod, "read_table", real)
    rng = np.random.default_rng(1)
    for part in PARTS[1:]:
        frame = split.part(part)
        if len(frame):
            frame = frame.assign(item_id=rng.choice(split.items["item_id"], len(frame)))
            io_mod.write_table(frame, split_dir / f"{part}.parquet")
    _stage(split_dir, base, tmp_path / "b")
    a = torch.load(tmp_path / "a" / "encoder.ckpt", weights_only=False)["state_dict"]
    b = torch.load(tmp_path / "b" / "encoder.ckpt", weights_only=False)["state_dict"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_trainer_section_resolves_per_stage() -> None:
    config = ExperimentConfig()
    for stage in ("encoder", "embed", "ranker"):
        resolved = resolve_trainer(config.trainer, getattr(config, stage).trainer)
        assert resolved == {
            "accelerator": "auto",
            "devices": "auto",
            "strategy": "auto",
            "precision": None,
        }
        assert trainer_key(resolved) == {}  # default configs keep their stage keys
    # What a GPU machine sets, and one stage's own override.
    gpu = TrainerConfig(accelerator="gpu", precision="bf16-mixed")
    resolved = resolve_trainer(gpu, StageTrainerConfig(devices="2", strategy="ddp"))
    assert resolved == {
        "accelerator": "gpu",
        "devices": 2,
        "strategy": "ddp",
        "precision": "bf16-mixed",
    }
    assert stages.embed_trainer(resolved) == {
        "accelerator": "gpu",
        "devices": 2,
        "precision": "bf16-mixed",
    }
    assert stages.embed_trainer(resolve_trainer(TrainerConfig(), StageTrainerConfig())) == {
        "accelerator": "auto",
        "devices": 1,
        "precision": "32",
    }


def test_gpu_settings_are_two_overrides_of_a_shipped_config() -> None:
    config = load_config(
        REPO / "configs/experiments/movielens.yaml",
        ["trainer.accelerator=gpu", "trainer.precision=bf16-mixed"],
    )
    for stage in ("encoder", "embed", "ranker"):
        resolved = resolve_trainer(config.trainer, getattr(config, stage).trainer)
        assert resolved["accelerator"] == "gpu" and resolved["precision"] == "bf16-mixed"
    assert config.encoder.enabled is False  # the stage is opt-in
    assert dataclasses.asdict(config.embed.trainer) == dataclasses.asdict(StageTrainerConfig())


def _tiny_experiment(name: str, tmp_path: Path) -> ExperimentConfig:
    """A seconds-long synthetic experiment: tiny-clip, content_knn only, no analyses."""
    config = ExperimentConfig(name=name, output_dir=str(tmp_path / "out"))
    config.data.loader = "synthetic"
    config.data.synthetic = SyntheticConfig(n_items=80, n_users=40, interactions_per_user=10)
    config.embed = EmbedStageConfig(encoder="tiny-clip", num_workers=0, batch_size=64)
    config.ranker.methods = ["content_knn"]
    config.stability.enabled = config.dims.enabled = False
    return config


@pytest.mark.slow
def test_the_stage_feeds_the_embed_stage_and_is_cached(tmp_path: Path) -> None:
    from coldstart.experiment.pipeline import run_experiment

    config = _tiny_experiment("enc", tmp_path)
    off = run_experiment(config, log=lambda s: None)
    assert "encoder" not in off.artifacts
    config.encoder = EncoderStageConfig(enabled=True, epochs=1, batch_size=32)
    logs: list[str] = []
    on = run_experiment(config, log=logs.append)
    assert on.stage_status("encoder") == "built"
    # The untuned export is reused as the frozen backbone's vectors; the tuned one is new.
    assert any(
        "[embed] reusing" in line and off.artifacts["embed"].version in line for line in logs
    )
    tuned = on.artifacts["embed"]
    assert tuned.key != off.artifacts["embed"].key
    assert tuned.manifest["upstream"]["encoder"]["key"] == on.artifacts["encoder"].key
    assert tuned.manifest["summary"]["encoder"] == "adapter:tiny-clip"
    examples = on.artifacts["encoder"].manifest["summary"]["examples"]
    assert examples and all(len(e["before"]) == len(e["after"]) == 5 for e in examples)
    again = run_experiment(config, log=lambda s: None)
    assert again.stage_status("encoder") == "reused" and again.stage_status("embed") == "reused"


def _quality(cold: float, warm: float) -> dict:
    return {"ours": {"cold": {"recall@20": cold}, "warm": {"recall@20": warm}}}


@pytest.mark.parametrize(
    ("on", "rule", "kept"),
    [
        ((0.30, 0.20), {}, True),  # a cold gain, warm unchanged
        ((0.30, 0.19), {}, False),  # warm drops 0.01 > 0.005
        ((0.25, 0.30), {}, False),  # no cold gain: the stage costs time for nothing
        ((0.26, 0.20), {"keep_min_cold_gain": 0.02}, False),  # under the bar
        ((0.27, 0.196), {"keep_min_cold_gain": 0.02}, True),  # at it, warm within 0.005
    ],
)
def test_keep_decision_follows_the_val_rule(on, rule, kept) -> None:
    from coldstart.experiment.pipeline import keep_decision

    cfg = EncoderStageConfig(enabled=True, keep="val", **rule)
    decision = keep_decision({"off": _quality(0.25, 0.20), "on": _quality(*on)}, cfg)
    assert decision["kept"] is kept
    assert decision["val_recall@20"]["on"] == {"cold": on[0], "warm": on[1]}
    assert decision["reason"].startswith("kept" if kept else "dropped")


@pytest.mark.slow
def test_keep_val_trains_both_and_a_dropped_stage_leaves_the_plain_run(tmp_path: Path) -> None:
    from coldstart.experiment.pipeline import run_experiment

    config = _tiny_experiment("keep", tmp_path)
    off = run_experiment(config, log=lambda s: None)
    config.encoder = EncoderStageConfig(enabled=True, epochs=1, batch_size=32, keep="val")
    with pytest.raises(ValueError, match="keep_method"):
        run_experiment(config, log=lambda s: None)  # ours is not among the methods
    config.encoder.keep_method = "content_knn"
    config.encoder.keep_min_cold_gain = 2.0  # out of reach: dropped whatever val says
    dropped = run_experiment(config, log=lambda s: None)
    decision = dropped.metrics["stages"]["encoder"]["decision"]
    assert decision["kept"] is False and decision["method"] == "content_knn"
    # Without the stage the run is the plain one: same embed, same rankers, same test figures.
    assert dropped.artifacts["embed"].key == off.artifacts["embed"].key
    assert dropped.metrics["methods"] == off.metrics["methods"]
    val_off = dropped.metrics["stages"]["encoder"]["decision"]["val_recall@20"]["off"]
    config.evaluate.part = "val"
    plain_val = run_experiment(
        dataclasses.replace(config, encoder=EncoderStageConfig()), log=lambda s: None
    )
    assert val_off["cold"] == plain_val.metrics["methods"]["content_knn"]["cold"]["recall@20"]
    report = (dropped.run_dir / "report.md").read_text()
    assert "## Encoder stage" in report and "dropped on val" in report
    assert "| cold item | before | after |" in report
    # The keep rule is not part of the stage's key: the trained stage is reused.
    config.encoder.keep_min_cold_gain = -1.0
    config.encoder.keep_max_warm_drop = 1.0
    again = run_experiment(config, log=lambda s: None)
    assert again.stage_status("encoder") == "reused"
    decision = again.metrics["stages"]["encoder"]["decision"]
    figures = decision["val_recall@20"]
    assert decision["kept"] is (figures["on"]["cold"] > figures["off"]["cold"])
    kept_embed = again.artifacts["embed"].manifest["summary"]["encoder"]
    assert (kept_embed == "adapter:tiny-clip") is decision["kept"]


def test_taste_groups_tie_each_users_classes_to_one_group_and_default_data_hold() -> None:
    from coldstart.data.synthetic import make_synthetic

    plain = make_synthetic(n_items=200, n_classes=16, n_users=50, classes_per_user=2)
    again = make_synthetic(
        n_items=200, n_classes=16, n_users=50, classes_per_user=2, taste_groups=0
    )
    pd.testing.assert_frame_equal(plain.dataset.interactions, again.dataset.interactions)
    grouped = make_synthetic(
        n_items=200, n_classes=16, n_users=50, classes_per_user=2, taste_groups=4
    )
    np.testing.assert_array_equal(grouped.item_class, plain.item_class)  # same catalogue
    # Classes that users like together form 4 disjoint groups of 4.
    together: dict[int, set[int]] = {}
    for liked in grouped.user_classes.tolist():
        for c in liked:
            together.setdefault(c, set()).update(liked)
    assert max(len(v) for v in together.values()) <= 4
