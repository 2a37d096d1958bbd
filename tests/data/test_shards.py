"""Media shards: reading with bad samples inside, node/worker splitting, determinism, packing."""

from __future__ import annotations

import csv
import io
import json
import struct
import tarfile
import zlib
from collections import Counter
from itertools import islice
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from coldstart.commands.data import main as data_main
from coldstart.data.shards import (
    DecodeConfig,
    ShardReader,
    SkipSample,
    decode_image,
    expand_urls,
    iter_shard,
    write_shards,
)
from coldstart.data.synthetic import make_synthetic


def png_bytes(width: int, height: int, colour=(200, 30, 30)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(out, format="PNG")
    return out.getvalue()


def bomb_png(width: int, height: int) -> bytes:
    """A valid tiny PNG whose header claims width x height pixels (CRC fixed up)."""
    data = bytearray(png_bytes(8, 8))
    # IHDR payload starts after the 8-byte signature + 4-byte length + 4-byte type.
    data[16:24] = struct.pack(">II", width, height)
    crc = zlib.crc32(bytes(data[12:29])) & 0xFFFFFFFF
    data[29:33] = struct.pack(">I", crc)
    return bytes(data)


@pytest.fixture(scope="module")
def synth():
    return make_synthetic(n_items=24, n_users=4, interactions_per_user=3, image_size=16, seed=1)


@pytest.fixture(scope="module")
def shard_dir(tmp_path_factory, synth):
    """24 good samples + a corrupt image, two bombs, a text-only sample, a bad JSON: 4 per shard."""
    out = tmp_path_factory.mktemp("shards")
    good = [
        {
            "key": key,
            "image": synth.images[key],
            "text": synth.captions[key],
            "json": {"item_id": int(key), "n": i},
        }
        for i, key in enumerate(sorted(synth.images))
    ]
    bad = [
        {"key": "corrupt", "image": b"\xff\xd8\xff\xe0 this is not a jpeg", "text": "x"},
        {"key": "truncjpg", "image": _truncated_jpeg(), "text": "x"},
        {"key": "bomb", "image": bomb_png(20_000, 20_000)},  # PIL itself raises (> 2x limit)
        {"key": "bomb2", "image": bomb_png(10_000, 10_000)},  # PIL only warns; we still skip
        {"key": "textonly", "text": "no image here"},
    ]
    samples = good[:5] + bad[:3] + good[5:15] + bad[3:] + good[15:]
    paths = write_shards(samples, str(out / "s-%03d.tar"), maxcount=4, image_format="png")
    return out, paths, [s["key"] for s in good]


def _truncated_jpeg() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (64, 64), (10, 200, 10)).save(out, format="JPEG")
    return out.getvalue()[:200]


def test_bad_samples_skipped_and_counted(shard_dir):
    _, paths, good_keys = shard_dir
    assert len(paths) == 8  # 29 samples, 4 per shard
    reader = ShardReader(paths)
    samples = list(reader)
    assert [s["key"] for s in samples] == good_keys  # the rest read, in order
    assert reader.skipped == {"corrupt_image": 2, "decompression_bomb": 2, "missing_image": 1}
    first = samples[0]
    assert isinstance(first["image"], Image.Image) and first["image"].mode == "RGB"
    assert first["image"].size == (16, 16)
    assert first["text"].startswith("a ") and first["json"]["item_id"] == int(first["key"])
    assert first["item_id"] == int(first["key"])
    assert first["shard"] == paths[0]


def test_iter_shard_counts_in_place(shard_dir):
    _, paths, _ = shard_dir
    skipped: Counter = Counter()
    keys = [s["key"] for s in iter_shard(paths[1], skipped=skipped)]
    assert keys == ["000005"]  # shard 1 = good[4], corrupt, truncjpg, bomb
    assert skipped == {"corrupt_image": 2, "decompression_bomb": 1}


def test_require_image_false_keeps_text_only(shard_dir):
    _, paths, good_keys = shard_dir
    reader = ShardReader(paths, config=DecodeConfig(require_image=False))
    keys = [s["key"] for s in reader]
    assert "textonly" in keys and len(keys) == len(good_keys) + 1


