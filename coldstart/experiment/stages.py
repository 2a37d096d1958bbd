"""Stage builders: each calls the domain package that owns the work and writes one artifact.

Every `build_*` function takes its inputs (upstream artifact directories, config sections) and a
fresh output directory, writes its files there and returns a JSON-able summary for the manifest.
Nothing here re-implements a domain package: when one has not landed yet the stage raises
StagePending and the pipeline records it as such.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from coldstart.experiment.config import (
    DataConfig,
    DimsConfig,
    EmbedConfig,
    EvaluateConfig,
    IndexConfig,
    RankerConfig,
    SplitConfig,
    StabilityConfig,
)
from data.schema import Dataset

# Bump a stage's version when its builder's output changes: old artifacts then stop matching.
VERSIONS = {
    "split": 1,
    "embed": 1,
    "index": 1,
    "ranker": 1,
    "evaluate": 1,
    "stability": 2,
    "dims": 2,
}


class StagePending(RuntimeError):
    """The domain code a stage needs is not available yet (recorded, never faked)."""


def require(module: str, *names: str) -> Any:
    """Import `module` and check it has `names`; StagePending when either is missing."""
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name and (module == exc.name or module.startswith(exc.name + ".")):
            raise StagePending(f"{module} has not landed yet") from exc
        raise
    missing = [n for n in names if not hasattr(mod, n)]
    if missing:
        raise StagePending(f"{module} lacks {', '.join(missing)} (not landed yet)")
    return mod


# --------------------------------------------------------------------------- data + split


def load_dataset(cfg: DataConfig) -> Dataset:
    """The experiment's Dataset through data.generic.load_dataset: MovieLens (the embedded copy,
    or `root`) or any CSV/Parquet pair described by the YAML mapping at `mapping`."""
    generic = require("data.generic", "load_dataset")
    if cfg.loader == "movielens":
        return generic.load_dataset("movielens", root=cfg.root)
    if cfg.loader == "generic":
        if not cfg.mapping:
            raise ValueError("data.loader 'generic' needs data.mapping: the YAML column mapping")
        if not Path(cfg.mapping).exists():
            raise FileNotFoundError(f"data.mapping {cfg.mapping} not found")
        return generic.load_dataset(cfg.mapping)
    raise ValueError(f"unknown data.loader {cfg.loader!r}; use 'movielens' or 'generic'")


def dataset_fingerprint(dataset: Dataset) -> str:
    """sha256 of the loaded tables, so the split is rebuilt when the data changes."""
    digest = hashlib.sha256()
    for frame in (dataset.items, dataset.interactions):
        text = frame.astype(str)  # list columns (genres) are not hashable as objects
        digest.update(",".join(map(str, frame.columns)).encode())
        digest.update(pd.util.hash_pandas_object(text, index=False).to_numpy().tobytes())
    return digest.hexdigest()


def build_split(dataset: Dataset, cfg: SplitConfig, out: Path) -> dict[str, Any]:
    split_mod = require("data.split", "cold_start_split", "write_split")
    split = split_mod.cold_start_split(dataset, **dataclasses.asdict(cfg))
    manifest = split_mod.write_split(split, out)
    return {k: v for k, v in manifest.items() if k != "files"}


def load_split(split_dir: Path) -> Any:
    return require("data.split", "load_split").load_split(split_dir)


# --------------------------------------------------------------------------- embed


def _batched_encode(encode: Any, inputs: list[Any], batch_size: int, desc: str) -> np.ndarray:
    """Encode `inputs` in batches with a progress bar -> (N, D) float32."""
    from tqdm import tqdm

    chunks = []
    for start in tqdm(range(0, len(inputs), batch_size), desc=desc, unit="batch", leave=False):
        chunks.append(encode(inputs[start : start + batch_size]).cpu().numpy())
    return np.concatenate(chunks).astype(np.float32)


def build_embed(split_dir: Path, cfg: EmbedConfig, data: DataConfig, out: Path) -> dict[str, Any]:
    """Embed every catalogue item's text (and its poster when shards are given) -> export.

    Parts: part-text.parquet (modality "text"), part-image.parquet ("image") and
    part-fused.parquet ("fused", text and image fused by encoders.fusion; text-only items keep
    their text vector). Downstream stages read "fused" when present, else "text".
    """
    encoders = require("encoders", "create_encoder")
    from data.embeddings import EmbeddingManifest, write_part
    from data.io import read_table
    from data.schema import ITEM_ID, item_text

    if cfg.threads > 0:
        import torch

        torch.set_num_threads(cfg.threads)
    items = read_table(split_dir / "items.parquet")
    ids = items[ITEM_ID].to_numpy()
    fields = tuple(cfg.text_fields)
    missing = [f for f in fields if f not in items.columns]
    if missing:
        raise ValueError(
            f"embed.text_fields {missing} are not catalogue columns {list(items.columns)}"
        )
    texts = [item_text(row, fields) for row in items[list(fields)].to_dict("records")]
    has_text = np.array([bool(t) for t in texts])
    text_encoder = encoders.create_encoder(cfg.encoder, cfg.pretrained)
    # Short texts first: batches pad to their longest text, so sorting saves most of the work.
    order = np.argsort([len(t) for t in texts], kind="stable")
    order = order[has_text[order]]
    text_vecs = np.zeros((len(items), text_encoder.dim), dtype=np.float32)
    if len(order):
        encoded = _batched_encode(
            text_encoder.encode_text, [texts[i] for i in order], cfg.batch_size, "embed text"
        )
        text_vecs[order] = encoded
    manifest = EmbeddingManifest(
        encoder=cfg.encoder,
        encoder_config=dataclasses.asdict(text_encoder.config),
        weights_sha256=text_encoder.weights_sha256(),
        dim=text_encoder.dim,
        normalized=True,
        modalities=["text"],
        extra={
            "text_fields": list(fields),
            "items": len(items),
            "items_with_text": int(has_text.sum()),
        },
    )
    manifest.parts.append(
        write_part(
            out, "part-text.parquet", ids[has_text], "text", text_vecs[has_text], "catalogue"
        )
    )
    summary: dict[str, Any] = {
        "encoder": cfg.encoder,
        "dim": text_encoder.dim,
        "weights_sha256": manifest.weights_sha256,
        "items_with_text": int(has_text.sum()),
    }
    if data.posters:
        image_vecs, has_image, image_info = _embed_posters(items, cfg, data.posters, text_encoder)
        manifest.modalities.append("image")
        manifest.source_shards = image_info.pop("shards")
        manifest.skipped = image_info.pop("skipped")
        manifest.extra["image"] = image_info
        manifest.parts.append(
            write_part(
                out, "part-image.parquet", ids[has_image], "image", image_vecs[has_image], "posters"
            )
        )
        import torch

        fusion = require("encoders.fusion", "create_fusion")
        kwargs: dict[str, Any] = {"modalities": ("image", "text")}
        if cfg.fusion == "weighted":
            kwargs["weights"] = {"image": cfg.image_weight, "text": 1.0 - cfg.image_weight}
        fuse = fusion.create_fusion(cfg.fusion, **kwargs)
        with torch.no_grad():
            fused = fuse(
                {"image": torch.from_numpy(image_vecs), "text": torch.from_numpy(text_vecs)},
                {"image": torch.from_numpy(has_image), "text": torch.from_numpy(has_text)},
            ).numpy()
        keep = has_image | has_text
        manifest.modalities.append("fused")
        manifest.parts.append(
            write_part(out, "part-fused.parquet", ids[keep], "fused", fused[keep], "fusion")
        )
        summary.update(image_info, items_with_image=int(has_image.sum()))
    manifest.save(out)
    summary.update(modalities=manifest.modalities, count=manifest.count)
    return summary


def _embed_posters(
    items: pd.DataFrame, cfg: EmbedConfig, posters: str, text_encoder: Any
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """(N, D) image vectors aligned to `items`, (N,) has-image mask, and a report."""
    from collections import Counter

    from tqdm import tqdm

    encoders = require("encoders", "create_encoder")
    shards_mod = require("data.shards", "expand_urls", "iter_shard")
    from data.schema import ITEM_ID, MEDIA_KEY

    if "image" in text_encoder.modalities and cfg.image_encoder is None:
        image_encoder = text_encoder
    else:
        if cfg.image_encoder is None:
            raise ValueError(
                f"embed.encoder {cfg.encoder!r} has no image tower: set embed.image_encoder "
                "(same output dim) to embed posters"
            )
        image_encoder = encoders.create_encoder(cfg.image_encoder, cfg.image_pretrained)
    if image_encoder.dim != text_encoder.dim:
        raise ValueError(
            f"image encoder dim {image_encoder.dim} != text encoder dim {text_encoder.dim}: "
            "fusion needs one space"
        )
    keys = items[MEDIA_KEY] if MEDIA_KEY in items.columns else items[ITEM_ID].astype(str)
    row_of = {str(k): i for i, k in enumerate(keys.tolist()) if k is not None}
    vecs = np.zeros((len(items), image_encoder.dim), dtype=np.float32)
    has = np.zeros(len(items), dtype=bool)
    skipped: Counter = Counter()
    shards = shards_mod.expand_urls(posters)
    missing_shards = [s for s in shards if not Path(s).exists()]
    if missing_shards:
        raise FileNotFoundError(f"poster shards not found: {missing_shards[:3]}")
    batch_rows: list[int] = []
    batch_images: list[Any] = []

    def flush() -> None:
        if batch_rows:
            vecs[batch_rows] = image_encoder.encode_image(batch_images).cpu().numpy()
            has[batch_rows] = True
            batch_rows.clear()
            batch_images.clear()

    unmatched = 0
    for shard in tqdm(shards, desc="embed posters", unit="shard", leave=False):
        for sample in shards_mod.iter_shard(shard, skipped=skipped):
            row = row_of.get(str(sample["key"]).rsplit("/", 1)[-1])
            if row is None:
                unmatched += 1
                continue
            batch_rows.append(row)
            batch_images.append(sample["image"])
            if len(batch_rows) >= cfg.batch_size:
                flush()
    flush()
    info = {
        "image_encoder": image_encoder.config.name,
        "image_weights_sha256": image_encoder.weights_sha256(),
        "images_unmatched": unmatched,
        "shards": shards,
        "skipped": dict(skipped),
    }
    return vecs, has, info


def content_vectors(embed_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """(ids (N,), vectors (N, D)) of the export's "fused" rows, or "text" when there are none."""
    from data.embeddings import EmbeddingManifest, read_embeddings

    manifest = EmbeddingManifest.load(embed_dir)
    modality = "fused" if "fused" in manifest.modalities else "text"
    return read_embeddings(embed_dir, modality)


