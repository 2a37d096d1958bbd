"""`coldstart serve` fuses and pools an upload as the embedding export it serves did: an export
made with weighted fusion (image_weight 0.8) and a trained attention pooling over video frames
records both in its manifest; the server reads them (coldstart.serving.export_fusion, from the
index's source export or --embeddings) and its served vectors are the embed job's fused rows
for the same files, not the mean-fused ones. Through a live server on 127.0.0.1: the ranker's
upload route (content_knn: the served vector is the unit content vector itself) and the
content index's search by media."""

from __future__ import annotations

import argparse
import logging

import numpy as np
import pytest

from tests.coldstart.uploads import embed_uploads, png_bytes, upload_files
from tests.index.conftest import live_server, wait_ready

K = 4  # frames per video
WEIGHTS = {"image": 0.8, "video": 0.8, "text": 0.2}  # the experiment's image_weight 0.8


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


@pytest.fixture(scope="module")
def export(tmp_path_factory) -> dict:
    """tiny-clip; a content_knn ranker (cold items: their unit content); uploads embedded by
    the embed job with weighted fusion and trained (random) attention pooling; a FAISS index
    of the export's fused rows."""
    import torch

    from coldstart.data.embeddings import read_embeddings
    from coldstart.data.split import cold_start_split
    from coldstart.data.synthetic import make_synthetic
    from coldstart.data.video_synth import moving_pattern_video
    from coldstart.encoders import create_encoder
    from coldstart.encoders.pooling import TemporalPooling
    from coldstart.index.build import build_index
    from coldstart.ranker.data import build_ranker_data
    from coldstart.ranker.methods import export_vectors, fit_method, resolve_method

    root = tmp_path_factory.mktemp("serve_fusion")
    encoder = create_encoder("tiny-clip")
    syn = make_synthetic(
        n_items=60, n_classes=3, n_users=40, interactions_per_user=5, image_size=32, seed=1
    )
    items = syn.dataset.items
    content = np.random.default_rng(0).standard_normal((len(items), encoder.dim))
    data = build_ranker_data(
        cold_start_split(syn.dataset, seed=0),
        items["item_id"].to_numpy(),
        content.astype(np.float32),
    )
    fitted = fit_method("content_knn", data)
    export_vectors(
        root / "m", data, fitted.items, fitted.users, resolve_method(fitted.name, {}),
        fitted.cold_item,
    )  # fmt: skip

    torch.manual_seed(7)  # a "trained" attention pooling: far from the mean
    pool = TemporalPooling(encoder.dim, "attention")
    with torch.no_grad():
        pool.score.weight.normal_(0, 20.0)
        pool.position.normal_(0, 2.0)
    torch.save(pool.state_dict(), root / "pool.pt")

    rng = np.random.default_rng(2)
    pics = [png_bytes(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)) for _ in range(3)]
    uploads = {
        95001: {"image": pics[0], "text": "a red chair by the window"},
        95002: {"video": moving_pattern_video(1, seconds=1.0), "text": "a video of class one"},
        95003: {"images": pics[1:], "text": "two pictures"},
    }
    embed_uploads(
        root, uploads, encoder, video_frames=K, fusion="weighted", fusion_weights=dict(WEIGHTS),
        video_pooling="attention", video_pooling_state=str(root / "pool.pt"),
    )  # fmt: skip
    rows = {
        m: {int(i): v for i, v in zip(*read_embeddings(root / "emb", m))}
        for m in ("image", "video", "text", "fused")
    }
    build_index(root / "emb", root / "idx", modality="fused")
    return {"root": root, "encoder": encoder, "uploads": uploads, "rows": rows}


def _server(export: dict, store, **flags):
    """An app wired as `coldstart serve --index idx --encoder ... [--ranker m]` wires it: the
    export found through the index's manifest, its fusion, pooling and frames."""
    from coldstart.commands.serve import _export_of, _video_frames
    from coldstart.index.config import ServerConfig
    from coldstart.index.server import create_app
    from coldstart.index.store import FaissStore
    from coldstart.ranker_serving import RankerArtifact, open_ranker_service
    from coldstart.serving import encode_fn_from_encoder, export_fusion, video_pool_for

    root, encoder = export["root"], export["encoder"]
    args = argparse.Namespace(embeddings=None, video_frames=flags.get("video_frames"))
    choice = argparse.Namespace(location=str(root / "idx"))
    spec = export_fusion(_export_of(args, choice))
    config = ServerConfig(insecure_writes=True)
    _video_frames(config, spec.video_frames, args, {})
    encode = encode_fn_from_encoder(encoder, spec, video_pool_for(spec, encoder.dim))
    service = open_ranker_service(RankerArtifact.load(root / "m"), store)
    app = create_app(FaissStore.open(root / "idx"), config, encode=encode, ranker=service)
    return app, service, config


