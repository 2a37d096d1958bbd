"""Modality fusion: per-modality vectors of an item -> one item vector.

An item may have an image, a title/description text and tags; each modality is embedded on its
own (and kept), then fused. Missing modalities are masked out, so an item with only a title
still gets a vector (its fused vector is then its text vector, renormalized).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# The config lives in the torch-free encoders.config (one home for its defaults).
from coldstart.encoders.config import FUSION_METHODS, FusionConfig


class ModalityFusion(nn.Module):
    """Fuse (B, D) vectors of several modalities with presence masks into (B, D) unit vectors.

    "learned" scores each present vector with a linear gate (plus a per-modality bias), takes a
    softmax over the present modalities and adds a residual per-modality linear map, so training
    can both re-weight and re-align modalities. Rows with no modality at all come out as zeros.
    """

    def __init__(self, config: FusionConfig | None = None) -> None:
        super().__init__()
        self.config = config or FusionConfig()
        method = self.config.method
        if method not in FUSION_METHODS:
            raise ValueError(f"unknown fusion method {method!r} ({', '.join(FUSION_METHODS)})")
        mods = tuple(self.config.modalities)
        if method == "weighted":
            missing = [m for m in mods if m not in self.config.weights]
            if missing:
                raise ValueError(f"weighted fusion needs a weight for {missing}")
            if any(self.config.weights[m] < 0 for m in mods):
                raise ValueError("fusion weights must be >= 0")
        if method == "learned":
            if self.config.dim <= 0:
                raise ValueError("learned fusion needs FusionConfig.dim > 0")
            d = self.config.dim
            self.gate = nn.Linear(d, 1)
            self.bias = nn.Parameter(torch.zeros(len(mods)))
            self.align = nn.ModuleDict({m: nn.Linear(d, d, bias=False) for m in mods})
            for lin in self.align.values():
                nn.init.zeros_(lin.weight)  # starts as the identity map (residual)

    def forward(
        self,
        vectors: dict[str, torch.Tensor],
        present: dict[str, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """vectors: modality -> (B, D) (rows of absent items may hold anything);
        present: modality -> (B,) bool (default: all present). Returns (B, D) L2-normalized."""
        mods = [m for m in self.config.modalities if m in vectors]
        extra = set(vectors) - set(self.config.modalities)
        if extra:
            raise ValueError(
                f"modalities {sorted(extra)} not in fusion config {self.config.modalities}"
            )
        if not mods:
            raise ValueError("nothing to fuse: no modality vectors given")
        stack = torch.stack([vectors[m] for m in mods], dim=1).float()  # (B, M, D)
        b = stack.shape[0]
        if present is None:
            present = {}
        mask = torch.stack(
            [
                present.get(m, torch.ones(b, dtype=torch.bool, device=stack.device))
                .to(stack.device)
                .bool()
                for m in mods
            ],
            dim=1,
        )  # (B, M)
        stack = stack.masked_fill(~mask.unsqueeze(-1), 0.0)  # absent rows never leak in
        method = self.config.method
        if method == "mean":
            weights = mask.float()
        elif method == "weighted":
            w = torch.tensor([float(self.config.weights[m]) for m in mods], device=stack.device)
            weights = mask.float() * w
        else:
            idx = [list(self.config.modalities).index(m) for m in mods]
            stack = stack + torch.stack([self.align[m](stack[:, i]) for i, m in enumerate(mods)], 1)
            logits = self.gate(stack).squeeze(-1) + self.bias[idx]  # (B, M)
            logits = logits.masked_fill(~mask, float("-inf"))
            weights = torch.softmax(logits, dim=1).nan_to_num(0.0)  # all-absent rows -> 0
        fused = (weights.unsqueeze(-1) * stack).sum(1)  # (B, D)
        return F.normalize(fused, dim=-1)  # zero rows stay zero


def create_fusion(method: str = FusionConfig.method, **kwargs: object) -> ModalityFusion:
    """Factory: `create_fusion("weighted", modalities=("image", "text"), weights={...})`."""
    return ModalityFusion(FusionConfig(method=method, **kwargs))  # type: ignore[arg-type]
