"""Semantic IDs: a short code of cluster tokens per item, learned from its content.

Residual k-means: level 1 clusters the content vectors into K codewords, level 2 clusters the
residuals, and so on for L levels. Items with similar content share code prefixes, so a brand-new
item's prefixes usually already have trained embedding rows. Items that share the whole code get
a suffix (0, 1, 2, ...) that makes every code unique; the embedding itself uses prefixes only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from coldstart.ranker.tables import create_summed_rows


@dataclass
class SemanticIDConfig:
    levels: int = 3
    codewords: int = 64
    iterations: int = 20
    seed: int = 0


def residual_kmeans(
    vectors: np.ndarray, config: SemanticIDConfig
) -> tuple[np.ndarray, list[np.ndarray]]:
    """Codes (N, L) int64 and the L codebooks (K, D) from residual k-means of vectors (N, D)."""
    import faiss  # heavy import kept local

    x = np.ascontiguousarray(vectors, dtype=np.float32)
    if x.ndim != 2 or len(x) == 0:
        raise ValueError(f"vectors must be a non-empty (N, D) array, got {x.shape}")
    residual = x.copy()
    codes = np.zeros((len(x), config.levels), dtype=np.int64)
    books: list[np.ndarray] = []
    for level in range(config.levels):
        k = min(config.codewords, len(x))
        km = faiss.Kmeans(
            x.shape[1], k, niter=config.iterations, seed=config.seed + level, verbose=False
        )
        km.cp.min_points_per_centroid = 1  # small catalogues: no warnings, no skipped levels
        km.train(residual)
        _, assign = km.index.search(residual, 1)
        codes[:, level] = assign[:, 0]
        residual -= km.centroids[assign[:, 0]]
        books.append(km.centroids.copy())
    return codes, books


def encode_residual(vectors: np.ndarray, books: list[np.ndarray]) -> np.ndarray:
    """Codes (N, L) for new vectors with trained codebooks (greedy residual assignment)."""
    residual = np.ascontiguousarray(vectors, dtype=np.float32).copy()
    codes = np.zeros((len(residual), len(books)), dtype=np.int64)
    for level, book in enumerate(books):
        d = (residual**2).sum(1, keepdims=True) - 2 * residual @ book.T + (book**2).sum(1)[None]
        codes[:, level] = d.argmin(1)
        residual -= book[codes[:, level]]
    return codes


def unique_suffix(codes: np.ndarray) -> np.ndarray:
    """(N,) int64 suffix making (codes, suffix) unique: 0 for the first item of a code, 1, ..."""
    _, inverse = np.unique(codes, axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    suffix = np.zeros(len(codes), dtype=np.int64)
    seen: dict[int, int] = {}
    for n, g in enumerate(inverse.tolist()):
        suffix[n] = seen.get(g, 0)
        seen[g] = suffix[n] + 1
    return suffix


def code_collision_rate(codes: np.ndarray) -> float:
    """Share of items whose full code (before the suffix) is shared with another item."""
    _, inverse, counts = np.unique(codes, axis=0, return_inverse=True, return_counts=True)
    return float((counts[inverse.reshape(-1)] > 1).mean()) if len(codes) else 0.0


def prefix_rows(codes: np.ndarray) -> tuple[np.ndarray, int]:
    """Map each item's prefix of length l (l = 1..L) to a dense row id shared across items.

    Returns (N, L) int64 rows into one table and the number of rows.
    """
    n, levels = codes.shape
    rows = np.zeros((n, levels), dtype=np.int64)
    offset = 0
    for level in range(levels):
        _, inverse = np.unique(codes[:, : level + 1], axis=0, return_inverse=True)
        inverse = inverse.reshape(-1)
        rows[:, level] = inverse + offset
        offset += int(inverse.max()) + 1
    return rows, offset


def prefix_coverage(codes: np.ndarray, seen: np.ndarray, query: np.ndarray) -> dict[str, float]:
    """For items `query` (bool mask or index), the share whose prefix of length l occurs among
    items `seen` (the items with training interactions), per l = 1..L."""
    out = {}
    for level in range(codes.shape[1]):
        known = {tuple(c) for c in codes[seen, : level + 1].tolist()}
        q = codes[query, : level + 1].tolist()
        out[f"prefix{level + 1}"] = (
            float(np.mean([tuple(c) in known for c in q])) if q else float("nan")
        )
    return out


class SemanticIDEmbedding(nn.Module):
    """Sum of the prefix-embeddings of each item's code. forward(item_rows (N,)) -> (N, D).

    Rows start at zero, so an item begins at its content projection and prefixes learn a shared
    correction from the items that carry them. With tables="torchrec" the table is one sum-pooled
    EmbeddingBagCollection feature over the item's L prefix rows.
    """

    def __init__(
        self, item_prefix_rows: np.ndarray, num_rows: int, dim: int, tables: str = "torch"
    ) -> None:
        super().__init__()
        self.register_buffer(
            "item_prefix_rows", torch.as_tensor(item_prefix_rows, dtype=torch.int64)
        )
        # One extra always-zero row (padding_idx) for prefixes never seen when the table was built.
        self.unknown_row = int(num_rows)
        self.table = create_summed_rows(num_rows + 1, dim, self.unknown_row, tables, "item_sid")

    def forward(self, item_rows: torch.Tensor) -> torch.Tensor:
        return self.table(self.item_prefix_rows[item_rows])
