"""Batch embedding of new media: `build_embeddings(EmbedConfig)` on Lightning predict.

Work is planned as *units*: one per input shard (its images, plus the catalogue texts of the
items in it) and one per chunk of catalogue items that have no media. One unit -> one Parquet
part (data/embeddings.py), written atomically by a `BasePredictionWriter` when the unit's last
batch arrives, followed by a sidecar `<part>.json` (its manifest entry, skipped samples, counts)
and a rebuilt manifest.json. A rerun after a crash skips every unit whose part and sidecar are
complete, so a killed job resumes with exactly one vector per (item, modality).

Units are split over devices by rank (unit i -> rank i % world), then over DataLoader workers,
so `--devices N` has no duplicates and no gaps. Each batch holds rows of one unit only.
Modalities in the export: "image", "text", optionally "tags" (user tags: interaction-derived),
and "fused" (ModalityFusion over the modalities an item has) when the run has more than one.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import BasePredictionWriter
from torch.utils.data import DataLoader, IterableDataset

from data.embeddings import (
    MANIFEST,
    EmbeddingManifest,
    PartInfo,
    atomic_write_json,
    sha256_file,
    write_part,
)
from data.shards import DecodeConfig, expand_urls, image_keys, iter_shard
from encoders.base import IMAGE, TEXT, Encoder, Preprocessor
from encoders.catalogue import DEFAULT_FIELDS, CatalogueTexts, is_catalogue, load_catalogue_texts
from encoders.fusion import FusionConfig, ModalityFusion
from encoders.registry import create_encoder

TAGS = "tags"
FUSED = "fused"
SIDECAR = ".json"


@dataclass
class EmbedConfig:
    """One embedding run. inputs: shard specs (brace pattern, glob, directory) and/or at most one
    catalogue ('movielens', 'movielens:<root>', items .parquet/.csv)."""

    encoder: str
    inputs: list[str]
    out: str
    pretrained: str | None = None
    batch_size: int = 64
    num_workers: int = 2
    devices: int = 1
    accelerator: str = "cpu"
    text_fields: tuple[str, ...] = DEFAULT_FIELDS
    with_tags: bool = False
    fusion: str = "mean"  # mean | weighted
    fusion_weights: dict[str, float] = field(default_factory=dict)
    text_chunk: int = 4096  # catalogue items without media per text part
    progress: bool = True
    # Seeds the random initialisation of towers without pretrained weights, so every process
    # (a rerun, each --devices rank) draws the same weights and a killed job can resume.
    init_seed: int = 0


@dataclass
class Unit:
    """One part's worth of work."""

    index: int
    kind: str  # "shard" | "text"
    source: str
    part: str
    samples: int  # input samples expected (images for shards, items for text chunks)
    keys: list[str] = field(default_factory=list)  # shard: keys with an image member
    item_ids: list = field(default_factory=list)  # text: catalogue items of the chunk


def split_inputs(inputs: list[str]) -> tuple[list[str], str | None]:
    """-> (shard paths, catalogue spec or None). Raises on no match or two catalogues."""
    shards: list[str] = []
    catalogues = [s for s in inputs if is_catalogue(s)]
    if len(catalogues) > 1:
        raise ValueError(f"at most one catalogue per run, got {catalogues}")
    for spec in inputs:
        if spec in catalogues:
            continue
        urls = expand_urls(spec)
        missing = [u for u in urls if not os.path.exists(u)]
        if not urls or missing:
            raise FileNotFoundError(f"input {spec!r}: no such shard(s) {missing or spec}")
        shards.extend(urls)
    if len(set(shards)) != len(shards):
        raise ValueError("the same shard is listed twice in --input")
    return shards, (catalogues[0] if catalogues else None)


def plan_units(shards: list[str], catalogue: CatalogueTexts | None, text_chunk: int) -> list[Unit]:
    """Shards in the given order (part-00000...), then text chunks of media-less items."""
    units: list[Unit] = []
    covered: set = set()
    for i, url in enumerate(shards):
        keys = image_keys(url)
        units.append(Unit(i, "shard", url, f"part-{i:05d}.parquet", len(keys), keys=keys))
        if catalogue is not None:
            for key in keys:
                item = catalogue.by_media_key.get(key)
                covered.add(item if item is not None else _maybe_int(key))
    if catalogue is not None:
        rest = [i for i in catalogue.item_ids if i not in covered]
        for j in range(0, len(rest), max(1, text_chunk)):
            chunk = rest[j : j + text_chunk]
            source = f"{catalogue.source}#items[{j}:{j + len(chunk)}]"
            units.append(
                Unit(
                    len(units),
                    "text",
                    source,
                    f"part-text-{j // text_chunk:05d}.parquet",
                    len(chunk),
                    item_ids=chunk,
                )
            )
    return units


