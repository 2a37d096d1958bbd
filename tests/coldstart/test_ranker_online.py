"""`coldstart serve --ranker` alone (no content index), and warming up online: POST /v1/events
moves a cold item's served vector (ranker.warmup), durably (kill -9, restart)."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from coldstart.ranker.warmup import warm_vectors
from tests.index.conftest import ServeProcess


def test_warm_vectors_start_at_content_and_move_to_the_engaged_users() -> None:
    rng = np.random.default_rng(0)
    base = rng.standard_normal((3, 4)).astype(np.float32)
    users = rng.standard_normal((5, 4))
    s = np.stack([np.zeros(4), users[0], users[1:].sum(0)])
    n = np.array([0.0, 1.0, 4.0])
    out = warm_vectors(base, s, n, kappa=2.0, scale=3.0)
    np.testing.assert_array_equal(out[0], base[0])  # no events: v0 exactly
    for r in (1, 2):
        g = n[r] / (n[r] + 2.0)
        np.testing.assert_allclose(out[r], (1 - g) * base[r] + g * 3.0 * s[r] / n[r], rtol=1e-5)
    # kappa 0: the ID-row estimate alone, c times the mean engaging user.
    only = warm_vectors(base, s, n, kappa=0.0, scale=3.0)
    np.testing.assert_allclose(only[2], 3.0 * users[1:].mean(0), rtol=1e-5)
    # Coordinates every user shares (item biases) keep v0's value.
    fixed = np.array([False, False, True, False])
    kept = warm_vectors(base, s, n, kappa=2.0, scale=3.0, fixed=fixed)
    np.testing.assert_array_equal(kept[:, 2], base[:, 2])
    np.testing.assert_array_equal(kept[:, :2], out[:, :2])


def test_id_scale_makes_a_user_score_its_own_estimate_at_the_mean_positive() -> None:
    from coldstart.ranker.warmup import id_scale

    rng = np.random.default_rng(1)
    users, items = rng.standard_normal((6, 3)), rng.standard_normal((4, 3))
    ur, ir = np.array([0, 1, 2, 2]), np.array([0, 1, 2, 3])
    c = id_scale(users, items, ur, ir)
    t = np.mean([users[u] @ items[i] for u, i in zip(ur, ir)]) - users.mean(0) @ items.mean(0)
    assert c * np.mean([users[u] @ users[u] for u in ur]) == pytest.approx(max(t, 0))
    assert id_scale(users, -items, ur, ir) >= 0  # never away from the engaged users


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    from coldstart.ranker.lit import synthetic_ranker_data
    from coldstart.ranker.methods import export_vectors, fit_method, resolve_method

    root = tmp_path_factory.mktemp("online")
    data = synthetic_ranker_data(n_items=300, n_users=120, seed=0)
    f = fit_method("content_projection", data, params={"dim": 8, "epochs": 1})
    export_vectors(root / "m", data, f.items, f.users, resolve_method(f.name), f.cold_item)
    return data, f, root / "m"


def _service(directory, store, backend="faiss"):
    from coldstart.ranker_serving import RankerArtifact, open_ranker_service

    return open_ranker_service(RankerArtifact.load(directory), store, backend, with_cold=True)


BACKENDS = [
    "faiss",
    pytest.param(
        "milvus",
        marks=pytest.mark.skipif(
            importlib.util.find_spec("milvus_lite") is None,
            reason="pymilvus/milvus-lite not installed: pip install 'coldstart[milvus]'",
        ),
    ),
]


@pytest.mark.parametrize("backend", BACKENDS)
def test_events_move_a_cold_item_and_a_crash_between_writes_is_rebuilt(artifact, tmp_path, backend):
    """The warm-up path on every backend's stores (Milvus Lite: real files), with a restart:
    the reopened service finds the warmed items through the events store's listing."""
    data, f, directory = artifact
    cold = [int(i) for i in data.item_ids[data.item_split == "cold_test"][:2]]
    warm = int(data.item_ids[data.item_split == "warm"][0])
    users = [int(u) for u in data.user_ids[:3]]
    service = _service(directory, tmp_path / "s", backend)
    try:
        v0 = service.cold.get(cold)
        got = service.record_events([(u, cold[0], 1.0) for u in users] + [(users[0], warm, 1.0)])
        assert got["applied"] == 3 and got["ignored"] == 1
        moved = service.cold.get(cold)
        np.testing.assert_array_equal(moved[1], v0[1])  # no events, no change
        mean_user = f.users[:3].mean(0)
        assert mean_user @ moved[0] > mean_user @ v0[0]  # the engaged users like it more
        # One batch or one event at a time: the same state, the same vector.
        for u in users:
            service.record_events([(u, cold[1], 1.0)])
        state, d = service.events.get(cold), service.dim
        np.testing.assert_allclose(state[1, d:], state[0, d:], rtol=1e-5)
        with pytest.raises(KeyError):
            service.record_events([(10**9, cold[0], 1.0)])
        with pytest.raises(ValueError, match="unknown"):
            service.record_events([(users[0], 10**9, 1.0)])
        assert service.events.get(cold).tolist() == state.tolist()  # nothing applied
        # A crash after the state write, before the served vector's: rebuilt on open.
        service.cold.upsert([cold[0]], v0[:1])
        assert sorted(service.events.ids()) == sorted(cold)
    finally:
        service.close()
    again = _service(directory, tmp_path / "s", backend)
    try:
        assert again.events.backend == backend  # reopened, not rebuilt from the artifact
        np.testing.assert_array_equal(again.cold.get(cold[:1]), moved[:1])
        assert again.rebuild_warmup() == 0  # the open already rewrote it
        # A new upload of the item starts it again from its content.
        rows = np.flatnonzero(data.item_split == "cold_test")[:1]
        again.add_items(cold[:1], data.content[rows])
        np.testing.assert_allclose(again.cold.get(cold[:1]), v0[:1], rtol=1e-5, atol=1e-7)
        assert again.events.contains(cold) == [False, True]
    finally:
        again.close()


