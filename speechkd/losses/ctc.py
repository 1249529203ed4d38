"""CTC loss on ``torch.nn.functional.ctc_loss`` with batch-first inputs and token-list targets.

An utterance is *feasible* when its frames can hold the targets: ``T >= U + (number of adjacent repeated
tokens)`` (a blank must separate repeats). Infeasible utterances have infinite loss; use
:func:`ctc_feasible` to filter them out and count them (callers log the count) rather than letting an
``inf`` reach the optimiser.
"""

from __future__ import annotations

from typing import List, Sequence

import torch
from torch import Tensor

from speechkd.errors import SpeechkdError

REDUCTIONS = ("none", "sum", "mean")


def _repeats(tokens: Sequence[int]) -> int:
    return sum(1 for a, b in zip(tokens, tokens[1:]) if a == b)


def ctc_min_frames(targets: List[List[int]]) -> Tensor:
    """Fewest frames each target needs, ``U + adjacent repeats``, as ``(N,)`` int64."""
    return torch.tensor([len(t) + _repeats(t) for t in targets], dtype=torch.int64)


def ctc_feasible(log_prob_lens: Tensor, targets: List[List[int]]) -> Tensor:
    """``(N,)`` bool on ``log_prob_lens``' device: whether ``log_prob_lens[n] >= U_n + repeats_n``."""
    if len(targets) != log_prob_lens.shape[0]:
        raise ValueError(f"{len(targets)} targets for {log_prob_lens.shape[0]} utterances")
    return log_prob_lens >= ctc_min_frames(targets).to(log_prob_lens.device)


def _check(log_probs: Tensor, log_prob_lens: Tensor, targets: List[List[int]], blank: int) -> None:
    if log_probs.ndim != 3:
        raise ValueError(f"log_probs must be (N, T, V), got {tuple(log_probs.shape)}")
    N, T, V = log_probs.shape
    if log_prob_lens.shape != (N,) or len(targets) != N:
        raise ValueError(
            f"need log_prob_lens ({N},) and {N} targets, got {tuple(log_prob_lens.shape)} and {len(targets)}"
        )
    if N and int(log_prob_lens.max()) > T:
        raise ValueError(f"log_prob_lens max {int(log_prob_lens.max())} > T = {T}")
    for n, tokens in enumerate(targets):
        bad = [tok for tok in tokens if tok == blank or not 0 <= tok < V]
        if bad:
            raise SpeechkdError(
                f"CTC target {n} has token ids {bad[:5]} that are the blank ({blank}) or outside [0, {V})"
            )


def ctc_loss(
    log_probs: Tensor,
    log_prob_lens: Tensor,
    targets: List[List[int]],
    blank: int = 0,
    reduction: str = "sum",
    zero_infinity: bool = False,
) -> Tensor:
    """CTC negative log-likelihood.

    Args:
        log_probs: ``(N, T, V)`` log-softmax outputs. log_prob_lens: ``(N,)`` int64 valid frames.
        targets: token ids per utterance, without blanks. blank: blank id.
        reduction: ``"sum"`` (total over utterances), ``"mean"`` (total / N; note: not torch's per-token
            mean) or ``"none"`` (``(N,)``).
        zero_infinity: give infeasible utterances loss 0 (and gradient 0) instead of ``inf``.
    Returns:
        scalar, or ``(N,)`` for ``reduction="none"``.
    """
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    _check(log_probs, log_prob_lens, targets, blank)
    flat = torch.tensor([tok for tokens in targets for tok in tokens], dtype=torch.int64, device=log_probs.device)
    target_lens = torch.tensor([len(t) for t in targets], dtype=torch.int64, device=log_probs.device)
    per_utt = torch.nn.functional.ctc_loss(
        log_probs.transpose(0, 1),  # (T, N, V)
        flat,
        log_prob_lens.to(log_probs.device),
        target_lens,
        blank=blank,
        reduction="none",
        zero_infinity=zero_infinity,
    )
    if reduction == "none":
        return per_utt
    total = per_utt.sum()
    return total if reduction == "sum" else total / max(len(targets), 1)
