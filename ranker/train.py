"""Building a Ranker for a split, the epoch's request batches, and a small training loop.

`create_ranker` turns (RankerData, RankerConfig, BuildConfig) into a Ranker: which rows may use
an ID row (warm, frequent enough), the content matrix, semantic-ID codes, logQ from train counts.
`RequestBatches` yields the epoch's RequestBatch objects; `fit_ranker` is the plain loop used by
ranker.methods (the LightningModule in ranker.lit uses the same pieces).
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from coldstart.data.schema import RequestBatch
from coldstart.ranker.data import RankerData, group_requests, leave_request_out_history, make_batch
from coldstart.ranker.model import ItemTower, Ranker, RankerConfig, UserTower
from coldstart.ranker.semantic_ids import (
    SemanticIDConfig,
    code_collision_rate,
    prefix_coverage,
    prefix_rows,
    residual_kmeans,
)
from coldstart.ranker.tables import RowWiseAdagrad


@dataclass
class BuildConfig:
    """How the split's items become model rows.

    rare_threshold: items with fewer training interactions lose their own ID row; rare_mode
      "content" sends them to their content (+ semantic-ID) side, "shared" to one shared row.
    id_for_cold: give cold items an ID row anyway (the ID-only baseline: random, untrained rows).
    """

    rare_threshold: int = 0
    rare_mode: str = "content"  # content | shared
    id_for_cold: bool = False
    normalize_content: bool = True
    seed: int = 0


@dataclass
class TrainConfig:
    epochs: int = 8
    batch_requests: int = 128
    items_per_request: int = 6
    lr: float = 3e-3
    weight_decay: float = 0.0
    optimizer: str = "adam"  # adam | rowwise_adagrad (sparse tables)
    label_threshold: float | None = None  # bce: value >= threshold is a positive
    # Tail upsampling as row weights (data.sampling.coverage_weights): an item with c train rows
    # weighs max(1, min_count / c) * c^-alpha per row. Defaults: natural frequencies.
    upsample_min_count: int = 0
    upsample_alpha: float = 0.0
    event_weights: dict[str, float] = field(default_factory=dict)  # e.g. {"purchase": 5.0}
    # "pages": each user's rows by time cut into pages of items_per_request, re-cut per epoch;
    # "sessions": data.requests.group_requests (log request ids, else time windows).
    requests: str = "pages"
    session_window_seconds: int = 60
    dedup: bool = True
    seed: int = 0
    max_seconds: float | None = None  # stop early when the wall-clock budget is spent
    extra: dict[str, Any] = field(default_factory=dict)


def create_ranker(
    data: RankerData, config: RankerConfig, build: BuildConfig | None = None
) -> tuple[Ranker, dict[str, Any]]:
    """A Ranker sized for `data`, plus a report (collision rates, rare rows, SID coverage)."""
    build = build or BuildConfig()
    torch.manual_seed(build.seed)
    counts = data.train_counts()
    warm = data.item_split == "warm"
    report: dict[str, Any] = {}
    id_available = warm & (counts >= max(1, build.rare_threshold))
    if build.id_for_cold:
        id_available = np.ones(data.num_items, dtype=bool)
    id_keys = np.arange(data.num_items, dtype=np.int64)
    report["rare_items"] = int((warm & (counts < build.rare_threshold)).sum())
    if build.rare_threshold > 0 and build.rare_mode == "shared":
        rare = warm & (counts < build.rare_threshold)
        id_available = id_available | rare
        id_keys = id_keys.copy()
        id_keys[rare] = data.num_items  # one shared row past the catalogue
    content = None
    if data.content is not None and config.item.use_content:
        content = data.content.copy()
        if build.normalize_content:
            norms = np.linalg.norm(content, axis=1, keepdims=True)
            content = np.where(norms > 0, content / np.maximum(norms, 1e-12), 0.0).astype(
                np.float32
            )
    sid_rows, sid_num = None, 0
    if config.item.semantic_ids:
        if content is None:
            raise ValueError("semantic IDs need content vectors")
        codes, _ = residual_kmeans(
            content[data.has_content],
            SemanticIDConfig(config.item.sid_levels, config.item.sid_codewords, seed=build.seed),
        )
        all_codes = np.full((data.num_items, codes.shape[1]), -1, dtype=np.int64)
        all_codes[data.has_content] = codes
        sid_rows, sid_num = prefix_rows(all_codes)
        seen = (counts > 0) & data.has_content
        cold = np.isin(data.item_split, ["cold_val", "cold_test"]) & data.has_content
        report["sid_code_collision_rate"] = code_collision_rate(codes)
        report["sid_cold_prefix_seen"] = prefix_coverage(all_codes, seen, cold)
    if config.item.hash_size:
        from coldstart.ranker.tables import collision_rate

        report["item_hash_collision_rate"] = collision_rate(
            id_keys[id_available], config.item.hash_size
        )
    num_table = data.num_items + (
        1 if build.rare_mode == "shared" and build.rare_threshold > 0 else 0
    )
    item_tower = ItemTower(
        config.item,
        config.dim,
        num_table,
        content=None
        if content is None
        else torch.as_tensor(
            np.concatenate(
                [content, np.zeros((num_table - data.num_items, content.shape[1]), np.float32)]
            )
        ),
        id_available=torch.as_tensor(
            np.concatenate([id_available, np.zeros(num_table - data.num_items, bool)])
        ),
        id_keys=torch.as_tensor(np.concatenate([id_keys, np.arange(data.num_items, num_table)])),
        sid_rows=None
        if sid_rows is None
        else np.concatenate(
            [sid_rows, np.full((num_table - data.num_items, sid_rows.shape[1]), sid_num)]
        ),
        sid_num_rows=sid_num,
        tables=config.tables,
        # One media type (or none known) says nothing: the feature then adds no parameter.
        media=np.concatenate([data.media, np.zeros(num_table - data.num_items, np.int64)])
        if config.item.media_type and data.media_types >= 2
        else None,
    )
    user_tower = UserTower(config.user, config.dim, data.num_users, num_table, config.tables)
    q = counts.astype(np.float64) / max(1, counts.sum())
    log_q = np.log(np.where(q > 0, q, 0.0) + (q == 0) * 1e-30)
    log_q[q == 0] = -np.inf
    log_q = np.concatenate([log_q, np.full(num_table - data.num_items, -np.inf)])
    model = Ranker(config, item_tower, user_tower, torch.as_tensor(log_q, dtype=torch.float32))
    return model, report


class RequestBatches:
    """The epoch's training requests as RequestBatch objects (re-grouped every epoch).

    Requests: each user's train rows, ordered by time, cut into pages of `items_per_request`;
    each request carries the user's history without its own items.
    """

    def __init__(self, data: RankerData, history_len: int, train: TrainConfig) -> None:
        self.data, self.train = data, train
        self.histories = data.histories(history_len)
        tr = data.train
        self.row_weight = np.ones(len(tr.items), np.float32)
        w = np.ones(len(tr.items), np.float64)
        if train.upsample_min_count or train.upsample_alpha:
            from coldstart.data.sampling import coverage_weights

            w = w * coverage_weights(tr.items, train.upsample_min_count, train.upsample_alpha)
        if train.event_weights:
            from coldstart.data.sampling import event_weights

            if tr.events is None:
                raise ValueError("event_weights given but the train part has no event column")
            w = w * event_weights(tr.events, train.event_weights)
        if w.sum() <= 0:
            raise ValueError("every training row has weight 0")
        self.row_weight = (w / w.mean()).astype(np.float32)
        self.sessions = None
        if train.requests == "sessions":
            self.sessions = self._sessions()
        elif train.requests != "pages":
            raise ValueError(
                f"TrainConfig.requests must be pages or sessions, got {train.requests!r}"
            )
        self.labels = None
        if train.label_threshold is not None:
            self.labels = (tr.values >= train.label_threshold).astype(np.float32)
        self.epoch = 0

    def _sessions(self) -> list[np.ndarray]:
        """Requests from data.requests: the log's request ids, else per-user time windows."""
        import pandas as pd

        from coldstart.data.requests import group_requests as group_log
        from coldstart.data.schema import REQUEST_ID, TIMESTAMP, USER_ID

        tr = self.data.train
        frame = pd.DataFrame({USER_ID: tr.users, TIMESTAMP: tr.timestamps})
        if tr.request_ids is not None:
            frame[REQUEST_ID] = tr.request_ids
        ids = group_log(
            frame, self.train.session_window_seconds, max_size=self.train.items_per_request
        )[REQUEST_ID].to_numpy()
        order = np.argsort(ids, kind="stable")
        cuts = np.flatnonzero(np.diff(ids[order])) + 1
        return np.split(order, cuts)

    def __len__(self) -> int:
        if self.sessions is not None:
            return int(np.ceil(len(self.sessions) / self.train.batch_requests))
        per_user = np.bincount(self.data.train.users)
        n_req = int(np.ceil(per_user / self.train.items_per_request).sum())
        return int(np.ceil(n_req / self.train.batch_requests))

    def __iter__(self) -> Iterator[RequestBatch]:
        epoch, self.epoch = self.epoch, self.epoch + 1
        return self.epoch_batches(epoch)

    def epoch_batches(self, epoch: int, first: int = 0) -> Iterator[RequestBatch]:
        """The batches of epoch `epoch` (0-based) from batch `first` on: the same batches
        whenever asked, so a resumed run continues an epoch where it stopped."""
        rng = np.random.default_rng(self.train.seed * 1000 + epoch)
        tr = self.data.train
        requests = self.sessions or group_requests(
            tr.users, self.train.items_per_request, rng, tr.timestamps
        )
        order = rng.permutation(len(requests))
        br = self.train.batch_requests
        for start in range(first * br, len(order), br):
            chosen = [requests[i] for i in order[start : start + br]]
            users = np.array([tr.users[r[0]] for r in chosen])
            items = [tr.items[r] for r in chosen]
            history = leave_request_out_history(self.histories, users, items)
            yield make_batch(
                users,
                history,
                items,
                labels=None if self.labels is None else [self.labels[r] for r in chosen],
                weights=[self.row_weight[r] for r in chosen],
            )


