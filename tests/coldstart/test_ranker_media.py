"""`POST /v1/ranker/items` with a video or a carousel (issue 22): the upload's content vector is
the embed job's row for the same media (one decoder, one pooling, one fusion: routes_search
embed_upload), its media type reaches the method's cold-item path, and bad media get the
content routes' 4xx while the server stays up. Videos are written by the test (no media
committed); everything runs through a live server on 127.0.0.1."""

from __future__ import annotations

import io

import numpy as np
import pytest

from coldstart.data.schema import MEDIA_TYPES
from tests.coldstart.uploads import embed_uploads, png_bytes, upload_files
from tests.index.conftest import live_server, wait_ready

K = 4  # frames per video, in the embed job and the server alike
PHOTO, CAROUSEL, VIDEO = (MEDIA_TYPES.index(m) for m in ("photo", "carousel", "video"))


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> dict:
    """tiny-clip; a `media_type: true` content_projection ranker over a synthetic catalogue
    whose users prefer a media type (content dim = the encoder's); a shard of a video with a
    title, a video alone, a carousel with a title and a photo, embedded by the embed job."""
    from coldstart.data.embeddings import read_embeddings
    from coldstart.data.split import cold_start_split
    from coldstart.data.synthetic import make_synthetic
    from coldstart.data.video_synth import moving_pattern_video
    from coldstart.encoders import create_encoder
    from coldstart.ranker.data import build_ranker_data
    from coldstart.ranker.methods import export_vectors, fit_method, resolve_method

    root = tmp_path_factory.mktemp("ranker_media")
    encoder = create_encoder("tiny-clip")
    syn = make_synthetic(
        n_items=200, n_classes=4, n_users=200, interactions_per_user=10, image_size=32,
        media_affinity=0.8, seed=3,
    )  # fmt: skip
    items = syn.dataset.items
    rng = np.random.default_rng(0)
    content = rng.standard_normal((len(items), encoder.dim)).astype(np.float32)
    content[np.arange(len(items)), syn.item_class] += 3.0  # the class, and noise
    data = build_ranker_data(
        cold_start_split(syn.dataset, seed=0), items["item_id"].to_numpy(), content
    )
    params = {"dim": 8, "epochs": 1, "media_type": True}
    fitted = fit_method("content_projection", data, params=params)
    assert fitted.cold_item.reads_media
    export_vectors(
        root / "m", data, fitted.items, fitted.users, resolve_method(fitted.name, params),
        fitted.cold_item,
    )  # fmt: skip

    keys = list(items["media_key"])
    pics = [png_bytes(syn.images[k]) for k in keys[:4]]
    uploads = {
        90001: {"video": moving_pattern_video(1, seconds=1.0), "text": "a video of class one"},
        90002: {"video": moving_pattern_video(2, seconds=1.0, container="webm")},
        90003: {"images": pics[:3], "text": "three pictures"},
        90004: {"image": pics[3], "text": "one picture"},
    }
    embed_uploads(root, uploads, encoder, video_frames=K)
    ids, vectors = read_embeddings(root / "emb", "fused")  # what the experiment's stages read
    return {
        "root": root,
        "encoder": encoder,
        "fitted": fitted,
        "uploads": uploads,
        "offline": {int(i): v for i, v in zip(ids, vectors)},
        "user": data.user_ids[0],
    }


def _app(media: dict, store):
    from coldstart.index.config import ServerConfig
    from coldstart.index.server import create_app
    from coldstart.ranker_serving import RankerArtifact, open_ranker_service
    from coldstart.serving import encode_fn_from_encoder

    service = open_ranker_service(RankerArtifact.load(media["root"] / "m"), store)
    config = ServerConfig(insecure_writes=True, video_frames=K)
    encode = encode_fn_from_encoder(media["encoder"])
    return create_app(None, config, encode=encode, ranker=service), service


def test_video_and_carousel_uploads_serve_the_offline_cold_vector(media, tmp_path) -> None:
    """(1) Each upload's served vector is the cold-item map applied to the embed job's fused
    row for the same media, with its media type; the items are recommendable at once."""
    import httpx

    app, service = _app(media, tmp_path / "store")
    types = {90001: VIDEO, 90002: VIDEO, 90003: CAROUSEL, 90004: PHOTO}  # ids are ints
    with live_server(app) as url, httpx.Client(base_url=url, timeout=30) as client:
        wait_ready(client)
        for item, parts in media["uploads"].items():
            data = {"id": item, **({"text": parts["text"]} if "text" in parts else {})}
            r = client.post("/v1/ranker/items", data=data, files=upload_files(parts))
            assert r.status_code == 200, r.text
        user = str(media["user"])
        got = client.get(
            f"/v1/users/{user}/recommendations", params={"k": 10, "segment": "cold"}
        ).json()
    items = list(types)
    served = service.cold.get(items)
    offline = np.stack([media["offline"][i] for i in items])
    want = media["fitted"].cold_item(offline, np.array([types[i] for i in items]))
    np.testing.assert_allclose(served, want, rtol=1e-4, atol=1e-5)
    assert sorted(got["ids"]) == sorted(items) and set(got["segments"]) == {"cold"}
    uvec = media["fitted"].users[0]
    for i, s in zip(got["ids"], got["scores"]):
        assert s == pytest.approx(float(uvec @ want[items.index(i)]), rel=1e-4, abs=1e-4)
    # The media type matters to this ranker: as a photo, the video's content would differ.
    as_photo = media["fitted"].cold_item(offline[:1], np.array([PHOTO]))
    assert np.abs(as_photo[0] - served[0]).max() > 1e-4


