"""From a cold-start split + content vectors to the ranker's arrays: rows, histories, requests.

Catalogue rows are the order of `split.items`; users are numbered by sorted user id. Nothing here
trains; `RankerData` is plain numpy, shared by the LightningDataModule and ranker.methods.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from coldstart.data.schema import (
    EVENT,
    ITEM_ID,
    MEDIA_TYPE,
    REQUEST_ID,
    TIMESTAMP,
    USER_ID,
    VALUE,
    RequestBatch,
    media_codes,
)
from coldstart.data.split import SPLIT_COLUMN, Split
from coldstart.ranker.metrics import SegmentTask, make_task

COLD_PART = {"val": "cold_val", "test": "cold_test"}


@dataclass
class Interactions:
    users: np.ndarray  # (N,) int64 user rows
    items: np.ndarray  # (N,) int64 item rows
    timestamps: np.ndarray  # (N,) int64
    values: np.ndarray  # (N,) float32
    request_ids: np.ndarray | None = None  # (N,) int64 when the log carries requests
    events: np.ndarray | None = None  # (N,) event names (e.g. "rating", "click") when present


@dataclass
class RankerData:
    """Everything the ranker needs from a split, as row-indexed numpy arrays."""

    item_ids: np.ndarray  # (I,) catalogue ids; row = position
    item_split: np.ndarray  # (I,) "warm" | "cold_val" | "cold_test" | "unseen"
    user_ids: np.ndarray  # (U,) sorted user ids; row = position
    content: np.ndarray | None  # (I, C) float32, zeros where missing
    has_content: np.ndarray  # (I,) bool
    parts: dict[str, Interactions] = field(default_factory=dict)
    # (I,) int64 media type codes (data.schema.MEDIA_TYPES), None when the catalogue has no
    # media_type column (every item then reads as one type, and the ranker's feature is off).
    media: np.ndarray | None = None

    @property
    def media_types(self) -> int:
        """How many distinct media types the catalogue holds (0 without a media_type column):
        the ranker's media-type feature needs two or more to say anything."""
        return 0 if self.media is None else int(len(np.unique(self.media)))

    @property
    def num_items(self) -> int:
        return len(self.item_ids)

    @property
    def num_users(self) -> int:
        return len(self.user_ids)

    @property
    def train(self) -> Interactions:
        return self.parts["train"]

    def train_counts(self) -> np.ndarray:
        """(I,) number of training interactions per item row."""
        return np.bincount(self.train.items, minlength=self.num_items)

    def rows_of(self, segment: str) -> np.ndarray:
        """Item rows of a segment: warm, cold (both cold parts), cold_val, cold_test, unseen."""
        if segment == "cold":
            return np.flatnonzero(np.isin(self.item_split, ["cold_val", "cold_test"]))
        return np.flatnonzero(self.item_split == segment)

    def task(self, segment: str, part: str = "test") -> SegmentTask:
        """Evaluation task: segment in cold | warm | all, part in val | test. Known positives
        (train; for test also val and cold_val) are masked from the ranking."""
        if part not in COLD_PART:
            raise ValueError(f"part must be val or test, got {part!r}")
        cold_part = COLD_PART[part]
        warm_rows, cold_rows = self.rows_of("warm"), self.rows_of(cold_part)
        held = {"warm": [part], "cold": [cold_part], "all": [part, cold_part]}[segment]
        cands = {
            "warm": warm_rows,
            "cold": cold_rows,
            "all": np.concatenate([warm_rows, cold_rows]),
        }[segment]
        users = np.concatenate([self.parts[p].users for p in held])
        items = np.concatenate([self.parts[p].items for p in held])
        # Known positives are masked: train, and when scoring test the validation parts too.
        known = ["train"] + (["val", "cold_val"] if part == "test" else [])
        known = [p for p in known if p in self.parts]
        return make_task(
            users,
            items,
            cands,
            np.concatenate([self.parts[p].users for p in known]),
            np.concatenate([self.parts[p].items for p in known]),
        )

    def histories(self, length: int) -> np.ndarray:
        """(U, length) the last `length` training items of every user by time, -1 padded on the
        left (so the most recent item sits at the end)."""
        out = np.full((self.num_users, length), -1, dtype=np.int64)
        tr = self.train
        order = np.lexsort((tr.timestamps, tr.users))
        users, items = tr.users[order], tr.items[order]
        cuts = np.flatnonzero(np.diff(users)) + 1
        for us, its in zip(np.split(users, cuts), np.split(items, cuts)):
            if len(us):
                tail = its[-length:]
                out[us[0], length - len(tail) :] = tail
        return out


