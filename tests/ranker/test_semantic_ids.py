"""Semantic IDs from residual k-means of content."""

from __future__ import annotations

import numpy as np
import torch

from coldstart.data.synthetic import clustered_vectors
from coldstart.ranker.semantic_ids import (
    SemanticIDConfig,
    SemanticIDEmbedding,
    code_collision_rate,
    encode_residual,
    prefix_coverage,
    prefix_rows,
    residual_kmeans,
    unique_suffix,
)


def test_codes_follow_content_clusters_and_suffix_makes_them_unique() -> None:
    vectors, labels = clustered_vectors(600, 16, n_clusters=8, spread=0.05, seed=0)
    codes, books = residual_kmeans(vectors, SemanticIDConfig(levels=2, codewords=16, iterations=15))
    assert codes.shape == (600, 2) and len(books) == 2
    # Level 1 follows the clusters: the items sharing a first token come from one cluster.
    tokens = np.unique(codes[:, 0])
    purity = sum(np.bincount(labels[codes[:, 0] == t]).max() for t in tokens) / len(labels)
    assert purity > 0.95
    np.testing.assert_array_equal(encode_residual(vectors, books), codes)
    suffix = unique_suffix(codes)
    full = np.concatenate([codes, suffix[:, None]], axis=1)
    assert len(np.unique(full, axis=0)) == 600
    assert 0.0 < code_collision_rate(codes) <= 1.0


def test_prefix_rows_share_rows_and_coverage() -> None:
    codes = np.array([[0, 1], [0, 2], [1, 1], [0, 1]])
    rows, n = prefix_rows(codes)
    assert n == 2 + 3  # prefixes (0), (1); (0,1), (0,2), (1,1)
    assert rows[0, 0] == rows[1, 0] != rows[2, 0]
    assert rows[0, 1] == rows[3, 1] != rows[1, 1]
    cov = prefix_coverage(
        codes, seen=np.array([True, False, False, False]), query=np.array([False, True, True, True])
    )
    assert cov == {"prefix1": 2 / 3, "prefix2": 1 / 3}
    emb = SemanticIDEmbedding(rows, n, 4)
    with torch.no_grad():
        emb.table.weight[:n].normal_()
    out = emb(torch.tensor([0, 3, 1]))
    torch.testing.assert_close(out[0], out[1])  # same code, same vector
    assert not torch.allclose(out[0], out[2])
