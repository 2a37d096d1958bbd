"""Stage builders: each calls the domain package that owns the work and writes one artifact.

Every `build_*` function takes its inputs (upstream artifact directories, config sections) and a
fresh output directory, writes its files there and returns a JSON-able summary for the manifest.
Nothing here re-implements a domain package: when one has not landed yet the stage raises
StagePending and the pipeline records it as such.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from coldstart.experiment.config import (
    DataConfig,
    DimsConfig,
    EmbedConfig,
    EvaluateConfig,
    IndexConfig,
    RankerConfig,
    SplitConfig,
    StabilityConfig,
)
from data.schema import Dataset

# Bump a stage's version when its builder's output changes: old artifacts then stop matching.
VERSIONS = {
    "split": 1,
    "embed": 1,
    "index": 1,
    "ranker": 1,
    "evaluate": 1,
    "stability": 1,
    "dims": 1,
}


class StagePending(RuntimeError):
    """The domain code a stage needs is not available yet (recorded, never faked)."""


def require(module: str, *names: str) -> Any:
    """Import `module` and check it has `names`; StagePending when either is missing."""
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name and (module == exc.name or module.startswith(exc.name + ".")):
            raise StagePending(f"{module} has not landed yet") from exc
        raise
    missing = [n for n in names if not hasattr(mod, n)]
    if missing:
        raise StagePending(f"{module} lacks {', '.join(missing)} (not landed yet)")
    return mod


# --------------------------------------------------------------------------- data + split


def load_dataset(cfg: DataConfig) -> Dataset:
    """The experiment's Dataset: MovieLens (embedded by default) or a generic YAML mapping."""
    if cfg.loader == "movielens":
        from data.movielens import load_movielens

        return load_movielens(cfg.root)
    if cfg.loader == "generic":
        if not cfg.mapping:
            raise ValueError("data.loader 'generic' needs data.mapping: the YAML column mapping")
        generic = require("data.generic", "load_generic")
        return generic.load_generic(cfg.mapping)
    raise ValueError(f"unknown data.loader {cfg.loader!r}; use 'movielens' or 'generic'")


def dataset_fingerprint(dataset: Dataset) -> str:
    """sha256 of the loaded tables, so the split is rebuilt when the data changes."""
    digest = hashlib.sha256()
    for frame in (dataset.items, dataset.interactions):
        text = frame.astype(str)  # list columns (genres) are not hashable as objects
        digest.update(",".join(map(str, frame.columns)).encode())
        digest.update(pd.util.hash_pandas_object(text, index=False).to_numpy().tobytes())
    return digest.hexdigest()


def build_split(dataset: Dataset, cfg: SplitConfig, out: Path) -> dict[str, Any]:
    split_mod = require("data.split", "cold_start_split", "write_split")
    split = split_mod.cold_start_split(dataset, **dataclasses.asdict(cfg))
    manifest = split_mod.write_split(split, out)
    return {k: v for k, v in manifest.items() if k != "files"}


def load_split(split_dir: Path) -> Any:
    return require("data.split", "load_split").load_split(split_dir)


# --------------------------------------------------------------------------- embed


def build_embed(split_dir: Path, cfg: EmbedConfig, data: DataConfig, out: Path) -> dict[str, Any]:
    raise StagePending("encoders.create_encoder has not landed yet")


def content_vectors(embed_dir: Path, item_ids: np.ndarray) -> np.ndarray:
    """(N, D) float32 fused content vectors aligned to `item_ids` (zeros where absent)."""
    from data.embeddings import read_embeddings

    ids, vectors = read_embeddings(embed_dir, "fused")
    row = {v: i for i, v in enumerate(ids.tolist())}
    out = np.zeros((len(item_ids), vectors.shape[1]), dtype=np.float32)
    for i, item in enumerate(np.asarray(item_ids).tolist()):
        j = row.get(item)
        if j is not None:
            out[i] = vectors[j]
    return out


# --------------------------------------------------------------------------- index


def build_index(split_dir: Path, embed_dir: Path, cfg: IndexConfig, out: Path) -> dict[str, Any]:
    require("index", "VectorIndex")
    raise StagePending("index stage wiring waits for index.VectorIndex")


# --------------------------------------------------------------------------- ranker + evaluate


def build_ranker(split_dir: Path, embed_dir: Path, cfg: RankerConfig, out: Path) -> dict[str, Any]:
    require("ranker.methods")
    raise StagePending("ranker stage wiring waits for ranker.methods")


def build_evaluate(ranker_dir: Path, cfg: EvaluateConfig, out: Path) -> dict[str, Any]:
    raise StagePending("evaluate waits for the ranker stage")


# --------------------------------------------------------------------------- analyses


def build_stability(
    split_dir: Path,
    embed_dir: Path,
    cfg: StabilityConfig,
    ranker: RankerConfig,
    index: IndexConfig,
    out: Path,
) -> dict[str, Any]:
    require("ranker.methods")
    raise StagePending("stability waits for ranker.methods")


def build_dims(
    split_dir: Path,
    embed_dir: Path,
    cfg: DimsConfig,
    ranker: RankerConfig,
    index: IndexConfig,
    out: Path,
) -> dict[str, Any]:
    require("ranker.methods")
    raise StagePending("dims waits for ranker.methods")
