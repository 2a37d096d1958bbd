"""coldstart embed with heterogeneous media: videos (K frames, pooled over time) and carousels
(several images pooled into the image vector), from small videos the test writes itself."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from coldstart.data.embeddings import read_embeddings
from coldstart.data.shards import DecodeConfig, iter_shard, scan_shard, write_shards
from coldstart.data.synthetic import make_synthetic
from coldstart.data.video import decode_video
from coldstart.data.video_synth import moving_pattern_video
from coldstart.encoders import create_encoder
from coldstart.encoders.embed import EmbedConfig, build_embeddings
from coldstart.encoders.pooling import TemporalPooling, pool_mean

K = 4


@pytest.fixture(scope="module")
def hetero(tmp_path_factory) -> dict:
    """3 shards x 6 items: photos, 3-image carousels, MP4 and WebM videos with titles, and
    three bad videos (truncated, not a video, a 10-hour one)."""
    root = tmp_path_factory.mktemp("hetero")
    syn = make_synthetic(n_items=18, n_classes=4, image_size=32, seed=2)
    keys = list(syn.dataset.items["media_key"])
    samples, kinds = [], {}
    for n, key in enumerate(keys):
        item = 1000 + n
        sample = {"key": key, "text": f"item {n} of class {n % 4}", "json": {"item_id": item}}
        kind = ("photo", "carousel", "mp4", "webm", "photo", "mp4")[n % 6]
        if kind == "photo":
            sample["image"] = syn.images[key]
        elif kind == "carousel":
            sample["images"] = [syn.images[keys[(n + j) % len(keys)]] for j in range(3)]
        else:
            sample["video"] = moving_pattern_video(n, seconds=1.0, container=kind)
        kinds[item] = kind
        samples.append(sample)
    truncated = moving_pattern_video(99, container="mp4")
    samples[5]["video"] = truncated[: len(truncated) // 2]  # moov atom lost: corrupt_video
    samples[11]["video"] = b"\x00\x00\x00\x18ftypisom" + b"\x00" * 64  # an empty MP4 shell
    samples[17]["video"] = moving_pattern_video(5, seconds=54_000, frame_seconds=18_000)  # 10 h
    for bad in (5, 11, 17):
        kinds[1000 + bad] = "bad"
    shards = write_shards(samples, str(root / "hetero-%03d.tar"), maxcount=6)
    return {"root": root, "shards": shards, "spec": str(root / "hetero-{000..002}.tar"),
            "kinds": kinds, "encoder": create_encoder("tiny-clip")}  # fmt: skip


def _config(hetero: dict, out, **kw) -> EmbedConfig:
    base = {"batch_size": 4, "num_workers": 0, "progress": False, "video_frames": K}
    return EmbedConfig(encoder="tiny-clip", inputs=[hetero["spec"]], out=str(out), **base | kw)


def _table(out, modality: str) -> dict[int, np.ndarray]:
    ids, vectors = read_embeddings(out, modality)
    return {int(i): v for i, v in zip(ids, vectors)}


def test_scan_reports_media(hetero):
    scan = scan_shard(hetero["shards"][0])
    assert len(scan.keys) == 6 and scan.videos == 3 and scan.carousels == 1 and scan.images == 3
    sample = next(s for s in iter_shard(hetero["shards"][0]) if len(s["images"]) > 1)
    assert len(sample["images"]) == 3 and sample["image"] is sample["images"][0]


def test_video_and_carousel_export(hetero, tmp_path):
    enc = hetero["encoder"]
    manifest = build_embeddings(_config(hetero, tmp_path / "emb"), encoder=enc)
    assert manifest.modalities == ["image", "video", "text", "fused"]
    assert manifest.skipped == {"corrupt_video": 2, "video_too_long": 1}
    assert manifest.extra["video"]["frames"] == K and manifest.extra["video"]["pooling"] == "mean"
    image, video, text = (_table(tmp_path / "emb", m) for m in ("image", "video", "text"))
    fused = _table(tmp_path / "emb", "fused")
    kinds = hetero["kinds"]
    assert set(video) == {i for i, k in kinds.items() if k in ("mp4", "webm")}
    assert set(image) == {i for i, k in kinds.items() if k in ("photo", "carousel")}
    assert set(text) == set(kinds) == set(fused)  # a bad video's item keeps its title
    videos_too = DecodeConfig(accept_video=True)
    samples = {s["item_id"]: s for url in hetero["shards"] for s in iter_shard(url, videos_too)}
    for item, kind in kinds.items():
        if kind in ("mp4", "webm"):  # K frames through the image tower, mean over time
            frames, _ = decode_video(samples[item]["video_bytes"], K)
            assert len(frames) == K
            expect = pool_mean(enc.encode_image(frames), [K])[0].numpy()
            np.testing.assert_allclose(video[item], expect, atol=1e-5)
            both = video[item] + text[item]
            np.testing.assert_allclose(fused[item], both / np.linalg.norm(both), atol=1e-5)
        if kind == "carousel":  # three images, their unit vectors averaged
            expect = pool_mean(enc.encode_image(samples[item]["images"]), [3])[0].numpy()
            np.testing.assert_allclose(image[item], expect, atol=1e-5)


def test_chunked_workers_device_decode_and_resume(hetero, tmp_path):
    enc = hetero["encoder"]
    clean = build_embeddings(_config(hetero, tmp_path / "clean"), encoder=enc)
    chunked = build_embeddings(
        _config(hetero, tmp_path / "chunked", num_workers=2, batch_size=2, decode="device"),
        encoder=enc,
    )
    for modality in ("image", "video", "fused"):
        ids0, v0 = read_embeddings(tmp_path / "clean", modality)
        ids1, v1 = read_embeddings(tmp_path / "chunked", modality)
        assert ids0.tolist() == ids1.tolist()  # same rows, same order
        np.testing.assert_allclose(v0, v1, atol=1e-5)
    assert chunked.skipped == clean.skipped
    # Resume: a lost part is re-embedded alone, the others are kept as they are.
    out = tmp_path / "clean"
    lost = clean.parts[1].name
    kept = {p.name: (out / p.name).stat().st_mtime_ns for p in clean.parts if p.name != lost}
    (out / lost).unlink()
    again = build_embeddings(_config(hetero, out), encoder=enc)
    assert again.extra["complete"] and [p.sha256 for p in again.parts] == [
        p.sha256 for p in clean.parts
    ]
    assert {n: (out / n).stat().st_mtime_ns for n in kept} == kept
    with pytest.raises(ValueError, match="videos embedded with"):  # other K: refused
        (out / lost).unlink()
        build_embeddings(_config(hetero, out, video_frames=K + 1), encoder=enc)


def test_attention_pooling_state(hetero, tmp_path):
    enc = hetero["encoder"]
    torch.manual_seed(0)
    pool = TemporalPooling(enc.dim, "attention")
    state_path = tmp_path / "pool.pt"
    torch.save(pool.state_dict(), state_path)  # untrained: exactly the mean
    build_embeddings(_config(hetero, tmp_path / "mean"), encoder=enc)
    build_embeddings(
        _config(hetero, tmp_path / "att0", video_pooling="attention",
                video_pooling_state=str(state_path)), encoder=enc,
    )  # fmt: skip
    mean, att0 = _table(tmp_path / "mean", "video"), _table(tmp_path / "att0", "video")
    for item in mean:
        np.testing.assert_allclose(att0[item], mean[item], atol=1e-5)
    with torch.no_grad():
        pool.score.weight.normal_()  # "trained": frames now weigh differently
    torch.save(pool.state_dict(), state_path)
    build_embeddings(
        _config(hetero, tmp_path / "att1", video_pooling="attention",
                video_pooling_state=str(state_path)), encoder=enc,
    )  # fmt: skip
    att1 = _table(tmp_path / "att1", "video")
    assert max(float(np.abs(att1[i] - mean[i]).max()) for i in mean) > 1e-3


def test_fine_tuning_trains_the_attention_pooling(tmp_path):
    """Video-caption pairs (plus image-caption pairs) through LitContrastive: the attention
    pooling leaves its mean start, and the embed job uses the trained weights from the .ckpt."""
    import lightning as L

    from coldstart.encoders.datamodule import ImageTextDataModule
    from coldstart.encoders.lit import LitContrastive

    syn = make_synthetic(n_items=16, n_classes=4, image_size=32, seed=4)
    samples = []
    for n, key in enumerate(syn.dataset.items["media_key"]):
        sample = {"key": key, "text": f"class {n % 4} item", "json": {"item_id": n}}
        if n % 2:
            sample["video"] = moving_pattern_video(n % 4, seconds=1.0)
        else:
            sample["image"] = syn.images[key]
        samples.append(sample)
    spec = write_shards(samples, str(tmp_path / "pairs-%03d.tar"), maxcount=8)
    torch.manual_seed(0)
    model = LitContrastive("tiny-clip", lr=1e-2, video_pooling="attention", warmup_steps=0)
    data = ImageTextDataModule(
        train=str(tmp_path / "pairs-{000..001}.tar"), val=spec[0], batch_size=8, num_workers=0,
        video_frames=K,
    )  # fmt: skip
    trainer = L.Trainer(
        max_steps=4, logger=False, enable_progress_bar=False, enable_model_summary=False,
        default_root_dir=str(tmp_path), accelerator="cpu", num_sanity_val_steps=0,
        limit_val_batches=0,
    )  # fmt: skip
    trainer.fit(model, datamodule=data)
    assert float(model.video_pool.score.weight.abs().max()) > 0  # left the mean
    ckpt = tmp_path / "ft.ckpt"
    trainer.save_checkpoint(ckpt)
    out = tmp_path / "emb"
    manifest = build_embeddings(
        EmbedConfig(
            encoder="tiny-clip", pretrained=str(ckpt), inputs=[str(tmp_path / "pairs-*.tar")],
            out=str(out), batch_size=4, num_workers=0, progress=False, video_frames=K,
            video_pooling="attention", video_pooling_state=str(ckpt),
        )
    )  # fmt: skip
    assert manifest.extra["video"]["pooling"] == "attention"
    video = _table(out, "video")
    enc = create_encoder("tiny-clip", pretrained=str(ckpt))
    pool = model.video_pool.eval()
    for item in (1, 3):
        frames, _ = decode_video(samples[item]["video"], K)
        with torch.no_grad():
            expect = pool(enc.encode_image(frames).unsqueeze(0))[0].numpy()
        np.testing.assert_allclose(video[item], expect, atol=1e-5)


def test_video_benchmark_reports_its_keys():
    """benchmarks/embed_throughput.py --media video at a tiny size: the issue's JSON keys."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[2] / "benchmarks" / "embed_throughput.py"
    out = subprocess.run(
        [sys.executable, str(script), "--media", "video", "--encoder", "tiny-clip", "--videos",
         "4", "--batch-size", "2", "--frames", "3", "--video-size", "64x48", "--video-seconds",
         "1", "--forward-batches", "2"],
        capture_output=True, text=True, timeout=600, check=True,
    )  # fmt: skip
    (line,) = [json.loads(x) for x in out.stdout.splitlines() if x.startswith("{")]
    assert line["bench"] == "embed_video" and line["frames_per_video"] == 3
    assert line["videos"] == 4 and line["skipped"] == {}
    for key in ("videos_per_s", "frames_per_s", "forward_frames_per_s", "pipeline_vs_forward"):
        assert line[key] > 0
    assert line["frames_per_s"] == pytest.approx(3 * line["videos_per_s"], rel=0.01)