# --------------------------------------------------------------------------- index


def build_index(split_dir: Path, embed_dir: Path, cfg: IndexConfig, out: Path) -> dict[str, Any]:
    """index.build.build_index over the content vectors, plus cold items' nearest warm items."""
    build_mod = require("index.build", "build_index")
    index_mod = require("index", "IndexConfig", "DurableIndex")
    from data.embeddings import EmbeddingManifest
    from data.io import read_table
    from data.schema import ITEM_ID, TITLE

    modality = "fused" if "fused" in EmbeddingManifest.load(embed_dir).modalities else "text"
    report = build_mod.build_index(
        embed_dir,
        out / "index",
        index_mod.IndexConfig(factory=cfg.factory, metric=cfg.metric),
        modality=modality,
        recall_queries=cfg.eval_queries,
    )
    report["index"] = "index"  # relative: the artifact directory is renamed into place
    report["modality"] = modality

    # A few cold items and their nearest warm items: what a brand-new item is served with.
    items = read_table(split_dir / "items.parquet")
    split_of = dict(zip(items[ITEM_ID].tolist(), items["split"].tolist()))
    title_of = (
        dict(zip(items[ITEM_ID].tolist(), items[TITLE].tolist())) if TITLE in items.columns else {}
    )
    ids, vectors = content_vectors(embed_dir)
    cold_rows = [i for i, item in enumerate(ids.tolist()) if split_of.get(item) == "cold_test"]
    examples = []
    if cold_rows:
        pick = np.random.default_rng(0).choice(
            cold_rows, size=min(5, len(cold_rows)), replace=False
        )
        index = index_mod.DurableIndex.open(out / "index")
        try:
            found = index.search(vectors[np.sort(pick)], 50)
        finally:
            index.close(snapshot=False)
        for row, hits in zip(np.sort(pick), found.ids):
            warm = [h for h in hits if split_of.get(h) == "warm"][:5]
            examples.append(
                {
                    "item": str(title_of.get(ids[row], ids[row])),
                    "neighbours": [str(title_of.get(h, h)) for h in warm],
                }
            )
    return {
        "factory": report["factory"],
        "metric": report["metric"],
        "ntotal": report["n"],
        "dim": report["dim"],
        "recall@10": report["recall_at_10"],
        "build_s": report["build_s"],
        "modality": modality,
        "examples": examples,
    }


