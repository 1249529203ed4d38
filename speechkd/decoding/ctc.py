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


def ctc_emitted_tokens(log_probs: torch.Tensor, lens: torch.Tensor, blank_id: int = 0) -> torch.Tensor:
    """Number of tokens best-path CTC decoding emits per utterance, on the tensors' device (no sync).

    log_probs (N, T, V), lens (N,) valid frames -> (N,) int64; equals
    ``[len(h) for h in ctc_greedy_search(log_probs, lens, blank_id)]``.
    """
    best = log_probs.argmax(dim=-1)  # (N, T)
    valid = torch.arange(best.size(1), device=best.device)[None, :] < lens.to(best.device)[:, None]
    prev = torch.nn.functional.pad(best[:, :-1], (1, 0), value=blank_id)  # (N, T): label of the previous frame
    starts = (best != blank_id) & (best != prev) & valid
    return starts.sum(dim=1)
