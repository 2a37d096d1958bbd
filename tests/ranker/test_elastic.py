"""Issue 20, part 4: elastic restarts. `coldstart ranker fit` under torchrun with
`--max-restarts 1`, 2 worker processes (CPU, gloo, one host), rank 1 SIGKILLed mid-epoch after a
checkpoint: torchrun tears the group down and restarts both workers with the same command line,
whose `--ckpt_path last` resumes from the latest last.ckpt (and starts fresh when there is none,
as on the first attempt). The job exits 0 by itself and ends bitwise where an uninterrupted
torchrun run ends (weights, optimizer state, final validation metrics)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.ranker.test_resume import CONFIG, QUIET, REPO, SHARDED, assert_same_end

KILL_RANK = "--trainer.callbacks+=tests.ranker.resume_checks.KillRankAtStep"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(
    cwd: Path, *extra: str, kill_at: int = -1, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    ambient = {k: v for k, v in os.environ.items() if k != "TORCH_DISABLE_SHARE_RDZV_TCP_STORE"}
    env = {
        **ambient,
        **(env or {}),
        "PYTHONPATH": str(REPO),
        "OMP_NUM_THREADS": "1",
        "COLDSTART_KILL_RANK": "1",
        "COLDSTART_KILL_RANK_AT_STEP": str(kill_at),
    }
    launcher = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc-per-node=2",
        "--max-restarts=1",
        "--rdzv-backend=c10d",
        f"--rdzv-endpoint=localhost:{_free_port()}",
        "--monitor-interval=0.1",
    ]
    fit = ["-m", "coldstart", "ranker", "fit", "--config", str(CONFIG), *QUIET]
    two = ["--trainer.accelerator=cpu", "--trainer.devices=2", "--trainer.max_epochs=2"]
    return subprocess.run(
        [*launcher, *fit, *two, KILL_RANK, "--ckpt_path", "last", *extra],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


STRATEGIES = {
    "ddp": ["--trainer.strategy=ddp"],
    "torchrec": [*SHARDED, "--trainer.strategy=torchrec"],
}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    """The uninterrupted torchrun run of each strategy, run once (the directory it ran in)."""
    done: dict[str, Path] = {}

    def get(strategy: str) -> Path:
        if strategy not in done:
            cwd = tmp_path_factory.mktemp(f"whole-{strategy}")
            run = _torchrun(cwd, *STRATEGIES[strategy])
            assert run.returncode == 0, run.stderr[-3000:]
            out = run.stderr + run.stdout
            assert "Restoring states" not in out  # no checkpoint yet: a fresh start
            done[strategy] = cwd
        return done[strategy]

    return get


@pytest.mark.slow
@pytest.mark.parametrize(
    ("strategy", "env"),
    [
        ("ddp", {}),
        ("torchrec", {}),
        # torch's opt-out (the multi-node advice): a fresh TCPStore per attempt
        ("ddp", {"TORCH_DISABLE_SHARE_RDZV_TCP_STORE": "1"}),
    ],
    ids=["ddp", "torchrec", "ddp-unshared-store"],
)
def test_a_worker_killed_under_torchrun_restarts_and_ends_as_uninterrupted(
    tmp_path: Path, uninterrupted, strategy: str, env: dict[str, str]
) -> None:
    whole = uninterrupted(strategy)
    # 6 steps per epoch and rank, last.ckpt every 5: rank 1 dies after step 11 (epoch 1), the
    # checkpoint of step 10 survives, step 11 is lost and trained again after the restart.
    job = _torchrun(tmp_path, *STRATEGIES[strategy], kill_at=11, env=env)
    out = job.stderr + job.stdout
    assert job.returncode == 0, out[-3000:]
    assert "exitcode: -9" in out and "local_rank: 1" in out, out[-3000:]  # the kill happened
    assert "Restoring states from the checkpoint" in out, out[-3000:]  # the restart resumed
    # Each attempt's process group has keys of its own: ranker.elastic on a shared store,
    # torch's fresh store per attempt otherwise.
    isolated = "process group keys under coldstart/attempt_1/" in out
    assert isolated == (not env), out[-3000:]
    logs = sorted((tmp_path / "runs/ranker/synthetic/logs").glob("version_*"))
    assert len(logs) == 2  # two attempts, each logged
    assert_same_end(whole, tmp_path, 12)


def test_on_several_nodes_the_store_opt_out_is_asked_for(monkeypatch: pytest.MonkeyPatch) -> None:
    """Several agents count their restarts apart: no attempt prefix, a warning instead."""
    from lightning.pytorch.strategies import DDPStrategy

    from coldstart.ranker.elastic import init_attempt_process_group

    env = {"TORCHELASTIC_USE_AGENT_STORE": "True", "TORCHELASTIC_MAX_RESTARTS": "3"}
    env |= {"GROUP_WORLD_SIZE": "2", "WORLD_SIZE": "4", "RANK": "0"}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.warns(UserWarning, match="TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1"):
        assert not init_attempt_process_group(DDPStrategy())
    monkeypatch.setenv("TORCHELASTIC_USE_AGENT_STORE", "False")  # torch's fresh store per attempt
    assert not init_attempt_process_group(DDPStrategy())
