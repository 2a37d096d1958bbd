"""Batch embedding of new media: `build_embeddings(EmbedConfig)` on Lightning predict.

Work is planned as *units*: one per input shard (its images, plus the catalogue texts of the
items in it) and one per chunk of catalogue items that have no media. One unit -> one Parquet
part (data/embeddings.py), written atomically by a `BasePredictionWriter` (on a writer thread,
so the device keeps computing) when the unit's last batch arrives, followed by a sidecar
`<part>.json` (its manifest entry, skipped samples, counts) and a rebuilt manifest.json. A rerun
after a crash skips every unit whose part and sidecar are complete, so a killed job resumes with
exactly one vector per (item, modality).

Units are split over devices by rank (unit i -> rank i % world). Inside a rank each unit is cut
into *chunks* (ranges of its samples, in memory only) dealt round-robin to the DataLoader
workers, so every worker is busy even with fewer shards than workers; the writer reassembles a
unit's chunks in file order before writing its part, so parts do not depend on the worker count.
Each batch holds rows of one chunk only.

Where the time goes, and what removes it: workers ship (3, H, W) uint8 pixels (the transform's
PIL half; `/255` and Normalize run on the device), pinned when the device is a GPU; JPEG bytes
instead of pixels with `decode="device"` (batched `decode_jpeg` on the device, CPU fallback for
other formats and bad files); vectors come back to the host without stalling the next batch;
parts are written on a thread; `fused` is computed only when the run has two or more modalities.

Modalities in the export: "image" (a carousel's images each through the image tower, their unit
vectors averaged: encoders.pooling.pool_mean), "video" (K frames sampled uniformly in time by
the workers, data.video, through the image tower in the same forward as the batch's images, then
pooled over time: mean, or a trained attention pooling), "text", optionally "tags" (user tags:
interaction-derived), and "fused" (ModalityFusion over the modalities an item has) when the run
has more than one. Vectors are float32 whatever `precision` the encoder ran at. Videos are
decoded by the workers whatever `decode` says (`decode="device"` applies to JPEG images).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import warnings
from collections import Counter, defaultdict, deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import BasePredictionWriter
from torch.utils.data import DataLoader, IterableDataset

from coldstart.data.embeddings import (
    MANIFEST,
    EmbeddingManifest,
    PartInfo,
    atomic_write_json,
    remove_stale_temps,
    sha256_file,
    write_part,
)
from coldstart.data.fusion import fuse_modalities
from coldstart.data.shards import (
    DecodeConfig,
    SkipSample,
    decode_image,
    expand_urls,
    iter_shard,
    scan_shard,
)
from coldstart.data.video import VideoLimits, VideoRejected, decode_video
from coldstart.encoders.base import IMAGE, TEXT, VIDEO, Encoder, Preprocessor
from coldstart.encoders.catalogue import CatalogueTexts, is_catalogue, load_catalogue_texts

# EmbedConfig lives in the torch-free encoders.config (one home for its defaults).
from coldstart.encoders.config import DECODES, PRECISIONS, EmbedConfig, FusionConfig
from coldstart.encoders.fusion import ModalityFusion
from coldstart.encoders.images import decode_jpegs, device_decodable, pack_bytes, unpack_bytes
from coldstart.encoders.pooling import TemporalPooling, create_pooling, pool_mean
from coldstart.encoders.registry import create_encoder

TAGS = "tags"
FUSED = "fused"
SIDECAR = ".json"
CHUNKS_PER_WORKER = 4  # enough chunks that uneven shards still end together
MAX_PENDING_PARTS = 4  # parts queued for the writer thread before the loop waits


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
    planned_skips: dict[str, int] = field(default_factory=dict)  # found by the header scan
    has_text: bool = False  # shard: holds text members
    has_image: bool = False  # shard: holds image members
    has_video: bool = False  # shard: holds video members


@dataclass
class Chunk:
    """A range of one unit's samples (keys or item ids): what one DataLoader worker reads."""

    unit: int
    index: int  # position among the unit's chunks
    count: int  # chunks of the unit
    start: int
    stop: int


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
        scan = scan_shard(url)
        skips = {"duplicate_key": scan.duplicates, "missing_image": scan.missing_image}
        units.append(
            Unit(
                i, "shard", url, f"part-{i:05d}.parquet", len(scan.keys), keys=scan.keys,
                planned_skips={k: v for k, v in skips.items() if v}, has_text=scan.has_text,
                has_image=scan.images > 0, has_video=scan.videos > 0,
            )
        )  # fmt: skip
        if catalogue is not None:
            for key in scan.keys:
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


