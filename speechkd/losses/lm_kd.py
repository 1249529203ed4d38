"""Losses of LM-to-CTC distillation on attention-decoder outputs: hard CE and top-k soft-label KL.

For valid token ``(n, u)`` (``u < lens[n]``), student log-probabilities ``log q (V,)`` and the teacher's top-k
ids ``i_1..i_k`` with probabilities ``p_1..p_k`` (renormalised over the k, so they sum to 1)::

    ce[n, u] = -log q[y_{n,u}]
    kl[n, u] = sum_j p_j (log p_j - log q[i_j])          (KL(p || q) with p supported on its top-k)

Both are summed over valid tokens (the task's convention: losses summed over the batch). Padding
positions contribute nothing, whatever their values; computations run in float32.
"""

from __future__ import annotations

import torch
from torch import Tensor

from speechkd.losses.layerwise import valid_frame_mask


def token_ce(logits: Tensor, tokens: Tensor, lens: Tensor) -> Tensor:
    """logits (N, U, V), tokens (N, U) (any value past lens), lens (N,) -> summed CE over valid tokens."""
    logq = logits.float().log_softmax(dim=-1)
    mask = valid_frame_mask(lens, tokens.size(1))
    picked = logq.gather(-1, tokens.clamp(min=0).unsqueeze(-1)).squeeze(-1)  # (N, U)
    return -(picked * mask).sum()


def topk_kl(logits: Tensor, topk_ids: Tensor, topk_probs: Tensor, lens: Tensor) -> Tensor:
    """logits (N, U, V), topk_ids (N, U, k), topk_probs (N, U, k), lens (N,) -> summed KL over valid tokens."""
    logq = logits.float().log_softmax(dim=-1)
    mask = valid_frame_mask(lens, topk_ids.size(1))
    p = topk_probs.float() * mask.unsqueeze(-1)
    logq_k = logq.gather(-1, topk_ids.clamp(min=0).long())  # (N, U, k)
    return (p * (torch.log(p.clamp(min=1e-30)) - logq_k)).sum()