def _maybe_int(key: str) -> int | str:
    base = key.rsplit("/", 1)[-1]
    return int(base) if base.isdigit() else key


# ---------------------------------------------------------------------------------------------
# data


class EmbedBatches(IterableDataset):
    """Yields dict batches, each from one unit; the last batch of a unit has done=True.

    Batch: unit (int), ids (list, one per row), pixels (n_img, 3, H, W) + img_rows, tokens
    (n_txt, L) + txt_rows, tag_tokens + tag_rows, n (input samples consumed), done, skipped.
    """

    def __init__(
        self,
        units: list[Unit],
        pre: Preprocessor,
        batch_size: int,
        catalogue: CatalogueTexts | None,
        want_text: bool,
        with_tags: bool,
    ) -> None:
        super().__init__()
        self.units = units
        self.pre = pre
        self.batch_size = batch_size
        self.catalogue = catalogue
        self.want_text = want_text
        self.with_tags = with_tags

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        for unit in self.units[worker::workers]:
            if unit.kind == "shard":
                yield from self._shard(unit)
            else:
                yield from self._text(unit)

    def _texts_of(self, item: Any, fallback: str | None) -> tuple[str | None, str | None]:
        if self.catalogue is not None and item in self.catalogue.texts:
            text = self.catalogue.texts[item] or None
            tags = self.catalogue.tags.get(item) or None
            return text, tags
        return fallback, None

    def _batch(self, unit: Unit, rows: list[dict], n: int, done: bool, skipped: Counter) -> dict:
        img_rows = [i for i, r in enumerate(rows) if r.get("pixels") is not None]
        txt_rows = [i for i, r in enumerate(rows) if r.get("text")] if self.want_text else []
        tag_rows = [i for i, r in enumerate(rows) if r.get("tags")] if self.with_tags else []
        return {
            "unit": unit.index,
            "ids": [r["id"] for r in rows],
            "pixels": torch.stack([rows[i]["pixels"] for i in img_rows]) if img_rows else None,
            "img_rows": img_rows,
            "tokens": self.pre.text([rows[i]["text"] for i in txt_rows]) if txt_rows else None,
            "txt_rows": txt_rows,
            "tag_tokens": self.pre.text([rows[i]["tags"] for i in tag_rows]) if tag_rows else None,
            "tag_rows": tag_rows,
            "n": n,
            "done": done,
            "skipped": dict(skipped) if done else {},
        }

    def _shard(self, unit: Unit) -> Iterator[dict[str, Any]]:
        skipped: Counter = Counter()
        rows: list[dict] = []
        n = 0
        seen: set[str] = set()
        for sample in iter_shard(unit.source, DecodeConfig(), skipped):
            key = sample["key"]
            if key in seen:
                skipped["duplicate_key"] += 1
                continue
            seen.add(key)
            item = self.catalogue.lookup(key, sample["item_id"]) if self.catalogue else None
            item_id = item if item is not None else sample["item_id"]
            try:
                pixels = self.pre.image(sample["image"])
            except Exception:  # noqa: BLE001 - a bad image is counted, never fatal
                skipped["transform_error"] += 1
                pixels = None
            text, tags = self._texts_of(item, sample.get("text"))
            rows.append({"id": item_id, "pixels": pixels, "text": text, "tags": tags})
            n += 1
            if len(rows) == self.batch_size:
                yield self._batch(unit, rows, n, False, skipped)
                rows, n = [], 0
        # Items whose image was skipped (corrupt, truncated) keep their text vectors.
        if self.catalogue is not None:
            for key in unit.keys:
                if key in seen:
                    continue
                item = self.catalogue.lookup(key, _maybe_int(key))
                if item is not None:
                    text, tags = self._texts_of(item, None)
                    rows.append({"id": item, "pixels": None, "text": text, "tags": tags})
        yield self._batch(unit, rows, n, True, skipped)

    def _text(self, unit: Unit) -> Iterator[dict[str, Any]]:
        rows: list[dict] = []
        for item in unit.item_ids:
            text, tags = self._texts_of(item, None)
            rows.append({"id": item, "pixels": None, "text": text, "tags": tags})
            if len(rows) == self.batch_size:
                yield self._batch(unit, rows, len(rows), False, Counter())
                rows = []
        yield self._batch(unit, rows, len(rows), True, Counter())


