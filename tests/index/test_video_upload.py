"""Video uploads for search and cold start on a real uvicorn server: frames sampled and pooled,
and a clear 4xx for every bad video (the server stays alive), from videos generated here."""

from __future__ import annotations

import time

import httpx
import numpy as np
import pytest

from coldstart.data.video import decode_video
from coldstart.data.video_synth import frame_bomb_video, moving_pattern_video
from coldstart.index.config import ServerConfig
from coldstart.index.server import create_app
from tests.index.conftest import live_server, wait_ready
from tests.index.test_server import AUTH, TOKEN, fake_encode

MP4 = "video/mp4"


@pytest.fixture
def server(durable, vectors, monkeypatch):
    monkeypatch.setenv("COLDSTART_API_TOKEN", TOKEN)
    config = ServerConfig(
        max_body_bytes=400_000, max_image_pixels=10_000, max_video_bytes=60_000,
        max_video_seconds=60, video_frames=4,
    )  # fmt: skip
    app = create_app(durable, config, encode=fake_encode(vectors))
    with live_server(app) as url, httpx.Client(base_url=url, timeout=30) as client:
        wait_ready(client)
        yield client


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x)


def test_video_search_and_cold_start(server, vectors):
    client = server
    clip = moving_pattern_video(7, seconds=2.0)
    frames, _ = decode_video(clip, 4)
    encode = fake_encode(vectors)
    expect = _unit(_unit(encode(frames, [])) + _unit(encode([], ["11"])))  # video + text fused
    direct = client.post("/v1/search", json={"vectors": [expect.tolist()], "k": 5}).json()
    r = client.post(
        "/v1/search/media", data={"text": "11", "k": "5"}, files={"video": ("a.mp4", clip, MP4)}
    )
    assert r.status_code == 200, r.text
    assert r.json()["ids"] == direct["results"][0]["ids"]
    r = client.post("/v1/search/media", files={"video": ("a.webm", clip, "video/webm")})
    assert r.status_code == 200 and len(r.json()["ids"]) == 10
    r = client.post(
        "/v1/coldstart/media",
        data={"item_id": "5001", "insert": "true", "k": "3"},
        files={"video": ("v.mp4", clip, MP4)},
        headers=AUTH,
    )
    assert r.status_code == 200 and r.json()["inserted"] is True
    np.testing.assert_allclose(
        client.get("/v1/items/5001").json()["vector"], _unit(encode(frames, [])), atol=1e-5
    )
    doc = client.get("/openapi.json").json()
    form = doc["components"]["schemas"]["SearchMediaForm"]
    assert "video" in form["properties"]


def test_bad_videos_are_clear_4xx_and_the_server_lives(server):
    client = server
    good = moving_pattern_video(1, seconds=1.0)
    ten_hours = moving_pattern_video(2, seconds=54_000, frame_seconds=18_000)
    cases = {
        "truncated": (good[: len(good) // 2], 422, "truncated"),
        "no frame": (b"\x00\x00\x00\x18ftypisom" + b"\x00" * 64, 422, "video"),
        "ten hours": (ten_hours, 413, "36000 s exceeds the 60-second limit"),
        "not a video": (b"GIF89a" + b"\x00" * 64, 415, "not a supported video"),
        "frame bomb": (frame_bomb_video(), 413, "decompression bomb"),
        "frame size": (moving_pattern_video(3, width=200, height=200), 413, "10000-pixel limit"),
        "bytes": (np.random.default_rng(0).bytes(70_000), 413, "60000-byte limit"),
    }
    for name, (data, status, detail) in cases.items():
        start = time.perf_counter()
        for route in ("/v1/search/media", "/v1/coldstart/media"):
            r = client.post(route, files={"video": ("x.mp4", data, MP4)})
            assert r.status_code == status, (name, route, r.text)
            assert detail in r.json()["detail"], (name, r.json())
        assert time.perf_counter() - start < 5, name  # refused from headers, not decoded
    assert client.get("/health").status_code == 200
    r = client.post("/v1/search/media", files={"video": ("a.mp4", good, MP4)})
    assert r.status_code == 200


def test_video_items_show_a_poster_frame(durable, tmp_path):
    """The browsing page's thumbnails: a video item's is the frame at the middle of its video;
    a carousel's is its first image; a bad stored video answers 4xx once and stays rejected."""
    import io

    from PIL import Image

    from coldstart.data.shards import write_shards
    from coldstart.index.browse import BrowseConfig
    from coldstart.index.catalogue import MediaStore

    clip = moving_pattern_video(3, width=96, height=64, seconds=2.0)
    samples = [
        {"key": "v", "video": clip, "json": {"item_id": 1}},
        {"key": "c", "images": [np.full((8, 8, 3), 200, np.uint8)] * 2, "json": {"item_id": 2}},
        {"key": "bad", "video": clip[:300], "json": {"item_id": 4}},
    ]
    media = MediaStore.scan(write_shards(samples, str(tmp_path / "m-%02d.tar")))
    assert media.report == {"shards": 1, "images": 1, "skipped": {}, "videos": 2}
    app = create_app(durable, ServerConfig(), media=media, browse=BrowseConfig())
    with live_server(app) as url, httpx.Client(base_url=url, timeout=30) as client:
        wait_ready(client)
        r = client.get("/v1/items/1/image", params={"size": 64})
        assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
        poster = Image.open(io.BytesIO(r.content))
        (middle,), _ = decode_video(clip, 1)
        assert poster.size == (64, 43) or max(poster.size) == 64
        small = middle.resize(poster.size)
        assert np.abs(np.asarray(poster, float) - np.asarray(small, float)).mean() < 12
        assert client.get("/v1/items/2/image").status_code == 200  # a carousel's first image
        for _ in range(2):
            assert client.get("/v1/items/4/image").status_code == 422
        assert client.get("/health").status_code == 200
