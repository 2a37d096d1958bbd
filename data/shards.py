"""Media shards: webdataset-format tar files of `<key>.jpg|png|webp`, `<key>.txt`, `<key>.json`,
and for heterogeneous media `<key>.mp4|webm` (a video) and `<key>.0.jpg`, `<key>.1.jpg`, ...
(a carousel: several images of one item, in index order; webdataset splits member names at the
first dot, so the extension is `0.jpg` and the key stays the item's).

Reading
-------
A *sample* is a dict::

    {"key": str, "item_id": int | str, "image": PIL.Image.Image (RGB) | None,
     "images": [PIL.Image.Image, ...] (all of a carousel's images, in order; [image] otherwise),
     "text": str | None, "json": dict | None, "shard": str,
     "video_bytes": bytes, "video_ext": "mp4" | "webm"  (only when the item has a video)}

Videos are carried as bytes (decoding K frames is the consumer's choice, data.video); with
`decode_images=False` images are too (`image_bytes`, `images_bytes`, `image_ext`).

`item_id` comes from the JSON (`item_id` field) when present, else from the key (as int when it
is all digits), so the real poster shards (`<movieId>.jpg` only) need no JSON.

- `iter_shard(path)`: one shard, in file order. For per-shard jobs (one input shard -> one output
  part) such as the embedding job; `keys=` lets several readers share one shard.
- `scan_shard(path)` / `image_keys(path)`: what a shard holds, from its tar headers only.
- `ShardReader(urls, seed=0, ...)`: many shards as a torch `IterableDataset`: deterministic
  shard order for a seed (and epoch, `set_epoch`), split by node (torch.distributed rank) and by
  DataLoader worker; an optional seeded sample shuffle buffer; an optional `transform(sample)`.

Bad input never crashes a job: a sample whose image is corrupt, too large in bytes, above PIL's
decompression-bomb pixel limit, or missing is skipped and counted (reason -> count in
`.skipped` / `ShardStats.skipped`); an unreadable or truncated shard is counted too and reading
goes on with what it held. Counters live in the process that iterates (a DataLoader worker keeps
its own); per-shard jobs read in the main process and see exact counts.

Writing
-------
`write_shards(samples, pattern, maxcount)` writes samples (same dict layout; `image` may be PIL,
a (H, W, 3) uint8 array or encoded bytes) into `pattern % index` tars, each atomically, with
fixed member metadata so the bytes are reproducible. `pack_folder` backs `coldstart data pack`.
"""

from __future__ import annotations

import contextlib
import csv
import glob
import io
import json
import os
import random
import tarfile
import warnings
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from coldstart.data import images
from coldstart.data.embeddings import temp_sibling
from coldstart.data.video import DEFAULT_MAX_VIDEO_BYTES, VIDEO_EXTENSIONS, sniff_format

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")
TEXT_EXTENSIONS = ("txt", "text", "caption")
JSON_EXTENSIONS = ("json",)
DEFAULT_MAX_IMAGE_BYTES = 32 << 20  # 32 MiB of encoded image is not a poster, it is an accident

Sample = dict[str, Any]


# --------------------------------------------------------------------------------------------
# urls


def expand_urls(urls: str | os.PathLike | Iterable[str | os.PathLike]) -> list[str]:
    """Shard list from a brace pattern ('a-{000..003}.tar'), a glob, a directory or a list."""
    if isinstance(urls, (str, os.PathLike)):
        text = str(urls)
        if os.path.isdir(text):
            return sorted(str(p) for p in Path(text).glob("*.tar"))
        from braceexpand import braceexpand

        out: list[str] = []
        for item in braceexpand(text):
            if any(ch in item for ch in "*?[") and not os.path.exists(item):
                out.extend(sorted(glob.glob(item)))
            else:
                out.append(item)
        return out
    result: list[str] = []
    for url in urls:
        result.extend(expand_urls(url))
    return result


# --------------------------------------------------------------------------------------------
# decoding


