"""A killed `coldstart experiment` resumes: rerun the same command and the finished stages are
reused, the ranker stage keeps the methods it finished and continues the one in training from its
last checkpoint, and metrics.json's methods equal those of a run never interrupted, exactly.

The kill (SIGKILL right after a fit checkpoint of `ours`, inside the ranker stage) comes from
tests/coldstart/kill_experiment.py, which wraps the CLI: the shipped code has no kill switch.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from coldstart.experiment.artifacts import ArtifactStore

REPO = Path(__file__).resolve().parents[2]
KILLER = Path(__file__).with_name("kill_experiment.py")
KILL_STEP = 20  # the fifth checkpoint of `ours` (every 4 steps), inside its second epoch
SETTINGS = [
    "data.synthetic.n_items=300",
    "data.synthetic.n_users=100",
    "data.synthetic.interactions_per_user=20",
    "embed.threads=1",
    "ranker.methods=[popularity, id_only, ours]",
    "ranker.params={dim: 16, epochs: 3, batch_requests: 16, content_hidden: 32}",
    "ranker.checkpoint_every=4",
    "evaluate.curve_ks=[10, 20]",
    "stability.enabled=false",
    "dims.enabled=false",
]


def _experiment(out: Path, *extra: str, kill: tuple[str, int] | None = None):
    argv = ["experiment", "--config", str(REPO / "configs/experiments/synthetic_weak.yaml")]
    argv += ["--output-dir", str(out), *(a for s in SETTINGS for a in ("--set", s)), *extra]
    prefix = [str(KILLER), kill[0], str(kill[1])] if kill else ["-m", "coldstart.cli"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, *prefix, *argv], cwd=REPO, env=env, capture_output=True, text=True
    )


def _metrics(done: subprocess.CompletedProcess) -> dict:
    assert done.returncode == 0, done.stderr[-3000:]
    run_dir = Path(done.stdout.strip().splitlines()[-1])  # the contract: last stdout line
    return json.loads((run_dir / "metrics.json").read_text())


def _vector_hashes(ranker_artifact: Path) -> dict:
    """sha256 of every data file the methods exported (vectors, maps; not the JSON manifests,
    which carry their creation time)."""
    return {
        str(path.relative_to(ranker_artifact)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(ranker_artifact.glob("methods/**/*"))
        if path.is_file() and path.suffix != ".json"
    }


def test_a_resumable_stage_keeps_its_work_directory_until_it_is_built(tmp_path) -> None:
    logs: list[str] = []
    store = ArtifactStore(tmp_path, log=logs.append)
    key = store.key("r", 1, {"x": 1}, [])
    work = store.work_dir("r", key)
    seen: list[list[str]] = []

    def build(out: Path, work: Path, fail: bool = False) -> dict:
        seen.append(sorted(p.name for p in work.iterdir()))
        (work / "part").write_text("done")
        if fail:
            raise RuntimeError("cut short")
        (out / "result").write_text("x")
        return {}

    with pytest.raises(RuntimeError, match="cut short"):
        store.run("r", {"x": 1}, [], lambda o, w: build(o, w, fail=True), resumable=True)
    assert (work / "part").read_text() == "done"  # kept for the next build of this key
    other = store.run("r", {"x": 2}, [], build, resumable=True)  # another key: its own
    built = store.run("r", {"x": 1}, [], build, resumable=True)
    assert seen == [[], [], ["part"]]
    assert f"[r] resuming from {work}" in logs
    assert not work.exists() and not store.work_dir("r", other.key).exists()
    assert (built.path / "result").exists()

    work.mkdir()  # as if killed after the artifact's rename, before the cleanup
    again = store.run("r", {"x": 1}, [], build, resumable=True)
    assert again.reused and not work.exists()

    forced = ArtifactStore(tmp_path, log=logs.append, force={"r"})
    with pytest.raises(RuntimeError):
        forced.run("r", {"x": 1}, [], lambda o, w: build(o, w, fail=True), resumable=True)
    forced.run("r", {"x": 1}, [], build, resumable=True)
    assert seen[-1] == []  # a forced rebuild starts over


@pytest.mark.slow
def test_a_run_killed_inside_the_ranker_stage_resumes_to_the_same_metrics(tmp_path) -> None:
    out = tmp_path / "out"
    killed = _experiment(out, kill=("ours", KILL_STEP))
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert "[kill] SIGKILL" in killed.stderr
    ranker_dir = out / "artifacts" / "ranker"
    (work,) = ranker_dir.glob("*.in-progress")  # what the kill left: the stage's work directory
    assert not list(ranker_dir.glob("*/artifact.json"))  # and no artifact
    assert sorted(p.name for p in (work / "methods").iterdir()) == ["id_only", "popularity"]
    assert (work / "fit" / "ours.pt").exists()

    resumed = _experiment(out)
    metrics = _metrics(resumed)
    log = resumed.stderr
    for stage in ("data", "split", "embed", "index"):
        assert metrics["stages"][stage]["status"] == "reused", stage
    assert metrics["stages"]["ranker"]["status"] == "built"
    assert f"[ranker] resuming from {work}" in log
    for name in ("popularity", "id_only"):
        assert f"[ranker] reusing {name}" in log and f"training {name}" not in log
    assert f"[ranker] resumed from step {KILL_STEP} " in log
    key = metrics["stages"]["ranker"]["version"]
    manifest = json.loads((ranker_dir / key / "artifact.json").read_text())
    assert manifest["summary"]["methods"]["ours"]["resumed_from_step"] == KILL_STEP
    assert not work.exists()  # cleaned once the artifact is in place
    hashes = _vector_hashes(ranker_dir / key)
    assert "methods/ours/items/part-cold.parquet" in hashes

    # The reference: the same stage rebuilt from scratch in one go (upstream stages reused).
    fresh = _experiment(out, "--force", "ranker", "--force", "evaluate")
    reference = _metrics(fresh)
    assert "resum" not in fresh.stderr
    assert reference["stages"]["ranker"]["key"] == metrics["stages"]["ranker"]["key"]
    assert reference["methods"] == metrics["methods"]
    assert _vector_hashes(ranker_dir / key) == hashes  # the vectors, bit for bit
    fresh_manifest = json.loads((ranker_dir / key / "artifact.json").read_text())
    assert "resumed_from_step" not in fresh_manifest["summary"]["methods"]["ours"]
