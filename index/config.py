"""Config dataclasses for the index and its HTTP server (one per component, YAML 1:1)."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import yaml


@dataclass
class IndexConfig:
    """How a VectorIndex is built and searched.

    factory: a FAISS `index_factory` string ("Flat", "IVF1024,Flat", "HNSW32", "IVF256,PQ16"...).
    metric: "ip" (inner product; cosine when `normalize`) or "l2".
    """

    factory: str = "Flat"
    metric: str = "ip"
    dim: int | None = None  # inferred from the data at build time when None
    normalize: bool = True  # L2-normalize vectors on insert and query (cosine with "ip")
    id_type: str = "int"  # "int" (int64 item ids) or "str"
    nprobe: int | None = 16  # IVF cells visited per query (ignored by non-IVF factories)
    ef_search: int | None = 128  # HNSW beam width at search (ignored by non-HNSW factories)
    train_size: int = 100_000  # vectors sampled to train IVF / PQ quantizers
    seed: int = 0
    # "auto": GPU replicas when faiss-gpu sees a GPU, else search the CPU index directly.
    # "gpu": require a GPU (falls back to CPU with a warning when absent). "clone": a CPU copy
    # refreshed like a GPU replica (exercises the replica code path on CPU). "none": never.
    replica: str = "auto"
    replica_refresh_ops: int = 1024  # refresh the replica after this many pending mutations
    replica_refresh_s: float = 1.0  # ...or after this long with pending mutations
    # Index types that cannot remove ids (HNSW) hide deleted ids with a search-time filter; the
    # index is rebuilt from stored vectors once that many are dead (fraction of live items).
    compact_ratio: float = 0.25

    def __post_init__(self) -> None:
        if self.metric not in ("ip", "l2"):
            raise ValueError(f"metric must be 'ip' or 'l2', got {self.metric!r}")
        if self.id_type not in ("int", "str"):
            raise ValueError(f"id_type must be 'int' or 'str', got {self.id_type!r}")
        if self.replica not in ("auto", "gpu", "clone", "none"):
            raise ValueError(f"replica must be auto|gpu|clone|none, got {self.replica!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> IndexConfig:
        return _from_dict(cls, raw)


@dataclass
class StoreConfig:
    """Durability of a FaissStore (snapshot + write-ahead log in one directory)."""

    fsync: bool = True  # fsync the WAL before acknowledging a write (off only for benchmarks)
    snapshot_every_ops: int = 50_000  # items written to the WAL before an automatic snapshot

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> StoreConfig:
        return _from_dict(cls, raw)


@dataclass
class ServerConfig:
    """The HTTP server: limits, micro-batching and auth."""

    batching: bool = True  # micro-batch concurrent searches into one FAISS call
    max_batch_size: int = 64  # query vectors per FAISS call
    max_wait_ms: float = 1.0  # how long the first query of a batch waits for company
    batch_workers: int = 1  # batches searched at once (each in its own thread)
    # FAISS knobs. faiss_threads: OpenMP threads per search, set in each thread that runs
    # searches (OpenMP settings are per thread); 0 leaves FAISS's default; 1 is best when
    # concurrent requests already fill the cores. blas_threshold (process-wide, at start-up):
    # queries per call from which flat search uses one BLAS matrix product (FAISS 1.15
    # defaults to 128000, i.e. practically never; None leaves it).
    faiss_threads: int = 0
    blas_threshold: int | None = 20
    max_k: int = 1000
    max_vectors_per_request: int = 1024
    max_body_bytes: int = 8 * 1024 * 1024  # larger bodies get 413 (Starlette has no limit)
    max_image_pixels: int = 40_000_000  # decompression-bomb guard (width * height)
    # Video uploads (data.video): encoded bytes, duration stated by the container (checked
    # before any frame is decoded) and frames sampled; frame size is max_image_pixels.
    max_video_bytes: int = 8 * 1024 * 1024
    max_video_seconds: float = 600.0
    video_frames: int = 8
    # Slow clients: a request body must arrive in full within this many seconds of the app
    # first reading it (else 408, connection closed); None: no limit.
    body_timeout_s: float | None = 30.0
    # Connections + in-flight requests served at once; beyond it uvicorn answers 503 (None: no
    # bound). Applied by `coldstart serve` (uvicorn's limit_concurrency).
    max_connections: int | None = 1000
    token_env: str = "COLDSTART_API_TOKEN"  # bearer token for writes, from this env var...
    token_file: str | None = None  # ...or from this file (first line)
    auth_reads: bool = False  # also require the token for reads
    insecure_writes: bool = False  # allow writes without any token configured (local dev)
    id_rows: str | None = None  # embedding export of ID-embedding rows for cold-start estimates
    id_rows_modality: str | None = None

    def __post_init__(self) -> None:
        if self.body_timeout_s is not None and self.body_timeout_s <= 0:
            raise ValueError("body_timeout_s must be > 0 (or null for none)")
        if self.max_connections is not None and self.max_connections < 1:
            raise ValueError("max_connections must be >= 1 (or null for no bound)")

    def token(self) -> str | None:
        """The configured bearer token (file wins over env var), or None."""
        if self.token_file:
            text = Path(self.token_file).read_text().strip().splitlines()
            if not text or not text[0].strip():
                raise ValueError(f"token file {self.token_file} is empty")
            return text[0].strip()
        value = os.environ.get(self.token_env, "").strip()
        return value or None

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> ServerConfig:
        return _from_dict(cls, raw)


def _from_dict(cls: type, raw: dict[str, Any]) -> Any:
    known = {f.name for f in fields(cls)}
    unknown = set(raw) - known
    if unknown:
        raise ValueError(f"unknown {cls.__name__} keys: {sorted(unknown)}")
    return cls(**raw)


def load_yaml(path: str | os.PathLike) -> dict[str, Any]:
    """A YAML config file as a dict (sections: index, store, server)."""
    raw = yaml.safe_load(Path(path).read_text()) or {}
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a mapping at the top level")
    return raw


__all__ = ["IndexConfig", "StoreConfig", "ServerConfig", "load_yaml"]