def test_the_same_frames_as_a_video_or_a_photo_differ(media, tmp_path) -> None:
    """(2) A still video (one frame repeated) and that frame as a photo: about one content
    vector, two media types, two served vectors (the ranker's media-type feature)."""
    import httpx
    from PIL import Image

    from coldstart.data.video import decode_video
    from coldstart.data.video_synth import frames_video

    rng = np.random.default_rng(5)
    frame = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
    video = frames_video([frame] * 8, fps=4)
    decoded = decode_video(video, K)[0]  # what the server's decoder sees (codec: lossy)
    photo = png_bytes(decoded[0])
    app, service = _app(media, tmp_path / "store")
    with live_server(app) as url, httpx.Client(base_url=url, timeout=30) as client:
        wait_ready(client)
        r = client.post(
            "/v1/ranker/items", data={"id": "91001"}, files=upload_files({"video": video})
        )
        assert r.status_code == 200, r.text
        r = client.post(
            "/v1/ranker/items", data={"id": "91002"}, files=upload_files({"image": photo})
        )
        assert r.status_code == 200, r.text
    v_video, v_photo = service.cold.get([91001, 91002])
    enc = media["encoder"]
    rows = enc.encode_image(decoded).detach().numpy()  # (K, C)
    rows = rows / np.linalg.norm(rows, axis=1, keepdims=True)
    pooled = rows.mean(0) / np.linalg.norm(rows.mean(0))
    assert float(pooled @ rows[0]) > 0.999  # the same frames: (about) one content vector
    cold = media["fitted"].cold_item
    np.testing.assert_allclose(v_video, cold(pooled[None], np.array([VIDEO]))[0], atol=1e-4)
    np.testing.assert_allclose(v_photo, cold(rows[:1], np.array([PHOTO]))[0], atol=1e-4)
    assert np.abs(v_video - v_photo).max() > 1e-3
    assert Image.open(io.BytesIO(photo)).size == (64, 48)


def test_bad_videos_are_a_clear_4xx_and_the_server_stays_up(media, tmp_path) -> None:
    """(3) A truncated video (422), bytes that are no video (415), a 10-hour video (413, read
    from the header) and an 11-image carousel (422): nothing stored, the server answers on."""
    import httpx

    from coldstart.data.video_synth import moving_pattern_video

    good = media["uploads"][90001]["video"]
    long = moving_pattern_video(5, seconds=54_000, frame_seconds=18_000)
    pic = media["uploads"][90004]["image"]
    bad = {
        92001: ({"video": good[: len(good) // 2]}, 422),
        92002: ({"video": b"GIF89a this is no video at all" * 20}, 415),
        92003: ({"video": long}, 413),
        92004: ({"images": [pic] * 11}, 422),
    }
    app, service = _app(media, tmp_path / "store")
    with live_server(app) as url, httpx.Client(base_url=url, timeout=30) as client:
        wait_ready(client)
        for item, (parts, status) in bad.items():
            r = client.post("/v1/ranker/items", data={"id": item}, files=upload_files(parts))
            assert r.status_code == status, (item, r.status_code, r.text)
            assert r.json()["detail"], r.text
            assert client.get("/v1/ranker").status_code == 200  # still answering
        r = client.post(
            "/v1/ranker/items", data={"id": "92005"}, files=upload_files({"video": good})
        )
        assert r.status_code == 200, r.text
        info = client.get("/v1/ranker").json()
        schema = client.get("/openapi.json").json()
    assert info["cold_items"] == 1 and service.cold.contains(list(bad)) == [False] * 4
    form = schema["paths"]["/v1/ranker/items"]["post"]["requestBody"]["content"]
    props = form["multipart/form-data"]["schema"]
    props = schema["components"]["schemas"][props["$ref"].rsplit("/", 1)[1]]["properties"]
    assert "video" in props and "carousel" in str(props["image"])
