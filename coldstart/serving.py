"""Wiring of an encoder (encoders.create_encoder) into the index server's `encode` callable.

The server (index.server) never imports encoders; it receives
`encode(images: list[PIL.Image], texts: list[str]) -> np.ndarray  # (D,)`, and in
`encode.many(items: list[(images, texts)]) -> (N, D)` the same for N items in one encoder call
per modality (micro-batched uploads).
An item with several pieces of content (an image and a title) is fused as the embedding export
the server serves was (coldstart.data.fusion: the embed job's one function; `fusion`, read from
the export's manifest, default mean fusion), and `encode.video(frames)` pools a video's frames
as that export did (mean, or its trained attention pooling: `video_pool`). `encode.fusion`
carries the spec to the server (index.routes_search.embed_upload fuses multi-part uploads).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from typing import Any

import numpy as np

from coldstart.data.fusion import FusionSpec

log = logging.getLogger(__name__)

EncodeFn = Callable[[list[Any], list[str]], np.ndarray]


def encode_fn_from_encoder(
    encoder: Any, fusion: FusionSpec | None = None, video_pool: Any = None
) -> EncodeFn:
    """An `encode` callable over any object with `modalities`, `dim`, `encode_image`,
    `encode_text` (each (B, D), tensors or arrays). fusion: how an item's image and text parts
    combine (default: mean fusion); video_pool: a torch module (encoders.pooling.
    TemporalPooling) pooling a video's frame vectors, used by `encode.video` (default: mean)."""
    from coldstart.index.vector_index import InvalidInput

    spec = fusion or FusionSpec()

    def _fuse(image_rows: np.ndarray | None, text_rows: np.ndarray | None) -> np.ndarray:
        """(D,): the images' unit mean (a carousel) and the texts' unit mean, fused by spec."""
        parts = {
            name: _pool(rows)
            for name, rows in (("image", image_rows), ("text", text_rows))
            if rows is not None
        }
        if len(parts) == 1:
            return next(iter(parts.values()))
        try:
            return spec.fuse_item(parts)
        except ValueError as err:  # e.g. weighted fusion with no weight for a modality
            raise InvalidInput(f"this server fuses as its embedding export: {err}") from err

    lock = threading.Lock()  # torch modules toggle eval/train around calls: one at a time
    modalities = tuple(getattr(encoder, "modalities", ()))

    def _np(x: Any) -> np.ndarray:
        if hasattr(x, "detach"):
            x = x.detach().cpu().float().numpy()
        return np.asarray(x, dtype=np.float32)

    def encode(images: list[Any], texts: list[str]) -> np.ndarray:
        if not images and not texts:
            raise InvalidInput("nothing to encode: send an image and/or text")
        if images and "image" not in modalities:
            raise InvalidInput(f"this server's encoder has no image modality ({modalities})")
        if texts and "text" not in modalities:
            raise InvalidInput(f"this server's encoder has no text modality ({modalities})")
        with lock:
            image_rows = _np(encoder.encode_image(list(images))) if images else None  # (B, D)
            text_rows = _np(encoder.encode_text(list(texts))) if texts else None  # (B, D)
        return _fuse(image_rows, text_rows)  # (D,)

    def video(frames: list[Any]) -> np.ndarray:
        """(D,): a video's K frames through the image tower, pooled over time as the export
        pooled them (video_pool; mean without one)."""
        if not frames:
            raise InvalidInput("nothing to encode: the video has no frame")
        if "image" not in modalities:
            raise InvalidInput(f"this server's encoder has no image modality ({modalities})")
        with lock:
            rows = encoder.encode_image(list(frames))  # (K, D)
            if video_pool is None:
                return _pool(_np(rows))
            import torch

            with torch.no_grad():
                x = torch.as_tensor(_np(rows))[None]  # (1, K, D)
                return _np(video_pool(x))[0]  # (D,)

    def many(items: list[tuple[list[Any], list[str]]]) -> np.ndarray:
        """(N, D): `encode` of N items in one encoder call per modality (micro-batched
        uploads); each item's rows are fused exactly as `encode` fuses them."""
        for images, texts in items:
            if images and "image" not in modalities or texts and "text" not in modalities:
                return np.stack([encode(i, t) for i, t in items])  # the same clear errors
        images = [im for i, _ in items for im in i]
        texts = [t for _, ts in items for t in ts]
        with lock:
            image_rows = _np(encoder.encode_image(images)) if images else None
            text_rows = _np(encoder.encode_text(texts)) if texts else None
        out, a, b = [], 0, 0
        for i, t in items:
            if not i and not t:
                raise InvalidInput("nothing to encode: send an image and/or text")
            out.append(
                _fuse(
                    image_rows[a : a + len(i)] if i else None,
                    text_rows[b : b + len(t)] if t else None,
                )
            )
            a, b = a + len(i), b + len(t)
        return np.stack(out)

    encode.many = many  # type: ignore[attr-defined]
    encode.video = video  # type: ignore[attr-defined]
    encode.fusion = spec  # type: ignore[attr-defined]
    return encode