def test_bad_json_and_truncated_shard(tmp_path, synth):
    img = synth.images[sorted(synth.images)[0]]
    paths = write_shards(
        [{"key": f"k{i}", "image": img, "text": f"t{i}"} for i in range(6)],
        str(tmp_path / "a-%02d.tar"),
        maxcount=100,
        image_format="png",
    )
    # A sample with broken JSON.
    with tarfile.open(paths[0], "a") as tar:
        for name, payload in (("zz.png", png_bytes(4, 4)), ("zz.json", b"{not json")):
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    skipped: Counter = Counter()
    assert len(list(iter_shard(paths[0], skipped=skipped))) == 6
    assert skipped == {"bad_json": 1}
    # Truncate the shard in the middle: what it held is read, the damage counted, no crash.
    data = Path(paths[0]).read_bytes()
    with tarfile.open(paths[0]) as tar:
        fourth = tar.getmembers()[6]  # k3.png (members: k0.png, k0.txt, k1.png, ...)
    assert fourth.name == "k3.png"
    cut = tmp_path / "cut.tar"
    cut.write_bytes(data[: fourth.offset_data + 10])
    skipped = Counter()
    with pytest.warns(UserWarning):
        got = list(iter_shard(cut, skipped=skipped))
    assert [s["key"] for s in got] == ["k0", "k1", "k2"]
    assert skipped == {"truncated_shard": 1, "truncated_sample": 1}
    # A file that is no tar at all.
    junk = tmp_path / "junk.tar"
    junk.write_bytes(b"hello" * 50)
    skipped = Counter()
    with pytest.warns(UserWarning):
        assert list(iter_shard(junk, skipped=skipped)) == []
    assert skipped == {"unreadable_shard": 1}


def test_decode_image_limits():
    with pytest.raises(Exception) as info:
        decode_image(png_bytes(10, 10), DecodeConfig(max_image_pixels=50))
    assert info.value.reason == "decompression_bomb"
    with pytest.raises(Exception) as info:
        decode_image(png_bytes(10, 10), DecodeConfig(max_image_bytes=10))
    assert info.value.reason == "oversized_image"
    assert decode_image(png_bytes(10, 10)).size == (10, 10)


def test_decode_image_goes_through_the_one_decoder(monkeypatch):
    """Shards use data.images: its refusals become skip reasons, with its clear message."""
    with pytest.raises(SkipSample, match="decompression bomb") as info:
        decode_image(bomb_png(100_000, 100_000))
    assert info.value.reason == "decompression_bomb"
    with pytest.raises(SkipSample, match="corrupt or truncated") as info:
        decode_image(_truncated_jpeg())
    assert info.value.reason == "corrupt_image"
    with pytest.raises(SkipSample) as info:
        decode_image(b"not an image")
    assert info.value.reason == "corrupt_image"
    # The stricter guard: PIL's own limit holds even above a looser configured one.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 50)
    with pytest.raises(SkipSample) as info:
        decode_image(png_bytes(10, 10), DecodeConfig(max_image_pixels=10**6))
    assert info.value.reason == "decompression_bomb"


def test_split_by_node_and_worker_partitions(shard_dir):
    _, paths, good_keys = shard_dir
    seen: list[str] = []
    per_consumer = []
    for rank in range(2):
        reader = ShardReader(paths, seed=3, shuffle=True, rank=rank, world_size=2)
        loader = torch.utils.data.DataLoader(
            reader, batch_size=None, num_workers=2, collate_fn=lambda s: s["key"]
        )
        keys = list(loader)
        per_consumer.append(keys)
        seen.extend(keys)
    assert sorted(seen) == sorted(good_keys)  # every sample once, across 2 nodes x 2 workers
    assert all(per_consumer)
    # sample-level split with more consumers than shards still covers everything exactly once.
    seen = []
    for rank in range(3):
        reader = ShardReader(paths[:2], split_by="sample", rank=rank, world_size=3)
        seen.extend(s["key"] for s in reader)
    expected = [s["key"] for s in ShardReader(paths[:2])]
    assert sorted(seen) == sorted(expected)


def test_deterministic_order_for_seed(shard_dir):
    _, paths, good_keys = shard_dir

    def order(seed: int, epoch: int = 0) -> list[str]:
        reader = ShardReader(paths, seed=seed, shuffle=True, buffer=5)
        reader.set_epoch(epoch)
        return [s["key"] for s in reader]

    a, b = order(0), order(0)
    assert a == b and sorted(a) == sorted(good_keys)
    assert a != good_keys
    assert order(1) != a
    assert order(0, epoch=1) != a
    assert [s["key"] for s in ShardReader(paths)] == good_keys  # no shuffle: file order


