"""Encoders: registry (open_clip, HF CLIP, HF text), modality fusion, contrastive training, embedding job.

Importing this package is cheap: the names below load their (torch) module on first use, so a
torch-free submodule (encoders.config, encoders.catalogue) imports without torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# name -> submodule that defines it
_EXPORTS = {
    "IMAGE": "base",
    "TEXT": "base",
    "Encoder": "base",
    "EncoderConfig": "base",
    "Preprocessor": "base",
    "FusionConfig": "config",
    "ModalityFusion": "fusion",
    "create_fusion": "fusion",
    "PRESETS": "registry",
    "create_encoder": "registry",
    "list_encoders": "registry",
}

if TYPE_CHECKING:
    from coldstart.encoders.base import IMAGE, TEXT, Encoder, EncoderConfig, Preprocessor
    from coldstart.encoders.config import FusionConfig
    from coldstart.encoders.fusion import ModalityFusion, create_fusion
    from coldstart.encoders.registry import PRESETS, create_encoder, list_encoders


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)


__all__ = [
    "IMAGE",
    "TEXT",
    "PRESETS",
    "Encoder",
    "EncoderConfig",
    "FusionConfig",
    "ModalityFusion",
    "Preprocessor",
    "create_encoder",
    "create_fusion",
    "list_encoders",
]
