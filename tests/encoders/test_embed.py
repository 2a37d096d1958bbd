"""coldstart embed: exact export contents, corrupt images, resume after SIGKILL, --devices 2."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from coldstart.data.embeddings import EmbeddingManifest, read_embeddings
from coldstart.data.shards import iter_shard, write_shards
from coldstart.data.synthetic import make_synthetic
from coldstart.encoders import create_encoder
from coldstart.encoders.embed import EmbedConfig, build_embeddings

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> dict:
    """6 shards x 12 images (one corrupt), and a catalogue with 10 extra items without media."""
    root = tmp_path_factory.mktemp("media")
    syn = make_synthetic(n_items=82, n_classes=8, image_size=32, seed=1)
    items = syn.dataset.items.copy()
    with_media = items.iloc[:72]
    samples = []
    for key, item in zip(with_media["media_key"], with_media["item_id"]):
        samples.append({"key": key, "image": syn.images[key], "json": {"item_id": int(item)}})
    samples[5]["image"] = b"\xff\xd8\xff this is not a jpeg"  # corrupt: skipped, counted
    shards = write_shards(samples, str(root / "media-%03d.tar"), maxcount=12)
    items.loc[72:, "media_key"] = None  # 10 cold items with a title only
    catalogue = root / "items.parquet"
    from coldstart.data.io import write_table

    write_table(items, catalogue)
    # A fixed tiny open_clip in a local dir: every process loads the same weights.
    import open_clip

    enc_dir = root / "tiny-encoder"
    enc_dir.mkdir()
    torch.manual_seed(0)
    model = create_encoder("tiny-clip").model
    cfg = open_clip.get_model_config("coldstart-tiny")
    (enc_dir / "open_clip_config.json").write_text(json.dumps({"model_cfg": cfg}))
    torch.save(model.state_dict(), enc_dir / "open_clip_pytorch_model.bin")
    return {
        "root": root,
        "encoder": str(enc_dir),
        "shards": shards,
        "spec": str(root / "media-{000..005}.tar"),
        "catalogue": str(catalogue),
        "items": items,
        "images": syn.images,
        "corrupt_item": int(with_media["item_id"].iloc[5]),
    }


def test_embed_export_contents_and_resume(media, tmp_path):
    out = tmp_path / "emb"
    config = EmbedConfig(
        encoder=media["encoder"], inputs=[media["spec"], media["catalogue"]], out=str(out),
        batch_size=8, num_workers=0, progress=False,
    )  # fmt: skip
    manifest = build_embeddings(config)
    assert manifest.extra["complete"] and manifest.normalized and manifest.dim == 64
    assert manifest.skipped == {"corrupt_image": 1}
    assert len(manifest.parts) == 7  # 6 shards + 1 text chunk of the media-less items
    enc = create_encoder(media["encoder"])
    assert manifest.weights_sha256 == enc.weights_sha256()
    assert manifest.modalities == ["image", "text", "fused"]

    ids, img = read_embeddings(out, "image")
    assert len(ids) == 71 and len(set(ids.tolist())) == 71  # 72 images, 1 corrupt
    assert media["corrupt_item"] not in set(ids.tolist())
    t_ids, txt = read_embeddings(out, "text")
    assert sorted(t_ids.tolist()) == sorted(media["items"]["item_id"].tolist())  # all 82 titles
    f_ids, fused = read_embeddings(out, "fused")
    assert sorted(f_ids.tolist()) == sorted(t_ids.tolist())  # every item gets a fused vector
    np.testing.assert_allclose(np.linalg.norm(fused, axis=1), 1.0, atol=1e-5)

    # Vectors are the encoder's own: re-embed a few directly and compare.
    first = list(iter_shard(media["shards"][0]))[:5]  # JPEG-decoded, as the job sees them
    assert [s["item_id"] for s in first] == ids[:5].tolist()
    direct = enc.encode_image([s["image"] for s in first]).numpy()
    np.testing.assert_allclose(img[:5], direct, atol=1e-4)
    titles = dict(zip(media["items"]["item_id"], media["items"]["title"]))
    genres = dict(zip(media["items"]["item_id"], media["items"]["genres"]))
    texts = [f"{titles[int(i)]}. {', '.join(genres[int(i)])}" for i in t_ids[:5]]
    np.testing.assert_allclose(txt[:5], enc.encode_text(texts).numpy(), atol=1e-4)
    # Fused = normalized mean of image and text where both exist, the text alone otherwise.
    pos_img = {int(i): k for k, i in enumerate(ids)}
    pos_txt = {int(i): k for k, i in enumerate(t_ids)}
    for k, item in enumerate(f_ids[:80]):
        item = int(item)
        expect = txt[pos_txt[item]] + (img[pos_img[item]] if item in pos_img else 0)
        np.testing.assert_allclose(fused[k], expect / np.linalg.norm(expect), atol=1e-5)

    # Rerun with the same arguments: nothing is recomputed, the export is unchanged, and the
    # temp file a killed writer left (a dead pid) is cleaned up.
    before = {p.name: p.stat().st_mtime_ns for p in out.glob("part-*")}
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    leftover = out / f".part-00001.parquet.json.tmp-{int(dead.stdout)}"
    leftover.write_text("{")
    again = build_embeddings(config)
    assert not leftover.exists()
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("part-*")} == before
    assert [p.sha256 for p in again.parts] == [p.sha256 for p in manifest.parts]


def _embed_cmd(media: dict, out: Path, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "coldstart", "embed", "--encoder", media["encoder"],
        "--input", *extra, "--out", str(out), "--no-progress",
    ]  # fmt: skip


def _env() -> dict:
    return dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")


@pytest.mark.slow
def test_sigkill_midway_then_resume(media, tmp_path):
    """Kill -9 after the first part lands; the rerun finishes with one vector per sample."""
    syn = make_synthetic(n_items=320, n_classes=8, image_size=32, seed=2)
    samples = [
        {"key": k, "image": syn.images[k], "json": {"item_id": int(i)}}
        for k, i in zip(syn.dataset.items["media_key"], syn.dataset.items["item_id"])
    ]
    write_shards(samples, str(tmp_path / "many-%03d.tar"), maxcount=16)  # 20 shards
    out = tmp_path / "emb"
    cmd = _embed_cmd(media, out, str(tmp_path / "many-{000..019}.tar"))
    cmd += ["--batch-size", "4", "--num-workers", "0"]
    _kill_after_first_part(cmd, out)
    killed = EmbeddingManifest.load(out)
    assert not killed.extra["complete"] and 1 <= len(killed.parts) < 20
    kept = {p.name: (out / p.name).stat().st_mtime_ns for p in killed.parts}

    done = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["complete"] and summary["input_samples"] == 320
    ids, vecs = read_embeddings(out, "image")
    assert len(ids) == 320 and len(set(ids.tolist())) == 320  # exactly one vector per sample
    assert set(ids.tolist()) == set(syn.dataset.items["item_id"].tolist())
    # Finished parts of the killed run were kept, not recomputed.
    assert {n: (out / n).stat().st_mtime_ns for n in kept} == kept
    assert not list(out.glob(".*tmp*"))  # no half-written files left visible as parts


@pytest.mark.slow
def test_random_init_encoder_resumes_in_a_new_process(media, tmp_path):
    """No --pretrained: the random init is seeded, so a second process draws the same weights
    (same weights_sha256) and resumes instead of refusing the directory (issue 9, item 7)."""
    out = tmp_path / "emb"
    cmd = [
        sys.executable, "-m", "coldstart", "embed", "--encoder", "tiny-clip", "--input",
        str(media["root"] / "media-{000..001}.tar"), "--out", str(out), "--no-progress",
        "--batch-size", "8", "--num-workers", "0",
    ]  # fmt: skip
    first = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr[-3000:]
    before = EmbeddingManifest.load(out)
    ids0, vecs0 = read_embeddings(out, "image")
    kept = (out / "part-00000.parquet").stat().st_mtime_ns
    (out / "part-00001.parquet").unlink()  # as if the first run had died before this part
    again = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    after = EmbeddingManifest.load(out)
    assert after.extra["complete"] and after.weights_sha256 == before.weights_sha256
    assert (out / "part-00000.parquet").stat().st_mtime_ns == kept  # resumed, not redone
    ids1, vecs1 = read_embeddings(out, "image")
    np.testing.assert_array_equal(ids0, ids1)
    np.testing.assert_allclose(vecs0, vecs1, atol=1e-6)  # the redone part has the same vectors


@pytest.mark.slow
def test_sigkill_with_chunked_workers_then_resume_with_other_workers(media, tmp_path):
    """Shards cut into chunks for 2 workers, kill -9 midway, resume with 1 worker: still one
    vector per sample, and the export equals a clean single-process run, order included."""
    syn = make_synthetic(n_items=240, n_classes=8, image_size=32, seed=3)
    samples = [
        {"key": k, "image": syn.images[k], "json": {"item_id": int(i)}}
        for k, i in zip(syn.dataset.items["media_key"], syn.dataset.items["item_id"])
    ]
    write_shards(samples, str(tmp_path / "big-%03d.tar"), maxcount=80)  # 3 shards, 3 chunks each
    spec = str(tmp_path / "big-{000..002}.tar")
    out = tmp_path / "emb"
    cmd = _embed_cmd(media, out, spec) + ["--batch-size", "8"]
    _kill_after_first_part(cmd + ["--num-workers", "2"], out)
    killed = EmbeddingManifest.load(out)
    assert not killed.extra["complete"] and 1 <= len(killed.parts) < 3
    sidecar = json.loads((out / (killed.parts[0].name + ".json")).read_text())
    assert set(sidecar["workers"]) == {"0", "1"}  # both workers embedded part of one shard
    kept = {p.name: (out / p.name).stat().st_mtime_ns for p in killed.parts}

    done = subprocess.run(
        cmd + ["--num-workers", "1"], env=_env(), capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.strip().splitlines()[-1])["input_samples"] == 240
    assert {n: (out / n).stat().st_mtime_ns for n in kept} == kept
    ids, vecs = read_embeddings(out, "image")
    assert len(ids) == 240 and len(set(ids.tolist())) == 240  # exactly one vector per sample
    clean = build_embeddings(
        EmbedConfig(
            encoder=media["encoder"], inputs=[spec], out=str(tmp_path / "clean"), batch_size=8,
            num_workers=0, progress=False,
        )
    )  # fmt: skip
    assert clean.extra["complete"]
    ids0, vecs0 = read_embeddings(tmp_path / "clean", "image")
    assert ids.tolist() == ids0.tolist()
    np.testing.assert_allclose(vecs, vecs0, atol=1e-6)


@pytest.mark.slow
def test_two_devices_split_by_shard(media, tmp_path):
    single = build_embeddings(
        EmbedConfig(
            encoder=media["encoder"], inputs=[media["spec"], media["catalogue"]],
            out=str(tmp_path / "one"), batch_size=8, num_workers=0, progress=False,
        )
    )  # fmt: skip
    cmd = _embed_cmd(media, tmp_path / "two", media["spec"], media["catalogue"])
    cmd += ["--devices", "2", "--batch-size", "8", "--num-workers", "1"]
    proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    two = EmbeddingManifest.load(tmp_path / "two")
    assert two.extra["complete"] and [p.name for p in two.parts] == [p.name for p in single.parts]
    assert two.skipped == single.skipped == {"corrupt_image": 1}
    for modality in ("image", "text", "fused"):
        ids1, v1 = read_embeddings(tmp_path / "one", modality)
        ids2, v2 = read_embeddings(tmp_path / "two", modality)
        assert len(set(ids2.tolist())) == len(ids2)  # no duplicates
        np.testing.assert_array_equal(ids1, ids2)  # no gaps, same order
        np.testing.assert_allclose(v1, v2, atol=1e-5)


def test_catalogue_only_with_tags_flagged(media, tmp_path):
    items = media["items"].iloc[:20].copy()
    items["tags"] = [["funny", "dark"] if i % 3 == 0 else [] for i in range(20)]
    from coldstart.data.io import write_table

    write_table(items, tmp_path / "items.parquet")
    config = EmbedConfig(
        encoder=media["encoder"], inputs=[str(tmp_path / "items.parquet")], out=str(tmp_path / "e"),
        batch_size=8, num_workers=0, progress=False, with_tags=True,
    )  # fmt: skip
    with pytest.warns(UserWarning, match="interaction-derived"):
        manifest = build_embeddings(config)
    assert manifest.modalities == ["text", "tags", "fused"]
    assert manifest.extra["tags_interaction_derived"] is True
    assert manifest.extra["rows_per_modality"] == {"text": 20, "tags": 7, "fused": 20}
    t_ids, txt = read_embeddings(tmp_path / "e", "text")
    g_ids, tags = read_embeddings(tmp_path / "e", "tags")
    f_ids, fused = read_embeddings(tmp_path / "e", "fused")
    assert t_ids.tolist() == f_ids.tolist()
    k = t_ids.tolist().index(int(g_ids[0]))
    expect = txt[k] + tags[0]
    np.testing.assert_allclose(fused[k], expect / np.linalg.norm(expect), atol=1e-5)
    no_tags = next(i for i in range(20) if int(t_ids[i]) not in set(g_ids.tolist()))
    np.testing.assert_allclose(fused[no_tags], txt[no_tags], atol=1e-6)


def _kill_after_first_part(cmd: list[str], out: Path) -> None:
    """Run `coldstart embed` and SIGKILL it as soon as its first part is committed."""
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    try:
        while not (out / "manifest.json").exists() and time.time() < deadline:
            assert proc.poll() is None, "embed exited before writing a part"
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
