"""What the browsing page shows about an item: catalogue fields by id, and its image read in
place from webdataset shards.

- `Catalogue`: an item table (Parquet/CSV file, or a dataset from `data.generic.load_dataset`)
  looked up by item id; rows become JSON-safe dicts on request, so a large catalogue costs one
  DataFrame plus an id -> row map.
- `MediaStore`: an id -> (shard, member offset, size) map built at start from tar headers
  (JSON members are read for their `item_id`); an image is one `pread` of the shard, never
  extracted to disk. Uncompressed tars only: a compressed shard has no member offsets.
- `ByteLRU`: a thread-safe LRU of encoded thumbnails, bounded in bytes.

Ids are typed as the index types them (`id_type` "int" or "str"), so a route's id, once
normalised by the index, finds its row here.
"""

from __future__ import annotations

import json
import logging
import math
import os
import tarfile
import threading
from collections import Counter, OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

ItemId = int | str
TITLE_COLUMNS = ("title", "text")  # the first present and non-empty one is the item's title
MAX_JSON_MEMBER = 64 << 10  # a sample's JSON above this is not item metadata: skipped
_COMPRESSED_MAGIC = {
    b"\x1f\x8b": "gzip",
    b"BZh": "bzip2",
    b"\xfd7zXZ": "xz",
    b"\x28\xb5\x2f\xfd": "zstd",
}


def typed_id(value: Any, id_type: str) -> ItemId:
    """A catalogue or shard id in the index's id type; ValueError when it has none."""
    if isinstance(value, (np.integer, np.str_)):
        value = value.item()
    if id_type == "int":
        if isinstance(value, bool) or isinstance(value, float) and not value.is_integer():
            raise ValueError(f"item id {value!r} is not an integer")
        return int(str(value).strip()) if isinstance(value, str) else int(value)
    if id_type != "str":
        raise ValueError(f"id_type must be 'int' or 'str', got {id_type!r}")
    return str(value)


def json_safe(value: Any) -> Any:
    """A catalogue cell as JSON: lists for arrays, None for NaN/NaT/missing, str for the rest."""
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or value is pd.NaT:
        return None
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    if isinstance(value, bytes):
        return None  # binary columns are not for display
    return str(value)


# --------------------------------------------------------------------------------- catalogue
class Catalogue:
    """Catalogue rows by item id. `get(id)` -> {"id", "title", "fields"} or None."""

    def __init__(self, items: pd.DataFrame, id_type: str = "int", source: str = "") -> None:
        if "item_id" not in items.columns:
            raise ValueError(
                f"catalogue {source or ''} has no item_id column (columns: {list(items.columns)}); "
                "map one with a dataset YAML config (see configs/datasets/example.yaml)"
            )
        self.items = items.reset_index(drop=True)
        self.id_type = id_type
        self.source = source
        self._row: dict[ItemId, int] = {}
        self.skipped: Counter = Counter()
        for row, raw in enumerate(self.items["item_id"].tolist()):
            try:
                key = typed_id(raw, id_type)
            except (TypeError, ValueError):
                self.skipped["bad_id"] += 1
                continue
            if key in self._row:
                self.skipped["duplicate_id"] += 1
                continue
            self._row[key] = row
        self.title_column = next((c for c in TITLE_COLUMNS if c in self.items.columns), None)

    @classmethod
    def load(cls, source: str | os.PathLike, id_type: str = "int") -> Catalogue:
        """From items.parquet / a CSV or TSV table, a dataset YAML config, or a dataset name
        (`movielens`, `synthetic`) understood by `data.generic.load_dataset`."""
        text = str(source)
        suffix = Path(text).suffix.lower()
        if suffix in (".parquet", ".pq", ".csv", ".tsv", ".tab"):
            from coldstart.data.io import read_any

            if not Path(text).is_file():
                raise FileNotFoundError(f"catalogue file {text} does not exist")
            items = read_any(text)
        else:
            from coldstart.data.generic import load_dataset

            items = load_dataset(text).items
        return cls(items, id_type, text)

    def __len__(self) -> int:
        return len(self._row)

    def __contains__(self, item_id: object) -> bool:
        return item_id in self._row

    def get(self, item_id: ItemId) -> dict[str, Any] | None:
        row = self._row.get(item_id)
        if row is None:
            return None
        record = self.items.iloc[row]
        fields = {
            str(name): json_safe(record[name]) for name in self.items.columns if name != "item_id"
        }
        fields = {k: v for k, v in fields.items() if v is not None and v != "" and v != []}
        title = None
        for column in TITLE_COLUMNS:
            if isinstance(fields.get(column), str) and fields[column].strip():
                title = fields[column]
                break
        return {"id": item_id, "title": title, "fields": fields}

    def media_keys(self) -> dict[str, ItemId]:
        """media_key -> item id, for shards whose keys are not the item ids."""
        if "media_key" not in self.items.columns:
            return {}
        out: dict[str, ItemId] = {}
        keys = self.items["media_key"].tolist()
        for item_id, row in self._row.items():
            key = keys[row]
            if isinstance(key, str) and key:
                out.setdefault(key, item_id)
        return out


# --------------------------------------------------------------------------------- media
@dataclass(frozen=True)
class MediaRef:
    """Where an item's image lies: bytes [offset, offset + size) of shards[shard]."""

    shard: int
    offset: int
    size: int
    ext: str

    @property
    def video(self) -> bool:
        """An MP4 / WebM member: thumbnails show its poster frame (index.browse)."""
        return self.ext in ("mp4", "webm")


