"""Wiring of an encoder (encoders.create_encoder) into the index server's `encode` callable.

The server (index.server) never imports encoders; it receives
`encode(images: list[PIL.Image], texts: list[str]) -> np.ndarray  # (D,)`, and in
`encode.many(items: list[(images, texts)]) -> (N, D)` the same for N items in one encoder call
per modality (micro-batched uploads).
An item with several pieces of content (an image and a title) becomes the normalized mean of
its per-modality unit vectors, the untrained form of the encoders' modality fusion.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import numpy as np

EncodeFn = Callable[[list[Any], list[str]], np.ndarray]


def encode_fn_from_encoder(encoder: Any) -> EncodeFn:
    """An `encode` callable over any object with `modalities`, `dim`, `encode_image`,
    `encode_text` (each (B, D), tensors or arrays)."""
    from coldstart.index.vector_index import InvalidInput

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
        parts: list[np.ndarray] = []
        with lock:
            if images:
                parts.append(_np(encoder.encode_image(list(images))))  # (B, D)
            if texts:
                parts.append(_np(encoder.encode_text(list(texts))))  # (B, D)
        return _fuse(np.concatenate(parts, axis=0))  # (D,)

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
            parts = [
                x
                for x in (
                    image_rows[a : a + len(i)] if i else None,
                    text_rows[b : b + len(t)] if t else None,
                )
                if x is not None
            ]
            out.append(_fuse(np.concatenate(parts, axis=0)))
            a, b = a + len(i), b + len(t)
        return np.stack(out)

    encode.many = many  # type: ignore[attr-defined]
    return encode


def _fuse(rows: np.ndarray) -> np.ndarray:
    """(D,) the normalized mean of an item's (R, D) unit-normalized modality rows."""
    rows = rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)
    fused = rows.mean(axis=0)
    return fused / max(float(np.linalg.norm(fused)), 1e-12)


def make_encode(name: str, pretrained: str | None = None, **overrides: Any) -> tuple[EncodeFn, int]:
    """(encode callable, output dim) for a registered encoder name."""
    from coldstart.encoders import create_encoder

    encoder = create_encoder(name, pretrained=pretrained, **overrides)
    return encode_fn_from_encoder(encoder), int(encoder.dim)
