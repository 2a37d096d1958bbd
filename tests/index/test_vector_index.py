"""VectorIndex: recall per factory, mutations, validation, tombstones, replicas, threads."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from coldstart.data.synthetic import clustered_vectors
from coldstart.index.build import exact_neighbours, measure_recall
from coldstart.index.config import IndexConfig
from coldstart.index.vector_index import (
    InvalidInput,
    NotTrained,
    UnknownItem,
    VectorIndex,
    gpu_count,
)


@pytest.fixture(scope="module")
def clustered() -> tuple[np.ndarray, np.ndarray]:
    x, _ = clustered_vectors(8000, 32, n_clusters=32, seed=0)
    return np.arange(8000), x


@pytest.mark.parametrize(
    ("factory", "params", "floor"),
    [
        ("Flat", {}, 0.999),
        ("IVF64,Flat", {"nprobe": 16}, 0.9),
        ("HNSW32", {"ef_search": 96}, 0.9),
        ("IVF64,SQ8", {"nprobe": 16}, 0.85),
        ("IVF64,PQ16x4", {"nprobe": 16}, 0.3),
    ],
)
def test_recall_against_flat(clustered, factory, params, floor):
    ids, x = clustered
    index = VectorIndex.build(ids, x, IndexConfig(factory=factory, **params))
    recall = measure_recall(index, ids, x, n_queries=200)
    print(f"{factory}: recall@10 {recall:.3f}")
    assert recall >= floor, f"{factory}: recall@10 {recall:.3f} < {floor}"
    if factory != "Flat":
        # The approximation is real: an exhaustive scan would give recall 1 exactly.
        assert len(index) == len(ids)


def test_exact_neighbours_match_brute_force():
    x, _ = clustered_vectors(300, 8, seed=3)
    rows = exact_neighbours(x, x[:5], 4)
    brute = np.argsort(-(x[:5] @ x.T), axis=1)[:, :4]
    assert (rows[:, 0] == np.arange(5)).all()
    assert (np.sort(rows, 1) == np.sort(brute, 1)).all()


@pytest.mark.parametrize("factory", ["Flat", "IVF16,Flat", "HNSW16"])
def test_upsert_delete_get(factory):
    x, _ = clustered_vectors(800, 16, seed=2)
    index = VectorIndex.build(range(800), x, IndexConfig(factory=factory, nprobe=16))
    assert len(index) == 800 and 5 in index and "5" in index and 9999 not in index
    # Replace item 5's vector by item 700's: 5 must now be 700's twin.
    index.upsert([5], x[700:701])
    hits = index.search(x[700:701], 2).ids[0]
    assert set(hits) == {5, 700}
    np.testing.assert_allclose(index.get([5])[0], x[700], atol=1e-6)
    assert index.delete([5, 5, 123456]) == 1
    assert 5 not in index and len(index) == 799
    assert 5 not in index.search(x[700:701], 10).ids[0]
    with pytest.raises(UnknownItem):
        index.get([5])
    # Mixed inputs normalize to the index's id type.
    index.upsert(["42"], x[42:43])
    assert index.search(x[42:43], 1).ids[0] == [42]


def test_string_ids_and_l2():
    x, _ = clustered_vectors(200, 8, seed=4)
    ids = [f"movie-{i}" for i in range(200)]
    index = VectorIndex.build(ids, x, IndexConfig(metric="l2", id_type="str", normalize=False))
    result = index.search(x[:3], 3)
    assert [r[0] for r in result.ids] == ["movie-0", "movie-1", "movie-2"]
    assert (result.scores[0][0] <= result.scores[0][1]) and result.scores[0][0] < 1e-5
    assert index.normalize_id(7) == "7"


def test_norms_in_float64_and_duplicate_ids():
    index = VectorIndex(IndexConfig(dim=4))
    # 1e20 overflows a float32 norm (stored as zeros before); 1e-30 underflows its square.
    index.upsert([1, 2, 3], [[1e20, 0, 0, 0], [0, -1e-30, 0, 0], [3e38, 3e38, 0, 0]])
    np.testing.assert_allclose(
        index.get([1, 2, 3]), [[1, 0, 0, 0], [0, -1, 0, 0], [2**-0.5, 2**-0.5, 0, 0]], atol=1e-7
    )
    index.upsert([4, 4], [[0, 0, 1, 0], [0, 0, 0, 1]])  # the same id twice: the later wins
    np.testing.assert_allclose(index.get([4]), [[0, 0, 0, 1]])
    assert len(index) == 4


def test_validation_errors():
    index = VectorIndex(IndexConfig(dim=4))
    good = np.ones((1, 4), np.float32)
    for bad in (np.ones((1, 5)), [[1, 2, float("nan"), 3]], [[1, 2, 3, np.inf]], [[0, 0, 0, 0]]):
        with pytest.raises(InvalidInput):
            index.upsert([1], bad)
    with pytest.raises(InvalidInput):
        index.upsert([True], good)  # bool is not an id
    with pytest.raises(InvalidInput):
        index.upsert([2**63], good)  # beyond int64
    with pytest.raises(InvalidInput):
        index.upsert(["abc"], good)
    with pytest.raises(InvalidInput):
        index.search(good, 0)
    with pytest.raises(InvalidInput):
        index.upsert([1], [[1e309, 0, 0, 0]])  # beyond float64: inf
    with pytest.raises(InvalidInput):
        VectorIndex(IndexConfig(dim=4, normalize=False)).upsert([1], [[1e16, 0, 0, 0]])
    with pytest.raises(InvalidInput):
        VectorIndex(IndexConfig(factory="NoSuchThing", dim=4))
    untrained = VectorIndex(IndexConfig(factory="IVF8,Flat", dim=4))
    with pytest.raises(NotTrained):
        untrained.upsert([1], good)
    assert index.search(good, 5).ids == [[]]  # empty index: no results, no error


def test_hnsw_tombstones_then_compaction():
    x, _ = clustered_vectors(1000, 16, seed=5)
    index = VectorIndex.build(range(1000), x, IndexConfig(factory="HNSW16", compact_ratio=0.5))
    assert not index._can_remove  # HNSW cannot remove: deletes are filtered at search
    index.delete(range(0, 100))
    assert len(index._tombstones) == 100
    found = index.search(x[:100], 10).ids
    assert all(i >= 100 for row in found for i in row)
    assert all(len(row) == 10 for row in found)
    index.delete(range(100, 500))  # more than half of the live items dead -> rebuilt
    assert not index._tombstones and index._index.ntotal == 500
    assert all(i >= 500 for row in index.search(x[:50], 10).ids for i in row)
    assert index.search(x[600:601], 1).ids[0] == [600]


def test_clone_replica_sees_writes_before_refresh():
    """The GPU replica code path, run on a CPU clone: writes are visible before a refresh."""
    x, _ = clustered_vectors(500, 16, seed=6)
    config = IndexConfig(replica="clone", replica_refresh_ops=10**6, replica_refresh_s=3600)
    index = VectorIndex.build(range(400), x[:400], config)
    index.start_replicas()
    try:
        assert index.replica_refreshes == 1 and index._replica is not None
        index.upsert(range(400, 500), x[400:])  # pending in the delta buffer
        index.delete([0, 1])  # pending deletions
        assert index._pending() == 102
        got = index.search(x[[450, 0, 1]], 3).ids
        assert got[0][0] == 450 and 0 not in got[1] and 1 not in got[2]
        before = index.search(x, 5).ids
        index.refresh_replica()
        assert index._pending() == 0 and index.replica_refreshes == 2
        assert index.search(x, 5).ids == before
    finally:
        index.close()


def test_gpu_requested_falls_back_to_cpu_here():
    if gpu_count() > 0:
        pytest.skip("a GPU is visible: the fallback path does not apply")
    x, _ = clustered_vectors(100, 8, seed=7)
    index = VectorIndex.build(range(100), x, IndexConfig(replica="gpu"))
    index.start_replicas()
    assert index.device == "cpu" and index.replica_kind == "none"
    assert "no GPU" in index.backend_note
    assert index.search(x[:1], 1).ids == [[0]]


@pytest.mark.gpu
def test_gpu_replica_matches_cpu():
    if gpu_count() == 0:
        pytest.skip("needs faiss-gpu and a CUDA GPU")
    x, _ = clustered_vectors(2000, 32, seed=8)
    cpu = VectorIndex.build(range(2000), x, IndexConfig(replica="none"))
    gpu = VectorIndex.build(range(2000), x, IndexConfig(replica="gpu", replica_refresh_s=3600))
    gpu.start_replicas()
    try:
        assert gpu.device == "gpu"
        gpu.upsert([5000], x[:1])
        gpu.delete([3])
        cpu.upsert([5000], x[:1])
        cpu.delete([3])
        assert [set(r) for r in gpu.search(x[:50], 5).ids] == [
            set(r) for r in cpu.search(x[:50], 5).ids
        ]
    finally:
        gpu.close()


def test_concurrent_readers_and_writers_stay_consistent():
    x, _ = clustered_vectors(3000, 16, seed=9)
    index = VectorIndex.build(range(1000), x[:1000], IndexConfig(factory="HNSW16"))
    errors: list[BaseException] = []
    stop = threading.Event()

    def reader() -> None:
        try:
            while not stop.is_set():
                result = index.search(x[:32], 5)
                for row in result.ids:
                    assert len(row) == 5 and len(set(row)) == 5
                    assert all(isinstance(i, int) and 0 <= i < 3000 for i in row)
        except BaseException as err:  # surfaced below
            errors.append(err)

    def writer(lo: int, hi: int) -> None:
        try:
            for start in range(lo, hi, 50):
                index.upsert(range(start, start + 50), x[start : start + 50])
                if start > lo:
                    index.delete(range(start - 50, start - 25))  # drop half of the last batch
        except BaseException as err:
            errors.append(err)

    readers = [threading.Thread(target=reader) for _ in range(3)]
    writers = [threading.Thread(target=writer, args=r) for r in ((1000, 2000), (2000, 3000))]
    for t in readers + writers:
        t.start()
    for t in writers:
        t.join()
    stop.set()
    for t in readers:
        t.join()
    assert not errors, errors[0]
    deleted = {
        i
        for lo, hi in ((1000, 2000), (2000, 3000))
        for s in range(lo + 50, hi, 50)
        for i in range(s - 50, s - 25)
    }
    expected = set(range(3000)) - deleted
    assert set(index.ids()) == expected
    # Every live item is found by its own vector; no deleted one ever is.
    probe = sorted(expected)[::37]
    assert [r[0] for r in index.search(x[probe], 1).ids] == probe
