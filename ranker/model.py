"""The ranker: an item tower (ID table warm-started from content, content projection, semantic
IDs), a user tower (user ID + pooled or sequence history), dot-product scores and two losses.

Plain nn.Modules: no IO, no Lightning. Vectors carry a bias in their last coordinate (items: the
item's bias, users: a constant 1), so `score = user_vector @ item_vector` is the whole model and
item vectors can go straight into an inner-product FAISS index.

Request-level dedup: a `RequestBatch` holds R requests and N = sum(k) impression rows. The user
side runs once per request (R rows) and is expanded to the N rows with `request_index`; the plain
path runs it on N rows. Both give the same scores and gradients (tests/ranker/test_dedup.py).
With TorchRec tables (`RankerConfig.tables: torchrec`) the pooled user features are looked up
once per request and expanded after the all-to-all (a variable-batch KJT with inverse indices);
the sequence history is looked up and encoded once per request and expanded after the encoder.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from coldstart.data.schema import MEDIA_TYPES, RequestBatch
from coldstart.ranker.semantic_ids import SemanticIDEmbedding
from coldstart.ranker.tables import (
    HashedTableConfig,
    create_embedding,
    create_embedding_bag,
    create_id_table,
    lookup,
)


@dataclass
class ItemTowerConfig:
    """Item side. Item vector = content projection (+ semantic-ID prefixes) + ID row.

    init: "content" warm-starts the ID vocabulary from content (combine="residual": the ID row is
      a zero-initialised correction on top of the item's projected content, so every item starts
      at its content vector; combine="swap": the ID row replaces the content projection and is
      initialised to it). "random": rows start as noise (the ID-only baseline).
    id_dropout: share of warm items shown content-only during training (the cold case).
    media_type: add a learned vector per media type (data.schema.MEDIA_TYPES: none, photo,
      carousel, video) to the content side, so photos, carousels and videos can sit apart in
      one space. It is known at upload, so cold items get it too (ranker.cold_items). Zero at
      init; a no-op (no parameter at all) where the catalogue holds fewer than two types.
    Field defaults here, in UserTowerConfig, RankerConfig and ranker.train's TrainConfig and
    BuildConfig are the defaults of every method (ranker.methods registers only differences).
    """

    use_id: bool = True
    use_content: bool = True
    content_hidden: int = 256
    init: str = "content"  # content | random
    combine: str = "residual"  # residual | swap
    id_dropout: float = 0.3
    use_bias: bool = True
    hash_size: int | None = None
    sparse: bool = False
    init_std: float = 0.05
    semantic_ids: bool = False
    sid_levels: int = 2
    sid_codewords: int = 16
    media_type: bool = False


@dataclass
class UserTowerConfig:
    """User side: user-ID row plus history features, pooled (EmbeddingBag) or sequence."""

    use_user_id: bool = True
    history: str = "pooled"  # pooled | sequence | none
    history_len: int = 100
    pooling: str = "mean"  # pooled: mean | sum
    seq_layers: int = 1
    seq_heads: int = 2
    hash_size: int | None = None
    sparse: bool = False
    init_std: float = 0.05


@dataclass
class RankerConfig:
    dim: int = 64
    item: ItemTowerConfig = field(default_factory=ItemTowerConfig)
    user: UserTowerConfig = field(default_factory=UserTowerConfig)
    loss: str = "softmax"  # softmax (in-batch negatives + logQ) | bce (labelled impressions)
    num_negatives: int = 0  # extra uniform negatives shared by the batch (softmax only)
    logq: bool = True
    temperature: float = 1.0
    # ID tables as plain torch modules, or as TorchRec collections that
    # ranker.sharding.TorchRecStrategy shards over processes (same model, same results).
    tables: str = "torch"  # torch | torchrec


def content_projection(content_dim: int, hidden: int, out: int) -> nn.Sequential:
    """The item tower's content MLP: (N, content_dim) -> (N, out). One definition, so a saved
    cold-item map (ranker.cold_items) rebuilds exactly the module that was trained."""
    return nn.Sequential(nn.Linear(content_dim, hidden), nn.GELU(), nn.Linear(hidden, out))


class ItemTower(nn.Module):
    """forward(item_rows (N,)) -> (N, D + 1) item vectors, last column = bias.

    content:      (I, C) float content vectors per catalogue row (zeros where missing).
    id_available: (I,) bool, whether a row may use its ID embedding (False: cold, rare, new).
    id_keys:      (I,) int64 key looked up in the ID table (the row, or a raw id to hash).
    sid_rows:     (I, L) int64 prefix rows for semantic IDs, with `sid_num_rows` rows.
    media:        (I,) int64 media type codes (data.schema.MEDIA_TYPES); used with
                  config.media_type and content (None: the feature is off).
    """

    def __init__(
        self,
        config: ItemTowerConfig,
        dim: int,
        num_items: int,
        content: torch.Tensor | None = None,
        id_available: torch.Tensor | None = None,
        id_keys: torch.Tensor | None = None,
        sid_rows: np.ndarray | None = None,
        sid_num_rows: int = 0,
        tables: str = "torch",
        media: torch.Tensor | np.ndarray | None = None,
    ) -> None:
        super().__init__()
        self.config, self.dim, self.num_items = config, dim, num_items
        out = dim + 1
        if config.use_content and content is None:
            raise ValueError("ItemTowerConfig.use_content=True needs content vectors")
        if not (config.use_id or config.use_content):
            raise ValueError("the item tower needs IDs, content or both")
        content = (
            torch.zeros(num_items, 1)
            if content is None
            else torch.as_tensor(content, dtype=torch.float32)
        )
        self.register_buffer("content", content)
        avail = (
            torch.ones(num_items, dtype=torch.bool)
            if id_available is None
            else torch.as_tensor(id_available)
        )
        self.register_buffer("id_available", avail.bool())
        keys = (
            torch.arange(num_items)
            if id_keys is None
            else torch.as_tensor(id_keys, dtype=torch.int64)
        )
        self.register_buffer("id_keys", keys)
        if config.use_content:
            self.projection = content_projection(content.shape[1], config.content_hidden, out)
        self.media_table: nn.Parameter | None = None
        if config.media_type and config.use_content and media is not None:
            # Zero rows (no random draw, so the other modules' init is unchanged): every item
            # starts at its content vector, as with the residual ID rows.
            self.register_buffer("media", torch.as_tensor(media, dtype=torch.int64))
            self.media_table = nn.Parameter(torch.zeros(len(MEDIA_TYPES), out))
        self.sid = (
            SemanticIDEmbedding(sid_rows, sid_num_rows, out, tables)
            if config.semantic_ids and sid_rows is not None
            else None
        )
        if config.use_id:
            zero_init = (
                config.init == "content" and config.combine == "residual" and config.use_content
            )
            self.table = create_id_table(
                HashedTableConfig(
                    num_ids=num_items,
                    dim=out,
                    hash_size=config.hash_size,
                    sparse=config.sparse,
                    init_std=0.0 if zero_init else config.init_std,
                ),
                tables,
                "item_id",
            )
            if config.init == "content" and config.combine == "swap" and config.use_content:
                self.warm_start()

    @torch.no_grad()
    def warm_start(self) -> None:
        """Set every available ID row to its item's projected content (transfer learning)."""
        rows = torch.nonzero(self.id_available).flatten()
        vectors = self.content_vectors(rows)
        self.table.weight.index_copy_(0, self.table.row_of(self.id_keys[rows]), vectors)

    def content_vectors(self, item_rows: torch.Tensor) -> torch.Tensor:
        """(N, D + 1) the content side alone: projection plus semantic-ID prefixes."""
        vec = self.projection(self.content[item_rows])
        if self.sid is not None:
            vec = vec + self.sid(item_rows)
        if self.media_table is not None:
            vec = vec + self.media_table[self.media[item_rows]]
        return vec

    def forward(self, item_rows: torch.Tensor, drop_ids: bool | None = None) -> torch.Tensor:
        cfg = self.config
        drop_ids = self.training if drop_ids is None else drop_ids
        if not cfg.use_content:
            vec = self.table(self.id_keys[item_rows])
        else:
            vec = self.content_vectors(item_rows)
            if cfg.use_id:
                use = self.id_available[item_rows]  # (N,)
                if drop_ids and cfg.id_dropout > 0:
                    use = use & (torch.rand(use.shape, device=use.device) >= cfg.id_dropout)
                # Rows without an ID (cold, new) look up key 0 and are masked out below.
                keys = torch.where(self.id_available[item_rows], self.id_keys[item_rows], 0)
                ids = self.table(keys)  # (N, D + 1)
                mask = use.unsqueeze(1).to(vec.dtype)
                vec = (
                    vec + mask * ids if cfg.combine == "residual" else mask * ids + (1 - mask) * vec
                )
        if not cfg.use_bias:
            vec = torch.cat([vec[:, :-1], torch.zeros_like(vec[:, -1:])], dim=1)
        return vec

    @torch.no_grad()
    def add_items(
        self,
        content: torch.Tensor,
        sid_rows: torch.Tensor | None = None,
        media: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Append brand-new items (no retraining); returns their new rows.

        A new item has no trained ID row, so it is represented by its content projection: the
        same vector its row would be warm-started with. content: (M, C); media: (M,) media
        type codes (None: "none").
        """
        m = len(content)
        start = self.num_items
        self.content = torch.cat([self.content, content.to(self.content)])
        self.id_available = torch.cat(
            [self.id_available, torch.zeros(m, dtype=torch.bool, device=self.id_available.device)]
        )
        self.id_keys = torch.cat(
            [self.id_keys, torch.zeros(m, dtype=torch.int64, device=self.id_keys.device)]
        )
        if self.sid is not None:
            extra = (
                sid_rows
                if sid_rows is not None
                else torch.full((m, self.sid.item_prefix_rows.shape[1]), self.sid.unknown_row)
            )
            self.sid.item_prefix_rows = torch.cat(
                [self.sid.item_prefix_rows, extra.to(self.sid.item_prefix_rows)]
            )
        if self.media_table is not None:
            extra = torch.zeros(m, dtype=torch.int64) if media is None else media
            self.media = torch.cat([self.media, extra.to(self.media)])
        self.num_items += m
        return torch.arange(start, start + m)


class PooledHistory(nn.Module):
    """EmbeddingBag over the history: (R, H) item rows (-1 = padding) -> (R, D), or (N, D) with
    `expand` (N,) (row n = request expand[n]). Cost is independent of the history length beyond
    the bag sum."""

    def __init__(
        self,
        num_items: int,
        dim: int,
        mode: str = "mean",
        init_std: float = 0.05,
        tables: str = "torch",
    ) -> None:
        super().__init__()
        self.pad = num_items
        self.bag = create_embedding_bag(
            num_items + 1, dim, mode, num_items, init_std, tables, "user_history"
        )

    def forward(self, history: torch.Tensor, expand: torch.Tensor | None = None) -> torch.Tensor:
        return lookup(self.bag, torch.where(history < 0, self.pad, history), expand)


class SequenceHistory(nn.Module):
    """A small transformer over the last H items: (R, H) item rows (-1 = padding) -> (R, D)."""

    def __init__(
        self,
        num_items: int,
        dim: int,
        max_len: int,
        layers: int = 1,
        heads: int = 2,
        init_std: float = 0.05,
        tables: str = "torch",
    ) -> None:
        super().__init__()
        self.pad = num_items
        self.item = create_embedding(
            num_items + 1, dim, num_items, init_std, tables, "user_history_seq"
        )
        self.position = nn.Embedding(max_len, dim)
        with torch.no_grad():
            self.position.weight.normal_(0, init_std)
        layer = nn.TransformerEncoderLayer(dim, heads, 2 * dim, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)

    def forward(self, history: torch.Tensor, expand: torch.Tensor | None = None) -> torch.Tensor:
        """(R, D), or (N, D) with `expand`: encoded once per request, expanded after."""
        pad = history < 0  # (R, H)
        # A user with no history would make attention all-masked (NaN): let them attend to slot 0.
        pad = pad.clone()
        pad[:, 0] &= ~pad.all(dim=1)
        x = self.item(torch.where(history < 0, self.pad, history))  # (R, H, D)
        x = x + self.position.weight[: history.shape[1]]
        h = self.encoder(x, src_key_padding_mask=pad)  # (R, H, D)
        keep = (~pad).unsqueeze(-1).to(h.dtype)
        out = (h * keep).sum(1) / keep.sum(1).clamp_min(1.0)  # (R, D)
        return out if expand is None else out[expand]


class UserTower(nn.Module):
    """forward(user_rows (R,), history (R, H), expand (N,) | None) -> (R, D + 1) user vectors,
    last column = 1; with `expand`, (N, D + 1): row n is request expand[n]'s vector, each
    request's features looked up (and encoded) once."""

    def __init__(
        self,
        config: UserTowerConfig,
        dim: int,
        num_users: int,
        num_items: int,
        tables: str = "torch",
    ) -> None:
        super().__init__()
        self.config, self.dim = config, dim
        if config.use_user_id:
            self.table = create_id_table(
                HashedTableConfig(
                    num_ids=num_users,
                    dim=dim,
                    hash_size=config.hash_size,
                    sparse=config.sparse,
                    init_std=config.init_std,
                ),
                tables,
                "user_id",
            )
        if config.history == "pooled":
            self.history = PooledHistory(num_items, dim, config.pooling, config.init_std, tables)
        elif config.history == "sequence":
            self.history = SequenceHistory(
                num_items,
                dim,
                config.history_len,
                config.seq_layers,
                config.seq_heads,
                config.init_std,
                tables,
            )
        elif config.history == "none":
            self.history = None
        else:
            raise ValueError(
                f"UserTowerConfig.history must be pooled, sequence or none, got {config.history!r}"
            )
        if not config.use_user_id and self.history is None:
            raise ValueError("the user tower needs a user ID, a history or both")

    def expands_in_lookup(self, device: torch.device) -> bool:
        """Whether the tables expand requests to rows inside the lookup (TorchRec
        variable-batch KJTs), rather than the tower indexing after."""
        tables = [getattr(self, "table", None), getattr(self.history, "bag", None)]
        return any(
            t is not None and getattr(t, "supports_expand", False) and t.uses_variable_batch(device)
            for t in tables
        )

    def forward(
        self,
        user_rows: torch.Tensor | None,
        history: torch.Tensor,
        expand: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """user_rows None: users the model never saw (no ID row; the history part alone, as
        an item without an ID row is its content part alone)."""
        n = len(history) if expand is None else len(expand)
        vec = torch.zeros(n, self.dim, device=history.device)
        if self.config.use_user_id and user_rows is not None:
            vec = vec + lookup(self.table, user_rows, expand)
        if self.history is not None:
            vec = vec + self.history(history[:, -self.config.history_len :], expand)
        return torch.cat([vec, torch.ones_like(vec[:, :1])], dim=1)


class Ranker(nn.Module):
    """Two towers and a dot product. See the module docstring for the dedup contract."""

    def __init__(
        self,
        config: RankerConfig,
        item_tower: ItemTower,
        user_tower: UserTower,
        item_log_q: torch.Tensor | None = None,
    ) -> None:
        super().__init__()
        self.config = config
        self.item_tower = item_tower
        self.user_tower = user_tower
        # log of each item's share of training positives: the in-batch sampling probability.
        log_q = (
            torch.zeros(item_tower.num_items)
            if item_log_q is None
            else torch.as_tensor(item_log_q, dtype=torch.float32)
        )
        self.register_buffer("item_log_q", log_q)

    @property
    def history_len(self) -> int:
        """How many of the user's latest items the user tower reads (training batches carry
        at least this many)."""
        return self.user_tower.config.history_len

    def user_rows(self, batch: RequestBatch, dedup: bool = True) -> torch.Tensor:
        """(N, D + 1) the user vector of every impression row."""
        if dedup:
            return self.user_tower(batch.user_ids, batch.history, expand=batch.request_index)
        idx = batch.request_index
        return self.user_tower(batch.user_ids[idx], batch.history[idx])

    def forward(self, batch: RequestBatch, dedup: bool = True) -> torch.Tensor:
        """(N,) dot-product scores of each impression."""
        return (self.user_rows(batch, dedup) * self.item_tower(batch.item_ids)).sum(-1)

    def loss(
        self, batch: RequestBatch, dedup: bool = True, negatives: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Weighted mean loss over the N rows.

        softmax: each row's positive against every distinct item of the batch (plus `negatives`,
        (S,) item rows), logits corrected by -log q (in-batch items are sampled by popularity);
        the request's other positives are masked so they are not pushed down as negatives.
        bce: binary cross-entropy on `batch.labels`.
        """
        cfg = self.config
        n = len(batch.item_ids)
        weights = (
            batch.weights
            if batch.weights is not None
            else torch.ones(n, device=batch.item_ids.device)
        )
        if cfg.loss == "bce":
            if batch.labels is None:
                raise ValueError("loss='bce' needs labelled impressions (batch.labels)")
            logits = self(batch, dedup) / cfg.temperature
            per_row = F.binary_cross_entropy_with_logits(
                logits, batch.labels.float(), reduction="none"
            )
            return (per_row * weights).sum() / weights.sum()
        if cfg.loss != "softmax":
            raise ValueError(f"RankerConfig.loss must be softmax or bce, got {cfg.loss!r}")
        pool = batch.item_ids if negatives is None else torch.cat([batch.item_ids, negatives])
        cand, inverse = torch.unique(pool, return_inverse=True)  # (M,), (N + S,)
        target = inverse[:n]  # (N,) column of each row's positive
        items = self.item_tower(cand)  # (M, D + 1): each distinct item once
        if dedup and not self.user_tower.expands_in_lookup(batch.user_ids.device):
            # User side once per request, its logits expanded to the rows.
            users = self.user_tower(batch.user_ids, batch.history)  # (R, D + 1)
            logits = (users @ items.T)[batch.request_index]  # (N, M)
        else:
            # Plain path, or TorchRec already expanded the user features after the all-to-all.
            logits = self.user_rows(batch, dedup) @ items.T  # (N, M)
        logits = logits / cfg.temperature
        if cfg.logq:
            expected = n * self.item_log_q[cand].exp()
            if negatives is not None and len(negatives):
                expected = expected + len(negatives) / max(1, int(self.item_log_q.isfinite().sum()))
            logits = logits - expected.clamp_min(1e-12).log()
        # Mask the request's other positives (same user, same request): not negatives.
        r = len(batch.user_ids)
        positive = torch.zeros(r, len(cand), dtype=torch.bool, device=logits.device)
        positive[batch.request_index, target] = True
        other = positive[batch.request_index]
        other[torch.arange(n, device=logits.device), target] = False
        logits = logits.masked_fill(other, float("-inf"))
        per_row = F.cross_entropy(logits, target, reduction="none")
        return (per_row * weights).sum() / weights.sum()

    @torch.no_grad()
    def item_vectors(
        self, item_rows: torch.Tensor | None = None, batch_size: int = 65536
    ) -> torch.Tensor:
        """(I, D + 1) eval-mode item vectors (no ID dropout)."""
        rows = (
            torch.arange(self.item_tower.num_items, device=self.item_log_q.device)
            if item_rows is None
            else item_rows
        )
        return torch.cat(
            [
                self.item_tower(rows[i : i + batch_size], drop_ids=False)
                for i in range(0, len(rows), batch_size)
            ]
        )

    @torch.no_grad()
    def user_vectors(
        self, user_rows: torch.Tensor, history: torch.Tensor, batch_size: int = 4096
    ) -> torch.Tensor:
        """(U, D + 1) user vectors. history: (U, H) item rows, -1 padded."""
        return torch.cat(
            [
                self.user_tower(user_rows[i : i + batch_size], history[i : i + batch_size])
                for i in range(0, len(user_rows), batch_size)
            ]
        )
