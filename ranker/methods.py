"""Train and score every cold-start method on a split: the API the experiment cycle builds on.

    from ranker.methods import METHODS, fit_method, run_method

    metrics = run_method(name, split, content_ids, content_vectors, params=None, part="test")
    # -> {"cold": {"recall@10", "recall@20", "ndcg@10", "ndcg@20", "users"},
    #     "warm": {...}, "all": {...}}

    fitted = fit_method(name, split, content_ids, content_vectors, params=None, seed=0)
    fitted.evaluate("test", ks=(10, 20))      # same dict as run_method; part: "val" | "test"
    fitted.item_vectors()                    # (I, D) float32, row = split.items order
    fitted.user_vectors()                    # (U, D) float32, row = fitted.data.user_ids order
    fitted.score(user_rows, item_rows)       # (B, C) float32 scores (higher = better)
    fitted.info                              # train seconds, epochs, collision/SID reports, ...

name: one of METHODS
  popularity          training count per item (cold items: all zero, i.e. no information)
  id_only             two-tower model, ID rows only, random init; cold rows are untrained noise
  content_knn         cosine of the item's content with the user's mean history content
  content_projection  DeepMusic style: the id_only model, then a ridge map content -> ID vector
                      gives cold items their vectors (warm items keep their trained rows)
  ours                ID rows warm-started from content (residual on the content projection),
                      ID dropout, content-predicted bias
  ours+sid            ours plus semantic-ID prefix embeddings (residual k-means of content)
split: data.split.Split. content_ids (N,), content_vectors (N, C): e.g. from
  data.embeddings.read_embeddings(dir, "text"). Only item content is used (never tags).
params: flat dict of overrides, e.g. {"dim": 64, "epochs": 8, "lr": 3e-3, "id_dropout": 0.5,
  "init": "random", "history": "sequence", "max_seconds": 60}; keys of RankerConfig, ItemTowerConfig,
  UserTowerConfig, TrainConfig and BuildConfig are accepted (unknown keys raise ValueError).
Vectors: item vector = [v, bias] and user vector = [u, 1], so the dot product is the score.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from data.split import Split
from ranker.data import RankerData, build_ranker_data
from ranker.metrics import KS, SEGMENTS, ranking_metrics
from ranker.model import ItemTowerConfig, RankerConfig, UserTowerConfig
from ranker.train import BuildConfig, TrainConfig, create_ranker, fit_ranker

METHODS = ("popularity", "id_only", "content_knn", "content_projection", "ours", "ours+sid")

# Tuned on cold_val / val of MovieLens (seed 0); see the issue note for the figures.
DEFAULTS: dict[str, dict[str, Any]] = {
    "common": {
        "dim": 64,
        "epochs": 8,
        "lr": 3e-3,
        "batch_requests": 128,
        "items_per_request": 6,
        "history": "pooled",
        "history_len": 100,
    },
    "id_only": {"use_content": False, "init": "random", "id_for_cold": True, "id_dropout": 0.0},
    "content_projection": {
        "use_content": False,
        "init": "random",
        "id_for_cold": True,
        "id_dropout": 0.0,
        "ridge": 10.0,
    },
    "ours": {"use_content": True, "init": "content", "combine": "residual", "id_dropout": 0.3},
    "ours+sid": {
        "use_content": True,
        "init": "content",
        "combine": "residual",
        "id_dropout": 0.3,
        "semantic_ids": True,
        "sid_levels": 2,
        "sid_codewords": 16,
    },
}
_METHOD_KEYS = {"ridge"}


def _split_params(
    params: dict[str, Any],
) -> tuple[RankerConfig, BuildConfig, TrainConfig, dict[str, Any]]:
    """Route a flat params dict onto the config dataclasses (first match wins)."""
    targets = [RankerConfig(), ItemTowerConfig(), UserTowerConfig(), TrainConfig(), BuildConfig()]
    names = [{f.name for f in dataclasses.fields(t)} - {"item", "user", "extra"} for t in targets]
    values: list[dict[str, Any]] = [{} for _ in targets]
    method_params = {}
    for key, value in params.items():
        if key in _METHOD_KEYS:
            method_params[key] = value
            continue
        hit = [i for i, n in enumerate(names) if key in n]
        if not hit:
            raise ValueError(f"unknown ranker param {key!r}")
        for i in hit:  # e.g. "seed" goes to TrainConfig and BuildConfig, "hash_size" to both towers
            values[i][key] = value
    ranker = dataclasses.replace(targets[0], **values[0])
    ranker.item = dataclasses.replace(targets[1], **values[1])
    ranker.user = dataclasses.replace(targets[2], **values[2])
    return (
        ranker,
        dataclasses.replace(targets[4], **values[4]),
        dataclasses.replace(targets[3], **values[3]),
        method_params,
    )


def method_params(name: str, params: dict[str, Any] | None = None, seed: int = 0) -> dict[str, Any]:
    """The resolved flat params of a method: common defaults, method defaults, then `params`."""
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; methods are {METHODS}")
    return {**DEFAULTS["common"], **DEFAULTS.get(name, {}), "seed": seed, **(params or {})}


@dataclass
class FittedMethod:
    """A trained method: item and user vectors (or a score function) over the split's rows."""

    name: str
    data: RankerData
    items: np.ndarray  # (I, D) float32
    users: np.ndarray  # (U, D) float32
    info: dict[str, Any] = field(default_factory=dict)
    model: Any = None  # the Ranker for model-based methods

    def item_vectors(self) -> np.ndarray:
        return self.items

    def user_vectors(self) -> np.ndarray:
        return self.users

    def score(self, user_rows: np.ndarray, item_rows: np.ndarray) -> np.ndarray:
        """(B, C) scores of users x items (rows)."""
        return self.users[user_rows] @ self.items[item_rows].T

    def evaluate(self, part: str = "test", ks: tuple[int, ...] = KS) -> dict[str, dict[str, float]]:
        """{"cold": {...}, "warm": {...}, "all": {...}} of recall@K / ndcg@K on `part`."""
        return {seg: ranking_metrics(self.score, self.data.task(seg, part), ks) for seg in SEGMENTS}


