"""`coldstart ranker` (LightningCLI): fit, resume from last, test, predict export, CPU DDP."""

from __future__ import annotations

import json
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


@pytest.mark.parametrize("name", ["movielens", "movielens_sid", "movielens_sharded", "synthetic"])
def test_configs_parse(name: str, capsys: pytest.CaptureFixture) -> None:
    config = REPO / "configs" / "ranker" / f"{name}.yaml"
    with pytest.raises(SystemExit) as exit_info:
        coldstart_main(["ranker", "fit", "--config", str(config), "--print_config"])
    assert exit_info.value.code in (0, None)
    printed = capsys.readouterr().out
    assert "class_path: coldstart.ranker.lit.RankerExportWriter" in printed
    method = "warmstart" if name == "movielens_sharded" else "ours"  # the sharded: one model
    assert f"method: {method}" in printed and "params:" in printed


def test_help_is_fast_and_mentions_the_subcommands(capsys: pytest.CaptureFixture) -> None:
    assert coldstart_main(["ranker", "--help"]) == 0
    out = capsys.readouterr().out
    assert all(word in out for word in ("fit", "validate", "test", "predict", "--ckpt_path last"))


@pytest.mark.slow
def test_fit_resume_test_predict(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from coldstart.data.embeddings import EmbeddingManifest, read_embeddings

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
    # Every item (warm and cold) once; the served vectors of the mixture (ranker.mixture).
    assert vectors.shape[0] == 300 and len(np.unique(ids)) == 300
    assert EmbeddingManifest.load(export / "items").encoder_config["method"] == "ours"
    user_ids, users = read_embeddings(export / "users", "user")
    assert users.shape == (len(user_ids), vectors.shape[1])
    tower = torch.load(export / "user_tower.pt", weights_only=False)
    ws = tower["channels"]["ws"]  # one user tower per trained channel
    assert ws["dim"] == 16 and "table.weight" in ws["state_dict"] and "id" in tower["channels"]
    # What `serve --ranker` needs for new items and new users, as the experiment exports it.
    from coldstart.ranker.cold_items import ColdItemMap, HistoryUserMap

    history = HistoryUserMap.load(export / "history_user")
    assert ColdItemMap.load(export / "cold_item") is not None
    new_user = history(history.rows_of(ids[:5]))
    assert new_user.shape == (vectors.shape[1],) and np.isfinite(new_user).all()


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
    # ours, the mixture: its model channels' towers (ranker.channels.<name>.item_tower...).
    assert any(k.startswith("ranker.channels.ws.item_tower") for k in ckpt["state_dict"])


def test_cli_epochs_default_to_the_method_and_an_explicit_value_wins() -> None:
    from coldstart.ranker.lit import LitRanker, RankerCLI, RankerDataModule

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


def _run_group(cmd: list[str], cwd: Path, timeout: float) -> subprocess.CompletedProcess:
    """Run a command in its own process group; on timeout kill the whole group (Lightning's
    launcher starts the other ranks as children) and fail."""
    import signal

    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        cmd,
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"timed out after {timeout} s: {' '.join(cmd)}\n{err[-3000:]}")
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


@pytest.mark.slow
@pytest.mark.parametrize("method", ["warmstart", "ours"])
def test_sharded_fit_on_two_processes_loads_in_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, method: str
) -> None:
    """TorchRec-sharded fit over 2 gloo processes; its checkpoint then serves `predict` and
    `test` in 1 process, and the exported vectors equal the 2-process model's. warmstart is one
    two-tower model; ours, the mixture, shards the tables of each of its model channels."""
    import torch.distributed.checkpoint

    from coldstart.data.embeddings import read_embeddings
    from coldstart.ranker.sharding import read_whole

    exe = shutil.which("coldstart", path=str(Path(sys.executable).parent)) or shutil.which(
        "coldstart"
    )
    assert exe, "the coldstart console script is not installed"
    method = f"--model.method={method}"
    sharded = [method, "--model.params.tables=torchrec", "--trainer.strategy=torchrec"]
    fit = _run_group(
        [
            exe,
            "ranker",
            "fit",
            "--config",
            str(CONFIG),
            "--trainer.max_epochs=2",
            "--trainer.devices=2",
            *sharded,
            *QUIET,
            "--trainer.callbacks+=tests.ranker.sharded_checks.DumpVectors",
        ],
        tmp_path,
        timeout=300,
    )
    assert fit.returncode == 0, fit.stderr[-3000:]
    run = tmp_path / "runs/ranker/synthetic"
    assert "TorchRec sharding plan (2 processes)" in fit.stdout
    plan = json.loads(next(run.glob("logs/*/sharding_plan.json")).read_text())
    assert plan["world_size"] == 2 and plan["backend"] == "gloo"
    assert {t["table"] for t in plan["tables"]} == {"item_id", "user_id", "user_history"}
    assert {r for t in plan["tables"] for r in t["ranks"]} == {0, 1}  # tables on both ranks
    ckpt = torch.load(run / "checkpoints/last.ckpt", map_location="cpu", weights_only=True)
    # Sharded checkpoint: the file keeps no table; each rank wrote its shards beside it.
    table = "item_tower.table.ebc.embedding_bags.item_id.weight"
    assert not any(key.endswith(table) for key in ckpt["state_dict"])
    shards = run / "checkpoints" / ckpt["torchrec_shards"]["dir"]
    assert sorted(p.name for p in shards.iterdir()) == [".metadata", "__0_0.distcp", "__1_0.distcp"]
    assert len(list((run / "checkpoints").glob("last.ckpt.shards-*"))) == 1  # older ones removed
    item_tables = [v for k, v in read_whole(shards).items() if k.endswith(table)]
    assert len(item_tables) == (2 if "ours" in method else 1)  # ours: the id and ws channels
    assert all(t.shape[0] == 300 for t in item_tables)  # whole tables, read in one process
    fused = torch.distributed.checkpoint.FileSystemReader(shards).read_metadata()
    assert any(k.startswith("fused.") and "momentum1" in k for k in fused.state_dict_metadata)

    one = [method, "--model.params.tables=torchrec", "--ckpt_path", "last", *QUIET]
    monkeypatch.chdir(tmp_path)
    assert coldstart_main(["ranker", "predict", "--config", str(CONFIG), *one]) == 0
    trained = np.load(run / "trained_vectors.npz")
    ids, items = read_embeddings(run / "export/items", "ranker")
    order = np.argsort(ids)
    np.testing.assert_allclose(items[order], trained["items"], rtol=1e-5, atol=1e-6)
    uids, users = read_embeddings(run / "export/users", "user")
    np.testing.assert_allclose(users[np.argsort(uids)], trained["users"], rtol=1e-5, atol=1e-6)

    # The same checkpoint served with plain torch tables (ranker.tables.match_state).
    plain = [method, "--model.params.tables=torch", "--ckpt_path", "last", *QUIET]
    assert coldstart_main(["ranker", "predict", "--config", str(CONFIG), *plain]) == 0
    ids, items = read_embeddings(run / "export/items", "ranker")
    np.testing.assert_allclose(items[np.argsort(ids)], trained["items"], rtol=1e-5, atol=1e-6)

    assert coldstart_main(["ranker", "test", "--config", str(CONFIG), *one]) == 0
    metrics = sorted(run.glob("logs/*/metrics.csv"))[-1].read_text()
    header, row = metrics.splitlines()[:2]
    cold = float(row.split(",")[header.split(",").index("test/cold/recall@20")])
    assert cold > 0.5  # content reveals the class: a model trained sharded ranks cold items