def create_optimizer(model: torch.nn.Module, train: TrainConfig) -> torch.optim.Optimizer:
    """AdamW, or RowWiseAdagrad (one state float per row; required for sparse tables).

    Tables sharded by TorchRec (ranker.sharding) are left out: their fused optimizer updates
    them inside backward (TorchRec marks such parameters with `_in_backward_optimizers`).
    """
    params = [p for p in model.parameters() if not hasattr(p, "_in_backward_optimizers")]
    fused = len(params) < len(list(model.parameters()))
    # Any Ranker inside (a mixture trains several) with sparse tables needs the sparse optimizer.
    sparse = not fused and any(
        m.config.item.sparse or m.config.user.sparse
        for m in model.modules()
        if isinstance(m, Ranker)
    )
    if sparse and train.optimizer != "rowwise_adagrad":
        raise ValueError(
            "sparse ID tables need optimizer='rowwise_adagrad' (Adam has no sparse rows)"
        )
    if train.optimizer == "adam":
        return torch.optim.AdamW(params, lr=train.lr, weight_decay=train.weight_decay)
    if train.optimizer == "rowwise_adagrad":
        return RowWiseAdagrad(params, lr=train.lr, weight_decay=train.weight_decay)
    raise ValueError(
        f"TrainConfig.optimizer must be adam or rowwise_adagrad, got {train.optimizer!r}"
    )


