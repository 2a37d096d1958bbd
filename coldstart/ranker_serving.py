"""Wiring of a trained ranker (an experiment's ranker artifact) into the index server.

    artifact = RankerArtifact.load("runs/x/artifacts/ranker/<key>/methods/ours")
    service = open_ranker_service(artifact, "runs/serve-ours", backend="faiss")
    create_app(load, config, encode=encode, ranker=service)

A method directory (ranker.methods.export_vectors) holds items/ (part-warm: trained items,
part-cold: cold and unseen items), users/, cold_item/ (the method's cold-item path) and
seen.parquet (the positives the test evaluation masks). The server keeps two stores of ranker
vectors (index.recommend) under one directory, each through the store registry (FAISS or
Milvus Lite; exact "Flat", inner product, no normalization): built from the artifact the first
time, reopened as they are afterwards, so acknowledged uploads survive restarts.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from coldstart.index.recommend import RankerService

log = logging.getLogger(__name__)

# Exact inner-product search over unnormalized vectors: score = user . item, as offline.
RANKER_INDEX = {"factory": "Flat", "metric": "ip", "normalize": False}


@dataclass
class RankerArtifact:
    """A method's exported vectors, read back. ids: numpy arrays of item / user ids."""

    directory: Path
    method: str
    warm_ids: np.ndarray  # (W,)
    warm_vectors: np.ndarray  # (W, D) float32
    cold_ids: np.ndarray  # (K,) cold_val, cold_test and unseen items of the split
    cold_vectors: np.ndarray  # (K, D)
    user_ids: np.ndarray  # (U,)
    user_vectors: np.ndarray  # (U, D)
    seen: dict[Any, list[Any]] = field(default_factory=dict)
    cold_item: Any = None  # ranker.cold_items.ColdItemMap | None
    history_user: Any = None  # ranker.cold_items.HistoryUserMap | None

    @property
    def dim(self) -> int:
        return int(self.warm_vectors.shape[1])

    def warmup(self, config: Any = None) -> Any:
        """ranker.warmup.warmup_fn of this method (`config` a WarmupConfig, default
        WarmupConfig()), its scale from the known (seen) positives on trained items."""
        from coldstart.ranker.warmup import WarmupConfig, warmup_fn

        user_row = {_py(u): r for r, u in enumerate(self.user_ids)}
        item_row = {_py(i): r for r, i in enumerate(self.warm_ids)}
        pairs = [
            (user_row[u], item_row[i])
            for u, items in self.seen.items()
            if u in user_row
            for i in items
            if i in item_row
        ]
        rows = np.asarray(pairs, np.int64).reshape(-1, 2)
        return warmup_fn(
            config or WarmupConfig(),
            self.user_vectors,
            self.warm_vectors,
            rows[:, 0],
            rows[:, 1],
        )

    @classmethod
    def load(cls, directory: str | Path, method: str | None = None) -> RankerArtifact:
        """Read a method directory, or a ranker stage directory plus `method`."""
        import pandas as pd

        from coldstart.ranker.cold_items import ColdItemMap, HistoryUserMap

        directory = Path(directory)
        if (directory / "methods").is_dir():
            names = sorted(p.name for p in (directory / "methods").iterdir())
            if method is None:
                raise ValueError(f"{directory} is a ranker stage: name a method ({names})")
            if method not in names:
                raise ValueError(f"{directory} has no method {method!r} (it has {names})")
            directory = directory / "methods" / method
        manifest = directory / "items" / "manifest.json"
        if not manifest.exists():
            raise FileNotFoundError(
                f"{directory} is not a ranker method directory (no items/manifest.json; made "
                "by the experiment's ranker stage or `coldstart ranker fit`)"
            )
        name = json.loads(manifest.read_text())["encoder_config"]["method"]

        def part(path: Path) -> tuple[np.ndarray, np.ndarray]:
            frame = pd.read_parquet(path, columns=["item_id", "vector"])
            vectors = np.stack(frame["vector"].to_numpy()).astype(np.float32)
            return frame["item_id"].to_numpy(), vectors

        warm_ids, warm = part(directory / "items" / "part-warm.parquet")
        cold_ids, cold = part(directory / "items" / "part-cold.parquet")
        user_ids, users = part(directory / "users" / "part-00000.parquet")
        seen: dict[Any, list[Any]] = {}
        if (directory / "seen.parquet").exists():
            frame = pd.read_parquet(directory / "seen.parquet")
            for uid, items in frame.groupby("user_id", sort=False)["item_id"]:
                seen[_py(uid)] = [_py(i) for i in items.to_numpy()]
        else:
            log.warning("%s has no seen.parquet: exclude_seen masks nothing", directory)
        maps = {}
        for sub, kind in (("cold_item", ColdItemMap), ("history_user", HistoryUserMap)):
            if (directory / sub / "manifest.json").exists():
                maps[sub] = kind.load(directory / sub)
        return cls(directory, name, warm_ids, warm, cold_ids, cold, user_ids, users, seen, **maps)