@dataclass
class DecodeConfig:
    """What a readable sample is. Defaults follow PIL's own decompression-bomb limit."""

    decode_images: bool = True  # False: image stays None, raw bytes kept in sample["image_bytes"]
    require_image: bool = True  # skip samples without a (valid) image
    max_image_bytes: int = DEFAULT_MAX_IMAGE_BYTES
    max_image_pixels: int | None = None  # on top of PIL's Image.MAX_IMAGE_PIXELS (None: PIL's)
    mode: str = "RGB"
    accept_video: bool = False  # a video satisfies require_image (readers that embed videos)
    max_video_bytes: int = DEFAULT_MAX_VIDEO_BYTES


class SkipSample(Exception):
    """A sample that cannot be used; `reason` is the counter key."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


def decode_image(payload: bytes, config: DecodeConfig | None = None) -> Image.Image:
    """Encoded bytes -> fully loaded PIL image in `config.mode`. Raises SkipSample on bad input.

    The one bomb-safe decoder (data.images.decode_image): byte and pixel limits are checked
    before any pixel is decoded, so a decompression bomb costs a few bytes of parsing.
    """
    config = config or DecodeConfig()
    try:
        return images.decode_image(
            payload,
            max_pixels=config.max_image_pixels,
            max_bytes=config.max_image_bytes,
            mode=config.mode,
        )
    except images.ImageRejected as err:
        raise SkipSample(err.reason, str(err)) from err


def _item_id(key: str, meta: dict | None) -> int | str:
    if meta and "item_id" in meta:
        return meta["item_id"]
    base = key.rsplit("/", 1)[-1]
    return int(base) if base.isdigit() else key


def media_kind(ext: str) -> tuple[str, int] | None:
    """Member extension -> ("image", position) for `jpg` (position -1) or a carousel's
    `<n>.jpg` (position n), ("video", 0) for `mp4` / `webm`, else None."""
    ext = ext.lower()
    if ext in IMAGE_EXTENSIONS:
        return "image", -1
    if ext in VIDEO_EXTENSIONS:
        return "video", 0
    index, dot, base = ext.partition(".")
    if dot and index.isdigit() and base in IMAGE_EXTENSIONS:
        return "image", int(index)
    return None


def image_members(raw: dict[str, bytes]) -> list[str]:
    """Extensions of a sample's images in carousel order (a plain `jpg` first)."""
    found = [(kind[1], ext) for ext in raw if (kind := media_kind(ext)) and kind[0] == "image"]
    return [ext for _, ext in sorted(found)]


