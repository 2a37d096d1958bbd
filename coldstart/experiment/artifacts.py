"""Versioned, content-addressed stage artifacts.

A stage's key is the sha256 of (stage name, stage version, its config section, the keys of its
upstream artifacts). Its artifact lives in `<root>/artifacts/<stage>/<key[:16]>/` with a
artifact.json (its manifest) written last: a directory with one is complete and is reused; one without
(a killed run) is rebuilt. Changing one section therefore reruns that stage and everything
downstream of it, and nothing upstream.

A resumable stage (`run(..., resumable=True)`) also gets a work directory keyed like its
artifact, `<root>/artifacts/<stage>/<key[:16]>.in-progress/`, that outlives a killed build: what
the builder keeps there (finished parts, training checkpoints) the next build of the same key
picks up. It is removed once the artifact is in place; a changed key never sees it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from coldstart.data.embeddings import atomic_write_json, remove_stale_temps, temp_sibling, utc_now

MANIFEST = "artifact.json"  # not manifest.json: stage outputs (split, export) own that name


def stable_hash(obj: Any) -> str:
    """sha256 of a JSON-serialisable object, independent of dict order."""
    payload = json.dumps(obj, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(payload.encode()).hexdigest()


@dataclass
class Artifact:
    """A finished stage output: its directory, key and manifest."""

    stage: str
    key: str
    path: Path
    manifest: dict[str, Any]
    reused: bool = False
    seconds: float = 0.0  # wall time of this run's call (tiny when reused)

    @property
    def version(self) -> str:
        return self.key[:16]

    def summary(self) -> dict[str, Any]:
        """What metrics.json and the report record per stage."""
        return {
            "key": self.key,
            "version": self.version,
            "path": str(self.path),
            "reused": self.reused,
            "seconds": round(self.seconds, 3),
            "build_seconds": self.manifest.get("build_seconds"),
            "upstream": {
                name: info["key"][:16] for name, info in self.manifest.get("upstream", {}).items()
            },
        }


@dataclass
class ArtifactStore:
    """Directory of stage artifacts; `run` builds a stage or reuses its cached artifact."""

    root: Path
    log: Callable[[str], None] = print
    force: set[str] = field(default_factory=set)  # stage names to rebuild regardless

    def key(self, stage: str, version: int, config: Any, upstream: list[Artifact]) -> str:
        return stable_hash(
            {
                "stage": stage,
                "version": version,
                "config": config,
                "upstream": {a.stage: a.key for a in upstream},
            }
        )

    def run(
        self,
        stage: str,
        config: Any,
        upstream: list[Artifact],
        build: Callable[..., dict[str, Any]],
        version: int = 1,
        resumable: bool = False,
    ) -> Artifact:
        """Return the artifact of `stage` for this config and upstream, building it if needed.

        build(tmp_dir) writes the stage's files into tmp_dir and returns a JSON-able summary that
        goes into the manifest. The directory is renamed into place only after build returns,
        so a crash never leaves a half artifact that looks complete.
        resumable: call build(tmp_dir, work_dir) instead, with the stage's work directory (see
        the module docstring); a forced rebuild (`force`) empties it first.
        """
        start = time.perf_counter()
        key = self.key(stage, version, config, upstream)
        final = self.root / "artifacts" / stage / key[:16]
        manifest_path = final / MANIFEST
        if manifest_path.exists() and stage not in self.force:
            manifest = json.loads(manifest_path.read_text())
            if manifest.get("key") == key:
                self.log(f"[{stage}] reusing {final}")
                if resumable:  # a kill between the rename and the cleanup left it behind
                    shutil.rmtree(self.work_dir(stage, key), ignore_errors=True)
                return Artifact(
                    stage, key, final, manifest, reused=True, seconds=time.perf_counter() - start
                )
        self.log(f"[{stage}] building {final}")
        remove_stale_temps(final.parent)  # builds cut short by kill -9
        tmp = temp_sibling(final)
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
        work = self.work_dir(stage, key)
        if resumable:
            if stage in self.force and work.exists():
                shutil.rmtree(work)
            if work.exists() and any(work.iterdir()):
                self.log(f"[{stage}] resuming from {work}")
            work.mkdir(parents=True, exist_ok=True)
        try:
            summary = (build(tmp, work) if resumable else build(tmp)) or {}
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        seconds = time.perf_counter() - start
        manifest = {
            "stage": stage,
            "key": key,
            "version": version,
            "config": config,
            "upstream": {a.stage: {"key": a.key, "path": str(a.path)} for a in upstream},
            "created_at": utc_now(),
            "build_seconds": round(seconds, 3),
            "summary": summary,
        }
        atomic_write_json(tmp / MANIFEST, manifest)
        if final.exists():  # an incomplete leftover or a forced rebuild
            shutil.rmtree(final)
        os.replace(tmp, final)
        if resumable:
            shutil.rmtree(work, ignore_errors=True)
        return Artifact(stage, key, final, manifest, reused=False, seconds=seconds)

    def work_dir(self, stage: str, key: str) -> Path:
        """The work directory a resumable build of `stage` at `key` keeps across kills."""
        return self.root / "artifacts" / stage / f"{key[:16]}.in-progress"
