"""coldstart embed fast paths: uint8 pixels, precision, chunks for every worker, device decode,
and `fused` only with two or more modalities."""

from __future__ import annotations

import copy
import io
import json

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from coldstart.data.embeddings import read_embeddings
from coldstart.data.shards import write_shards
from coldstart.encoders import create_encoder
from coldstart.encoders.embed import (
    EmbedBatches,
    EmbedConfig,
    build_embeddings,
    plan_chunks,
    plan_units,
)
from coldstart.encoders.images import (
    decode_jpegs,
    device_decodable,
    pack_bytes,
    split_transform,
    unpack_bytes,
)


def _picture(h: int, w: int, seed: int) -> np.ndarray:
    """A smooth picture with some texture: what JPEG is made for."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([x / w, y / h, (x + y) / (w + h)], -1) * 200 + rng.integers(0, 40, (h, w, 3))
    return base.clip(0, 255).astype(np.uint8)


def _jpeg(array: np.ndarray, mode: str = "RGB") -> bytes:
    out = io.BytesIO()
    Image.fromarray(array).convert(mode).save(out, format="JPEG", quality=90)
    return out.getvalue()


def _png(array: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(array).save(out, format="PNG")
    return out.getvalue()


@pytest.fixture(scope="module")
def mixed(tmp_path_factory) -> dict:
    """One shard of 24 samples: 20 JPEGs of three sizes, a PNG, a greyscale JPEG, a corrupt and
    a truncated JPEG (both skipped and counted as corrupt_image)."""
    root = tmp_path_factory.mktemp("mixed")
    sizes = [(40, 30), (48, 36), (36, 44)]
    samples = []
    for i in range(20):
        h, w = sizes[i % 3]
        samples.append({"key": f"{100 + i}", "image": _jpeg(_picture(h, w, i))})
    samples.append({"key": "200", "image": _png(_picture(40, 30, 50))})
    samples.append({"key": "201", "image": _jpeg(_picture(40, 30, 51), mode="L")})
    samples.append({"key": "202", "image": b"\xff\xd8\xff this is not a jpeg"})
    full = _jpeg(_picture(48, 36, 52))
    samples.append({"key": "203", "image": full[: len(full) // 2]})  # no end-of-image marker
    shard = write_shards(samples, str(root / "mixed-%03d.tar"), maxcount=100)[0]
    torch.manual_seed(0)
    return {"root": root, "shard": shard, "encoder": create_encoder("tiny-clip"), "n": 24}


def _config(mixed: dict, out, **kw) -> EmbedConfig:
    kw = {"batch_size": 8, "num_workers": 0, "progress": False, **kw}
    return EmbedConfig(encoder="tiny-clip", inputs=[mixed["shard"]], out=str(out), **kw)


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def test_uint8_split_equals_the_full_transform(mixed):
    """Workers ship uint8 pixels and the device normalizes: bit-identical to the transform."""
    pre = mixed["encoder"].preprocessor()
    assert pre.split is not None and pre.split.device_ops is not None
    for seed, (h, w) in enumerate([(40, 30), (300, 200), (17, 90)]):
        image = Image.fromarray(_picture(h, w, seed))
        host = pre.image_host(image)
        assert host.dtype == torch.uint8 and host.shape == (3, 32, 32)
        assert torch.equal(pre.finish_pixels(host[None])[0], pre.image(image))
    # A transform that cannot be cut at ToTensor keeps the float path, unchanged.
    from torchvision import transforms as T

    lam = T.Compose([T.Lambda(lambda im: im), T.ToTensor()])
    assert split_transform(lam) is None


def test_device_routing_sends_only_complete_rgb_jpegs():
    picture = _picture(40, 30, 0)
    jpeg = _jpeg(picture)
    assert device_decodable(jpeg)
    assert device_decodable(_jpeg(picture, mode="L"))  # greyscale: decoded to RGB there
    assert not device_decodable(_jpeg(picture, mode="CMYK"))  # CMYK: the CPU path
    assert not device_decodable(_png(picture))
    assert not device_decodable(jpeg[: len(jpeg) // 2])  # truncated: no end-of-image marker
    assert not device_decodable(b"\xff\xd8\xff this is not a jpeg")
    assert not device_decodable(jpeg, max_pixels=100)  # over the pixel limit: CPU counts it


def test_batched_decode_falls_back_per_image():
    """One bad file fails torchvision's batched call; the others still decode, the bad one is
    handed back as None for the CPU path. decode_jpeg on CPU tensors runs the same code."""
    pre = create_encoder("tiny-clip").preprocessor()
    good = [_jpeg(_picture(40, 30, 1)), _jpeg(_picture(48, 36, 2)), _jpeg(_picture(40, 30, 3))]
    bad = good[0][:200] + b"\x00" * 300 + b"\xff\xd9"  # a real header, garbage body
    data, offsets = pack_bytes([good[0], bad, good[1], good[2]])
    payloads = unpack_bytes(data, offsets)
    assert [bytes(p.numpy()) for p in payloads] == [good[0], bad, good[1], good[2]]
    out = decode_jpegs(payloads, torch.device("cpu"), pre.split.device_ops)
    assert out[1] is None
    from coldstart.data.shards import decode_image

    for tensor, payload in zip([out[0], out[2], out[3]], good):
        assert tensor.shape == (3, 32, 32) and tensor.dtype == torch.uint8
        host = pre.image_host(decode_image(payload))  # the CPU path (PIL resize)
        assert (tensor.int() - host.int()).abs().float().mean() < 2.0


def test_device_decode_matches_cpu_and_counts_bad_files(mixed, tmp_path):
    encoder = mixed["encoder"]
    cpu = build_embeddings(_config(mixed, tmp_path / "cpu"), encoder=encoder)
    dev = build_embeddings(_config(mixed, tmp_path / "dev", decode="device"), encoder=encoder)
    assert cpu.skipped == dev.skipped == {"corrupt_image": 2}
    assert dev.extra["input_samples"] == cpu.extra["input_samples"] == mixed["n"]
    ids_c, v_c = read_embeddings(tmp_path / "cpu", "image")
    ids_d, v_d = read_embeddings(tmp_path / "dev", "image")
    assert ids_c.tolist() == ids_d.tolist() and len(ids_c) == 22  # file order, 2 skipped
    assert _cosines(v_c, v_d).min() >= 0.99
    png = ids_c.tolist().index(200)
    np.testing.assert_array_equal(v_c[png], v_d[png])  # the PNG took the CPU path both times
    jpegs = [k for k, i in enumerate(ids_c.tolist()) if 100 <= i < 120]
    assert np.abs(v_c[jpegs] - v_d[jpegs]).max() > 0  # ... the JPEGs were decoded elsewhere


def test_image_only_run_writes_no_fused(mixed, tmp_path):
    """An encoder with a text tower on shards without texts: image rows only, once each."""
    manifest = build_embeddings(_config(mixed, tmp_path / "e"), encoder=mixed["encoder"])
    assert manifest.modalities == ["image"]
    assert manifest.extra["rows_per_modality"] == {"image": 22}
    assert manifest.count == 22 and "fused" not in manifest.modalities
    # The fusion is recorded all the same: an upload with an image and a text is fused as
    # configured when this export is served (data.fusion.FusionSpec.from_manifest).
    assert manifest.extra["fusion"] == {"method": "mean", "weights": {}}


def test_bf16_agrees_with_fp32_and_stays_float32(mixed, tmp_path):
    encoder = mixed["encoder"]
    fp32 = build_embeddings(_config(mixed, tmp_path / "fp32"), encoder=encoder)
    bf16 = build_embeddings(
        _config(mixed, tmp_path / "bf16", precision="bf16-mixed"), encoder=encoder
    )
    assert fp32.extra["precision"] == "32-true" and bf16.extra["precision"] == "bf16-mixed"
    part = pq.read_table(tmp_path / "bf16" / bf16.parts[0].name)
    assert str(part.schema.field("vector").type) == "fixed_size_list<element: float>[64]"
    _, a = read_embeddings(tmp_path / "fp32", "image")
    _, b = read_embeddings(tmp_path / "bf16", "image")
    assert a.dtype == b.dtype == np.float32
    assert not np.array_equal(a, b)  # bf16 really ran
    assert _cosines(a, b).min() >= 0.99
    np.testing.assert_allclose(np.linalg.norm(b, axis=1), 1.0, atol=1e-5)
    # One export is one precision: resuming it at another is refused with a clear message.
    with pytest.raises(ValueError, match="precision bf16-mixed"):
        build_embeddings(_config(mixed, tmp_path / "bf16"), encoder=encoder)
    # fp16 autocast does not exist on a CPU: Lightning runs bf16 and the manifest says so.
    half = build_embeddings(
        _config(mixed, tmp_path / "fp16", precision="16-mixed"), encoder=encoder
    )
    assert half.extra["precision"] == "bf16-mixed"
    with pytest.raises(ValueError, match="precision must be one of"):
        build_embeddings(_config(mixed, tmp_path / "x", precision="fp8"), encoder=encoder)


def test_chunks_keep_every_worker_busy(mixed):
    units = plan_units([mixed["shard"]], None, 4096)
    assert len(units) == 1 and units[0].samples == 24
    chunks = plan_chunks(units, workers=2, batch_size=8)
    assert len(chunks) >= 2 and {c.index % 2 for c in chunks} == {0, 1}
    spans = [(c.start, c.stop) for c in chunks]
    assert spans[0][0] == 0 and spans[-1][1] == 24
    assert all(a[1] == b[0] for a, b in zip(spans, spans[1:]))  # no gap, no overlap
    assert len(plan_chunks(units, workers=0, batch_size=8)) == 1
    pre = mixed["encoder"].preprocessor()
    ds = EmbedBatches(chunks, {0: units[0]}, pre, 8, None, False, False)
    loader = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=2)
    seen, by_worker = [], {0: 0, 1: 0}
    for batch in loader:
        ids = [batch["ids"][r] for r in batch["img_rows"]]
        seen += ids
        by_worker[batch["worker"]] += len(ids)
    assert by_worker[0] > 0 and by_worker[1] > 0  # one shard, two workers: both embedded images
    assert sorted(seen) == sorted(set(seen)) and len(seen) == 22


def test_fewer_shards_than_workers_end_to_end(mixed, tmp_path):
    """One shard, two workers: both embed part of it, and the part is the same as with none."""
    encoder = mixed["encoder"]
    single = build_embeddings(_config(mixed, tmp_path / "w0"), encoder=encoder)
    two = build_embeddings(_config(mixed, tmp_path / "w2", num_workers=2), encoder=encoder)
    assert [p.name for p in two.parts] == ["part-00000.parquet"]
    assert two.skipped == single.skipped == {"corrupt_image": 2}
    sidecar = json.loads((tmp_path / "w2" / "part-00000.parquet.json").read_text())
    assert set(sidecar["workers"]) == {"0", "1"} and sum(sidecar["workers"].values()) == 24
    assert min(sidecar["workers"].values()) >= 8  # a fair share each, not a leftover
    ids1, v1 = read_embeddings(tmp_path / "w0", "image")
    ids2, v2 = read_embeddings(tmp_path / "w2", "image")
    assert ids1.tolist() == ids2.tolist()  # reassembled in file order
    np.testing.assert_allclose(v1, v2, atol=1e-6)


@pytest.mark.gpu
def test_gpu_decode_and_bf16_on_cuda(mixed, tmp_path):
    """The real path: nvjpeg batched decode + bf16 on a GPU vs the CPU path at fp32."""
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    cpu = build_embeddings(_config(mixed, tmp_path / "cpu"), encoder=mixed["encoder"])
    encoder = copy.deepcopy(mixed["encoder"])  # predict leaves it on the GPU
    gpu = build_embeddings(
        _config(
            mixed, tmp_path / "gpu", accelerator="gpu", precision="bf16-mixed", decode="device",
            num_workers=2,
        ),
        encoder=encoder,
    )  # fmt: skip
    assert gpu.skipped == cpu.skipped == {"corrupt_image": 2}
    assert gpu.extra["precision"] == "bf16-mixed" and gpu.modalities == ["image"]
    ids_c, v_c = read_embeddings(tmp_path / "cpu", "image")
    ids_g, v_g = read_embeddings(tmp_path / "gpu", "image")
    assert ids_c.tolist() == ids_g.tolist() and v_g.dtype == np.float32
    assert _cosines(v_c, v_g).min() >= 0.98
