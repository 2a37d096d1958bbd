"""Typed tables and batches shared by every package.

Tables are pandas DataFrames with fixed column names (written to Parquet through pyarrow);
batches are dataclasses of tensors with `.to(device)`, in the spirit of torchrec.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

# Item catalogue columns. `item_id` is int64 or string; the rest are optional content fields.
ITEM_ID = "item_id"
TITLE = "title"
TEXT = "text"  # free description
TAGS = "tags"  # list[str]; user-written tags are interaction-derived, see DESIGN.md
GENRES = "genres"  # list[str]
MEDIA_KEY = "media_key"  # key of the item's media in webdataset shards (None when absent)
# What the item's media are: one of MEDIA_TYPES (optional; absent or unknown values read as
# "none"). Known at upload time, so the ranker may use it for cold items (ranker media_type).
MEDIA_TYPE = "media_type"
MEDIA_TYPES = ("none", "photo", "carousel", "video")  # code = position; "none": text only

# Interaction columns.
USER_ID = "user_id"
TIMESTAMP = "timestamp"  # int64 seconds since epoch
EVENT = "event"  # e.g. "rating", "click"
VALUE = "value"  # float, e.g. the rating
REQUEST_ID = "request_id"  # int64; filled by data.requests when the log has none

ITEM_COLUMNS = (ITEM_ID, TITLE, TEXT, TAGS, GENRES, MEDIA_KEY, MEDIA_TYPE)
INTERACTION_COLUMNS = (USER_ID, ITEM_ID, TIMESTAMP, EVENT, VALUE, REQUEST_ID)


@dataclass
class LoadReport:
    """What a loader kept and what it dropped, with a reason per dropped row."""

    rows_read: int = 0
    rows_kept: int = 0
    dropped: Counter = field(default_factory=Counter)

    def drop(self, reason: str, count: int = 1) -> None:
        if count:
            self.dropped[reason] += int(count)

    def as_dict(self) -> dict[str, Any]:
        return {
            "rows_read": self.rows_read,
            "rows_kept": self.rows_kept,
            "dropped": dict(self.dropped),
        }


@dataclass
class Dataset:
    """An item catalogue plus an interaction log, as loaded from any source."""

    name: str
    items: pd.DataFrame  # columns: ITEM_COLUMNS (content columns may be missing)
    interactions: pd.DataFrame  # columns: INTERACTION_COLUMNS (request_id may be missing)
    reports: dict[str, LoadReport] = field(default_factory=dict)  # "items", "interactions"
    source_sha256: dict[str, str] = field(default_factory=dict)  # file name -> sha256


def media_codes(values: Any) -> Any:
    """(N,) media type names (photo, carousel, video, none; case-insensitive) -> (N,) int64
    codes, positions in MEDIA_TYPES; missing or unknown names are 0 ("none")."""
    import numpy as np

    code = {name: i for i, name in enumerate(MEDIA_TYPES)}
    return np.asarray(
        [code.get(str(v).strip().lower(), 0) if isinstance(v, str) else 0 for v in values],
        dtype=np.int64,
    )


def media_type_of(n_images: int, video: bool) -> str:
    """The media type of an item from what it holds: a video, several images (a carousel),
    one image (a photo) or none (text only)."""
    if video:
        return "video"
    return "carousel" if n_images > 1 else "photo" if n_images == 1 else "none"


def item_text(row: pd.Series | dict, fields: tuple[str, ...] = (TITLE, GENRES, TEXT)) -> str:
    """One string describing an item from its content fields (lists joined with ', ').

    Tags are left out by default: they are written by users after interacting, so feeding them
    to cold items would leak the future.
    """
    parts: list[str] = []
    for name in fields:
        value = row.get(name) if hasattr(row, "get") else None
        if value is None or (isinstance(value, float) and pd.isna(value)):
            continue
        if isinstance(value, (list, tuple)) or hasattr(value, "tolist"):
            value = ", ".join(str(v) for v in list(value))
        value = str(value).strip()
        if value:
            parts.append(value)
    return ". ".join(parts)


class _ToDevice:
    """Mixin: `.to(device)` moves every tensor field, leaves the rest alone."""

    def to(self, device: Any, non_blocking: bool = False):  # noqa: ANN201 - returns own type
        changes = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if hasattr(value, "to") and callable(value.to):
                changes[f.name] = value.to(device, non_blocking=non_blocking)
        return dataclasses.replace(self, **changes)


@dataclass
class ImageTextBatch(_ToDevice):
    """Paired media for contrastive training.

    images: (B, 3, H, W) float, already preprocessed by the encoder's transform; with videos in
            the batch, (B_img, 3, H, W) for the rows `image_rows`.
    tokens: (B, L) int64 token ids from the encoder's tokenizer.
    keys:   B sample keys (strings).
    frames: None, or (V, K, 3, H, W) float: K frames of each of V videos (video-text pairs),
            padded past `frame_mask` (V, K) bool; `video_rows` (V,) / `image_rows` (B_img,)
            int64 say which batch rows are videos / images.
    """

    images: Any
    tokens: Any
    keys: list[str] = field(default_factory=list)
    frames: Any = None
    frame_mask: Any = None
    video_rows: Any = None
    image_rows: Any = None


@dataclass
class RequestBatch(_ToDevice):
    """A batch of requests: R requests, each one user shown k items (N = sum of k rows).

    user_ids:        (R,) int64 user row per request.
    history:         (R, H) int64 item rows of the user's recent history, padded with -1.
    item_ids:        (N,) int64 item rows, one per impression.
    request_index:   (N,) int64 inverse index: row n belongs to request request_index[n].
    labels:          (N,) float32 (1 = positive), or None for sampled-softmax training.
    weights:         (N,) float32 per-row sample weights (upsampling / event weights).
    """

    user_ids: Any
    history: Any
    item_ids: Any
    request_index: Any
    labels: Any = None
    weights: Any = None