def test_uploads_are_fused_and_pooled_as_the_export(export, tmp_path) -> None:
    """An image+text, a video+text and a carousel+text upload: each served vector is the embed
    job's weighted, attention-pooled fused row (rtol 1e-4), and not the mean-fused one."""
    import httpx

    app, service, config = _server(export, tmp_path / "store")
    assert config.video_frames == K  # from the export's manifest
    uploads, rows = export["uploads"], export["rows"]
    with live_server(app) as url, httpx.Client(base_url=url, timeout=30) as client:
        wait_ready(client)
        for item, parts in uploads.items():
            data = {"id": item, "text": parts["text"]}
            r = client.post("/v1/ranker/items", data=data, files=upload_files(parts))
            assert r.status_code == 200, r.text
        # The content index: search by the same media finds the fused row, at cosine 1.
        parts = uploads[95001]
        r = client.post(
            "/v1/search/media", data={"text": parts["text"], "k": 1}, files=upload_files(parts)
        )
        assert r.status_code == 200, r.text
        hit = r.json()
        assert hit["ids"] == [95001] and hit["scores"][0] == pytest.approx(1.0, abs=1e-5)
    ids = list(uploads)
    served = service.cold.get(ids)
    want = np.stack([rows["fused"][i] for i in ids])
    np.testing.assert_allclose(served, want, rtol=1e-4, atol=1e-5)
    # The mean fusion (what the server did before) is another vector: the test can fail.
    for n, (item, visual) in enumerate(((95001, "image"), (95002, "video"), (95003, "image"))):
        mean = _unit(rows[visual][item] + rows["text"][item])
        assert np.abs(served[n] - mean).max() > 1e-3
    # ... and so is the mean of the video's frames (the trained pooling is applied).
    from coldstart.data.video import decode_video

    frames = decode_video(uploads[95002]["video"], K)[0]
    mean_pooled = _unit(_unit(export["encoder"].encode_image(frames).detach().numpy()).mean(0))
    assert np.abs(rows["video"][95002] - mean_pooled).max() > 1e-3
    assert np.abs(_unit(0.8 * mean_pooled + 0.2 * rows["text"][95002]) - served[1]).max() > 1e-3


def test_operator_frames_override_the_export_with_a_warning(export, caplog) -> None:
    from coldstart.commands.serve import _video_frames
    from coldstart.index.config import ServerConfig

    config = ServerConfig()
    with caplog.at_level(logging.WARNING, logger="coldstart.serve"):
        _video_frames(config, K, argparse.Namespace(video_frames=6), {})
    assert config.video_frames == 6 and "the export sampled 4" in caplog.text
    config = ServerConfig()
    _video_frames(config, None, argparse.Namespace(video_frames=None), {})
    assert config.video_frames == ServerConfig().video_frames  # nothing recorded: the default


def test_old_manifests_read_as_mean_fusion_and_mean_pooling() -> None:
    """An export written before fusion and pooling were recorded: today's behaviour."""
    from coldstart.data.fusion import FusionSpec

    spec = FusionSpec.from_manifest({"fusion": None})
    assert (spec.method, spec.weights, spec.video_frames, spec.video_pooling) == (
        "mean",
        {},
        None,
        "mean",
    )
    a, b = np.eye(3, dtype=np.float32)[:2]
    np.testing.assert_allclose(spec.fuse_item({"image": a, "text": b}), _unit(a + b))


def test_the_fusion_agrees_with_the_encoders_module() -> None:
    """data.fusion (the embed job's and the server's) and encoders.fusion.ModalityFusion (the
    training module) compute the same weighted fusion, absent modalities masked."""
    import torch

    from coldstart.data.fusion import fuse_modalities
    from coldstart.encoders.fusion import create_fusion

    rng = np.random.default_rng(0)
    vectors = {m: _unit(rng.standard_normal((5, 8))).astype(np.float32) for m in ("image", "text")}
    present = {"image": np.array([1, 1, 0, 1, 0], bool), "text": np.array([1, 0, 1, 1, 0], bool)}
    module = create_fusion("weighted", modalities=("image", "text"), weights=WEIGHTS)
    with torch.no_grad():
        want = module(
            {m: torch.from_numpy(v) for m, v in vectors.items()},
            {m: torch.from_numpy(p) for m, p in present.items()},
        ).numpy()
    got = fuse_modalities(vectors, present, "weighted", WEIGHTS, ("image", "text"))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert not got[4].any()  # nothing present: zeros
