"""MVQ-KD codebook loss: per-codebook cross entropy of predicted teacher codebook indexes.

Frame-rate mismatch is resolved explicitly by :func:`stack_teacher_frames`: with a teacher at 50 Hz and a
student at 25 Hz (``factor = 2``), each student frame predicts the indexes of ``factor`` successive teacher
frames, i.e. ``factor * num_codebooks`` targets.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100


def stack_teacher_frames(targets: torch.Tensor, factor: int, num_frames: int) -> torch.Tensor:
    """Group ``factor`` successive teacher frames per student frame.

    Args:
        targets: ``(N, T_t, C)`` int64 indexes, :data:`IGNORE_INDEX` on padding.
        factor: teacher frames per student frame (>= 1).
        num_frames: student frames ``T_s``; missing teacher frames become :data:`IGNORE_INDEX`, extra
            ones are dropped.

    Returns:
        ``(N, T_s, factor * C)``: student frame ``t`` holds teacher frames ``factor*t .. factor*t+factor-1``.
    """
    n, t_t, c = targets.shape
    want = num_frames * factor
    if t_t < want:
        pad = targets.new_full((n, want - t_t, c), IGNORE_INDEX)
        targets = torch.cat([targets, pad], dim=1)
    return targets[:, :want].reshape(n, num_frames, factor * c)


def codebook_loss(logits: torch.Tensor, targets: torch.Tensor, lens: torch.Tensor) -> torch.Tensor:
    """Summed cross entropy over codebooks and valid frames.

    Args:
        logits: ``(N, T, K, V)`` predictions for ``K`` codebook targets of ``V`` entries each.
        targets: ``(N, T, K)`` int64 indexes, :data:`IGNORE_INDEX` where there is no target.
        lens: ``(N,)`` valid student frames; later frames are ignored.

    Returns:
        Scalar: the sum over every non-ignored (frame, codebook) of ``-log p(index)``.
    """
    valid = torch.arange(targets.size(1), device=targets.device)[None, :] < lens[:, None]  # (N, T)
    targets = targets.masked_fill(~valid[:, :, None], IGNORE_INDEX)
    return F.cross_entropy(
        logits.reshape(-1, logits.size(-1)).float(), targets.reshape(-1), ignore_index=IGNORE_INDEX, reduction="sum"
    )
