"""Cold-start estimates: an ID-embedding row for a new item from its warm neighbours."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from coldstart.data.embeddings import read_embeddings


def neighbour_weights(scores: np.ndarray, metric: str = "ip") -> np.ndarray:
    """Weights (k,) summing to 1 from neighbour scores (k,).

    ip: similarities clipped at 0 (dissimilar neighbours carry no weight); l2: 1 / (1 + d).
    Uniform when every weight is 0.
    """
    scores = np.asarray(scores, dtype=np.float64)
    if scores.size == 0:
        return scores
    raw = np.clip(scores, 0.0, None) if metric == "ip" else 1.0 / (1.0 + np.clip(scores, 0, None))
    total = raw.sum()
    return raw / total if total > 0 else np.full(len(raw), 1.0 / len(raw))


def estimate_row(rows: np.ndarray, scores: np.ndarray, metric: str = "ip") -> np.ndarray:
    """Similarity-weighted mean (E,) of the neighbours' ID-embedding rows (k, E)."""
    weights = neighbour_weights(scores, metric)
    return (weights[:, None] * np.asarray(rows, dtype=np.float64)).sum(0).astype(np.float32)


class IdRows:
    """ID-embedding rows of warm items (e.g. the ranker's item table), looked up by item id."""

    def __init__(self, ids: list[Any], rows: np.ndarray) -> None:
        rows = np.asarray(rows, dtype=np.float32)
        if rows.ndim != 2 or len(rows) != len(ids):
            raise ValueError(f"{len(ids)} ids but rows of shape {rows.shape}")
        self.rows = rows  # (N, E)
        self.dim = rows.shape[1]
        self._pos = {i: n for n, i in enumerate(ids)}

    @classmethod
    def from_export(cls, directory: str | os.PathLike, modality: str | None = None) -> IdRows:
        ids, rows = read_embeddings(directory, modality)
        return cls(ids.tolist(), rows)

    def __contains__(self, item_id: object) -> bool:
        return item_id in self._pos

    def lookup(self, ids: list[Any]) -> tuple[np.ndarray, np.ndarray]:
        """(rows (M, E) of the ids that have one, boolean mask (len(ids),) of which did)."""
        mask = np.array([i in self._pos for i in ids], dtype=bool)
        pos = [self._pos[i] for i, m in zip(ids, mask, strict=True) if m]
        return self.rows[pos], mask