def plan_chunks(units: list[Unit], workers: int, batch_size: int) -> list[Chunk]:
    """Cut units into chunks for `workers` DataLoader workers, in unit order.

    One chunk per unit without workers. Otherwise chunks of about total / (workers x 4) samples
    (so a worker's share ends with the others'), at least a batch when there is a batch for every
    worker, fewer than a batch only when there is not (then every worker gets a smaller one).
    Dealt round-robin (chunk i -> worker i % workers), a unit's chunks run side by side and
    units finish, and are written, in order.
    """
    consumers = max(1, workers)
    total = sum(u.samples for u in units)
    if consumers == 1 or total == 0:
        size = max(1, max((u.samples for u in units), default=1))
    else:
        size = max(
            math.ceil(total / (consumers * CHUNKS_PER_WORKER)),
            min(batch_size, math.ceil(total / consumers)),
        )
    chunks: list[Chunk] = []
    for unit in units:
        count = max(1, math.ceil(unit.samples / size))
        bounds = [round(k * unit.samples / count) for k in range(count + 1)]  # even pieces
        for k in range(count):
            chunks.append(Chunk(unit.index, k, count, bounds[k], bounds[k + 1]))
    return chunks


def _maybe_int(key: str) -> int | str:
    base = key.rsplit("/", 1)[-1]
    return int(base) if base.isdigit() else key


# ---------------------------------------------------------------------------------------------
# data


