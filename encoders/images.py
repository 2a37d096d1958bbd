"""Image preprocessing split between host and device, and batched JPEG decoding on a device.

An encoder's image transform (PIL -> resize -> crop -> ToTensor -> Normalize) is cut at
ToTensor: DataLoader workers run the PIL part and ship (3, H, W) uint8 tensors (a quarter of
the bytes of float32, pinned for the copy); the device does `x / 255`, then `(x - mean) / std`.
The arithmetic is the same elementwise float32 as torchvision's ToTensor + Normalize, so the
result equals the single-process transform exactly (tested).

The optional device decode path sends JPEG bytes instead of pixels: `decode_jpegs` decodes a
batch with `torchvision.io.decode_jpeg` on the device (nvjpeg on CUDA; on CPU the same batched
call, which is how the tests exercise it) and resizes and crops it there with the transform's
own Resize / CenterCrop. Whatever the device cannot decode falls back to the CPU path.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from coldstart.data.images import ImageRejected, open_header

JPEG_MAGIC = b"\xff\xd8\xff"
JPEG_EOI = b"\xff\xd9"
DEVICE_DECODE_MODES = ("RGB", "L")  # JPEG colour modes torchvision decodes to RGB on any device


@dataclass
class PixelSplit:
    """An image transform cut at ToTensor. host: PIL -> PIL ops (resize, crop, mode); mean/std:
    the trailing Normalize; device_ops: the host ops that also run on (3, H, W) uint8 tensors
    (Resize, CenterCrop), or None when some host op has no tensor equivalent."""

    host: Callable[[Any], Any]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    device_ops: Callable[[torch.Tensor], torch.Tensor] | None


def _is_to_tensor(op: Any) -> bool:
    from torchvision import transforms as T

    return isinstance(op, T.ToTensor)  # open_clip's MaybeToTensor subclasses it


def _is_mode_op(op: Any) -> bool:
    """RGB conversions: a no-op on the RGB tensors our decoders produce."""
    name = getattr(op, "__name__", type(op).__name__)
    return name in ("MaybeConvertMode", "_convert_to_rgb", "convert_to_rgb")


def split_transform(transform: Any) -> PixelSplit | None:
    """torchvision Compose [..PIL ops.., ToTensor, Normalize] -> PixelSplit, else None."""
    from torchvision import transforms as T

    ops = list(getattr(transform, "transforms", []))
    if len(ops) < 2 or not _is_to_tensor(ops[-2]) or not isinstance(ops[-1], T.Normalize):
        return None
    norm: T.Normalize = ops[-1]
    host_ops = ops[:-2]
    tensor_ops = [op for op in host_ops if not _is_mode_op(op)]
    device_ok = all(isinstance(op, (T.Resize, T.CenterCrop)) for op in tensor_ops)
    return PixelSplit(
        host=T.Compose(host_ops),
        mean=tuple(float(m) for m in norm.mean),
        std=tuple(float(s) for s in norm.std),
        device_ops=T.Compose(tensor_ops) if device_ok else None,
    )


def pil_to_uint8(image: Any) -> torch.Tensor:
    """PIL image (RGB) -> (3, H, W) uint8 tensor, as ToTensor sees it before scaling."""
    from torchvision.transforms.functional import pil_to_tensor

    return pil_to_tensor(image)


def normalize_uint8(
    pixels: torch.Tensor, mean: Sequence[float], std: Sequence[float]
) -> torch.Tensor:
    """(B, 3, H, W) uint8 on any device -> (B, 3, H, W) float32: ToTensor's /255, then Normalize."""
    m = torch.as_tensor(mean, dtype=torch.float32, device=pixels.device).view(1, -1, 1, 1)
    s = torch.as_tensor(std, dtype=torch.float32, device=pixels.device).view(1, -1, 1, 1)
    # In place after the one conversion: no fresh (B, 3, H, W) buffers to fault in on a CPU.
    return pixels.to(torch.float32).div_(255).sub_(m).div_(s)


def device_decodable(payload: bytes, max_pixels: int | None = None) -> bool:
    """True when `payload` is a complete JPEG the device decoder handles (RGB or greyscale,
    under the pixel limit, ending with its end-of-image marker). Header parsing only.

    Everything else (PNG, WebP, CMYK JPEGs, truncated or corrupt files, bombs) goes the CPU
    way, where a bad file is skipped and counted by its reason.
    """
    if not payload.startswith(JPEG_MAGIC) or not payload.rstrip(b"\x00").endswith(JPEG_EOI):
        return False
    try:  # the CPU decoder's own header guards (data.images): a bomb is never device-decoded
        header = open_header(payload, max_pixels)
    except ImageRejected:  # let the CPU path judge and count it
        return False
    return header.format == "JPEG" and header.mode in DEVICE_DECODE_MODES


def pack_bytes(payloads: Sequence[bytes]) -> tuple[torch.Tensor, torch.Tensor]:
    """Byte strings -> (one uint8 tensor (N_bytes,), offsets (n + 1,) int64): one shared-memory
    block per batch between DataLoader processes instead of one per image."""
    offsets = torch.zeros(len(payloads) + 1, dtype=torch.int64)
    if payloads:
        offsets[1:] = torch.cumsum(torch.tensor([len(p) for p in payloads]), 0)
    data = (
        torch.frombuffer(bytearray(b"".join(payloads)), dtype=torch.uint8)
        if payloads
        else (torch.zeros(0, dtype=torch.uint8))
    )
    return data, offsets


def unpack_bytes(data: torch.Tensor, offsets: torch.Tensor) -> list[torch.Tensor]:
    """Inverse of pack_bytes: views of `data` (CPU, 1-D uint8), one per payload."""
    bounds = offsets.tolist()
    return [data[a:b] for a, b in zip(bounds[:-1], bounds[1:])]


def decode_jpegs(
    payloads: list[torch.Tensor],
    device: torch.device,
    ops: Callable[[torch.Tensor], torch.Tensor] | None,
) -> list[torch.Tensor | None]:
    """Batched JPEG decode on `device`, then `ops` (resize + crop) per size group.

    payloads: 1-D uint8 CPU tensors. Returns one (3, H, W) uint8 tensor on `device` per payload,
    or None where the device could not decode it (the caller falls back to the CPU path). One
    bad file fails torchvision's batched call, so a failed batch is retried image by image.
    """
    from torchvision.io import ImageReadMode, decode_jpeg

    if not payloads:
        return []
    try:
        images: list[torch.Tensor | None] = list(
            decode_jpeg(payloads, mode=ImageReadMode.RGB, device=device)
        )
    except RuntimeError:
        images = []
        for payload in payloads:
            try:
                images.append(decode_jpeg(payload, mode=ImageReadMode.RGB, device=device))
            except RuntimeError:
                images.append(None)
    if ops is None:
        return images
    # Same-sized images are resized together: one kernel per size instead of one per image.
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, image in enumerate(images):
        if image is not None:
            groups.setdefault(tuple(image.shape), []).append(i)
    out: list[torch.Tensor | None] = [None] * len(images)
    for rows in groups.values():
        resized = ops(torch.stack([images[i] for i in rows]))  # (g, 3, H, W) uint8
        for j, i in enumerate(rows):
            out[i] = resized[j]
    return out