# --------------------------------------------------------------------------- ranker + evaluate


def method_names() -> tuple[str, ...]:
    return require("ranker.methods", "METHODS").METHODS


def params_for(cfg: RankerConfig, method: str) -> dict[str, Any]:
    """Flat ranker params of one method: the shared keys of ranker.params, then the method's own
    sub-mapping (e.g. `params: {epochs: 8, ours+sid: {sid_levels: 3}}`)."""
    names = set(method_names())
    shared = {k: v for k, v in cfg.params.items() if k not in names}
    own = cfg.params.get(method) or {}
    if not isinstance(own, dict):
        raise ValueError(f"ranker.params.{method} must be a mapping of that method's params")
    return {**shared, **own}


def _ranker_inputs(split_dir: Path, embed_dir: Path) -> Any:
    """RankerData for the split with the content vectors aligned to its catalogue."""
    data_mod = require("ranker.data", "build_ranker_data")
    ids, vectors = content_vectors(embed_dir)
    return data_mod.build_ranker_data(load_split(split_dir), ids, vectors)


def _jsonable(obj: Any) -> Any:
    import json

    return json.loads(
        json.dumps(obj, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o))
    )


def build_ranker(split_dir: Path, embed_dir: Path, cfg: RankerConfig, out: Path) -> dict[str, Any]:
    """Train every method of `cfg.methods`; save its item and user vectors and its info."""
    methods_mod = require("ranker.methods", "fit_method", "METHODS")
    from data.embeddings import atomic_write_json

    unknown = [m for m in cfg.methods if m not in methods_mod.METHODS]
    if unknown:
        raise ValueError(f"ranker.methods {unknown} unknown; methods are {methods_mod.METHODS}")
    data = _ranker_inputs(split_dir, embed_dir)
    summary: dict[str, Any] = {}
    for name in cfg.methods:
        params = params_for(cfg, name)
        print(f"[ranker] training {name} {params or ''}", file=sys.stderr, flush=True)
        fitted = methods_mod.fit_method(name, data, params=params, seed=cfg.seed)
        target = out / "methods" / name
        target.mkdir(parents=True)
        np.save(target / "items.npy", fitted.item_vectors())
        np.save(target / "users.npy", fitted.user_vectors())
        info = _jsonable(fitted.info)
        atomic_write_json(target / "info.json", info)
        summary[name] = {
            "seconds": round(float(info.get("seconds", 0.0)), 2),
            "dim": int(fitted.item_vectors().shape[1]),
        }
    return {"methods": summary}