class EmbedBatches(IterableDataset):
    """Yields dict batches, each from one chunk; the last batch of a chunk has done=True.

    Batch: unit, chunk, chunks (of the unit), seq (within the chunk), worker (DataLoader worker
    id, -1 in the main process), ids (list, one per row),
    pixels (n_img, 3, H, W) uint8 (float when the transform cannot be split) + img_rows, jpeg
    (packed bytes) + jpeg_offsets + jpeg_rows (device decode): a carousel's row appears once per
    image; frames (n_frames, 3, H, W) + frame_counts (per video) + vid_rows, tokens (n_txt, L) +
    txt_rows, tag_tokens + tag_rows, n (input samples consumed), done, skipped (counts of this
    batch).
    """

    def __init__(
        self,
        chunks: list[Chunk],
        units: dict[int, Unit],
        pre: Preprocessor,
        batch_size: int,
        catalogue: CatalogueTexts | None,
        want_text: bool,
        with_tags: bool,
        device_decode: bool = False,
        video_frames: int = EmbedConfig.video_frames,
        video_limits: VideoLimits | None = None,
    ) -> None:
        super().__init__()
        self.video_frames = video_frames
        self.video_limits = video_limits or VideoLimits()
        self.chunks = chunks
        self.units = units
        self.pre = pre
        self.batch_size = batch_size
        self.catalogue = catalogue
        self.want_text = want_text
        self.with_tags = with_tags
        self.device_decode = device_decode
        self.decode = DecodeConfig()
        self.worker = -1

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        self.worker = info.id if info is not None else -1
        for chunk in self.chunks[worker::workers]:
            unit = self.units[chunk.unit]
            if unit.kind == "shard":
                yield from self._shard(unit, chunk)
            else:
                yield from self._text(unit, chunk)

    def _texts_of(self, item: Any, fallback: str | None) -> tuple[str | None, str | None]:
        if self.catalogue is not None and item in self.catalogue.texts:
            text = self.catalogue.texts[item] or None
            tags = self.catalogue.tags.get(item) or None
            return text, tags
        return fallback, None

    def _batch(
        self, chunk: Chunk, seq: int, rows: list[dict], n: int, done: bool, skipped: Counter
    ) -> dict:
        img_rows, pixels, jpeg_rows, jpegs = [], [], [], []
        for i, r in enumerate(rows):
            for image in r.get("images", ()):  # a carousel's row once per image
                if "pixels" in image:
                    img_rows.append(i)
                    pixels.append(image["pixels"])
                else:
                    jpeg_rows.append(i)
                    jpegs.append(image["jpeg"])
        vid_rows = [i for i, r in enumerate(rows) if r.get("frames") is not None]
        txt_rows = [i for i, r in enumerate(rows) if r.get("text")] if self.want_text else []
        tag_rows = [i for i, r in enumerate(rows) if r.get("tags")] if self.with_tags else []
        jpeg, offsets = pack_bytes(jpegs) if jpeg_rows else (
            None, None
        )  # fmt: skip
        batch = {
            "unit": chunk.unit,
            "chunk": chunk.index,
            "chunks": chunk.count,
            "seq": seq,
            "worker": self.worker,
            "ids": [r["id"] for r in rows],
            "pixels": torch.stack(pixels) if img_rows else None,
            "img_rows": img_rows,
            "frames": torch.cat([rows[i]["frames"] for i in vid_rows]) if vid_rows else None,
            "frame_counts": [len(rows[i]["frames"]) for i in vid_rows],
            "vid_rows": vid_rows,
            "jpeg": jpeg,
            "jpeg_offsets": offsets,
            "jpeg_rows": jpeg_rows,
            "tokens": self.pre.text([rows[i]["text"] for i in txt_rows]) if txt_rows else None,
            "txt_rows": txt_rows,
            "tag_tokens": self.pre.text([rows[i]["tags"] for i in tag_rows]) if tag_rows else None,
            "tag_rows": tag_rows,
            "n": n,
            "done": done,
            "skipped": dict(skipped),
        }
        skipped.clear()
        return batch

    def _image(self, payload: bytes, skipped: Counter) -> dict[str, Any]:
        """Encoded image -> {"jpeg": bytes} for the device, {"pixels": (3, H, W)}, or {} when
        it is bad (counted by reason)."""
        if self.device_decode and device_decodable(payload, self.decode.max_image_pixels):
            return {"jpeg": payload}
        try:
            return {"pixels": self.pre.image_host(decode_image(payload, self.decode))}
        except SkipSample as skip:
            skipped[skip.reason] += 1
        except Exception:  # noqa: BLE001 - a bad image is counted, never fatal
            skipped["transform_error"] += 1
        return {}

    def _video(self, payload: bytes, skipped: Counter) -> dict[str, Any]:
        """Encoded video -> {"frames": (k, 3, H, W)}, k <= video_frames sampled uniformly in
        time, or {} when it is bad (counted by reason: corrupt_video, video_too_long, ...)."""
        try:
            frames, _ = decode_video(payload, self.video_frames, self.video_limits)
            return {"frames": torch.stack([self.pre.image_host(f) for f in frames])}
        except VideoRejected as err:
            skipped[err.reason] += 1
        except Exception:  # noqa: BLE001 - a bad video is counted, never fatal
            skipped["transform_error"] += 1
        return {}

    def _shard(self, unit: Unit, chunk: Chunk) -> Iterator[dict[str, Any]]:
        keys = unit.keys[chunk.start : chunk.stop]
        last = chunk.index == chunk.count - 1
        # Shard-level counts (header scan, tar damage) belong to one chunk: the last, which
        # reads to the end of the shard; the others stop after their own keys.
        skipped: Counter = Counter(unit.planned_skips if last else {})
        # Bytes: images decoded here or on the device, videos here (K frames).
        config = DecodeConfig(decode_images=False, accept_video=True)
        rows: list[dict] = []
        n, seq = 0, 0
        seen: set[str] = set()
        for sample in iter_shard(unit.source, config, skipped, keys=keys, count_damage=last):
            key = sample["key"]
            seen.add(key)
            item = self.catalogue.lookup(key, sample["item_id"]) if self.catalogue else None
            item_id = item if item is not None else sample["item_id"]
            text, tags = self._texts_of(item, sample.get("text"))
            row = {"id": item_id, "text": text, "tags": tags}
            images = [self._image(b, skipped) for b in sample.get("images_bytes", ())]
            row["images"] = [image for image in images if image]  # a bad one is counted
            if sample.get("video_bytes") is not None:
                row.update(self._video(sample["video_bytes"], skipped))
            rows.append(row)
            n += 1
            if len(rows) == self.batch_size:
                yield self._batch(chunk, seq, rows, n, False, skipped)
                rows, n, seq = [], 0, seq + 1
        # Samples that could not be read at all (bad member, truncated shard) keep their texts.
        for key in keys:
            if key in seen:
                continue
            n += 1
            item = self.catalogue.lookup(key, _maybe_int(key)) if self.catalogue else None
            if item is not None:
                text, tags = self._texts_of(item, None)
                rows.append({"id": item, "text": text, "tags": tags})
        yield self._batch(chunk, seq, rows, n, True, skipped)

    def _text(self, unit: Unit, chunk: Chunk) -> Iterator[dict[str, Any]]:
        rows: list[dict] = []
        seq = 0
        for item in unit.item_ids[chunk.start : chunk.stop]:
            text, tags = self._texts_of(item, None)
            rows.append({"id": item, "text": text, "tags": tags})
            if len(rows) == self.batch_size:
                yield self._batch(chunk, seq, rows, len(rows), False, Counter())
                rows, seq = [], seq + 1
        yield self._batch(chunk, seq, rows, len(rows), True, Counter())


