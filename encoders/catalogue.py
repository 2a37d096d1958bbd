"""Item texts from a catalogue: 'movielens', 'movielens:<root>', or a Parquet/CSV item table."""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from coldstart.data.schema import GENRES, ITEM_ID, MEDIA_KEY, TAGS, TEXT, TITLE, item_text

DEFAULT_FIELDS: tuple[str, ...] = (TITLE, GENRES, TEXT)


@dataclass
class CatalogueTexts:
    """Per-item texts of a catalogue, keyed by item id and by media key (the shard key)."""

    source: str
    item_ids: list  # catalogue order
    texts: dict  # item_id -> text ("" when the item has no text fields)
    tags: dict = field(default_factory=dict)  # item_id -> tags text (only when asked for)
    by_media_key: dict = field(default_factory=dict)  # media key -> item_id

    def lookup(self, key: str, item_id: object) -> object | None:
        """The catalogue item id of a shard sample (by media key, else by item id), or None."""
        if key in self.by_media_key:
            return self.by_media_key[key]
        if item_id in self.texts:
            return item_id
        return None


def is_catalogue(spec: str) -> bool:
    return (
        spec == "movielens"
        or spec.startswith("movielens:")
        or Path(spec).suffix.lower()
        in (
            ".parquet",
            ".csv",
            ".tsv",
        )
    )


def load_items(spec: str) -> pd.DataFrame:
    if spec == "movielens" or spec.startswith("movielens:"):
        from coldstart.data.movielens import load_movielens

        root = spec.split(":", 1)[1] if ":" in spec else None
        return load_movielens(root).items
    if not os.path.exists(spec):
        raise FileNotFoundError(f"catalogue {spec!r} not found")
    from coldstart.data.io import read_any

    items = read_any(spec)
    if ITEM_ID not in items.columns:
        raise ValueError(
            f"catalogue {spec}: no {ITEM_ID!r} column (columns: {list(items.columns)})"
        )
    return items


def load_catalogue_texts(
    spec: str, fields: tuple[str, ...] = DEFAULT_FIELDS, with_tags: bool = False
) -> CatalogueTexts:
    """Texts per item from `fields` (data.schema.item_text). Tags are opt-in and kept apart:
    user tags are written after interacting with an item, so for truly cold items they do not
    exist yet and using them in evaluation leaks the future."""
    items = load_items(spec)
    if with_tags:
        warnings.warn(
            "tags are interaction-derived (written by users after watching): embedding them for "
            "cold-start evaluation leaks future information",
            stacklevel=2,
        )
    ids = items[ITEM_ID].tolist()
    texts, tags = {}, {}
    for row in items.to_dict("records"):
        texts[row[ITEM_ID]] = item_text(row, tuple(fields))
        if with_tags and TAGS in row:
            tags[row[ITEM_ID]] = item_text(row, (TAGS,))
    by_key = {}
    if MEDIA_KEY in items.columns:
        by_key = {
            str(k): i for k, i in zip(items[MEDIA_KEY], items[ITEM_ID]) if k is not None and k == k
        }
    return CatalogueTexts(spec, ids, texts, tags, by_key)
