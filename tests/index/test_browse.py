"""Catalogue + media stores and the routes of the browsing page, on a real uvicorn server."""

from __future__ import annotations

import gzip
import io
import re
import tarfile
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from coldstart.data.io import write_table
from coldstart.data.shards import write_shards
from coldstart.index.browse import STATIC_DIR, BrowseConfig
from coldstart.index.catalogue import ByteLRU, Catalogue, MediaStore, json_safe
from coldstart.index.config import ServerConfig
from coldstart.index.server import create_app
from tests.index.conftest import live_server, wait_ready

TOKEN = "browse-token"


def rgb(value: int, size: tuple[int, int] = (40, 30)) -> np.ndarray:
    return np.full((size[1], size[0], 3), value, dtype=np.uint8)  # (H, W, 3)


def png_bytes(width: int, height: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), (10, 200, 30)).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture
def shards(tmp_path):
    """Two shards: ids from JSON, from the key, from the catalogue's media_key; a bad image."""
    samples = [
        {"key": "a0", "image": rgb(10), "json": {"item_id": 3}},  # JSON names the id
        {"key": "000004", "image": rgb(20)},  # digits: the key is the id
        {"key": "poster-five", "image": rgb(30)},  # the catalogue maps media_key -> 5
        {"key": "bigger", "image": png_bytes(300, 200), "json": {"item_id": 6}},
        {"key": "junk", "image": b"this is not an image", "json": {"item_id": 7}},
        {"key": "dup", "image": rgb(40), "json": {"item_id": 3}},  # second image of item 3
        {"key": "text-only", "text": "no image here", "json": {"item_id": 8}},
    ]
    return write_shards(samples, str(tmp_path / "shards" / "s-%02d.tar"), maxcount=4)


@pytest.fixture
def catalogue():
    items = pd.DataFrame(
        {
            "item_id": [3, 4, 5, 6, 7, 8, 9],
            "title": ["Three", "Four", "Five", "Six", "Seven", "Eight", "<b>Nine</b> & co"],
            "genres": [["a", "b"], [], ["c"], None, ["d"], ["e"], ["f"]],
            "media_key": [None, None, "poster-five", None, None, None, None],
            "year": [1999.0, np.nan, 2001.0, 2002.0, 2003.0, 2004.0, 2005.0],
        }
    )
    return Catalogue(items, id_type="int", source="test")


def test_media_store_maps_ids_and_reads_bytes_in_place(shards, catalogue):
    media = MediaStore.scan(shards, "int", catalogue.media_keys())
    assert sorted(media.refs) == [3, 4, 5, 6, 7]
    assert media.report["skipped"] == {"duplicate_id": 1}
    assert media.report == {"shards": 2, "images": 5, "skipped": {"duplicate_id": 1}}
    # The bytes read at the recorded offset are the member's bytes, byte for byte.
    with tarfile.open(shards[0]) as tar:
        member = tar.extractfile("a0.jpg").read()
    assert media.read(3) == member
    assert np.asarray(Image.open(io.BytesIO(media.read(4)))).mean() == pytest.approx(20, abs=2)
    assert np.asarray(Image.open(io.BytesIO(media.read(5)))).mean() == pytest.approx(30, abs=2)
    with pytest.raises(KeyError):
        media.read(8)  # text only
    media.close()
    # String ids: JSON ids and digit keys as the embedding job reads them, then as strings.
    media = MediaStore.scan(shards, "str")
    assert sorted(media.refs) == ["3", "4", "6", "7", "poster-five"]


def test_media_store_refuses_compressed_and_missing_shards(shards, tmp_path):
    packed = tmp_path / "packed.tar.gz"
    packed.write_bytes(gzip.compress(Path(shards[0]).read_bytes()))
    with pytest.raises(ValueError, match="gzip-compressed.*uncompressed tar"):
        MediaStore.scan(str(packed))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        MediaStore.scan(str(tmp_path / "nope-{0..1}.tar"))


