"""Encoders: registry (open_clip, HF CLIP, HF text), modality fusion, contrastive training, embedding job.

Importing this package is cheap; torch-heavy backends load inside the factories.
"""

from coldstart.encoders.base import IMAGE, TEXT, Encoder, EncoderConfig, Preprocessor
from coldstart.encoders.fusion import FusionConfig, ModalityFusion, create_fusion
from coldstart.encoders.registry import PRESETS, create_encoder, list_encoders

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