class EmbedDataModule(L.LightningDataModule):
    """Assigns units to this rank (i % world == rank) after the process group exists."""

    def __init__(
        self,
        units: list[Unit],
        pre: Preprocessor,
        batch_size: int,
        num_workers: int,
        catalogue: CatalogueTexts | None,
        want_text: bool,
        with_tags: bool,
    ) -> None:
        super().__init__()
        self.units = units
        self.pre = pre
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.catalogue = catalogue
        self.want_text = want_text
        self.with_tags = with_tags
        self.mine: list[Unit] = []

    def setup(self, stage: str | None = None) -> None:
        rank, world = self.trainer.global_rank, self.trainer.world_size
        # Every rank planned the same units; rank 0's list is authoritative (no drift).
        self.units = self.trainer.strategy.broadcast(self.units, 0)
        self.mine = [u for i, u in enumerate(self.units) if i % world == rank]

    def predict_dataloader(self) -> DataLoader:
        ds = EmbedBatches(
            self.mine, self.pre, self.batch_size, self.catalogue, self.want_text, self.with_tags
        )
        workers = min(self.num_workers, len(self.mine))
        return DataLoader(
            ds, batch_size=None, num_workers=workers, prefetch_factor=4 if workers else None
        )


# ---------------------------------------------------------------------------------------------
# model + writer


class LitEmbedder(L.LightningModule):
    """Wraps an encoder for Lightning predict: eval mode, no grad, L2-normalized outputs."""

    def __init__(self, encoder: Encoder) -> None:
        super().__init__()
        self.encoder = encoder

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        out = {
            k: batch[k]
            for k in ("unit", "ids", "img_rows", "txt_rows", "tag_rows", "n", "done", "skipped")
        }
        for name, key in ((IMAGE, "pixels"), (TEXT, "tokens"), (TAGS, "tag_tokens")):
            x = batch[key]
            if x is None:
                out[name] = None
            elif name == IMAGE:
                out[name] = self.encoder.encode_image(x).cpu().numpy()  # (n_img, D)
            else:
                out[name] = self.encoder.encode_text(x).cpu().numpy()  # (n_txt, D)
        return out


