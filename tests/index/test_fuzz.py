"""Bounded fuzz of the HTTP API (hypothesis): no input may produce a 5xx."""

from __future__ import annotations

import json

import httpx
import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from coldstart.index.config import IndexConfig, ServerConfig, StoreConfig
from coldstart.index.server import create_app
from coldstart.index.store import DurableIndex
from coldstart.index.vector_index import VectorIndex
from tests.index.conftest import live_server, wait_ready

DIM = 8
TOKEN = "fuzz"

json_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
)
json_any = st.recursive(
    json_leaf,
    lambda inner: st.one_of(
        st.lists(inner, max_size=6), st.dictionaries(st.text(max_size=8), inner, max_size=5)
    ),
    max_leaves=30,
)
floats = st.floats(allow_nan=True, allow_infinity=True, width=64)
vector = st.one_of(
    st.lists(floats, min_size=DIM, max_size=DIM),
    st.lists(st.floats(-2, 2), min_size=0, max_size=DIM + 2),
    json_any,
)
item_id = st.one_of(st.integers(-(2**64), 2**64), st.text(max_size=12), json_leaf)
k = st.one_of(st.integers(-5, 2000), json_leaf)
bodies = {
    "/v1/search": st.one_of(
        st.fixed_dictionaries({"vectors": st.lists(vector, max_size=4), "k": k}), json_any
    ),
    "/v1/items": st.one_of(
        st.fixed_dictionaries(
            {
                "items": st.lists(
                    st.fixed_dictionaries({"id": item_id, "vector": vector}), max_size=4
                )
            }
        ),
        json_any,
    ),
    "/v1/coldstart": st.one_of(
        st.fixed_dictionaries(
            {},
            optional={
                "vector": vector,
                "text": st.text(max_size=10),
                "k": k,
                "item_id": item_id,
                "insert": json_leaf,
            },
        ),
        json_any,
    ),
}
path_part = st.one_of(st.integers(-(2**65), 2**65).map(str), st.text(max_size=15))


@st.composite
def requests(draw):
    kind = draw(st.sampled_from(["post", "post", "raw", "get", "get_nb", "delete", "media"]))
    auth = draw(st.booleans())
    if kind == "post":
        path = draw(st.sampled_from(sorted(bodies)))
        raw = json.dumps(draw(bodies[path]))  # allow_nan: NaN/Infinity literals go out as-is
        return (
            "POST",
            path,
            {"content": raw, "headers": {"content-type": "application/json"}},
            auth,
        )
    if kind == "raw":
        path = draw(st.sampled_from(sorted(bodies)))
        raw = draw(st.binary(max_size=64) | st.text(max_size=64).map(str.encode))
        return (
            "POST",
            path,
            {"content": raw, "headers": {"content-type": "application/json"}},
            auth,
        )
    if kind == "get":
        return ("GET", f"/v1/items/{draw(path_part)}", {}, auth)
    if kind == "get_nb":
        params = {"k": draw(st.text(max_size=5) | st.integers(-3, 3000).map(str))}
        return ("GET", f"/v1/items/{draw(path_part)}/neighbors", {"params": params}, auth)
    if kind == "delete":
        return ("DELETE", f"/v1/items/{draw(path_part)}", {}, auth)
    files = {"image": ("f", draw(st.binary(max_size=200)), "image/png")}
    data = {"text": draw(st.text(max_size=10)), "k": draw(st.text(max_size=4))}
    if draw(st.booleans()):
        data.update(insert="true", item_id=draw(st.text(max_size=6)))
    return ("POST", "/v1/coldstart/media", {"files": files, "data": data}, auth)


def test_fuzz_api_never_5xx(tmp_path, monkeypatch):
    monkeypatch.setenv("COLDSTART_API_TOKEN", TOKEN)
    x = np.random.default_rng(0).standard_normal((64, DIM)).astype(np.float32)
    index = VectorIndex.build(range(64), x, IndexConfig(factory="HNSW8"))
    durable = DurableIndex.create(tmp_path / "idx", index, StoreConfig(fsync=False))

    def encode(images, texts):
        return x[len(texts) % 64] + 0.1 * len(images)

    app = create_app(durable, ServerConfig(max_k=100, max_body_bytes=50_000), encode=encode)
    statuses: dict[int, int] = {}
    with live_server(app) as url, httpx.Client(base_url=url, timeout=30) as client:
        wait_ready(client)

        @settings(
            max_examples=300,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
            derandomize=True,
        )
        @given(requests())
        def check(req):
            method, path, kwargs, auth = req
            headers = dict(kwargs.pop("headers", {}))
            if auth:
                headers["Authorization"] = f"Bearer {TOKEN}"
            try:
                r = client.request(method, path, headers=headers, **kwargs)
            except httpx.InvalidURL:
                return  # the client refuses to send it (control characters in the path)
            statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
            assert r.status_code < 500, (method, path, kwargs, r.status_code, r.text)

        check()
        assert client.get("/health").status_code == 200
    assert sum(statuses.values()) >= 250
    assert any(200 <= s < 300 for s in statuses), statuses  # some valid requests got through
    assert any(400 <= s < 500 for s in statuses), statuses
