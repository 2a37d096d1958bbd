"""Cost of the high-water mark (issue 23), and SQLite as the durable part, in one run.

    python benchmarks/durability.py                 # 2,000 one-item upserts x 5 rounds
    python benchmarks/durability.py --upserts 500 --rounds 3 --dim 64

One JSON line per variant, then one summary line:
{"bench": "durability", "variant", "upserts_per_s" (median of rounds), "rounds": [...]}
Every variant is `FaissStore.upsert` of one item (validation, log, apply), sequentially, on
fresh stores; variants are interleaved round by round so load from other work hits them alike:
- `wal_mark`: as shipped: log append + fsync, the mark written, fdatasync'd at most every
  MARK_SYNC_INTERVAL_S
- `wal_mark_strict`: the mark fdatasync'd on every write (the interval set to 0)
- `wal_only`: the mark switched off: the write path before issue 23
- `sqlite_log`: the store's log replaced by a SQLite table in WAL mode with synchronous=FULL
  (one transaction per write: lsn, ids JSON, float32 blob), the rest unchanged
The summary has `mark_cost_pct` and `strict_mark_cost_pct` (throughput lost against
`wal_only`), `sqlite_vs_wal_only_pct`, `verify_s` / `open_s` (checksum verification and open of
the written index) and `sqlite_deleted_wal`: what SQLite does when its -wal file is lost before
a checkpoint (rows kept of 100 committed, and whether it complained).
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

VARIANTS = ("wal_mark", "wal_mark_strict", "wal_only", "sqlite_log")


class _SqliteLog:
    """The WriteAheadLog calls the store makes, on a SQLite table."""

    def __init__(self, path: Path) -> None:
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.execute("CREATE TABLE log (lsn INTEGER PRIMARY KEY, op INT, ids TEXT, vec BLOB)")

    def append(self, record: Any) -> None:
        vec = None if record.vectors is None else record.vectors.astype("<f4").tobytes()
        self.db.execute("BEGIN")
        row = (record.lsn, record.op, json.dumps(record.ids), vec)
        self.db.execute("INSERT INTO log VALUES (?, ?, ?, ?)", row)
        self.db.execute("COMMIT")

    def close(self) -> None:
        self.db.close()


def _round(directory: Path, vectors: np.ndarray, variant: str) -> float:
    from coldstart.index.config import IndexConfig, StoreConfig
    from coldstart.index.store import FaissStore
    from coldstart.index.vector_index import VectorIndex

    dim = vectors.shape[1]
    index = VectorIndex.build([0], np.ones((1, dim), np.float32), IndexConfig(factory="Flat"))
    store = FaissStore.create(directory, index, StoreConfig(snapshot_every_ops=10**9))
    wal = store._wal
    if variant == "wal_mark_strict":
        wal.mark.sync_interval_s = 0.0
    elif variant != "wal_mark":
        wal.mark.close()
        wal.mark = None
    if variant == "sqlite_log":
        wal.close()
        store._wal = _SqliteLog(directory / "log.sqlite")
    start = time.perf_counter()
    for i, row in enumerate(vectors):
        store.upsert([i + 1], row[None, :])
    elapsed = time.perf_counter() - start
    store._wal.close()
    return len(vectors) / elapsed


def _sqlite_deleted_wal(workdir: Path) -> dict[str, Any]:
    """Commit 100 rows in WAL mode (synchronous=FULL), keep the database file but not its
    un-checkpointed -wal (deleted, or lost with a copy), reopen: what is left, any complaint?"""
    path = workdir / "lost.db"
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("PRAGMA wal_autocheckpoint=0")
    db.execute("CREATE TABLE t (x INTEGER)")
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    for i in range(100):
        db.execute("INSERT INTO t VALUES (?)", (i,))
    copy = workdir / "copy.db"
    copy.write_bytes(path.read_bytes())
    db.close()
    again = sqlite3.connect(copy)
    try:
        check = again.execute("PRAGMA integrity_check").fetchone()[0]
        rows = again.execute("SELECT count(*) FROM t").fetchone()[0]
    except sqlite3.DatabaseError as err:
        return {"rows_kept": None, "complained": str(err)}
    finally:
        again.close()
    return {"rows_kept": rows, "integrity_check": check, "complained": check != "ok"}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--upserts", type=int, default=2000, help="one-item upserts per round")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--workdir", help="where stores are written (default: a temp dir)")
    args = p.parse_args(argv)
    from coldstart.index.store import FaissStore, verify

    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((args.upserts, args.dim)).astype(np.float32)
    results: dict[str, list[float]] = {v: [] for v in VARIANTS}
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        work = Path(tmp)
        for r in range(args.rounds):
            for variant in VARIANTS if r % 2 == 0 else reversed(VARIANTS):
                results[variant].append(_round(work / f"{variant}-{r}", vectors, variant))
        written = work / "wal_mark-0"
        start = time.perf_counter()
        verify(written)
        verify_s = time.perf_counter() - start
        start = time.perf_counter()
        FaissStore.open(written).close(snapshot=False)
        open_s = time.perf_counter() - start
        lost = _sqlite_deleted_wal(work)
    med = {k: statistics.median(v) for k, v in results.items()}
    for variant, rounds in results.items():
        row = {"bench": "durability", "variant": variant, "upserts": args.upserts}
        row.update(upserts_per_s=round(med[variant], 1), rounds=[round(x, 1) for x in rounds])
        print(json.dumps(row))

    def pct(a: str, b: str) -> float:
        return round(100 * (med[a] / med[b] - 1), 1)

    summary = {
        "bench": "durability",
        "variant": "summary",
        "dim": args.dim,
        "mark_cost_pct": -pct("wal_mark", "wal_only"),
        "strict_mark_cost_pct": -pct("wal_mark_strict", "wal_only"),
        "sqlite_vs_wal_only_pct": pct("sqlite_log", "wal_only"),
        "verify_s": round(verify_s, 4),
        "open_s": round(open_s, 4),
        "sqlite_deleted_wal": lost,
    }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
