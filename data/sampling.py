"""Rare-ID filtering and upsampling: the two knobs for long-tail ids, measured, never hidden.

Rare-ID filtering
    An id seen fewer than `min_count` times has a high-variance embedding. `build_vocabulary`
    gives every frequent id its own row and maps all rare (and unseen) ids to one shared rare
    bucket (row 0), with a report of how many ids and rows went there.

Upsampling (sample weights for a `torch.utils.data.WeightedRandomSampler`)
    - per event type: e.g. {"purchase": 5, "click": 1} draws a purchase row 5x as often;
    - per-entity coverage: rows of low-count items are up-weighted so that every item is drawn
      as if it had at least `min_count` rows (weight = max(1, min_count / count)), and/or by
      count^-alpha (alpha = 0: natural frequencies, 1: every item equally often).
    `expected_entity_share` gives the resulting per-item draw probabilities, so a test (or a
    report) can compare what the sampler does with what was asked.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from coldstart.data.schema import EVENT, ITEM_ID

RARE_INDEX = 0  # row of the shared rare bucket in every Vocabulary


@dataclass
class RareIdReport:
    """What the threshold did: ids and rows kept vs sent to the rare bucket."""

    min_count: int
    ids_total: int
    ids_kept: int
    ids_rare: int
    rows_total: int
    rows_rare: int

    @property
    def rare_row_share(self) -> float:
        return self.rows_rare / self.rows_total if self.rows_total else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "rare_row_share": self.rare_row_share}


@dataclass
class Vocabulary:
    """id -> row; frequent ids get rows 1..K in (count desc, id) order, the rest share row 0."""

    ids: np.ndarray  # (K,) kept ids; ids[k] has row k + 1
    counts: np.ndarray  # (K,) training count of each kept id
    report: RareIdReport
    _lookup: dict[Any, int] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self._lookup = {v: k + 1 for k, v in enumerate(self.ids.tolist())}

    @property
    def size(self) -> int:
        """Rows in an embedding table for this vocabulary (kept ids + the rare bucket)."""
        return len(self.ids) + 1

    def lookup(self, values: Any) -> np.ndarray:
        """(N,) ids -> (N,) int64 rows; rare and unseen ids -> RARE_INDEX."""
        get = self._lookup.get
        return np.fromiter(
            (get(v, RARE_INDEX) for v in np.asarray(values).tolist()), dtype=np.int64
        )

    def is_rare(self, values: Any) -> np.ndarray:
        return self.lookup(values) == RARE_INDEX


def build_vocabulary(values: Any, min_count: int = 1) -> Vocabulary:
    """Vocabulary from the ids of a training log (one entry per row). See `Vocabulary`."""
    if min_count < 1:
        raise ValueError(f"min_count must be >= 1, got {min_count}")
    series = pd.Series(np.asarray(values))
    counts = series.value_counts(sort=False)
    kept = counts[counts >= min_count]
    # Deterministic row order: most frequent first, ties by id.
    frame = pd.DataFrame({"id": kept.index, "count": kept.to_numpy()})
    frame = frame.sort_values(["count", "id"], ascending=[False, True], kind="stable")
    report = RareIdReport(
        min_count=min_count,
        ids_total=len(counts),
        ids_kept=len(kept),
        ids_rare=len(counts) - len(kept),
        rows_total=len(series),
        rows_rare=int(counts[counts < min_count].sum()),
    )
    return Vocabulary(frame["id"].to_numpy(), frame["count"].to_numpy(np.int64), report)


def rare_id_sweep(values: Any, thresholds: tuple[int, ...] = (1, 2, 3, 5, 10, 20)) -> list[dict]:
    """Report rows for several thresholds (what each choice would cost in coverage)."""
    return [build_vocabulary(values, t).report.as_dict() for t in thresholds]


def apply_rare_bucket(
    interactions: pd.DataFrame, column: str = ITEM_ID, min_count: int = 1, rare_value: Any = None
) -> tuple[pd.DataFrame, RareIdReport]:
    """Copy of `interactions` with rare ids of `column` replaced by one shared `rare_value`.

    rare_value defaults to -1 for integer ids and "__rare__" otherwise.
    """
    vocab = build_vocabulary(interactions[column].to_numpy(), min_count)
    out = interactions.copy()
    rare = vocab.is_rare(out[column].to_numpy())
    if rare_value is None:
        rare_value = -1 if pd.api.types.is_integer_dtype(out[column].dtype) else "__rare__"
    out.loc[rare, column] = rare_value
    return out, vocab.report


# --------------------------------------------------------------------------------------------
# upsampling


@dataclass
class UpsamplingConfig:
    """Sample-weight knobs; the defaults change nothing (all weights 1)."""

    event_weights: dict[str, float] = field(default_factory=dict)  # event -> weight; others 1
    entity_column: str = ITEM_ID
    min_count: int = 0  # coverage: rows of ids with count < min_count get min_count / count
    alpha: float = 0.0  # coverage: extra factor count^-alpha (1.0 -> uniform over ids)


def event_weights(events: Any, weights: dict[str, float], default: float = 1.0) -> np.ndarray:
    """(N,) float64 weight per row from its event type."""
    for name, w in weights.items():
        if w < 0:
            raise ValueError(f"event weight for {name!r} must be >= 0, got {w}")
    series = pd.Series(np.asarray(events, dtype=object))
    return series.map(weights).fillna(default).to_numpy(dtype=np.float64)


def coverage_weights(entity_ids: Any, min_count: int = 0, alpha: float = 0.0) -> np.ndarray:
    """(N,) float64 per-row weights that up-sample rows of low-count entities.

    An entity with c rows gets per-row weight max(1, min_count / c) * c^-alpha, so its total
    weight is max(c, min_count) * c^-alpha: with alpha = 0 every entity counts as if it had at
    least `min_count` rows; alpha = 1 (min_count = 0) makes entities equally likely.
    """
    if alpha < 0 or min_count < 0:
        raise ValueError("alpha and min_count must be >= 0")
    ids = pd.Series(np.asarray(entity_ids))
    counts = ids.map(ids.value_counts()).to_numpy(dtype=np.float64)
    weights = np.maximum(1.0, min_count / counts) if min_count else np.ones_like(counts)
    if alpha:
        weights = weights * counts ** (-alpha)
    return weights


def sample_weights(interactions: pd.DataFrame, config: UpsamplingConfig) -> np.ndarray:
    """(N,) float64 row weights: event weights x coverage weights."""
    weights = np.ones(len(interactions), dtype=np.float64)
    if config.event_weights:
        if EVENT not in interactions.columns:
            raise KeyError(f"event weights given but the log has no {EVENT!r} column")
        weights *= event_weights(interactions[EVENT].to_numpy(), config.event_weights)
    if config.min_count or config.alpha:
        weights *= coverage_weights(
            interactions[config.entity_column].to_numpy(), config.min_count, config.alpha
        )
    return weights


def expected_entity_share(entity_ids: Any, weights: np.ndarray) -> pd.Series:
    """Probability that one weighted draw picks each entity (index: id, sums to 1)."""
    share = pd.Series(np.asarray(weights, dtype=np.float64)).groupby(np.asarray(entity_ids)).sum()
    return share / share.sum()


def upsampling_report(entity_ids: Any, weights: np.ndarray, tail_count: int = 5) -> dict[str, Any]:
    """How weights move probability mass: tail share before/after, effective sample size."""
    ids = np.asarray(entity_ids)
    weights = np.asarray(weights, dtype=np.float64)
    counts = pd.Series(ids).value_counts()
    tail = counts.index[counts < tail_count]
    before = expected_entity_share(ids, np.ones(len(ids)))
    after = expected_entity_share(ids, weights)
    return {
        "rows": int(len(ids)),
        "entities": int(len(counts)),
        "tail_threshold": tail_count,
        "tail_entities": int(len(tail)),
        "tail_share_before": float(before.reindex(tail).sum()),
        "tail_share_after": float(after.reindex(tail).sum()),
        # Kish effective sample size: how many unweighted rows the weighted draws are worth.
        "effective_sample_size": float(weights.sum() ** 2 / (weights**2).sum())
        if len(ids)
        else 0.0,
    }


def make_sampler(weights: np.ndarray, num_samples: int | None = None, seed: int = 0):  # noqa: ANN201
    """A seeded torch WeightedRandomSampler over rows (with replacement). num_samples: N."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    weights_t = torch.tensor(np.array(weights, dtype=np.float64))  # a copy: arrays may be read-only
    return torch.utils.data.WeightedRandomSampler(
        weights_t,
        num_samples=int(num_samples if num_samples is not None else len(weights_t)),
        replacement=True,
        generator=generator,
    )
