"""`coldstart serve --ranker`: a trained method served over HTTP. The acceptance test is parity:
cold_test items replayed as uploads (text only) through a live server on 127.0.0.1, then every
test user's recommendations over HTTP give the offline Recall@20 to 1e-4, cold and warm."""

from __future__ import annotations

import numpy as np
import pytest

from coldstart.data.schema import ITEM_ID, item_text
from tests.index.conftest import live_server, wait_ready

# The `served` tests (MiniLM + training + ~300 HTTP requests): 12 s on 2 idle cores, 30+ s
# when they are shared: marked slow.

FIELDS = ("title", "genres")
PARAMS = {"dim": 16, "epochs": 2, "content_hidden": 64}


def assert_new_user_answer(client, fitted, history: list) -> None:
    """POST /v1/recommendations for `history` (a user the model never saw): 10 items outside
    the history, best first, scored by the method's user side over that history."""
    r = client.post("/v1/recommendations", json={"items": history, "k": 10})
    assert r.status_code == 200, r.text
    got = r.json()
    assert len(got["ids"]) == 10 and not set(history) & set(got["ids"])
    uvec = fitted.history_user(fitted.history_user.rows_of(history))
    rows_of = {str(i): r for r, i in enumerate(fitted.data.item_ids)}
    want = [float(uvec @ fitted.items[rows_of[str(i)]]) for i in got["ids"]]
    np.testing.assert_allclose(got["scores"], want, rtol=1e-5, atol=1e-5)
    assert got["scores"] == sorted(got["scores"], reverse=True)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """(data, fitted, artifact dir, texts by id, encode) of `ours` on the synthetic set."""
    from coldstart.data.split import cold_start_split
    from coldstart.data.synthetic import load_synthetic
    from coldstart.ranker.data import build_ranker_data
    from coldstart.ranker.methods import export_fitted, fit_method, resolve_method
    from coldstart.serving import make_encode

    root = tmp_path_factory.mktemp("ranker_serving")
    split = cold_start_split(load_synthetic(), seed=0)
    texts = {row[ITEM_ID]: item_text(row, FIELDS) for row in split.items.to_dict("records")}
    encode, _ = make_encode("minilm")
    ids = list(texts)
    # One text at a time, as the server encodes an upload: the same content vectors.
    content = np.stack([encode([], [texts[i]]) for i in ids]).astype(np.float32)
    data = build_ranker_data(split, np.asarray(ids), content)
    fitted = fit_method("ours", data, params=PARAMS)
    export_fitted(root / "ours", fitted, resolve_method("ours", PARAMS))
    return data, fitted, root, texts, encode, content


def _app(root, data, content, encode, store_dir):
    from coldstart.index.config import ServerConfig
    from coldstart.index.registry import get_backend
    from coldstart.index.server import create_app
    from coldstart.ranker_serving import RankerArtifact, open_ranker_service

    faiss = get_backend("faiss")
    if (store_dir / "content").exists():
        index = faiss.open(str(store_dir / "content"), {})
    else:
        settings = {"index": {"dim": content.shape[1], "id_type": "str"}}
        index, _ = faiss.build(
            list(data.item_ids), content, str(store_dir / "content"), settings, {}
        )
    service = open_ranker_service(RankerArtifact.load(root / "ours"), store_dir / "ranker")
    config = ServerConfig(insecure_writes=True)
    return create_app(index, config, encode=encode, ranker=service), service


@pytest.mark.slow
def test_parity_cold_and_warm_over_http(served, tmp_path) -> None:
    import httpx

    from coldstart.parity import parity_rows, upload_items

    data, fitted, root, texts, encode, content = served
    app, service = _app(root, data, content, encode, tmp_path)
    cold_ids = [str(i) for i in data.item_ids[data.item_split == "cold_test"]]
    with live_server(app) as url, httpx.Client(base_url=url, timeout=30) as client:
        wait_ready(client)
        assert service.cold.count() == 0  # nothing cold until uploaded
        lsns = upload_items(client, cold_ids, [texts[i] for i in cold_ids])
        assert lsns == sorted(lsns) and service.cold.count() == len(cold_ids)
        rows = {r["segment"]: r for r in parity_rows(client, data, fitted.items, fitted.users)}
    offline = fitted.evaluate("test")
    for segment in ("cold", "warm"):
        row = rows[segment]
        assert row["users"] == offline[segment]["users"] > 10
        assert row["offline_recall_at_20"] == pytest.approx(offline[segment]["recall@20"], abs=1e-6)
        assert row["abs_diff"] <= 1e-4, row
    assert rows["cold"]["served_recall_at_20"] > 0.05  # content carries the signal


