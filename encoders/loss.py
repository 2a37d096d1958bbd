"""Symmetric InfoNCE (CLIP loss) whose negatives span the global batch under DDP."""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn


def _world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def gather_features(features: torch.Tensor, gather_with_grad: bool = True) -> torch.Tensor:
    """(B, D) per rank -> (world * B, D), rank-major. Every rank must pass the same B.

    gather_with_grad: gradients flow back through the other ranks' copies (each rank then sees
    the full gradient of the global loss). Without it the gathered copies are constants and only
    the local slice carries gradient, which is correct only together with a local loss.
    """
    rank, world = _world()
    if world == 1:
        return features
    if gather_with_grad:
        import torch.distributed.nn.functional as dist_fn

        return torch.cat(dist_fn.all_gather(features), dim=0)
    parts = [torch.zeros_like(features) for _ in range(world)]
    dist.all_gather(parts, features.contiguous())
    parts[rank] = features  # keep the autograd path for our own rows
    return torch.cat(parts, dim=0)


class ClipLoss(nn.Module):
    """Cross-entropy over image->text and text->image similarities, averaged.

    local_loss: each rank scores its own B rows against all world*B candidates (B x world*B
    logits, labels offset by rank*B) instead of the full (world*B)^2 matrix: the same gradient in
    expectation at 1/world of the memory, as open_clip does.
    """

    def __init__(self, local_loss: bool = True, gather_with_grad: bool = True) -> None:
        super().__init__()
        self.local_loss = local_loss
        self.gather_with_grad = gather_with_grad

    def forward(
        self, image: torch.Tensor, text: torch.Tensor, logit_scale: torch.Tensor
    ) -> torch.Tensor:
        """image, text: (B, D) L2-normalized; logit_scale: scalar (already exp'ed). -> scalar."""
        rank, world = _world()
        b = image.shape[0]
        if world > 1:
            all_image = gather_features(image, self.gather_with_grad)  # (W*B, D)
            all_text = gather_features(text, self.gather_with_grad)
            if self.local_loss:
                logits_i2t = logit_scale * image @ all_text.T  # (B, W*B)
                logits_t2i = logit_scale * text @ all_image.T
                labels = torch.arange(b, device=image.device) + rank * b
            else:
                logits_i2t = logit_scale * all_image @ all_text.T  # (W*B, W*B)
                logits_t2i = logits_i2t.T
                labels = torch.arange(all_image.shape[0], device=image.device)
        else:
            logits_i2t = logit_scale * image @ text.T  # (B, B)
            logits_t2i = logits_i2t.T
            labels = torch.arange(b, device=image.device)
        return 0.5 * (F.cross_entropy(logits_i2t, labels) + F.cross_entropy(logits_t2i, labels))


def retrieval_recall(
    image: torch.Tensor,
    text: torch.Tensor,
    ks: tuple[int, ...] = (1, 5, 10),
    groups: torch.Tensor | None = None,
) -> dict[str, float]:
    """Image->text and text->image recall@k for paired rows.

    image, text: (N, D) normalized, row i of each is a pair. groups: (N,) optional ids of
    identical captions; a retrieved row counts as a hit when it is in the query's group
    (identical captions are indistinguishable, as with COCO's several captions per image).
    Returns {"i2t_r1": .., "t2i_r1": .., ...}.
    """
    n = image.shape[0]
    if groups is None:
        groups = torch.arange(n, device=image.device)
    sims = image.float() @ text.float().T  # (N, N)
    out: dict[str, float] = {}
    for direction, scores in (("i2t", sims), ("t2i", sims.T)):
        top = scores.topk(min(max(ks), n), dim=1).indices  # (N, K)
        hit = groups[top] == groups.unsqueeze(1)  # (N, K)
        for k in ks:
            out[f"{direction}_r{k}"] = hit[:, :k].any(dim=1).float().mean().item()
    return out


def logq_infonce(
    a: torch.Tensor,
    b: torch.Tensor,
    logit_scale: torch.Tensor,
    log_q_a: torch.Tensor,
    log_q_b: torch.Tensor,
    ids_a: torch.Tensor | None = None,
    ids_b: torch.Tensor | None = None,
) -> torch.Tensor:
    """Symmetric in-batch softmax over item<->item pairs with the popularity (logQ) correction.

    a, b: (B, D) L2-normalized, row i of each is a positive pair. log_q_a, log_q_b: (B,) log of
    the probability that the row's item appears in a batch: in-batch negatives are drawn by
    popularity, so each candidate's logit is lowered by its log q (Yi et al. 2019) and popular
    items are not pushed away merely for being frequent. ids_a, ids_b: (B,) item ids; a
    candidate that is the same item as the row's positive (an accidental hit) is masked.
    Returns a scalar.
    """
    logits = logit_scale * a @ b.T  # (B, B)
    labels = torch.arange(a.shape[0], device=a.device)
    a2b = logits - log_q_b.unsqueeze(0)
    b2a = logits.T - log_q_a.unsqueeze(0)
    if ids_a is not None and ids_b is not None:
        eye = torch.eye(a.shape[0], dtype=torch.bool, device=a.device)
        a2b = a2b.masked_fill((ids_b.unsqueeze(0) == ids_b.unsqueeze(1)) & ~eye, float("-inf"))
        b2a = b2a.masked_fill((ids_a.unsqueeze(0) == ids_a.unsqueeze(1)) & ~eye, float("-inf"))
    return 0.5 * (F.cross_entropy(a2b, labels) + F.cross_entropy(b2a, labels))
