"""Fusion handles missing modalities; the CLIP loss and recall are right, also across 2 ranks."""

from __future__ import annotations

import os

import pytest
import torch
import torch.nn.functional as F

from coldstart.encoders.fusion import FusionConfig, ModalityFusion, create_fusion
from coldstart.encoders.loss import ClipLoss, retrieval_recall


def _unit(*shape: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(*shape, generator=g), dim=-1)


def test_mean_fusion_and_missing_modalities():
    img, txt, tags = _unit(4, 8, seed=1), _unit(4, 8, seed=2), _unit(4, 8, seed=3)
    fusion = create_fusion("mean", modalities=("image", "text", "tags"))
    present = {
        "image": torch.tensor([1, 0, 1, 0], dtype=torch.bool),
        "text": torch.tensor([1, 1, 0, 0], dtype=torch.bool),
        "tags": torch.tensor([1, 1, 1, 0], dtype=torch.bool),
    }
    out = fusion({"image": img, "text": txt, "tags": tags}, present)
    torch.testing.assert_close(out[0], F.normalize(img[0] + txt[0] + tags[0], dim=0))
    torch.testing.assert_close(out[1], F.normalize(txt[1] + tags[1], dim=0))
    torch.testing.assert_close(out[2], F.normalize(img[2] + tags[2], dim=0))
    assert torch.count_nonzero(out[3]) == 0  # nothing present: a zero row, never NaN
    # Absent rows do not leak: garbage in an absent slot changes nothing.
    junk = img.clone()
    junk[1] = 100.0
    torch.testing.assert_close(fusion({"image": junk, "text": txt, "tags": tags}, present), out)
    # One modality only: the fused vector is that modality's vector.
    only_text = fusion({"text": txt})
    torch.testing.assert_close(only_text, txt)


def test_weighted_fusion():
    img, txt = _unit(3, 8, seed=4), _unit(3, 8, seed=5)
    fusion = create_fusion(
        "weighted", modalities=("image", "text"), weights={"image": 0.0, "text": 2.0}
    )
    torch.testing.assert_close(fusion({"image": img, "text": txt}), txt)
    fusion = create_fusion("weighted", weights={"image": 3.0, "text": 1.0})
    torch.testing.assert_close(
        fusion({"image": img, "text": txt}), F.normalize(3 * img + txt, dim=-1)
    )
    with pytest.raises(ValueError, match="needs a weight"):
        create_fusion("weighted", weights={"image": 1.0})


def test_learned_fusion_trains_and_masks():
    torch.manual_seed(0)
    d = 8
    fusion = ModalityFusion(FusionConfig(method="learned", dim=d))
    img, txt = _unit(64, d, seed=6), _unit(64, d, seed=7)
    # Starts as an (input-dependent) convex mix; learns to follow the text when the target is text.
    opt = torch.optim.Adam(fusion.parameters(), lr=0.05)
    for _ in range(100):
        loss = -(fusion({"image": img, "text": txt}) * txt).sum(-1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    cos = (fusion({"image": img, "text": txt}) * txt).sum(-1).mean()
    assert cos > 0.95
    present = {"text": torch.zeros(64, dtype=torch.bool)}
    out = fusion({"image": img, "text": txt}, present)
    # Text absent: the output depends on the image only.
    out2 = fusion({"image": img, "text": _unit(64, d, seed=8)}, present)
    torch.testing.assert_close(out, out2)
    assert torch.isfinite(out).all()


def test_clip_loss_and_recall_single_process():
    img, txt = _unit(6, 16, seed=9), _unit(6, 16, seed=10)
    scale = torch.tensor(10.0)
    logits = scale * img @ txt.T
    labels = torch.arange(6)
    expected = 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels))
    torch.testing.assert_close(ClipLoss()(img, txt, scale), expected)
    perfect = retrieval_recall(img, img, ks=(1, 5))
    assert perfect == {"i2t_r1": 1.0, "i2t_r5": 1.0, "t2i_r1": 1.0, "t2i_r5": 1.0}
    # Rows 0 and 1 share a caption: retrieving either counts.
    swapped = img[[1, 0, 2, 3, 4, 5]]
    assert retrieval_recall(img, swapped, ks=(1,))["i2t_r1"] == pytest.approx(4 / 6)
    groups = torch.tensor([0, 0, 1, 2, 3, 4])
    assert retrieval_recall(img, swapped, ks=(1,), groups=groups)["i2t_r1"] == 1.0


def _ddp_worker(rank: int, world: int, port: int, path: str) -> None:
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    img, txt = _unit(8, 16, seed=11), _unit(8, 16, seed=12)
    b = 8 // world
    results = {}
    for with_grad in (True, False):
        li = img[rank * b : (rank + 1) * b].clone().requires_grad_(True)
        lt = txt[rank * b : (rank + 1) * b].clone().requires_grad_(True)
        loss = ClipLoss(local_loss=True, gather_with_grad=with_grad)(li, lt, torch.tensor(5.0))
        loss.backward()
        results[with_grad] = (loss.detach(), li.grad.clone(), lt.grad.clone())
    torch.save(results, f"{path}/rank{rank}.pt")
    dist.destroy_process_group()


def test_gather_with_grad_matches_global_batch(tmp_path):
    """Two gloo ranks with 4 rows each reproduce the 8-row loss's gradient (negatives span ranks)."""
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_ddp_worker, args=(2, port, str(tmp_path)), nprocs=2, join=True)

    img = _unit(8, 16, seed=11).requires_grad_(True)
    txt = _unit(8, 16, seed=12).requires_grad_(True)
    full = ClipLoss()(img, txt, torch.tensor(5.0))
    full.backward()
    losses = []
    for rank in range(2):
        res = torch.load(tmp_path / f"rank{rank}.pt")
        loss, gi, gt = res[True]
        losses.append(loss)
        # Sum over ranks of local losses = 2 x the global loss, so gradients are 2 x global.
        torch.testing.assert_close(gi, 2 * img.grad[rank * 4 : (rank + 1) * 4])
        torch.testing.assert_close(gt, 2 * txt.grad[rank * 4 : (rank + 1) * 4])
        # Without gradient through the gather, the cross-rank terms are missing.
        assert not torch.allclose(res[False][1], gi)
    torch.testing.assert_close(torch.stack(losses).mean(), full)
