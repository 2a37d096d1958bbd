"""Sharded ID tables: TorchRec's DistributedModelParallel around the ranker, under Lightning.

The model stays plain: with `RankerConfig.tables: torchrec` every ID table is a one-table TorchRec
collection (ranker.torchrec_tables). Here, and only here, the model is sharded:

- `plan_sharding` asks TorchRec's planner for a plan over the world (table-wise, row-wise or
  column-wise per table, chosen by its cost model within `ShardingConfig.sharding_types`);
- `shard_model` wraps the module in `DistributedModelParallel`: tables are split across ranks
  and trained by TorchRec's fused optimizer inside backward (row-wise Adagrad by default); every
  other parameter (content projection, transformer, ...) stays data-parallel (DDP);
- `TorchRecStrategy` is the Lightning strategy doing that for `fit`, printing the plan and
  saving it in the run directory. Checkpoints are sharded (torch.distributed.checkpoint): each
  rank writes its own table shards and fused optimizer state to `<file>.shards-<id>/` beside
  the checkpoint file, which holds the rest; nothing is gathered. They load in any number of
  processes under any plan (resharded on load) and whole in 1 process (test, predict, serving).

CPU (gloo) and GPU (nccl) use the same code. One gloo limit: TorchRec's row-wise *pooled*
tables combine ranks with reduce-scatter / all-gather, which gloo only runs on equal-sized
tensors, so on gloo they need equal per-rank batch sizes (the benchmarks have them, the
request batches of training do not): by default pooled tables are not row-wise on gloo unless
`constraints` asks for it. torchrec is imported inside functions (heavy).
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from lightning.pytorch.strategies import DDPStrategy
from lightning.pytorch.trainer.states import TrainerFn
from torch import nn

from coldstart.ranker.checkpoints import refuse_damaged

SHARDING_TYPES = ("table_wise", "row_wise", "column_wise", "table_row_wise")
TABLE_OPTIMIZERS = ("rowwise_adagrad", "sgd", "adagrad")


@dataclass
class ShardingConfig:
    """How TorchRec shards the ranker's tables.

    sharding_types: the choices the planner may pick from for every table (None: table-wise,
      row-wise and column-wise; on gloo pooled tables leave out row-wise, see the module doc).
    constraints: table name -> sharding type, forcing one table (e.g. {"user_id": "row_wise"}).
      Table names: item_id, item_sid, user_id, user_history, user_history_seq.
    table_optimizer: TorchRec's fused optimizer for the tables (applied inside backward).
    """

    sharding_types: list[str] | None = None
    constraints: dict[str, str] = field(default_factory=dict)
    table_optimizer: str = "rowwise_adagrad"  # rowwise_adagrad | adagrad | sgd
    table_lr: float = 0.05
    table_eps: float = 1e-8
    # Request dedup through TorchRec's variable-batch KJTs (inverse indices): None = on GPUs
    # only. On CPU FBGEMM's variable-batch kernel is slow on big shards (50M-row table over 2
    # processes: 6.5 vs 37 steps/s), so the user features are looked up once per request and
    # expanded by an index after the lookup instead (the same rows cross the all-to-all).
    variable_batch: bool | None = None

    def __post_init__(self) -> None:
        for kind in [*(self.sharding_types or []), *self.constraints.values()]:
            if kind not in SHARDING_TYPES:
                raise ValueError(f"sharding type must be one of {SHARDING_TYPES}, got {kind!r}")
        if self.table_optimizer not in TABLE_OPTIMIZERS:
            raise ValueError(
                f"table_optimizer must be one of {TABLE_OPTIMIZERS}, got {self.table_optimizer!r}"
            )


def _fused_params(config: ShardingConfig) -> dict[str, Any]:
    from fbgemm_gpu.split_embedding_configs import EmbOptimType

    kind = {
        "rowwise_adagrad": EmbOptimType.EXACT_ROWWISE_ADAGRAD,
        "adagrad": EmbOptimType.EXACT_ADAGRAD,
        "sgd": EmbOptimType.EXACT_SGD,
    }[config.table_optimizer]
    params: dict[str, Any] = {"optimizer": kind, "learning_rate": config.table_lr}
    if config.table_optimizer != "sgd":
        params["eps"] = config.table_eps
    return params


def create_sharders(config: ShardingConfig, groups: dict[str, Any] | None = None) -> list:
    """TorchRec sharders for the two collection kinds, with the fused table optimizer.

    TorchRec offers row-wise pooled tables on GPUs only; gloo runs them too (with equal per-rank
    batch sizes), so the bag sharder also offers them on CPU when asked.
    groups: {module path prefix: process group}: the collections under a prefix talk over their
      own process group (same ranks), e.g. to count the user side's traffic apart.
    """
    from torchrec.distributed.embedding import EmbeddingCollectionSharder
    from torchrec.distributed.embeddingbag import EmbeddingBagCollectionSharder
    from torchrec.distributed.types import ShardingEnv

    def env_for(env: Any, fqn: str | None) -> Any:
        for prefix, group in (groups or {}).items():
            if fqn and (fqn == prefix or fqn.startswith(prefix + ".")):
                return ShardingEnv.from_process_group(group)
        return env

    class BagSharder(EmbeddingBagCollectionSharder):
        def sharding_types(self, compute_device_type: str) -> list[str]:
            types = super().sharding_types(compute_device_type)
            extra = [t for t in ("row_wise", "table_row_wise") if t not in types]
            return types + extra

        def shard(self, module, params, env, device=None, module_fqn=None):  # noqa: ANN001, ANN201
            return super().shard(module, params, env_for(env, module_fqn), device, module_fqn)

    class SequenceSharder(EmbeddingCollectionSharder):
        def shard(self, module, params, env, device=None, module_fqn=None):  # noqa: ANN001, ANN201
            return super().shard(module, params, env_for(env, module_fqn), device, module_fqn)

    fused = _fused_params(config)
    return [BagSharder(fused_params=fused), SequenceSharder(fused_params=fused)]


def table_names(module: nn.Module) -> dict[str, str]:
    """{table name: "bag" | "sequence"} of every TorchRec collection in `module`."""
    from torchrec import EmbeddingBagCollection, EmbeddingCollection

    out = {}
    for _, m in module.named_modules():
        if isinstance(m, EmbeddingBagCollection):
            out.update({c.name: "bag" for c in m.embedding_bag_configs()})
        elif isinstance(m, EmbeddingCollection):
            out.update({c.name: "sequence" for c in m.embedding_configs()})
    return out


def plan_sharding(
    module: nn.Module,
    config: ShardingConfig,
    world_size: int,
    local_world_size: int,
    device: torch.device,
    group: Any = None,
    sharders: list | None = None,
) -> Any:
    """TorchRec's ShardingPlan for `module` (the same on every rank when `group` is given)."""
    from torchrec.distributed.planner import EmbeddingShardingPlanner, ParameterConstraints
    from torchrec.distributed.planner.types import KernelConfig, TopologyFactory, TrainerConfig

    tables = table_names(module)
    if not tables:
        raise ValueError(
            "nothing to shard: the model has no TorchRec tables (set model.tables: torchrec)"
        )
    unknown = set(config.constraints) - set(tables)
    if unknown:
        raise ValueError(f"constraints name unknown tables {sorted(unknown)}; tables: {tables}")
    gloo = group is not None and dist.get_backend(group) == "gloo"
    constraints = {}
    for name, kind in tables.items():
        if name in config.constraints:
            choices = [config.constraints[name]]
        else:
            choices = list(config.sharding_types or ("table_wise", "row_wise", "column_wise"))
            if gloo and kind == "bag":
                choices = [c for c in choices if "row_wise" not in c] or ["table_wise"]
        constraints[name] = ParameterConstraints(sharding_types=choices)
    topology = TopologyFactory.create_topology(
        TrainerConfig(world_size=world_size, local_world_size=local_world_size),
        kernel_config=KernelConfig(compute_device=device.type),
    )
    planner = EmbeddingShardingPlanner(topology=topology, constraints=constraints)
    sharders = sharders or create_sharders(config)
    if group is not None:
        return planner.collective_plan(module, sharders, group)
    return planner.plan(module, sharders)