def ranker_export(directory: str | Path, method: str | None = None) -> str | None:
    """The content export a method read (its content.json, written by the experiment's ranker
    stage), when it still exists; None for methods exported without one."""
    from coldstart.ranker.methods import CONTENT_JSON

    directory = Path(directory)
    if method is not None and (directory / "methods").is_dir():
        directory = directory / "methods" / method
    try:
        export = json.loads((directory / CONTENT_JSON).read_text()).get("embeddings")
    except (OSError, ValueError):
        return None
    if export and (Path(export) / "manifest.json").exists():
        return str(export)
    if export:
        log.warning(
            "%s read the export %s, which is gone: uploads fused by the mean", directory, export
        )
    return None


def _py(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value


def _id_type(ids: np.ndarray) -> str:
    return "int" if np.issubdtype(np.asarray(ids).dtype, np.integer) else "str"


def open_ranker_stores(
    artifact: RankerArtifact,
    root: str | Path,
    backend: str = "faiss",
    settings: Mapping[str, Any] | None = None,
    with_cold: bool = False,
) -> tuple[Any, Any, Any]:
    """(warm store, cold store, warm-up state store) under `root` (root/warm/<store>,
    root/cold/<store>, root/events/<store>): built from the artifact when absent (cold: its
    non-warm items with `with_cold`, else empty; events: empty), reopened otherwise. settings: the backend's sections besides the index keys (e.g. {"store": {...}})."""
    from coldstart.index.registry import get_backend

    chosen = get_backend(backend)
    root = Path(root)
    id_type = _id_type(artifact.warm_ids)
    base = {k: dict(v) for k, v in (settings or {}).items()}
    index_keys = {**base.get(chosen.sections[0], {}), "dim": artifact.dim, "id_type": id_type}
    if backend == "faiss":
        index_keys.update(RANKER_INDEX)
    else:  # other stores name their own exact index; inner product, raw vectors
        index_keys.update(metric="ip", normalize=False)
    built = {**base, chosen.sections[0]: index_keys}
    # The warm-up state (index.recommend): [v0, sum of engaging users, n] per item, 2 D + 1.
    state_dim = 2 * artifact.dim + 1
    state_keys = {**index_keys, "dim": state_dim}
    stores = []
    for part, ids, vectors in (
        ("warm", artifact.warm_ids, artifact.warm_vectors),
        ("cold", artifact.cold_ids, artifact.cold_vectors),
        ("events", artifact.warm_ids[:0], np.zeros((0, state_dim), np.float32)),
    ):
        settings_ = {**built, chosen.sections[0]: state_keys} if part == "events" else built
        location = root / part / chosen.local_name
        if location.exists():
            stores.append(chosen.open(str(location), settings_))
            continue
        location.parent.mkdir(parents=True, exist_ok=True)
        if part == "cold" and not with_cold:
            ids, vectors = ids[:0], vectors[:0]
        source = {"ranker": str(artifact.directory), "method": artifact.method, "segment": part}
        store, _ = chosen.build([_py(i) for i in ids], vectors, str(location), settings_, source)
        stores.append(store)
    return stores[0], stores[1], stores[2]


def open_ranker_service(
    artifact: RankerArtifact,
    root: str | Path,
    backend: str = "faiss",
    settings: Mapping[str, Any] | None = None,
    with_cold: bool = False,
    warmup: Any = None,
) -> RankerService:
    """The index.recommend.RankerService of an artifact: its stores (open_ranker_stores), user
    vectors, seen items, cold-item path and online warm-up (ranker.warmup; `warmup` a
    WarmupConfig, default WarmupConfig()); warmed items are rebuilt from their state."""
    from coldstart.ranker.warmup import WarmupConfig

    warm, cold, events = open_ranker_stores(artifact, root, backend, settings, with_cold)
    row = {_py(u): r for r, u in enumerate(artifact.user_ids)}
    users = artifact.user_vectors
    user_list = [_py(u) for u in artifact.user_ids]

    def user_vector(user_id: Any) -> np.ndarray | None:
        r = row.get(user_id)
        return None if r is None else users[r]

    def seen(user_id: Any) -> list[Any]:
        return artifact.seen.get(user_id, [])

    cold_item, user_map = artifact.cold_item, artifact.history_user

    def history_user(item_ids: list[Any]) -> np.ndarray:
        return user_map(user_map.rows_of(item_ids))  # uploads (no catalogue row) add nothing

    config = warmup or WarmupConfig()
    service = RankerService(
        warm=warm,
        cold=cold,
        user_vector=user_vector,
        seen=seen,
        cold_item=cold_item,
        content_dim=int(cold_item.content_dim) if cold_item is not None else 0,
        history_user=history_user if user_map is not None else None,
        user_id_type=_id_type(artifact.user_ids),
        info={
            "method": artifact.method,
            "artifact": str(artifact.directory),
            "warmup_kappa": config.kappa,
        },
        events=events,
        warmup=artifact.warmup(config),
        users=lambda: user_list,
    )
    rebuilt = service.rebuild_warmup()
    if rebuilt:
        log.info("warm-up: %d served vectors rebuilt from their state", rebuilt)
    return service


def add_ranker_arguments(p: Any) -> None:
    """`coldstart serve` flags of a served ranker (argparse parser `p`)."""
    g = p.add_argument_group("ranker (recommendations: /v1/users/{id}/recommendations, ...)")
    g.add_argument(
        "--ranker",
        metavar="DIR",
        help="a trained method: runs/<name>/artifacts/ranker/<key>/methods/<method> (or the "
        "ranker stage directory with --ranker-method)",
    )
    g.add_argument("--ranker-method", help="method name inside a ranker stage directory")
    g.add_argument(
        "--ranker-store",
        metavar="DIR",
        help="directory of the ranker-space stores (built from --ranker the first time, "
        "reopened with their uploads afterwards); required with --ranker",
    )
    g.add_argument(
        "--ranker-backend", default="faiss", help="store backend of the ranker space (registry)"
    )
    g.add_argument(
        "--ranker-cold-items",
        action="store_true",
        help="also serve the artifact's cold and unseen items (default: trained items only; "
        "new items arrive as uploads)",
    )


def ranker_from_args(args: Any, encoder_dim: int | None) -> RankerService | None:
    """The RankerService of `coldstart serve --ranker ...`, or None without --ranker.
    ValueError / FileNotFoundError when the flags or the artifact do not fit together."""
    if not getattr(args, "ranker", None):
        return None
    if not args.ranker_store:
        raise ValueError("--ranker needs --ranker-store DIR (where its vector stores live)")
    artifact = RankerArtifact.load(args.ranker, args.ranker_method)
    cold = artifact.cold_item
    if cold is not None and encoder_dim is not None and cold.content_dim != encoder_dim:
        raise ValueError(
            f"the encoder has dim {encoder_dim}; method {artifact.method!r} reads content of "
            f"dim {cold.content_dim} (serve it with the experiment's encoder)"
        )
    service = open_ranker_service(
        artifact, args.ranker_store, args.ranker_backend, with_cold=args.ranker_cold_items
    )
    log.info(
        "ranker %s: %d warm, %d cold items, %d users%s",
        artifact.method,
        service.warm.count(),
        service.cold.count(),
        len(artifact.user_ids),
        "" if cold is not None else " (no cold-item path: uploads refused)",
    )
    return service
