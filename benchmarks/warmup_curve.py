"""Warming up online (issue 19, part 5): Recall@20 of cold_test items after their first n
interactions arrive as events, against content only (n = 0) and a full retrain.

For n in 0, 1, 2, 5, 10, 20: the first n interactions of every cold_test item (time order)
are sent to the served ranker as events (index.recommend.RankerService.record_events, the code
behind POST /v1/events, over FAISS stores on disk; kappa from --kappa); the item's served
vector moves from its content-derived value (ranker.warmup). The cold_test items are then
ranked for every user with remaining interactions on them; positives known to the model (train,
val, cold_val, and the n fed interactions) are masked, as in the offline test. Per n, on the
same remaining interactions:
  content_only_recall_at_20  the n = 0 vectors (the method's cold-item path)
  online_recall_at_20        the vectors after the events
  retrain_recall_at_20       (n = 1, 5, 20) the method fitted again with the n interactions in
                             its training data (same params and seed)

Prints one JSON line per n: {"bench": "warmup", "dataset", "method", "n", "items",
"online_recall_at_20", "retrain_recall_at_20", "content_only_recall_at_20",
"online_vs_retrain", "users", "events_s"}.

    .venv/bin/python benchmarks/warmup_curve.py [--method ours] [--items 1500 --users 600]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

NS = (0, 1, 2, 5, 10, 20)
RETRAIN_NS = (1, 5, 20)
K = 20


def synthetic_data(
    n_items: int, n_users: int, content_noise: float, popularity: float, seed: int
) -> Any:
    """RankerData of data.synthetic with 16 classes: content is the class one-hot plus
    noise, naming a random class for a `content_noise` share of items (content weakly
    informative, so engagement has something to add); Zipf `popularity` inside a class."""
    from coldstart.data.split import cold_start_split
    from coldstart.data.synthetic import make_synthetic
    from coldstart.ranker.data import build_ranker_data

    syn = make_synthetic(
        n_items=n_items,
        n_classes=16,
        n_users=n_users,
        interactions_per_user=40,
        seed=seed,
        image_size=8,
        popularity=popularity,
    )
    rng = np.random.default_rng(seed)
    shown = np.where(
        rng.random(n_items) < content_noise, rng.integers(0, 16, n_items), syn.item_class
    )
    content = np.zeros((n_items, 16), np.float32)
    content[np.arange(n_items), shown] = 1.0
    content += 0.2 * rng.standard_normal(content.shape).astype(np.float32)
    split = cold_start_split(syn.dataset, seed=seed)
    return build_ranker_data(split, syn.dataset.items["item_id"].to_numpy(), content)


def fed_split(data: Any, n: int) -> tuple[Any, np.ndarray]:
    """(data with the first n interactions of each cold_test item moved from the cold_test
    part into train, (F,) indices of the moved rows in the original cold_test part)."""
    from coldstart.ranker.data import Interactions

    part = data.parts["cold_test"]
    order = np.lexsort((np.arange(len(part.items)), part.timestamps, part.items))
    items = part.items[order]
    starts = np.r_[0, np.flatnonzero(np.diff(items)) + 1]
    rank = np.arange(len(items)) - np.repeat(starts, np.diff(np.r_[starts, len(items)]))
    fed = np.sort(order[rank < n])
    keep = np.setdiff1d(np.arange(len(part.items)), fed)

    def take(p: Interactions, rows: np.ndarray) -> Interactions:
        return Interactions(
            p.users[rows],
            p.items[rows],
            p.timestamps[rows],
            p.values[rows],
            None if p.request_ids is None else p.request_ids[rows],
            None if p.events is None else p.events[rows],
        )

    tr = data.train
    moved = take(part, fed)
    train = Interactions(
        np.concatenate([tr.users, moved.users]),
        np.concatenate([tr.items, moved.items]),
        np.concatenate([tr.timestamps, moved.timestamps]),
        np.concatenate([tr.values, moved.values]),
        None,  # requests are regrouped by the trainer when the log has none
        None,
    )
    parts = {**data.parts, "train": train, "cold_test": take(part, keep)}
    return replace(data, parts=parts), fed


def recall(data: Any, items: np.ndarray, users: np.ndarray) -> tuple[float, int]:
    """Recall@K of the cold_test items (candidates) on the test part, known positives masked."""
    from coldstart.ranker.metrics import ranking_metrics

    task = data.task("cold", "test")
    m = ranking_metrics(lambda u, c: users[u] @ items[c].T, task, (K,))
    return float(m[f"recall@{K}"]), int(m["users"])


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--method", default="ours")
    p.add_argument("--items", type=int, default=1500)
    p.add_argument("--users", type=int, default=600)
    p.add_argument("--dim", type=int, default=16)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--kappa", type=float, default=2.0)
    p.add_argument(
        "--retrain", nargs="*", type=int, default=list(RETRAIN_NS), help="n to retrain at"
    )
    p.add_argument("--content-noise", type=float, default=0.5)
    p.add_argument("--popularity", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    from coldstart.ranker.methods import export_fitted, fit_method, resolve_method
    from coldstart.ranker.warmup import WarmupConfig
    from coldstart.ranker_serving import RankerArtifact, open_ranker_service

    data = synthetic_data(args.items, args.users, args.content_noise, args.popularity, args.seed)
    params = {"dim": args.dim, "epochs": args.epochs}
    base = fit_method(args.method, data, params=params, seed=args.seed)
    rows = np.flatnonzero(data.item_split == "cold_test")
    ids = [int(i) for i in data.item_ids[rows]]
    with tempfile.TemporaryDirectory() as tmp:
        export_fitted(Path(tmp) / "m", base, resolve_method(args.method, params))
        artifact = RankerArtifact.load(Path(tmp) / "m")
        for n in NS:
            fed_data, fed = fed_split(data, n)
            part = data.parts["cold_test"]
            service = open_ranker_service(
                artifact, Path(tmp) / f"serve-{n}", with_cold=True, warmup=WarmupConfig(args.kappa)
            )
            try:
                start = time.perf_counter()
                if len(fed):  # in time order, one request per 1000 events
                    fed_t = fed[np.argsort(part.timestamps[fed], kind="stable")]
                    events = [
                        (int(data.user_ids[u]), int(data.item_ids[i]), 1.0)
                        for u, i in zip(part.users[fed_t], part.items[fed_t])
                    ]
                    for s in range(0, len(events), 1000):
                        service.record_events(events[s : s + 1000])
                events_s = time.perf_counter() - start
                online_items = base.items.copy()
                online_items[rows] = service.cold.get(ids)
            finally:
                service.close()
            online, users = recall(fed_data, online_items, base.users)
            content_only, _ = recall(fed_data, base.items, base.users)
            row: dict[str, Any] = {
                "bench": "warmup",
                "dataset": f"synthetic({args.items} items, {args.users} users, content_noise "
                f"{args.content_noise})",
                "method": args.method,
                "n": n,
                "kappa": args.kappa,
                "fed_events": int(len(fed)),
                "online_recall_at_20": round(online, 6),
                "retrain_recall_at_20": None,
                "content_only_recall_at_20": round(content_only, 6),
                "online_vs_retrain": None,
                "users": users,
                "events_s": round(events_s, 3),
            }
            if n in args.retrain:
                again = fit_method(args.method, fed_data, params=params, seed=args.seed)
                retrain, _ = recall(fed_data, again.items, again.users)
                row["retrain_recall_at_20"] = round(retrain, 6)
                row["online_vs_retrain"] = round(online / retrain, 4) if retrain else None
            print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
