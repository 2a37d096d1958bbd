"""(image, text) pairs from webdataset shards for contrastive training.

Texts come from each sample's `.txt` member, else `json["caption"|"text"]`, else a catalogue
(e.g. the MovieLens title + genres of the poster's movie). Preprocessing is the encoder's own
(`Encoder.preprocessor()`), run in DataLoader workers; batches are formed inside the dataset so
each worker tokenizes whole batches at once.

Under DDP every rank must run the same number of training steps or the gradient all-reduce
hangs; the training stream therefore has a fixed number of batches per rank and epoch
(total samples // (world * batch)), cycling over that consumer's shards when they run short.

Exact resume mid-epoch: an epoch's stream is a function of (seed, epoch, rank, world, worker,
workers) alone (data.shards.ShardReader), so the position is one number, the batches of the
epoch each rank trained. The data module keeps it in the checkpoint, and the resumed loader
rebuilds the epoch's stream and drops those batches before yielding (`PairBatches.resume`).
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader, IterableDataset

from coldstart.data.schema import ImageTextBatch
from coldstart.data.shards import DecodeConfig, ShardReader, expand_urls, image_keys
from coldstart.data.video import VideoRejected, decode_video
from coldstart.encoders.base import Preprocessor
from coldstart.encoders.catalogue import CatalogueTexts, load_catalogue_texts


def _world() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def _worker() -> tuple[int, int]:
    info = torch.utils.data.get_worker_info()
    return (info.id, info.num_workers) if info is not None else (0, 1)


class _RoleReader(ShardReader):
    """A ShardReader that reads the share of DataLoader worker `role` whichever worker runs it
    (a resumed epoch hands the workers' roles round: see `PairBatches.__iter__`)."""

    role: int = 0

    def consumer(self) -> tuple[int, int]:
        rank, world = _world()
        _, workers = _worker()
        return rank * workers + self.role, world * workers


class PairBatches(IterableDataset):
    """Batches of (image, text) pairs from shards, as `ImageTextBatch`.

    train: shuffled shards + sample buffer, drop_last, and exactly `steps_per_rank` batches
    per epoch per rank (split over DataLoader workers). Otherwise every sample once, in order.
    """

    def __init__(
        self,
        urls: list[str],
        preprocessor: Preprocessor,
        batch_size: int,
        train: bool,
        seed: int = 0,
        buffer: int = 256,
        catalogue: CatalogueTexts | None = None,
        steps_per_rank: int | None = None,
        video_frames: int = 0,
    ) -> None:
        super().__init__()
        self.video_frames = video_frames  # > 0: video-text pairs too, K frames each
        self.urls = urls
        self.pre = preprocessor
        self.batch_size = batch_size
        self.train = train
        self.seed = seed
        self.buffer = buffer if train else 0
        self.catalogue = catalogue
        self.steps_per_rank = steps_per_rank
        self.epoch = 0
        self.skipped: Counter = Counter()
        self.resume_epoch, self.resume_batches = -1, 0  # see resume()

    def resume(self, epoch: int, batches: int) -> None:
        """Start epoch `epoch` after its first `batches` batches (of this rank), as they were
        trained before the checkpoint; later epochs run whole."""
        self.epoch, self.resume_epoch, self.resume_batches = epoch, epoch, batches

    def __len__(self) -> int:
        if self.steps_per_rank is None:
            raise TypeError("evaluation streams have no fixed length")
        return self.steps_per_rank

    def _text(self, sample: dict[str, Any]) -> str | None:
        if sample.get("text"):
            return sample["text"]
        meta = sample.get("json") or {}
        for name in ("caption", "text"):
            if isinstance(meta, dict) and meta.get(name):
                return str(meta[name])
        if self.catalogue is not None:
            item = self.catalogue.lookup(sample["key"], sample.get("item_id"))
            if item is not None and self.catalogue.texts.get(item):
                return self.catalogue.texts[item]
        return None

    def _reader(self, role: int) -> ShardReader:
        _, world = _world()
        consumers = world * _worker()[1]
        # Fewer shards than consumers: every consumer reads every shard, keeps every n-th sample.
        split_by = "shard" if len(self.urls) >= consumers else "sample"
        config = DecodeConfig(accept_video=self.video_frames > 0)
        reader = _RoleReader(
            self.urls, seed=self.seed, shuffle=self.train, buffer=self.buffer, split_by=split_by,
            config=config,
        )  # fmt: skip
        reader.role = role
        reader.skipped = self.skipped
        return reader

    def _plan(self) -> tuple[int, int | None, int]:
        """(role, quota, drop): the worker share this worker reads, the batches that share
        gives this epoch (None: evaluation, everything once) and how many of them were
        trained before a resume (read again, not yielded).

        The DataLoader takes an epoch's batch i from worker i % workers (round robin; the
        quotas differ by at most one, the first workers' larger). A loader resumed after
        `done` batches asks worker 0 first, so worker w plays role (w + done) % workers: the
        batches then come in the uninterrupted order.
        """
        worker, workers = _worker()
        if self.steps_per_rank is None:
            return worker, None, 0
        done = self.resume_batches if self.epoch == self.resume_epoch else 0
        done = min(done, self.steps_per_rank)
        role = (worker + done) % workers
        quota = self.steps_per_rank // workers + (role < self.steps_per_rank % workers)
        drop = done // workers + (role < done % workers)
        return role, quota, drop

    def _collate(self, rows: list[tuple[torch.Tensor, str, str]]) -> ImageTextBatch:
        tokens = self.pre.text([r[1] for r in rows])  # (B, L)
        keys = [r[2] for r in rows]
        videos = [i for i, r in enumerate(rows) if r[0].ndim == 4]  # (k, 3, H, W) frames
        if not videos:
            images = torch.stack([r[0] for r in rows])  # (B, 3, H, W)
            return ImageTextBatch(images=images, tokens=tokens, keys=keys)
        pics = [i for i, r in enumerate(rows) if r[0].ndim == 3]
        k = self.video_frames
        frames = torch.zeros(len(videos), k, *rows[videos[0]][0].shape[1:])  # (V, K, 3, H, W)
        mask = torch.zeros(len(videos), k, dtype=torch.bool)
        for j, i in enumerate(videos):
            n = len(rows[i][0])
            frames[j, :n], mask[j, :n] = rows[i][0], True
        return ImageTextBatch(
            images=torch.stack([rows[i][0] for i in pics]) if pics else None,
            tokens=tokens, keys=keys, frames=frames, frame_mask=mask,
            video_rows=torch.tensor(videos), image_rows=torch.tensor(pics),
        )  # fmt: skip

    def _media(self, sample: dict[str, Any]) -> torch.Tensor:
        """(3, H, W) of an image sample, or (k, 3, H, W) of a video's k <= K frames."""
        if sample.get("image") is None and sample.get("video_bytes") is not None:
            frames, _ = decode_video(sample["video_bytes"], self.video_frames)
            return torch.stack([self.pre.image(f) for f in frames])
        return self.pre.image(sample["image"])

    def __iter__(self) -> Iterator[ImageTextBatch]:
        role, quota, drop = self._plan()
        if quota is not None and drop >= quota:
            return  # this worker's share of the epoch was all trained before the resume
        reader = self._reader(role)
        made, epoch = 0, self.epoch
        rows: list[tuple[torch.Tensor, str, str]] = []
        while quota is None or made < quota:
            reader.set_epoch(epoch)
            seen = 0
            for sample in reader:
                seen += 1
                text = self._text(sample)
                if text is None:
                    self.skipped["missing_text"] += 1
                    continue
                try:
                    pixels = self._media(sample)
                except VideoRejected as err:
                    self.skipped[err.reason] += 1
                    continue
                except Exception:  # noqa: BLE001 - a bad image must not end the epoch
                    self.skipped["transform_error"] += 1
                    continue
                rows.append((pixels, text, sample["key"]))
                if len(rows) == self.batch_size:
                    if made >= drop:  # (the dropped ones were trained before the resume)
                        yield self._collate(rows)
                    rows, made = [], made + 1
                    if quota is not None and made >= quota:
                        return
            if quota is None:
                if rows:  # evaluation keeps the tail
                    yield self._collate(rows)
                return
            if seen == 0:
                raise RuntimeError(f"no readable samples in {len(self.urls)} training shard(s)")
            epoch += 1  # cycle: this consumer's shards ran short of its quota


def synthetic_pair_shards(
    directory: str | os.PathLike, n_items: int = 640, n_val: int = 128, seed: int = 0
) -> tuple[str, str]:
    """Write synthetic (image, caption) shards (data.synthetic) once; -> (train spec, val spec).

    Train: (n_items - n_val) pairs in 4 shards; val: n_val pairs in one shard. Reused when present.
    """
    from coldstart.data.shards import write_shards
    from coldstart.data.synthetic import make_synthetic

    root = Path(directory)
    train_spec, val_spec = str(root / "train-{000..003}.tar"), str(root / "val-000.tar")
    if all(os.path.exists(u) for u in expand_urls(train_spec) + [val_spec]):
        return train_spec, val_spec
    syn = make_synthetic(n_items=n_items, n_classes=8, image_size=32, seed=seed)
    items = syn.dataset.items
    samples = [
        {"key": k, "image": syn.images[k], "text": syn.captions[k], "json": {"item_id": int(i)}}
        for k, i in zip(items["media_key"], items["item_id"])
    ]
    n_train = n_items - n_val
    write_shards(samples[:n_train], str(root / "train-%03d.tar"), maxcount=-(-n_train // 4))
    write_shards(samples[n_train:], str(root / "val-%03d.tar"), maxcount=n_val)
    return train_spec, val_spec


class ImageTextDataModule(L.LightningDataModule):
    """Shards of (image, text) pairs for `LitContrastive`; with `video_frames` K > 0 also
    (video, text) pairs (K frames sampled uniformly, pooled by the model's `video_pool`).

    train/val/test: shard specs (brace pattern, glob, directory), or "synthetic": class-visible
    synthetic pairs written once to `synthetic_dir` (a demo that runs anywhere). catalogue:
    'movielens', 'movielens:<root>' or an item table, for shards without captions. The preprocessing comes
    from the model being trained (`trainer.lightning_module.encoder`), so it always matches.
    """

    def __init__(
        self,
        train: str | None = None,
        val: str | None = None,
        test: str | None = None,
        batch_size: int = 64,
        num_workers: int = 2,
        seed: int = 0,
        shuffle_buffer: int = 256,
        catalogue: str | None = None,
        samples_per_epoch: int | None = None,
        synthetic_dir: str = "runs/data/synthetic-pairs",
        video_frames: int = 0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.preprocessor: Preprocessor | None = None
        self._catalogue: CatalogueTexts | None = None
        self._resume: dict[str, int] | None = None  # the checkpoint's position, see state_dict

    def state_dict(self) -> dict[str, int]:
        """The training position, kept in every checkpoint: the epoch, the batches of it each
        rank trained (equal on every rank) and the number of ranks. A save at a step's end
        counts that step."""
        trainer = self.trainer
        if trainer is None:
            return {}
        progress = trainer.fit_loop.epoch_loop.batch_progress.current
        _, world = _world()
        return {"epoch": trainer.current_epoch, "batches": progress.processed, "world": world}

    def load_state_dict(self, state_dict: dict[str, int]) -> None:
        # Restored before the training loader is made (also by estimated_stepping_batches).
        self._resume = dict(state_dict) if "batches" in state_dict else None

    def setup(self, stage: str | None = None) -> None:
        if "synthetic" in (self.hparams.train, self.hparams.val, self.hparams.test):
            train, val = synthetic_pair_shards(self.hparams.synthetic_dir)
            for split, spec in (("train", train), ("val", val), ("test", val)):
                if self.hparams[split] == "synthetic":
                    self.hparams[split] = spec
        if self.preprocessor is None:
            model = self.trainer.lightning_module if self.trainer is not None else None
            if model is None or not hasattr(model, "encoder"):
                raise RuntimeError(
                    "ImageTextDataModule needs a model with .encoder (or set .preprocessor)"
                )
            self.preprocessor = model.encoder.preprocessor()
        if self.hparams.catalogue and self._catalogue is None:
            self._catalogue = load_catalogue_texts(self.hparams.catalogue)

    def _urls(self, spec: str | None, split: str) -> list[str]:
        if not spec:
            raise ValueError(f"no {split} shards configured (data.{split})")
        urls = expand_urls(spec)
        if not urls:
            raise FileNotFoundError(f"no shards match {spec!r} ({split})")
        return urls

    def _loader(self, dataset: PairBatches, workers: int) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=None,
            num_workers=workers,
            persistent_workers=False,
            prefetch_factor=4 if workers else None,
        )

    def train_dataloader(self) -> DataLoader:
        urls = self._urls(self.hparams.train, "train")
        total = self.hparams.samples_per_epoch or sum(len(image_keys(u)) for u in urls)
        _, world = _world()
        steps = total // (world * self.hparams.batch_size)
        if steps < 1:
            raise ValueError(
                f"{total} training samples < world size {world} x batch size {self.hparams.batch_size}"
            )
        ds = PairBatches(
            urls,
            self.preprocessor,
            self.hparams.batch_size,
            train=True,
            seed=self.hparams.seed,
            buffer=self.hparams.shuffle_buffer,
            catalogue=self._catalogue,
            steps_per_rank=steps,
            video_frames=self.hparams.video_frames,
        )
        ds.epoch = self.trainer.current_epoch if self.trainer is not None else 0
        if self._resume is not None:  # the first loader after a checkpoint was restored
            epoch, batches = self._resume["epoch"], self._resume["batches"]
            # Another number of processes: the same share of the epoch (not the same batches).
            batches = batches * self._resume.get("world", world) // world
            self._resume = None
            if batches >= steps:
                ds.epoch = epoch + 1  # saved at the epoch's end: the next one runs whole
            else:
                ds.resume(epoch, batches)
        return self._loader(ds, self.hparams.num_workers)

    def _eval_loader(self, spec: str | None, split: str) -> DataLoader:
        ds = PairBatches(
            self._urls(spec, split),
            self.preprocessor,
            self.hparams.batch_size,
            train=False,
            catalogue=self._catalogue,
            video_frames=self.hparams.video_frames,
        )
        return self._loader(ds, min(self.hparams.num_workers, len(ds.urls)))

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader(self.hparams.val, "val")

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader(self.hparams.test or self.hparams.val, "test")
