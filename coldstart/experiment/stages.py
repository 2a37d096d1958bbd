"""Stage builders: each calls the domain package that owns the work and writes one artifact.

Every `build_*` function takes its inputs (upstream artifact directories, config sections) and a
fresh output directory, writes its files there and returns a JSON-able summary for the manifest.
Nothing here re-implements a domain package; heavy imports happen inside the builders, so
loading a config stays fast.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from coldstart.data.schema import Dataset
from coldstart.experiment.config import (
    DataConfig,
    DimsConfig,
    EmbedStageConfig,
    EncoderStageConfig,
    EvaluateConfig,
    IndexStageConfig,
    RankerStageConfig,
    SplitConfig,
    StabilityConfig,
    SyntheticConfig,
)

# Bump a stage's version when its builder's output changes: old artifacts then stop matching.
VERSIONS = {
    "data": 1,
    "split": 1,
    "encoder": 1,
    "embed": 3,
    "index": 1,
    "ranker": 6,  # 6: cold_item/, history_user/ maps and seen.parquet beside the vectors
    "evaluate": 2,
    "stability": 3,
    "dims": 3,
}
# What metrics.json and quality.json keep per method and segment (plus "users").
QUALITY_KEYS = (
    "recall@10",
    "recall@20",
    "ndcg@10",
    "ndcg@20",
    "capped_recall@10",
    "capped_recall@20",
)


# --------------------------------------------------------------------------- data + split


def load_dataset(cfg: DataConfig) -> Dataset:
    """The experiment's Dataset through data.generic.load_dataset: MovieLens (the embedded copy,
    or `root`) or any CSV/Parquet pair described by the YAML mapping at `mapping`."""
    import coldstart.data.generic as generic

    if cfg.loader == "movielens":
        return generic.load_dataset("movielens", root=cfg.root)
    if cfg.loader == "generic":
        if not cfg.mapping:
            raise ValueError("data.loader 'generic' needs data.mapping: the YAML column mapping")
        if not Path(cfg.mapping).exists():
            raise FileNotFoundError(f"data.mapping {cfg.mapping} not found")
        return generic.load_dataset(cfg.mapping)
    raise ValueError(f"unknown data.loader {cfg.loader!r}; use 'movielens' or 'generic'")


def add_media_types(dataset: Dataset, posters: str) -> Dataset:
    """A catalogue without a media_type column takes it from its shards (data.shards.media_types:
    photo, carousel or video by each sample's members; items without media "none") when they
    hold two or more types. One type (MovieLens posters: photos only) says nothing and leaves
    the catalogue, and so the split's key, as it was."""
    from coldstart.data.schema import ITEM_ID, MEDIA_TYPE
    from coldstart.data.shards import media_types

    if MEDIA_TYPE in dataset.items.columns:
        return dataset
    found = media_types(posters)
    if len(set(found.values())) < 2:
        return dataset
    items = dataset.items.copy()
    items[MEDIA_TYPE] = [found.get(i, "none") for i in items[ITEM_ID].tolist()]
    return dataclasses.replace(dataset, items=items)


def build_synthetic_data(cfg: SyntheticConfig, name: str, out: Path) -> dict[str, Any]:
    """data.synthetic's files + YAML mapping (read back through the generic loader)."""
    from coldstart.data.synthetic import write_generic_files

    write_generic_files(out, cfg, name=name)
    return {"files": sorted(p.name for p in out.iterdir()), "timestamps": cfg.timestamps}


def catalogue_fingerprint(split_dir: Path, cfg: EmbedStageConfig) -> str:
    """sha256 of what the embed stage reads from the catalogue (ids + text fields), so that
    every split of one data set shares one embedding artifact."""
    from coldstart.data.io import read_table
    from coldstart.data.schema import ITEM_ID

    items = read_table(split_dir / "items.parquet")
    columns = [ITEM_ID, *(c for c in cfg.text_fields if c in items.columns)]
    text = items[columns].astype(str)
    digest = hashlib.sha256(",".join(columns).encode())
    digest.update(pd.util.hash_pandas_object(text, index=False).to_numpy().tobytes())
    return digest.hexdigest()


def dataset_fingerprint(dataset: Dataset) -> str:
    """sha256 of the loaded tables, so the split is rebuilt when the data changes."""
    digest = hashlib.sha256()
    for frame in (dataset.items, dataset.interactions):
        text = frame.astype(str)  # list columns (genres) are not hashable as objects
        digest.update(",".join(map(str, frame.columns)).encode())
        digest.update(pd.util.hash_pandas_object(text, index=False).to_numpy().tobytes())
    return digest.hexdigest()


def build_split(dataset: Dataset, cfg: SplitConfig, out: Path) -> dict[str, Any]:
    import coldstart.data.split as split_mod

    split = split_mod.cold_start_split(dataset, **dataclasses.asdict(cfg))
    manifest = split_mod.write_split(split, out)
    return {k: v for k, v in manifest.items() if k != "files"}


def load_split(split_dir: Path) -> Any:
    from coldstart.data.split import load_split as load

    return load(split_dir)


# --------------------------------------------------------------------------- embed


def embed_encoder(cfg: EmbedStageConfig, data: DataConfig) -> tuple[str, str | None]:
    """(registry name, pretrained) the embed stage runs: with posters and an image encoder, the
    composite `<image_encoder>+<encoder>` (no single pretrained tag applies to it)."""
    if data.posters and cfg.image_encoder:
        return f"{cfg.image_encoder}+{cfg.encoder}", None
    return cfg.encoder, cfg.pretrained


def embed_trainer(resolved: dict[str, Any]) -> dict[str, Any]:
    """A resolved trainer section (config.resolve_trainer) -> the embed job's accelerator,
    devices and precision. The job splits its work by shard over `devices` processes (DDP when
    more than one), so "auto" devices is one and the strategy is the job's own."""
    precision = resolved["precision"] or "32"
    precision = {"32-true": "32", "bf16": "bf16-mixed", "16": "16-mixed"}.get(precision, precision)
    devices = resolved["devices"]
    return {
        "accelerator": resolved["accelerator"],
        "devices": devices if isinstance(devices, int) else 1,
        "precision": precision,
    }


def build_embed(
    split_dir: Path,
    cfg: EmbedStageConfig,
    data: DataConfig,
    out: Path,
    encoder_dir: Path | None = None,
    trainer: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Embed the split's catalogue (and posters when shards are given) with the encoders' batch
    job (encoders.embed.build_embeddings: Lightning predict, one part per shard / text chunk).

    With posters the job runs a composite encoder, `<image_encoder>+<encoder>` (images from the
    first, texts from the second, one space), and writes "image", "text" and "fused" rows.
    Downstream stages read "fused" when present, else "text". encoder_dir: an encoder stage's
    artifact; its checkpoint (and the registry name it was trained as) replace the encoder.
    trainer: a resolved trainer section (default: CPU, 32-bit, one process).
    """
    import json

    import coldstart.encoders.embed as embed
    from coldstart.data.embeddings import EmbeddingManifest

    if cfg.threads > 0:
        import torch

        torch.set_num_threads(cfg.threads)
    inputs = [str(split_dir / "items.parquet")]
    encoder, pretrained = embed_encoder(cfg, data)
    fusion_weights = {}
    if encoder_dir is not None:
        tuned = json.loads((encoder_dir / "artifact.json").read_text())["summary"]
        encoder, pretrained = tuned["encoder"], str(encoder_dir / tuned["checkpoint"])
    if data.posters:
        from coldstart.data.shards import expand_urls

        shards = expand_urls(data.posters)
        missing = [s for s in shards if not Path(s).exists()]
        if not shards or missing:
            raise FileNotFoundError(f"poster shards not found: {data.posters} ({missing[:3]})")
        inputs = [*shards, *inputs]
        if cfg.fusion == "weighted":
            # A video is the item's visual medium as an image is: image_weight weighs either.
            w = cfg.image_weight
            fusion_weights = {"image": w, "video": w, "text": 1.0 - w}
    devices = embed_trainer(trainer) if trainer else {}
    job = embed.EmbedConfig(
        encoder=encoder,
        inputs=inputs,
        out=str(out),
        pretrained=pretrained,
        batch_size=cfg.batch_size,
        num_workers=cfg.num_workers,
        text_fields=tuple(cfg.text_fields),
        fusion=cfg.fusion,
        fusion_weights=fusion_weights,
        progress=True,
        **devices,
    )
    manifest: EmbeddingManifest = embed.build_embeddings(job)
    return {
        "encoder": encoder,
        "dim": manifest.dim,
        "weights_sha256": manifest.weights_sha256,
        "modalities": list(manifest.modalities),
        "count": manifest.count,
        "skipped": dict(manifest.skipped),
        "parts": len(manifest.parts),
    }


def build_encoder(
    split_dir: Path,
    base_embed_dir: Path | None,
    cfg: EncoderStageConfig,
    embed_cfg: EmbedStageConfig,
    data: DataConfig,
    trainer: dict[str, Any],
    out: Path,
) -> dict[str, Any]:
    """The encoder stage: encoders.engagement.fit_item_encoder on the split's TRAIN part and its
    warm items only (val, test and cold interactions, and cold items, are never read).

    base_embed_dir: the untuned embed export (frozen mode: the backbone's cached vectors).
    """
    from coldstart.data.embeddings import EmbeddingManifest, read_embeddings
    from coldstart.data.io import read_table
    from coldstart.data.schema import ITEM_ID
    from coldstart.data.split import SPLIT_COLUMN
    from coldstart.encoders.engagement import fit_item_encoder
    from coldstart.encoders.tune_config import ItemTuneConfig

    if embed_cfg.threads > 0:
        import torch

        torch.set_num_threads(embed_cfg.threads)
    # Only the files that may be learned from: the catalogue (for warm ids and texts) and train.
    items = read_table(split_dir / "items.parquet")
    warm = items.loc[items[SPLIT_COLUMN] == "warm", ITEM_ID].to_numpy()
    train = read_table(split_dir / "train.parquet")
    tune = ItemTuneConfig(
        **{f.name: getattr(cfg, f.name) for f in dataclasses.fields(ItemTuneConfig)}
    )
    features = texts = None
    if cfg.mode == "frozen":
        if base_embed_dir is None:
            raise ValueError("the frozen encoder mode needs the untuned embed export")
        modalities = EmbeddingManifest.load(base_embed_dir).modalities
        features = {
            m: read_embeddings(base_embed_dir, m) for m in ("text", "image") if m in modalities
        }
    else:
        from coldstart.data.schema import item_text

        texts = {
            r[ITEM_ID]: item_text(r, tuple(embed_cfg.text_fields)) for r in items.to_dict("records")
        }
    encoder, pretrained = embed_encoder(embed_cfg, data)
    print(
        f"[encoder] {tune.objective} ({tune.mode}) on {len(train)} train rows, {len(warm)} warm items",
        file=sys.stderr,
        flush=True,
    )
    summary = fit_item_encoder(
        encoder, pretrained, warm, train, tune, out, trainer, features=features, texts=texts
    )
    if features is not None:
        summary["examples"] = tuned_neighbours(items, features["text"], out / summary["checkpoint"])
    return summary


def tuned_neighbours(
    items: pd.DataFrame, base: tuple[np.ndarray, np.ndarray], checkpoint: Path, n: int = 5
) -> list[dict[str, Any]]:
    """For `n` cold-test items (seeded pick): their 5 nearest warm items by title before and
    after the frozen-mode adapter in `checkpoint`, so a person can see what it learned.

    base: (ids (N,), untuned text vectors (N, D)); read only after training (cold items'
    content exists at serving time; it never entered the fit).
    """
    import torch
    import torch.nn.functional as F

    from coldstart.data.schema import ITEM_ID, TITLE
    from coldstart.data.split import SPLIT_COLUMN
    from coldstart.encoders.adapter import ResidualAdapter

    ids, before = base
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)["state_dict"]
    prefix = "encoder.adapters.text."
    adapter = ResidualAdapter(before.shape[1])  # the text adapter alone: no backbone to load
    adapter.load_state_dict({k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)})
    with torch.no_grad():
        after = F.normalize(adapter(F.normalize(torch.from_numpy(before), dim=-1)), dim=-1).numpy()
    split_of = dict(zip(items[ITEM_ID].tolist(), items[SPLIT_COLUMN].tolist()))
    title_of = dict(zip(items[ITEM_ID].tolist(), items.get(TITLE, items[ITEM_ID]).tolist()))
    labels = np.array([split_of.get(i) for i in ids.tolist()])
    warm, cold = np.flatnonzero(labels == "warm"), np.flatnonzero(labels == "cold_test")
    if not len(cold) or not len(warm):
        return []
    pick = np.sort(np.random.default_rng(0).choice(cold, min(n, len(cold)), replace=False))
    out = []
    for row in pick:
        near = {}
        for name, vectors in (("before", before), ("after", after)):
            sims = vectors[warm] @ vectors[row]
            near[name] = [str(title_of.get(ids[warm[j]])) for j in np.argsort(-sims)[:5]]
        out.append({"item": str(title_of.get(ids[row])), **near})
    return out


def content_vectors(embed_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """(ids (N,), vectors (N, D)) of the export's "fused" rows, or "text" when there are none."""
    from coldstart.data.embeddings import EmbeddingManifest, read_embeddings

    manifest = EmbeddingManifest.load(embed_dir)
    modality = "fused" if "fused" in manifest.modalities else "text"
    return read_embeddings(embed_dir, modality)


# --------------------------------------------------------------------------- index


def build_index(
    split_dir: Path, embed_dir: Path, cfg: IndexStageConfig, out: Path
) -> dict[str, Any]:
    """index.build.build_index over the content vectors (a store of `cfg.backend`, chosen
    through index.registry), plus cold items' nearest warm items, read back through the
    vector-store protocol."""
    from coldstart.data.embeddings import EmbeddingManifest
    from coldstart.data.io import read_table
    from coldstart.data.schema import ITEM_ID, TITLE
    from coldstart.index.build import build_index as build_store
    from coldstart.index.registry import get_backend, open_store

    backend = get_backend(cfg.backend)
    location = out / backend.local_name  # inside the artifact directory (renamed into place)
    modality = "fused" if "fused" in EmbeddingManifest.load(embed_dir).modalities else "text"
    report = build_store(
        embed_dir,
        location,
        {backend.sections[0]: {backend.factory_key: cfg.factory, "metric": cfg.metric}},
        modality=modality,
        recall_queries=cfg.eval_queries,
        backend=backend.name,
    )

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
        store = open_store(backend.name, location)  # the protocol, any backend
        try:
            found = store.search(vectors[np.sort(pick)], 50)
        finally:
            store.close()
        for row, hits in zip(np.sort(pick), found.ids):
            warm = [h for h in hits if split_of.get(h) == "warm"][:5]
            examples.append(
                {
                    "item": str(title_of.get(ids[row], ids[row])),
                    "neighbours": [str(title_of.get(h, h)) for h in warm],
                }
            )
    return {
        "backend": backend.name,
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
    from coldstart.ranker.methods import list_methods

    return list_methods()


def params_for(cfg: RankerStageConfig, method: str) -> dict[str, Any]:
    """Flat ranker params of one method: the shared keys of ranker.params, then the method's own
    sub-mapping (e.g. `params: {epochs: 8, ours+sid: {sid_levels: 3}}`)."""
    names = set(method_names())
    shared = {k: v for k, v in cfg.params.items() if k not in names}
    own = cfg.params.get(method) or {}
    if not isinstance(own, dict):
        raise ValueError(f"ranker.params.{method} must be a mapping of that method's params")
    return {**shared, **own}


def resolved_params(
    cfg: RankerStageConfig, method: str, extra: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Every resolved knob of `method` under this ranker section (+ an analysis's overrides),
    JSON-safe: what stage keys hash, so that a changed registry default invalidates caches."""
    import coldstart.ranker.methods as methods_mod
    from coldstart.data.embeddings import jsonable

    params = {**params_for(cfg, method), **(extra or {})}
    resolved = methods_mod.resolve_method(method, params, cfg.seed)

    def keyed(flat: dict[str, Any]) -> dict[str, Any]:
        # Knobs added later stay out of the key at their off value: old caches keep matching.
        return {k: v for k, v in flat.items() if not (k == "media_type" and not v)}

    flat = keyed(resolved.flat())
    for name, channel in resolved.channels.items():
        flat[f"channel.{name}"] = keyed(channel.flat())
    return jsonable(flat)


def _ranker_inputs(split_dir: Path, embed_dir: Path) -> Any:
    """RankerData for the split with the content vectors aligned to its catalogue."""
    import coldstart.ranker.data as data_mod

    ids, vectors = content_vectors(embed_dir)
    return data_mod.build_ranker_data(load_split(split_dir), ids, vectors)


def ranker_trainer_notes(trainer: dict[str, Any]) -> list[str]:
    """Log lines for the parts of the resolved trainer that the ranker stage's plain loop
    (ranker.train.fit_ranker: one device, one process) does not take: a device count other
    than one and a strategy other than auto / single_device."""
    notes = []
    if trainer.get("devices") not in ("auto", 1, "1", None):
        notes.append(
            f"[ranker] trainer devices={trainer['devices']!r}: the ranker stage's plain loop "
            "trains on one device (ranker.train.fit_ranker)"
        )
    if trainer.get("strategy") not in ("auto", "single_device", None):
        notes.append(
            f"[ranker] trainer strategy={trainer['strategy']!r} ignored: the ranker stage's "
            "plain loop is one process on one device (ranker.train.fit_ranker)"
        )
    return notes


def build_ranker(
    split_dir: Path,
    embed_dir: Path,
    cfg: RankerStageConfig,
    out: Path,
    work: Path | None = None,
    trainer: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Train every method of `cfg.methods`; export its item and user vectors (embedding-export
    format: ids + manifest, ranker.methods.export_fitted) and its info.

    trainer: the resolved `trainer:` section (config.resolve_trainer); its accelerator and
    precision apply to the plain loop (ranker.train.fit_device), on one device, one process.
    None: the model's own device (the CPU) at fp32.

    work: the stage's work directory (ArtifactStore.run(resumable=True)), which outlives a
    killed build: every finished method's export is renamed into work/methods/<name>/ (and
    reused, not refit, by the next build), and the method in training checkpoints its loop to
    work/fit/<name>.pt every `cfg.checkpoint_every` steps and at epoch ends (ranker.train.
    fit_ranker continues from it). The outputs are the same, bit for bit, either way.
    """
    import shutil

    import coldstart.ranker.methods as methods_mod
    from coldstart.data.embeddings import (
        EmbeddingManifest,
        atomic_write_json,
        fsync_path,
        jsonable,
        remove_stale_temps,
        temp_sibling,
    )
    from coldstart.ranker.train import (
        FitCheckpoint,
        FitDevice,
        fit_device,
        resolve_fit_device,
    )

    if trainer is not None:  # a bad accelerator or precision fails before any method trains
        resolve_fit_device(FitDevice(trainer.get("accelerator"), trainer.get("precision")))
    unknown = [m for m in cfg.methods if m not in methods_mod.list_methods()]
    if unknown:
        raise ValueError(
            f"ranker.methods {unknown} unknown; methods are {methods_mod.list_methods()}"
        )
    data = _ranker_inputs(split_dir, embed_dir)
    done = (work if work is not None else out) / "methods"  # finished exports
    done.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(done)  # an export cut short by a kill
    summary: dict[str, Any] = {}
    for name in cfg.methods:
        target = done / name
        if work is not None and (target / "info.json").exists():
            print(
                f"[ranker] reusing {name}, finished before the stage was cut short",
                file=sys.stderr,
                flush=True,
            )
            info = json.loads((target / "info.json").read_text())
            dim = EmbeddingManifest.load(target / "items").dim
        else:
            params = params_for(cfg, name)
            if methods_mod.get_method(name).trains_ranker:
                print(f"[ranker] training {name} {params or ''}", file=sys.stderr, flush=True)
            else:  # popularity, content_knn: no model, so training params do not apply
                print(f"[ranker] computing {name} (no training)", file=sys.stderr, flush=True)
            checkpoint = None
            if work is not None:
                (work / "fit").mkdir(exist_ok=True)
                checkpoint = FitCheckpoint(work / "fit" / f"{name}.pt", cfg.checkpoint_every)
            with fit_device((trainer or {}).get("accelerator"), (trainer or {}).get("precision")):
                fitted = methods_mod.fit_method(
                    name, data, params=params, seed=cfg.seed, checkpoint=checkpoint
                )
            resolved = methods_mod.resolve_method(name, params, cfg.seed)
            # Written beside, renamed into place whole: a directory there is a finished method.
            partial = temp_sibling(target) if work is not None else target
            if partial.exists():
                shutil.rmtree(partial)
            # With the content export it read: `coldstart serve --ranker` fuses and pools
            # uploads as it did (coldstart.ranker_serving.ranker_export).
            methods_mod.export_fitted(partial, fitted, resolved, content_source=embed_dir)
            info = jsonable(fitted.info)
            atomic_write_json(partial / "info.json", info)
            if work is not None:
                os.replace(partial, target)
                fsync_path(done)
                if checkpoint is not None:
                    checkpoint.path.unlink(missing_ok=True)
            dim = int(fitted.item_vectors().shape[1])
        summary[name] = {"seconds": round(float(info.get("seconds", 0.0)), 2), "dim": dim}
        if "resumed_from_step" in info:
            summary[name]["resumed_from_step"] = int(info["resumed_from_step"])
    if work is not None:  # the finished exports join the artifact (hard links: no copy, and
        # a kill before the artifact's rename loses nothing, the work directory keeps them)
        for name in cfg.methods:
            shutil.copytree(done / name, out / "methods" / name, copy_function=_link_or_copy)
    return {"methods": summary}


def _link_or_copy(src: str, dst: str) -> None:
    """A hard link where the file system has them, else a copy."""
    import shutil

    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _load_fitted(ranker_dir: Path, name: str, data: Any) -> Any:
    """A method's exported vectors, aligned by id with `data`'s item and user rows."""
    import coldstart.ranker.methods as methods_mod

    items, users = methods_mod.read_vectors(ranker_dir / "methods" / name, data)
    return methods_mod.FittedMethod(name, data, items, users)


def build_evaluate(
    split_dir: Path, embed_dir: Path, ranker_dir: Path, cfg: EvaluateConfig, out: Path
) -> dict[str, Any]:
    """Full-ranking Recall/NDCG of every trained method on `cfg.part` (ranker.metrics): test
    (test + cold_test, train and val positives masked) or val (val + cold_val)."""
    import json

    from coldstart.data.embeddings import atomic_write_json

    data = _ranker_inputs(split_dir, embed_dir)
    names = list(json.loads((ranker_dir / "artifact.json").read_text())["summary"]["methods"])
    if cfg.part not in ("test", "val"):
        raise ValueError(f"evaluate.part must be test or val, got {cfg.part!r}")
    ks = tuple(sorted({10, 20, *cfg.curve_ks}))
    quality: dict[str, Any] = {}
    curves: dict[str, Any] = {}
    for name in names:
        metrics = _load_fitted(ranker_dir, name, data).evaluate(cfg.part, ks)
        quality[name] = {
            seg: {key: metrics[seg][key] for key in QUALITY_KEYS}
            | {"users": metrics[seg].get("users")}
            for seg in ("cold", "warm", "all")
        }
        curves[name] = {
            seg: {str(k): metrics[seg][f"recall@{k}"] for k in sorted(cfg.curve_ks)}
            for seg in ("cold", "warm")
        }
    atomic_write_json(out / "quality.json", quality)
    atomic_write_json(out / "curves.json", curves)
    return {"part": cfg.part, "ks": list(ks), "methods": names}


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
    ranker: RankerStageConfig,
    index: IndexStageConfig,
    out: Path,
) -> dict[str, Any]:
    """Neighbour overlap between seeds and between an old and a retrained model, per init."""
    import coldstart.ranker.data as data_mod
    import coldstart.ranker.methods as methods_mod
    from coldstart.data.embeddings import atomic_write_json, jsonable
    from coldstart.data.schema import TIMESTAMP

    if len(cfg.seeds) != 2:
        raise ValueError("stability.seeds must hold exactly two seeds")
    split = load_split(split_dir)
    ids, vectors = content_vectors(embed_dir)
    data = data_mod.build_ranker_data(split, ids, vectors)
    # The "old" model: the same training log without its newest retrain_fraction of rows. A log
    # without time (no column, or one value) has no "newest": a seeded random share is held out.
    train = split.train
    timed = TIMESTAMP in train.columns and train[TIMESTAMP].nunique() > 1
    if timed:
        cutoff = np.quantile(train[TIMESTAMP].to_numpy(), 1.0 - cfg.retrain_fraction)
        keep = (train[TIMESTAMP] < cutoff).to_numpy()
        holdout = "newest"
    else:
        keep = np.random.default_rng(cfg.seeds[0]).random(len(train)) >= cfg.retrain_fraction
        holdout = "random"
        print(
            f"[stability] the training log has no timestamps: the old model leaves out a random "
            f"{cfg.retrain_fraction:.0%} of it instead of the newest rows",
            file=sys.stderr,
            flush=True,
        )
    if keep.sum() == 0 or keep.all():
        raise ValueError(
            f"stability.retrain_fraction={cfg.retrain_fraction} leaves {int(keep.sum())} of "
            f"{len(train)} training rows for the old model; choose a fraction in (0, 1)"
        )
    old_split = dataclasses.replace(split, train=train[keep])
    old_data = data_mod.build_ranker_data(old_split, ids, vectors)
    segment = np.asarray(data.item_split)
    rows = np.flatnonzero(segment != "unseen")
    is_warm = segment[rows] == "warm"
    result_rows = []
    for init in cfg.inits:
        params = {**params_for(ranker, cfg.method), **cfg.params, "init": init}
        resolved = methods_mod.resolve_method(cfg.method, params, cfg.seeds[0]).flat()
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
                "params": jsonable(resolved),
            }
        )
    data_out = {
        "method": cfg.method,
        "k": cfg.k,
        "seeds": list(cfg.seeds),
        "retrain_fraction": cfg.retrain_fraction,
        "retrain_holdout": holdout,
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
    ranker: RankerStageConfig,
    index: IndexStageConfig,
    out: Path,
) -> dict[str, Any]:
    """Item-vector dim -> cold/warm Recall@20, index memory and search QPS (index.VectorIndex)."""
    import time

    import faiss

    import coldstart.ranker.methods as methods_mod
    from coldstart import index as index_mod
    from coldstart.data.embeddings import atomic_write_json, jsonable

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
        "params": jsonable(
            methods_mod.resolve_method(
                cfg.method, {**params_for(ranker, cfg.method), **cfg.params}, ranker.seed
            ).flat()
        ),
        "rows": rows,
    }
    atomic_write_json(out / "dims.json", result)
    return {str(r["dim"]): {"qps": round(r["qps"]), "index_bytes": r["index_bytes"]} for r in rows}