def test_ranker_alone_over_http_and_events_survive_kill_9(artifact, tmp_path):
    data, f, directory = artifact
    user = int(data.user_ids[0])
    args = ("--ranker", str(directory), "--ranker-store", str(tmp_path / "s"))
    args += ("--ranker-cold-items", "--insecure-writes")

    def top(srv):
        params = {"k": 200, "segment": "cold", "exclude_seen": "false"}
        r = srv.client.get(f"/v1/users/{user}/recommendations", params=params)
        assert r.status_code == 200, r.text
        return r.json()

    with ServeProcess(None, *args, log=tmp_path / "serve.log") as srv:
        ready = srv.wait_ready()
        assert ready["items"] == data.num_items
        assert srv.client.get("/health").json()["ready"] is True
        assert srv.client.post("/v1/search", json={"vectors": [[0.0]], "k": 1}).status_code == 404
        assert "/v1/search" not in srv.client.get("/openapi.json").json()["paths"]
        before = top(srv)
        cold = before["ids"][-1]  # the cold item this user likes least
        events = [{"user": user, "item": cold, "event": "click"}] * 5
        r = srv.client.post("/v1/events", json={"events": events})
        assert r.status_code == 200 and r.json()["applied"] == 5, r.text
        bad = {"events": [{"user": -7, "item": cold, "event": "click"}]}
        assert srv.client.post("/v1/events", json=bad).status_code == 404
        bad = {"events": [{"user": user, "item": cold, "event": "click", "value": -1}]}
        assert srv.client.post("/v1/events", json=bad).status_code == 422
        after = top(srv)

        # The served vector is the warm-up of (v0, 5 u, 5): the score moved to exactly that.
        from coldstart.ranker_serving import RankerArtifact

        art = RankerArtifact.load(directory)
        u = art.user_vectors[list(art.user_ids).index(user)]
        v0 = art.cold_vectors[list(art.cold_ids).index(cold)]
        want = float(art.warmup()(v0[None], 5 * u[None], np.array([5.0]))[0] @ u)
        got = after["scores"][after["ids"].index(cold)]
        assert got == pytest.approx(want, rel=1e-5) and got != pytest.approx(float(v0 @ u))
        srv.kill()  # kill -9: acknowledged events are durable
    with ServeProcess(None, *args, log=tmp_path / "serve.log") as srv:
        srv.wait_ready()
        assert top(srv) == after