@dataclass
class FitCheckpoint:
    """Where and how often `fit_ranker` saves what it needs to resume exactly.

    path: one file, overwritten atomically at every save (write a temp beside it, fsync,
      rename); the caller owns its directory and removes the file when the fit's result is safe.
    every_n_steps: mid-epoch cadence in optimizer steps (0: epoch ends only). Every epoch end
      saves too.
    """

    path: Path
    every_n_steps: int = 100


def save_fit_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write a fit checkpoint atomically: readers see the old file or the new one, never half."""
    import io

    from coldstart.data.embeddings import atomic_write_bytes

    buffer = io.BytesIO()
    torch.save(state, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def _train_fingerprint(model: torch.nn.Module, train: TrainConfig) -> dict[str, Any]:
    """What a checkpoint must match to be resumed: the training config and the parameter shapes
    (a stale file from another config is started over, never continued)."""
    from coldstart.data.embeddings import jsonable

    shapes = {k: list(v.shape) for k, v in model.state_dict().items()}
    return jsonable({"train": dataclasses.asdict(train), "shapes": shapes})


def _load_fit_checkpoint(
    checkpoint: FitCheckpoint,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    fingerprint: dict[str, Any],
    scaler: Any = None,
) -> dict[str, Any] | None:
    """The loop position saved at checkpoint.path, with model, optimizer and RNG states restored;
    None (and nothing restored) when there is no file or it belongs to another fit."""
    from coldstart.ranker.rng import set_rng_state

    path = Path(checkpoint.path)
    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - any unreadable file: train from the start
        print(f"[ranker] ignoring unreadable checkpoint {path}: {error}", file=sys.stderr)
        return None
    if state.get("fingerprint") != fingerprint:
        print(f"[ranker] ignoring checkpoint {path}: another fit's", file=sys.stderr)
        return None
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    if scaler is not None and "scaler" in state:
        scaler.load_state_dict(state["scaler"])
    set_rng_state(state["rng"])
    return state["loop"]


@dataclass(frozen=True)
class FitDevice:
    """Where and at which precision `fit_ranker` trains (the experiment's `trainer:` section).

    accelerator: None (the default) trains where the model is, the CPU as ever; "auto": CUDA
      when there is one, else the CPU; "cpu"; "gpu" / "cuda": CUDA, an error without it.
    precision: None, "auto", "32", "32-true": fp32; "bf16-mixed": torch.autocast(bfloat16)
      around the forward and loss; "16-mixed": autocast(float16) + a GradScaler, CUDA only.
    One device, one process: the plain loop has no strategy and no device count.
    """

    accelerator: str | None = None
    precision: str | None = None


_FIT_DEVICE: contextvars.ContextVar[FitDevice | None] = contextvars.ContextVar(
    "fit_device", default=None
)
_FP32 = (None, "auto", "32", "32-true")


@contextlib.contextmanager
def fit_device(accelerator: str | None = None, precision: str | None = None) -> Iterator[None]:
    """Every `fit_ranker` call inside trains on this accelerator and precision (FitDevice), e.g.
    the experiment's ranker stage around ranker.methods.fit_method, which trains through it."""
    token = _FIT_DEVICE.set(FitDevice(accelerator, precision))
    try:
        yield
    finally:
        _FIT_DEVICE.reset(token)


def resolve_fit_device(setting: FitDevice) -> torch.device | None:
    """The torch device of `setting.accelerator` (None: leave the model where it is); raises
    ValueError for an unknown precision or accelerator and RuntimeError for CUDA without one."""
    accelerator = setting.accelerator
    precision = None if setting.precision is None else str(setting.precision)
    if precision not in _FP32 and precision not in ("bf16-mixed", "16-mixed"):
        raise ValueError(
            f"the ranker's plain loop takes precision auto, 32, bf16-mixed or 16-mixed, got "
            f"{setting.precision!r}"
        )
    if accelerator is None:
        device = None
    elif accelerator == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    elif accelerator == "cpu":
        device = torch.device("cpu")
    elif accelerator in ("gpu", "cuda"):
        if not torch.cuda.is_available():
            raise RuntimeError(
                f"trainer accelerator={accelerator!r} for the ranker, but torch sees no CUDA "
                "device here (torch.cuda.is_available() is False); use accelerator=auto or cpu"
            )
        device = torch.device("cuda")
    else:
        raise ValueError(
            f"the ranker's plain loop takes accelerator auto, cpu, gpu or cuda, got {accelerator!r}"
        )
    if precision == "16-mixed" and (device is None or device.type != "cuda"):
        raise ValueError(
            "precision=16-mixed needs CUDA (a GradScaler for fp16); on the CPU use bf16-mixed or 32"
        )
    return device


def fit_ranker(
    model: torch.nn.Module,
    data: RankerData,
    train: TrainConfig,
    progress: bool = False,
    checkpoint: FitCheckpoint | None = None,
    device: FitDevice | None = None,
) -> dict[str, Any]:
    """Train in place with the plain loop; returns {"epochs", "steps", "seconds", "loss"}
    (+ "resumed_from_step" when it continued a checkpoint).

    model: a Ranker, or any module with `loss(batch, dedup)` and `history_len` (a mixture's
    ranker.mixture.ChannelRanker).
    checkpoint: save the loop's state there (FitCheckpoint), and when the file already holds a
    checkpoint of this fit, continue from it: the same final weights, bit for bit, as a run
    never interrupted (on the same device and thread count). The loop position is (epoch,
    batch within it): RequestBatches.epoch_batches replays an epoch's batches from any offset.
    device: accelerator and precision (FitDevice); None takes the enclosing `fit_device`
    context's, by default the model's own device at fp32. A model trained on CUDA comes back on
    the CPU in float32, so its vectors are read as ever.
    """
    from coldstart.ranker.rng import rng_state

    setting = device or _FIT_DEVICE.get() or FitDevice()
    target = resolve_fit_device(setting)
    precision = None if setting.precision in _FP32 else str(setting.precision)
    if target is not None:
        model.to(target)
    # Where the batches go: the model's parameters' device (the CPU unless moved).
    first = next(iter(model.parameters()), None)
    on = target if target is not None else (first.device if first is not None else None)
    move = on is not None and on.type != "cpu"
    autocast_dtype = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}.get(precision or "")
    device_type = on.type if on is not None else "cpu"
    scaler = (
        torch.amp.GradScaler("cuda") if precision == "16-mixed" else None
    )  # fp16 gradients underflow without loss scaling
    torch.manual_seed(train.seed)
    batches = RequestBatches(data, model.history_len, train)
    optimizer = create_optimizer(model, train)
    if checkpoint is not None and any(
        hasattr(p, "_in_backward_optimizers") for p in model.parameters()
    ):
        # TorchRec's fused optimizer state lives outside `optimizer`: no exact resume.
        checkpoint = None
    model.train()
    # The loop's whole state: position, counters, loss sums, time spent before a resume.
    loop: dict[str, Any] = {
        "epoch": 0,
        "batch": 0,
        "steps": 0,
        "total": 0.0,
        "n": 0,
        "last": float("nan"),
        "epochs_done": 0,
        "elapsed": 0.0,
        "finished": False,
    }
    resumed_from = None
    fingerprint = _train_fingerprint(model, train) if checkpoint is not None else {}
    if checkpoint is not None and (target is not None and target.type != "cpu" or precision):
        # A fit on another device or precision is another fit (default fits keep their prints).
        fingerprint["device"] = {"type": device_type, "precision": precision}
    if checkpoint is not None:
        saved = _load_fit_checkpoint(checkpoint, model, optimizer, fingerprint, scaler)
        if saved is not None:
            loop, resumed_from = saved, saved["steps"]
            print(
                f"[ranker] resumed from step {resumed_from} (epoch {loop['epoch']}, batch "
                f"{loop['batch']}) of {checkpoint.path}",
                file=sys.stderr,
                flush=True,
            )
    start = time.perf_counter() - loop["elapsed"]

    def save() -> None:
        loop["elapsed"] = time.perf_counter() - start
        save_fit_checkpoint(
            checkpoint.path,
            {
                "fingerprint": fingerprint,
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "rng": rng_state(),
                "loop": dict(loop),
                **({"scaler": scaler.state_dict()} if scaler is not None else {}),
            },
        )

    every = checkpoint.every_n_steps if checkpoint is not None else 0
    iterator = range(loop["epoch"], train.epochs if not loop["finished"] else loop["epoch"])
    if progress:
        from tqdm import tqdm

        iterator = tqdm(iterator, desc="ranker epochs", initial=loop["epoch"], total=train.epochs)
    for epoch in iterator:
        for batch in batches.epoch_batches(epoch, loop["batch"]):
            if move:
                batch = batch.to(on)
            if autocast_dtype is None:
                loss = model.loss(batch, dedup=train.dedup)
            else:
                with torch.autocast(device_type, dtype=autocast_dtype):
                    loss = model.loss(batch, dedup=train.dedup)
            optimizer.zero_grad(set_to_none=True)
            if scaler is None:
                loss.backward()
                optimizer.step()
            else:
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
            loop["total"] += float(loss.detach())
            loop["n"] += 1
            loop["steps"] += 1
            loop["batch"] += 1
            if every and loop["steps"] % every == 0:
                save()
        loop["last"] = loop["total"] / max(1, loop["n"])
        loop["epochs_done"] += 1
        loop.update(epoch=epoch + 1, batch=0, total=0.0, n=0)
        out_of_time = bool(train.max_seconds) and time.perf_counter() - start > train.max_seconds
        loop["finished"] = out_of_time or epoch + 1 == train.epochs
        if checkpoint is not None:
            save()
        if out_of_time:
            break
    model.eval()
    if target is not None and target.type != "cpu":
        model.to("cpu")  # moved here, back: vectors, exports and serving read a CPU model
    info = {
        "epochs": loop["epochs_done"],
        "steps": loop["steps"],
        "seconds": time.perf_counter() - start,
        "loss": loop["last"],
    }
    if resumed_from is not None:
        info["resumed_from_step"] = resumed_from
    return info