def _pool(rows: np.ndarray) -> np.ndarray:
    """(D,) the normalized mean of (R, D) rows' unit vectors (encoders.pooling.pool_mean)."""
    rows = rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)
    fused = rows.mean(axis=0)
    return fused / max(float(np.linalg.norm(fused)), 1e-12)


def make_encode(
    name: str, pretrained: str | None = None, fusion: FusionSpec | None = None, **overrides: Any
) -> tuple[EncodeFn, int]:
    """(encode callable, output dim) for a registered encoder name; fusion: the served
    export's (export_fusion), whose video pooling `encode.video` applies too."""
    from coldstart.encoders import create_encoder

    encoder = create_encoder(name, pretrained=pretrained, **overrides)
    pool = video_pool_for(fusion, int(encoder.dim)) if fusion is not None else None
    return encode_fn_from_encoder(encoder, fusion, pool), int(encoder.dim)


def export_fusion(export: str | os.PathLike | None) -> FusionSpec:
    """The fusion and video pooling an embedding export was written with (its manifest;
    data.fusion.FusionSpec.from_manifest); None, or an export without these records (written
    before they were): mean fusion and mean pooling, what the server always did."""
    if export is None:
        return FusionSpec()
    from coldstart.data.embeddings import EmbeddingManifest

    spec = FusionSpec.from_manifest(EmbeddingManifest.load(export))
    log.info(
        "uploads fused as %s: %s %s; videos: %s frames, %s pooling",
        export,
        spec.method,
        spec.weights or "",
        spec.video_frames or "default",
        spec.video_pooling,
    )
    return spec


def video_pool_for(spec: FusionSpec, dim: int) -> Any:
    """The export's attention pooling module (encoders.pooling.TemporalPooling), loaded from
    the weights its manifest names and checked against the digest it recorded; None for mean
    pooling. An attention export that names no weights (written before they were recorded)
    and whose digest is not the untrained module's is served with mean pooling and a warning."""
    if spec.video_pooling == "mean":
        return None
    from coldstart.encoders.embed import load_pooling_state, pooling_sha256
    from coldstart.encoders.pooling import create_pooling

    path = spec.video_pooling_state
    state = load_pooling_state(path) if path else None
    module = create_pooling(spec.video_pooling, dim, state)
    digest = pooling_sha256(module)
    if spec.video_pooling_sha256 and digest != spec.video_pooling_sha256:
        if path is None:
            log.warning(
                "the export pooled videos with trained attention weights it does not name "
                "(an export written before they were recorded): videos are mean-pooled here"
            )
            return None
        raise ValueError(
            f"{path}: its attention pooling weights (sha256 {digest[:12]}) are not the ones "
            f"the export pooled videos with ({spec.video_pooling_sha256[:12]})"
        )
    return module