def plan_rows(plan: Any) -> list[dict[str, Any]]:
    """The plan as JSON-able rows: one per table (module, table, type, kernel, ranks, shards)."""
    rows = []
    for module_path, module_plan in plan.plan.items():
        for table, spec in module_plan.items():
            shards = []
            if spec.sharding_spec is not None:
                for s in spec.sharding_spec.shards:
                    shards.append(
                        {
                            "offsets": list(s.shard_offsets),
                            "sizes": list(s.shard_sizes),
                            "placement": str(s.placement),
                        }
                    )
            rows.append(
                {
                    "module": module_path,
                    "table": table,
                    "sharding_type": spec.sharding_type,
                    "compute_kernel": spec.compute_kernel,
                    "ranks": list(spec.ranks or []),
                    "shards": shards,
                }
            )
    return rows


def shard_model(
    module: nn.Module,
    config: ShardingConfig,
    device: torch.device,
    group: Any = None,
    local_world_size: int | None = None,
    sharders: list | None = None,
    plan: Any = None,
) -> tuple[nn.Module, Any]:
    """(DistributedModelParallel(module), plan). Tables keep the values they had (content warm
    start, a restored checkpoint): DMP re-initialises shards on CPU, so whole tables are copied
    back in slices. Every rank must call this with an identical module."""
    from torchrec.distributed import DistributedModelParallel
    from torchrec.distributed.model_parallel import DefaultDataParallelWrapper
    from torchrec.distributed.types import ShardingEnv

    group = group or dist.group.WORLD
    world = dist.get_world_size(group)
    for m in module.modules():
        if hasattr(m, "variable_batch"):  # the TorchRec bag twins
            m.variable_batch = config.variable_batch
    sharders = sharders or create_sharders(config)
    if plan is None:
        plan = plan_sharding(
            module, config, world, local_world_size or world, device, group, sharders
        )
    # References, not copies: the unsharded tables stay alive until their rows are copied.
    # Tables built on the meta device (too big for one process) have no rows yet: DMP
    # initialises each shard with the table's init_fn instead.
    state = module.state_dict()
    whole = {k: v for k, v in state.items() if not v.is_meta}
    on_meta = [k for k, v in state.items() if v.is_meta]
    model = DistributedModelParallel(
        module,
        env=ShardingEnv.from_process_group(group),
        device=device,
        plan=plan,
        sharders=sharders,
        # Validation steps run the dense part under no_grad between training steps.
        data_parallel_wrapper=DefaultDataParallelWrapper(static_graph=False),
    )
    result = model.load_state_dict(whole, strict=False)
    # (DMP reports keys relative to each sharded module.)
    lost = [k for k in result.missing_keys if not any(m.endswith(k) for m in on_meta)]
    if lost:
        raise RuntimeError(f"sharded model lost weights: {lost[:5]}")
    del whole, state
    return model, plan


