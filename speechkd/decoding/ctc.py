"""CTC decoding."""

from __future__ import annotations

import torch

from speechkd.errors import SpeechkdError


def ctc_greedy_search(log_probs: torch.Tensor, lens: torch.Tensor, blank_id: int = 0) -> list[list[int]]:
    """Best-path CTC decoding: per frame argmax, collapse repeats, drop blanks.

    log_probs (N, T, V) (any monotone scores work), lens (N,) valid frames -> N token-id lists.
    """
    if log_probs.dim() != 3 or lens.dim() != 1 or lens.size(0) != log_probs.size(0):
        raise SpeechkdError(
            f"ctc_greedy_search: expected (N, T, V) and (N,), got {tuple(log_probs.shape)} and {tuple(lens.shape)}"
        )
    best = log_probs.argmax(dim=-1).cpu()  # (N, T)
    hyps = []
    for n, length in enumerate(lens.tolist()):
        path = torch.unique_consecutive(best[n, :length])
        hyps.append([int(t) for t in path.tolist() if t != blank_id])
    return hyps