def test_catalogue_rows_are_json_safe(tmp_path, catalogue):
    row = catalogue.get(3)
    assert row == {
        "id": 3,
        "title": "Three",
        "fields": {"title": "Three", "genres": ["a", "b"], "year": 1999.0},
    }
    assert "year" not in catalogue.get(4)["fields"]  # NaN dropped, as are empty lists
    assert catalogue.get(10) is None and len(catalogue) == 7
    assert json_safe(np.array([np.int64(1), np.int64(2)])) == [1, 2]
    assert json_safe(float("inf")) is None
    # Loading from Parquet and CSV; duplicates and bad ids counted, not fatal.
    frame = pd.DataFrame({"item_id": ["1", "1", "x", "2"], "title": ["a", "b", "c", "d"]})
    frame.to_csv(tmp_path / "items.csv", index=False)
    loaded = Catalogue.load(tmp_path / "items.csv", "int")
    assert len(loaded) == 2 and dict(loaded.skipped) == {"duplicate_id": 1, "bad_id": 1}
    assert loaded.get(1)["title"] == "a"
    write_table(frame.iloc[[0, 3]], tmp_path / "items.parquet")
    assert Catalogue.load(tmp_path / "items.parquet", "str").get("2")["title"] == "d"
    pd.DataFrame({"movieId": [1]}).to_csv(tmp_path / "movies.csv", index=False)
    with pytest.raises(ValueError, match="no item_id column"):
        Catalogue.load(tmp_path / "movies.csv")
    with pytest.raises(FileNotFoundError):
        Catalogue.load(tmp_path / "missing.parquet")


def test_byte_lru_is_bounded_in_bytes():
    cache = ByteLRU(10)
    cache.put("a", b"1234")
    cache.put("b", b"1234")
    assert cache.get("a") == b"1234"  # a is now the most recent
    cache.put("c", b"1234")  # evicts b
    assert cache.get("b") is None and cache.get("a") and cache.get("c")
    assert cache.size == 8
    cache.put("huge", b"x" * 11)  # larger than the whole cache: not kept
    assert cache.get("huge") is None


@pytest.fixture
def server(durable, shards, catalogue, monkeypatch):
    monkeypatch.setenv("COLDSTART_API_TOKEN", TOKEN)
    media = MediaStore.scan(shards, "int", catalogue.media_keys())
    config = ServerConfig(max_image_pixels=100_000, max_body_bytes=200_000)
    app = create_app(
        durable, config, catalogue=catalogue, media=media, browse=BrowseConfig(max_age_s=60)
    )
    with live_server(app) as url, httpx.Client(base_url=url, timeout=30) as client:
        wait_ready(client)
        yield client, app
    media.close()


def test_meta_route(server):
    client, _ = server
    r = client.get("/v1/items/5/meta")
    assert r.status_code == 200
    assert r.json() == {
        "id": 5,
        "title": "Five",
        "fields": {"title": "Five", "genres": ["c"], "media_key": "poster-five", "year": 2001.0},
        "has_image": True,
    }
    assert r.headers["cache-control"] == "public, max-age=60"
    assert client.get("/v1/items/8/meta").json()["has_image"] is False
    assert client.get("/v1/items/9/meta").json()["title"] == "<b>Nine</b> & co"  # data, as is
    r = client.get("/v1/items/12345/meta")
    assert r.status_code == 404 and "not in the catalogue" in r.json()["detail"]
    assert client.get("/v1/items/abc/meta").status_code == 422


def test_image_route_thumbnails_cache_and_guards(server):
    client, app = server
    r = client.get("/v1/items/6/image", params={"size": 64})
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
    thumb = Image.open(io.BytesIO(r.content))
    assert thumb.format == "JPEG" and thumb.size == (64, 43)  # 300x200, longest side 64
    assert client.get("/v1/items/6/image").status_code == 200  # default size 256: no upscale
    assert Image.open(io.BytesIO(client.get("/v1/items/6/image").content)).size == (256, 171)
    thumbs = app.state.thumbnails
    hits = thumbs.cache.hits
    assert client.get("/v1/items/6/image", params={"size": 64}).content == r.content
    assert thumbs.cache.hits == hits + 1
    # 404: no image (text-only sample, catalogue-only item, unknown id).
    for item in (8, 9, 424242):
        r = client.get(f"/v1/items/{item}/image")
        assert r.status_code == 404 and "has no image" in r.json()["detail"]
    # The upload guards apply to stored images: not an image -> 415.
    r = client.get("/v1/items/7/image")
    assert r.status_code == 415 and "not a supported image" in r.json()["detail"]
    # Bad sizes and ids -> 422 with a message.
    for size in (0, 5000, -1):
        r = client.get("/v1/items/6/image", params={"size": size})
        assert r.status_code == 422 and "query.size" in r.json()["detail"]
    assert client.get("/v1/items/6/image", params={"size": "big"}).status_code == 422
    assert client.get("/v1/items/x/image").status_code == 422


