"""`coldstart ranker` (LightningCLI): fit, resume from last, test, predict export, CPU DDP."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from coldstart.cli import main as coldstart_main

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "configs" / "ranker" / "synthetic.yaml"
QUIET = ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]


@pytest.mark.parametrize("name", ["movielens", "movielens_sid", "synthetic"])
def test_configs_parse(name: str, capsys: pytest.CaptureFixture) -> None:
    config = REPO / "configs" / "ranker" / f"{name}.yaml"
    with pytest.raises(SystemExit) as exit_info:
        coldstart_main(["ranker", "fit", "--config", str(config), "--print_config"])
    assert exit_info.value.code in (0, None)
    printed = capsys.readouterr().out
    assert "class_path: ranker.lit.RankerExportWriter" in printed
    assert "method: ours" in printed and "params:" in printed


def test_help_is_fast_and_mentions_the_subcommands(capsys: pytest.CaptureFixture) -> None:
    assert coldstart_main(["ranker", "--help"]) == 0
    out = capsys.readouterr().out
    assert all(word in out for word in ("fit", "validate", "test", "predict", "--ckpt_path last"))


@pytest.mark.slow
def test_fit_resume_test_predict(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from data.embeddings import read_embeddings

    monkeypatch.chdir(tmp_path)
    assert (
        coldstart_main(["ranker", "fit", "--config", str(CONFIG), "--trainer.max_epochs=1", *QUIET])
        == 0
    )
    ckpt_dir = tmp_path / "runs/ranker/synthetic/checkpoints"
    last = torch.load(ckpt_dir / "last.ckpt", map_location="cpu", weights_only=True)
    assert last["epoch"] == 0
    assert last["ranker"]["model"]["dim"] == 16  # the checkpoint carries the model config
    assert (
        last["ranker"]["method"] == "ours" and last["ranker"]["model"]["item"]["init"] == "content"
    )
    assert last["hyper_parameters"]["method"] == "ours"
    assert list(tmp_path.glob("runs/ranker/synthetic/logs/*/config.yaml"))

    # Resume: one more epoch from last.ckpt continues the step count.
    assert (
        coldstart_main(
            [
                "ranker",
                "fit",
                "--config",
                str(CONFIG),
                "--trainer.max_epochs=2",
                "--ckpt_path",
                "last",
                *QUIET,
            ]
        )
        == 0
    )
    resumed = torch.load(ckpt_dir / "last.ckpt", map_location="cpu", weights_only=True)
    assert resumed["epoch"] == 1 and resumed["global_step"] == 2 * last["global_step"]

    assert (
        coldstart_main(["ranker", "test", "--config", str(CONFIG), "--ckpt_path", "last", *QUIET])
        == 0
    )
    assert (
        coldstart_main(
            ["ranker", "predict", "--config", str(CONFIG), "--ckpt_path", "last", *QUIET]
        )
        == 0
    )
    export = tmp_path / "runs/ranker/synthetic/export"
    ids, vectors = read_embeddings(export / "items", "ranker")
    assert (
        vectors.shape == (300, 17) and len(np.unique(ids)) == 300
    )  # warm and cold items, D + bias
    user_ids, users = read_embeddings(export / "users", "user")
    assert users.shape[1] == 17 and np.allclose(users[:, -1], 1.0)
    tower = torch.load(export / "user_tower.pt", weights_only=False)
    assert tower["dim"] == 16 and "table.weight" in tower["state_dict"]


@pytest.mark.slow
def test_ddp_two_cpu_processes(tmp_path: Path) -> None:
    exe = shutil.which("coldstart", path=str(Path(sys.executable).parent)) or shutil.which(
        "coldstart"
    )
    assert exe, "the coldstart console script is not installed"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    cmd = [
        exe,
        "ranker",
        "fit",
        "--config",
        str(CONFIG),
        "--trainer.max_epochs=1",
        "--trainer.devices=2",
        "--trainer.strategy=ddp",
        *QUIET,
    ]
    result = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=400)
    assert result.returncode == 0, result.stderr[-3000:]
    ckpt = torch.load(
        tmp_path / "runs/ranker/synthetic/checkpoints/last.ckpt",
        map_location="cpu",
        weights_only=True,
    )
    # Two ranks split the epoch's batches: half the single-process step count.
    assert 0 < ckpt["global_step"] <= 6
    assert any(k.startswith("ranker.item_tower") for k in ckpt["state_dict"])


def test_cli_epochs_default_to_the_method_and_an_explicit_value_wins() -> None:
    from ranker.lit import LitRanker, RankerCLI, RankerDataModule

    def cli(*extra: str) -> RankerCLI:
        return RankerCLI(
            LitRanker,
            RankerDataModule,
            args=["--config", str(CONFIG), *QUIET, "--trainer.logger=false", *extra],
            run=False,
        )

    assert cli().trainer.max_epochs == 2  # synthetic.yaml: model.params.epochs = 2
    assert cli("--model.params={dim: 8}").trainer.max_epochs == 8  # the registry's default
    assert cli("--model.params={dim: 8}").model.config.dim == 8
    assert cli("--trainer.max_epochs=3").trainer.max_epochs == 3