@pytest.mark.slow
def test_bad_input_is_a_clear_4xx_and_uploads_survive_a_restart(served, tmp_path) -> None:
    from fastapi.testclient import TestClient

    data, fitted, root, texts, encode, content = served
    cold = [str(i) for i in data.item_ids[data.item_split == "cold_test"]][:3]
    warm = str(data.item_ids[data.item_split == "warm"][0])
    user = str(data.user_ids[0])
    app, service = _app(root, data, content, encode, tmp_path)
    with TestClient(app) as client:
        wait_ready(client)
        paths = client.get("/openapi.json").json()["paths"]
        for path in (
            "/v1/users/{user_id}/recommendations",
            "/v1/recommendations",
            "/v1/ranker/items",
        ):
            assert path in paths
        assert client.get("/v1/ranker").json()["cold_item_path"] is True
        assert client.get("/v1/users/nobody/recommendations").status_code == 404
        for k in (0, 100_000):
            r = client.get(f"/v1/users/{user}/recommendations", params={"k": k})
            assert r.status_code == 422, r.text
        r = client.get(f"/v1/users/{user}/recommendations", params={"segment": "lukewarm"})
        assert r.status_code == 422
        assert client.post("/v1/recommendations", json={"items": []}).status_code == 422
        r = client.post("/v1/recommendations", json={"items": [warm, "no-such-item"]})
        assert r.status_code == 422 and "no-such-item" in r.json()["detail"]
        # A user the model never saw: the method's user side over the history sent.
        history = [str(i) for i in data.item_ids[data.item_split == "warm"][:5]]
        assert_new_user_answer(client, fitted, history)
        assert client.post("/v1/ranker/items", data={"id": warm, "text": "x"}).status_code == 409
        assert client.post("/v1/ranker/items", data={"id": cold[0]}).status_code == 422
        for item in cold:
            assert (
                client.post("/v1/ranker/items", data={"id": item, "text": texts[item]}).status_code
                == 200
            )
        # Recommendable on the next request, with the offline cold vector.
        got = client.get(
            f"/v1/users/{user}/recommendations", params={"k": 3, "segment": "cold"}
        ).json()
        assert sorted(got["ids"]) == sorted(cold) and set(got["segments"]) == {"cold"}
        rows = {str(i): r for r, i in enumerate(data.item_ids)}
        uvec = fitted.users[0]
        want = {i: float(uvec @ fitted.items[rows[i]]) for i in cold}
        for i, s in zip(got["ids"], got["scores"]):
            assert s == pytest.approx(want[i], rel=1e-5, abs=1e-5)
        assert client.delete(f"/v1/ranker/items/{cold[0]}").status_code == 200
        assert client.delete(f"/v1/ranker/items/{cold[0]}").status_code == 404
        got = client.get(f"/v1/users/{user}/recommendations", params={"segment": "cold"}).json()
        assert cold[0] not in got["ids"]
        seen = set(service.seen(user))
        got = client.get(f"/v1/users/{user}/recommendations", params={"k": 50}).json()
        assert seen and not seen & set(got["ids"])
    # Reopened from the same directory: the acknowledged uploads (and the delete) are there.
    from coldstart.ranker_serving import RankerArtifact, open_ranker_service

    again = open_ranker_service(RankerArtifact.load(root / "ours"), tmp_path / "ranker")
    try:
        assert again.cold.contains(cold) == [False, True, True]
    finally:
        again.close()


