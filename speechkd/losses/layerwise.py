"""Layer-wise distillation loss of DistilHuBERT: L1 + cosine, per prediction head.

For head ``h``, valid frame ``(n, t)`` (``t < lens[n]``), student vector ``s`` and teacher vector ``y``
(both ``D``-dim)::

    l1[h, n, t]  = mean_d |s_d - y_d|
    cos[h, n, t] = cos(s, y)
    L_h          = l1_weight * sum_{n,t valid} l1[h, n, t] / F
                 - cos_weight * sum_{n,t valid} log(sigmoid(cos[h, n, t])) / F

where ``F = sum_n lens[n]`` is the number of valid frames in the batch (every valid frame weighs the
same; longer utterances count more). The returned loss is the mean over heads ``(1/H) sum_h L_h``.
s3prl's reference (``DistillerForPretrain.compute_loss``) takes ``.mean()`` of the L1 map ``(B, H, T, D)``
and of the ``-logsigmoid(cos)`` map ``(B, H, T)``: also a mean over heads, frames and (for L1) feature
dimensions, but over the *padded* ``T``, so its padding frames count. Here padding frames contribute
nothing, whatever their values; without padding the two losses are equal. The teacher side is a constant target
(detached). The computation runs in float32 even for half-precision inputs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from speechkd.errors import SpeechkdError

#: Guards the cosine against zero-norm vectors (``torch.nn.functional.cosine_similarity``'s ``eps``).
DEFAULT_COS_EPS = 1e-8


def valid_frame_mask(lens: Tensor, max_len: int) -> Tensor:
    """``(N,)`` lengths -> ``(N, max_len)`` bool mask, True on valid frames."""
    return torch.arange(max_len, device=lens.device)[None, :] < lens[:, None]


def _check_inputs(student: Tensor, teacher: Tensor, lens: Tensor) -> None:
    if student.dim() != 4 or student.shape != teacher.shape:
        raise SpeechkdError(
            f"layerwise_distill_loss expects student heads and teacher layers of the same (N, H, T, D) "
            f"shape, got {tuple(student.shape)} and {tuple(teacher.shape)}"
        )
    n, _, t, _ = student.shape
    if lens.shape != (n,):
        raise SpeechkdError(f"lens must have shape ({n},), got {tuple(lens.shape)}")
    if bool((lens < 0).any()) or bool((lens > t).any()):
        raise SpeechkdError(f"lens {lens.tolist()} outside [0, {t}] (time axis of the heads)")
    if int(lens.sum()) == 0:
        raise SpeechkdError("layerwise_distill_loss got a batch without any valid frame (all lens are 0)")


def layerwise_distill_loss(
    student_heads: Tensor,
    teacher_layers: Tensor,
    lens: Tensor,
    cos_weight: float = 1.0,
    l1_weight: float = 1.0,
    cos_eps: float = DEFAULT_COS_EPS,
) -> tuple[Tensor, dict[str, Tensor]]:
    """DistilHuBERT loss (see the module docstring for the exact formula).

    Args:
        student_heads: ``(N, H, T, D)`` prediction-head outputs.
        teacher_layers: ``(N, H, T, D)`` target teacher hidden states (same frame grid).
        lens: ``(N,)`` valid frames per utterance.
        cos_weight: ``lambda`` of the ``-log sigmoid(cos)`` term.
        l1_weight: weight of the L1 term.

    Returns:
        ``(loss, info)``: scalar loss (mean over heads) and detached per-head diagnostics ``(H,)``:
        ``l1`` (mean abs error), ``cos`` (mean cosine similarity), ``cos_loss`` (mean
        ``-log sigmoid(cos)``), ``head_loss`` (``L_h``); plus ``num_frames`` (scalar).
    """
    _check_inputs(student_heads, teacher_layers, lens)
    student = student_heads.float()
    teacher = teacher_layers.detach().float()
    mask = valid_frame_mask(lens, student.shape[2])[:, None, :]  # (N, 1, T)
    num_frames = lens.sum().to(student.dtype)

    l1 = (student - teacher).abs().mean(dim=-1)  # (N, H, T)
    cos = F.cosine_similarity(student, teacher, dim=-1, eps=cos_eps)  # (N, H, T)
    cos_loss = -F.logsigmoid(cos)

    def masked_mean(x: Tensor) -> Tensor:  # (N, H, T) -> (H,)
        return torch.where(mask, x, torch.zeros_like(x)).sum(dim=(0, 2)) / num_frames

    l1_h, cos_h, cos_loss_h = masked_mean(l1), masked_mean(cos), masked_mean(cos_loss)
    head_loss = l1_weight * l1_h + cos_weight * cos_loss_h
    loss = head_loss.mean()
    info = {
        "l1": l1_h.detach(),
        "cos": cos_h.detach(),
        "cos_loss": cos_loss_h.detach(),
        "head_loss": head_loss.detach(),
        "num_frames": num_frames.detach(),
    }
    return loss, info

