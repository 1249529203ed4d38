"""Brute-force RNN-T references for tests: explicit loops over (t, s) in float64, obviously correct, slow.

Every loss here is built from per-utterance arc tables ``blank_lp (T_b, S_b+1)`` (log-prob of blank at
frame t after s symbols) and ``symbol_lp (T_b, S_b)`` (log-prob of emitting symbol s at frame t after s
symbols), then :func:`lattice_log_likelihood` sums over all regular-RNN-T paths with the textbook
recursion. The tables are filled entry by entry with ``log_softmax`` of the joiner output at that (t, s)
("the obvious way"), independent of the vectorised code in :mod:`speechkd.losses.rnnt_portable`.
All functions are differentiable (autograd through the loops) so gradients can be compared too.
Use tiny sizes only (T, S <= ~10).
"""

from __future__ import annotations

import itertools
import math
from typing import Callable, List, Optional, Tuple

import torch
from torch import Tensor

NEG_INF = float("-inf")
ArcFn = Callable[[int, int, int], Tensor]  # (b, t, s) -> log-probs over the vocabulary (C,)


def lattice_log_likelihood(blank_lp: Tensor, symbol_lp: Tensor) -> Tensor:
    """Log-sum over all paths of one utterance; ``blank_lp (T, S+1)``, ``symbol_lp (T, S)`` -> scalar.

    ``alpha[t][s]`` = log-prob of having emitted ``s`` symbols and being on frame ``t``;
    the path ends with a blank on the last frame after all ``S`` symbols.
    """
    T, S1 = blank_lp.shape
    zero = blank_lp.new_zeros(())
    alpha: List[List[Tensor]] = [[zero.new_full((), NEG_INF) for _ in range(S1)] for _ in range(T)]
    for t in range(T):
        for s in range(S1):
            terms = []
            if t == 0 and s == 0:
                terms.append(zero)
            if t > 0:
                terms.append(alpha[t - 1][s] + blank_lp[t - 1, s])
            if s > 0:
                terms.append(alpha[t][s - 1] + symbol_lp[t, s - 1])
            alpha[t][s] = _log_add(terms)
    return alpha[T - 1][S1 - 1] + blank_lp[T - 1, S1 - 1]


def _log_add(terms: List[Tensor]) -> Tensor:
    """log(sum(exp(terms))), leaving -inf terms out so that autograd never sees exp(-inf - -inf)."""
    live = [x for x in terms if bool(torch.isfinite(x))]
    if not live:
        return terms[0].detach().new_full((), NEG_INF)
    return torch.logsumexp(torch.stack(live), dim=0)


def enumerate_log_likelihood(blank_lp: Tensor, symbol_lp: Tensor) -> float:
    """The same sum by listing every alignment (which frame each symbol is emitted on). Tiny sizes only.

    A regular-RNN-T alignment is a non-decreasing assignment of the ``S`` symbols to frames; each frame
    ends with one blank.
    """
    T, S1 = blank_lp.shape
    S = S1 - 1
    total = []
    for frames in itertools.combinations_with_replacement(range(T), S):
        score, s = 0.0, 0
        for t in range(T):
            while s < S and frames[s] == t:
                score += float(symbol_lp[t, s])
                s += 1
            score += float(blank_lp[t, s])
        total.append(score)
    peak = max(total)
    return peak + math.log(sum(math.exp(x - peak) for x in total))


def lengths_from_boundary(boundary: Optional[Tensor], B: int, S: int, T: int) -> List[Tuple[int, int]]:
    """``[(S_b, T_b)]`` per utterance from ``boundary (B, 4)``; ``(S, T)`` for all when None."""
    if boundary is None:
        return [(S, T)] * B
    return [(int(row[2]), int(row[3])) for row in boundary]


def _tables(arc: ArcFn, b: int, S_b: int, T_b: int, symbols: Tensor, blank: int) -> Tuple[Tensor, Tensor]:
    """Fill ``blank_lp (T_b, S_b+1)`` and ``symbol_lp (T_b, S_b)`` one (t, s) at a time."""
    blank_rows, symbol_rows = [], []
    for t in range(T_b):
        dists = [arc(b, t, s) for s in range(S_b + 1)]
        blank_rows.append(torch.stack([d[blank] for d in dists]))
        syms = [dists[s][symbols[b, s]] for s in range(S_b)]
        symbol_rows.append(torch.stack(syms) if syms else dists[0].new_zeros((0,)))
    return torch.stack(blank_rows), torch.stack(symbol_rows)