class PartWriter(BasePredictionWriter):
    """Collects a unit's batches; on its last batch writes the part, its sidecar, the manifest."""

    def __init__(
        self,
        out: str,
        units: list[Unit],
        manifest: EmbeddingManifest,
        fusion: ModalityFusion | None,
        progress: bool,
    ) -> None:
        super().__init__(write_interval="batch")
        self.out = Path(out)
        self.units = {u.index: u for u in units}
        self.manifest = manifest
        self.fusion = fusion
        self.progress = progress
        self.buffers: dict[int, list[dict]] = defaultdict(list)
        self.bar = None
        self.rows_written = 0

    def on_predict_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.progress:
            from tqdm.auto import tqdm

            dm = trainer.datamodule
            total = sum(u.samples for u in dm.mine) if dm is not None else None
            self.bar = tqdm(
                total=total, unit="sample", desc=f"embed[rank {trainer.global_rank}]",
                position=trainer.global_rank, dynamic_ncols=True,
            )  # fmt: skip

    def on_predict_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.bar is not None:
            self.bar.close()

    def write_on_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        prediction: dict[str, Any],
        batch_indices: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        unit = int(prediction["unit"])
        self.buffers[unit].append(prediction)
        if self.bar is not None:
            self.bar.update(int(prediction["n"]))
        if prediction["done"]:
            self._finish(self.units[unit], self.buffers.pop(unit))

    def _finish(self, unit: Unit, batches: list[dict]) -> None:
        ids: list = []
        mods: list[str] = []
        vecs: list[np.ndarray] = []
        per_item: dict[str, dict[Any, np.ndarray]] = defaultdict(dict)
        order: list = []
        for b in batches:
            for row in b["ids"]:
                order.append(row)
            for name, rows_key in ((IMAGE, "img_rows"), (TEXT, "txt_rows"), (TAGS, "tag_rows")):
                if b[name] is None:
                    continue
                for j, r in enumerate(b[rows_key]):
                    item = b["ids"][r]
                    per_item[name][item] = b[name][j]
        for name in (IMAGE, TEXT, TAGS):
            for item in order:
                if item in per_item[name]:
                    ids.append(item)
                    mods.append(name)
                    vecs.append(per_item[name][item])
        if self.fusion is not None:
            items = [i for i in dict.fromkeys(order) if any(i in per_item[m] for m in per_item)]
            if items:
                fused = self._fuse(items, per_item)
                ids.extend(items)
                mods.extend([FUSED] * len(items))
                vecs.extend(list(fused))
        dim = self.manifest.dim
        matrix = np.stack(vecs).astype(np.float32) if vecs else np.zeros((0, dim), np.float32)
        if all(isinstance(i, (int, np.integer)) for i in ids):
            id_array = np.asarray(ids, dtype=np.int64)
        else:  # any string id: the whole part uses string ids
            id_array = np.asarray([str(i) for i in ids], dtype=object)
        info = write_part(self.out, unit.part, id_array, mods, matrix, source=unit.source)
        skipped = Counter()
        for b in batches:
            skipped.update(b["skipped"])
        counts = Counter(mods)
        sidecar = {
            "part": dataclasses.asdict(info),
            "unit": unit.index,
            "kind": unit.kind,
            "samples": sum(int(b["n"]) for b in batches),
            "skipped": dict(skipped),
            "rows": dict(counts),
            "encoder": self.manifest.encoder,
            "weights_sha256": self.manifest.weights_sha256,
        }
        atomic_write_json(self.out / (unit.part + SIDECAR), sidecar)
        self.rows_written += len(ids)
        rebuild_manifest(self.out, list(self.units.values()), self.manifest)

    def _fuse(self, items: list, per_item: dict[str, dict[Any, np.ndarray]]) -> np.ndarray:
        dim = self.manifest.dim
        vectors, present = {}, {}
        for name in self.fusion.config.modalities:
            table = per_item.get(name, {})
            vectors[name] = torch.from_numpy(
                np.stack([table.get(i, np.zeros(dim, np.float32)) for i in items]).astype(
                    np.float32
                )
            )
            present[name] = torch.tensor([i in table for i in items], dtype=torch.bool)
        with torch.no_grad():
            return self.fusion(vectors, present).numpy()  # (N, D)


# ---------------------------------------------------------------------------------------------
# manifest and resume


_SHA_CACHE: dict[tuple[str, int, int], str] = {}


def _part_sha256(path: Path) -> str:
    """sha256 of a part, cached by (path, mtime, size): manifests are rebuilt after every part."""
    stat = path.stat()
    key = (str(path), stat.st_mtime_ns, stat.st_size)
    if key not in _SHA_CACHE:
        _SHA_CACHE[key] = sha256_file(path)
    return _SHA_CACHE[key]


