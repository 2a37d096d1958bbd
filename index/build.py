"""Offline job: build a store of any registered backend (a FAISS index directory, a Milvus
collection...) from an embedding export, and measure its recall against exact search."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from coldstart.data.embeddings import EmbeddingManifest, read_embeddings
from coldstart.index.backend import InvalidInput, Settings, exact_search
from coldstart.index.registry import DEFAULT, get_backend


def exact_neighbours(
    base: np.ndarray, queries: np.ndarray, k: int, metric: str = "ip"
) -> np.ndarray:
    """Row positions (Q, k) of the exact k nearest rows of `base` (N, D) for `queries` (Q, D)."""
    rows = [
        exact_search(base, queries[lo : lo + 64], k, metric)[1] for lo in range(0, len(queries), 64)
    ]
    return np.concatenate(rows) if rows else np.zeros((0, min(k, len(base))), np.int64)


def recall_at_k(found: list[list[Any]], truth: list[list[Any]], k: int = 10) -> float:
    """Mean over queries of |found[:k] ∩ truth[:k]| / k."""
    hits = [len(set(f[:k]) & set(t[:k])) / k for f, t in zip(found, truth, strict=True)]
    return float(np.mean(hits)) if hits else 0.0


def measure_recall(
    store: Any,
    item_ids: np.ndarray,
    vectors: np.ndarray,
    n_queries: int = 1000,
    k: int = 10,
    seed: int = 0,
) -> float:
    """recall@k of `store` (a VectorStore, or a VectorIndex) against exact search, on queries
    sampled from its own vectors (N, D)."""
    if len(vectors) == 0:
        return 0.0
    schema = store.schema
    prepared = schema.prepare(vectors)
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(prepared), min(n_queries, len(prepared)), replace=False)
    queries = prepared[pick]
    kk = min(k, len(prepared))
    truth_rows = exact_neighbours(prepared, queries, kk, schema.metric)
    ids = np.asarray(item_ids)
    truth = [[schema.normalize_id(i) for i in ids[row]] for row in truth_rows]
    found = store.search(queries, kk, prepared=True).ids
    return recall_at_k(found, truth, kk)


def build_index(
    embeddings: str | os.PathLike,
    out: str | os.PathLike,
    settings: Settings | Any | None = None,
    modality: str | None = None,
    recall_queries: int = 1000,
    backend: str = DEFAULT,
) -> dict[str, Any]:
    """Build a store of backend `backend` (index.registry) at `out` from the export at
    `embeddings`. Returns a report (backend, where it is, n, dim, build_s, recall_at_10...).

    out: the new store's location (faiss: an index directory; milvus: a `.db` file or a URI).
    settings: the backend's YAML sections ({"index": {"factory": "HNSW32"}} for faiss,
    {"milvus": {"index_type": "HNSW"}} for milvus), or its config object (IndexConfig,
    MilvusConfig). dim and id type come from the export.
    """
    chosen = get_backend(backend)
    main = chosen.sections[0]
    if settings is not None and hasattr(settings, "to_dict"):  # a config object
        settings = {main: settings.to_dict()}
    sections = {name: dict(value) for name, value in (settings or {}).items()}
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
    source = {
        "embeddings": str(Path(embeddings).resolve()),
        "encoder": manifest.encoder,
        "weights_sha256": manifest.weights_sha256,
        "modality": modality,
        "count": int(len(ids)),
        "created_at": manifest.created_at,
    }
    sections[main] = {**sections.get(main, {}), "dim": manifest.dim, "id_type": id_type}
    chosen.check(sections)
    start = time.perf_counter()
    built, where = chosen.build(ids.tolist(), vectors, str(out), sections, source)
    build_s = time.perf_counter() - start
    try:
        recall = measure_recall(built, ids, vectors, n_queries=recall_queries)
    finally:
        built.close()
    return {
        "backend": built.backend,
        **where,
        "metric": built.schema.metric,
        "n": int(len(ids)),
        "dim": int(manifest.dim),
        "build_s": round(build_s, 3),
        "recall_at_10": round(recall, 4),
        "recall_queries": int(min(recall_queries, len(ids))),
    }
