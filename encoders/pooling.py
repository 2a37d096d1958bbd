"""Pooling several image-tower vectors of one item into one: a video's K frames (over time) and
a carousel's images.

- `pool_mean(vectors, counts)`: the mean of each group's unit vectors, renormalized (carousels
  always; videos by default). No parameters, order-free.
- `TemporalPooling(dim, method="attention")`: a small trainable attention pooling over a video's
  frames: a linear scorer on each frame (plus a learned per-position bias) and a softmax over the
  frames present. The scorer starts at zero, so an untrained module *is* mean pooling: loading
  it changes nothing until fine-tuning has trained it (it is a plain nn.Module; the contrastive
  loss trains it through `forward`, gradients flow to the frames too).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from coldstart.encoders.config import POOLINGS


def group_index(counts: Sequence[int], device: torch.device | None = None) -> torch.Tensor:
    """counts (B,) -> (N,) int64: the group of each of N = sum(counts) rows."""
    sizes = torch.as_tensor(list(counts), dtype=torch.int64, device=device)
    return torch.repeat_interleave(torch.arange(len(sizes), device=device), sizes)


def pool_mean(vectors: torch.Tensor, counts: Sequence[int]) -> torch.Tensor:
    """vectors (N, D), rows grouped consecutively by `counts` (B,) -> (B, D) unit vectors:
    each group's normalized rows averaged, then renormalized. A group of one is its row."""
    unit = F.normalize(vectors.float(), dim=-1)  # (N, D)
    index = group_index(counts, unit.device)
    sums = torch.zeros(len(counts), unit.shape[1], device=unit.device).index_add_(0, index, unit)
    return F.normalize(sums, dim=-1)  # (B, D)


def pad_groups(vectors: torch.Tensor, counts: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """vectors (N, D) grouped by counts (B,) -> (B, K, D) zero-padded and a (B, K) bool mask,
    K = max(counts)."""
    k = max(counts) if len(counts) else 0
    out = vectors.new_zeros(len(counts), k, vectors.shape[1])
    mask = torch.zeros(len(counts), k, dtype=torch.bool, device=vectors.device)
    start = 0
    for i, n in enumerate(counts):
        out[i, :n] = vectors[start : start + n]
        mask[i, :n] = True
        start += n
    return out, mask


class TemporalPooling(nn.Module):
    """(B, K, D) frame vectors + (B, K) mask -> (B, D) unit vectors.

    method "mean": masked mean of the unit frame vectors; "attention": softmax(score(frame) +
    bias[position]) weights over the present frames, zero-initialized (equal weights: the mean).
    `max_frames` bounds the learned per-position bias (frames beyond it share the last one).
    """

    def __init__(self, dim: int, method: str = "attention", max_frames: int = 64) -> None:
        super().__init__()
        if method not in POOLINGS:
            raise ValueError(f"unknown pooling {method!r} ({', '.join(POOLINGS)})")
        self.method = method
        self.max_frames = max_frames
        if method == "attention":
            self.score = nn.Linear(dim, 1)
            self.position = nn.Parameter(torch.zeros(max_frames))
            nn.init.zeros_(self.score.weight)  # starts as the mean (see module doc)
            nn.init.zeros_(self.score.bias)

    def forward(self, frames: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """frames (B, K, D), mask (B, K) bool (None: all present) -> (B, D) L2-normalized."""
        unit = F.normalize(frames.float(), dim=-1)  # (B, K, D)
        b, k, _ = unit.shape
        if mask is None:
            mask = torch.ones(b, k, dtype=torch.bool, device=unit.device)
        if self.method == "mean":
            weights = mask.float()  # (B, K)
        else:
            pos = self.position[torch.arange(k, device=unit.device).clamp(max=self.max_frames - 1)]
            logits = self.score(unit).squeeze(-1) + pos  # (B, K)
            weights = torch.softmax(logits.masked_fill(~mask, float("-inf")), dim=1)
            weights = weights.nan_to_num(0.0)  # rows with no frame -> zeros
        return F.normalize((weights.unsqueeze(-1) * unit).sum(1), dim=-1)  # (B, D)

    def pool(self, vectors: torch.Tensor, counts: Sequence[int]) -> torch.Tensor:
        """vectors (N, D) grouped by counts (B,) -> (B, D): `forward` on the padded groups."""
        if self.method == "mean":
            return pool_mean(vectors, counts)
        padded, mask = pad_groups(vectors, counts)
        return self(padded, mask)


def create_pooling(method: str, dim: int, state: dict | None = None) -> TemporalPooling:
    """Factory; `state`: a trained module's state_dict (e.g. from a fine-tuning checkpoint)."""
    module = TemporalPooling(dim, method)
    if state:
        module.load_state_dict(state)
    return module.eval()


__all__ = ["POOLINGS", "TemporalPooling", "create_pooling", "pad_groups", "pool_mean"]
