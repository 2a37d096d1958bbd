"""`coldstart serve --ranker` alone (no content index), and warming up online: POST /v1/events
moves a cold item's served vector (ranker.warmup), durably (kill -9, restart)."""

from __future__ import annotations

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
    out = warm_vectors(base, s, n, kappa=2.0, target=3.0)
    np.testing.assert_array_equal(out[0], base[0])  # no events: v0 exactly
    for r in (1, 2):
        g = n[r] / (n[r] + 2.0)
        v_id = (out[r] - (1 - g) * base[r]) / g
        assert float(s[r] / n[r] @ v_id) == pytest.approx(3.0, rel=1e-4)
    # kappa -> 0: the ID-row estimate alone; the mean engaged user scores the target.
    only = warm_vectors(base, s, n, kappa=0.0, target=3.0)
    assert float(users[1:].mean(0) @ only[2]) == pytest.approx(3.0, rel=1e-4)


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    from coldstart.ranker.lit import synthetic_ranker_data
    from coldstart.ranker.methods import export_vectors, fit_method, resolve_method

    root = tmp_path_factory.mktemp("online")
    data = synthetic_ranker_data(n_items=300, n_users=120, seed=0)
    f = fit_method("content_projection", data, params={"dim": 8, "epochs": 1})
    export_vectors(root / "m", data, f.items, f.users, resolve_method(f.name), f.cold_item)
    return data, f, root / "m"


def _service(directory, store):
    from coldstart.ranker_serving import RankerArtifact, open_ranker_service

    return open_ranker_service(RankerArtifact.load(directory), store, with_cold=True)


def test_events_move_a_cold_item_and_a_crash_between_writes_is_rebuilt(artifact, tmp_path):
    data, f, directory = artifact
    cold = [int(i) for i in data.item_ids[data.item_split == "cold_test"][:2]]
    warm = int(data.item_ids[data.item_split == "warm"][0])
    users = [int(u) for u in data.user_ids[:3]]
    service = _service(directory, tmp_path / "s")
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
    finally:
        service.close()
    again = _service(directory, tmp_path / "s")
    try:
        np.testing.assert_array_equal(again.cold.get(cold[:1]), moved[:1])
        # A new upload of the item starts it again from its content.
        rows = np.flatnonzero(data.item_split == "cold_test")[:1]
        again.add_items(cold[:1], data.content[rows])
        np.testing.assert_allclose(again.cold.get(cold[:1]), v0[:1], rtol=1e-5, atol=1e-7)
        assert again.events.contains(cold) == [False, True]
    finally:
        again.close()


def test_ranker_alone_over_http_and_events_survive_kill_9(artifact, tmp_path):
    data, f, directory = artifact
    cold = int(data.item_ids[data.item_split == "cold_test"][0])
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
        events = [{"user": user, "item": cold, "event": "click"}] * 5
        r = srv.client.post("/v1/events", json={"events": events})
        assert r.status_code == 200 and r.json()["applied"] == 5, r.text
        bad = {"events": [{"user": -7, "item": cold, "event": "click"}]}
        assert srv.client.post("/v1/events", json=bad).status_code == 404
        bad = {"events": [{"user": user, "item": cold, "event": "click", "value": -1}]}
        assert srv.client.post("/v1/events", json=bad).status_code == 422
        after = top(srv)
        # The user's own engagement moves the item up their list.
        assert after["ids"].index(cold) < before["ids"].index(cold)
        srv.kill()  # kill -9: acknowledged events are durable
    with ServeProcess(None, *args, log=tmp_path / "serve.log") as srv:
        srv.wait_ready()
        assert top(srv) == after
