"""A method's serving paths as persisted functions: a new item's content -> its item vector
(ColdItemMap), and a new user's history -> their user vector (HistoryUserMap).

    cold = fitted.cold_item            # ColdItemMap | None (None: the method has no content path)
    cold(content)                      # (N, C) content vectors -> (N, D) item vectors
    cold.save(dir); ColdItemMap.load(dir)
    user = fitted.history_user         # HistoryUserMap | None
    user(user.rows_of(item_ids))       # (H,) catalogue rows, oldest first -> (D,) user vector

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
With the ranker's media_type feature a map also reads the item's media type (codes of
data.schema.MEDIA_TYPES, known at upload): tower adds the learned media vector (array
"media"), ridge takes a one-hot of it beside the content (params media_types), a mixture hands
it to its parts. `cold(content, media)`; media None reads as "none" (code 0); maps without the
feature ignore it.

A user the model never saw has no user-ID row; HistoryUserMap is the method's user side over a
history alone, through the same modules that made the known users' vectors. Kinds:
  ones       popularity: the constant 1
  knn        content_knn: the unit mean of the history's unit content (arrays: content (I, C))
  tower      a trained Ranker's UserTower (its history part: pooled or sequence) on the last
             history_len rows, -1 padded on the left as in training; no user-ID row;
             torch tables (a TorchRec-table tower's weights renamed: ranker.tables)
  mixture    ours: each kept channel's user vector, then constant 1 columns (pop's, offset's)
History items outside the training catalogue (uploads) have no history row and are skipped.

Files: manifest.json (kind, dims, params, parts) + arrays.npz, written atomically.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

KINDS = ("zeros", "normalize", "ridge", "tower", "mixture")
USER_KINDS = ("ones", "knn", "tower", "mixture")
FORMAT = 1


def unit_rows(x: np.ndarray) -> np.ndarray:
    """(N, C) rows scaled to unit length (all-zero rows stay zero), float32."""
    n = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.maximum(n, 1e-12)).astype(np.float32)


@dataclass
class VectorMap:
    """A persisted function of a method (see the subclasses), as data.

    arrays: the kind's weights; params: JSON-able settings; parts: a mixture's channel maps in
    the served vector's column order. content_dim: the content dimension the method reads.
    """

    kind: str
    dim: int
    content_dim: int
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    parts: list[Any] = field(default_factory=list)
    _module: Any = field(default=None, repr=False, compare=False)

    KINDS: ClassVar[tuple[str, ...]] = ()

    def __post_init__(self) -> None:
        if self.kind not in self.KINDS:
            raise ValueError(
                f"{type(self).__name__} kind must be one of {self.KINDS}, got {self.kind!r}"
            )

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
    def load(cls, directory: str | Path) -> Any:
        directory = Path(directory)
        spec = json.loads((directory / "manifest.json").read_text())
        if spec.get("format") != FORMAT:
            raise ValueError(f"{directory}: {cls.__name__} format {spec.get('format')} unknown")
        with np.load(directory / "arrays.npz") as npz:
            arrays = {k: npz[k] for k in npz.files}
        return cls._from_spec(spec, "", arrays)

    @classmethod
    def _from_spec(cls, spec: dict[str, Any], prefix: str, arrays: dict) -> Any:
        return cls(
            kind=spec["kind"],
            dim=int(spec["dim"]),
            content_dim=int(spec["content_dim"]),
            arrays={k: arrays[f"{prefix}{k}"] for k in spec["arrays"]},
            params=dict(spec["params"]),
            parts=[cls._from_spec(p, f"{prefix}{i}/", arrays) for i, p in enumerate(spec["parts"])],
        )


@dataclass
class ColdItemMap(VectorMap):
    """content (N, C) -> ranker-space item vectors (N, dim). See the module docstring.

    arrays: ridge {"w"}; tower: the MLP's state dict. params: tower hidden, use_bias,
    normalize; mixture channels, factors, offset.
    """

    KINDS = KINDS

    @property
    def reads_media(self) -> bool:
        """Whether the item's media type changes this map's output."""
        return (
            "media" in self.arrays
            or bool(self.params.get("media_types"))
            or any(p.reads_media for p in self.parts)
        )

    def __call__(self, content: np.ndarray, media: np.ndarray | None = None) -> np.ndarray:
        """(N, C) float content vectors (+ (N,) int media type codes) -> (N, dim) float32."""
        x = np.asarray(content, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != self.content_dim:
            raise ValueError(f"content must be (N, {self.content_dim}), got shape {tuple(x.shape)}")
        codes = np.zeros(len(x), np.int64) if media is None else np.asarray(media, np.int64)
        if codes.shape != (len(x),):
            raise ValueError(f"media must be ({len(x)},) codes, got shape {codes.shape}")
        if self.kind == "zeros":
            return np.zeros((len(x), self.dim), np.float32)
        if self.kind == "normalize":
            return unit_rows(x)
        if self.kind == "ridge":
            cols = [unit_rows(x), np.ones((len(x), 1), np.float32)]
            if self.params.get("media_types"):
                cols.append(media_onehot(codes, int(self.params["media_types"])))
            return (np.concatenate(cols, axis=1) @ self.arrays["w"]).astype(np.float32)
        if self.kind == "tower":
            out = self._tower(unit_rows(x) if self.params.get("normalize", True) else x)
            if "media" in self.arrays:
                out = out + self.arrays["media"][codes]
                if not self.params.get("use_bias", True):
                    out[:, -1] = 0.0
            return out.astype(np.float32)
        cols = [p(x, codes) * np.float32(f) for p, f in zip(self.parts, self.params["factors"])]
        offset = float(self.params.get("offset") or 0.0)
        if offset:  # against the constant 1 of every user vector
            cols.append(np.full((len(x), 1), offset, np.float32))
        return np.concatenate(cols, axis=1).astype(np.float32)

    def _tower(self, x: np.ndarray) -> np.ndarray:
        import torch

        from coldstart.ranker.model import content_projection

        if self._module is None:
            module = content_projection(self.content_dim, int(self.params["hidden"]), self.dim)
            module.load_state_dict(
                {k: torch.from_numpy(v) for k, v in self.arrays.items() if k != "media"}
            )
            self._module = module.eval()
        with torch.no_grad():
            out = self._module(torch.from_numpy(x)).numpy().astype(np.float32)
        if not self.params.get("use_bias", True):
            out[:, -1] = 0.0
        return out


@dataclass
class HistoryUserMap(VectorMap):
    """A new user's history (H,) catalogue rows, oldest first (-1: not in the catalogue) ->
    (dim,) user vector. See the module docstring. The top-level map holds the catalogue's item
    ids ("item_ids", row order) for `rows_of`.
    """

    KINDS = USER_KINDS
    _rows: Any = field(default=None, repr=False, compare=False)

    def with_catalogue(self, item_ids: np.ndarray) -> HistoryUserMap:
        """Attach the catalogue's ids in row order (strings kept as a unicode array: no pickle)."""
        ids = np.asarray(item_ids)
        if not np.issubdtype(ids.dtype, np.integer):
            ids = ids.astype(str)
        self.arrays = {**self.arrays, "item_ids": ids}
        return self

    def rows_of(self, item_ids: Any) -> np.ndarray:
        """(H,) catalogue rows of `item_ids` (-1 where an id is not in the catalogue)."""
        if self._rows is None:
            ids = self.arrays["item_ids"]
            self._rows = {(i.item() if hasattr(i, "item") else i): r for r, i in enumerate(ids)}
        return np.asarray([self._rows.get(i, -1) for i in item_ids], np.int64)

    def __call__(self, rows: np.ndarray) -> np.ndarray:
        """(H,) int64 rows, oldest first -> (dim,) float32."""
        rows = np.asarray(rows, np.int64).reshape(-1)
        rows = rows[rows >= 0]
        if self.kind == "ones":
            return np.ones(self.dim, np.float32)
        if self.kind == "knn":
            if len(rows) == 0:
                return np.zeros(self.dim, np.float32)
            return unit_rows(self.arrays["content"][rows].mean(0, keepdims=True))[0]
        if self.kind == "tower":
            return self._tower(rows)
        cols = [p(rows) for p in self.parts]
        cols.append(np.ones(int(self.params.get("ones", 0)), np.float32))
        return np.concatenate(cols).astype(np.float32)

    def _tower(self, rows: np.ndarray) -> np.ndarray:
        import torch

        from coldstart.ranker.model import UserTower, UserTowerConfig

        p = self.params
        if self._module is None:
            tower = UserTower(UserTowerConfig(**p["config"]), self.dim - 1, 1, int(p["num_items"]))
            state = {k: torch.from_numpy(v) for k, v in self.arrays.items() if k != "item_ids"}
            missing, unexpected = tower.load_state_dict(state, strict=False)
            if unexpected or any(not k.startswith("table.") for k in missing):
                raise ValueError(f"user tower weights do not fit: {missing} {unexpected}")
            self._module = tower.eval()
        length = int(p["config"]["history_len"])
        history = np.full((1, length), -1, np.int64)  # left padded, latest last (as training)
        tail = rows[-length:]
        if len(tail):
            history[0, length - len(tail) :] = tail
        with torch.no_grad():
            return self._module(None, torch.from_numpy(history))[0].numpy().astype(np.float32)


