"""Every cold-start method in one registry, with one source of defaults for both training paths.

    from coldstart.ranker.methods import fit_method, list_methods, resolve_method, run_method

    list_methods()                           # ("popularity", "id_only", ..., "ours", "ours+sid")
    resolved = resolve_method("ours", {"dim": 32})   # the configs both training paths use
    fitted = fit_method(name, split, content_ids, content_vectors, params=None, seed=0)
    fitted.evaluate("test", ks=(10, 20))      # {"cold"|"warm"|"all": {"recall@10", ..., "users"}}
    fitted.item_vectors()                    # (I, D) float32, row = split.items order
    fitted.user_vectors()                    # (U, D) float32, row = fitted.data.user_ids order
    fitted.score(user_rows, item_rows)       # (B, C) float32 scores (higher = better)
    fitted.info                              # train seconds, epochs, collision/SID reports, ...

Defaults: the config dataclasses' own field defaults (RankerConfig, ItemTowerConfig,
UserTowerConfig, TrainConfig, BuildConfig) ARE the defaults; a method's `MethodSpec.params`
holds only what it changes, and user params (a flat dict such as {"dim": 64, "epochs": 8,
"id_dropout": 0.5, "history": "sequence", "max_seconds": 60}) come last. Unknown keys raise.
`resolve_method` is the one place this happens: `fit_method` (the experiment's plain loop) and
`ranker.lit.LitRanker` (LightningCLI) both call it, so the same name and params train the same
model either way.

Adding a method is one `register_method(MethodSpec(...))` call: a trained Ranker with other
params, optionally a `finish` step on its vectors (e.g. content_projection's ridge map), or a
`fit` function for a method that trains no Ranker (popularity, content_knn). The experiment's
default method list and its validation read the registry.

Vectors: item vector = [v, bias] and user vector = [u, 1], so the dot product is the score.
split: data.split.Split. content_ids (N,), content_vectors (N, C): e.g. from
data.embeddings.read_embeddings(dir, "text"). Only item content is used (never tags).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from coldstart.data.schema import MEDIA_TYPES
from coldstart.data.split import Split
from coldstart.ranker.cold_items import (
    ColdItemMap,
    HistoryUserMap,
    apply_cold_map,
    media_onehot,
    tower_map,
    user_tower_map,
)
from coldstart.ranker.data import RankerData, build_ranker_data
from coldstart.ranker.metrics import KS, SEGMENTS, ranking_metrics
from coldstart.ranker.mixture import (
    ChannelRanker,
    MixtureConfig,
    knn_vectors,
    mix_vectors,
    mixture_weights,
    normalized_rows,
    pop_vectors,
    tune_mixture,
)
from coldstart.ranker.model import ItemTowerConfig, Ranker, RankerConfig, UserTowerConfig
from coldstart.ranker.train import (
    BuildConfig,
    FitCheckpoint,
    TrainConfig,
    create_ranker,
    fit_ranker,
)


@dataclass
class ResolvedMethod:
    """A method's configs after defaults and overrides: what both training paths build from.

    params: the flat overrides that produced it (method defaults, then user params, then seed).
    extra: the method's own keys (not config fields), e.g. {"ridge": 10.0}.
    """

    name: str
    ranker: RankerConfig
    build: BuildConfig
    train: TrainConfig
    extra: dict[str, Any]
    params: dict[str, Any]
    channels: dict[str, ResolvedMethod] = field(default_factory=dict)  # mixtures: channel -> cfg

    def flat(self) -> dict[str, Any]:
        """Every resolved knob as one flat dict (for reports and manifests)."""
        out: dict[str, Any] = {}
        for cfg in (self.ranker, self.ranker.item, self.ranker.user, self.train, self.build):
            for f in dataclasses.fields(cfg):
                if f.name not in ("item", "user", "extra"):
                    out.setdefault(f.name, getattr(cfg, f.name))
        out.update(self.extra)
        for name, channel in self.channels.items():
            out[f"channel.{name}"] = channel.name
        return out


# finish(data, items (I, D), users (U, D), resolved) -> (items, users, info): a step on a trained
# model's vectors. fit(data, resolved) -> (items, users, info): a method that trains no Ranker.
# combine(data, {channel: (items, users)}, resolved, {channel: ColdItemMap | None}) ->
# (items, users, info): a mixture's step from its trained channels' vectors to its served ones.
# Each may return a 4th element, the method's cold-item map (ranker.cold_items): content ->
# item vector for an item with no interactions. It replaces the cold path it came with.
Finish = Callable[[RankerData, np.ndarray, np.ndarray, ResolvedMethod], tuple]
Fit = Callable[[RankerData, ResolvedMethod], tuple]
Combine = Callable[
    [RankerData, dict[str, tuple[np.ndarray, np.ndarray]], ResolvedMethod, dict[str, Any]], tuple
]


def _with_cold(result: tuple, cold: ColdItemMap | None = None) -> tuple:
    """(items, users, info, cold map) of a finish / fit / combine result (3 or 4 elements)."""
    return (*result, cold) if len(result) == 3 else tuple(result)


def cold_rows(data: RankerData) -> np.ndarray:
    """Item rows served through the cold-item map: every non-warm row (cold_val, cold_test,
    unseen: no train interactions by construction), exactly the rows an uploaded item joins."""
    return np.flatnonzero(data.item_split != "warm")


@dataclass(frozen=True)
class MethodSpec:
    """One method. params: overrides of the config dataclasses' defaults; extra: defaults of the
    method's own keys; needs_content: refuses to run without content vectors; in_default: part of
    the experiment's default method list.

    channels: a mixture's trained channels, channel name -> registered method (each resolved
    with the mixture's params except the keys that method pins itself, trained side by side
    in one ChannelRanker); combine turns their vectors into the served ones.
    """

    name: str
    summary: str
    params: Mapping[str, Any] = field(default_factory=dict)
    extra: Mapping[str, Any] = field(default_factory=dict)
    needs_content: bool = False
    fit: Fit | None = None
    finish: Finish | None = None
    in_default: bool = True
    channels: Mapping[str, str] = field(default_factory=dict)
    combine: Combine | None = None

    @property
    def trains_ranker(self) -> bool:
        return self.fit is None


_REGISTRY: dict[str, MethodSpec] = {}


def register_method(spec: MethodSpec) -> MethodSpec:
    """Add (or replace) a method in the registry; returns it."""
    _REGISTRY[spec.name] = spec
    return spec


def list_methods() -> tuple[str, ...]:
    """Every registered method, in registration order."""
    return tuple(_REGISTRY)


def default_methods() -> list[str]:
    """The methods an experiment trains when its config names none."""
    return [name for name, spec in _REGISTRY.items() if spec.in_default]


def get_method(name: str) -> MethodSpec:
    if name not in _REGISTRY:
        raise ValueError(f"unknown method {name!r}; methods are {list_methods()}")
    return _REGISTRY[name]


def _config_targets() -> list[Any]:
    return [RankerConfig(), ItemTowerConfig(), UserTowerConfig(), TrainConfig(), BuildConfig()]


def resolve_method(
    name: str, params: Mapping[str, Any] | None = None, seed: int = 0
) -> ResolvedMethod:
    """The configs of method `name`: dataclass defaults <- the method's params <- `params`.

    `seed` applies unless `params` has its own. Keys that are neither a config field nor an
    extra key of a registered method raise ValueError (a typo must not fall back silently);
    another method's extra key is accepted and ignored, so one shared params dict can serve
    every method of an experiment.
    """
    spec = get_method(name)
    merged = {**spec.params, "seed": seed, **(params or {})}
    targets = _config_targets()
    names = [{f.name for f in dataclasses.fields(t)} - {"item", "user", "extra"} for t in targets]
    values: list[dict[str, Any]] = [{} for _ in targets]
    extra = dict(spec.extra)
    known_extra = {k for s in _REGISTRY.values() for k in s.extra}
    for key, value in merged.items():
        if key in known_extra:
            if key in spec.extra:
                extra[key] = value
            continue
        hit = [i for i, n in enumerate(names) if key in n]
        if not hit:
            raise ValueError(f"unknown ranker param {key!r}")
        for i in hit:  # e.g. "seed" goes to TrainConfig and BuildConfig, "hash_size" to both towers
            values[i][key] = value
    ranker = dataclasses.replace(targets[0], **values[0])
    ranker.item = dataclasses.replace(targets[1], **values[1])
    ranker.user = dataclasses.replace(targets[2], **values[2])
    channels = {}
    wanted = extra.get("mix_channels")  # a mixture without a model channel does not train it
    if spec.channels and wanted is not None:
        unknown = set(wanted) - set(spec.channels) - {"knn", "pop"}
        if unknown or not wanted:
            raise ValueError(
                f"mix_channels {sorted(unknown) or wanted} invalid; channels are "
                f"{[*spec.channels, 'knn', 'pop']}"
            )
    for channel, method in spec.channels.items():
        if wanted is not None and channel not in wanted:
            continue
        pinned = set(get_method(method).params)
        own = {k: v for k, v in merged.items() if k not in pinned and k not in spec.extra}
        channels[channel] = resolve_method(method, own, seed)
    if channels:  # the first channel's model config stands for the mixture's (history, loss)
        first = next(iter(channels.values()))
        ranker, build = first.ranker, first.build
    else:
        build = dataclasses.replace(targets[4], **values[4])
    return ResolvedMethod(
        name=name,
        ranker=ranker,
        build=build,
        train=dataclasses.replace(targets[3], **values[3]),
        extra=extra,
        params=merged,
        channels=channels,
    )


def create_method_model(
    data: RankerData, resolved: ResolvedMethod
) -> tuple[Ranker | ChannelRanker, dict[str, Any]]:
    """The untrained model of a method: a Ranker, or a ChannelRanker of its channels' Rankers.

    Returns (model, build report); a mixture's report is keyed by channel.
    """
    if not resolved.channels:
        return create_ranker(data, resolved.ranker, resolved.build)
    models, report = {}, {}
    for name, channel in resolved.channels.items():
        models[name], report[name] = create_ranker(data, channel.ranker, channel.build)
    return ChannelRanker(models), {"channels": report}


def model_vectors(
    model: Ranker | ChannelRanker, data: RankerData, resolved: ResolvedMethod
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """(items (I, D), users (U, D), info) of a trained model, after the method's finish step
    (a mixture: every channel's vectors, then its combine step).

    The one definition of a method's served vectors: fit_method, LitRanker's evaluation and its
    export writer all call it.
    """
    items, users, info, _ = method_vectors(model, data, resolved)
    return items, users, info


def method_vectors(
    model: Ranker | ChannelRanker, data: RankerData, resolved: ResolvedMethod
) -> tuple[np.ndarray, np.ndarray, dict[str, Any], ColdItemMap | None]:
    """model_vectors plus the method's cold-item map; the cold rows (`cold_rows`) of the
    returned items are the map's output, so evaluation scores exactly what a server serves."""
    spec = get_method(resolved.name)
    if isinstance(model, ChannelRanker):
        vectors, maps = {}, {}
        for name, sub in model.rankers():
            items, users, _, maps[name] = method_vectors(sub, data, resolved.channels[name])
            vectors[name] = (items, users)
        items, users, info, cold = _with_cold(spec.combine(data, vectors, resolved, maps))
    else:
        items = model.item_vectors()[: data.num_items].cpu().numpy()
        device = model.item_log_q.device
        histories = torch.as_tensor(data.histories(resolved.ranker.user.history_len), device=device)
        users = model.user_vectors(torch.arange(data.num_users, device=device), histories)
        users = users.cpu().numpy()
        info: dict[str, Any] = {}
        cold = _tower_cold_map(model, data, resolved)
        if spec.finish is not None:
            items, users, info, cold = _with_cold(spec.finish(data, items, users, resolved), cold)
    items = apply_cold_map(
        items.astype(np.float32), cold_rows(data), data.content, cold, data.media
    )
    return items, users.astype(np.float32), info, cold


def _tower_cold_map(model: Ranker, data: RankerData, resolved: ResolvedMethod) -> Any:
    """A Ranker's cold path (content MLP, no ID row), or None where a cold row has more: an ID
    row of its own (id_for_cold), semantic-ID prefixes, or no content at all."""
    item = resolved.ranker.item
    if (
        not item.use_content
        or item.semantic_ids
        or resolved.build.id_for_cold
        or data.content is None
    ):
        return None
    return tower_map(
        model.item_tower, data.content.shape[1], item.use_bias, resolved.build.normalize_content
    )


@dataclass
class FittedMethod:
    """A trained method: item and user vectors (or a score function) over the split's rows."""

    name: str
    data: RankerData
    items: np.ndarray  # (I, D) float32
    users: np.ndarray  # (U, D) float32
    info: dict[str, Any] = field(default_factory=dict)
    model: Any = None  # the Ranker for model-based methods
    cold_item: ColdItemMap | None = None  # content -> item vector of a new item (None: no path)
    history_user: HistoryUserMap | None = None  # history -> vector of a new user (None: no path)

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


CONTENT_JSON = "content.json"  # in a method's export: {"embeddings": the content export it read}


def export_vectors(
    out: str | Path,
    data: RankerData,
    items: np.ndarray,
    users: np.ndarray,
    resolved: ResolvedMethod,
    cold_item: ColdItemMap | None = None,
    history_user: HistoryUserMap | None = None,
    content_source: str | Path | None = None,
) -> dict[str, Any]:
    """Write a method's vectors in the embedding-export format (data.embeddings), ids included.

    out/items: modality "ranker", part-warm.parquet and part-cold.parquet (cold + unseen items),
    out/users: modality "user" (the item_id column holds user ids), each with a manifest.json
    naming the method and its resolved params, so anyone can re-score them:
    score(user, item) = users[user] . items[item]. Returns {"items": count, "users": count}.
    out/cold_item: the method's cold-item map (ranker.cold_items), when it has one: what a
    server runs on a new item's content. out/history_user: its user side over a history, for
    users it never saw. out/seen.parquet (user_id, item_id): the positives known before the
    test parts (train, val, cold_val), which the test evaluation masks.
    out/content.json ({"embeddings": path}): the content export the method read, when given, so
    that `coldstart serve --ranker` fuses and pools uploads as it did.
    """
    from coldstart.data.embeddings import (
        EmbeddingManifest,
        atomic_write_json,
        jsonable,
        write_part,
    )

    out = Path(out)
    config = {
        "method": resolved.name,
        "params": jsonable(resolved.flat()),
        "dim": int(items.shape[1]),
    }
    score = "inner product of the user vector and the item vector (users/ x items/)"
    parts = [
        write_part(
            out / "items", f"part-{part}.parquet", data.item_ids[mask], "ranker", items[mask], part
        )
        for part, mask in (("warm", data.item_split == "warm"), ("cold", data.item_split != "warm"))
    ]
    for directory, encoder, modality, written in (
        (out / "items", "ranker", "ranker", parts),
        (
            out / "users",
            "ranker-user-tower",
            "user",
            [
                write_part(
                    out / "users", "part-00000.parquet", data.user_ids, "user", users, "train"
                )
            ],
        ),
    ):
        EmbeddingManifest(
            encoder=encoder,
            encoder_config=config,
            weights_sha256="",
            dim=int(items.shape[1]),
            normalized=False,
            modalities=[modality],
            parts=written,
            extra={"score": score},
        ).save(directory)
    if cold_item is not None:
        cold_item.save(out / "cold_item")
    if history_user is not None:
        history_user.save(out / "history_user")
    write_seen(out / "seen.parquet", data)
    if content_source is not None:
        source = str(Path(content_source).resolve())
        atomic_write_json(out / CONTENT_JSON, {"embeddings": source})
    return {"items": int(len(items)), "users": int(len(users))}


def write_seen(path: str | Path, data: RankerData) -> None:
    """(user_id, item_id) of every positive the test evaluation masks (RankerData.task)."""
    import pandas as pd

    from coldstart.data.embeddings import atomic_write_bytes

    known = [data.parts[p] for p in ("train", "val", "cold_val") if p in data.parts]
    users = np.concatenate([k.users for k in known])
    items = np.concatenate([k.items for k in known])
    frame = pd.DataFrame({"user_id": data.user_ids[users], "item_id": data.item_ids[items]})
    atomic_write_bytes(path, frame.drop_duplicates().to_parquet(index=False))


def export_fitted(
    out: str | Path,
    fitted: FittedMethod,
    resolved: ResolvedMethod,
    content_source: str | Path | None = None,
) -> dict[str, Any]:
    """export_vectors of everything a fitted method carries: its vectors, its cold-item path and
    its user side over a history (what `coldstart serve --ranker` loads)."""
    return export_vectors(
        out,
        fitted.data,
        fitted.items,
        fitted.users,
        resolved,
        fitted.cold_item,
        fitted.history_user,
        content_source,
    )


def read_vectors(directory: str | Path, data: RankerData) -> tuple[np.ndarray, np.ndarray]:
    """(items (I, D), users (U, D)) of an `export_vectors` directory, in `data`'s row order."""
    import pandas as pd

    from coldstart.data.embeddings import read_embeddings

    out = []
    for sub, modality, ids in (
        ("items", "ranker", data.item_ids),
        ("users", "user", data.user_ids),
    ):
        got_ids, vectors = read_embeddings(Path(directory) / sub, modality)
        rows = pd.Series(np.arange(len(got_ids)), index=got_ids).reindex(ids).to_numpy()
        if np.isnan(rows).any():
            raise ValueError(
                f"{directory}/{sub} lacks {int(np.isnan(rows).sum())} of the data's ids"
            )
        out.append(vectors[rows.astype(np.int64)])
    return out[0], out[1]


def fit_method(
    name: str,
    split: Split | RankerData,
    content_ids: np.ndarray | None = None,
    content_vectors: np.ndarray | None = None,
    params: dict[str, Any] | None = None,
    seed: int = 0,
    progress: bool = False,
    checkpoint: FitCheckpoint | None = None,
) -> FittedMethod:
    """Train `name` on the split's train part; see the module docstring.

    checkpoint: where the training loop saves (and resumes from) its state, for methods that
    train a model (ranker.train.fit_ranker); others ignore it."""
    spec = get_method(name)
    resolved = resolve_method(name, params, seed)
    data = (
        split
        if isinstance(split, RankerData)
        else build_ranker_data(split, content_ids, content_vectors)
    )
    if spec.needs_content and data.content is None:
        raise ValueError(f"method {name!r} needs content vectors (content_ids, content_vectors)")
    start = time.perf_counter()
    if spec.fit is not None or (spec.channels and not resolved.channels):
        # No Ranker: a fit function, or a mixture of untrained channels only.
        result = spec.fit(data, resolved) if spec.fit else spec.combine(data, {}, resolved, {})
        items, users, info, cold = _with_cold(result)
        items = apply_cold_map(
            items.astype(np.float32), cold_rows(data), data.content, cold, data.media
        )
        info = {**info, "seconds": time.perf_counter() - start, "params": resolved.params}
        user_map = history_user_map(name, None, data, info)
        return FittedMethod(name, data, items, users.astype(np.float32), info, None, cold, user_map)
    model, report = create_method_model(data, resolved)
    fit_info = fit_ranker(model, data, resolved.train, progress=progress, checkpoint=checkpoint)
    items, users, finish_info, cold = method_vectors(model, data, resolved)
    info = {
        **fit_info,
        **report,
        **finish_info,
        "seconds": time.perf_counter() - start,
        "params": resolved.params,
    }
    return FittedMethod(
        name, data, items, users, info, model, cold, history_user_map(name, model, data, info)
    )


# Methods that train no Ranker and are a mixture channel themselves: their user side is it.
_FIT_CHANNEL = {"popularity": "pop", "content_knn": "knn"}


def history_user_map(
    name: str, model: Ranker | ChannelRanker | None, data: RankerData, info: dict[str, Any]
) -> HistoryUserMap | None:
    """The user side of a trained method for a user it never saw (ranker.cold_items): the
    same towers / formulas that made its users' vectors, over a history alone (a TorchRec-table
    tower as its plain torch-tables copy). None where a part has no such path (a tower without
    history, tables sharded over processes)."""
    if isinstance(model, Ranker):
        out = user_tower_map(model.user_tower)
    elif name in _FIT_CHANNEL:
        out = _channel_user_map(_FIT_CHANNEL[name], data)
    elif "mixture" in info:
        tuned = info["mixture"]
        channels = dict(model.rankers()) if isinstance(model, ChannelRanker) else {}
        parts = []
        for channel, _ in mixture_weights(data, tuned):
            if channel in channels:
                part = history_user_map(channel, channels[channel], data, {})
            else:
                part = _channel_user_map(channel, data)
            if part is None:
                return None
            parts.append(part)
        ones = int(bool(float(tuned.get("cold_offset") or 0.0)))  # the offset's column
        dim = sum(p.dim for p in parts) + ones
        out = HistoryUserMap("mixture", dim, 0, params={"ones": ones}, parts=parts)
    else:
        return None
    return None if out is None else out.with_catalogue(data.item_ids)


def _channel_user_map(channel: str, data: RankerData) -> HistoryUserMap | None:
    if channel == "pop":
        return HistoryUserMap("ones", 1, 0)
    if channel == "knn" and data.content is not None:
        content = normalized_rows(data.content)
        return HistoryUserMap("knn", content.shape[1], content.shape[1], {"content": content})
    return None


def _content_dim(data: RankerData) -> int:
    return 0 if data.content is None else int(data.content.shape[1])


def _fit_popularity(data: RankerData, resolved: ResolvedMethod) -> tuple:
    # Score = log-count: one coordinate for the item, a constant 1 for every user.
    items, users = pop_vectors(data)
    return items, users, {}, ColdItemMap("zeros", 1, _content_dim(data))


def _fit_content_knn(data: RankerData, resolved: ResolvedMethod) -> tuple:
    items, users = knn_vectors(data)
    return items, users, {}, ColdItemMap("normalize", _content_dim(data), _content_dim(data))


def _finish_ridge(
    data: RankerData, items: np.ndarray, users: np.ndarray, resolved: ResolvedMethod
) -> tuple:
    """Fit content -> trained ID vector on warm items (ridge), replace non-warm items' vectors."""
    content = normalized_rows(data.content)
    warm = (data.item_split == "warm") & data.has_content & (data.train_counts() > 0)
    cols = [content[warm], np.ones((int(warm.sum()), 1), np.float32)]
    # media_type: a one-hot of the item's media type beside its content (known at upload).
    types = len(MEDIA_TYPES) if resolved.ranker.item.media_type and data.media_types >= 2 else 0
    if types:
        cols.append(media_onehot(data.media[warm], types))
    x = np.concatenate(cols, axis=1)
    gram = x.T @ x + resolved.extra["ridge"] * np.eye(x.shape[1], dtype=np.float32)
    w = np.linalg.solve(gram, x.T @ items[warm]).astype(np.float32)
    params = {"media_types": types} if types else {}
    cold = ColdItemMap("ridge", int(w.shape[1]), _content_dim(data), {"w": w}, params)
    out = items.copy()
    out[~warm] = cold(data.content[~warm], None if data.media is None else data.media[~warm])
    return out, users, {}, cold


# The ID-only model: no content, random rows, cold items get (untrained) rows of their own.
_ID_ONLY = {"use_content": False, "init": "random", "id_for_cold": True, "id_dropout": 0.0}

register_method(
    MethodSpec(
        "popularity",
        "training count per item (cold items: all zero, i.e. no information)",
        fit=_fit_popularity,
    )
)
register_method(
    MethodSpec(
        "id_only", "two-tower model, ID rows only, random init; cold rows untrained", _ID_ONLY
    )
)
register_method(
    MethodSpec(
        "content_knn",
        "cosine of the item's content with the user's mean history content",
        needs_content=True,
        fit=_fit_content_knn,
    )
)
register_method(
    MethodSpec(
        "content_projection",
        "DeepMusic style: the id_only model, then a ridge map content -> ID vector for cold items",
        _ID_ONLY,
        extra={"ridge": 10.0},
        needs_content=True,
        finish=_finish_ridge,
    )
)
register_method(
    MethodSpec(
        "warmstart",
        "ID rows warm-started from content (residual on its projection), ID dropout",
        needs_content=True,
        in_default=False,
    )
)
register_method(
    MethodSpec(
        "warmstart+sid",
        "warmstart plus semantic-ID prefix embeddings (residual k-means of content)",
        {"semantic_ids": True},
        needs_content=True,
        in_default=False,
    )
)

# The mixture's own keys (ranker.mixture.MixtureConfig fields with a "mix_" prefix).
_MIX_EXTRA = {
    f"mix_{f.name}": getattr(MixtureConfig(), f.name)
    for f in dataclasses.fields(MixtureConfig)
    if f.name != "seed"
}


def _combine_mixture(
    data: RankerData,
    vectors: dict[str, tuple[np.ndarray, np.ndarray]],
    resolved: ResolvedMethod,
    maps: dict[str, ColdItemMap | None],
) -> tuple:
    """Add the knn and pop channels, tune the evidence-gated weights on val / cold_val, fold
    them into one item vector (ranker.mixture). Cold map: the channels' maps, each scaled by
    its cold weight, in the served vector's column order (None if a kept channel has none)."""
    cfg = MixtureConfig(
        **{k[len("mix_") :]: v for k, v in resolved.extra.items() if k.startswith("mix_")},
        seed=resolved.train.seed,
    )
    vectors = dict(vectors)
    if "knn" in cfg.channels:
        vectors["knn"] = knn_vectors(data)
    if "pop" in cfg.channels:
        vectors["pop"] = pop_vectors(data)
    tuned = tune_mixture(data, vectors, cfg)
    items, users = mix_vectors(data, vectors, tuned)
    c = _content_dim(data)
    maps = {**maps, "knn": ColdItemMap("normalize", c, c), "pop": ColdItemMap("zeros", 1, c)}
    kept = [name for name, _ in mixture_weights(data, tuned)]
    cold = None
    if all(maps.get(name) is not None for name in kept):
        factors = [float(tuned["cold"].get(name, 0.0)) / tuned["scales"][name] for name in kept]
        offset = float(tuned.get("cold_offset") or 0.0)
        cold = ColdItemMap(
            "mixture",
            int(items.shape[1]),
            c,
            params={"channels": kept, "factors": factors, "offset": offset},
            parts=[maps[name] for name in kept],
        )
    return items, users, {"mixture": tuned}, cold


for _name, _ws in (("ours", "warmstart"), ("ours+sid", "warmstart+sid")):
    register_method(
        MethodSpec(
            _name,
            f"evidence-gated mixture of content_projection (id), {_ws} (ws), content_knn and "
            "popularity channels, weights tuned on val / cold_val (ranker.mixture)",
            # 128 dims per model channel: chosen on val parts of four data sets
            # (configs/suites/sweep.yaml, docs/sweep.md); the baselines keep the shared 64.
            {"dim": 128},
            extra=_MIX_EXTRA,
            needs_content=True,
            channels={"ws": _ws, "id": "content_projection"},
            combine=_combine_mixture,
        )
    )


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