class EmbedDataModule(L.LightningDataModule):
    """Assigns units to this rank (i % world == rank) after the process group exists, and cuts
    them into chunks for this rank's workers."""

    def __init__(
        self,
        units: list[Unit],
        pre: Preprocessor,
        batch_size: int,
        num_workers: int,
        catalogue: CatalogueTexts | None,
        want_text: bool,
        with_tags: bool,
        device_decode: bool = False,
        video_frames: int = EmbedConfig.video_frames,
        video_limits: VideoLimits | None = None,
    ) -> None:
        super().__init__()
        self.video_frames = video_frames
        self.video_limits = video_limits
        self.units = units
        self.pre = pre
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.catalogue = catalogue
        self.want_text = want_text
        self.with_tags = with_tags
        self.device_decode = device_decode
        self.mine: list[Unit] = []
        self.chunks: list[Chunk] = []

    def setup(self, stage: str | None = None) -> None:
        rank, world = self.trainer.global_rank, self.trainer.world_size
        # Every rank planned the same units; rank 0's list is authoritative (no drift).
        self.units = self.trainer.strategy.broadcast(self.units, 0)
        self.mine = [u for i, u in enumerate(self.units) if i % world == rank]
        self.chunks = plan_chunks(self.mine, self.num_workers, self.batch_size)

    def predict_dataloader(self) -> DataLoader:
        ds = EmbedBatches(
            self.chunks, {u.index: u for u in self.mine}, self.pre, self.batch_size,
            self.catalogue, self.want_text, self.with_tags, self.device_decode,
            self.video_frames, self.video_limits,
        )  # fmt: skip
        workers = min(self.num_workers, len(self.chunks))
        pin = self.trainer.strategy.root_device.type == "cuda"  # pinned: async copies
        return DataLoader(
            ds, batch_size=None, num_workers=workers, pin_memory=pin,
            prefetch_factor=2 if workers else None,
        )  # fmt: skip


# ---------------------------------------------------------------------------------------------
# model + writer


def _to_host(x: torch.Tensor) -> torch.Tensor:
    """(n, D) device tensor -> a host tensor; from a GPU, an async copy into pinned memory that
    is complete once the batch's `ready` event has fired (the next batch is already queued)."""
    if x.device.type != "cuda":
        return x
    host = torch.empty(x.shape, dtype=x.dtype, pin_memory=True)
    host.copy_(x, non_blocking=True)
    return host


def _pool_carousels(vectors: torch.Tensor, rows: list[int]) -> tuple[torch.Tensor, list[int]]:
    """vectors (n, D) of batch rows `rows` (sorted; a carousel's row repeats) -> (m, D), one
    per distinct row: a carousel's images mean-pooled, single images as they are."""
    distinct = list(dict.fromkeys(rows))
    if len(distinct) == len(rows):
        return vectors, rows
    tally = Counter(rows)
    counts = [tally[r] for r in distinct]
    return pool_mean(vectors, counts), distinct