def _sharded_types() -> tuple[type, ...]:
    from torch.distributed._shard.sharded_tensor import ShardedTensor

    return (ShardedTensor,)


def _flatten(obj: Any, path: tuple = ()) -> dict[tuple, Any]:
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            out.update(_flatten(v, (*path, k)))
        return out
    return {path: obj}


def gather_full(state: dict, dst: int = 0) -> dict | None:
    """A (nested) state dict with every ShardedTensor made whole, on rank `dst` (None elsewhere).

    Ranks may hold different keys (a fused optimizer lists only its local tables), so each rank
    sends its local shards with their offsets and `dst` assembles them. Collective: every rank
    calls it. Entries that are not sharded are taken from `dst`.
    """
    flat = _flatten(state)
    local = {}
    for path, value in flat.items():
        if isinstance(value, _sharded_types()):
            shards = [
                (list(s.metadata.shard_offsets), s.tensor.detach().cpu())
                for s in value.local_shards()
            ]
            local[path] = (tuple(value.size()), value.dtype, shards)
    received = [None] * dist.get_world_size() if dist.get_rank() == dst else None
    dist.gather_object(local, received, dst=dst)
    if received is None:
        return None
    whole: dict[tuple, torch.Tensor] = {}
    for part in received:
        for path, (size, dtype, shards) in part.items():
            full = whole.setdefault(path, torch.zeros(size, dtype=dtype))
            for offsets, tensor in shards:
                full[tuple(slice(o, o + n) for o, n in zip(offsets, tensor.shape))] = tensor
    out: dict = {}
    for path, value in {**flat, **whole}.items():
        node = out
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = value
    return out