def test_stored_images_over_the_limits_get_413(durable, tmp_path):
    paths = write_shards(
        [
            {"key": "1", "image": png_bytes(400, 300)},  # 120,000 pixels > 100,000
            {"key": "2", "image": png_bytes(20, 20) + b"\0" * 300_000},  # bytes > body limit
        ],
        str(tmp_path / "big-%02d.tar"),
    )
    media = MediaStore.scan(paths)
    config = ServerConfig(max_image_pixels=100_000, max_body_bytes=200_000)
    with (
        live_server(create_app(durable, config, media=media)) as url,
        httpx.Client(base_url=url, timeout=30) as client,
    ):
        wait_ready(client)
        r = client.get("/v1/items/1/image")
        assert r.status_code == 413 and "100000-pixel limit" in r.json()["detail"]
        assert client.get("/v1/items/1/image").status_code == 413  # remembered, same answer
        r = client.get("/v1/items/2/image")
        assert r.status_code == 413 and "200000-byte limit" in r.json()["detail"]
        r = client.get("/v1/items/1/meta")
        assert r.status_code == 404 and "without --catalogue" in r.json()["detail"]
    media.close()


def test_reads_need_the_token_with_auth_reads(durable, shards, catalogue, monkeypatch):
    monkeypatch.setenv("COLDSTART_API_TOKEN", TOKEN)
    media = MediaStore.scan(shards, "int", catalogue.media_keys())
    app = create_app(durable, ServerConfig(auth_reads=True), catalogue=catalogue, media=media)
    with (
        live_server(app) as url,
        httpx.Client(base_url=url, timeout=30) as client,
    ):
        wait_ready(client)
        assert client.get("/v1/items/3/meta").status_code == 401
        assert client.get("/v1/items/3/image").status_code == 401
        auth = {"Authorization": f"Bearer {TOKEN}"}
        assert client.get("/v1/items/3/meta", headers=auth).status_code == 200
        r = client.get("/v1/items/3/image", headers=auth)
        assert r.status_code == 200 and r.headers["cache-control"].startswith("private")
        page = client.get("/")  # the page holds no data: always open
        assert page.status_code == 200 and "&quot;auth_reads&quot;: true" in page.text
    media.close()


def test_page_and_assets(server):
    client, _ = server
    r = client.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    csp = r.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert r.headers["x-content-type-options"] == "nosniff"
    # Settings are HTML-escaped JSON in a meta tag; no third-party URL anywhere (offline page).
    assert re.search(r'content="\{&quot;auth_reads&quot;: false, ', r.text)
    for name in ("app.js", "style.css", "favicon.svg"):
        asset = client.get(f"/static/{name}")
        assert asset.status_code == 200 and len(asset.content) > 100
        assert not re.search(r"https?://(?!www\.w3\.org/2000/svg)", asset.text), name
    assert not re.search(r"https?://", r.text)
    # The page's routes are not API: the OpenAPI document lists the item routes only.
    spec = client.get("/openapi.json").json()
    assert "/" not in spec["paths"]
    assert {"/v1/items/{item_id}/meta", "/v1/items/{item_id}/image"} <= set(spec["paths"])
    image = spec["paths"]["/v1/items/{item_id}/image"]["get"]
    assert {"200", "404", "413", "415", "422"} <= set(image["responses"])
    assert "image/jpeg" in image["responses"]["200"]["content"]


def test_page_script_never_writes_markup():
    """Catalogue text reaches the DOM through textContent only (the browser test checks it live)."""
    script = (STATIC_DIR / "app.js").read_text()
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
        assert sink not in script, sink