def finished_parts(out: Path, weights_sha256: str) -> dict[str, dict]:
    """part name -> sidecar, for parts whose file exists and matches its sidecar's sha256."""
    done: dict[str, dict] = {}
    if not out.is_dir():
        return done
    for sidecar in sorted(out.glob("part-*" + SIDECAR)):
        try:
            meta = json.loads(sidecar.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        part = out / meta["part"]["name"]
        if meta.get("weights_sha256") != weights_sha256:
            raise ValueError(
                f"{out} holds parts of another encoder/weights ({meta.get('encoder')}, weights "
                f"sha256 {str(meta.get('weights_sha256'))[:12]}, this run {weights_sha256[:12]}): "
                "resume with the same --encoder, --pretrained and --init-seed, or use a new --out"
            )
        if part.exists() and _part_sha256(part) == meta["part"]["sha256"]:
            done[meta["part"]["name"]] = meta
    return done


def rebuild_manifest(
    out: Path, units: list[Unit], template: EmbeddingManifest
) -> EmbeddingManifest:
    """manifest.json from the sidecars of finished parts, in unit order (atomic replace).

    Every writer (any rank) may call this; each rebuild reads all sidecars, so the last one
    written is complete whichever rank wrote it.
    """
    done = finished_parts(out, template.weights_sha256)
    manifest = dataclasses.replace(template, parts=[], skipped={}, extra=dict(template.extra))
    skipped: Counter = Counter()
    rows: Counter = Counter()
    samples = 0
    for unit in sorted(units, key=lambda u: u.index):
        meta = done.get(unit.part)
        if meta is None:
            continue
        manifest.parts.append(PartInfo(**meta["part"]))
        skipped.update(meta["skipped"])
        rows.update(meta["rows"])
        samples += int(meta["samples"])
    manifest.skipped = dict(skipped)
    manifest.extra.update(
        {
            "rows_per_modality": dict(rows),
            "input_samples": samples,
            "units": len(units),
            "complete": len(manifest.parts) == len(units),
        }
    )
    manifest.save(out)
    return manifest


# ---------------------------------------------------------------------------------------------
# the job


def build_embeddings(config: EmbedConfig, encoder: Encoder | None = None) -> EmbeddingManifest:
    """Run (or resume) an embedding job; returns the manifest as written to `config.out`.

    encoder: an already built encoder to use instead of `create_encoder(config.encoder, ...)`
    (its config is what the manifest records).
    """
    shards, catalogue_spec = split_inputs(list(config.inputs))
    if not shards and catalogue_spec is None:
        raise ValueError("nothing to embed: give shards and/or a catalogue with --input")
    if encoder is None:
        with torch.random.fork_rng(devices=[]):  # seeded init, global RNG left as it was
            torch.manual_seed(config.init_seed)
            encoder = create_encoder(config.encoder, config.pretrained)
    if shards and IMAGE not in encoder.modalities:
        raise ValueError(f"encoder {config.encoder!r} has no image tower but shards were given")
    want_text = TEXT in encoder.modalities
    if catalogue_spec is not None and not want_text:
        raise ValueError(f"encoder {config.encoder!r} has no text tower but a catalogue was given")
    catalogue = (
        load_catalogue_texts(catalogue_spec, tuple(config.text_fields), config.with_tags)
        if catalogue_spec
        else None
    )
    units = plan_units(shards, catalogue, config.text_chunk)
    modalities = ([IMAGE] if shards else []) + ([TEXT] if want_text else [])
    if config.with_tags and catalogue is not None:
        modalities.append(TAGS)
    fusion = None
    if len(modalities) > 1:
        fusion = ModalityFusion(
            FusionConfig(
                method=config.fusion,
                modalities=tuple(modalities),
                weights=dict(config.fusion_weights),
            )
        )
        modalities.append(FUSED)
    out = Path(config.out)
    weights = encoder.weights_sha256()
    template = EmbeddingManifest(
        encoder=config.encoder,
        encoder_config=dataclasses.asdict(encoder.config),
        weights_sha256=weights,
        dim=encoder.dim,
        normalized=True,
        modalities=modalities,
        source_shards=[str(Path(s).resolve()) for s in shards]
        + ([catalogue_spec] if catalogue_spec else []),
        extra={
            "pretrained": config.pretrained,
            "text_fields": list(config.text_fields),
            "tags": config.with_tags,
            "tags_interaction_derived": bool(config.with_tags),
            "fusion": {"method": config.fusion, "weights": dict(config.fusion_weights)}
            if fusion
            else None,
            "catalogue": catalogue_spec,
        },
    )
    out.mkdir(parents=True, exist_ok=True)
    done = finished_parts(out, weights)
    todo = [u for u in units if u.part not in done]
    if todo:
        writer = PartWriter(str(out), units, template, fusion, config.progress)
        dm = EmbedDataModule(
            todo,
            encoder.preprocessor(),
            config.batch_size,
            config.num_workers,
            catalogue,
            want_text,
            config.with_tags,
        )
        trainer = L.Trainer(
            accelerator=config.accelerator,
            devices=config.devices,
            strategy="ddp" if config.devices > 1 else "auto",
            callbacks=[writer],
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
        )
        import warnings

        with warnings.catch_warnings():
            # Batches come from an IterableDataset: there are no sampler indices to infer.
            warnings.filterwarnings("ignore", message="Couldn't infer the batch indices")
            trainer.predict(LitEmbedder(encoder), datamodule=dm, return_predictions=False)
        trainer.strategy.barrier()
        if trainer.global_rank != 0:
            return EmbeddingManifest.load(out)
    manifest = rebuild_manifest(out, units, template)
    if (out / MANIFEST).exists() and not manifest.extra.get("complete"):
        missing = [u.part for u in units if u.part not in {p.name for p in manifest.parts}]
        raise RuntimeError(f"embedding incomplete: parts missing {missing[:5]}... rerun to resume")
    return manifest
