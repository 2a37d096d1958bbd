"""A method's cold-item path as one persisted function: content vector(s) -> ranker-space vector.

    cold = fitted.cold_item            # ColdItemMap | None (None: the method has no content path)
    cold(content)                      # (N, C) content vectors -> (N, D) item vectors
    cold.save(dir); ColdItemMap.load(dir)

An item without training interactions gets its vector from its content alone. Each method
decides how (ranker.methods); this module holds the result as data, so the offline evaluation
(fit_method fills every non-warm row through it) and the server (an uploaded item) run the
SAME function. Kinds:
  zeros      popularity: log1p(0) = 0, a (N, 1) zero vector
  normalize  content_knn: the unit-length content vector
  ridge      content_projection: [unit content, 1] @ W, W (C + 1, D) fitted on warm items
  tower      warmstart: the trained item tower's content MLP on the (unit) content (bias column
             zeroed when the tower has no bias); no ID row, as for any row without one
  mixture    ours: each channel's map scaled by its cold weight / channel scale, concatenated in
             the served vector's channel order, plus the cold offset column when there is one

Files: manifest.json (kind, dims, params, parts) + arrays.npz, written atomically.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

KINDS = ("zeros", "normalize", "ridge", "tower", "mixture")
FORMAT = 1


def unit_rows(x: np.ndarray) -> np.ndarray:
    """(N, C) rows scaled to unit length (all-zero rows stay zero), float32."""
    n = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.maximum(n, 1e-12)).astype(np.float32)


@dataclass
class ColdItemMap:
    """content (N, C) -> ranker-space item vectors (N, dim). See the module docstring.

    arrays: the kind's weights (ridge: {"w"}; tower: the MLP's state dict).
    params: JSON-able settings (tower: hidden, use_bias; mixture: factors, offset).
    parts: a mixture's channel maps, in the served vector's order.
    """

    kind: str
    dim: int
    content_dim: int
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    parts: list[ColdItemMap] = field(default_factory=list)
    _module: Any = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"cold-item map kind must be one of {KINDS}, got {self.kind!r}")

    def __call__(self, content: np.ndarray) -> np.ndarray:
        """(N, C) float content vectors -> (N, dim) float32 item vectors."""
        x = np.asarray(content, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != self.content_dim:
            raise ValueError(f"content must be (N, {self.content_dim}), got shape {tuple(x.shape)}")
        if self.kind == "zeros":
            return np.zeros((len(x), self.dim), np.float32)
        if self.kind == "normalize":
            return unit_rows(x)
        if self.kind == "ridge":
            ones = np.ones((len(x), 1), np.float32)
            return (np.concatenate([unit_rows(x), ones], axis=1) @ self.arrays["w"]).astype(
                np.float32
            )
        if self.kind == "tower":
            return self._tower(unit_rows(x) if self.params.get("normalize", True) else x)
        cols = [p(x) * np.float32(f) for p, f in zip(self.parts, self.params["factors"])]
        offset = float(self.params.get("offset") or 0.0)
        if offset:  # against the constant 1 of every user vector
            cols.append(np.full((len(x), 1), offset, np.float32))
        return np.concatenate(cols, axis=1).astype(np.float32)

    def _tower(self, x: np.ndarray) -> np.ndarray:
        import torch

        from coldstart.ranker.model import content_projection

        if self._module is None:
            module = content_projection(self.content_dim, int(self.params["hidden"]), self.dim)
            module.load_state_dict({k: torch.from_numpy(v) for k, v in self.arrays.items()})
            self._module = module.eval()
        with torch.no_grad():
            out = self._module(torch.from_numpy(x)).numpy().astype(np.float32)
        if not self.params.get("use_bias", True):
            out[:, -1] = 0.0
        return out

    # ------------------------------------------------------------------ persistence
    def _spec(self, prefix: str, arrays: dict[str, np.ndarray]) -> dict[str, Any]:
        for k, v in self.arrays.items():
            arrays[f"{prefix}{k}"] = v
        return {
            "kind": self.kind,
            "dim": int(self.dim),
            "content_dim": int(self.content_dim),
            "arrays": sorted(self.arrays),
            "params": self.params,
            "parts": [p._spec(f"{prefix}{i}/", arrays) for i, p in enumerate(self.parts)],
        }

    def save(self, directory: str | Path) -> None:
        """Write manifest.json + arrays.npz into `directory` (each file atomically)."""
        from coldstart.data.embeddings import atomic_write_bytes, atomic_write_json

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        arrays: dict[str, np.ndarray] = {}
        spec = {"format": FORMAT, **self._spec("", arrays)}
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        atomic_write_bytes(directory / "arrays.npz", buffer.getvalue())
        atomic_write_json(directory / "manifest.json", spec)  # last: its presence = complete

    @classmethod
    def load(cls, directory: str | Path) -> ColdItemMap:
        directory = Path(directory)
        spec = json.loads((directory / "manifest.json").read_text())
        if spec.get("format") != FORMAT:
            raise ValueError(f"{directory}: cold-item map format {spec.get('format')} unknown")
        with np.load(directory / "arrays.npz") as npz:
            arrays = {k: npz[k] for k in npz.files}
        return cls._from_spec(spec, "", arrays)

    @classmethod
    def _from_spec(cls, spec: dict[str, Any], prefix: str, arrays: dict) -> ColdItemMap:
        return cls(
            kind=spec["kind"],
            dim=int(spec["dim"]),
            content_dim=int(spec["content_dim"]),
            arrays={k: arrays[f"{prefix}{k}"] for k in spec["arrays"]},
            params=dict(spec["params"]),
            parts=[cls._from_spec(p, f"{prefix}{i}/", arrays) for i, p in enumerate(spec["parts"])],
        )


def tower_map(tower: Any, content_dim: int, use_bias: bool, normalize: bool) -> ColdItemMap:
    """The cold path of a trained ItemTower (content MLP, no ID row) as a ColdItemMap.
    normalize: the tower was trained on unit content (BuildConfig.normalize_content)."""
    state = {k: v.detach().cpu().numpy().copy() for k, v in tower.projection.state_dict().items()}
    hidden = int(tower.projection[0].out_features)
    out = int(tower.projection[-1].out_features)
    return ColdItemMap(
        "tower",
        out,
        content_dim,
        state,
        {"hidden": hidden, "use_bias": bool(use_bias), "normalize": bool(normalize)},
    )


def apply_cold_map(
    items: np.ndarray, rows: np.ndarray, content: np.ndarray | None, cold: ColdItemMap | None
) -> np.ndarray:
    """items (I, D) with rows `rows` replaced by cold(content[rows]) (a copy; unchanged when
    there is no map or no content)."""
    if cold is None or content is None or len(rows) == 0:
        return items
    out = items.copy()
    out[rows] = cold(content[rows])
    return out
