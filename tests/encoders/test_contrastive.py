"""LitContrastive through LightningCLI: it learns, checkpoints carry config, resume, CPU DDP."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from coldstart.commands.encoder import run_cli
from coldstart.encoders import create_encoder

REPO = Path(__file__).resolve().parents[2]
CONFIG = str(REPO / "configs" / "encoders" / "tiny-clip.yaml")


def _args(pair_shards: dict, root: Path, *extra: str) -> list[str]:
    return [
        "--config", CONFIG,
        "--data.train", pair_shards["train"],
        "--data.val", pair_shards["val"],
        "--data.num_workers", "0",
        "--trainer.default_root_dir", str(root),
        "--trainer.enable_progress_bar", "false",
        "--trainer.max_epochs", "1",
        "--model.warmup_steps", "2",
        "--model.lr_schedule", "constant",
        "--data.samples_per_epoch", "512",  # 16 steps of 32: the 256 train pairs twice
        *extra,
    ]  # fmt: skip


@pytest.mark.slow
def test_fit_learns_checkpoints_and_resumes(pair_shards, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # LightningCLI must never meet a config.yaml in the cwd
    untrained = run_cli(["validate", *_args(pair_shards, tmp_path / "untrained")])
    before = {k: float(v) for k, v in untrained.trainer.callback_metrics.items()}

    fit = run_cli(["fit", *_args(pair_shards, tmp_path / "run")])
    after = {k: float(v) for k, v in fit.trainer.callback_metrics.items()}
    assert after["val_samples"] == 128
    # 8 latent classes with one caption each: chance R@1 (any same-caption hit) is ~1/8.
    for name in ("val_i2t_r1", "val_t2i_r1"):
        assert after[name] >= 0.6, (name, after[name])
        assert after[name] > before[name] + 0.25, (name, before[name], after[name])
    assert after["val_i2t_r10"] >= after["val_i2t_r5"] >= after["val_i2t_r1"]

    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    ckpt = torch.load(last, map_location="cpu", weights_only=False)
    assert ckpt["hyper_parameters"]["encoder"] == "tiny-clip"
    assert ckpt["encoder_config"]["model"] == "coldstart-tiny"
    assert ckpt["global_step"] == 16  # 512 samples / batch 32
    # The checkpoint alone rebuilds the fine-tuned encoder through the registry.
    rebuilt = create_encoder("tiny-clip", pretrained=str(last))
    assert rebuilt.weights_sha256() == fit.model.encoder.weights_sha256()

    resumed = run_cli(
        [
            "fit",
            *_args(pair_shards, tmp_path / "run", "--trainer.max_epochs", "2"),
            "--data.samples_per_epoch",
            "64",  # a short second epoch: 2 steps
            "--ckpt_path",
            "last",
        ]
    )
    assert resumed.trainer.global_step == 18  # continued from step 16, not restarted
    assert not (tmp_path / "config.yaml").exists()


@pytest.mark.slow
def test_ddp_two_cpu_processes(pair_shards, tmp_path):
    root = tmp_path / "ddp"
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    cmd = [
        sys.executable, "-m", "coldstart", "encoder", "fit",
        *_args(pair_shards, root),
        "--trainer.devices=2", "--trainer.strategy=ddp", "--trainer.accelerator=cpu",
    ]  # fmt: skip
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    ckpt = torch.load(root / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert ckpt["global_step"] == 8  # 512 samples / (2 ranks x batch 32): global batch of 64
    metrics = next(root.glob("lightning_logs/version_*/metrics.csv"))
    rows = list(csv.DictReader(metrics.read_text().splitlines()))
    val = [r for r in rows if r.get("val_samples")]
    assert float(val[-1]["val_samples"]) == 128  # every val sample once, gathered from 2 ranks
    assert 0.0 <= float(val[-1]["val_i2t_r1"]) <= 1.0
    train = [float(r["train_loss"]) for r in rows if r.get("train_loss")]
    assert train and all(x == x for x in train)  # finite, logged from rank 0


def test_poster_pairs_take_text_from_catalogue(poster_shards):
    """Real posters carry no captions: the pair's text is the movie's title + genres."""
    from coldstart.data.movielens import load_movielens
    from coldstart.data.schema import item_text
    from coldstart.encoders.catalogue import load_catalogue_texts
    from coldstart.encoders.datamodule import PairBatches

    pre = create_encoder("tiny-clip").preprocessor()
    ds = PairBatches(
        [poster_shards[0]],
        pre,
        batch_size=4,
        train=False,
        catalogue=load_catalogue_texts("movielens"),
    )
    batch = next(iter(ds))
    assert batch.images.shape == (4, 3, 32, 32)
    items = load_movielens().items.set_index("item_id")
    texts = [item_text(items.loc[int(k)].to_dict()) for k in batch.keys]
    assert all(texts)
    assert torch.equal(batch.tokens, pre.text(texts))
