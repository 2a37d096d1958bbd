"""TorchRec twins of the ranker's ID tables (`RankerConfig.tables: torchrec`).

Each twin is a drop-in for the torch module it replaces: same input, same output, same weight
shape, so the towers do not change and a torch and a torchrec model with equal weights give
equal scores and gradients (tests/ranker/test_torchrec_tables.py). Inside, a twin holds ONE
TorchRec table and turns its dense ids into a `KeyedJaggedTensor`:

- `TorchRecEmbeddingBag` (EmbeddingBagCollection, pooled): item IDs, user IDs, hashed tables,
  semantic-ID prefixes (sum) and the pooled user history (mean or sum).
- `TorchRecEmbedding` (EmbeddingCollection, one vector per id): the sequence user history.

`DistributedModelParallel` (ranker.sharding) swaps the collections for sharded ones in place; the
towers never know. Pooled lookups accept `expand` (the request index of each impression row):
the bag is then looked up once per request and expanded to the rows after the all-to-all,
by TorchRec itself (a variable-batch KJT with `inverse_indices`, the default on GPUs) or by an
index after the lookup (the default on CPU, where FBGEMM's variable-batch kernel is slow). The
same rows cross the all-to-all either way.

FBGEMM's kernels need table widths divisible by 4, and item rows are D + 1 wide (the bias), so a
twin pads its table to the next multiple of 4 and returns the first D columns: the extra columns
stay zero and get no gradient (`to_torch_state` / `from_torch_state` in ranker.tables convert).

Why one table per collection: TorchRec merges variable-batch outputs of several table groups
(e.g. a mean table and a sum table) with a pre-allocated output that its CPU kernels reject, and
a collection per feature lets the planner place and the benchmarks count each feature alone.
torchrec is imported here only, and this module only when `tables: torchrec` is chosen.
"""

from __future__ import annotations

import torch
from torch import nn
from torchrec import (
    EmbeddingBagCollection,
    EmbeddingBagConfig,
    EmbeddingCollection,
    EmbeddingConfig,
    KeyedJaggedTensor,
)
from torchrec.modules.embedding_configs import PoolingType

from coldstart.ranker.tables import HashedTableConfig, hash_ids, init_rows

_POOLING = {"sum": PoolingType.SUM, "mean": PoolingType.MEAN}


def ids_to_kjt(
    key: str,
    ids: torch.Tensor,
    padding_idx: int | None = None,
    expand: torch.Tensor | None = None,
) -> KeyedJaggedTensor:
    """One feature as a KeyedJaggedTensor. ids: (B,) one id per bag, or (B, L) bags where
    `padding_idx` (and any negative id) marks empty slots, which are dropped.

    expand: (N,) int64 index into the B bags: a variable-batch KJT (stride B) whose pooled
    output comes back as N rows, row n = bag expand[n].
    """
    if ids.dim() == 1:
        ids = ids.unsqueeze(1)
    keep = ids >= 0
    if padding_idx is not None:
        keep &= ids != padding_idx
    values = ids[keep]  # row-major: bag 0's ids, then bag 1's, ...
    lengths = keep.sum(dim=1)
    if expand is None:
        return KeyedJaggedTensor(keys=[key], values=values, lengths=lengths)
    return KeyedJaggedTensor(
        keys=[key],
        values=values,
        lengths=lengths,
        stride_per_key_per_rank=[[ids.shape[0]]],
        inverse_indices=([key], expand.to(torch.int64).unsqueeze(0)),
    )


