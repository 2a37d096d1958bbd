"""Generic loader: any CSV/TSV/Parquet interactions + catalogue pair, mapped by a YAML config.

A new data set needs a YAML file, no code. `configs/datasets/example.yaml` documents every key
(it maps the embedded MovieLens CSVs, so it doubles as a working example). In short::

    name: my-shop
    interactions:
      path: events.parquet             # relative to the YAML file
      columns: {user_id: customer, item_id: sku, timestamp: ts, event: action}
      timestamp_format: auto           # auto | unix_s | unix_ms | iso | a strftime format
    items:
      path: catalogue.csv
      columns: {item_id: sku, title: name, text: [description, notes], genres: category}
      list_separator: "|"

Bad rows are counted in `Dataset.reports` (reason -> count), never silently dropped and never
fatal: missing user/item ids, unparsable timestamps or values, duplicate catalogue ids, and
(when `unknown_items: drop`) interactions with items absent from the catalogue.

`load_dataset(name_or_config)` is the one entry for every kind: "movielens", "synthetic", a YAML
path (generic, or `loader: movielens` with a `root`), a dict, or a `DatasetConfig`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from coldstart.data.embeddings import sha256_file
from coldstart.data.io import LIST_COLUMNS, read_any
from coldstart.data.schema import (
    EVENT,
    GENRES,
    INTERACTION_COLUMNS,
    ITEM_COLUMNS,
    ITEM_ID,
    MEDIA_KEY,
    REQUEST_ID,
    TAGS,
    TEXT,
    TIMESTAMP,
    TITLE,
    USER_ID,
    VALUE,
    Dataset,
    LoadReport,
)

_EMPTY = ("", "nan", "NaN", "None", "null", "NULL", "NA", "N/A")


@dataclass
class TableConfig:
    """One source table and how its columns map onto the schema.

    columns: schema column -> source column. For title/text a list of source columns is joined
        with ". ". Keys that are not schema columns are copied as extra columns under that name.
    format: csv | tsv | parquet; None infers it from the suffix.
    read_options: keyword arguments for pandas.read_csv (sep, encoding, skiprows, ...).
    id_type: auto | int | str for user_id/item_id (auto: int64 when every id is an integer).
    timestamp_format: auto | unix_s | unix_ms | iso | a strftime format such as "%Y-%m-%d %H:%M".
    list_separator: splits genres/tags strings into lists (Parquet lists are taken as they are).
    list_null_values: list entries meaning "none", e.g. "(no genres listed)".
    defaults: constant value for a schema column the source lacks, e.g. {event: click, value: 1}.
    """

    path: str
    columns: dict[str, Any] = field(default_factory=dict)
    format: str | None = None
    read_options: dict[str, Any] = field(default_factory=dict)
    id_type: str = "auto"
    timestamp_format: str = "auto"
    list_separator: str = "|"
    list_null_values: list[str] = field(default_factory=list)
    defaults: dict[str, Any] = field(default_factory=dict)


@dataclass
class DatasetConfig:
    """A data set: interactions (required) plus an optional catalogue.

    loader: generic (this module) or movielens (then `root` is an ml-latest-small directory).
    unknown_items: keep | drop | add. Interactions whose item is not in the catalogue are kept
        (keep), dropped and counted (drop), or kept with an empty catalogue row added (add).
    base_dir: relative paths resolve against it (set to the YAML file's folder when loaded).
    """

    name: str = "generic"
    loader: str = "generic"
    root: str | None = None
    interactions: TableConfig | None = None
    items: TableConfig | None = None
    unknown_items: str = "keep"
    base_dir: str | None = None

    @classmethod
    def from_dict(
        cls, raw: dict[str, Any], base_dir: str | os.PathLike | None = None
    ) -> DatasetConfig:
        raw = dict(raw)
        known = {f.name for f in fields(cls)}
        unknown = set(raw) - known
        if unknown:
            raise ValueError(
                f"unknown dataset config keys {sorted(unknown)}; known: {sorted(known)}"
            )
        for key in ("interactions", "items"):
            if isinstance(raw.get(key), dict):
                table = dict(raw[key])
                table_known = {f.name for f in fields(TableConfig)}
                bad = set(table) - table_known
                if bad:
                    raise ValueError(
                        f"unknown keys in {key}: {sorted(bad)}; known: {sorted(table_known)}"
                    )
                raw[key] = TableConfig(**table)
        if base_dir is not None and raw.get("base_dir") is None:
            raw["base_dir"] = str(base_dir)
        return cls(**raw)

    @classmethod
    def from_yaml(cls, path: str | os.PathLike) -> DatasetConfig:
        path = Path(path)
        raw = yaml.safe_load(path.read_text()) or {}
        if not isinstance(raw, dict):
            raise ValueError(f"{path}: a dataset config must be a mapping")
        raw.setdefault("name", path.stem)
        return cls.from_dict(raw, base_dir=path.resolve().parent)

    def resolve(self, path: str) -> Path:
        p = Path(os.path.expanduser(path))
        if not p.is_absolute() and self.base_dir is not None:
            p = Path(self.base_dir) / p
        return p


# --------------------------------------------------------------------------------------------
# column helpers


def _missing(series: pd.Series) -> np.ndarray:
    """(N,) bool: null or an empty / 'nan'-like string."""
    out = series.isna().to_numpy().copy()  # pandas may hand out a read-only view
    if series.dtype == object or pd.api.types.is_string_dtype(series.dtype):
        text = series.astype(str).str.strip()
        out |= text.isin(_EMPTY).to_numpy()
    return out


def _typed_ids(series: pd.Series, id_type: str) -> pd.Series:
    """Ids (no missing values) as int64 or str, following id_type."""
    if id_type not in ("auto", "int", "str"):
        raise ValueError(f"id_type must be auto, int or str; got {id_type!r}")
    if id_type == "str":
        return series.astype(str).str.strip().astype(object)
    if pd.api.types.is_integer_dtype(series.dtype):
        return series.astype(np.int64)
    numeric = pd.to_numeric(series.astype(str).str.strip(), errors="coerce")
    integral = numeric.notna().all() and bool((numeric == numeric.round()).all())
    if integral:
        return numeric.astype(np.int64)
    if id_type == "int":
        raise ValueError("id_type: int, but some ids are not integers")
    return series.astype(str).str.strip().astype(object)


def parse_timestamps(series: pd.Series, fmt: str = "auto") -> pd.Series:
    """Source timestamps -> float seconds since epoch (NaN where unparsable)."""
    if pd.api.types.is_datetime64_any_dtype(series.dtype):
        dt = pd.to_datetime(series, utc=True)
        return (dt - pd.Timestamp(0, tz="UTC")) / pd.Timedelta(seconds=1)
    text = series.astype(str).str.strip()
    if fmt in ("unix_s", "unix_ms") or fmt == "auto":
        numeric = pd.to_numeric(text, errors="coerce")
        if fmt == "unix_ms":
            return numeric / 1000.0
        if fmt == "unix_s":
            return numeric
        # auto: numbers are unix seconds; otherwise try dates, row by row.
        if numeric.notna().sum() >= max(1, int(0.5 * (~_missing(series)).sum())):
            return numeric
    if fmt in ("auto", "iso"):
        dt = pd.to_datetime(
            text, errors="coerce", utc=True, format="ISO8601" if fmt == "iso" else None
        )
    else:
        dt = pd.to_datetime(text, errors="coerce", utc=True, format=fmt)
    return (dt - pd.Timestamp(0, tz="UTC")) / pd.Timedelta(seconds=1)


def _as_list(value: Any, separator: str, nulls: set[str]) -> list[str]:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return []
    if isinstance(value, str):
        parts = value.split(separator) if separator else [value]
    else:
        parts = [str(v) for v in list(value)]
    return [p.strip() for p in parts if p.strip() and p.strip() not in nulls]


def _joined(frame: pd.DataFrame, sources: list[str]) -> pd.Series:
    """Join several text columns with '. ', skipping empty parts; None when all are empty."""

    def join(row: tuple) -> str | None:
        parts = [str(v).strip() for v in row if v is not None and str(v).strip() not in _EMPTY]
        return ". ".join(parts) if parts else None

    return pd.Series([join(r) for r in frame[sources].itertuples(index=False)], dtype=object)


def _sources(value: Any) -> list[str]:
    return [value] if isinstance(value, str) else [str(v) for v in value]


def _read(table: TableConfig, config: DatasetConfig) -> tuple[pd.DataFrame, Path]:
    path = config.resolve(table.path)
    if not path.exists():
        raise FileNotFoundError(f"{path} (from the dataset config {config.name!r}) does not exist")
    fmt = (table.format or "").lower()
    options = dict(table.read_options)
    if fmt == "parquet":
        from coldstart.data.io import read_table

        return read_table(path), path
    if fmt == "tsv":
        options.setdefault("sep", "\t")
    if fmt in ("csv", "tsv"):
        options.setdefault("dtype", str)
        options.setdefault("keep_default_na", False)
        return pd.read_csv(path, **options), path
    return read_any(path, **options), path


def _check_columns(frame: pd.DataFrame, mapping: dict[str, Any], path: Path) -> None:
    wanted = [s for v in mapping.values() for s in _sources(v)]
    absent = [c for c in wanted if c not in frame.columns]
    if absent:
        raise KeyError(f"{path}: columns {absent} not found; it has {list(frame.columns)}")


# --------------------------------------------------------------------------------------------
# loaders


def _load_items(table: TableConfig, config: DatasetConfig) -> tuple[pd.DataFrame, LoadReport, Path]:
    frame, path = _read(table, config)
    mapping = dict(table.columns)
    mapping.setdefault(ITEM_ID, ITEM_ID)
    _check_columns(frame, mapping, path)
    report = LoadReport(rows_read=len(frame))
    frame = frame.reset_index(drop=True)
    bad = _missing(frame[mapping[ITEM_ID]])
    report.drop("missing_item_id", int(bad.sum()))
    frame = frame[~bad].reset_index(drop=True)
    items = pd.DataFrame({ITEM_ID: _typed_ids(frame[mapping[ITEM_ID]], table.id_type)})
    nulls = set(table.list_null_values)
    for column, source in mapping.items():
        if column == ITEM_ID:
            continue
        if column in LIST_COLUMNS:
            items[column] = pd.Series(
                [_as_list(v, table.list_separator, nulls) for v in frame[source]], dtype=object
            )
        elif column in (TITLE, TEXT):
            items[column] = _joined(frame, _sources(source))
        else:
            items[column] = frame[_sources(source)[0]].to_numpy()
    for column, value in table.defaults.items():
        if column not in items:
            items[column] = value
    if MEDIA_KEY not in items:
        items[MEDIA_KEY] = pd.Series([str(i) for i in items[ITEM_ID]], dtype=object)
    duplicated = items[ITEM_ID].duplicated(keep="first").to_numpy()
    report.drop("duplicate_item_id", int(duplicated.sum()))
    items = items[~duplicated].reset_index(drop=True)
    ordered = [c for c in ITEM_COLUMNS if c in items] + [c for c in items if c not in ITEM_COLUMNS]
    items = items[ordered]
    report.rows_kept = len(items)
    return items, report, path


def _load_interactions(
    table: TableConfig, config: DatasetConfig
) -> tuple[pd.DataFrame, LoadReport, Path]:
    frame, path = _read(table, config)
    mapping = dict(table.columns)
    for column in (USER_ID, ITEM_ID):
        mapping.setdefault(column, column)
    _check_columns(frame, mapping, path)
    frame = frame.reset_index(drop=True)
    report = LoadReport(rows_read=len(frame))

    bad_user = _missing(frame[mapping[USER_ID]])
    bad_item = _missing(frame[mapping[ITEM_ID]])
    keep = ~(bad_user | bad_item)
    report.drop("missing_user_id", int(bad_user.sum()))
    report.drop("missing_item_id", int((bad_item & ~bad_user).sum()))

    if TIMESTAMP in mapping:
        seconds = parse_timestamps(frame[mapping[TIMESTAMP]], table.timestamp_format).to_numpy()
        bad_ts = keep & ~np.isfinite(seconds.astype(np.float64))
        report.drop("bad_timestamp", int(bad_ts.sum()))
        keep &= ~bad_ts
    else:
        seconds = np.zeros(len(frame), dtype=np.float64)  # no clock: every row at t = 0
    if VALUE in mapping:
        raw_value = frame[mapping[VALUE]]
        values = pd.to_numeric(raw_value.astype(str).str.strip(), errors="coerce").to_numpy()
        bad_value = keep & ~np.isfinite(values.astype(np.float64))
        report.drop("bad_value", int(bad_value.sum()))
        keep &= ~bad_value
    else:
        values = np.full(len(frame), float(table.defaults.get(VALUE, 1.0)))

    kept = frame[keep].reset_index(drop=True)
    out = pd.DataFrame(
        {
            USER_ID: _typed_ids(kept[mapping[USER_ID]], table.id_type).to_numpy(),
            ITEM_ID: _typed_ids(kept[mapping[ITEM_ID]], table.id_type).to_numpy(),
            TIMESTAMP: np.floor(seconds[keep].astype(np.float64)).astype(np.int64),
        }
    )
    if EVENT in mapping:
        events = kept[mapping[EVENT]].astype(str).str.strip()
        out[EVENT] = events.where(events != "", str(table.defaults.get(EVENT, "interaction")))
    else:
        out[EVENT] = str(table.defaults.get(EVENT, "interaction"))
    out[EVENT] = out[EVENT].astype(object)
    out[VALUE] = values[keep].astype(np.float32)
    if REQUEST_ID in mapping:
        request = kept[mapping[REQUEST_ID]]
        out[REQUEST_ID] = [
            None if m else v for m, v in zip(_missing(request), request, strict=True)
        ]
    for column, source in mapping.items():
        if column not in INTERACTION_COLUMNS:
            out[column] = kept[_sources(source)[0]].to_numpy()
    report.rows_kept = len(out)
    return out, report, path


def load_generic(config: str | os.PathLike | dict[str, Any] | DatasetConfig) -> Dataset:
    """Load a data set described by a YAML path, a dict or a DatasetConfig (see module doc)."""
    if isinstance(config, (str, os.PathLike)):
        config = DatasetConfig.from_yaml(config)
    elif isinstance(config, dict):
        config = DatasetConfig.from_dict(config)
    if config.loader == "movielens":
        from coldstart.data.movielens import load_movielens

        root = config.resolve(config.root) if config.root else None
        dataset = load_movielens(root)
        dataset.name = config.name
        return dataset
    if config.loader != "generic":
        raise ValueError(f"unknown loader {config.loader!r}; use generic or movielens")
    if config.interactions is None:
        raise ValueError(f"dataset config {config.name!r} has no interactions table")
    if config.unknown_items not in ("keep", "drop", "add"):
        raise ValueError(f"unknown_items must be keep, drop or add; got {config.unknown_items!r}")

    interactions, inter_report, inter_path = _load_interactions(config.interactions, config)
    sources = {inter_path.name: sha256_file(inter_path)}
    reports = {"interactions": inter_report}
    if config.items is not None:
        items, item_report, item_path = _load_items(config.items, config)
        sources[item_path.name] = sha256_file(item_path)
        reports["items"] = item_report
    else:
        ids = np.unique(interactions[ITEM_ID].to_numpy()) if len(interactions) else np.array([])
        items = pd.DataFrame({ITEM_ID: ids, MEDIA_KEY: [str(i) for i in ids]})
        reports["items"] = LoadReport(rows_read=0, rows_kept=len(items))

    if len(items) and len(interactions):
        if items[ITEM_ID].dtype != interactions[ITEM_ID].dtype:
            # One side typed int, the other str (e.g. an id "007"): compare as strings.
            items[ITEM_ID] = items[ITEM_ID].astype(str).astype(object)
            interactions[ITEM_ID] = interactions[ITEM_ID].astype(str).astype(object)
        unknown = ~interactions[ITEM_ID].isin(items[ITEM_ID]).to_numpy()
        if unknown.any() and config.unknown_items == "drop":
            inter_report.drop("unknown_item", int(unknown.sum()))
            interactions = interactions[~unknown].reset_index(drop=True)
            inter_report.rows_kept = len(interactions)
        elif unknown.any() and config.unknown_items == "add":
            extra = pd.DataFrame({ITEM_ID: pd.unique(interactions.loc[unknown, ITEM_ID])})
            extra[MEDIA_KEY] = extra[ITEM_ID].astype(str)
            for column in (GENRES, TAGS):
                if column in items:
                    extra[column] = [[] for _ in range(len(extra))]
            items = pd.concat([items, extra], ignore_index=True)
    return Dataset(
        name=config.name,
        items=items,
        interactions=interactions,
        reports=reports,
        source_sha256=sources,
    )


def load_dataset(
    name_or_config: str | os.PathLike | dict[str, Any] | DatasetConfig,
    root: str | os.PathLike | None = None,
) -> Dataset:
    """'movielens' (embedded copy, or `root`), 'synthetic', a YAML path, a dict or a config."""
    if isinstance(name_or_config, (dict, DatasetConfig)):
        return load_generic(name_or_config)
    name = str(name_or_config)
    if name == "movielens":
        from coldstart.data.movielens import load_movielens

        return load_movielens(root)
    if name == "synthetic":
        from coldstart.data.synthetic import load_synthetic

        return load_synthetic()  # what an experiment with `data.loader: synthetic` reads
    if Path(name).suffix in (".yaml", ".yml"):
        return load_generic(name)
    raise ValueError(f"unknown dataset {name!r}: use movielens, synthetic or a YAML config path")
