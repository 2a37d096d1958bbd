"""Offline job: build an index directory from an embedding export, and measure its recall."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from data.embeddings import EmbeddingManifest, read_embeddings
from index.config import IndexConfig, StoreConfig
from index.store import DurableIndex
from index.vector_index import InvalidInput, VectorIndex, _faiss


def exact_neighbours(
    base: np.ndarray, queries: np.ndarray, k: int, metric: str = "ip"
) -> np.ndarray:
    """Row positions (Q, k) of the exact k nearest rows of `base` (N, D) for `queries` (Q, D)."""
    faiss = _faiss()
    flat = faiss.IndexFlatIP(base.shape[1]) if metric == "ip" else faiss.IndexFlatL2(base.shape[1])
    flat.add(np.ascontiguousarray(base, dtype=np.float32))
    return flat.search(np.ascontiguousarray(queries, dtype=np.float32), k)[1]


def recall_at_k(found: list[list[Any]], truth: list[list[Any]], k: int = 10) -> float:
    """Mean over queries of |found[:k] ∩ truth[:k]| / k."""
    hits = [len(set(f[:k]) & set(t[:k])) / k for f, t in zip(found, truth, strict=True)]
    return float(np.mean(hits)) if hits else 0.0


def measure_recall(
    index: VectorIndex,
    item_ids: np.ndarray,
    vectors: np.ndarray,
    n_queries: int = 1000,
    k: int = 10,
    seed: int = 0,
) -> float:
    """recall@k of `index` against exact search, on queries sampled from its own vectors."""
    if len(vectors) == 0:
        return 0.0
    prepared = index.prepare(vectors)
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(prepared), min(n_queries, len(prepared)), replace=False)
    queries = prepared[pick]
    kk = min(k, len(prepared))
    truth_rows = exact_neighbours(prepared, queries, kk, index.config.metric)
    ids = np.asarray(item_ids)
    truth = [[index.normalize_id(i) for i in ids[row]] for row in truth_rows]
    found = index.search(queries, kk, prepared=True).ids
    return recall_at_k(found, truth, kk)


def build_index(
    embeddings: str | os.PathLike,
    out: str | os.PathLike,
    config: IndexConfig,
    modality: str | None = None,
    store: StoreConfig | None = None,
    recall_queries: int = 1000,
) -> dict[str, Any]:
    """Build `out` from the export at `embeddings`. Returns a report (n, dim, build_s, recall)."""
    manifest = EmbeddingManifest.load(embeddings)
    if modality is None and len(manifest.modalities) > 1:
        raise InvalidInput(
            f"the export holds modalities {manifest.modalities}: choose one with --modality"
        )
    ids, vectors = read_embeddings(embeddings, modality)
    if len(ids) == 0:
        raise InvalidInput(f"no embeddings in {embeddings} (modality={modality})")
    if len(np.unique(ids)) != len(ids):
        raise InvalidInput("duplicate item ids in the export")
    id_type = "int" if np.asarray(ids).dtype.kind in "iu" else "str"
    config = IndexConfig.from_dict({**config.to_dict(), "dim": manifest.dim, "id_type": id_type})
    start = time.perf_counter()
    index = VectorIndex.build(ids.tolist(), vectors, config)
    build_s = time.perf_counter() - start
    recall = measure_recall(index, ids, vectors, n_queries=recall_queries)
    source = {
        "embeddings": str(Path(embeddings).resolve()),
        "encoder": manifest.encoder,
        "weights_sha256": manifest.weights_sha256,
        "modality": modality,
        "count": int(len(ids)),
        "created_at": manifest.created_at,
    }
    durable = DurableIndex.create(out, index, store, source=source)
    durable.close(snapshot=False)
    return {
        "index": str(out),
        "factory": config.factory,
        "metric": config.metric,
        "n": int(len(ids)),
        "dim": int(manifest.dim),
        "build_s": round(build_s, 3),
        "recall_at_10": round(recall, 4),
        "recall_queries": int(min(recall_queries, len(ids))),
    }