def padded_dim(dim: int) -> int:
    """The table width FBGEMM accepts: dim rounded up to a multiple of 4."""
    return -(-dim // 4) * 4


def _init_fn(std: float, dim: int):
    def init(weight: torch.Tensor) -> torch.Tensor:
        # Used by sharded tables created on the meta device: each rank initialises its shard.
        init_rows(weight, std)
        if weight.dim() == 2:  # (sharded tables may pass flat slices)
            with torch.no_grad():
                weight[:, dim:].zero_()  # the padding columns: never read, kept tidy
        return weight

    return init


class TorchRecEmbeddingBag(nn.Module):
    """nn.EmbeddingBag twin over one EmbeddingBagCollection table.

    forward(ids (B,) or (B, L), expand (N,) | None) -> (B, D), or (N, D) with expand.
    Slots equal to padding_idx (or negative) are skipped; an empty bag pools to zeros, like a
    torch bag of padding only.
    """

    supports_expand = True

    def __init__(
        self,
        name: str,
        num_embeddings: int,
        dim: int,
        mode: str = "sum",
        padding_idx: int | None = None,
        init_std: float = 0.05,
        sparse: bool = False,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        if mode not in _POOLING:
            raise ValueError(f"mode must be sum or mean, got {mode!r}")
        self.name, self.padding_idx, self.dim = name, padding_idx, dim
        # expand via inverse indices (None: on GPUs only); ShardingConfig.variable_batch sets it
        self.variable_batch: bool | None = None
        self.torchrec_weight_key = f"ebc.embedding_bags.{name}.weight"  # ranker.tables._twins
        self.ebc = EmbeddingBagCollection(
            tables=[
                EmbeddingBagConfig(
                    name=name,
                    embedding_dim=padded_dim(dim),
                    num_embeddings=int(num_embeddings),
                    feature_names=[name],
                    pooling=_POOLING[mode],
                    init_fn=_init_fn(init_std, dim),
                )
            ],
            device=torch.device(device) if device is not None else None,
        )
        # Sparse row gradients when unsharded (one process); sharded tables use fused kernels.
        self.ebc.embedding_bags[name].sparse = sparse
        init_rows(self.weight, init_std, padding_idx)

    @property
    def weight(self) -> torch.Tensor:
        """(rows, D) the table without its padding columns (a view: writes go to the table)."""
        return self.ebc.embedding_bags[self.name].weight[:, : self.dim]

    def uses_variable_batch(self, device: torch.device) -> bool:
        """Variable-batch KJTs on GPUs; on CPU only when asked (`variable_batch=True`):
        FBGEMM's CPU kernel for them is slow on big shards (benchmarks/big_table.py)."""
        if self.variable_batch is None:
            return device.type == "cuda"
        return self.variable_batch

    def forward(self, ids: torch.Tensor, expand: torch.Tensor | None = None) -> torch.Tensor:
        if not self.uses_variable_batch(ids.device):
            # Dedup before the lookup, expand after: the same rows cross the all-to-all.
            out = self.ebc(ids_to_kjt(self.name, ids, self.padding_idx))[self.name]
            out = out[:, : self.dim]
            return out if expand is None else out[expand]
        if expand is None:
            # Then every call is variable-batch: a sharded collection sets up its output
            # all-to-all for one kind of batch at its first call.
            expand = torch.arange(ids.shape[0], device=ids.device)
        kjt = ids_to_kjt(self.name, ids, self.padding_idx, expand)
        return self.ebc(kjt)[self.name][:, : self.dim]


class TorchRecHashedEmbedding(TorchRecEmbeddingBag):
    """ranker.tables.HashedEmbedding twin: forward(ids (B,), expand=None) -> (B, D) or (N, D)."""

    def __init__(
        self, name: str, config: HashedTableConfig, device: torch.device | str | None = None
    ) -> None:
        rows = config.hash_size if config.hash_size else config.num_ids
        if rows <= 0:
            raise ValueError("HashedTableConfig needs num_ids > 0 or hash_size > 0")
        super().__init__(
            name, rows, config.dim, "sum", None, config.init_std, config.sparse, device
        )
        self.config, self.rows = config, int(rows)

    def row_of(self, ids: torch.Tensor) -> torch.Tensor:
        if self.config.hash_size:
            return hash_ids(ids, self.config.hash_size, self.config.salt)
        return ids

    def forward(self, ids: torch.Tensor, expand: torch.Tensor | None = None) -> torch.Tensor:
        if ids.dim() != 1:
            raise ValueError(f"ids must be 1-D, got shape {tuple(ids.shape)}")
        return super().forward(self.row_of(ids), expand)

    @property
    def table_bytes(self) -> int:
        return self.rows * self.config.dim * 4


class TorchRecEmbedding(nn.Module):
    """nn.Embedding twin over one EmbeddingCollection table (sequence features).

    forward(ids (B, L)) -> (B, L, D); padding slots (padding_idx or negative) are zeros, as with
    torch's padding row. Only the non-padding ids are looked up (and cross the all-to-all).
    """

    def __init__(
        self,
        name: str,
        num_embeddings: int,
        dim: int,
        padding_idx: int | None = None,
        init_std: float = 0.05,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        self.name, self.padding_idx, self.dim = name, padding_idx, dim
        self.torchrec_weight_key = f"ec.embeddings.{name}.weight"
        self.ec = EmbeddingCollection(
            tables=[
                EmbeddingConfig(
                    name=name,
                    embedding_dim=padded_dim(dim),
                    num_embeddings=int(num_embeddings),
                    feature_names=[name],
                    init_fn=_init_fn(init_std, dim),
                )
            ],
            device=torch.device(device) if device is not None else None,
        )
        init_rows(self.weight, init_std, padding_idx)

    @property
    def weight(self) -> torch.Tensor:
        """(rows, D) the table without its padding columns (a view)."""
        return self.ec.embeddings[self.name].weight[:, : self.dim]

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        keep = ids >= 0
        if self.padding_idx is not None:
            keep &= ids != self.padding_idx
        kjt = ids_to_kjt(self.name, ids, self.padding_idx)
        values = self.ec(kjt)[self.name].values()[:, : self.dim]  # (K, D), K kept ids
        out = values.new_zeros(*ids.shape, self.dim)  # (B, L, D)
        return out.masked_scatter(keep.unsqueeze(-1), values)