def decode_sample(raw: dict[str, bytes], key: str, shard: str, config: DecodeConfig) -> Sample:
    """Members of one key (extension -> bytes) -> a sample dict. Raises SkipSample."""
    image_exts = image_members(raw)
    image_ext = image_exts[0] if image_exts else None
    video_ext = next((e for e in VIDEO_EXTENSIONS if e in raw), None)
    text_ext = next((e for e in TEXT_EXTENSIONS if e in raw), None)
    sample: Sample = {"key": key, "image": None, "text": None, "json": None, "shard": shard}
    if "json" in raw:
        try:
            sample["json"] = json.loads(raw["json"].decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise SkipSample("bad_json", str(error)) from error
    if text_ext is not None:
        try:
            sample["text"] = raw[text_ext].decode("utf-8").strip()
        except UnicodeDecodeError as error:
            raise SkipSample("bad_text", str(error)) from error
    if video_ext is not None and (config.accept_video or image_ext is None):
        if len(raw[video_ext]) > config.max_video_bytes:
            raise SkipSample("oversized_video")
        sample["video_bytes"], sample["video_ext"] = raw[video_ext], video_ext
    sample["images"] = []
    if image_ext is None:
        if config.require_image and not (config.accept_video and video_ext is not None):
            raise SkipSample("missing_image")
    elif config.decode_images:
        sample["images"] = [decode_image(raw[ext], config) for ext in image_exts]
        sample["image"] = sample["images"][0]
    else:
        if any(len(raw[ext]) > config.max_image_bytes for ext in image_exts):
            raise SkipSample("oversized_image")
        sample["images_bytes"] = [raw[ext] for ext in image_exts]
        sample["image_bytes"] = raw[image_ext]
        sample["image_ext"] = image_ext.rpartition(".")[2]
    sample["item_id"] = _item_id(key, sample["json"] if isinstance(sample["json"], dict) else None)
    return sample


# --------------------------------------------------------------------------------------------
# reading one shard


def _split_name(name: str) -> tuple[str, str]:
    """webdataset convention: key = path up to the first dot of the base name, ext = the rest."""
    directory, _, base = name.rpartition("/")
    stem, dot, ext = base.partition(".")
    key = f"{directory}/{stem}" if directory else stem
    return key, ext.lower() if dot else ""


@dataclass
class ShardScan:
    """What a shard holds, from its tar headers alone (nothing decoded).

    keys: keys with a media member (image or video), first occurrence each, in file order;
    duplicates: later groups of an already listed key (readers embed the first one only);
    missing_image: keys with no media member at all; has_text: any text member; videos: keys
    with a video member; images: keys with an image member; carousels: keys with two or more
    images.
    """

    keys: list[str] = field(default_factory=list)
    duplicates: int = 0
    missing_image: int = 0
    has_text: bool = False
    images: int = 0
    videos: int = 0
    carousels: int = 0


def scan_shard(path: str) -> ShardScan:
    """Header-only pass over a shard, so jobs can plan work and totals cheaply.

    A damaged shard yields what was seen before the damage; reading it later counts the damage.
    """
    scan = ShardScan()
    seen: set[str] = set()
    all_keys: set[str] = set()
    group: str | None = None  # key of the current run of consecutive members
    group_counted = False
    first_group = False  # the current group is its key's first (the one readers use)
    kinds: dict[str, Counter] = {}  # key -> media kind -> members of its first group
    try:
        with tarfile.open(path, mode="r|*") as tar:
            for member in tar:
                key, ext = _split_name(member.name)
                if not member.isfile() or key.rsplit("/", 1)[-1].startswith(".") or not ext:
                    continue
                if key != group:
                    group, group_counted, first_group = key, False, False
                all_keys.add(key)
                if ext in TEXT_EXTENSIONS:
                    scan.has_text = True
                kind = media_kind(ext)
                if kind is None:
                    continue
                if group_counted:  # another media member of the same group (a carousel)
                    if first_group:
                        kinds[key][kind[0]] += 1
                    continue
                group_counted = True  # one media group per key: the reader takes the first
                if key in seen:
                    scan.duplicates += 1
                else:
                    seen.add(key)
                    scan.keys.append(key)
                    first_group = True
                    kinds[key] = Counter({kind[0]: 1})
    except (tarfile.TarError, OSError, EOFError):
        pass
    scan.missing_image = len(all_keys - seen)
    scan.images = sum(1 for k in seen if kinds[k]["image"])
    scan.videos = sum(1 for k in seen if kinds[k]["video"])
    scan.carousels = sum(1 for k in seen if kinds[k]["image"] > 1)
    return scan


def image_keys(path: str) -> list[str]:
    """Keys of a shard's samples that have an image member, in file order (headers only)."""
    return scan_shard(path).keys


def _iter_members(path: str, counts: Counter) -> Iterator[tuple[str, dict[str, bytes]]]:
    """(key, {ext: bytes}) groups of consecutive members; tar damage is counted, not raised."""
    current_key: str | None = None
    current: dict[str, bytes] = {}
    try:
        with tarfile.open(path, mode="r|*") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                key, ext = _split_name(member.name)
                if key.rsplit("/", 1)[-1].startswith(".") or not ext:
                    continue  # hidden files, members without an extension
                if key != current_key:
                    if current_key is not None:
                        yield current_key, current
                    current_key, current = key, {}
                handle = tar.extractfile(member)
                current[ext] = handle.read() if handle is not None else b""
    except (tarfile.TarError, OSError, EOFError) as error:
        # The group being read when the damage hit may be incomplete: drop it, count it.
        counts["unreadable_shard" if current_key is None else "truncated_shard"] += 1
        if current_key is not None:
            counts["truncated_sample"] += 1
        warnings.warn(f"{path}: {type(error).__name__}: {error}", stacklevel=2)
        return
    if current_key is not None:
        yield current_key, current


def iter_shard(
    path: str | os.PathLike,
    config: DecodeConfig | None = None,
    skipped: Counter | None = None,
    keys: Collection[str] | None = None,
    count_damage: bool = True,
) -> Iterator[Sample]:
    """Samples of one shard in file order; bad ones skipped and counted into `skipped`.

    `skipped` (a Counter, reason -> count) is updated in place so a caller can read it after the
    loop, e.g. to put it in an export manifest.

    keys: read only these samples (several readers sharing one shard): other members are read
    past without decoding, each key is decoded once (its first group; `scan_shard` counts the
    duplicates) and reading stops after the last of them unless `count_damage`.
    count_damage: count shard-level damage (unreadable or truncated tar) into `skipped`, reading
    to the end of the shard. When several readers share a shard exactly one of them should.
    """
    config = config or DecodeConfig()
    counts = skipped if skipped is not None else Counter()
    damage = counts if count_damage else Counter()
    shard = str(path)
    wanted = set(keys) if keys is not None else None
    for key, raw in _iter_members(shard, damage):
        if wanted is not None:
            if key not in wanted:
                continue
            wanted.discard(key)
        try:
            yield decode_sample(raw, key, shard, config)
        except SkipSample as skip:
            counts[skip.reason] += 1
        if wanted is not None and not wanted and not count_damage:
            return


@dataclass
class ShardStats:
    """Counts of one pass over shards."""

    samples: int = 0
    skipped: Counter = field(default_factory=Counter)

    def as_dict(self) -> dict[str, Any]:
        return {"samples": self.samples, "skipped": dict(self.skipped)}


# --------------------------------------------------------------------------------------------
# reading many shards (torch IterableDataset)


def _node() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def _worker() -> tuple[int, int]:
    info = torch.utils.data.get_worker_info()
    return (info.id, info.num_workers) if info is not None else (0, 1)


class ShardReader(torch.utils.data.IterableDataset):
    """Samples from many shards, split by node and worker, in a deterministic order for a seed.

    urls: brace pattern, glob, directory or list of shard paths.
    shuffle: shuffle the shard order with (seed, epoch); False keeps the given order.
    buffer: > 0 adds a seeded sample shuffle buffer of that size (per consumer).
    split_by: "shard" (each consumer reads whole shards: the normal case, needs at least as many
        shards as nodes x workers, otherwise some consumers get nothing) or "sample" (every
        consumer reads every shard and keeps every n-th sample: for few shards).
    rank, world_size: override torch.distributed (e.g. for a multi-host job without it).
    transform: applied to each sample (e.g. the encoder's preprocessing); an exception in it skips
        and counts the sample as "transform_error".

    Each consumer's stream is determined by (urls, seed, epoch, rank, world_size, worker,
    num_workers) alone.
    """

    def __init__(
        self,
        urls: str | os.PathLike | Iterable[str | os.PathLike],
        seed: int = 0,
        shuffle: bool = False,
        buffer: int = 0,
        split_by: str = "shard",
        decode: bool = True,
        config: DecodeConfig | None = None,
        transform: Callable[[Sample], Any] | None = None,
        rank: int | None = None,
        world_size: int | None = None,
    ) -> None:
        super().__init__()
        if split_by not in ("shard", "sample"):
            raise ValueError(f"split_by must be 'shard' or 'sample', got {split_by!r}")
        self.urls = expand_urls(urls)
        if not self.urls:
            raise FileNotFoundError(f"no shards match {urls!r}")
        self.seed = seed
        self.shuffle = shuffle
        self.buffer = buffer
        self.split_by = split_by
        self.config = config or DecodeConfig(decode_images=decode)
        self.transform = transform
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0
        self.skipped: Counter = Counter()

    def set_epoch(self, epoch: int) -> None:
        """Reshuffle (when shuffle/buffer) for a new epoch, deterministically."""
        self.epoch = epoch

    def consumer(self) -> tuple[int, int]:
        """(index, count) of this consumer among nodes x workers."""
        rank, world = _node()
        rank = self.rank if self.rank is not None else rank
        world = self.world_size if self.world_size is not None else world
        worker, workers = _worker()
        return rank * workers + worker, world * workers

    def shard_order(self) -> list[str]:
        """All shards in this epoch's order (before splitting)."""
        urls = list(self.urls)
        if self.shuffle:
            random.Random(f"{self.seed}:{self.epoch}").shuffle(urls)
        return urls

    def my_shards(self) -> list[str]:
        """The shards this consumer reads."""
        index, count = self.consumer()
        urls = self.shard_order()
        return urls[index::count] if self.split_by == "shard" else urls

    def _samples(self) -> Iterator[Sample]:
        index, count = self.consumer()
        position = 0
        for url in self.my_shards():
            for sample in iter_shard(url, self.config, self.skipped):
                if self.split_by == "sample":
                    position += 1
                    if (position - 1) % count != index:
                        continue
                if self.transform is not None:
                    try:
                        sample = self.transform(sample)
                    except Exception:  # noqa: BLE001 - one bad sample must not end an epoch
                        self.skipped["transform_error"] += 1
                        continue
                yield sample

    def __iter__(self) -> Iterator[Sample]:
        stream = self._samples()
        if self.buffer <= 0:
            yield from stream
            return
        index, count = self.consumer()
        rng = random.Random(f"{self.seed}:{self.epoch}:{index}:{count}")
        pool: list[Sample] = []
        for sample in stream:
            if len(pool) < self.buffer:
                pool.append(sample)
                continue
            j = rng.randrange(len(pool))
            pool[j], sample = sample, pool[j]
            yield sample
        rng.shuffle(pool)
        yield from pool

    def stats(self) -> ShardStats:
        """Read everything once (this process's share) and return counts."""
        before = Counter(self.skipped)
        n = sum(1 for _ in self)
        return ShardStats(n, self.skipped - before)


# --------------------------------------------------------------------------------------------
# writing


def _encode_image(image: Any, image_format: str) -> tuple[bytes, str]:
    """PIL image / uint8 array / encoded bytes -> (bytes, extension)."""
    if isinstance(image, (bytes, bytearray)):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                fmt = (Image.open(io.BytesIO(image)).format or image_format).lower()
        except Exception:  # noqa: BLE001 - unreadable bytes are stored as given
            fmt = image_format
        return bytes(image), {"jpeg": "jpg"}.get(fmt, fmt)
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    if not isinstance(image, Image.Image):
        raise TypeError(f"image must be PIL, ndarray or bytes, got {type(image).__name__}")
    out = io.BytesIO()
    ext = {"jpeg": "jpg"}.get(image_format.lower(), image_format.lower())
    if ext == "jpg":
        image.convert("RGB").save(out, format="JPEG", quality=95)
    else:
        image.save(out, format={"png": "PNG", "webp": "WEBP"}[ext])
    return out.getvalue(), ext


def _members(sample: Sample, image_format: str) -> list[tuple[str, bytes]]:
    key = str(sample["key"])
    if "." in key.rsplit("/", 1)[-1]:
        raise ValueError(
            f"sample key {key!r} contains a dot (webdataset splits names at the first dot)"
        )
    members: list[tuple[str, bytes]] = []
    carousel = sample.get("images")
    if carousel and len(carousel) > 1:  # `<key>.<n>.<ext>`, in order (see module doc)
        for n, image in enumerate(carousel):
            payload, ext = _encode_image(image, image_format)
            members.append((f"{key}.{n}.{ext}", payload))
    elif carousel or sample.get("image") is not None:
        payload, ext = _encode_image(carousel[0] if carousel else sample["image"], image_format)
        members.append((f"{key}.{ext}", payload))
    if sample.get("video") is not None:
        video = bytes(sample["video"])
        ext = sniff_format(video)
        if ext is None:
            raise ValueError(f"sample {key!r}: video bytes are neither MP4 nor WebM")
        members.append((f"{key}.{ext}", video))
    if sample.get("text") is not None:
        members.append((f"{key}.txt", str(sample["text"]).encode("utf-8")))
    if sample.get("json") is not None:
        members.append((f"{key}.json", json.dumps(sample["json"], sort_keys=True).encode("utf-8")))
    for name, value in sample.items():  # any other extension given as bytes, e.g. "cls"
        if name not in (
            "key",
            "image",
            "images",
            "video",
            "text",
            "json",
            "shard",
            "item_id",
        ) and isinstance(value, (bytes, bytearray)):
            members.append((f"{key}.{name}", bytes(value)))
    return members


class _AtomicTar:
    """A tar written to a temp name and renamed on close (readers never see a partial shard)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.tmp = temp_sibling(path)
        self.tar = tarfile.open(self.tmp, mode="w", format=tarfile.USTAR_FORMAT)  # noqa: SIM115 - closed in close()
        self.count = 0

    def add(self, name: str, payload: bytes) -> None:
        info = tarfile.TarInfo(name)
        info.size, info.mtime, info.mode = len(payload), 0, 0o644  # fixed: reproducible bytes
        info.uname = info.gname = ""
        self.tar.addfile(info, io.BytesIO(payload))

    def close(self) -> None:
        self.tar.close()
        with open(self.tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(self.tmp, self.path)


def write_shards(
    samples: Iterable[Sample],
    pattern: str,
    maxcount: int = 1000,
    image_format: str = "jpg",
    start_index: int = 0,
) -> list[str]:
    """Write samples into tars named `pattern % index` (e.g. 'out/shard-%05d.tar').

    Each sample: key (no dots), and any of image (PIL / (H, W, 3) uint8 / encoded bytes, stored
    as-is when bytes), images (a list of those: a carousel, written `<key>.<n>.<ext>`), video
    (MP4 / WebM bytes), text (str), json (dict), other extensions as bytes. `maxcount` samples per
    shard. Returns the shard paths written, in order.
    """
    if "%" not in pattern:
        raise ValueError(f"pattern needs a %-format index, e.g. 'shard-%05d.tar'; got {pattern!r}")
    if maxcount < 1:
        raise ValueError("maxcount must be >= 1")
    paths: list[str] = []
    writer: _AtomicTar | None = None
    index = start_index
    seen: set[str] = set()
    try:
        for sample in samples:
            if writer is None or writer.count >= maxcount:
                if writer is not None:
                    writer.close()
                path = Path(pattern % index)
                path.parent.mkdir(parents=True, exist_ok=True)
                writer = _AtomicTar(path)
                paths.append(str(path))
                index += 1
            key = str(sample["key"])
            if key in seen:
                raise ValueError(f"duplicate sample key {key!r}")
            seen.add(key)
            for name, payload in _members(sample, image_format):
                writer.add(name, payload)
            writer.count += 1
    except BaseException:
        if writer is not None:
            writer.tar.close()
            writer.tmp.unlink(missing_ok=True)
            paths.pop()
        raise
    if writer is not None:
        writer.close()
    return paths


def _parse_scalar(value: str) -> Any:
    """CSV cell -> int/float when it is one, else the string (JSON stays typed for readers)."""
    try:
        return int(value)
    except ValueError:
        pass
    try:
        return float(value)
    except ValueError:
        return value


def _folder_media(folder: Path) -> dict[str, dict[str, Any]]:
    """key -> {"images": [paths in carousel order], "video": path | None} of a pack folder:
    `<key>.<ext>` (one image, the first by name when several), `<key>.<n>.<ext>` and `<key>/`
    (a sub-folder of images, by name) for carousels, `<key>.mp4|webm` for a video."""
    found: dict[str, dict[str, Any]] = {}
    for path in sorted(folder.iterdir()):
        stem, _, ext = path.name.partition(".")
        if stem.startswith("."):
            continue
        if path.is_dir():
            members = [
                p for p in sorted(path.iterdir())
                if p.is_file() and p.name.partition(".")[2].lower() in IMAGE_EXTENSIONS
            ]  # fmt: skip
            found.setdefault(path.name, {"images": {}, "video": None})["images"].update(
                {n: p for n, p in enumerate(members)}
            )
            continue
        kind = media_kind(ext) if path.is_file() else None
        if kind is None:
            continue
        entry = found.setdefault(stem, {"images": {}, "video": None})
        if kind[0] == "video":
            entry["video"] = entry["video"] or path
        else:
            entry["images"].setdefault(kind[1], path)  # same position twice: the first
    return {
        key: {"images": [e["images"][n] for n in sorted(e["images"])], "video": e["video"]}
        for key, e in found.items()
        if e["images"] or e["video"]
    }


def pack_folder(
    images: str | os.PathLike,
    texts: str | os.PathLike | None,
    pattern: str,
    maxcount: int = 1000,
    key_column: str | None = None,
) -> dict[str, Any]:
    """Pack the media of a folder plus CSV rows into shards.

    Media per key: `<key>.<jpg|jpeg|png|webp>` (a photo), `<key>.<n>.<ext>` or a sub-folder
    `<key>/` of images (a carousel, in index / name order), `<key>.mp4|webm` (a video; an item
    may have images too). CSV: a key column (`key`, else `item_id`, or `key_column`), an
    optional `text` column, and any other columns, which go to `<key>.json` (numbers parsed;
    `item_id` always present). Media bytes are stored unchanged, after a check: images decode
    (data.images), videos pass the video decoder's guards and yield a frame (data.video).
    Samples are written in key order. Returns counts: written, shards, photos, carousels,
    videos, media without a CSV row (still packed), CSV rows without media (not packed),
    unreadable media by reason (not packed).
    """
    from coldstart.data.video import VideoRejected, decode_video

    files = _folder_media(Path(images))
    rows: dict[str, dict[str, str]] = {}
    if texts is not None:
        with open(texts, newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            columns = reader.fieldnames or []
            column = key_column or ("key" if "key" in columns else "item_id")
            if column not in columns:
                raise ValueError(
                    f"{texts}: no key column (looked for {column!r}; columns {columns})"
                )
            for row in reader:
                key = (row.get(column) or "").strip()
                if key:
                    rows[key] = row
            key_col = column
    else:
        key_col = "key"
    counts: Counter = Counter()

    def checked(key: str) -> Sample | None:
        """The key's media as a sample (bytes), or None (counted) when one of them is bad."""
        media = files[key]
        payloads = [p.read_bytes() for p in media["images"]]
        try:
            for payload in payloads:
                decode_image(payload)
        except SkipSample as skip:
            counts[f"skipped_{skip.reason}"] += 1
            return None
        sample: Sample = {"key": key}
        if len(payloads) > 1:
            sample["images"] = payloads
        elif payloads:
            sample["image"] = payloads[0]
        if media["video"] is not None:
            sample["video"] = media["video"].read_bytes()
            try:
                decode_video(sample["video"], 1)
            except VideoRejected as err:
                counts[f"skipped_{err.reason}"] += 1
                return None
        counts["videos" if "video" in sample else "_"] += 1
        counts["carousels" if len(payloads) > 1 else "photos" if payloads else "_"] += 1
        return sample

    def samples() -> Iterator[Sample]:
        for key in sorted(files, key=lambda k: (len(k), k) if k.isdigit() else (1 << 30, k)):
            sample = checked(key)
            if sample is None:
                continue
            row = rows.get(key)
            if row is None:
                counts["images_without_row"] += 1
                meta: dict[str, Any] = {"item_id": _parse_scalar(key)}
                text = None
            else:
                text = (row.get("text") or "").strip() or None
                meta = {
                    k: _parse_scalar(v)
                    for k, v in row.items()
                    if k not in (key_col, "text") and k is not None and v not in (None, "")
                }
                meta.setdefault("item_id", _parse_scalar(key))
            counts["written"] += 1
            yield {**sample, "text": text, "json": meta}

    paths = write_shards(samples(), pattern, maxcount=maxcount)
    return {
        "shards": paths,
        "written": counts["written"],
        "photos": counts["photos"],
        "carousels": counts["carousels"],
        "videos": counts["videos"],
        "images_without_row": counts["images_without_row"],
        "rows_without_image": len(set(rows) - set(files)),
        "skipped": {
            k.removeprefix("skipped_"): v for k, v in counts.items() if k.startswith("skipped_")
        },
    }


def media_types(urls: str | os.PathLike | Iterable[str | os.PathLike]) -> dict[Any, str]:
    """item_id -> media type (data.schema.media_type_of: photo, carousel or video) of every
    sample in the shards, from its members' names (nothing decoded); unreadable shards count
    as absent. What a catalogue without a media_type column takes from its media."""
    from coldstart.data.schema import media_type_of

    out: dict[Any, str] = {}
    counts: Counter = Counter()
    for path in expand_urls(urls):
        for key, raw in _iter_members(path, counts):
            kinds = [k[0] for ext in raw if (k := media_kind(ext)) is not None]
            if not kinds:
                continue
            meta = None
            if "json" in raw:
                with contextlib.suppress(ValueError, UnicodeDecodeError):
                    meta = json.loads(raw["json"])
            item = _item_id(key, meta if isinstance(meta, dict) else None)
            out[item] = media_type_of(kinds.count("image"), "video" in kinds)
    return out


def media_summary(
    urls: str | os.PathLike | Iterable[str | os.PathLike], decode: bool = True
) -> dict[str, Any]:
    """What shards hold, by media type: photos, carousels (images per item), videos (format,
    codec, frame size and duration from each container's header; no frame decoded) and items
    without media; samples that do not read are counted by reason. For `coldstart data inspect`."""
    from statistics import median

    from coldstart.data.video import VideoLimits, VideoRejected, probe_video

    reader = ShardReader(
        urls, config=DecodeConfig(decode_images=decode, require_image=False, accept_video=True)
    )
    kinds: Counter = Counter()
    carousel_sizes: list[int] = []
    seconds: list[float] = []
    formats: Counter = Counter()
    codecs: Counter = Counter()
    sizes: Counter = Counter()
    rejected: Counter = Counter()
    samples = 0
    for sample in reader:
        samples += 1
        n_images = len(sample.get("images") or sample.get("images_bytes") or [])
        if n_images > 1:
            kinds["carousel"] += 1
            carousel_sizes.append(n_images)
        elif n_images == 1:
            kinds["photo"] += 1
        if "video_bytes" in sample:
            kinds["video"] += 1
            try:  # the header only: durations of long videos too, no limit applied
                info = probe_video(sample["video_bytes"], VideoLimits(None, None))
            except VideoRejected as err:
                rejected[err.reason] += 1
                continue
            formats[info.format] += 1
            codecs[info.codec] += 1
            sizes[f"{info.width}x{info.height}"] += 1
            if info.seconds is not None:
                seconds.append(info.seconds)
        elif not n_images:
            kinds["none"] += 1
    duration = (
        {
            "min": round(min(seconds), 3),
            "median": round(median(seconds), 3),
            "max": round(max(seconds), 3),
            "total": round(sum(seconds), 3),
        }
        if seconds
        else None
    )
    return {
        "shards": len(reader.urls),
        "samples": samples,
        "skipped": dict(reader.skipped),
        "media": {k: kinds[k] for k in ("photo", "carousel", "video", "none")},
        "carousel_images": {
            "min": min(carousel_sizes),
            "max": max(carousel_sizes),
            "mean": round(sum(carousel_sizes) / len(carousel_sizes), 2),
        }
        if carousel_sizes
        else None,  # fmt: skip
        "videos": {
            "seconds": duration,
            "formats": dict(formats),
            "codecs": dict(codecs),
            "frame_sizes": dict(sizes.most_common(5)),
            "unreadable": dict(rejected),
        },
    }