def build_ranker_data(
    split: Split, content_ids: np.ndarray | None = None, content_vectors: np.ndarray | None = None
) -> RankerData:
    """Align content vectors (by item id) with the split's catalogue and map ids to rows."""
    items = split.items
    item_ids = items[ITEM_ID].to_numpy()
    row_of_item = pd.Series(np.arange(len(item_ids)), index=item_ids)
    if row_of_item.index.has_duplicates:
        raise ValueError("split.items has duplicate item ids")
    frames = split.parts
    all_users = np.unique(np.concatenate([df[USER_ID].to_numpy() for df in frames.values()]))
    row_of_user = pd.Series(np.arange(len(all_users)), index=all_users)

    content, has_content = None, np.zeros(len(item_ids), dtype=bool)
    if content_vectors is not None:
        content_vectors = np.asarray(content_vectors, dtype=np.float32)
        if content_ids is None or len(content_ids) != len(content_vectors):
            raise ValueError("content_ids and content_vectors must have the same length")
        content = np.zeros((len(item_ids), content_vectors.shape[1]), dtype=np.float32)
        rows = row_of_item.reindex(np.asarray(content_ids)).to_numpy()
        ok = ~np.isnan(rows)
        rows = rows[ok].astype(np.int64)
        content[rows] = content_vectors[ok]
        has_content[rows] = True

    parts = {}
    for name, df in frames.items():
        irows = row_of_item.reindex(df[ITEM_ID].to_numpy()).to_numpy()
        if np.isnan(irows).any():
            raise ValueError(f"part {name!r} has item ids missing from split.items")
        parts[name] = Interactions(
            users=row_of_user.loc[df[USER_ID].to_numpy()].to_numpy().astype(np.int64),
            items=irows.astype(np.int64),
            timestamps=df[TIMESTAMP].to_numpy().astype(np.int64)
            if TIMESTAMP in df
            else np.zeros(len(df), np.int64),
            values=df[VALUE].to_numpy().astype(np.float32)
            if VALUE in df
            else np.ones(len(df), np.float32),
            events=df[EVENT].to_numpy().astype(str) if EVENT in df else None,
            request_ids=df[REQUEST_ID].to_numpy().astype(np.int64)
            if REQUEST_ID in df and df[REQUEST_ID].notna().all()
            else None,
        )
    return RankerData(
        item_ids=item_ids,
        item_split=items[SPLIT_COLUMN].to_numpy().astype(str),
        user_ids=all_users,
        content=content,
        has_content=has_content,
        parts=parts,
        media=media_codes(items[MEDIA_TYPE].tolist()) if MEDIA_TYPE in items.columns else None,
    )


def group_requests(
    users: np.ndarray, k: int, rng: np.random.Generator, timestamps: np.ndarray | None = None
) -> list[np.ndarray]:
    """Group interaction indices into requests of (at most) k rows of one user.

    Within a user, rows are ordered by time (ties shuffled) and cut into consecutive chunks, so a
    request looks like one page of recommendations shown at one moment.
    """
    noise = rng.random(len(users))
    order = np.lexsort((noise, timestamps if timestamps is not None else noise, users))
    u = users[order]
    cuts = np.flatnonzero(np.diff(u)) + 1
    requests = []
    for chunk in np.split(order, cuts):
        requests.extend(np.split(chunk, np.arange(k, len(chunk), k)))
    return requests


def leave_request_out_history(
    histories: np.ndarray, request_users: np.ndarray, request_items: list[np.ndarray]
) -> np.ndarray:
    """(R, H) each request's user history with the request's own items removed (they are the
    targets: a history containing them would teach the model to copy its input)."""
    out = histories[request_users].copy()
    for r, items in enumerate(request_items):
        row = out[r]
        hit = np.isin(row, items)
        if hit.any():
            kept = row[~hit & (row >= 0)]
            row[:] = -1
            if len(kept):
                row[-len(kept) :] = kept
    return out


def make_batch(
    request_users: np.ndarray,
    request_history: np.ndarray,
    request_items: list[np.ndarray],
    labels: list[np.ndarray] | None = None,
    weights: list[np.ndarray] | None = None,
) -> RequestBatch:
    """Assemble R requests into one RequestBatch (N = total rows)."""
    sizes = np.array([len(x) for x in request_items])
    return RequestBatch(
        user_ids=torch.as_tensor(request_users, dtype=torch.int64),
        history=torch.as_tensor(request_history, dtype=torch.int64),
        item_ids=torch.as_tensor(np.concatenate(request_items), dtype=torch.int64),
        request_index=torch.as_tensor(np.repeat(np.arange(len(sizes)), sizes), dtype=torch.int64),
        labels=None
        if labels is None
        else torch.as_tensor(np.concatenate(labels), dtype=torch.float32),
        weights=None
        if weights is None
        else torch.as_tensor(np.concatenate(weights), dtype=torch.float32),
    )