def test_transform_errors_counted(shard_dir):
    _, paths, good_keys = shard_dir

    def transform(sample):
        if sample["key"] == good_keys[0]:
            raise RuntimeError("boom")
        return np.asarray(sample["image"]).shape

    reader = ShardReader(paths, transform=transform)
    out = list(reader)
    assert len(out) == len(good_keys) - 1 and out[0] == (16, 16, 3)
    assert reader.skipped["transform_error"] == 1


def test_expand_urls(shard_dir):
    out, paths, _ = shard_dir
    assert expand_urls(str(out / "s-{000..007}.tar")) == paths
    assert expand_urls(str(out)) == paths
    assert expand_urls(str(out / "s-*.tar")) == paths
    with pytest.raises(FileNotFoundError):
        ShardReader(str(out / "none-*.tar"))


def test_write_is_reproducible_and_rejects_dotted_keys(tmp_path, synth):
    key = sorted(synth.images)[0]
    samples = [{"key": key, "image": synth.images[key], "text": "t", "json": {"a": 1}}]
    a = write_shards(samples, str(tmp_path / "a-%d.tar"), image_format="png")
    b = write_shards(samples, str(tmp_path / "b-%d.tar"), image_format="png")
    assert Path(a[0]).read_bytes() == Path(b[0]).read_bytes()
    with pytest.raises(ValueError, match="dot"):
        write_shards([{"key": "a.b", "text": "x"}], str(tmp_path / "c-%d.tar"))
    assert not list(tmp_path.glob(".c-*"))  # no temp file left behind


def test_pack_cli(tmp_path, synth, capsys):
    images = tmp_path / "images"
    images.mkdir()
    keys = sorted(synth.images)[:7]
    for key in keys:
        Image.fromarray(synth.images[key]).save(images / f"{int(key)}.png")
    (images / "99.jpg").write_bytes(b"not an image")
    (images / "notes.txt").write_text("ignored")
    with open(tmp_path / "texts.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["item_id", "text", "year", "genre"])
        for key in keys[:5]:
            writer.writerow([int(key), synth.captions[key], 1999, "drama"])
        writer.writerow([12345, "no image for this one", 2000, "x"])
    pattern = str(tmp_path / "out" / "shard-%05d.tar")
    code = data_main(
        [
            "pack",
            "--images",
            str(images),
            "--texts",
            str(tmp_path / "texts.csv"),
            "--out",
            pattern,
            "--maxcount",
            "3",
        ]
    )
    assert code == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["written"] == 7 and len(stats["shards"]) == 3
    assert stats["images_without_row"] == 2 and stats["rows_without_image"] == 1
    assert stats["skipped"] == {"corrupt_image": 1}
    samples = list(ShardReader(stats["shards"]))
    assert [s["item_id"] for s in samples] == [int(k) for k in keys]
    first = samples[0]
    assert first["text"] == synth.captions[keys[0]]
    assert first["json"] == {"item_id": int(keys[0]), "year": 1999, "genre": "drama"}
    assert np.array_equal(np.asarray(first["image"]), synth.images[keys[0]])
    assert samples[-1]["text"] is None


def test_real_poster_shards(poster_shards, shared_data):
    with open(shared_data / "movielens-small-posters" / "manifest.csv") as handle:
        manifest = list(csv.DictReader(handle))
    reader = ShardReader(poster_shards, decode=False)
    ids = [s["item_id"] for s in reader]
    assert len(ids) == len(manifest) == 3548 and not reader.skipped
    assert sorted(ids) == sorted(int(r["movieId"]) for r in manifest)
    sizes = {int(r["movieId"]): (int(r["width"]), int(r["height"])) for r in manifest}
    for sample in islice(iter_shard(poster_shards[0]), 20):
        assert sample["image"].size == sizes[sample["item_id"]]


def test_written_shards_read_by_webdataset(shard_dir):
    """The files are plain webdataset tars: the webdataset library groups them the same way."""
    import webdataset as wds

    _, paths, good_keys = shard_dir
    dataset = wds.WebDataset(paths, shardshuffle=False, empty_check=False)
    by_key = {s["__key__"]: s for s in dataset}
    assert set(good_keys) <= set(by_key)
    sample = by_key[good_keys[0]]
    assert {"png", "txt", "json"} <= set(sample)
    assert json.loads(sample["json"])["item_id"] == int(good_keys[0])
