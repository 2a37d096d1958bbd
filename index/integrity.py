"""Checksums for stored index files: a FAISS index directory's manifest seals itself and names
the sha256 and size of every snapshot file; a Milvus collection's own record holds its count
and an order-free digest of its (id, vector) pairs.

Damage found here is reported as `IndexDamaged` (a StoreCorrupt: `coldstart serve` exits 2
with the message, no traceback): which file, what is wrong, and what to do.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from coldstart.data.embeddings import sha256_file
from coldstart.index.backend import StoreCorrupt

SEAL = "manifest_sha256"  # sha256 of the manifest's canonical JSON without this key
FILES = "files"  # {path relative to the directory: {"sha256": hex, "bytes": n}}
REBUILD = (
    "Refusing to open: serving it could return wrong results. Restore the directory from a "
    "backup or rebuild it (`coldstart index build`)."
)


class IndexDamaged(StoreCorrupt):
    """A stored file does not match its recorded checksum, size or content."""

    def __init__(self, path: str | os.PathLike, what: str, hint: str = REBUILD) -> None:
        self.path = Path(path)
        self.what = what
        super().__init__(f"{path}: {what}. {hint}")


def _canonical(manifest: dict[str, Any]) -> bytes:
    body = {k: v for k, v in manifest.items() if k != SEAL}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def seal(manifest: dict[str, Any]) -> dict[str, Any]:
    """A copy of `manifest` carrying the checksum of its own content."""
    return {**manifest, SEAL: hashlib.sha256(_canonical(manifest)).hexdigest()}


def load_manifest(path: Path) -> tuple[dict[str, Any], bool]:
    """(manifest, sealed). Raises IndexDamaged when it is not JSON or its seal does not match;
    a manifest without a seal (written before checksums) is returned with sealed=False."""
    try:
        raw = json.loads(path.read_bytes())
    except (UnicodeDecodeError, ValueError) as err:
        raise IndexDamaged(path, f"not a readable manifest ({err})") from err
    if not isinstance(raw, dict):
        raise IndexDamaged(path, "not a readable manifest (not a JSON object)")
    if SEAL not in raw:
        return raw, False
    found = hashlib.sha256(_canonical(raw)).hexdigest()
    if found != raw[SEAL]:
        raise IndexDamaged(
            path, f"content does not match its checksum ({SEAL} {raw[SEAL]!r}, content {found})"
        )
    return raw, True


def digests(directory: Path, names: Iterable[str]) -> dict[str, dict[str, Any]]:
    """{name: {"sha256", "bytes"}} of files under `directory` (names relative to it)."""
    return {
        name: {"sha256": sha256_file(directory / name), "bytes": (directory / name).stat().st_size}
        for name in names
    }


def verify_files(directory: Path, expected: dict[str, dict[str, Any]]) -> None:
    """Each file exists with its recorded size and sha256; IndexDamaged names the first that
    does not."""
    for name, want in expected.items():
        path = directory / name
        if not path.is_file():
            raise IndexDamaged(path, "missing (named in manifest.json)")
        size = path.stat().st_size
        if size != want["bytes"]:
            raise IndexDamaged(path, f"{size} bytes, {want['bytes']} recorded: truncated or grown")
        found = sha256_file(path)
        if found != want["sha256"]:
            raise IndexDamaged(
                path, f"sha256 {found} does not match the recorded {want['sha256']}: damaged"
            )


def pair_digest(ids: Iterable[Any], vectors: np.ndarray) -> int:
    """Order-free digest of (id, vector) pairs: the sum mod 2**64 of a 64-bit hash per pair,
    so it can be updated per write (add the new pair, subtract the old) and compared with
    a scan in any order. Vectors are hashed as float32 bytes."""
    vecs = np.ascontiguousarray(vectors, dtype="<f4")
    total = 0
    for item, row in zip(ids, vecs, strict=True):
        h = hashlib.blake2b(digest_size=8)
        key = f"i{int(item)}" if isinstance(item, int | np.integer) else f"s{item}"
        h.update(key.encode("utf-8", "surrogatepass"))
        h.update(row.tobytes())
        total += int.from_bytes(h.digest(), "little")
    return total % (1 << 64)
