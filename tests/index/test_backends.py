"""One contract, every backend: FAISS (+WAL, snapshots) and Milvus (Lite file; a server URI).

Each test runs against real stores: a FAISS index directory and a real Milvus Lite database
(pymilvus + milvus-lite, the `[milvus]` extra; skipped with a reason when it is absent).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from coldstart.data.synthetic import clustered_vectors
from coldstart.index.backend import (
    BackendUnavailable,
    InvalidInput,
    StoreSchema,
    UnknownItem,
    VectorStore,
    exact_search,
)
from coldstart.index.config import IndexConfig, StoreConfig
from coldstart.index.store import FaissStore
from tests.index.conftest import REPO_ROOT, free_port, milvus_server

DIM = 16

try:
    import milvus_lite  # noqa: F401
    import pymilvus  # noqa: F401

    HAVE_MILVUS = True
except ImportError:  # pragma: no cover - the [milvus] extra is part of `make test`
    HAVE_MILVUS = False

needs_milvus = pytest.mark.skipif(
    not HAVE_MILVUS, reason="pymilvus/milvus-lite not installed: pip install 'coldstart[milvus]'"
)

# (backend, index type) -> small-data build and search parameters
KINDS = {
    "faiss-flat": ("faiss", "Flat"),
    "faiss-ivf": ("faiss", "IVF{nlist},Flat"),
    "faiss-hnsw": ("faiss", "HNSW16"),
    "milvus-flat": ("milvus", "FLAT"),
    "milvus-ivf": ("milvus", "IVF_FLAT"),
    "milvus-hnsw": ("milvus", "HNSW"),
}
EXACT = ("faiss-flat", "milvus-flat")
APPROX = ("faiss-ivf", "faiss-hnsw", "milvus-ivf", "milvus-hnsw")


def _param(kind: str) -> Any:
    marks = [needs_milvus] if kind.startswith("milvus") else []
    return pytest.param(kind, id=kind, marks=marks)


def make_store(
    kind: str,
    root: Path,
    ids: list,
    vectors: np.ndarray,
    metric: str = "ip",
    normalize: bool = True,
    id_type: str = "int",
    nprobe: int = 8,
    nlist: int = 16,
) -> VectorStore:
    """A new store of `kind` under `root` holding (ids, vectors)."""
    backend, index_type = KINDS[kind]
    if backend == "faiss":
        config = IndexConfig(
            factory=index_type.format(nlist=nlist),
            metric=metric,
            normalize=normalize,
            id_type=id_type,
            nprobe=nprobe,
            ef_search=128,
            replica="none",
        )
        return FaissStore.build(ids, vectors, root / "idx", config, StoreConfig(fsync=True))
    from coldstart.index.milvus_store import MilvusConfig, MilvusStore

    config = MilvusConfig(
        uri=str(root / "items.db"),
        index_type=index_type,
        metric=metric,
        normalize=normalize,
        id_type=id_type,
        nlist=nlist,
        nprobe=nprobe,
        hnsw_m=16,
        ef_search=128,
    )
    return MilvusStore.build(ids, vectors, config)


def reopen(store: VectorStore, **search: Any) -> VectorStore:
    """Close `store` cleanly and open it again (search params may change, data may not)."""
    if store.backend == "faiss":
        directory = store.directory  # type: ignore[attr-defined]
        store.close()
        return FaissStore.open(directory, StoreConfig(fsync=True), overrides=search or None)
    from coldstart.index.milvus_store import MilvusConfig, MilvusStore

    config = MilvusConfig.from_dict({**store.config.to_dict(), **search})  # type: ignore[attr-defined]
    store.close()
    return MilvusStore.open(config)


@pytest.fixture
def data() -> tuple[np.ndarray, np.ndarray]:
    """(base (600, DIM), queries (50, DIM)): clustered, unit length."""
    vectors = clustered_vectors(650, DIM, n_clusters=12, seed=3)[0]
    return vectors[:600], vectors[600:]


@pytest.fixture
def store_of(tmp_path: Path) -> Any:
    """make_store bound to tmp_path; closes what it made."""
    made: list[VectorStore] = []

    def factory(kind: str, ids: list, vectors: np.ndarray, **kw: Any) -> VectorStore:
        store = make_store(kind, tmp_path / f"s{len(made)}", ids, vectors, **kw)
        made.append(store)
        return store

    yield factory
    for store in made:
        with contextlib.suppress(Exception):  # reopen() already closed some
            store.close()


# --------------------------------------------------------------------------- basic contract
@pytest.mark.parametrize("kind", [_param(k) for k in KINDS])
def test_upsert_get_search_delete(kind: str, store_of: Callable, data: Any) -> None:
    base, queries = data
    store = store_of(kind, list(range(600)), base)
    assert isinstance(store, VectorStore)
    assert (store.dim, store.metric, store.count()) == (DIM, "ip", 600)
    # get returns what was stored (unit length: the store normalizes), in the order asked
    np.testing.assert_allclose(store.get([5, 3]), base[[5, 3]], atol=1e-6)
    # an item's own vector finds it first; scores are inner products, best first
    result = store.search(base[:20], 5)
    assert [row[0] for row in result.ids] == list(range(20))
    for row in result.scores:
        assert row[0] == pytest.approx(1.0, abs=1e-5) and np.all(np.diff(row) <= 1e-6)
    # upsert replaces: same id, new vector; a new id is searchable at once
    lsn0 = store.lsn
    lsn1 = store.upsert([7, 1000], np.stack([queries[0], queries[1]]))
    assert lsn1 > lsn0 and store.count() == 601
    np.testing.assert_allclose(store.get([7])[0], queries[0], atol=1e-6)
    assert store.search(queries[1], 1).ids == [[1000]]
    assert store.contains([7, 1000, 99999]) == [True, True, False]
    # delete: unknown ids ignored, removed ids gone from get and search
    removed, lsn2 = store.delete([7, 7, 424242])
    assert removed == 1 and lsn2 > lsn1 and store.count() == 600
    with pytest.raises(UnknownItem):
        store.get([7])
    assert 7 not in store.search(queries[0], 20).ids[0]
    assert store.delete([7]) == (0, lsn2)  # nothing to do: no new write
    # k beyond the item count returns what there is (exact) or what the probed cells hold
    many = store.search(queries[0], 5000).ids[0]
    assert len(set(many)) == len(many) and (len(many) == 600 or kind in APPROX)


@pytest.mark.parametrize("kind", [_param(k) for k in EXACT])
@pytest.mark.parametrize("metric", ["ip", "l2"])
def test_exact_scores_and_id_filter(kind: str, metric: str, store_of: Callable, data: Any):
    base, queries = data
    raw = base * np.linspace(0.5, 2.0, len(base), dtype=np.float32)[:, None]  # varied norms
    store = store_of(kind, list(range(600)), raw, metric=metric, normalize=False)
    got = store.search(queries, 10)
    scores, rows = exact_search(raw, queries, 10, metric)
    assert got.ids == rows.tolist()
    np.testing.assert_allclose(np.stack(got.scores), scores, rtol=1e-4, atol=1e-4)
    # a candidate filter: only those ids, ranked exactly; unknown ids ignored
    allowed = [3, 50, 51, 400, 599, 123456]
    sub = store.search(queries, 3, ids=allowed)
    s_scores, s_rows = exact_search(raw[allowed[:5]], queries, 3, metric)
    assert sub.ids == [[allowed[r] for r in row] for row in s_rows]
    np.testing.assert_allclose(np.stack(sub.scores), s_scores, rtol=1e-4, atol=1e-4)
    assert store.search(queries[:2], 3, ids=[]).ids == [[], []]


@pytest.mark.parametrize("kind", [_param(k) for k in EXACT])
def test_ids_round_trip_exactly(kind: str, store_of: Callable, data: Any) -> None:
    base, _ = data
    ints = [-(2**63), 2**63 - 1, 0, -1]
    store = store_of(kind, ints, base[:4])
    assert store.search(base[:4], 1).ids == [[i] for i in ints]
    assert store.contains([str(2**63 - 1), "-1"]) == [True, True]  # "12" means 12
    np.testing.assert_allclose(store.get([-(2**63)])[0], base[0], atol=1e-6)
    strs = [
        'q"uote',
        "back\\slash",
        "it's",
        "a' or id != '",
        'b" or id != "',
        "é ü 北京",
        "\U0001f600",
        "x" * 512,
        " padded ",
        "12",
    ]
    store = store_of(kind, strs, base[: len(strs)], id_type="str")
    assert store.search(base[: len(strs)], 1).ids == [[s] for s in strs]
    assert store.contains(strs + ["b"]) == [True] * len(strs) + [False]
    np.testing.assert_allclose(store.get(strs), base[: len(strs)], atol=1e-6)
    # a quote in an id must not widen a filter or a delete (no expression injection)
    assert store.search(base[:1], 10, ids=["a' or id != '"]).ids == [["a' or id != '"]]
    assert store.delete(['b" or id != "'])[0] == 1 and store.count() == len(strs) - 1
    store = reopen(store)
    assert store.count() == len(strs) - 1
    assert store.search(base[:1], 1).ids == [['q"uote']]


@pytest.mark.parametrize("kind", [_param(k) for k in ("faiss-flat", "faiss-hnsw", *EXACT[1:])])
def test_ids_lists_every_live_item_after_writes_deletes_and_reopen(
    kind: str, store_of: Callable, data: Any
) -> None:
    base, queries = data
    store = store_of(kind, list(range(500)), base[:500])
    assert sorted(store.ids()) == list(range(500))
    store.upsert([3, 1000, -(2**63)], queries[:3])  # a replaced id is listed once
    store.delete([0, 1, 2, 424242])
    want = sorted([*range(3, 500), 1000, -(2**63)])
    got = store.ids()
    assert sorted(got) == want and len(got) == store.count() == len(want)
    assert all(type(i) is int for i in got)  # canonical ids, as search returns them
    store = reopen(store)
    assert sorted(store.ids()) == want
    store.delete(want)
    assert store.ids() == [] and store.count() == 0
    # string ids come back exactly (quotes, unicode, 512 characters); the largest ids end in
    # a quote and a backslash (a listing paged by id must escape them)
    strs = ['q"uote', "it's", "é ü 北京", "x" * 512, "12", '\U0001f600"', "\U0001f601\\"]
    store = store_of(kind, strs, base[: len(strs)], id_type="str")
    store.delete(["it's"])
    assert sorted(reopen(store).ids()) == sorted(set(strs) - {"it's"})


@needs_milvus
def test_milvus_lists_and_caps_beyond_one_search_window(tmp_path: Path) -> None:
    """More items than Milvus' 16,384-row window: ids() pages through them all; a search
    beyond the window is refused with the limit named (a server would refuse it too)."""
    from coldstart.index.backend import search_cap

    n = 16_500
    vectors = clustered_vectors(n, 4, n_clusters=8, seed=1)[0]
    store = make_store("milvus-flat", tmp_path, list(range(n)), vectors)
    try:
        # sealed segments (the build flushed) and growing ones (writes since), pages across both
        store.upsert([-7, n + 5, 3], vectors[:3])
        store.delete([0, n - 1])
        want = sorted([*range(1, n - 1), -7, n + 5])
        got = store.ids()
        assert len(got) == len(want) and sorted(got) == want
        store = reopen(store)  # the open's integrity scan pages through them too
        assert sorted(store.ids()) == want
        assert search_cap(store) == 16_384
        with pytest.raises(InvalidInput, match="16384"):
            store.search(vectors[:1], 16_385)
    finally:
        store.close()


# --------------------------------------------------------------------------- recall
@pytest.mark.parametrize("kind", [_param(k) for k in APPROX])
def test_recall_at_10_of_approximate_indexes(kind: str, store_of: Callable) -> None:
    vectors = clustered_vectors(8200, 32, n_clusters=64, spread=1.0, seed=7)[0]
    base, queries = vectors[:8000], vectors[8000:]
    store = store_of(kind, list(range(8000)), base, nprobe=8, nlist=32)
    truth = exact_search(base, queries, 10)[1]
    found = store.search(queries, 10).ids
    recall = np.mean([len(set(f) & set(t.tolist())) / 10 for f, t in zip(found, truth)])
    assert recall >= 0.95, f"{kind}: recall@10 {recall:.3f}"
    if "ivf" in kind:
        # The index is really approximate and its search params reach it: 1 cell of 32
        # loses neighbours that 8 cells find.
        store = reopen(store, nprobe=1)
        narrow = store.search(queries, 10).ids
        low = np.mean([len(set(f) & set(t.tolist())) / 10 for f, t in zip(narrow, truth)])
        assert low < recall - 0.05, f"{kind}: nprobe=1 recall {low:.3f} vs {recall:.3f}"


# --------------------------------------------------------------------------- bad input
BAD_UPSERTS = [
    ("wrong dim", [1], lambda v: v[:1, :-1]),
    ("nan", [1], lambda v: np.where(np.arange(DIM) == 3, np.nan, v[:1])),
    ("inf", [1], lambda v: np.where(np.arange(DIM) == 3, np.inf, v[:1])),
    ("zero vector", [1], lambda v: np.zeros((1, DIM))),
    ("text id in an int store", ["abc"], lambda v: v[:1]),
    ("int64 overflow", [2**63], lambda v: v[:1]),
    ("bool id", [True], lambda v: v[:1]),
    ("ids/vectors mismatch", [1, 2], lambda v: v[:3]),
    ("not numbers", [1], lambda v: [["a"] * DIM]),
    ("nothing", [], lambda v: v[:0]),
]


@pytest.mark.parametrize("kind", [_param(k) for k in ("faiss-flat", "milvus-hnsw")])
def test_bad_input_is_refused_and_nothing_written(kind: str, store_of: Callable, data: Any):
    base, queries = data
    store = store_of(kind, list(range(600)), base)
    before = store.search(queries, 5)
    for name, ids, make in BAD_UPSERTS:
        with pytest.raises(InvalidInput):
            store.upsert(ids, make(base))
            pytest.fail(f"accepted: {name}")
    for bad_query in (base[:1, :-1], np.full((1, DIM), np.nan), np.zeros((1, DIM))):
        with pytest.raises(InvalidInput):
            store.search(bad_query, 5)
    with pytest.raises(InvalidInput):
        store.search(queries, 0)
    with pytest.raises(InvalidInput):
        store.search(queries, 5, ids=["nope"])
    with pytest.raises(UnknownItem):
        store.get([1, 987654])
    with pytest.raises(InvalidInput):
        store.delete(["not-an-int"])
    assert store.count() == 600
    after = store.search(queries, 5)
    assert after.ids == before.ids  # nothing changed, the index still searches
    store = reopen(store)
    assert store.count() == 600 and store.search(queries, 5).ids == before.ids


BAD_STRING_IDS = ["", "x" * 513, "\ud800", "a/b", "b\x00", "tab\t", "\x85", ".", "..", 3.5, None]


@pytest.mark.parametrize("kind", [_param(k) for k in EXACT])
def test_string_id_rules_are_the_same_everywhere(kind: str, store_of: Callable, data: Any):
    base, _ = data
    store = store_of(kind, ["a", "b"], base[:2], id_type="str")
    for bad in BAD_STRING_IDS:
        with pytest.raises(InvalidInput):
            store.upsert([bad], base[:1])
            pytest.fail(f"accepted {bad!r}")
        with pytest.raises(InvalidInput):
            store.get([bad])
    assert store.count() == 2
    assert (
        store.contains([12]) == [False] and StoreSchema(DIM, id_type="str").normalize_id(12) == "12"
    )
    # the same id twice in one upsert: the later item wins (as in a dict), everywhere
    store.upsert(["c", "d", "c"], base[2:5])
    np.testing.assert_allclose(store.get(["c", "d"]), base[[4, 3]], atol=1e-6)
    assert store.count() == 4


@pytest.mark.parametrize("kind", [_param(k) for k in EXACT])
def test_extreme_components(kind: str, store_of: Callable, data: Any) -> None:
    """Normalizing stores keep the direction of 1e39 or 1e-30 components; stores without
    normalization refuse components beyond 1e15 (their scores would overflow float32)."""
    base, _ = data
    store = store_of(kind, [0, 1], base[:2])
    big, tiny = np.zeros((2, DIM)), np.zeros((2, DIM))
    big[:, 3], big[1, 4] = 1e39, 1e39
    tiny[:, 5] = 1e-30
    store.upsert([7, 8], big)
    store.upsert([9], tiny[:1])
    np.testing.assert_allclose(store.get([7, 9])[:, [3, 5]], [[1, 0], [0, 1]], atol=1e-6)
    np.testing.assert_allclose(store.get([8])[0, [3, 4]], [0.5**0.5] * 2, atol=1e-6)
    raw = store_of(kind, [0, 1], base[:2], normalize=False, metric="l2")
    with pytest.raises(InvalidInput):
        raw.upsert([2], big[:1] / 1e20)  # 1e19 > 1e15
    raw.upsert([2], big[:1] / 1e24)  # 1e15: allowed
    assert np.isfinite(raw.search(base[:1], 3).scores[0]).all()


# --------------------------------------------------------------------------- persistence
@pytest.mark.parametrize("kind", [_param(k) for k in ("faiss-hnsw", "milvus-flat", "milvus-ivf")])
def test_clean_restart_keeps_acknowledged_writes(kind: str, store_of: Callable, data: Any):
    base, queries = data
    store = store_of(kind, list(range(500)), base[:500])
    store.upsert(list(range(500, 600)), base[500:])
    store.upsert([0], queries[:1])
    store.delete([1, 2])
    expected = store.search(queries, 10)
    info = store.info()
    store = reopen(store)
    assert store.count() == 598 and store.contains([0, 1, 599]) == [True, False, True]
    np.testing.assert_allclose(store.get([0])[0], queries[0], atol=1e-6)
    assert store.search(queries, 10).ids == expected.ids
    again = store.info()
    for key in ("backend", "dim", "metric", "id_type", "normalize", "index_type"):
        assert again[key] == info[key], key
    assert store.flush() in (True, False)  # a snapshot / sealed segments; data unchanged
    assert reopen(store).count() == 598


WRITER = textwrap.dedent(
    """
    import sys, numpy as np
    sys.path.insert(0, {root!r})
    from tests.index.test_backends import open_existing, item_vector
    store = open_existing({kind!r}, {path!r})
    next_id = {start}
    while True:
        ids = list(range(next_id, next_id + 5))
        store.upsert(ids, np.stack([item_vector(i) for i in ids]))
        print(next_id, flush=True)  # acknowledged
        next_id += 5
    """
)


def item_vector(item_id: int) -> np.ndarray:
    """A unit vector (DIM,) determined by the id (writer and checker agree without talking)."""
    v = np.random.default_rng(item_id).standard_normal(DIM).astype(np.float32)
    return v / np.linalg.norm(v)


def open_existing(kind: str, path: str) -> VectorStore:
    if kind.startswith("faiss"):
        return FaissStore.open(path, StoreConfig(fsync=True, snapshot_every_ops=60))
    from coldstart.index.milvus_store import MilvusConfig, MilvusStore

    return MilvusStore.open(MilvusConfig(uri=path))


@pytest.mark.slow
@pytest.mark.parametrize("kind", [_param(k) for k in ("faiss-flat", "milvus-hnsw")])
def test_kill_9_of_a_writer_loses_no_acknowledged_write(kind: str, tmp_path: Path) -> None:
    ids = list(range(100))
    store = make_store(kind, tmp_path, ids, np.stack([item_vector(i) for i in ids]))
    path = str(store.directory) if kind.startswith("faiss") else store.config.uri  # type: ignore[attr-defined]
    store.close()
    acked: set[int] = set(ids)
    start = 1000
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO_ROOT)}
    for round_ in range(3):
        code = WRITER.format(root=str(REPO_ROOT), kind=kind, path=path, start=start)
        proc = subprocess.Popen(
            [sys.executable, "-c", code], stdout=subprocess.PIPE, env=env, text=True
        )
        batches: list[int] = []
        deadline = time.monotonic() + 120
        try:
            while len(batches) < 8 + 6 * round_:  # kill at a different point each round
                line = proc.stdout.readline()  # type: ignore[union-attr]
                assert line, f"writer exited early (rc {proc.poll()})"
                batches.append(int(line))
                assert time.monotonic() < deadline, "writer too slow"
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        # Batches acknowledged between the last line read and the kill sit in the pipe.
        batches += [int(line) for line in proc.stdout.read().split()]  # type: ignore[union-attr]
        for first in batches:
            acked.update(range(first, first + 5))
        in_flight = list(range(start + 5 * len(batches), start + 5 * len(batches) + 5))
        store = open_existing(kind, path)
        try:
            present = store.contains(sorted(acked))
            assert all(present), f"lost {sum(not p for p in present)} acknowledged items"
            got = store.get(sorted(acked))
            expected = np.stack([item_vector(i) for i in sorted(acked)])
            np.testing.assert_allclose(got, expected, atol=1e-6)
            survived = store.contains(in_flight)
            assert all(survived) or not any(survived), "half of a batch survived"
            if all(survived):
                acked.update(in_flight)
            assert store.count() == len(acked)
        finally:
            store.close()
        start += 5 * (len(batches) + 1)


# --------------------------------------------------------------------------- concurrency
@pytest.mark.parametrize("kind", [_param(k) for k in ("faiss-hnsw", "milvus-hnsw")])
def test_searches_run_while_writing(kind: str, store_of: Callable, data: Any) -> None:
    base, queries = data
    store = store_of(kind, list(range(300)), base[:300])
    errors: list[BaseException] = []
    stop = threading.Event()

    def reader() -> None:
        while not stop.is_set():
            try:
                result = store.search(queries[:8], 5)
                assert all(len(row) == 5 for row in result.ids)
            except BaseException as err:  # reported below
                errors.append(err)
                return

    threads = [threading.Thread(target=reader) for _ in range(3)]
    for t in threads:
        t.start()
    for start in range(300, 600, 20):
        store.upsert(list(range(start, start + 20)), base[start : start + 20])
    store.delete(list(range(0, 100)))
    stop.set()
    for t in threads:
        t.join()
    assert not errors, errors[0]
    assert store.count() == 500


# --------------------------------------------------------------------------- Milvus specifics
@needs_milvus
def test_milvus_server_uri_same_code(tmp_path: Path, data: Any) -> None:
    """The `http://host:port` path (a Milvus server, here Milvus Lite's own gRPC server in a
    separate process), including a kill -9 of that server with acknowledged writes."""
    from coldstart.index.milvus_store import MilvusConfig, MilvusStore

    base, queries = data
    port = free_port()

    def start() -> subprocess.Popen:
        return milvus_server(tmp_path / "srv", port)

    config = MilvusConfig(uri=f"http://127.0.0.1:{port}", index_type="IVF_FLAT", nlist=16)
    config.id_type = "str"
    proc = start()
    try:
        store = MilvusStore.build([f"i{i}" for i in range(600)], base, config)
        assert store.info()["build_params"] == {"nlist": 16}
        store.upsert(['new"one'], queries[:1])
        assert store.search(queries[:1], 1).ids == [['new"one']]
        store.close()
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc = start()
        store = MilvusStore.open(config)
        assert store.count() == 601 and store.contains(['new"one']) == [True]
        assert sorted(store.ids()) == sorted([f"i{i}" for i in range(600)] + ['new"one'])
        store.close()
    finally:
        proc.kill()
        proc.wait()


@needs_milvus
def test_milvus_lite_one_process_per_file(tmp_path: Path, data: Any) -> None:
    from coldstart.index.milvus_store import MilvusConfig, MilvusStore

    base, _ = data
    config = MilvusConfig(uri=str(tmp_path / "items.db"), dim=DIM)
    MilvusStore.build(list(range(10)), base[:10], config).close()
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\n"
            f"sys.path.insert(0, {str(REPO_ROOT)!r})\n"
            "from coldstart.index.milvus_store import MilvusConfig, MilvusStore\n"
            f"s = MilvusStore.open(MilvusConfig(uri={config.uri!r}))\n"
            "print('open', flush=True)\n"
            "time.sleep(60)\n",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "open"  # type: ignore[union-attr]
        with pytest.raises(BackendUnavailable, match="one process per file"):
            MilvusStore.open(config)
    finally:
        holder.kill()
        holder.wait()
    with MilvusStore.open(config) as store:  # the lock goes with the process
        assert store.count() == 10
    with pytest.raises(FileExistsError):
        MilvusStore.create(config, dim=DIM)
    with pytest.raises(FileNotFoundError, match="no collection"):
        MilvusStore.open(MilvusConfig(uri=config.uri, collection="other"))


def test_missing_extra_names_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from coldstart.index.milvus_store import MilvusConfig, MilvusStore

    monkeypatch.setitem(sys.modules, "pymilvus", None)  # import pymilvus -> ImportError
    with pytest.raises(BackendUnavailable, match=r"coldstart\[milvus\]"):
        MilvusStore.open(MilvusConfig(uri=str(tmp_path / "x.db")))


def test_milvus_config_is_checked() -> None:
    from coldstart.index.milvus_store import MilvusConfig, id_filter

    assert MilvusConfig(index_type="hnsw").index_type == "HNSW"
    for bad in ({"index_type": "IVF_PQ"}, {"metric": "cosine"}, {"nprobe": 0}, {"bogus": 1}):
        with pytest.raises(ValueError):
            MilvusConfig.from_dict(bad)
    assert id_filter([1, -2]) == "id in [1,-2]"
    assert id_filter(['a"b\\c']) == 'id in ["a\\"b\\\\c"]'


def test_milvus_yaml_maps_onto_the_config() -> None:
    from coldstart.index.config import load_yaml
    from coldstart.index.milvus_store import MilvusConfig

    raw = load_yaml(REPO_ROOT / "configs" / "index" / "milvus.yaml")
    assert raw["backend"] == "milvus"
    config = MilvusConfig.from_dict(raw["milvus"])
    assert config.index_type == "HNSW" and config.is_lite


@needs_milvus
def test_milvus_lite_keeps_only_the_records_before_wal_damage(tmp_path: Path) -> None:
    """Characterises milvus-lite 3.2.2 (README, "Index backends"): damage in the middle of its
    write-ahead log is not refused, as FAISS's is (coldstart index repair); Lite opens with a
    warning and keeps the records before the damage, losing later acknowledged writes. If
    this starts failing, Lite changed: update the README's table. Since issue 23 the store's
    own record (count + digest) refuses it; without the record, Lite's behaviour shows."""
    uri = str(tmp_path / "items.db")
    code = (
        "import sys, time, numpy as np\n"
        f"sys.path.insert(0, {str(REPO_ROOT)!r})\n"
        "from coldstart.index.milvus_store import MilvusConfig, MilvusStore\n"
        f"s = MilvusStore.create(MilvusConfig(uri={uri!r}, index_type='FLAT'), dim={DIM})\n"
        "for i in range(100):\n"
        "    s.upsert([i], np.random.default_rng(i).standard_normal((1, " + str(DIM) + ")))\n"
        "print('acknowledged', flush=True)\n"
        "time.sleep(60)\n"
    )
    writer = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline().strip() == "acknowledged"  # type: ignore[union-attr]
    finally:
        writer.send_signal(signal.SIGKILL)  # no flush, no close: the log holds all 100
        writer.wait()
    (wal,) = Path(uri).rglob("wal_data_*.arrow")
    data = bytearray(wal.read_bytes())
    at = len(data) * 3 // 10
    data[at : at + 64] = b"\xff" * 64  # damage a record in the middle
    wal.write_bytes(bytes(data))
    from coldstart.index.backend import StoreCorrupt
    from coldstart.index.milvus_store import MilvusConfig, MilvusStore

    with pytest.raises(StoreCorrupt, match="says 99 items"):
        MilvusStore.open(MilvusConfig(uri=uri))
    Path(f"{uri}.items.coldstart-record").unlink()  # Lite on its own:
    with MilvusStore.open(MilvusConfig(uri=uri)) as store:
        kept = store.count()
        assert 0 < kept < 100, kept
        assert store.contains([0, kept - 1, kept, 99]) == [True, True, False, False]
