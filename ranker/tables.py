"""ID embedding tables: hashed tables with sparse gradients, and a row-wise optimizer for them.

`create_*` factories build every table of the ranker either as plain torch modules
(`tables="torch"`, the default) or as their TorchRec twins (`tables="torchrec"`,
ranker.torchrec_tables): same inputs, outputs and weight shapes, so the towers do not change and
DistributedModelParallel (ranker.sharding) can shard the TorchRec ones.

A big ID space (say 500M ids) cannot get one row per id; hashing it into `hash_size` rows bounds
memory at the price of collisions (measured by `collision_rate`). With `sparse=True` a step only
touches the rows the batch used, and `RowWiseAdagrad` keeps ONE float of state per row (not two
full copies of the table as Adam would), so a 50M x 32 table trains in about 1.05x its own bytes.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

_MASK63 = (1 << 63) - 1


def hash_ids(ids: torch.Tensor, hash_size: int, salt: int = 0) -> torch.Tensor:
    """Map int64 ids to rows in [0, hash_size) with a splitmix64-style mixer. ids: (...,) int64.

    Why mix instead of `id % hash_size`: real ids are often strided or clustered (sequential
    inserts, sharded id generators), which modulo maps onto few rows.
    """
    x = ids.to(torch.int64) + (salt * 0x2545F4914F6CDD1D & _MASK63)
    # int64 multiplications wrap around (two's complement), which is what a hash wants.
    x = (x ^ (x >> 30)) * -4658895280553007687  # 0xBF58476D1CE4E5B9 as signed int64
    x = (x ^ (x >> 27)) * -7723592293110705685  # 0x94D049BB133111EB as signed int64
    x = x ^ (x >> 31)
    return (x & _MASK63) % hash_size


def collision_rate(ids: np.ndarray | torch.Tensor, hash_size: int, salt: int = 0) -> float:
    """Share of distinct ids that share their hashed row with at least one other id."""
    ids = torch.as_tensor(np.unique(np.asarray(ids)), dtype=torch.int64)
    if len(ids) == 0:
        return 0.0
    rows = hash_ids(ids, hash_size, salt)
    _, inverse, counts = torch.unique(rows, return_inverse=True, return_counts=True)
    return float((counts[inverse] > 1).float().mean())


@dataclass
class HashedTableConfig:
    """One ID table. hash_size=None: one row per id (ids must already be rows in [0, num_ids))."""

    num_ids: int = 0
    dim: int = 32
    hash_size: int | None = None
    sparse: bool = False
    init_std: float = 0.05
    salt: int = 0


class HashedEmbedding(nn.Module):
    """Embedding lookup by (possibly hashed) id. forward(ids (...,)) -> (..., D)."""

    def __init__(self, config: HashedTableConfig) -> None:
        super().__init__()
        self.config = config
        rows = config.hash_size if config.hash_size else config.num_ids
        if rows <= 0:
            raise ValueError("HashedTableConfig needs num_ids > 0 or hash_size > 0")
        self.rows = int(rows)
        # torch.empty + in-place init: never materializes a second copy of a huge table.
        self.weight = nn.Parameter(torch.empty(self.rows, config.dim))
        with torch.no_grad():
            if config.init_std > 0:
                self.weight.normal_(0.0, config.init_std)
            else:
                self.weight.zero_()

    def row_of(self, ids: torch.Tensor) -> torch.Tensor:
        if self.config.hash_size:
            return hash_ids(ids, self.config.hash_size, self.config.salt)
        return ids

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return nn.functional.embedding(self.row_of(ids), self.weight, sparse=self.config.sparse)

    @property
    def table_bytes(self) -> int:
        return self.weight.numel() * self.weight.element_size()


TABLES = ("torch", "torchrec")


@torch.no_grad()
def init_rows(weight: torch.Tensor, std: float, padding_idx: int | None = None) -> None:
    """Rows drawn from normal(0, std) (zeros when std is 0), the padding row zero. A table on
    the meta device has no rows yet and is left alone."""
    if weight.is_meta:
        return
    weight.normal_(0.0, std) if std > 0 else weight.zero_()
    if padding_idx is not None:
        weight[padding_idx].zero_()


def _check_tables(tables: str) -> None:
    if tables not in TABLES:
        raise ValueError(f"tables must be one of {TABLES}, got {tables!r}")


def create_id_table(
    config: HashedTableConfig, tables: str = "torch", name: str = "ids"
) -> nn.Module:
    """One (hashed) ID table: forward(ids (B,)) -> (B, D). `name` names the TorchRec table."""
    _check_tables(tables)
    if tables == "torchrec":
        from coldstart.ranker.torchrec_tables import TorchRecHashedEmbedding

        return TorchRecHashedEmbedding(name, config)
    return HashedEmbedding(config)


def create_embedding_bag(
    num_embeddings: int,
    dim: int,
    mode: str,
    padding_idx: int | None,
    init_std: float,
    tables: str = "torch",
    name: str = "bag",
) -> nn.Module:
    """A pooled lookup: forward(ids (B, L)) -> (B, D), `padding_idx` slots skipped.

    The padding row exists in both kinds (zero, never trained), so weights have equal shapes.
    """
    _check_tables(tables)
    if tables == "torchrec":
        from coldstart.ranker.torchrec_tables import TorchRecEmbeddingBag

        return TorchRecEmbeddingBag(name, num_embeddings, dim, mode, padding_idx, init_std)
    bag = nn.EmbeddingBag(num_embeddings, dim, mode=mode, padding_idx=padding_idx)
    init_rows(bag.weight, init_std, padding_idx)
    return bag


class SummedEmbedding(nn.Embedding):
    """forward(ids (B, L)) -> (B, D): the sum of the L rows (padding_idx rows are zero)."""

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return super().forward(ids).sum(dim=-2)


def create_summed_rows(
    num_embeddings: int,
    dim: int,
    padding_idx: int | None,
    tables: str = "torch",
    name: str = "sum",
) -> nn.Module:
    """Zero-initialised rows summed per example: forward(ids (B, L)) -> (B, D) (semantic-ID
    prefixes). Torch: an embedding then a sum; TorchRec: one sum-pooled bag feature."""
    _check_tables(tables)
    if tables == "torchrec":
        from coldstart.ranker.torchrec_tables import TorchRecEmbeddingBag

        return TorchRecEmbeddingBag(name, num_embeddings, dim, "sum", padding_idx, 0.0)
    table = SummedEmbedding(num_embeddings, dim, padding_idx=padding_idx)
    init_rows(table.weight, 0.0)
    return table


def create_embedding(
    num_embeddings: int,
    dim: int,
    padding_idx: int | None,
    init_std: float,
    tables: str = "torch",
    name: str = "sequence",
) -> nn.Module:
    """A per-id (sequence) lookup: forward(ids (B, L)) -> (B, L, D), padding slots zero."""
    _check_tables(tables)
    if tables == "torchrec":
        from coldstart.ranker.torchrec_tables import TorchRecEmbedding

        return TorchRecEmbedding(name, num_embeddings, dim, padding_idx, init_std)
    emb = nn.Embedding(num_embeddings, dim, padding_idx=padding_idx)
    init_rows(emb.weight, init_std, padding_idx)
    return emb


def lookup(table: nn.Module, ids: torch.Tensor, expand: torch.Tensor | None = None) -> torch.Tensor:
    """table(ids), then row n of the result is bag expand[n] when `expand` (N,) is given.

    TorchRec bags expand inside the lookup (a variable-batch KJT: the ids and pooled vectors of
    each bag cross the all-to-all once, then TorchRec expands them); torch tables index after.
    """
    if expand is None:
        return table(ids)
    if getattr(table, "supports_expand", False):
        return table(ids, expand=expand)
    return table(ids)[expand]


def _twins(module: nn.Module) -> dict[str, tuple[str, int]]:
    """{TorchRec twin's table key: (the torch table's key, the torch width)} over `module`."""
    out = {}
    for prefix, m in module.named_modules():
        key = getattr(m, "torchrec_weight_key", None)
        if key:
            dot = f"{prefix}." if prefix else ""
            out[dot + key] = (dot + "weight", m.dim)
    return out


def torch_key_map(module: nn.Module) -> dict[str, str]:
    """{state-dict key of a TorchRec twin's table: the key the torch table has} over `module`,
    e.g. "item_tower.table.ebc.embedding_bags.item_id.weight" -> "item_tower.table.weight"."""
    return {k: v for k, (v, _) in _twins(module).items()}


def to_torch_state(module: nn.Module, state: dict) -> dict:
    """`module`'s state dict (TorchRec tables) as the torch-tables model's state dict: keys
    renamed, FBGEMM's padding columns dropped. Other entries pass through."""
    twins = _twins(module)
    out = {}
    for k, v in state.items():
        if k in twins:
            key, dim = twins[k]
            out[key] = v[:, :dim]
        else:
            out[k] = v
    return out


def from_torch_state(module: nn.Module, state: dict) -> dict:
    """A torch-tables state dict made loadable by `module` (TorchRec tables): keys renamed,
    tables zero-padded to FBGEMM's width."""
    twins = {key: (k, dim) for k, (key, dim) in _twins(module).items()}
    own = module.state_dict()
    out = {}
    for k, v in state.items():
        if k in twins:
            key, dim = twins[k]
            padded = v.new_zeros(own[key].shape)
            padded[:, :dim] = v
            out[key] = padded
        else:
            out[k] = v
    return out


# The row matrix of a TorchRec twin: "<table>.ebc.embedding_bags.<name>.weight" (or ".ec.embeddings.").
TORCHREC_KEY = re.compile(r"\.(ebc\.embedding_bags|ec\.embeddings)\.[^.]+\.weight$")


def match_state(module: nn.Module, state: dict) -> dict:
    """`state` (a state dict of the same model with torch or TorchRec tables) made loadable by
    `module`, whichever kind `module` has: a model trained with sharded TorchRec tables can be
    served with plain torch tables and the other way round."""
    own = module.state_dict()
    if all(k in own for k in state):
        return state
    if _twins(module):
        return from_torch_state(module, state)
    out = {}
    for k, v in state.items():
        key = TORCHREC_KEY.sub(".weight", k)
        out[key] = v[:, : own[key].shape[1]] if key != k and key in own else v
    return out


class RowWiseAdagrad(torch.optim.Optimizer):
    """Adagrad with one accumulator per row (the FBGEMM/torchrec "row-wise" variant).

    Accepts sparse gradients (only the touched rows are read and written) and dense ones. For a
    2-D parameter the state is (rows,); for a 1-D parameter, one value per element. State bytes
    are therefore 1/dim of the table's, against 2x for Adam.
    """

    def __init__(
        self, params: Iterable, lr: float = 0.05, eps: float = 1e-8, weight_decay: float = 0.0
    ) -> None:
        super().__init__(params, {"lr": lr, "eps": eps, "weight_decay": weight_decay})

    @torch.no_grad()
    def step(self, closure=None):  # noqa: ANN001, ANN201 - torch's signature
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, eps, wd = group["lr"], group["eps"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if "sum" not in state:
                    state["sum"] = torch.zeros(
                        p.shape[0] if p.dim() > 1 else p.numel(), dtype=p.dtype, device=p.device
                    )
                acc = state["sum"]
                grad = p.grad
                if grad.is_sparse:
                    grad = grad.coalesce()
                    idx, values = grad.indices()[0], grad.values()  # (n,), (n, D)
                    if wd:
                        values = values + wd * p[idx]
                    acc.index_add_(0, idx, values.pow(2).mean(dim=1))
                    std = acc[idx].sqrt_().add_(eps).unsqueeze(1)  # (n, 1)
                    p.index_add_(0, idx, values.div(std).mul_(-lr))
                elif p.dim() > 1:
                    if wd:
                        grad = grad.add(p, alpha=wd)
                    acc.add_(grad.pow(2).flatten(1).mean(dim=1))
                    std = acc.sqrt().add_(eps).view(-1, *([1] * (p.dim() - 1)))
                    p.add_(grad / std, alpha=-lr)
                else:
                    if wd:
                        grad = grad.add(p, alpha=wd)
                    acc.add_(grad.pow(2))
                    p.add_(grad / acc.sqrt().add_(eps), alpha=-lr)
        return loss


def state_bytes(optimizer: torch.optim.Optimizer) -> int:
    """Bytes held in an optimizer's state tensors."""
    total = 0
    for state in optimizer.state.values():
        for value in state.values():
            if torch.is_tensor(value):
                total += value.numel() * value.element_size()
    return total


def expected_collision_rate(n_ids: int, hash_size: int) -> float:
    """Collision share expected for uniform hashing: 1 - (1 - 1/m)^(n-1)."""
    if n_ids <= 1:
        return 0.0
    return 1.0 - math.exp((n_ids - 1) * math.log1p(-1.0 / hash_size))
