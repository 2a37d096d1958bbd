"""A one-part embedding export (data.embeddings' format) for tests that need a real one."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from coldstart.data.embeddings import EmbeddingManifest, write_part


def write_export(
    directory: Path,
    ids: Sequence | np.ndarray,
    vectors: np.ndarray,
    modality: str = "fused",
    encoder: str = "test",
    normalized: bool = True,
) -> Path:
    """Write `vectors` (N, D) for `ids` as part-00000.parquet + manifest.json; returns directory."""
    part = write_part(directory, "part-00000.parquet", ids, modality, vectors, source="test")
    EmbeddingManifest(
        encoder=encoder,
        encoder_config={},
        weights_sha256="0" * 64,
        dim=int(vectors.shape[1]),
        normalized=normalized,
        modalities=[modality],
        parts=[part],
    ).save(directory)
    return Path(directory)