def _load_fitted(ranker_dir: Path, name: str, data: Any) -> Any:
    methods_mod = require("ranker.methods", "FittedMethod")
    target = ranker_dir / "methods" / name
    return methods_mod.FittedMethod(
        name, data, np.load(target / "items.npy"), np.load(target / "users.npy")
    )


def build_evaluate(
    split_dir: Path, embed_dir: Path, ranker_dir: Path, cfg: EvaluateConfig, out: Path
) -> dict[str, Any]:
    """Full-ranking Recall/NDCG of every trained method on the test parts (ranker.metrics)."""
    import json

    from data.embeddings import atomic_write_json

    data = _ranker_inputs(split_dir, embed_dir)
    names = list(json.loads((ranker_dir / "artifact.json").read_text())["summary"]["methods"])
    ks = tuple(sorted({10, 20, *cfg.curve_ks}))
    quality: dict[str, Any] = {}
    curves: dict[str, Any] = {}
    for name in names:
        metrics = _load_fitted(ranker_dir, name, data).evaluate("test", ks)
        quality[name] = {
            seg: {
                key: metrics[seg][key] for key in ("recall@10", "recall@20", "ndcg@10", "ndcg@20")
            }
            | {"users": metrics[seg].get("users")}
            for seg in ("cold", "warm", "all")
        }
        curves[name] = {
            seg: {str(k): metrics[seg][f"recall@{k}"] for k in sorted(cfg.curve_ks)}
            for seg in ("cold", "warm")
        }
    atomic_write_json(out / "quality.json", quality)
    atomic_write_json(out / "curves.json", curves)
    return {"part": "test", "ks": list(ks), "methods": names}