class LitEmbedder(L.LightningModule):
    """Wraps an encoder for Lightning predict: eval mode, no grad, L2-normalized float32 outputs.

    Pixels arrive as uint8 and are normalized here, on the device; JPEG bytes (device decode)
    are decoded here in one batched call, with the CPU path as the fallback for files the device
    cannot decode (a bad file is skipped and counted, as in the workers).
    """

    def __init__(
        self,
        encoder: Encoder,
        pre: Preprocessor | None = None,
        video_pool: TemporalPooling | None = None,
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.pre = pre if pre is not None else encoder.preprocessor()
        self.video_pool = video_pool or TemporalPooling(encoder.dim, "mean")
        self.decode = DecodeConfig()

    def transfer_batch_to_device(
        self, batch: Any, device: torch.device, dataloader_idx: int
    ) -> Any:
        # Only model inputs move; JPEG bytes stay on the host, where decode_jpeg wants them.
        out = dict(batch)
        for key in ("pixels", "frames", "tokens", "tag_tokens"):
            if out.get(key) is not None:
                out[key] = out[key].to(device, non_blocking=True)
        return out

    def _pixels(self, batch: dict[str, Any], skipped: Counter) -> tuple[torch.Tensor | None, list]:
        """All image rows of the batch as one (n, 3, H, W) tensor on the device, in row order."""
        pixels, rows = batch["pixels"], list(batch["img_rows"])
        if not batch.get("jpeg_rows"):
            return pixels, rows
        payloads = unpack_bytes(batch["jpeg"], batch["jpeg_offsets"])
        split = self.pre.split
        decoded = decode_jpegs(payloads, self.device, split.device_ops if split else None)
        extra, extra_rows = [], []
        for row, payload, image in zip(batch["jpeg_rows"], payloads, decoded):
            if image is None:  # the device could not decode it: the CPU path decides
                try:
                    host = decode_image(payload.numpy().tobytes(), self.decode)
                    image = self.pre.image_host(host).to(self.device)
                except SkipSample as skip:
                    skipped[skip.reason] += 1
                    continue
                except Exception:  # noqa: BLE001 - a bad image is counted, never fatal
                    skipped["transform_error"] += 1
                    continue
            extra.append(image)
            extra_rows.append(row)
        if not extra:
            return pixels, rows
        stacked = torch.stack(extra)
        pixels = stacked if pixels is None else torch.cat([pixels, stacked])
        rows += extra_rows
        order = sorted(range(len(rows)), key=rows.__getitem__)
        return pixels[torch.tensor(order, device=pixels.device)], [rows[i] for i in order]

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        skipped = Counter(batch["skipped"])
        out = {
            k: batch[k]
            for k in ("unit", "chunk", "chunks", "seq", "worker", "ids", "txt_rows", "tag_rows")
            + ("n", "done")
        }
        pixels, img_rows = self._pixels(batch, skipped)
        out["skipped"] = dict(skipped)
        out[IMAGE] = out[VIDEO] = None
        frames, counts = batch.get("frames"), batch.get("frame_counts") or []
        n_img = 0 if pixels is None else len(pixels)
        parts = [t for t in (pixels, frames) if t is not None]
        if parts:  # images and video frames in one forward: (n_img + n_frames, 3, H, W)
            x = self.pre.finish_pixels(parts[0] if len(parts) == 1 else torch.cat(parts))
            vectors = self.encoder.encode_image(x)  # (n_img + n_frames, D)
            if n_img:
                out[IMAGE], img_rows = _pool_carousels(vectors[:n_img], img_rows)
                out[IMAGE] = _to_host(out[IMAGE])  # (n_items_with_images, D)
            if frames is not None:
                out[VIDEO] = _to_host(self.video_pool.pool(vectors[n_img:], counts))  # (n_vid, D)
        out["img_rows"] = img_rows
        out["vid_rows"] = batch.get("vid_rows", [])
        for name, key in ((TEXT, "tokens"), (TAGS, "tag_tokens")):
            x = batch[key]
            out[name] = None if x is None else _to_host(self.encoder.encode_text(x))  # (n, D)
        out["ready"] = None
        if self.device.type == "cuda":
            out["ready"] = torch.cuda.Event()
            out["ready"].record()
        return out


class PartWriter(BasePredictionWriter):
    """Collects a unit's batches; when all its chunks are in, a writer thread writes the part,
    its sidecar and the manifest while the loop goes on."""

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
        self.chunks_done: Counter = Counter()
        self.pending: deque[dict] = deque()  # predictions whose device->host copy may be running
        self.futures: list[Future] = []
        self.pool: ThreadPoolExecutor | None = None
        self.bar = None
        self.rows_written = 0

    def on_predict_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="embed-writer")
        if self.progress:
            from tqdm.auto import tqdm

            dm = trainer.datamodule
            total = sum(u.samples for u in dm.mine) if dm is not None else None
            self.bar = tqdm(
                total=total, unit="sample", desc=f"embed[rank {trainer.global_rank}]",
                position=trainer.global_rank, dynamic_ncols=True,
            )  # fmt: skip

    def on_predict_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        while self.pending:
            self._collect(self.pending.popleft())
        self._drain(0)
        self._close()

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        self._close()

    def _close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True)  # a part being written is finished, never half-left
            self.pool = None
        if self.bar is not None:
            self.bar.close()
            self.bar = None

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
        self.pending.append(prediction)
        # Read results one batch late: by then the copy is done and the device never waited.
        while self.pending and (
            len(self.pending) > 2
            or self.pending[0]["ready"] is None
            or self.pending[0]["ready"].query()
        ):
            self._collect(self.pending.popleft())

    def _collect(self, prediction: dict[str, Any]) -> None:
        ready = prediction.pop("ready", None)
        if ready is not None:
            ready.synchronize()
        for name in (IMAGE, VIDEO, TEXT, TAGS):
            if prediction.get(name) is not None:
                prediction[name] = prediction[name].numpy()
        unit = int(prediction["unit"])
        self.buffers[unit].append(prediction)
        if self.bar is not None:
            self.bar.update(int(prediction["n"]))
        if prediction["done"]:
            self.chunks_done[unit] += 1
        if self.chunks_done[unit] == int(prediction["chunks"]):
            del self.chunks_done[unit]
            batches = sorted(self.buffers.pop(unit), key=lambda b: (b["chunk"], b["seq"]))
            self._drain(MAX_PENDING_PARTS)
            self.futures.append(self.pool.submit(self._finish, self.units[unit], batches))

    def _drain(self, keep: int) -> None:
        """Wait until at most `keep` parts are queued; re-raise a writer thread's error."""
        while self.futures and (len(self.futures) > keep or self.futures[0].done()):
            self.futures.pop(0).result()

    def _finish(self, unit: Unit, batches: list[dict]) -> None:
        ids: list = []
        mods: list[str] = []
        vecs: list[np.ndarray] = []
        per_item: dict[str, dict[Any, np.ndarray]] = defaultdict(dict)
        order: list = []
        for b in batches:
            for row in b["ids"]:
                order.append(row)
            for name, rows_key in (
                (IMAGE, "img_rows"), (VIDEO, "vid_rows"), (TEXT, "txt_rows"), (TAGS, "tag_rows")
            ):  # fmt: skip
                if b.get(name) is None:
                    continue
                for j, r in enumerate(b[rows_key]):
                    item = b["ids"][r]
                    per_item[name][item] = b[name][j]
        for name in (IMAGE, VIDEO, TEXT, TAGS):
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
        skipped, workers = Counter(), Counter()
        for b in batches:
            skipped.update(b["skipped"])
            workers[str(b.get("worker", -1))] += int(b["n"])
        counts = Counter(mods)
        sidecar = {
            "part": dataclasses.asdict(info),
            "unit": unit.index,
            "kind": unit.kind,
            "samples": sum(int(b["n"]) for b in batches),
            "skipped": {k: v for k, v in sorted(skipped.items()) if v},
            "rows": dict(counts),
            "workers": dict(sorted(workers.items())),  # input samples per DataLoader worker
            "encoder": self.manifest.encoder,
            "weights_sha256": self.manifest.weights_sha256,
            "precision": self.manifest.extra.get("precision", DEFAULT_PRECISION),
            "video": self.manifest.extra.get("video") if counts.get(VIDEO) else None,
        }
        atomic_write_json(self.out / (unit.part + SIDECAR), sidecar)
        self.rows_written += len(ids)
        rebuild_manifest(self.out, list(self.units.values()), self.manifest)

    def _fuse(self, items: list, per_item: dict[str, dict[Any, np.ndarray]]) -> np.ndarray:
        """(N, D) fused rows: coldstart.data.fusion, the function the server fuses uploads with."""
        dim = self.manifest.dim
        config = self.fusion.config
        vectors, present = {}, {}
        for name in config.modalities:
            table = per_item.get(name, {})
            vectors[name] = np.stack([table.get(i, np.zeros(dim, np.float32)) for i in items])
            present[name] = np.array([i in table for i in items], dtype=bool)
        return fuse_modalities(
            vectors, present, config.method, config.weights, tuple(config.modalities)
        )  # (N, D)


