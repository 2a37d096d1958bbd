"""The HTTP API on a real uvicorn server (127.0.0.1, random port)."""

from __future__ import annotations

import asyncio
import io
import threading
import zlib

import httpx
import numpy as np
import pytest
from PIL import Image

from coldstart.index.coldstart import IdRows, estimate_row, neighbour_weights
from coldstart.index.config import ServerConfig
from coldstart.index.server import create_app
from tests.index.conftest import DIM, N, live_server, wait_ready

TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def fake_encode(vectors: np.ndarray):
    """A deterministic 'encoder': the text is an item id; images map by mean brightness."""

    def encode(images, texts):
        parts = [vectors[int(t) % len(vectors)] for t in texts]
        parts += [vectors[int(np.asarray(im).mean()) % len(vectors)] for im in images]
        return np.mean(parts, axis=0)

    return encode


def png(width=8, height=8, value=3) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), (value, value, value)).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture
def server(durable, vectors, monkeypatch):
    monkeypatch.setenv("COLDSTART_API_TOKEN", TOKEN)
    rows = np.arange(N * 3, dtype=np.float32).reshape(N, 3)  # ID row of item i: [3i, 3i+1, 3i+2]
    config = ServerConfig(max_body_bytes=200_000, max_image_pixels=10_000, max_k=50)
    app = create_app(
        durable, config, encode=fake_encode(vectors), id_rows=IdRows(list(range(N)), rows)
    )
    with live_server(app) as url, httpx.Client(base_url=url, timeout=30) as client:
        wait_ready(client)
        yield client, app


def test_search_get_neighbors(server, vectors):
    client, _ = server
    r = client.post("/v1/search", json={"vectors": vectors[:3].tolist(), "k": 4})
    assert r.status_code == 200
    results = r.json()["results"]
    assert [res["ids"][0] for res in results] == [0, 1, 2]
    assert len(results[0]["ids"]) == 4 and results[0]["scores"][0] == pytest.approx(1, abs=1e-4)
    r = client.get("/v1/items/7")
    assert r.status_code == 200 and r.json()["id"] == 7
    np.testing.assert_allclose(r.json()["vector"], vectors[7], atol=1e-5)
    r = client.get("/v1/items/7/neighbors", params={"k": 5})
    assert r.status_code == 200 and 7 not in r.json()["ids"] and len(r.json()["ids"]) == 5
    assert client.get("/v1/items/99999").status_code == 404
    assert client.get("/v1/items/99999/neighbors").status_code == 404
    assert client.get("/v1/items/abc").status_code == 422
    assert client.get("/openapi.json").json()["info"]["version"] == "v1"


def test_writes_need_the_token(server, vectors):
    client, _ = server
    body = {"items": [{"id": 5000, "vector": vectors[0].tolist()}]}
    assert client.post("/v1/items", json=body).status_code == 401
    bad = {"Authorization": "Bearer nope"}
    assert client.post("/v1/items", json=body, headers=bad).status_code == 401
    assert client.delete("/v1/items/1").status_code == 401
    r = client.post("/v1/items", json=body, headers=AUTH)
    assert r.status_code == 200 and r.json()["upserted"] == 1
    r = client.post("/v1/search", json={"vectors": [vectors[0].tolist()], "k": 2})
    assert set(r.json()["results"][0]["ids"]) == {0, 5000}
    assert client.delete("/v1/items/5000", headers=AUTH).status_code == 200
    assert client.delete("/v1/items/5000", headers=AUTH).status_code == 404
    assert client.get("/v1/items/5000").status_code == 404
    assert client.post("/v1/snapshot", headers=AUTH).json()["written"] is True


def test_writes_disabled_without_a_token(durable, monkeypatch):
    monkeypatch.delenv("COLDSTART_API_TOKEN", raising=False)
    app = create_app(durable, ServerConfig(), close_on_shutdown=False)
    with live_server(app) as url, httpx.Client(base_url=url) as client:
        wait_ready(client)
        r = client.delete("/v1/items/1")
        assert r.status_code == 403 and "no token configured" in r.json()["detail"]


