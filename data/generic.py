"""Dataset entry point: `load_dataset(name_or_config)`."""

from __future__ import annotations

import os
from pathlib import Path

from data.schema import Dataset


def load_dataset(
    name_or_config: str | os.PathLike, root: str | os.PathLike | None = None
) -> Dataset:
    """'movielens' (embedded copy, or `root`), 'synthetic', or a YAML dataset config path."""
    name = str(name_or_config)
    if name == "movielens":
        from data.movielens import load_movielens

        return load_movielens(root)
    if name == "synthetic":
        from data.synthetic import make_synthetic

        return make_synthetic().dataset
    if Path(name).suffix in (".yaml", ".yml"):
        raise NotImplementedError("generic YAML datasets land in the next commit")
    raise ValueError(f"unknown dataset {name!r}: use movielens, synthetic or a YAML config path")
