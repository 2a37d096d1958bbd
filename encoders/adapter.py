"""`AdaptedEncoder`: a frozen-or-not registry encoder with a trainable residual adapter per
modality, so an upstream fine-tune can touch a few hundred thousand weights on a CPU.

Registry name: "adapter:<base>" (e.g. "adapter:minilm", "adapter:small-clip+minilm"); a `.ckpt`
of it (encoders.engagement's stage) loads through `create_encoder(name, pretrained=ckpt)` like
any fine-tuned encoder, so the embed job runs it unchanged.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from coldstart.encoders.base import IMAGE, TEXT, Encoder, EncoderConfig, Preprocessor

ADAPTER_PREFIX = "adapter:"


class ResidualAdapter(nn.Module):
    """x -> x + W x + b, W and b zero-initialised: an untrained adapter is the identity, so a
    short fine-tune moves vectors only where the objective asks (a linear map of the space: cold
    items move with the warm items whose text they share)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.f = nn.Linear(dim, dim)
        nn.init.zeros_(self.f.weight)
        nn.init.zeros_(self.f.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, D) -> (B, D)."""
        return x + self.f(x)


class AdaptedEncoder(Encoder):
    """`base` (any Encoder) followed by a ResidualAdapter on each of its modalities.

    The adapter reads the base's L2-normalized features: exactly the vectors an embed export of
    the base holds, which is what lets the frozen mode train on cached vectors.
    """

    def __init__(self, config: EncoderConfig, base: Encoder) -> None:
        super().__init__()
        self.config = config
        self.base = base
        self.modalities = base.modalities
        self.dim = base.dim
        self.adapters = nn.ModuleDict({m: ResidualAdapter(base.dim) for m in self.modalities})

    def adapt(self, features: torch.Tensor, modality: str) -> torch.Tensor:
        """(B, D) base features (normalized or not) of `modality` -> (B, D) adapted, unnormalized."""
        return self.adapters[modality](F.normalize(features, dim=-1))

    def image_features(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.adapt(self.base.image_features(pixels), IMAGE)

    def text_features(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.adapt(self.base.text_features(tokens), TEXT)

    def preprocessor(self) -> Preprocessor:
        return self.base.preprocessor()

    @property
    def logit_scale(self) -> nn.Parameter | None:
        return self.base.logit_scale

    def freeze_base(self) -> None:
        """Only the adapters train (the frozen mode)."""
        for p in self.base.parameters():
            p.requires_grad_(False)