def test_token_file_and_auth_reads(durable, tmp_path, vectors):
    token_file = tmp_path / "token"
    token_file.write_text("file-token\n")
    config = ServerConfig(token_file=str(token_file), auth_reads=True)
    app = create_app(durable, config, close_on_shutdown=False)
    with live_server(app) as url, httpx.Client(base_url=url) as client:
        wait_ready(client)
        body = {"vectors": [vectors[0].tolist()], "k": 1}
        assert client.post("/v1/search", json=body).status_code == 401
        ok = client.post("/v1/search", json=body, headers={"Authorization": "Bearer file-token"})
        assert ok.status_code == 200
        assert client.get("/health").status_code == 200  # ops endpoints stay open


def test_bad_input_is_4xx(server, vectors):
    client, _ = server
    v = vectors[0].tolist()
    cases = [
        ({"vectors": [v[:-1]], "k": 3}, 422),  # wrong dimension
        ({"vectors": [v], "k": 0}, 422),
        ({"vectors": [v], "k": 51}, 422),
        ({"vectors": [], "k": 3}, 422),
        ({"vectors": "abc"}, 422),
        ({"vectors": [v], "k": 3, "extra": 1}, 422),
        ({"vectors": [[0.0] * DIM], "k": 3}, 422),  # zero vector cannot be normalized
    ]
    for body, status in cases:
        r = client.post("/v1/search", json=body)
        assert r.status_code == status, (body, r.text)
    nan = '{"vectors": [[' + ",".join(["NaN"] * DIM) + ']], "k": 3}'
    inf = '{"vectors": [[' + ",".join(["Infinity"] * DIM) + ']], "k": 3}'
    huge = '{"vectors": [[' + ",".join(["1e999"] * DIM) + ']], "k": 3}'  # beyond float64
    for raw in (nan, inf, huge, "{not json", "", "[1, 2", "null"):
        r = client.post("/v1/search", content=raw, headers={"content-type": "application/json"})
        assert 400 <= r.status_code < 500, (raw, r.status_code)
    upserts = [
        {"items": [{"id": 1.5, "vector": v}]},
        {"items": [{"id": True, "vector": v}]},
        {"items": [{"id": "x", "vector": v}]},
        {"items": []},
    ]
    for body in upserts:
        r = client.post("/v1/items", json=body, headers=AUTH)
        assert r.status_code == 422, (body, r.text)