def test_concurrent_uploads_share_an_encoder_call_and_fail_alone(artifact, tmp_path):
    import concurrent.futures

    import httpx

    from coldstart.index.config import ServerConfig
    from coldstart.index.server import create_app
    from tests.index.conftest import live_server, wait_ready

    data, f, directory = artifact
    calls: list[int] = []

    def encode(images, texts):
        seed = sum(map(ord, texts[0]))
        return np.random.default_rng(seed).standard_normal(data.content.shape[1])

    def many(items):
        calls.append(len(items))
        return np.stack([encode(i, t) for i, t in items])

    encode.many = many
    service = _service(directory, tmp_path / "s")
    warm = str(int(data.item_ids[data.item_split == "warm"][0]))
    app = create_app(
        None, ServerConfig(insecure_writes=True, max_wait_ms=100), encode=encode, ranker=service
    )
    ids = [str(10_000 + j) for j in range(12)] + [warm]
    with live_server(app) as url, httpx.Client(base_url=url, timeout=30) as client:
        wait_ready(client)

        def upload(item: str) -> int:
            return client.post(
                "/v1/ranker/items", data={"id": item, "text": f"t{item}"}
            ).status_code

        with concurrent.futures.ThreadPoolExecutor(len(ids)) as pool:
            codes = list(pool.map(upload, ids))
    assert codes == [200] * 12 + [409]  # the trained id fails alone
    assert max(calls) > 1 and sum(calls) == len(ids)  # batches formed
    want = service.cold_item(np.stack([encode([], [f"t{i}"]) for i in ids[:12]]))
    got = service.cold.get([int(i) for i in ids[:12]])
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-8)  # stores closed with the app


@pytest.mark.slow  # ~30 s on shared cores: 7 fits of a small method
def test_warmup_benchmark_feeds_the_first_n_by_time_and_prints_its_keys() -> None:
    import importlib.util
    import json
    import subprocess
    import sys

    from tests.index.conftest import REPO_ROOT

    path = REPO_ROOT / "benchmarks" / "warmup_curve.py"
    spec = importlib.util.spec_from_file_location("warmup_curve", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    data = bench.synthetic_data(300, 200, 0.5, 1.0, 0)
    part = data.parts["cold_test"]
    fed_data, fed = bench.fed_split(data, 2)
    for item in np.unique(part.items):
        rows = np.flatnonzero(part.items == item)
        first = rows[np.argsort(part.timestamps[rows], kind="stable")[:2]]
        assert set(first) == set(fed[part.items[fed] == item])  # the item's first 2 by time
    assert len(fed_data.train.items) == len(data.train.items) + len(fed)
    assert len(fed_data.parts["cold_test"].items) == len(part.items) - len(fed)
    cmd = [sys.executable, str(path), "--method", "content_projection", "--items", "300"]
    cmd += ["--users", "200", "--epochs", "1", "--dim", "8", "--retrain", "1"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=REPO_ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert [r["n"] for r in rows] == [0, 1, 2, 5, 10, 20]
    keys = {"bench", "n", "online_recall_at_20", "retrain_recall_at_20"}
    assert all(keys | {"content_only_recall_at_20"} <= r.keys() for r in rows)
    assert rows[0]["online_recall_at_20"] == rows[0]["content_only_recall_at_20"]
    assert rows[1]["retrain_recall_at_20"] is not None
