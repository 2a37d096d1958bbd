"""Parquet helpers for item and interaction tables.

Why a helper: list columns (genres, tags) must round-trip as Python lists of strings, an
all-empty or all-None column must keep a usable Arrow type, and a killed job must never leave a
half-written file (temp file + rename).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from coldstart.data.embeddings import fsync_path, temp_sibling
from coldstart.data.schema import (
    EVENT,
    GENRES,
    MEDIA_KEY,
    REQUEST_ID,
    TAGS,
    TEXT,
    TIMESTAMP,
    TITLE,
    VALUE,
)

LIST_COLUMNS = (GENRES, TAGS)  # list[str] columns of the catalogue
# Arrow types for known columns, so that e.g. an all-None `text` column is still a string column.
_KNOWN_TYPES: dict[str, pa.DataType] = {
    TITLE: pa.string(),
    TEXT: pa.string(),
    MEDIA_KEY: pa.string(),
    EVENT: pa.string(),
    TIMESTAMP: pa.int64(),
    VALUE: pa.float32(),
    REQUEST_ID: pa.int64(),
    GENRES: pa.list_(pa.string()),
    TAGS: pa.list_(pa.string()),
}


def _as_str_list(value: object) -> list[str] | None:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    if isinstance(value, str):
        return [value]
    return [str(v) for v in list(value)]  # list, tuple, numpy array


def to_arrow(df: pd.DataFrame) -> pa.Table:
    """DataFrame -> Arrow table with stable types for the schema's known columns."""
    arrays, names = [], []
    for name in df.columns:
        column = df[name]
        if name in LIST_COLUMNS:
            array = pa.array([_as_str_list(v) for v in column], type=pa.list_(pa.string()))
        elif name in _KNOWN_TYPES and column.isna().all():
            array = pa.nulls(len(column), type=_KNOWN_TYPES[name])
        elif column.dtype == object or pd.api.types.is_string_dtype(column.dtype):
            # Mixed object columns (ids as str) -> string; None stays null.
            values = [
                None if (v is None or (isinstance(v, float) and np.isnan(v))) else v for v in column
            ]
            try:
                array = pa.array(values)
            except (pa.ArrowInvalid, pa.ArrowTypeError):
                array = pa.array([None if v is None else str(v) for v in values], type=pa.string())
        else:
            array = pa.Array.from_pandas(column)
        arrays.append(array)
        names.append(str(name))
    return pa.Table.from_arrays(arrays, names=names)


def from_arrow(table: pa.Table) -> pd.DataFrame:
    """Arrow table -> DataFrame; list columns come back as Python lists (empty list for null)."""
    columns: dict[str, object] = {}
    for name in table.column_names:
        column = table.column(name)
        if pa.types.is_list(column.type) or pa.types.is_large_list(column.type):
            columns[name] = pd.Series(
                [list(v) if v is not None else [] for v in column.to_pylist()], dtype=object
            )
        elif pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
            columns[name] = pd.Series(column.to_pylist(), dtype=object)
        else:
            columns[name] = column.to_pandas()
    return pd.DataFrame(columns)


def write_table(df: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Atomically write `df` as Parquet at `path` (temp file + fsync + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_sibling(path)
    pq.write_table(to_arrow(df.reset_index(drop=True)), tmp)
    with open(tmp, "rb") as handle:
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    fsync_path(path.parent)
    return path


def read_table(path: str | os.PathLike, columns: list[str] | None = None) -> pd.DataFrame:
    """Read a Parquet file written by `write_table` (or any Parquet file) into a DataFrame."""
    return from_arrow(pq.read_table(path, columns=columns))


def read_any(path: str | os.PathLike, **csv_kwargs: object) -> pd.DataFrame:
    """Read a CSV/TSV (all columns as strings, nothing parsed) or a Parquet file."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in (".parquet", ".pq"):
        return read_table(path)
    if suffix in (".tsv", ".tab"):
        csv_kwargs.setdefault("sep", "\t")
    csv_kwargs.setdefault("dtype", str)
    csv_kwargs.setdefault("keep_default_na", False)
    return pd.read_csv(path, **csv_kwargs)


__all__ = ["LIST_COLUMNS", "from_arrow", "read_any", "read_table", "to_arrow", "write_table"]