# --------------------------------------------------------------------------- analyses


def neighbour_overlap(a: np.ndarray, b: np.ndarray, rows: np.ndarray, k: int) -> np.ndarray:
    """Per row of `rows`: |top-k neighbours in a ∩ top-k in b| / k (cosine, self excluded).

    a, b: (I, D_a), (I, D_b) item vectors of two models over the same item rows; neighbours are
    searched among `rows` only. Returns (len(rows),) float.
    """

    def unit(x: np.ndarray) -> np.ndarray:
        x = x[rows].astype(np.float32)
        return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)

    ua, ub = unit(a), unit(b)
    out = np.zeros(len(rows), dtype=np.float64)
    for start in range(0, len(rows), 1024):
        stop = min(start + 1024, len(rows))
        tops = []
        for u in (ua, ub):
            sims = u[start:stop] @ u.T  # (B, R)
            sims[np.arange(stop - start), np.arange(start, stop)] = -np.inf  # not its own neighbour
            tops.append(np.argpartition(-sims, k, axis=1)[:, :k])
        for i in range(stop - start):
            out[start + i] = len(np.intersect1d(tops[0][i], tops[1][i])) / k
    return out


def _id_part(vectors: np.ndarray) -> np.ndarray:
    """Item vectors are [v, bias] (ranker.methods): neighbours use v only."""
    return vectors[:, :-1] if vectors.shape[1] > 1 else vectors


def build_stability(
    split_dir: Path,
    embed_dir: Path,
    cfg: StabilityConfig,
    ranker: RankerConfig,
    index: IndexConfig,
    out: Path,
) -> dict[str, Any]:
    """Neighbour overlap between seeds and between an old and a retrained model, per init."""
    methods_mod = require("ranker.methods", "fit_method", "method_params")
    data_mod = require("ranker.data", "build_ranker_data")
    from data.embeddings import atomic_write_json
    from data.schema import TIMESTAMP

    if len(cfg.seeds) != 2:
        raise ValueError("stability.seeds must hold exactly two seeds")
    split = load_split(split_dir)
    ids, vectors = content_vectors(embed_dir)
    data = data_mod.build_ranker_data(split, ids, vectors)
    # The "old" model: the same training log without its newest retrain_fraction of rows.
    cutoff = np.quantile(split.train[TIMESTAMP].to_numpy(), 1.0 - cfg.retrain_fraction)
    old_split = dataclasses.replace(split, train=split.train[split.train[TIMESTAMP] < cutoff])
    old_data = data_mod.build_ranker_data(old_split, ids, vectors)
    segment = np.asarray(data.item_split)
    rows = np.flatnonzero(segment != "unseen")
    is_warm = segment[rows] == "warm"
    result_rows = []
    for init in cfg.inits:
        params = {**params_for(ranker, cfg.method), **cfg.params, "init": init}
        resolved = methods_mod.method_params(cfg.method, params, cfg.seeds[0])
        print(
            f"[stability] {cfg.method} init={init} seeds={cfg.seeds} + old model",
            file=sys.stderr,
            flush=True,
        )
        first, second = (
            methods_mod.fit_method(cfg.method, data, params=params, seed=s) for s in cfg.seeds
        )
        old = methods_mod.fit_method(cfg.method, old_data, params=params, seed=cfg.seeds[0])
        seeds = neighbour_overlap(_id_part(first.items), _id_part(second.items), rows, cfg.k)
        retrain = neighbour_overlap(_id_part(old.items), _id_part(first.items), rows, cfg.k)
        metrics = first.evaluate("test", (10, 20))
        result_rows.append(
            {
                "init": init,
                "seed_overlap": float(seeds.mean()),
                "seed_overlap_warm": float(seeds[is_warm].mean()),
                "seed_overlap_cold": float(seeds[~is_warm].mean()) if (~is_warm).any() else None,
                "retrain_overlap": float(retrain.mean()),
                "retrain_overlap_warm": float(retrain[is_warm].mean()),
                "retrain_overlap_cold": float(retrain[~is_warm].mean())
                if (~is_warm).any()
                else None,
                "cold_recall@20": metrics["cold"]["recall@20"],
                "warm_recall@20": metrics["warm"]["recall@20"],
                "params": _jsonable(resolved),
            }
        )
    data_out = {
        "method": cfg.method,
        "k": cfg.k,
        "seeds": list(cfg.seeds),
        "retrain_fraction": cfg.retrain_fraction,
        "old_train_rows": int(len(old_split.train)),
        "train_rows": int(len(split.train)),
        "items": int(len(rows)),
        "rows": result_rows,
    }
    atomic_write_json(out / "stability.json", data_out)
    return {r["init"]: {"seed_overlap": round(r["seed_overlap"], 4)} for r in result_rows}