def _reduce(lls: List[Tensor], reduction: str) -> Tensor:
    losses = -torch.stack(lls)
    return {"none": losses, "sum": losses.sum(), "mean": losses.mean()}[reduction]


def _loss(arc: ArcFn, symbols: Tensor, blank: int, boundary: Optional[Tensor], T: int, reduction: str) -> Tensor:
    B, S = symbols.shape
    lls = []
    for b, (S_b, T_b) in enumerate(lengths_from_boundary(boundary, B, S, T)):
        blank_lp, symbol_lp = _tables(arc, b, S_b, T_b, symbols, blank)
        lls.append(lattice_log_likelihood(blank_lp, symbol_lp))
    return _reduce(lls, reduction)


def reference_rnnt_loss(
    logits: Tensor, symbols: Tensor, blank: int, boundary: Optional[Tensor] = None, reduction: str = "none"
) -> Tensor:
    """Full RNN-T loss from joiner logits ``(B, T, S+1, V)``."""
    def arc(b: int, t: int, s: int) -> Tensor:
        return torch.log_softmax(logits[b, t, s], dim=0)

    return _loss(arc, symbols, blank, boundary, logits.shape[1], reduction)


def reference_rnnt_loss_simple(
    lm: Tensor, am: Tensor, symbols: Tensor, blank: int, boundary: Optional[Tensor] = None, reduction: str = "none"
) -> Tensor:
    """Simple loss: joiner output ``lm[b, s] + am[b, t]``; ``lm (B, S+1, V)``, ``am (B, T, V)``."""
    def arc(b: int, t: int, s: int) -> Tensor:
        return torch.log_softmax(lm[b, s] + am[b, t], dim=0)

    return _loss(arc, symbols, blank, boundary, am.shape[1], reduction)


def reference_rnnt_loss_smoothed(
    lm: Tensor,
    am: Tensor,
    symbols: Tensor,
    blank: int,
    lm_only_scale: float,
    am_only_scale: float,
    boundary: Optional[Tensor] = None,
    reduction: str = "none",
) -> Tensor:
    """Smoothed simple loss: per (t, s), interpolate log-probs of the combined, LM-only and AM-only models.

    AM-only: ``p(v) ∝ softmax(am[b, t])[v] * unigram[v]`` with ``unigram`` = mean of ``softmax(lm[b', s'])``
    over all ``b'`` and all ``S+1`` positions (padding included, as k2 does).
    """
    B, S1, V = lm.shape
    unigram = torch.stack([torch.softmax(lm[b, s], dim=0) for b in range(B) for s in range(S1)]).mean(dim=0)
    combined_scale = 1.0 - lm_only_scale - am_only_scale

    def arc(b: int, t: int, s: int) -> Tensor:
        combined = torch.log_softmax(lm[b, s] + am[b, t], dim=0)
        lm_only = torch.log_softmax(lm[b, s], dim=0)
        am_only = torch.log_softmax(am[b, t] + unigram.log(), dim=0)
        return combined_scale * combined + lm_only_scale * lm_only + am_only_scale * am_only

    return _loss(arc, symbols, blank, boundary, am.shape[1], reduction)


def reference_rnnt_loss_pruned(
    logits: Tensor,
    symbols: Tensor,
    ranges: Tensor,
    blank: int,
    boundary: Optional[Tensor] = None,
    reduction: str = "none",
) -> Tensor:
    """Pruned loss: ``logits (B, T, s_range, V)`` hold the joiner output for symbol positions
    ``ranges (B, T, s_range)``; every arc from a position outside a frame's window has probability 0."""
    V = logits.shape[3]

    def arc(b: int, t: int, s: int) -> Tensor:
        hits = (ranges[b, t] == s).nonzero()
        if len(hits) == 0:
            return logits.new_full((V,), NEG_INF)
        return torch.log_softmax(logits[b, t, int(hits[0])], dim=0)

    return _loss(arc, symbols, blank, boundary, logits.shape[1], reduction)