# ---------------------------------------------------------------------------------------------
# manifest and resume

DEFAULT_PRECISION = "32-true"  # what parts written before precision was recorded ran at
_SHA_CACHE: dict[tuple[str, int, int], str] = {}
_SIDECAR_CACHE: dict[tuple[str, int, int], dict] = {}


def _cached(path: Path, cache: dict, read: Any) -> Any:
    """read(path), cached by (path, mtime, size): manifests are rebuilt after every part."""
    stat = path.stat()
    key = (str(path), stat.st_mtime_ns, stat.st_size)
    if key not in cache:
        cache[key] = read(path)
    return cache[key]


def _part_sha256(path: Path) -> str:
    return _cached(path, _SHA_CACHE, sha256_file)


def finished_parts(
    out: Path, weights_sha256: str, precision: str | None = None, video: dict | None = None
) -> dict[str, dict]:
    """part name -> sidecar, for parts whose file exists and matches its sidecar's sha256.

    Raises when the directory holds parts of other weights, (when `precision` is given) of
    another precision, or (when `video` is given) videos embedded with other frames or pooling:
    one export is one encoder at one precision with one video pooling.
    """
    done: dict[str, dict] = {}
    if not out.is_dir():
        return done
    for sidecar in sorted(out.glob("part-*" + SIDECAR)):
        try:
            meta = _cached(sidecar, _SIDECAR_CACHE, lambda p: json.loads(p.read_text()))
        except (OSError, json.JSONDecodeError):
            continue
        part = out / meta["part"]["name"]
        if meta.get("weights_sha256") != weights_sha256:
            raise ValueError(
                f"{out} holds parts of another encoder/weights ({meta.get('encoder')}, weights "
                f"sha256 {str(meta.get('weights_sha256'))[:12]}, this run {weights_sha256[:12]}): "
                "resume with the same --encoder, --pretrained and --init-seed, or use a new --out"
            )
        ran_at = meta.get("precision", DEFAULT_PRECISION)
        if precision is not None and ran_at != precision:
            raise ValueError(
                f"{out} holds parts embedded at precision {ran_at}, this run is {precision}; "
                "rerun with that --precision or use a new --out directory"
            )
        if video is not None and meta.get("video") not in (None, video):
            raise ValueError(
                f"{out} holds videos embedded with {meta['video']}, this run {video}; rerun with "
                "the same --video-frames / --video-pooling (state) or use a new --out directory"
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


def check_options(config: EmbedConfig) -> None:
    """Clear errors for option values before anything is loaded."""
    if str(config.precision) not in PRECISIONS:
        raise ValueError(
            f"precision must be one of {', '.join(PRECISIONS)} (Lightning's names), "
            f"got {config.precision!r}"
        )
    if config.decode not in DECODES:
        raise ValueError(f"decode must be one of {', '.join(DECODES)}, got {config.decode!r}")
    if config.batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {config.batch_size}")
    if config.num_workers < 0:
        raise ValueError(f"num_workers must be >= 0, got {config.num_workers}")


def _device_decode(config: EmbedConfig, pre: Preprocessor, shards: list[str]) -> bool:
    """Whether JPEGs go to the device decoder: asked for, and the transform has a tensor form."""
    if config.decode != "device" or not shards:
        return False
    split = pre.split
    if split is None or split.device_ops is None:
        warnings.warn(
            "decode='device': this encoder's image transform has no tensor equivalent "
            f"({pre.image_transform}); decoding on the CPU instead",
            stacklevel=3,
        )
        return False
    return True


def load_pooling_state(path: str) -> dict[str, torch.Tensor]:
    """Attention pooling weights from a state_dict file (.pt), or the `video_pool.*` entries of
    a fine-tuning checkpoint (.ckpt)."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    if "state_dict" in state:  # a Lightning checkpoint
        prefix = "video_pool."
        state = {
            k[len(prefix) :]: v for k, v in state["state_dict"].items() if k.startswith(prefix)
        }
        if not state:
            raise ValueError(f"{path}: the checkpoint holds no video_pool.* weights")
    return state


def _video_pooling(config: EmbedConfig, dim: int) -> tuple[TemporalPooling, dict[str, Any]]:
    """The run's temporal pooling module and what the manifest records of it (frames, method,
    sha256 of its weights: resuming with other pooling settings is refused)."""
    if config.video_frames < 1:
        raise ValueError(f"video_frames must be >= 1, got {config.video_frames}")
    state = load_pooling_state(config.video_pooling_state) if config.video_pooling_state else None
    if state is not None and config.video_pooling != "attention":
        raise ValueError("--video-pooling-state needs --video-pooling attention")
    module = create_pooling(config.video_pooling, dim, state)
    record = {
        "frames": config.video_frames,
        "pooling": config.video_pooling,
        "pooling_sha256": pooling_sha256(module),
    }
    return module, record


def pooling_sha256(module: TemporalPooling) -> str:
    """sha256 of a pooling module's weights (names and bytes), as the manifest records it."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode() + tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def build_embeddings(
    config: EmbedConfig,
    encoder: Encoder | None = None,
    callbacks: list[L.Callback] | None = None,
) -> EmbeddingManifest:
    """Run (or resume) an embedding job; returns the manifest as written to `config.out`.

    encoder: an already built encoder to use instead of `create_encoder(config.encoder, ...)`
    (its config is what the manifest records). callbacks: extra Lightning callbacks for the
    predict run (e.g. timing in benchmarks/embed_throughput.py).
    """
    check_options(config)
    shards, catalogue_spec = split_inputs(list(config.inputs))
    if not shards and catalogue_spec is None:
        raise ValueError("nothing to embed: give shards and/or a catalogue with --input")
    if encoder is None:
        with torch.random.fork_rng(devices=[]):  # seeded init, global RNG left as it was
            torch.manual_seed(config.init_seed)
            encoder = create_encoder(config.encoder, config.pretrained)
    if shards and IMAGE not in encoder.modalities:
        raise ValueError(f"encoder {config.encoder!r} has no image tower but shards were given")
    if catalogue_spec is not None and TEXT not in encoder.modalities:
        raise ValueError(f"encoder {config.encoder!r} has no text tower but a catalogue was given")
    catalogue = (
        load_catalogue_texts(catalogue_spec, tuple(config.text_fields), config.with_tags)
        if catalogue_spec
        else None
    )
    units = plan_units(shards, catalogue, config.text_chunk)
    # Modalities the run really has (not all the encoder could do): an image-only run writes
    # image rows and nothing else, not a "fused" copy of every image vector.
    has_text = catalogue is not None or any(u.has_text for u in units)
    want_text = TEXT in encoder.modalities and has_text
    has_video = any(u.has_video for u in units)
    has_image = bool(shards) and (any(u.has_image for u in units) or not has_video)
    modalities = [IMAGE] if has_image else []
    modalities += ([VIDEO] if has_video else []) + ([TEXT] if want_text else [])
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
    pre = encoder.preprocessor()
    device_decode = _device_decode(config, pre, shards)
    video_pool, video = _video_pooling(config, encoder.dim)
    with warnings.catch_warnings():
        # 16-mixed on a CPU: Lightning warns and runs bf16-mixed; the manifest says which ran.
        warnings.filterwarnings("ignore", message=".*AMP with fp16 is not supported on CPU.*")
        trainer = L.Trainer(
            accelerator=config.accelerator,
            devices=config.devices,
            strategy="ddp" if config.devices > 1 else "auto",
            precision=config.precision,
            callbacks=list(callbacks or []),
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
        )
    precision = str(trainer.precision)
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
            # How the fused rows were made, and would be for an upload (data.fusion.FusionSpec
            # reads it back: `coldstart serve` fuses and pools as the export did).
            "fusion": {"method": config.fusion, "weights": dict(config.fusion_weights)},
            "catalogue": catalogue_spec,
            "precision": precision,
            "vector_dtype": "float32",
            "video": video if has_video else None,
            "video_pooling_state": str(Path(config.video_pooling_state).resolve())
            if has_video and config.video_pooling_state
            else None,
        },
    )
    out.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(out)  # a killed run's half-written part or sidecar
    done = finished_parts(out, weights, precision, video if has_video else None)
    todo = [u for u in units if u.part not in done]
    if todo:
        writer = PartWriter(str(out), units, template, fusion, config.progress)
        trainer.callbacks.append(writer)
        dm = EmbedDataModule(
            todo, pre, config.batch_size, config.num_workers, catalogue, want_text,
            config.with_tags, device_decode, config.video_frames,
            VideoLimits(max_seconds=config.max_video_seconds),
        )  # fmt: skip
        with warnings.catch_warnings():
            # Batches come from an IterableDataset: there are no sampler indices to infer.
            warnings.filterwarnings("ignore", message="Couldn't infer the batch indices")
            # LitEmbedder moves only model inputs to the device (JPEG bytes stay on the host).
            warnings.filterwarnings("ignore", message=".*overridden `transfer_batch_to_device`")
            lit = LitEmbedder(encoder, pre, video_pool)
            trainer.predict(lit, datamodule=dm, return_predictions=False)
        trainer.strategy.barrier()
        if trainer.global_rank != 0:
            return EmbeddingManifest.load(out)
    manifest = rebuild_manifest(out, units, template)
    if (out / MANIFEST).exists() and not manifest.extra.get("complete"):
        missing = [u.part for u in units if u.part not in {p.name for p in manifest.parts}]
        raise RuntimeError(f"embedding incomplete: parts missing {missing[:5]}... rerun to resume")
    return manifest
