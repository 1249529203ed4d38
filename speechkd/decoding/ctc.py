"""CTC decoding."""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any, Optional

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


def _logaddexp(a: float, b: float) -> float:
    if a == -math.inf:
        return b
    if b == -math.inf:
        return a
    m = max(a, b)
    return m + math.log1p(math.exp(-abs(a - b)))


def ctc_prefix_beam_search(
    log_probs: torch.Tensor,
    lens: torch.Tensor,
    beam: int = 8,
    blank_id: int = 0,
    lm: Optional[Any] = None,
    lm_weight: float = 0.0,
    insertion_bonus: float = 0.0,
    token_beam: Optional[int] = None,
) -> list[list[int]]:
    """CTC prefix beam search with optional shallow fusion of a token LM (Hannun et al., 2014).

    log_probs (N, T, V), lens (N,) -> N token lists. Each prefix keeps its blank-ending and
    non-blank-ending log-probabilities; a new token adds ``lm_weight * lm.log_prob(prefix, token) +
    insertion_bonus`` (``lm``: anything with ``log_prob(context, token)`` and ``eos_id``, e.g.
    :class:`speechkd.decoding.ngram.TokenNgramLm`); at the end ``lm_weight * log P(</s> | prefix)`` is added.
    Per frame only the ``token_beam`` (default ``beam``) most likely tokens extend prefixes.
    """
    if beam < 1:
        raise SpeechkdError(f"beam must be >= 1, got {beam}")
    token_beam = token_beam or beam
    lp_all = log_probs.float().cpu()
    out = []
    for n in range(lp_all.size(0)):
        out.append(_prefix_search(lp_all[n, : int(lens[n])], beam, blank_id, lm, lm_weight, insertion_bonus, token_beam))
    return out


def _prefix_search(lp: torch.Tensor, beam: int, blank: int, lm: Any, lm_weight: float, bonus: float,
                   token_beam: int) -> list[int]:
    """One utterance, lp (T, V)."""
    neg = -math.inf
    beams: dict[tuple[int, ...], tuple[float, float]] = {(): (0.0, neg)}  # prefix -> (p_blank, p_nonblank)
    fused: dict[tuple[int, ...], float] = {(): 0.0}  # prefix -> accumulated LM score + bonuses
    top_v, top_i = lp.topk(min(token_beam, lp.size(1)), dim=-1)
    for t in range(lp.size(0)):
        frame = lp[t].tolist()
        cands = [i for i in top_i[t].tolist() if i != blank]
        nxt: dict[tuple[int, ...], list[float]] = defaultdict(lambda: [neg, neg])
        for prefix, (pb, pnb) in beams.items():
            total = _logaddexp(pb, pnb)
            e = nxt[prefix]
            e[0] = _logaddexp(e[0], total + frame[blank])
            last = prefix[-1] if prefix else None
            for c in cands:
                new = prefix + (c,)
                if new not in fused:
                    lm_score = lm_weight * lm.log_prob(prefix, c) if lm is not None and lm_weight else 0.0
                    fused[new] = fused[prefix] + lm_score + bonus
                en = nxt[new]
                if c == last:
                    en[1] = _logaddexp(en[1], pb + frame[c])
                    e[1] = _logaddexp(e[1], pnb + frame[c])  # repeat without blank: same prefix
                else:
                    en[1] = _logaddexp(en[1], total + frame[c])
        ranked = sorted(nxt.items(), key=lambda kv: _logaddexp(*kv[1]) + fused[kv[0]], reverse=True)
        beams = {p: (v[0], v[1]) for p, v in ranked[:beam]}

    def final(p: tuple[int, ...]) -> float:
        end = lm_weight * lm.log_prob(p, lm.eos_id) if lm is not None and lm_weight else 0.0
        return _logaddexp(*beams[p]) + fused[p] + end

    return list(max(beams, key=final))
