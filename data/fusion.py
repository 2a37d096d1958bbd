"""How an item's modality vectors become its one "fused" content vector, as numpy, for the embed
job (encoders.embed writes the fused rows with it) and the server (index.routes_search fuses an
upload with it): one implementation, so a served upload is the row the evaluation read.

    spec = FusionSpec.from_manifest(EmbeddingManifest.load("runs/x/artifacts/embed/<key>"))
    spec.fuse({"image": image_rows, "text": text_rows}, present)   # (N, D) unit rows

"mean": the normalized sum of the present modalities' unit vectors; "weighted": each scaled by
its weight first (encoders.config.FusionConfig.weights). Absent modalities are masked out (an
item with only a text is its text vector); a row with nothing present comes out as zeros.

A manifest records the fusion (extra.fusion: method, weights) and the video pooling
(extra.video: frames, pooling, pooling_sha256; extra.video_pooling_state: where attention
weights came from). Manifests written before these were recorded read as today's defaults:
mean fusion, videos mean-pooled over the serving config's frames.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

FUSED_METHODS = ("mean", "weighted")  # what an export's fused rows can be (no trained gate)


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def fuse_modalities(
    vectors: Mapping[str, np.ndarray],
    present: Mapping[str, np.ndarray] | None = None,
    method: str = "mean",
    weights: Mapping[str, float] | None = None,
    order: tuple[str, ...] = (),
) -> np.ndarray:
    """vectors: modality -> (N, D); present: modality -> (N,) bool (default: all) ->
    (N, D) float32 unit rows. Modalities are summed in `order` first, then the rest sorted (a
    fixed order: the same sum on every caller). Raises ValueError for an unknown method or
    (weighted) a present modality without a weight."""
    if method not in FUSED_METHODS:
        raise ValueError(f"fusion {method!r} cannot be recomputed ({', '.join(FUSED_METHODS)})")
    if not vectors:
        raise ValueError("nothing to fuse: no modality vectors given")
    mods = [m for m in order if m in vectors] + sorted(m for m in vectors if m not in order)
    weights = dict(weights or {})
    if method == "weighted":
        missing = [m for m in mods if m not in weights]
        if missing:
            raise ValueError(f"weighted fusion needs a weight for {missing}")
    fused = None
    for m in mods:
        rows = _unit(vectors[m])  # (N, D)
        if rows.ndim != 2:
            raise ValueError(f"{m} vectors must be (N, D), got shape {rows.shape}")
        mask = np.ones(len(rows), bool) if present is None or m not in present else present[m]
        w = np.where(np.asarray(mask, bool), float(weights[m]) if method == "weighted" else 1.0, 0)
        term = w.astype(np.float32)[:, None] * rows  # (N, D); absent rows never leak in
        fused = term if fused is None else fused + term
    return _unit(fused)  # zero rows stay zero


@dataclass
class FusionSpec:
    """What turns an item's parts into its fused row and a video's frames into its vector.

    method / weights: the fusion (fuse_modalities). video_frames: frames sampled per video
    (None: not recorded, the caller's default). video_pooling: "mean" or "attention";
    video_pooling_state: the attention weights' file (a .pt state_dict or a fine-tuning
    .ckpt); video_pooling_sha256: the digest of those weights the export recorded.
    """

    method: str = "mean"
    weights: dict[str, float] = field(default_factory=dict)
    video_frames: int | None = None
    video_pooling: str = "mean"
    video_pooling_state: str | None = None
    video_pooling_sha256: str | None = None
    order: tuple[str, ...] = ("image", "video", "text", "tags")  # the embed job's order

    @classmethod
    def from_manifest(cls, manifest: Any) -> FusionSpec:
        """The spec an export (data.embeddings.EmbeddingManifest, or its `extra` dict) was
        written with; missing records read as the defaults (mean fusion, mean pooling)."""
        extra = getattr(manifest, "extra", manifest) or {}
        fusion = extra.get("fusion") or {}
        video = extra.get("video") or {}
        return cls(
            method=str(fusion.get("method", "mean")),
            weights={k: float(v) for k, v in (fusion.get("weights") or {}).items()},
            video_frames=int(video["frames"]) if video.get("frames") else None,
            video_pooling=str(video.get("pooling", "mean")),
            video_pooling_state=extra.get("video_pooling_state"),
            video_pooling_sha256=video.get("pooling_sha256"),
        )

    def record(self) -> dict[str, Any]:
        """The manifest's extra.fusion entry."""
        return {"method": self.method, "weights": dict(self.weights)}

    def fuse(
        self, vectors: Mapping[str, np.ndarray], present: Mapping[str, np.ndarray] | None = None
    ) -> np.ndarray:
        """(N, D) fused unit rows of modality -> (N, D) vectors (fuse_modalities)."""
        return fuse_modalities(vectors, present, self.method, self.weights, self.order)

    def fuse_item(self, parts: Mapping[str, np.ndarray]) -> np.ndarray:
        """One item: modality -> (D,) vector -> its (D,) fused vector."""
        return self.fuse({m: np.asarray(v, np.float32)[None] for m, v in parts.items()})[0]


__all__ = ["FUSED_METHODS", "FusionSpec", "fuse_modalities"]
