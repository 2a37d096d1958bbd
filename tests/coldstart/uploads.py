"""Shared by the ranker-upload tests: item media as the embed job sees it (shards it embeds)
and as a client sends it (a multipart form)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any


def png_bytes(image: Any) -> bytes:
    """PNG bytes of a PIL image or an (H, W, 3) uint8 array (lossless: one image both ways)."""
    from PIL import Image

    out = io.BytesIO()
    (image if hasattr(image, "save") else Image.fromarray(image)).save(out, format="PNG")
    return out.getvalue()


def upload_files(parts: dict) -> list[tuple[str, tuple[str, bytes, str]]]:
    """A multipart upload of an item's media (repeated `image` fields: a carousel)."""
    files = [("image", (f"{n}.png", b, "image/png")) for n, b in enumerate(parts.get("images", []))]
    if "image" in parts:
        files.append(("image", ("p.png", parts["image"], "image/png")))
    if "video" in parts:
        files.append(("video", ("v.bin", parts["video"], "video/mp4")))
    return files


def embed_uploads(root: Path, uploads: dict[int, dict], encoder: Any, **config: Any) -> Any:
    """Pack `uploads` (item id -> {image | images | video, text}) as one shard under `root` and
    run the embed job on it (`config`: EmbedConfig overrides) into root/emb; its manifest."""
    from coldstart.data.shards import write_shards
    from coldstart.encoders.embed import EmbedConfig, build_embeddings

    samples = [
        {"key": f"s{n}", "json": {"item_id": item}, **parts}
        for n, (item, parts) in enumerate(uploads.items())
    ]
    write_shards(samples, str(root / "up-%03d.tar"), image_format="png")
    embed = EmbedConfig(
        encoder="tiny-clip", inputs=[str(root / "up-000.tar")], out=str(root / "emb"),
        batch_size=4, num_workers=0, progress=False, **config,
    )  # fmt: skip
    manifest = build_embeddings(embed, encoder=encoder)
    assert manifest.modalities == ["image", "video", "text", "fused"] and not manifest.skipped
    return manifest
