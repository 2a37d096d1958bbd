"""Embedding exports: `part-*.parquet` (item_id, modality, vector) + manifest.json.

One input shard -> one output part, each written atomically (temp file + rename), so a killed
job leaves either a complete part or none. The manifest is rewritten atomically after each part.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

MANIFEST = "manifest.json"


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


_TEMP_MARK = ".tmp-"


def temp_sibling(path: str | os.PathLike) -> Path:
    """The hidden temp name beside `path` that this process writes before renaming onto it.

    `.<name>.tmp-<pid>`: the pid lets `remove_stale_temps` tell a dead writer's leftover from a
    live writer's file in progress.
    """
    path = Path(path)
    return path.with_name(f".{path.name}{_TEMP_MARK}{os.getpid()}")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    return True


def remove_stale_temps(directory: str | os.PathLike) -> list[Path]:
    """Delete the `temp_sibling` files (or directories) in `directory` whose writer is gone.

    A writer killed between writing its temp and renaming it leaves the temp behind; a
    resumed job (or a reopened index) calls this first. Files of live processes (another rank) are kept. Returns the
    removed paths.
    """
    removed: list[Path] = []
    directory = Path(directory)
    if not directory.is_dir():
        return removed
    for path in directory.glob(f".*{_TEMP_MARK}*"):
        pid = path.name.rsplit(_TEMP_MARK, 1)[1]
        if pid.isdigit() and int(pid) != os.getpid() and not _pid_alive(int(pid)):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def atomic_write_bytes(path: str | os.PathLike, payload: bytes) -> None:
    """Write `payload` to `path` via a temp file, fsync and rename (readers never see halves)."""
    path = Path(path)
    tmp = temp_sibling(path)
    with open(tmp, "wb") as handle:
        handle.write(payload)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    fsync_path(path.parent)


def jsonable(obj: Any) -> Any:
    """A JSON-safe copy of `obj`: numpy arrays and scalars become lists and numbers, anything
    else unknown its str()."""
    return json.loads(
        json.dumps(obj, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o))
    )


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def fsync_path(path: str | os.PathLike) -> None:
    """fsync a file or a directory by path (a directory's fsync makes a rename in it durable)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


@dataclass
class PartInfo:
    name: str  # file name, e.g. part-00003.parquet
    source: str  # the input shard (or catalogue) it came from
    count: int
    sha256: str


@dataclass
class EmbeddingManifest:
    encoder: str
    encoder_config: dict[str, Any]
    weights_sha256: str
    dim: int
    normalized: bool
    modalities: list[str]
    count: int = 0
    parts: list[PartInfo] = field(default_factory=list)
    source_shards: list[str] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> count
    created_at: str = field(default_factory=utc_now)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> EmbeddingManifest:
        raw = dict(raw)
        raw["parts"] = [PartInfo(**p) for p in raw.get("parts", [])]
        return cls(**raw)

    def save(self, directory: str | os.PathLike) -> None:
        self.count = sum(p.count for p in self.parts)
        atomic_write_json(Path(directory) / MANIFEST, self.to_dict())

    @classmethod
    def load(cls, directory: str | os.PathLike) -> EmbeddingManifest:
        path = Path(directory) / MANIFEST
        if not path.exists():
            raise FileNotFoundError(f"{directory} is not an embedding export: no {MANIFEST}")
        return cls.from_dict(json.loads(path.read_text()))


def _id_array(item_ids: Any) -> pa.Array:
    ids = np.asarray(item_ids)
    if ids.dtype.kind in "iu":
        return pa.array(ids.astype(np.int64), type=pa.int64())
    return pa.array([str(i) for i in ids], type=pa.string())


def embedding_table(item_ids: Any, modalities: Any, vectors: np.ndarray) -> pa.Table:
    """Arrow table with the export schema. vectors: (N, D) float32."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if vectors.ndim != 2:
        raise ValueError(f"vectors must be (N, D), got shape {vectors.shape}")
    n, dim = vectors.shape
    if isinstance(modalities, str):
        modalities = [modalities] * n
    flat = pa.array(vectors.reshape(-1), type=pa.float32())
    return pa.table(
        {
            "item_id": _id_array(item_ids),
            "modality": pa.array(list(modalities), type=pa.string()),
            "vector": pa.FixedSizeListArray.from_arrays(flat, dim),
        }
    )


def write_part(
    directory: str | os.PathLike,
    name: str,
    item_ids: Any,
    modalities: Any,
    vectors: np.ndarray,
    source: str = "",
) -> PartInfo:
    """Atomically write one Parquet part and return its manifest entry."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    table = embedding_table(item_ids, modalities, vectors)
    path = directory / name
    tmp = temp_sibling(path)
    pq.write_table(table, tmp)
    with open(tmp, "rb") as handle:
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    fsync_path(directory)
    return PartInfo(name=name, source=source, count=table.num_rows, sha256=sha256_file(path))


def read_embeddings(
    directory: str | os.PathLike, modality: str | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Read an export. Returns (item_ids (N,), vectors (N, D) float32), parts in manifest order.

    modality: keep only rows of that modality (e.g. "fused", "image", "text"); None keeps all.
    """
    manifest = EmbeddingManifest.load(directory)
    ids: list[np.ndarray] = []
    vecs: list[np.ndarray] = []
    for part in manifest.parts:
        table = pq.read_table(Path(directory) / part.name)
        if modality is not None:
            mask = np.asarray(table.column("modality").to_pylist()) == modality
            table = table.filter(pa.array(mask))
        if table.num_rows == 0:
            continue
        ids.append(table.column("item_id").to_numpy(zero_copy_only=False))
        flat = table.column("vector").combine_chunks().flatten().to_numpy()
        vecs.append(flat.reshape(table.num_rows, manifest.dim).astype(np.float32, copy=False))
    if not ids:
        return np.zeros((0,), dtype=np.int64), np.zeros((0, manifest.dim), dtype=np.float32)
    return np.concatenate(ids), np.concatenate(vecs)
