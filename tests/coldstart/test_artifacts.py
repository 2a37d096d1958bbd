"""The artifact store: same inputs reuse, changed inputs rebuild, half-built dirs never count."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from coldstart.experiment.artifacts import ArtifactStore, stable_hash


def _builder(calls: list[str], name: str):
    def build(out):
        calls.append(name)
        (out / "value.txt").write_text(name)
        return {"name": name}

    return build


def test_same_config_and_upstream_reuses(tmp_path):
    store = ArtifactStore(tmp_path, log=lambda m: None)
    calls: list[str] = []
    a = store.run("a", {"x": 1}, [], _builder(calls, "a"))
    b = store.run("b", {"y": 1}, [a], _builder(calls, "b"))
    a2 = store.run("a", {"x": 1}, [], _builder(calls, "a"))
    b2 = store.run("b", {"y": 1}, [a2], _builder(calls, "b"))
    assert calls == ["a", "b"]
    assert a2.reused and b2.reused and not a.reused
    assert (a2.key, b2.key) == (a.key, b.key)
    manifest = json.loads((b.path / "artifact.json").read_text())
    assert manifest["upstream"]["a"]["key"] == a.key
    assert manifest["summary"] == {"name": "b"}


def test_changed_section_reruns_only_downstream(tmp_path):
    store = ArtifactStore(tmp_path, log=lambda m: None)
    calls: list[str] = []
    a = store.run("a", {"x": 1}, [], _builder(calls, "a"))
    store.run("b", {"y": 1}, [a], _builder(calls, "b"))
    # Change b's section: a is reused, b rebuilt into a new versioned directory.
    a2 = store.run("a", {"x": 1}, [], _builder(calls, "a"))
    b3 = store.run("b", {"y": 2}, [a2], _builder(calls, "b"))
    assert calls == ["a", "b", "b"] and not b3.reused
    # Change a's section: b's key changes too even with the same section of its own.
    a4 = store.run("a", {"x": 2}, [], _builder(calls, "a"))
    b4 = store.run("b", {"y": 2}, [a4], _builder(calls, "b"))
    assert calls == ["a", "b", "b", "a", "b"]
    assert b4.key != b3.key and b4.path != b3.path


def test_incomplete_artifact_is_rebuilt_and_failures_leave_nothing(tmp_path):
    store = ArtifactStore(tmp_path, log=lambda m: None)
    calls: list[str] = []
    a = store.run("a", {"x": 1}, [], _builder(calls, "a"))
    (a.path / "artifact.json").unlink()  # as if killed before the manifest was written
    again = store.run("a", {"x": 1}, [], _builder(calls, "a"))
    assert calls == ["a", "a"] and not again.reused

    def boom(out):
        (out / "half").write_text("x")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        store.run("c", {}, [], boom)
    assert not list((tmp_path / "artifacts" / "c").iterdir())


def test_a_killed_build_leaves_no_temp_directory_behind(tmp_path):
    """A build killed by SIGKILL cannot clean up; the next run of any stage there removes its
    temp directory (the dead pid tells it apart from a live writer's)."""
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    stage_dir = tmp_path / "artifacts" / "a"
    stale = stage_dir / f".0123456789abcdef.tmp-{int(dead.stdout)}"
    live = stage_dir / f".fedcba9876543210.tmp-{os.getppid()}"
    for temp in (stale, live):
        temp.mkdir(parents=True)
        (temp / "half").write_text("x")
    store = ArtifactStore(tmp_path, log=lambda m: None)
    built = store.run("a", {"x": 1}, [], _builder([], "a"))
    assert sorted(p.name for p in stage_dir.iterdir()) == sorted([built.path.name, live.name])


def test_stable_hash_ignores_key_order():
    assert stable_hash({"a": 1, "b": [1, 2]}) == stable_hash({"b": [1, 2], "a": 1})
    assert stable_hash({"a": 1}) != stable_hash({"a": 2})