@pytest.mark.slow
def test_serve_flags_refuse_what_does_not_fit(served, tmp_path) -> None:
    import argparse

    from coldstart.ranker_serving import add_ranker_arguments, ranker_from_args

    data, fitted, root, texts, encode, content = served
    p = argparse.ArgumentParser()
    add_ranker_arguments(p)
    assert ranker_from_args(p.parse_args([]), None) is None
    with pytest.raises(ValueError, match="--ranker-store"):
        ranker_from_args(p.parse_args(["--ranker", str(root / "ours")]), 384)
    store = ["--ranker-store", str(tmp_path / "s")]
    with pytest.raises(ValueError, match="encoder has dim 512"):
        ranker_from_args(p.parse_args(["--ranker", str(root / "ours"), *store]), 512)
    with pytest.raises(FileNotFoundError, match="not a ranker method directory"):
        ranker_from_args(p.parse_args(["--ranker", str(tmp_path), *store]), 384)
    service = ranker_from_args(p.parse_args(["--ranker", str(root / "ours"), *store]), 384)
    try:
        assert service.warm.count() == int((data.item_split == "warm").sum())
    finally:
        service.close()


@pytest.mark.parametrize("backend", ["faiss", "milvus"])
def test_ranker_stores_of_every_backend_answer_the_offline_ranking(backend, tmp_path) -> None:
    if backend == "milvus":
        pytest.importorskip("milvus_lite")
    from coldstart.ranker.lit import synthetic_ranker_data
    from coldstart.ranker.methods import export_vectors, fit_method, resolve_method
    from coldstart.ranker_serving import RankerArtifact, open_ranker_service

    data = synthetic_ranker_data(n_items=300, n_users=120, seed=0)
    f = fit_method("content_projection", data, params={"dim": 8, "epochs": 1})
    export_vectors(tmp_path / "m", data, f.items, f.users, resolve_method(f.name), f.cold_item)
    service = open_ranker_service(RankerArtifact.load(tmp_path / "m"), tmp_path / "s", backend)
    try:
        cold_rows = np.flatnonzero(data.item_split == "cold_test")
        service.add_items([int(i) for i in data.item_ids[cold_rows]], data.content[cold_rows])
        user = 5
        seen = service.seen(int(data.user_ids[user]))
        ids, scores, _ = service.recommend(f.users[user], 10, seen, "all")
        # The offline ranking over warm + cold_test items, seen masked.
        rows = np.concatenate([np.flatnonzero(data.item_split == "warm"), cold_rows])
        rows = rows[~np.isin(data.item_ids[rows], seen)]
        offline = f.users[user] @ f.items[rows].T
        best = rows[np.argsort(-offline, kind="stable")[:10]]
        assert ids == [int(i) for i in data.item_ids[best]]
        np.testing.assert_allclose(scores, np.sort(offline)[::-1][:10], rtol=1e-5, atol=1e-5)
    finally:
        service.close()


def test_torchrec_model_serves_a_new_user(tmp_path) -> None:
    """A model trained with TorchRec tables exports its user side (a plain torch-tables copy of
    the user tower): POST /v1/recommendations answers with that history's vector."""
    from fastapi.testclient import TestClient

    from coldstart.index.config import ServerConfig
    from coldstart.index.server import create_app
    from coldstart.ranker.lit import synthetic_ranker_data
    from coldstart.ranker.methods import export_fitted, fit_method, resolve_method
    from coldstart.ranker_serving import RankerArtifact, open_ranker_service

    data = synthetic_ranker_data(n_items=300, n_users=120, seed=0)
    params = {"dim": 8, "epochs": 1, "content_hidden": 16, "history_len": 10, "tables": "torchrec"}
    f = fit_method("warmstart", data, params=params)
    export_fitted(tmp_path / "m", f, resolve_method("warmstart", params))
    service = open_ranker_service(RankerArtifact.load(tmp_path / "m"), tmp_path / "s")
    app = create_app(None, ServerConfig(), ranker=service)
    with TestClient(app) as client:
        wait_ready(client)
        assert client.get("/v1/ranker").json()["history_users"] is True
        history = [int(i) for i in data.item_ids[data.item_split == "warm"][:5]]
        assert_new_user_answer(client, f, history)