def build_dims(
    split_dir: Path,
    embed_dir: Path,
    cfg: DimsConfig,
    ranker: RankerConfig,
    index: IndexConfig,
    out: Path,
) -> dict[str, Any]:
    """Item-vector dim -> cold/warm Recall@20, index memory and search QPS (index.VectorIndex)."""
    import time

    methods_mod = require("ranker.methods", "fit_method", "method_params")
    index_mod = require("index", "IndexConfig", "VectorIndex")
    import faiss

    from data.embeddings import atomic_write_json

    data = _ranker_inputs(split_dir, embed_dir)
    rng = np.random.default_rng(0)
    rows = []
    for dim in cfg.dims:
        params = {**params_for(ranker, cfg.method), **cfg.params, "dim": int(dim)}
        print(f"[dims] {cfg.method} dim={dim}", file=sys.stderr, flush=True)
        fitted = methods_mod.fit_method(cfg.method, data, params=params, seed=ranker.seed)
        metrics = fitted.evaluate("test", (10, 20))
        items, users = fitted.item_vectors(), fitted.user_vectors()
        # Scores are dot products of [u, 1] and [v, bias]: maximum inner product, unnormalized.
        item_ids = np.asarray(data.item_ids)
        config = index_mod.IndexConfig(
            factory=cfg.factory,
            metric="ip",
            normalize=False,
            id_type="int" if item_ids.dtype.kind in "iu" else "str",
        )
        vindex = index_mod.VectorIndex.build(item_ids.tolist(), items, config)
        with vindex.frozen():
            index_bytes = int(faiss.serialize_index(vindex.faiss_index()).nbytes)
        queries = users[rng.integers(0, len(users), size=cfg.qps_queries)]
        vindex.search(queries[:64], cfg.k)  # warm-up
        best = float("inf")
        for _ in range(3):  # best of three passes: the machine is shared, noise only adds time
            start = time.perf_counter()
            for lo in range(0, len(queries), 256):
                vindex.search(queries[lo : lo + 256], cfg.k)
            best = min(best, time.perf_counter() - start)
        qps = len(queries) / best
        vindex.close()
        rows.append(
            {
                "dim": int(dim),
                "vector_dim": int(items.shape[1]),
                "cold_recall@20": metrics["cold"]["recall@20"],
                "warm_recall@20": metrics["warm"]["recall@20"],
                "all_recall@20": metrics["all"]["recall@20"],
                "index_bytes": index_bytes,
                "qps": float(qps),
                "factory": cfg.factory,
                "train_seconds": float(fitted.info.get("seconds", 0.0)),
            }
        )
    result = {
        "method": cfg.method,
        "factory": cfg.factory,
        "k": cfg.k,
        "queries": cfg.qps_queries,
        "threads": int(faiss.omp_get_max_threads()),
        "items": int(data.num_items),
        "params": _jsonable(
            methods_mod.method_params(
                cfg.method, {**params_for(ranker, cfg.method), **cfg.params}, ranker.seed
            )
        ),
        "rows": rows,
    }
    atomic_write_json(out / "dims.json", result)
    return {str(r["dim"]): {"qps": round(r["qps"]), "index_bytes": r["index_bytes"]} for r in rows}
