"""MovieLens loader (ml-latest-small layout, any root; the embedded copy by default)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pandas as pd

from coldstart.data.embeddings import sha256_file
from coldstart.data.resources import package_path
from coldstart.data.schema import (
    EVENT,
    GENRES,
    ITEM_ID,
    MEDIA_KEY,
    TAGS,
    TEXT,
    TIMESTAMP,
    TITLE,
    USER_ID,
    VALUE,
    Dataset,
    LoadReport,
)

EMBEDDED_ROOT = package_path("coldstart.data", "movielens", "ml-latest-small")
_YEAR = re.compile(r"\((\d{4})\)\s*$")


def load_movielens(root: str | os.PathLike | None = None) -> Dataset:
    """Load ml-latest-small from `root` (default: the copy vendored inside this package).

    Items: item_id = movieId (int64), title, genres (list), tags (user tags, list), media_key =
    str(movieId) (the poster shards name members `<movieId>.jpg`). Interactions: one "rating"
    event per row with value = rating. Rows with missing ids or unparsable timestamps/ratings are
    dropped and counted in `reports`.
    """
    root = Path(root) if root is not None else EMBEDDED_ROOT
    if not (root / "ratings.csv").exists() or not (root / "movies.csv").exists():
        raise FileNotFoundError(
            f"{root} does not look like ml-latest-small (ratings.csv, movies.csv)"
        )

    item_report, inter_report = LoadReport(), LoadReport()
    movies = pd.read_csv(root / "movies.csv", dtype=str, keep_default_na=False)
    item_report.rows_read = len(movies)
    ids = pd.to_numeric(movies["movieId"], errors="coerce")
    item_report.drop("missing_or_bad_item_id", int(ids.isna().sum()))
    movies = movies[ids.notna()].assign(movieId=ids[ids.notna()].astype(np.int64))
    genres = movies["genres"].map(lambda g: [] if g in ("", "(no genres listed)") else g.split("|"))
    items = pd.DataFrame(
        {
            ITEM_ID: movies["movieId"].to_numpy(),
            TITLE: movies["title"].str.strip().to_numpy(),
            TEXT: [None] * len(movies),
            GENRES: genres.to_numpy(),
            MEDIA_KEY: movies["movieId"].astype(str).to_numpy(),
        }
    )
    tags_path = root / "tags.csv"
    if tags_path.exists():
        tags = pd.read_csv(tags_path, dtype={"tag": str}, keep_default_na=False)
        grouped = tags.groupby("movieId")["tag"].agg(lambda s: sorted(set(map(str, s))))
        items[TAGS] = items[ITEM_ID].map(grouped).map(lambda v: v if isinstance(v, list) else [])
    else:
        items[TAGS] = [[] for _ in range(len(items))]
    items = items.drop_duplicates(ITEM_ID).reset_index(drop=True)
    item_report.rows_kept = len(items)

    ratings = pd.read_csv(root / "ratings.csv", dtype=str, keep_default_na=False)
    inter_report.rows_read = len(ratings)
    user = pd.to_numeric(ratings["userId"], errors="coerce")
    item = pd.to_numeric(ratings["movieId"], errors="coerce")
    ts = pd.to_numeric(ratings["timestamp"], errors="coerce")
    value = pd.to_numeric(ratings["rating"], errors="coerce")
    bad_id = user.isna() | item.isna()
    bad_ts = ~bad_id & ts.isna()
    bad_value = ~bad_id & ~bad_ts & value.isna()
    inter_report.drop("missing_or_bad_id", int(bad_id.sum()))
    inter_report.drop("bad_timestamp", int(bad_ts.sum()))
    inter_report.drop("bad_value", int(bad_value.sum()))
    keep = ~(bad_id | bad_ts | bad_value)
    interactions = pd.DataFrame(
        {
            USER_ID: user[keep].astype(np.int64).to_numpy(),
            ITEM_ID: item[keep].astype(np.int64).to_numpy(),
            TIMESTAMP: ts[keep].astype(np.int64).to_numpy(),
            EVENT: "rating",
            VALUE: value[keep].astype(np.float32).to_numpy(),
        }
    )
    inter_report.rows_kept = len(interactions)
    sources = {
        name: sha256_file(root / name)
        for name in ("ratings.csv", "movies.csv", "tags.csv")
        if (root / name).exists()
    }
    return Dataset(
        name="movielens",
        items=items,
        interactions=interactions,
        reports={"items": item_report, "interactions": inter_report},
        source_sha256=sources,
    )


def title_year(title: str) -> int | None:
    """The release year MovieLens appends to titles, e.g. 'Heat (1995)' -> 1995."""
    match = _YEAR.search(title or "")
    return int(match.group(1)) if match else None