def test_oversized_bodies_get_413(server, vectors):
    client, _ = server
    big = {"vectors": [vectors[0].tolist()] * 2000, "k": 3}
    r = client.post("/v1/search", json=big)
    assert r.status_code == 413

    def chunks():  # no Content-Length: streamed, counted by our middleware
        for _ in range(100):
            yield b" " * 10_000

    r = client.post("/v1/search", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413
    assert client.get("/health").status_code == 200  # still alive
    lines = client.get("/metrics").text.splitlines()
    counted = [float(ln.split()[-1]) for ln in lines if 'status="413"' in ln and "_total" in ln]
    assert sum(counted) == 2  # metrics sit outside the body limit and count its 413s


def test_media_search_and_upload_guards(server, vectors):
    client, _ = server
    r = client.post("/v1/search/media", data={"text": "11", "k": "3"})
    assert r.status_code == 200 and r.json()["ids"][0] == 11
    r = client.post("/v1/search/media", files={"image": ("a.png", png(value=3), "image/png")})
    assert r.status_code == 200 and r.json()["ids"][0] == 3
    r = client.post("/v1/search/media", files={"image": ("a.txt", b"hello world", "text/plain")})
    assert r.status_code == 415
    bomb = png(width=200, height=200)  # 40,000 pixels > the 10,000-pixel limit; tiny file
    assert len(bomb) < 2000
    r = client.post("/v1/search/media", files={"image": ("b.png", bomb, "image/png")})
    assert r.status_code == 413 and "pixel" in r.json()["detail"]
    noisy = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(
        noisy, format="PNG"
    )
    truncated = noisy.getvalue()[: len(noisy.getvalue()) // 2]
    r = client.post("/v1/search/media", files={"image": ("c.png", truncated, "image/png")})
    assert r.status_code in (415, 422)
    r = client.post("/v1/search/media", files={"image": ("d.png", b"", "image/png")})
    assert 400 <= r.status_code < 500
    assert client.post("/v1/search/media", data={"k": "3"}).status_code == 422
    assert client.post("/v1/search/media", data={"text": "1", "k": "x"}).status_code == 422


def test_cold_start_estimate_and_insert(server, vectors):
    client, _ = server
    query = (vectors[10] + vectors[11]) / 2
    r = client.post("/v1/coldstart", json={"vector": query.tolist(), "k": 4})
    assert r.status_code == 200
    out = r.json()
    ids, scores = out["neighbors"]["ids"], np.asarray(out["neighbors"]["scores"])
    rows = np.asarray([[3 * i, 3 * i + 1, 3 * i + 2] for i in ids], dtype=np.float32)
    np.testing.assert_allclose(out["id_row"], estimate_row(rows, scores), rtol=1e-4)
    assert out["id_row_neighbors"] == 4 and out["inserted"] is False
    # insert needs the token and an id
    body = {"vector": query.tolist(), "k": 4, "item_id": 7777, "insert": True}
    assert client.post("/v1/coldstart", json=body).status_code == 401
    no_id = {"vector": query.tolist(), "insert": True}
    assert client.post("/v1/coldstart", json=no_id, headers=AUTH).status_code == 422
    r = client.post("/v1/coldstart", json=body, headers=AUTH)
    assert r.status_code == 200 and r.json()["inserted"] is True
    assert 7777 not in r.json()["neighbors"]["ids"]
    r = client.post("/v1/search", json={"vectors": [query.tolist()], "k": 1})
    assert r.json()["results"][0]["ids"] == [7777]  # retrievable at once
    # by media, multipart
    r = client.post(
        "/v1/coldstart/media",
        data={"text": "20", "k": "3", "item_id": "8888", "insert": "true"},
        files={"image": ("x.png", png(value=20), "image/png")},
        headers=AUTH,
    )
    assert r.status_code == 200 and r.json()["neighbors"]["ids"][0] == 20
    assert client.get("/v1/items/8888").status_code == 200
    assert client.post("/v1/coldstart", json={"k": 3}).status_code == 422


def test_neighbour_weights():
    np.testing.assert_allclose(neighbour_weights(np.array([0.5, 0.5, -1.0])), [0.5, 0.5, 0])
    np.testing.assert_allclose(neighbour_weights(np.array([-1.0, -2.0])), [0.5, 0.5])
    assert neighbour_weights(np.array([0.0, 3.0]), "l2")[0] > 0.5


def test_no_encoder_is_501(durable):
    app = create_app(durable, ServerConfig(), close_on_shutdown=False)
    with live_server(app) as url, httpx.Client(base_url=url) as client:
        wait_ready(client)
        r = client.post("/v1/search/media", data={"text": "hello"})
        assert r.status_code == 501 and "--encoder" in r.json()["detail"]


def test_ready_is_503_until_loaded_and_metrics(durable, vectors):
    gate = threading.Event()

    def slow_load():
        gate.wait(20)
        return durable

    app = create_app(slow_load, ServerConfig(max_wait_ms=5), close_on_shutdown=False)
    with live_server(app) as url, httpx.Client(base_url=url) as client:
        assert client.get("/ready").status_code == 503
        assert client.get("/health").json()["ready"] is False
        r = client.post("/v1/search", json={"vectors": [vectors[0].tolist()], "k": 1})
        assert r.status_code == 503
        gate.set()
        wait_ready(client)
        health = client.get("/health").json()
        assert health["device"] == "cpu" and health["items"] == N

        async def burst() -> list[int]:
            async with httpx.AsyncClient(base_url=url) as aclient:
                body = {"vectors": [vectors[0].tolist()], "k": 3}
                rs = await asyncio.gather(
                    *[aclient.post("/v1/search", json=body) for _ in range(32)]
                )
                return [r.status_code for r in rs]

        assert asyncio.run(burst()) == [200] * 32
        text = client.get("/metrics").text
        assert "coldstart_index_items 600.0" in text
        assert (
            'coldstart_http_requests_total{method="POST",route="/v1/search",status="200"} 32.0'
            in text
        )
        assert 'route="/v1/search",status="503"' in text
        # micro-batching put several requests into one FAISS call
        rows = float(text.split("coldstart_search_batch_rows_sum ")[1].split()[0])
        calls = float(text.split("coldstart_search_batch_rows_count ")[1].split()[0])
        assert rows == 32 and calls < 32


def test_concurrent_readers_and_writers_over_http(server, vectors):
    client, _ = server
    base_url = str(client.base_url)
    rng = np.random.default_rng(3)
    fresh = rng.standard_normal((120, DIM)).astype(np.float32)
    fresh /= np.linalg.norm(fresh, axis=1, keepdims=True)

    async def run() -> tuple[list[int], list[int]]:
        async with httpx.AsyncClient(base_url=base_url, timeout=30) as aclient:

            async def writer(lo: int) -> list[int]:
                codes = []
                for i in range(lo, lo + 60, 10):
                    items = [
                        {"id": 10_000 + j, "vector": fresh[j].tolist()} for j in range(i, i + 10)
                    ]
                    r = await aclient.post("/v1/items", json={"items": items}, headers=AUTH)
                    codes.append(r.status_code)
                    r = await aclient.delete(f"/v1/items/{i}", headers=AUTH)  # old warm items
                    codes.append(r.status_code)
                return codes

            async def reader() -> list[int]:
                codes = []
                for _ in range(15):
                    r = await aclient.post(
                        "/v1/search", json={"vectors": vectors[:8].tolist(), "k": 5}
                    )
                    codes.append(r.status_code)
                    for res in r.json()["results"]:
                        assert len(res["ids"]) == 5 and len(set(res["ids"])) == 5
                return codes

            results = await asyncio.gather(writer(0), writer(60), *[reader() for _ in range(4)])
            return [c for rs in results[:2] for c in rs], [c for rs in results[2:] for c in rs]

    write_codes, read_codes = asyncio.run(run())
    assert set(write_codes) == {200} and set(read_codes) == {200}
    r = client.post("/v1/search", json={"vectors": fresh.tolist(), "k": 1})
    assert [res["ids"][0] for res in r.json()["results"]] == [10_000 + j for j in range(120)]
    deleted = [i for lo in (0, 60) for i in range(lo, lo + 60, 10)]
    assert all(client.get(f"/v1/items/{i}").status_code == 404 for i in deleted)
    assert client.get("/ready").json()["items"] == N + 120 - len(deleted)


def test_openapi_document_lists_security_statuses_and_shapes(server):
    client, _ = server
    doc = client.get("/openapi.json").json()
    assert doc["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"
    ops = doc["paths"]
    upsert = ops["/v1/items"]["post"]
    assert upsert["security"] == [{"bearerAuth": []}]
    assert set(upsert["responses"]) == {"200", "400", "401", "409", "413", "415", "422", "503"}
    search = ops["/v1/search"]["post"]
    assert "security" not in search or search["security"] == []  # reads are open here
    assert set(search["responses"]) == {"200", "400", "413", "415", "422", "503"}
    assert ops["/v1/coldstart"]["post"]["security"] == [{}, {"bearerAuth": []}]  # insert=true
    assert set(ops["/v1/items/{item_id}"]["delete"]["responses"]) == {
        "200", "401", "404", "422", "503",
    }  # fmt: skip
    for path, methods in ops.items():  # one error model everywhere
        for method, op in methods.items():
            for status, response in op["responses"].items():
                if int(status) >= 400:
                    schema = response["content"]["application/json"]["schema"]
                    assert schema == {"$ref": "#/components/schemas/ErrorResponse"}, (path, method)
    assert doc["components"]["schemas"]["ErrorResponse"]["properties"]["detail"]["type"] == "string"
    # Shapes come from the served index: int ids, DIM-long non-zero vectors, k <= max_k.
    param = ops["/v1/items/{item_id}"]["get"]["parameters"][0]
    assert param["schema"]["type"] == "integer" and param["schema"]["maximum"] == 2**63 - 1
    body = doc["components"]["schemas"]["SearchRequest"]["properties"]
    assert body["vectors"]["items"]["minItems"] == body["vectors"]["items"]["maxItems"] == DIM
    assert body["k"]["maximum"] == 50


def test_errors_share_one_model(server, vectors):
    client, _ = server
    json_type = {"content-type": "application/json"}
    cases = [
        client.post("/v1/search", content=b'{"vectors": [[\xff\xfe]]}', headers=json_type),
        client.post("/v1/search", content=b"\xc3\x28", headers=json_type),  # not UTF-8
        client.post("/v1/search", json={"vectors": [[1.0]], "k": "3"}),
        client.post("/v1/search", content=b"{}", headers={"content-type": "text/plain"}),
        client.get("/v1/items/abc"),
        client.get("/v1/items/99999"),
        client.post("/v1/items", json={"items": []}),
        client.request("PATCH", "/v1/items/1"),
        client.get("/no/such/route"),
    ]
    statuses = [r.status_code for r in cases]
    assert statuses == [422, 422, 422, 415, 422, 404, 401, 405, 404]
    for r in cases:
        assert isinstance(r.json()["detail"], str) and r.json()["detail"], r.text
    assert cases[2].json()["errors"][0]["loc"][:2] == ["body", "vectors"]
    assert cases[7].headers["allow"] == "DELETE, GET"  # every method of the path


@pytest.mark.parametrize("batching", [True, False])
def test_faiss_threads_apply_where_searches_run(durable, vectors, batching):
    """OpenMP settings are per thread: --faiss-threads set in the loader thread never reached
    the threads that search (issue 9, item 6). /health reports what the last search saw."""
    config = ServerConfig(faiss_threads=3, batching=batching)  # 3: not this machine's default
    app = create_app(durable, config, close_on_shutdown=False)
    with live_server(app) as url, httpx.Client(base_url=url) as client:
        wait_ready(client)
        assert client.get("/health").json()["faiss_threads"] is None  # no search yet
        for _ in range(3):
            r = client.post("/v1/search", json={"vectors": vectors[:2].tolist(), "k": 3})
            assert r.status_code == 200
        assert client.get("/health").json()["faiss_threads"] == 3


def test_images_are_decoded_off_the_event_loop(server, monkeypatch):
    import coldstart.index.app_state as state_module

    seen = []
    real = state_module.decode_upload

    def spy(data, max_pixels):
        try:
            asyncio.get_running_loop()
            seen.append("event loop")
        except RuntimeError:
            seen.append("worker thread")
        return real(data, max_pixels)

    monkeypatch.setattr(state_module, "decode_upload", spy)
    client, _ = server
    r = client.post("/v1/search/media", files={"image": ("a.png", png(value=3), "image/png")})
    assert r.status_code == 200 and seen == ["worker thread"]


def test_upload_decoder_answers_in_the_error_model(monkeypatch):
    """The server decodes through data.images (one bomb-safe decoder for shards and server);
    each refusal is its own status with a clear detail."""
    from coldstart.index.api import HTTPError, decode_upload

    claimed = bytearray(png(8, 8))  # a tiny PNG whose header claims 100000 x 100000 pixels
    claimed[16:24] = (100_000).to_bytes(4, "big") * 2
    claimed[29:33] = zlib.crc32(bytes(claimed[12:29])).to_bytes(4, "big")
    noisy = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(
        noisy, format="PNG"
    )
    cases = {
        bytes(claimed): (413, "decompression bomb"),
        png(200, 200): (413, "exceeds the 10000-pixel limit"),
        noisy.getvalue()[:400]: (422, "corrupt or truncated image"),
        b"": (422, "empty image"),
        b"hello": (415, "upload is not a supported image"),
    }
    for data, (status, detail) in cases.items():
        with pytest.raises(HTTPError) as info:
            decode_upload(data, 10_000)
        assert (info.value.status, detail in info.value.detail) == (status, True), data[:20]
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # PIL's limit holds above ours
    with pytest.raises(HTTPError) as info:
        decode_upload(png(40, 40), 10_000)
    assert info.value.status == 413
    assert decode_upload(png(8, 8, value=9), 10_000).getpixel((0, 0)) == (9, 9, 9)


def test_no_import_circle_between_the_app_and_its_routes():
    """index.browse and the routers never import the app factory (index.server)."""
    import subprocess
    import sys

    code = (
        "import sys, coldstart.index.browse, coldstart.index.routes_browse, "
        "coldstart.index.routes_ops, coldstart.index.routes_search, coldstart.index.routes_items,"
        " coldstart.index.routes_coldstart; print('coldstart.index.server' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