class MediaStore:
    """Item images read in place from uncompressed webdataset tar shards."""

    def __init__(self, shards: list[str], refs: dict[ItemId, MediaRef], report: dict) -> None:
        self.shards = shards
        self.refs = refs
        self.report = report
        self._fds: dict[int, int] = {}
        self._lock = threading.Lock()

    @classmethod
    def scan(
        cls,
        urls: str | os.PathLike | Iterable[str | os.PathLike],
        id_type: str = "int",
        key_to_id: Mapping[str, ItemId] | None = None,
    ) -> MediaStore:
        """Index the image members of every shard (headers only, plus small JSON members).

        An item's id is the catalogue's media_key -> item_id mapping (`key_to_id`) when it has
        the key, else what the embedding job calls it: the sample JSON's `item_id`, else the
        key (an int when all digits). The first image of
        an id wins; later ones are counted as duplicates.
        """
        from coldstart.data.shards import _item_id, _split_name, expand_urls, media_kind

        shards = expand_urls(urls)
        if not shards:
            raise FileNotFoundError(f"no media shards match {urls!r}")
        key_to_id = key_to_id or {}
        refs: dict[ItemId, MediaRef] = {}
        counts: Counter = Counter()
        for number, path in enumerate(shards):
            _check_uncompressed(path)
            images: dict[str, MediaRef] = {}
            json_ids: dict[str, Any] = {}
            with tarfile.open(path, mode="r:") as tar:
                while True:
                    try:
                        member = tar.next()
                    except (tarfile.TarError, OSError, EOFError) as err:
                        counts["truncated_shard"] += 1
                        log.warning("%s: %s after %d images", path, err, len(images))
                        break
                    if member is None:
                        break
                    tar.members.clear()  # we keep our own refs: memory stays flat on huge tars
                    if not member.isfile():
                        continue
                    key, ext = _split_name(member.name)
                    if not ext or key.rsplit("/", 1)[-1].startswith("."):
                        continue
                    kind = media_kind(ext)  # a photo, a carousel's image, or a video
                    if kind is not None and (
                        key not in images or images[key].video and kind[0] == "image"
                    ):  # an image wins over a video (its poster frame is the fallback)
                        images[key] = MediaRef(number, member.offset_data, member.size, ext)
                    elif ext == "json" and member.size <= MAX_JSON_MEMBER:
                        handle = tar.extractfile(member)
                        try:
                            meta = json.loads(handle.read()) if handle is not None else None
                        except (ValueError, UnicodeDecodeError):
                            counts["bad_json"] += 1
                            continue
                        if isinstance(meta, dict) and "item_id" in meta:
                            json_ids[key] = meta["item_id"]
            for key, ref in images.items():
                base = key.rsplit("/", 1)[-1]
                raw = key_to_id.get(key, key_to_id.get(base))
                if raw is None:  # as the embedding job names it: JSON item_id, else the key
                    raw = _item_id(key, {"item_id": json_ids[key]} if key in json_ids else None)
                try:
                    item_id = typed_id(raw, id_type)
                except (TypeError, ValueError):
                    counts["unmapped_key"] += 1
                    continue
                if item_id in refs:
                    counts["duplicate_id"] += 1
                    continue
                refs[item_id] = ref
        videos = sum(1 for ref in refs.values() if ref.video)
        report = {"shards": len(shards), "images": len(refs) - videos, "skipped": dict(counts)}
        if videos:  # items whose thumbnail is a video's poster frame
            report["videos"] = videos
        return cls(shards, refs, report)

    def __len__(self) -> int:
        return len(self.refs)

    def __contains__(self, item_id: object) -> bool:
        return item_id in self.refs

    def read(self, item_id: ItemId) -> bytes:
        """The encoded image bytes of an item (KeyError when it has none)."""
        ref = self.refs[item_id]
        fd = self._fd(ref.shard)
        data = os.pread(fd, ref.size, ref.offset)  # positionless: safe from many threads
        if len(data) != ref.size:
            raise OSError(f"{self.shards[ref.shard]} is shorter than its index says")
        return data

    def _fd(self, shard: int) -> int:
        with self._lock:
            fd = self._fds.get(shard)
            if fd is None:
                fd = self._fds[shard] = os.open(self.shards[shard], os.O_RDONLY)
            return fd

    def close(self) -> None:
        with self._lock:
            for fd in self._fds.values():
                os.close(fd)
            self._fds.clear()


def _check_uncompressed(path: str) -> None:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"media shard {path} does not exist")
    with open(path, "rb") as handle:
        head = handle.read(6)
    for magic, name in _COMPRESSED_MAGIC.items():
        if head.startswith(magic):
            raise ValueError(
                f"media shard {path} is {name}-compressed: images are read in place, which needs "
                "uncompressed tar shards (repack with `coldstart data pack`)"
            )


# --------------------------------------------------------------------------------- cache
class ByteLRU:
    """Least-recently-used map of bytes values, bounded by their total size."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.size = 0
        self.hits = self.misses = 0
        self._data: OrderedDict[Any, bytes] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Any) -> bytes | None:
        with self._lock:
            value = self._data.get(key)
            if value is None:
                self.misses += 1
                return None
            self._data.move_to_end(key)
            self.hits += 1
            return value

    def put(self, key: Any, value: bytes) -> None:
        if len(value) > self.max_bytes:
            return
        with self._lock:
            old = self._data.pop(key, None)
            if old is not None:
                self.size -= len(old)
            self._data[key] = value
            self.size += len(value)
            while self.size > self.max_bytes:
                _, evicted = self._data.popitem(last=False)
                self.size -= len(evicted)

    def __len__(self) -> int:
        return len(self._data)


__all__ = ["ByteLRU", "Catalogue", "MediaRef", "MediaStore", "json_safe", "typed_id"]
