"""The one image decoder (coldstart.data.images): every guard raises its own clear exception,
and the module stays torch-free (the server imports it)."""

from __future__ import annotations

import io
import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest
from PIL import Image

from coldstart.data.images import (
    CorruptImage,
    DecompressionBomb,
    ImageRejected,
    NotAnImage,
    OversizedImage,
    decode_image,
    open_header,
)


def png_bytes(width: int, height: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (200, 30, 30)).save(out, format="PNG")
    return out.getvalue()


def bomb_png(width: int, height: int) -> bytes:
    """A valid tiny PNG whose header claims width x height pixels (CRC fixed up)."""
    data = bytearray(png_bytes(8, 8))
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])) & 0xFFFFFFFF)
    return bytes(data)


def truncated_png() -> bytes:
    noisy = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(noisy).save(out, format="PNG")
    return out.getvalue()[: len(out.getvalue()) // 2]


def test_decodes_a_good_image_fully_in_the_asked_mode():
    image = decode_image(png_bytes(10, 6), mode="L")
    assert image.size == (10, 6) and image.mode == "L"
    assert decode_image(png_bytes(10, 6)).mode == "RGB"


def test_a_bomb_is_refused_from_its_header():
    bomb = bomb_png(100_000, 100_000)  # 10^10 pixels claimed by a ~100-byte file
    assert len(bomb) < 200
    with pytest.raises(DecompressionBomb, match="decompression bomb") as info:
        decode_image(bomb)
    assert info.value.reason == "decompression_bomb"
    with pytest.raises(DecompressionBomb, match="4000x4000 pixels exceeds the 1000000-pixel"):
        decode_image(bomb_png(4000, 4000), max_pixels=1_000_000)


def test_pil_limit_holds_even_where_pil_only_warns(monkeypatch):
    # Between MAX_IMAGE_PIXELS and twice it PIL merely warns: the stricter guard refuses,
    # even when the caller's own limit is looser.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(DecompressionBomb):
        decode_image(png_bytes(40, 40), max_pixels=10**9)  # 1600 pixels: 1.6x PIL's limit


def test_truncated_empty_junk_and_oversized_are_told_apart():
    with pytest.raises(CorruptImage, match="corrupt or truncated") as info:
        decode_image(truncated_png())
    assert type(info.value) is CorruptImage and info.value.reason == "corrupt_image"
    with pytest.raises(CorruptImage, match="empty image"):
        decode_image(b"")
    with pytest.raises(NotAnImage, match="not a supported image") as junk:
        decode_image(b"hello world, not an image")
    assert junk.value.reason == "corrupt_image"  # counted as corrupt by the shard readers
    with pytest.raises(OversizedImage, match="100-byte limit") as big:
        decode_image(png_bytes(50, 50), max_bytes=100)
    assert big.value.reason == "oversized_image"
    assert all(
        issubclass(cls, ImageRejected) and issubclass(cls, ValueError)
        for cls in (CorruptImage, DecompressionBomb, NotAnImage, OversizedImage)
    )


def test_open_header_reads_no_pixels():
    header = open_header(bomb_png(3000, 2000))  # 6 MP: under PIL's limit, never decoded here
    assert header.size == (3000, 2000) and header.format == "PNG"


def test_draft_decodes_big_jpegs_at_a_reduced_scale():
    out = io.BytesIO()
    Image.new("RGB", (1024, 512), (1, 2, 3)).save(out, format="JPEG")
    # each side stays >= min(side, 256): 512 high -> halved at most
    assert decode_image(out.getvalue(), draft_side=256).size == (512, 256)
    assert decode_image(out.getvalue()).size == (1024, 512)


def test_module_is_torch_free():
    code = "import sys, coldstart.data.images; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