def _mean_history_content(data: RankerData, content: np.ndarray) -> np.ndarray:
    tr = data.train
    users = np.zeros((data.num_users, content.shape[1]), dtype=np.float64)
    np.add.at(users, tr.users, content[tr.items])
    counts = np.bincount(tr.users, minlength=data.num_users)[:, None]
    return (users / np.maximum(counts, 1)).astype(np.float32)


def _normalized(x: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.maximum(n, 1e-12)).astype(np.float32)


def fit_method(
    name: str,
    split: Split | RankerData,
    content_ids: np.ndarray | None = None,
    content_vectors: np.ndarray | None = None,
    params: dict[str, Any] | None = None,
    seed: int = 0,
    progress: bool = False,
) -> FittedMethod:
    """Train `name` on the split's train part; see the module docstring."""
    p = method_params(name, params, seed)
    data = (
        split
        if isinstance(split, RankerData)
        else build_ranker_data(split, content_ids, content_vectors)
    )
    needs_content = name in ("content_knn", "content_projection", "ours", "ours+sid")
    if needs_content and data.content is None:
        raise ValueError(f"method {name!r} needs content vectors (content_ids, content_vectors)")
    start = time.perf_counter()
    if name == "popularity":
        counts = data.train_counts().astype(np.float32)
        # Score = log-count: one coordinate for the item, a constant 1 for every user.
        items = np.log1p(counts)[:, None]
        users = np.ones((data.num_users, 1), np.float32)
        return FittedMethod(
            name, data, items, users, {"seconds": time.perf_counter() - start, "params": p}
        )
    if name == "content_knn":
        content = _normalized(data.content)
        users = _normalized(_mean_history_content(data, content))
        return FittedMethod(
            name, data, content, users, {"seconds": time.perf_counter() - start, "params": p}
        )

    ranker_cfg, build_cfg, train_cfg, extra = _split_params(p)
    model, report = create_ranker(data, ranker_cfg, build_cfg)
    fit_info = fit_ranker(model, data, train_cfg, progress=progress)
    items = model.item_vectors()[: data.num_items].numpy()
    histories = torch.as_tensor(data.histories(ranker_cfg.user.history_len))
    users = model.user_vectors(torch.arange(data.num_users), histories).numpy()
    if name == "content_projection":
        items = _ridge_cold_vectors(data, items, extra.get("ridge", 10.0))
    info = {**fit_info, **report, "seconds": time.perf_counter() - start, "params": p}
    return FittedMethod(name, data, items.astype(np.float32), users.astype(np.float32), info, model)


def _ridge_cold_vectors(data: RankerData, items: np.ndarray, alpha: float) -> np.ndarray:
    """Fit content -> trained ID vector on warm items (ridge), replace non-warm items' vectors."""
    content = _normalized(data.content)
    warm = (data.item_split == "warm") & data.has_content & (data.train_counts() > 0)
    x = np.concatenate([content[warm], np.ones((int(warm.sum()), 1), np.float32)], axis=1)
    y = items[warm]
    gram = x.T @ x + alpha * np.eye(x.shape[1], dtype=np.float32)
    w = np.linalg.solve(gram, x.T @ y)
    out = items.copy()
    other = ~warm
    out[other] = (
        np.concatenate([content[other], np.ones((int(other.sum()), 1), np.float32)], axis=1) @ w
    )
    return out


def run_method(
    name: str,
    split: Split | RankerData,
    content_ids: np.ndarray | None = None,
    content_vectors: np.ndarray | None = None,
    params: dict[str, Any] | None = None,
    part: str = "test",
    seed: int = 0,
    ks: tuple[int, ...] = KS,
) -> dict[str, dict[str, float]]:
    """Train `name` and return its per-segment metrics on `part` (val or test)."""
    return fit_method(name, split, content_ids, content_vectors, params, seed).evaluate(part, ks)