def copy_into_shards(target: Any, full: Any) -> int:
    """Copy whole tensors `full` into the local shards of the ShardedTensors in `target` (same
    nested structure); returns how many sharded tensors were filled."""
    if isinstance(target, _sharded_types()):
        if full is None or tuple(full.shape) != tuple(target.size()):
            raise ValueError(f"expected a whole tensor of shape {tuple(target.size())}")
        for shard in target.local_shards():
            index = tuple(
                slice(o, o + n)
                for o, n in zip(shard.metadata.shard_offsets, shard.metadata.shard_sizes)
            )
            shard.tensor.copy_(full[index].to(shard.tensor))
        return 1
    count = 0
    if isinstance(target, dict):
        for k, v in target.items():
            if k in full:
                count += copy_into_shards(v, full[k])
    elif isinstance(target, list):
        for v, f in zip(target, full):
            count += copy_into_shards(v, f)
    return count


class CollectiveBytes:
    """Counts, at the torch.distributed calls, the bytes each process sends to the others.

    Patches the collective functions of torch.distributed (and their functional twins) while
    active, so TorchRec's own all-to-alls, reduce-scatters and all-gathers are counted as they
    are issued (not estimated from shapes of the model). Bytes "sent" follow each collective's
    meaning: all-to-all: the input rows addressed to other ranks; reduce-scatter: the chunks of
    other ranks; all-gather: the input times (world - 1). DDP's gradient all-reduce runs in C++
    and is not seen, which is what we want: only the embedding collectives.

        with CollectiveBytes({user_group: "user"}) as counter: ...
        counter.bytes  # {"user": ..., "other": ...}
    """

    FUNCS = (
        "all_to_all_single",
        "all_to_all",
        "reduce_scatter_tensor",
        "reduce_scatter",
        "all_gather_into_tensor",
        "all_gather",
        "all_reduce",
    )

    def __init__(self, labels: dict[Any, str] | None = None) -> None:
        self.labels = dict(labels or {})
        self.bytes: dict[str, int] = {}  # group label -> bytes
        self.kinds: dict[str, int] = {}  # "float" (embeddings, gradients) | "int" (ids, lengths)
        self.calls: dict[str, int] = {}
        self._saved: list[tuple[Any, str, Any]] = []

    def reset(self) -> None:
        self.bytes.clear()
        self.kinds.clear()
        self.calls.clear()

    def _label(self, group: Any) -> str:
        if group is None:
            group = dist.group.WORLD
        for key, label in self.labels.items():
            if key is group:
                return label
        return "other"

    def _sent(self, name: str, args: dict[str, Any]) -> int:
        group = args.get("group")
        if isinstance(group, str):  # functional collectives may pass a group name
            group = None
        world = dist.get_world_size(group)
        rank = dist.get_rank(group)
        if name == "all_to_all_single":
            x = args["input"]
            rows = x.shape[0] if x.dim() else 1
            row_bytes = x.element_size() * (x.numel() // max(rows, 1))
            splits = args.get("input_split_sizes") or [rows // world] * world
            return (rows - int(splits[rank])) * row_bytes
        if name in ("all_to_all", "reduce_scatter"):
            tensors = args.get("input_tensor_list") or args.get("input_list") or []
            return sum(t.nbytes for i, t in enumerate(tensors) if i != rank)
        if name == "reduce_scatter_tensor":
            return args["input"].nbytes * (world - 1) // world
        if name == "all_gather_into_tensor":
            return args["input_tensor"].nbytes * (world - 1)
        if name == "all_gather":
            return args["tensor"].nbytes * (world - 1)
        if name == "all_reduce":
            return args["tensor"].nbytes * 2 * (world - 1) // world
        return 0

    def _wrap(self, name: str, fn: Any) -> Any:
        import inspect

        signature = inspect.signature(fn)

        def counted(*args: Any, **kwargs: Any) -> Any:
            bound = signature.bind_partial(*args, **kwargs).arguments
            group = bound.get("group")
            label = self._label(None if isinstance(group, str) else group)
            sent = self._sent(name, bound)
            self.bytes[label] = self.bytes.get(label, 0) + sent
            tensors = [v for v in bound.values() if torch.is_tensor(v)]
            tensors += [t for v in bound.values() if isinstance(v, list) for t in v]
            floating = any(torch.is_tensor(t) and t.is_floating_point() for t in tensors)
            kind = "float" if floating else "int"
            self.kinds[kind] = self.kinds.get(kind, 0) + sent
            self.calls[name] = self.calls.get(name, 0) + 1
            return fn(*args, **kwargs)

        return counted

    def __enter__(self) -> CollectiveBytes:
        import torch.distributed._functional_collectives as funcol

        for module in (dist, funcol):
            for name in self.FUNCS:
                fn = getattr(module, name, None)
                if fn is not None:
                    self._saved.append((module, name, fn))
                    setattr(module, name, self._wrap(name, fn))
        return self

    def __exit__(self, *exc: Any) -> None:
        for module, name, fn in reversed(self._saved):
            setattr(module, name, fn)
        self._saved.clear()


SHARDS_KEY = "torchrec_shards"  # in a checkpoint file: the DCP directory of its tables
CHUNK_BYTES = 64 << 20


def is_sharded(value: Any) -> bool:
    """A ShardedTensor (a torch.Tensor subclass: isinstance(x, Tensor) does not tell)."""
    return isinstance(value, _sharded_types())


def row_chunks(value: Any, chunk_bytes: int = CHUNK_BYTES) -> Any:
    """The same ShardedTensor seen as row blocks of at most `chunk_bytes` (views of its local
    shards, the same blocks on every rank). DCP writes one item per local shard and reads one
    item into a temporary before copying it, so blocks bound the extra memory of a save and of
    a load to one block instead of a whole shard."""
    from torch.distributed._shard.metadata import ShardMetadata
    from torch.distributed._shard.sharded_tensor import Shard, ShardedTensor
    from torch.distributed._shard.sharded_tensor.metadata import ShardedTensorMetadata

    meta = value.metadata()
    itemsize = torch.empty((), dtype=meta.tensor_properties.dtype).element_size()
    row_bytes = itemsize * max(1, int(torch.Size(meta.size[1:]).numel()))
    step = max(1, chunk_bytes // row_bytes)
    local = {tuple(s.metadata.shard_offsets): s.tensor for s in value.local_shards()}
    blocks, shards = [], []
    for md in meta.shards_metadata:
        rows = md.shard_sizes[0]
        tensor = local.get(tuple(md.shard_offsets))
        for start in range(0, max(rows, 1), step):
            n = min(step, rows - start)
            block = ShardMetadata(
                [md.shard_offsets[0] + start, *md.shard_offsets[1:]],
                [n, *md.shard_sizes[1:]],
                md.placement,
            )
            blocks.append(block)
            if tensor is not None:
                shards.append(Shard(tensor[start : start + n], block))
    return ShardedTensor._init_from_local_shards_and_global_metadata(
        shards, ShardedTensorMetadata(blocks, meta.size, meta.tensor_properties)
    )


def _chunked(tree: dict[str, Any], chunk_bytes: int) -> dict[str, Any]:
    return {
        k: _chunked(v, chunk_bytes) if isinstance(v, dict) else row_chunks(v, chunk_bytes)
        for k, v in tree.items()
    }


def save_shards(
    path: str | Path,
    model: dict[str, Any],
    fused: dict[str, dict[str, Any]] | None = None,
    chunk_bytes: int = CHUNK_BYTES,
) -> None:
    """Write the sharded tensors of a model state dict ({key: ShardedTensor}) and of TorchRec's
    fused optimizer state ({parameter: {state name: ShardedTensor}}) with
    torch.distributed.checkpoint: every rank writes only its own shards (one .distcp file per
    rank plus .metadata), nothing is gathered. Collective: every rank calls it."""
    import torch.distributed.checkpoint as dcp

    state = {"model": _chunked(model, chunk_bytes), "fused": _chunked(fused or {}, chunk_bytes)}
    dcp.save(state, checkpoint_id=Path(path))


def load_shards(
    path: str | Path,
    model: dict[str, Any] | None = None,
    fused: dict[str, dict[str, Any]] | None = None,
    chunk_bytes: int = CHUNK_BYTES,
) -> None:
    """Fill sharded tensors in place from `save_shards`' directory, whatever plan or number of
    processes wrote it (DCP copies each saved block's overlap with each local shard).
    Collective."""
    import torch.distributed.checkpoint as dcp

    state = {}
    if model:
        state["model"] = _chunked(model, chunk_bytes)
    if fused:
        state["fused"] = _chunked(fused, chunk_bytes)
    if state:
        try:
            dcp.load(state, checkpoint_id=Path(path))
        except (Exception, dcp.api.CheckpointException) as error:  # missing or truncated: refused
            raise refuse_damaged(path, error) from error


def read_whole(path: str | Path, part: str = "model") -> dict[str, torch.Tensor]:
    """The tensors of `save_shards`' directory as whole tensors, in this process alone (no
    process group needed): `test`, `predict` and serving load a sharded run this way.
    part: "model" ({key: tensor}) or "fused" ({"<parameter>.<state name>": tensor})."""
    import torch.distributed.checkpoint as dcp

    try:
        reader = dcp.FileSystemReader(Path(path))
        entries = reader.read_metadata().state_dict_metadata
        whole = {
            key.removeprefix(part + "."): torch.empty(tuple(m.size), dtype=m.properties.dtype)
            for key, m in entries.items()
            if key.startswith(part + ".")
        }
        # (DCP joins nested keys with dots, so the flat keys land where they were saved.)
        dcp.load({part: whole}, storage_reader=reader, no_dist=True)
    except (Exception, dcp.api.CheckpointException) as error:  # missing or truncated: refused
        raise refuse_damaged(path, error) from error
    return whole


def shards_dir(info: dict[str, str], checkpoint_path: str | Path | None) -> Path:
    """Where a checkpoint's shards are: beside the checkpoint file (the directory may have been
    moved with it), else where they were written."""
    if checkpoint_path is not None:
        beside = Path(checkpoint_path).parent / info["dir"]
        if beside.is_dir():
            return beside
    if Path(info["path"]).is_dir():
        return Path(info["path"])
    raise FileNotFoundError(
        f"checkpoint {checkpoint_path} keeps its tables in {info['dir']}/ beside it, "
        f"which is missing (written at {info['path']})"
    )


def fill_whole_tables(checkpoint: dict[str, Any], checkpoint_path: str | Path | None) -> None:
    """A checkpoint whose tables were saved as shards, made whole in place (one process)."""
    info = checkpoint.pop(SHARDS_KEY, None)
    if info is not None:
        checkpoint["state_dict"].update(read_whole(shards_dir(info, checkpoint_path)))


FUSED_KEY = "torchrec_fused_optimizer"


def load_fused_state(model: nn.Module, whole: dict[str, Any]) -> int:
    """Load whole-table fused optimizer state ({parameter: {state name: tensor}}, as saved by
    TorchRecStrategy) into the shards of a DistributedModelParallel model. Returns the number of
    state tensors filled on this rank."""
    optimizer = model.fused_optimizer
    current = optimizer.state_dict()
    count = copy_into_shards(current["state"], whole)
    optimizer.load_state_dict(current)
    return count


class TorchRecStrategy(DDPStrategy):
    """Lightning strategy: DDP for the dense towers, TorchRec sharding for the ID tables.

    Used by `fit` (a model whose `tables: torchrec`); `validate`, `test` and `predict` keep whole
    tables on every process, as loaded from the checkpoint. The plan is printed and written to
    the run directory (sharding_plan.txt / .json). All DDPStrategy arguments apply
    (process_group_backend: gloo on CPU, nccl on GPUs by default).
    """

    strategy_name = "torchrec"

    def __init__(
        self,
        sharding_types: list[str] | None = None,
        constraints: dict[str, str] | None = None,
        table_optimizer: str = "rowwise_adagrad",
        table_lr: float = 0.05,
        table_eps: float = 1e-8,
        variable_batch: bool | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.sharding = ShardingConfig(
            sharding_types=sharding_types,
            constraints=dict(constraints or {}),
            table_optimizer=table_optimizer,
            table_lr=table_lr,
            table_eps=table_eps,
            variable_batch=variable_batch,
        )
        self.plan: Any = None
        self._shards_to_load: Path | None = None

    def _sharded(self) -> bool:
        from torchrec.distributed import DistributedModelParallel

        return isinstance(self.model, DistributedModelParallel)

    def model_to_device(self) -> None:
        # When fitting, DMP places each shard (and DDP the dense part) on the device itself:
        # moving the whole tables there first would need every table on every device.
        trainer = self.lightning_module.trainer
        if trainer.state.fn != TrainerFn.FITTING:
            super().model_to_device()

    def configure_ddp(self) -> None:
        self.model = self._setup_model(self.model)

    def _setup_model(self, model: nn.Module) -> nn.Module:
        wrapped, self.plan = shard_model(
            model,
            self.sharding,
            self.root_device,
            local_world_size=self.num_processes,
        )
        self._write_plan()
        return wrapped

    def _write_plan(self) -> None:
        trainer = self.lightning_module.trainer
        # trainer.log_dir broadcasts from rank 0: every rank must ask.
        run_dir = Path(trainer.log_dir or trainer.default_root_dir)
        if self.global_rank != 0:
            return
        text = str(self.plan)
        print(f"TorchRec sharding plan ({self.world_size} processes):\n{text}", flush=True)
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "sharding_plan.txt").write_text(text + "\n")
        payload = {
            "world_size": self.world_size,
            "backend": dist.get_backend(),
            "config": vars(self.sharding),
            "tables": plan_rows(self.plan),
        }
        (run_dir / "sharding_plan.json").write_text(json.dumps(payload, indent=2) + "\n")

    @property
    def restore_checkpoint_after_setup(self) -> bool:
        # Shards are read straight into the sharded model, which exists only after setup.
        return True

    def save_checkpoint(
        self, checkpoint: dict[str, Any], filepath: Any, storage_options: Any = None
    ) -> None:
        if not self._sharded():
            super().save_checkpoint(checkpoint, filepath, storage_options=storage_options)
            return
        # The file (rank 0) keeps everything small; each rank writes its own table shards and
        # fused optimizer state to a fresh directory beside it, named in the file, so the file
        # never names a half-written directory.
        path = Path(filepath)
        name = self.broadcast(f"{path.name}.shards-{uuid.uuid4().hex[:8]}")
        target = path.parent / name
        state = checkpoint["state_dict"]
        save_shards(
            target,
            {k: v for k, v in state.items() if is_sharded(v)},
            self.model.fused_optimizer.state_dict()["state"],
        )
        plain = {k: v for k, v in state.items() if not is_sharded(v)}
        info = {"dir": name, "path": str(target.resolve())}
        small = {**checkpoint, "state_dict": plain, SHARDS_KEY: info}
        super().save_checkpoint(small, filepath, storage_options=storage_options)
        if self.is_global_zero:
            self._remove_shards(path, keep=name)

    def remove_checkpoint(self, filepath: Any) -> None:
        super().remove_checkpoint(filepath)
        if self.is_global_zero:
            self._remove_shards(Path(filepath))

    @staticmethod
    def _remove_shards(path: Path, keep: str | None = None) -> None:
        import shutil

        for old in path.parent.glob(f"{path.name}.shards-*"):
            if old.name != keep:
                shutil.rmtree(old, ignore_errors=True)

    def load_checkpoint(self, checkpoint_path: Any, weights_only: bool | None = None) -> Any:
        try:
            checkpoint = super().load_checkpoint(checkpoint_path, weights_only=weights_only)
        except (RuntimeError, EOFError, OSError) as error:  # truncated or garbled file
            raise refuse_damaged(checkpoint_path, error) from error
        if self._sharded() and SHARDS_KEY in checkpoint:
            # Read into the shards by load_model_state_dict / load_optimizer_state_dict;
            # LitRanker.on_load_checkpoint would otherwise read whole tables.
            self._shards_to_load = shards_dir(checkpoint.pop(SHARDS_KEY), checkpoint_path)
        return checkpoint

    def load_model_state_dict(self, checkpoint: dict[str, Any], strict: bool = True) -> None:
        if not self._sharded():
            super().load_model_state_dict(checkpoint, strict=strict)
            return
        own = self.lightning_module.state_dict()
        sharded = {k: v for k, v in own.items() if is_sharded(v)}
        state = dict(checkpoint["state_dict"])
        if self._shards_to_load is not None:
            load_shards(self._shards_to_load, model=sharded)
            state.update(sharded)
        # Whole tables (an older checkpoint, or one written unsharded) are copied in slices.
        missing = sorted(set(own) - set(state))
        if strict and missing:
            raise KeyError(f"checkpoint lacks {missing[:5]}")
        self.model.load_state_dict(state, strict=False)

    def load_optimizer_state_dict(self, checkpoint: dict[str, Any]) -> None:
        super().load_optimizer_state_dict(checkpoint)
        if not self._sharded():
            return
        if self._shards_to_load is not None:
            fused = self.model.fused_optimizer.state_dict()
            load_shards(self._shards_to_load, fused=fused["state"])
            self.model.fused_optimizer.load_state_dict(fused)
            self._shards_to_load = None
        elif FUSED_KEY in checkpoint:  # checkpoints written before sharded saving
            load_fused_state(self.model, checkpoint[FUSED_KEY]["state"])

    def teardown(self) -> None:
        if self._sharded():
            self.model = self.lightning_module
        super().teardown()


def register_strategy() -> None:
    """Make `--trainer.strategy torchrec` a name Lightning knows (the CLI calls this)."""
    from lightning.pytorch.strategies import StrategyRegistry

    if "torchrec" not in StrategyRegistry:
        StrategyRegistry.register(
            "torchrec",
            TorchRecStrategy,
            description="DDP for dense towers + TorchRec sharding of the ID tables",
        )


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _entry(rank: int, fn: Any, world_size: int, port: int, backend: str, args: tuple) -> None:
    from datetime import timedelta

    dist.init_process_group(
        backend,
        init_method=f"tcp://127.0.0.1:{port}",
        rank=rank,
        world_size=world_size,
        timeout=timedelta(seconds=120),  # a lost peer fails the run instead of hanging it
    )
    try:
        fn(rank, world_size, *args)
        # No rank tears its gloo pairs down while a peer may still use them (a peer that sees
        # the connection vanish mid-exchange aborts the whole process).
        dist.barrier()
    finally:
        dist.destroy_process_group()


def run_distributed(
    fn: Any, world_size: int = 2, args: tuple = (), timeout: float = 600, backend: str = "gloo"
) -> None:
    """Run fn(rank, world_size, *args) in `world_size` fresh processes on this host, with a
    process group on a free loopback port. Raises if a process fails; kills them all and raises
    TimeoutError after `timeout` seconds. `fn` must be importable (a module-level function)."""
    import time

    import torch.multiprocessing as mp

    context = mp.start_processes(
        _entry,
        args=(fn, world_size, _free_port(), backend, args),
        nprocs=world_size,
        join=False,
        start_method="spawn",
    )
    deadline = time.monotonic() + timeout
    try:
        while not context.join(timeout=max(0.1, min(5.0, deadline - time.monotonic()))):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{world_size} processes did not finish in {timeout:.0f} s")
    finally:
        for process in context.processes:
            if process.is_alive():
                process.kill()
                process.join(5)