def user_tower_map(tower: Any) -> HistoryUserMap | None:
    """The history side of a trained UserTower as a HistoryUserMap; None when the tower reads no
    history (its users are their ID rows alone) or its tables are sharded over processes.
    TorchRec tables are kept under the torch tables' names and widths (ranker.tables
    .to_torch_state), so the map rebuilds a plain torch-tables tower whatever `tables` trained it.
    """
    import dataclasses

    import torch

    from coldstart.ranker.tables import to_torch_state

    if tower.history is None:
        return None
    full = to_torch_state(tower, tower.state_dict())
    if any(type(v) is not torch.Tensor for v in full.values()):
        return None  # a sharded table (ShardedTensor): this process holds part of its rows
    state = {
        k: v.detach().cpu().numpy().copy()
        for k, v in full.items()
        if not k.startswith("table.")  # the user-ID rows: a new user has none
    }
    params = {"config": dataclasses.asdict(tower.config), "num_items": int(tower.history.pad)}
    return HistoryUserMap("tower", int(tower.dim) + 1, 0, state, params)


def media_onehot(codes: np.ndarray, types: int) -> np.ndarray:
    """(N,) media type codes -> (N, types) float32 one-hot rows (ridge maps' media input)."""
    return np.eye(types, dtype=np.float32)[np.clip(np.asarray(codes, np.int64), 0, types - 1)]


def tower_map(tower: Any, content_dim: int, use_bias: bool, normalize: bool) -> ColdItemMap:
    """The cold path of a trained ItemTower (content MLP and its media vectors, no ID row) as a
    ColdItemMap. normalize: the tower was trained on unit content (BuildConfig.normalize_content)."""
    state = {k: v.detach().cpu().numpy().copy() for k, v in tower.projection.state_dict().items()}
    if getattr(tower, "media_table", None) is not None:
        state["media"] = tower.media_table.detach().cpu().numpy().copy()
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
    items: np.ndarray,
    rows: np.ndarray,
    content: np.ndarray | None,
    cold: ColdItemMap | None,
    media: np.ndarray | None = None,
) -> np.ndarray:
    """items (I, D) with rows `rows` replaced by cold(content[rows], media[rows]) (a copy;
    unchanged when there is no map or no content). media: (I,) media type codes or None."""
    if cold is None or content is None or len(rows) == 0:
        return items
    out = items.copy()
    out[rows] = cold(content[rows], None if media is None else media[rows])
    return out
