"""Portable (plain PyTorch, CPU and CUDA, no compile step) pruned RNN-T, same semantics as k2.

Notation (as in k2): ``B`` batch, ``T`` frames, ``S`` symbols (longest label sequence), ``C`` vocabulary
(the joiner's output size), ``s_range`` symbols kept per frame by pruning. The regular RNN-T topology is
used: any number of symbols may be emitted on a frame and one blank (``termination_symbol``) moves to the
next frame. Everything reduces to the "mutual information" recursion over a lattice of (s, t) states::

    p[b, 0, 0] = 0
    p[b, s, t] = logaddexp(p[b, s-1, t] + px[b, s-1, t],   # emit symbol s-1 on frame t
                           p[b, s, t-1] + py[b, s, t-1])   # emit blank on frame t-1
    score[b]   = p[b, S_b, T_b]

with ``px (B, S, T+1)`` (``px[b, :, T_b] = -inf``: no symbol after the last frame) and ``py (B, S+1, T)``.
``boundary (B, 4)`` rows are ``[0, 0, S_b, T_b]``; a non-zero begin symbol/frame is not supported here.

How it is computed (:class:`_MutualInformation`): one step per symbol row ``s`` (``S+1`` steps, each
vectorised over ``(B, T+1)``). Within a row the time recursion is linear in the probability domain, so it
is solved as a log-space scan: ``p[s, t] = c[t] + logcumsumexp(a - c)[t]`` where ``a = p[s-1] + px[s-1]``
and ``c`` is the prefix sum of the row's blank scores. The backward pass is hand written: the same scan
runs backwards to get ``beta`` and the gradients are the occupation probabilities
``exp(alpha + px + beta - score)``; they double as the ``return_grad`` output used for pruning.
Rows whose finite blank scores are not one contiguous run of frames (they are, for every input made by
this module) are rejected, because the scan would otherwise bridge a ``-inf``.

Memory (float elements, besides the inputs): the recursion keeps ``alpha`` and, in backward, ``beta``, each
``(B, S+1, T+1)``, plus the ``(B, S, T+1)``/``(B, S+1, T)`` gradients. ``rnnt_loss_simple``/``_smoothed``
add ``O(B*(S+1)*T)`` for px/py and ``O(B*(T+S+1)*C)`` for exp'd copies of ``am``/``lm``; symbol scores
are gathered on ``(B, T, C)`` directly (never through a ``(B, S, T, C)`` view). ``rnnt_loss_pruned`` takes
``(B, T, s_range, C)`` logits and allocates one more tensor of that size for their gradient (from the
log-normaliser), never ``(B, T, S+1, C)``. ``rnnt_loss`` takes full ``(B, T, S+1, C)`` logits and its
backward allocates a gradient of the same size.

Numerics: the scan subtracts prefix sums of blank log-probabilities, so the absolute error of ``p`` is
about ``eps * |sum of a row's blank scores|`` (about 1e-4 for a 1000-nat row in float32). Use float64
inputs when that matters (the tests do).
"""

from __future__ import annotations

import logging
from typing import Optional, Tuple, Union

import torch
from torch import Tensor

LOG = logging.getLogger(__name__)
NEG_INF = float("-inf")
REDUCTIONS = ("none", "mean", "sum")

LossOut = Union[Tensor, Tuple[Tensor, Tuple[Tensor, Tensor]]]


# ----------------------------------------------------------------------------------------------------
# small helpers
# ----------------------------------------------------------------------------------------------------
def _reduce(negated: Tensor, reduction: str) -> Tensor:
    """Loss from per-utterance log-likelihoods ``negated (B,)`` ("mean" is over utterances, as in k2)."""
    if reduction == "none":
        return -negated
    if reduction == "mean":
        return -torch.mean(negated)
    if reduction == "sum":
        return -torch.sum(negated)
    raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")


def default_boundary(B: int, S: int, T: int, device: torch.device) -> Tensor:
    """The boundary k2 assumes when none is given: rows ``[0, 0, S, T]``, shape ``(B, 4)`` int64."""
    row = torch.tensor([0, 0, S, T], dtype=torch.int64, device=device)
    return row.expand(B, 4).clone()


def _check_boundary(boundary: Tensor, B: int, S: int, T: int) -> None:
    if boundary.shape != (B, 4):
        raise ValueError(f"boundary must have shape ({B}, 4), got {tuple(boundary.shape)}")
    if bool((boundary[:, :2] != 0).any()):
        raise ValueError("portable backend: boundary begin symbol/frame (columns 0, 1) must be 0")
    s_end, t_end = boundary[:, 2], boundary[:, 3]
    if bool(((s_end < 0) | (s_end > S) | (t_end < 1) | (t_end > T)).any()):
        raise ValueError(f"boundary out of range: need 0 <= S_b <= {S} and 1 <= T_b <= {T}, got {boundary.tolist()}")


def fix_for_boundary(px: Tensor, boundary: Optional[Tensor]) -> Tensor:
    """Set ``px[b, :, T_b] = -inf`` (no symbol after the last frame). ``px (B, S, T+1)``, not in place."""
    if boundary is None:
        return px
    B, S, T1 = px.shape
    frames = torch.arange(T1, device=px.device).view(1, 1, T1)
    return px.masked_fill(frames == boundary[:, 3].view(B, 1, 1), NEG_INF)


def _append_neg_inf_frame(px: Tensor) -> Tensor:
    """``(B, S, T) -> (B, S, T+1)`` with ``-inf`` in the extra frame."""
    B, S, _ = px.shape
    return torch.cat((px, px.new_full((B, S, 1), NEG_INF)), dim=2)


def _gather_symbol_scores(x: Tensor, symbols: Tensor) -> Tensor:
    """``x (B, T, C)``, ``symbols (B, S)`` -> ``x[b, t, symbols[b, s]]`` as ``(B, S, T)``.

    Gathers on ``(B, T, C)`` directly: the backward is a scatter-add into ``(B, T, C)``.
    """
    B, T, _ = x.shape
    S = symbols.shape[1]
    return torch.gather(x, 2, symbols.unsqueeze(1).expand(B, T, S)).transpose(1, 2)


# ----------------------------------------------------------------------------------------------------
# the recursion
# ----------------------------------------------------------------------------------------------------
def _finite_runs(pyp: Tensor) -> Tuple[Tensor, Tensor]:
    """First and last finite frame of each row of ``pyp (B, S+1, T+1)`` as ``(B, S+1)`` each.

    Rows without a finite entry get ``first = T+1, last = -1``. Raises if a row's finite entries are not
    one contiguous run.
    """
    T1 = pyp.shape[2]
    finite = torch.isfinite(pyp)
    frames = torch.arange(T1, device=pyp.device)
    first = torch.where(finite, frames, T1).amin(dim=2)
    last = torch.where(finite, frames, -1).amax(dim=2)
    count = finite.sum(dim=2)
    bad = (count > 0) & (count != last - first + 1)
    if bool(bad.any()):
        b, s = [int(i) for i in bad.nonzero()[0]]
        raise ValueError(f"py[{b}, {s}, :] has -inf between finite frames; the portable scan needs one run")
    return first, last


def _prepare(px: Tensor, py: Tensor, boundary: Tensor) -> dict:
    """Masks and prefix sums shared by the forward and backward scans (no autograd)."""
    B, S1, T = py.shape
    device = py.device
    frames = torch.arange(T + 1, device=device).view(1, 1, T + 1)
    rows = torch.arange(S1, device=device).view(1, S1, 1)
    t_end = boundary[:, 3].view(B, 1, 1)
    s_end = boundary[:, 2].view(B, 1, 1)
    # blank scores with a -inf frame T; blanks on/after the last frame and rows above S_b are cut, so
    # nothing outside the lattice [0, S_b] x [0, T_b] reaches the end state.
    pyp = torch.cat((py, py.new_full((B, S1, 1), NEG_INF)), dim=2)
    pyp = pyp.masked_fill((frames >= t_end) | (rows > s_end), NEG_INF)
    first, last = _finite_runs(pyp)
    blank_ok = torch.isfinite(pyp)  # (B, S1, T+1): blank allowed from frame t
    # cs[t] = sum of the row's blank scores on frames < t (zeros where -inf; runs make this exact)
    zero_pad = py.new_zeros((B, S1, 1))
    cs = torch.cat((zero_pad, torch.cumsum(torch.nan_to_num(pyp[:, :, :T], neginf=0.0), dim=2)), dim=2)
    return {
        "pyp": pyp,
        "cs": cs,
        "blank_ok": blank_ok,
        "came_by_blank": torch.cat((blank_ok.new_zeros((B, S1, 1)), blank_ok[:, :, :T]), dim=2),
        "from_first": frames >= first.unsqueeze(2),  # scan may start at frame t
        "to_last": frames <= (last + 1).unsqueeze(2),  # scan may end at frame t
        "end_state": (rows == s_end) & (frames == t_end),
    }


def _forward_scan(px: Tensor, prep: dict) -> Tensor:
    """``alpha (B, S+1, T+1)``: ``alpha[b, s, t]`` = log-sum over paths from (0, 0) to (s, t)."""
    cs, from_first, came = prep["cs"], prep["from_first"], prep["came_by_blank"]
    B, S1, T1 = cs.shape
    alpha = cs.new_empty((B, S1, T1))
    a = cs.new_full((B, T1), NEG_INF)
    a[:, 0] = 0.0
    for s in range(S1):
        if s > 0:
            a = alpha[:, s - 1] + px[:, s - 1]
        x = torch.where(from_first[:, s], a - cs[:, s], NEG_INF)
        scanned = cs[:, s] + torch.logcumsumexp(x, dim=1)
        alpha[:, s] = torch.where(came[:, s], scanned, a)
    return alpha


def _backward_scan(px: Tensor, prep: dict) -> Tensor:
    """``beta (B, S+1, T+1)``: ``beta[b, s, t]`` = log-sum over paths from (s, t) to (S_b, T_b).

    Runs in reversed time (inputs flipped once) so each row is one forward ``logcumsumexp``.
    """
    def rev(x: Tensor) -> Tensor:
        return torch.flip(x, dims=(2,))

    cs, to_last = rev(prep["cs"]), rev(prep["to_last"])
    blank_ok, end = rev(prep["blank_ok"]), rev(prep["end_state"])
    px_r = rev(px)
    B, S1, T1 = cs.shape
    beta = cs.new_empty((B, S1, T1))  # reversed time
    for s in range(S1 - 1, -1, -1):
        e = beta[:, s + 1] + px_r[:, s] if s + 1 < S1 else cs.new_full((B, T1), NEG_INF)
        e = torch.where(end[:, s], 0.0, e)
        y = torch.where(to_last[:, s], e + cs[:, s], NEG_INF)
        beta[:, s] = torch.where(blank_ok[:, s], torch.logcumsumexp(y, dim=1) - cs[:, s], e)
    return rev(beta)


def _occupation(px: Tensor, pyp: Tensor, alpha: Tensor, beta: Tensor, score: Tensor) -> Tuple[Tensor, Tensor]:
    """Posterior probability of each px/py arc: ``(B, S, T+1)`` and ``(B, S+1, T)``; 0 where impossible."""
    T = pyp.shape[2] - 1
    ref = score.view(-1, 1, 1)
    lpx = alpha[:, :-1] + px + beta[:, 1:] - ref
    lpy = alpha[:, :, :T] + pyp[:, :, :T] + beta[:, :, 1:] - ref
    px_grad = torch.where(torch.isfinite(lpx), lpx.exp(), 0.0)
    py_grad = torch.where(torch.isfinite(lpy), lpy.exp(), 0.0)
    return px_grad, py_grad


class _MutualInformation(torch.autograd.Function):
    """Scores ``(B,)`` of the recursion with a hand-written backward (occupation probabilities)."""

    @staticmethod
    def forward(ctx, px: Tensor, py: Tensor, boundary: Tensor, return_grad: bool):  # type: ignore[override]
        prep = _prepare(px, py, boundary)
        alpha = _forward_scan(px, prep)
        B = px.shape[0]
        score = alpha[torch.arange(B, device=px.device), boundary[:, 2], boundary[:, 3]]
        grads: Tuple[Optional[Tensor], Optional[Tensor]] = (None, None)
        if return_grad:
            beta = _backward_scan(px, prep)
            grads = _occupation(px, prep["pyp"], alpha, beta, score)
            ctx.save_for_backward(*grads)
            ctx.mark_non_differentiable(*grads)
        else:
            ctx.save_for_backward(px, prep["pyp"], alpha, score)
        ctx.return_grad = return_grad
        ctx.prep = prep if not return_grad else None
        return score, grads[0], grads[1]

    @staticmethod
    def backward(ctx, score_grad: Tensor, *_unused):  # type: ignore[override]
        if ctx.return_grad:
            px_occ, py_occ = ctx.saved_tensors
        else:
            px, pyp, alpha, score = ctx.saved_tensors
            beta = _backward_scan(px, ctx.prep)
            px_occ, py_occ = _occupation(px, pyp, alpha, beta, score)
        scale = score_grad.view(-1, 1, 1)
        return px_occ * scale, py_occ * scale, None, None


def mutual_information_recursion(
    px: Tensor, py: Tensor, boundary: Optional[Tensor] = None, return_grad: bool = False
) -> Union[Tensor, Tuple[Tensor, Tuple[Tensor, Tensor]]]:
    """Scores of the regular-RNN-T recursion (see the module docstring), differentiable in px and py.

    Args:
        px: ``(B, S, T+1)`` symbol arc log-probs. py: ``(B, S+1, T)`` blank arc log-probs.
        boundary: ``(B, 4)`` int64 rows ``[0, 0, S_b, T_b]``; None means ``[0, 0, S, T]``.
        return_grad: also return ``(px_grad, py_grad)``, the occupation probabilities (what
            ``torch.autograd.grad(scores.sum(), [px, py])`` would give), computed in the forward pass.
    Returns:
        ``scores (B,)`` or ``(scores, (px_grad, py_grad))``.
    """
    B, S1, T = py.shape
    if px.shape != (B, S1 - 1, T + 1):
        raise ValueError(
            f"px must be (B, S, T+1) = {(B, S1 - 1, T + 1)} for py {tuple(py.shape)}, got {tuple(px.shape)}"
        )
    if boundary is None:
        boundary = default_boundary(B, S1 - 1, T, px.device)
    _check_boundary(boundary, B, S1 - 1, T)
    score, px_grad, py_grad = _MutualInformation.apply(px, py, boundary, return_grad)
    return (score, (px_grad, py_grad)) if return_grad else score


# ----------------------------------------------------------------------------------------------------
# px / py builders
# ----------------------------------------------------------------------------------------------------
def _check_lm_am(lm: Tensor, am: Tensor, symbols: Tensor) -> Tuple[int, int, int, int]:
    if lm.ndim != 3 or am.ndim != 3 or lm.shape[0] != am.shape[0] or lm.shape[2] != am.shape[2]:
        raise ValueError(f"need lm (B, S+1, C) and am (B, T, C), got {tuple(lm.shape)} and {tuple(am.shape)}")
    B, T, C = am.shape
    S = lm.shape[1] - 1
    if symbols.shape != (B, S):
        raise ValueError(f"symbols must be (B, S) = {(B, S)} for lm {tuple(lm.shape)}, got {tuple(symbols.shape)}")
    return B, S, T, C


def _combined_normalizers(lm: Tensor, am: Tensor) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """``log sum_c exp(lm[b, s, c] + am[b, t, c])`` as ``(B, S+1, T)``, plus the max-shifted exps.

    Returns ``(normalizers, lm_probs (B,S+1,C), am_probs (B,T,C), lm_max (B,S+1,1), am_max (B,T,1))``.
    """
    lm_max = lm.amax(dim=2, keepdim=True).detach()
    am_max = am.amax(dim=2, keepdim=True).detach()
    lm_probs = (lm - lm_max).exp()
    am_probs = (am - am_max).exp()
    tiny = torch.finfo(lm.dtype).tiny
    normalizers = (torch.matmul(lm_probs, am_probs.transpose(1, 2)) + tiny).log()
    return normalizers + lm_max + am_max.transpose(1, 2), lm_probs, am_probs, lm_max, am_max


def get_rnnt_logprobs(
    lm: Tensor, am: Tensor, symbols: Tensor, termination_symbol: int, boundary: Optional[Tensor] = None
) -> Tuple[Tensor, Tensor]:
    """px ``(B, S, T+1)``, py ``(B, S+1, T)`` of the simple (additive joiner) RNN-T: logits = lm + am."""
    B, S, T, C = _check_lm_am(lm, am, symbols)
    normalizers, *_ = _combined_normalizers(lm, am)
    px_am = _gather_symbol_scores(am, symbols)  # (B, S, T)
    px_lm = torch.gather(lm[:, :S], 2, symbols.unsqueeze(-1))  # (B, S, 1)
    px = px_am + px_lm - normalizers[:, :S]
    py = am[:, :, termination_symbol].unsqueeze(1) + lm[:, :, termination_symbol].unsqueeze(2) - normalizers
    return fix_for_boundary(_append_neg_inf_frame(px), boundary), py


def get_rnnt_logprobs_smoothed(
    lm: Tensor,
    am: Tensor,
    symbols: Tensor,
    termination_symbol: int,
    lm_only_scale: float,
    am_only_scale: float,
    boundary: Optional[Tensor] = None,
) -> Tuple[Tensor, Tensor]:
    """px/py interpolating the combined, LM-only and AM-only (unigram-LM) log-probs, as in k2.

    ``score = (1 - lm_only_scale - am_only_scale) * combined + lm_only_scale * log_softmax(lm)
    + am_only_scale * log(softmax(am) * unigram / normaliser)`` per arc, where ``unigram (C,)`` is the
    mean over batch and positions of ``softmax(lm)``. Shapes as in :func:`get_rnnt_logprobs`.
    """
    B, S, T, C = _check_lm_am(lm, am, symbols)
    tiny = torch.finfo(lm.dtype).tiny
    normalizers, lm_probs, am_probs, lm_max, am_max = _combined_normalizers(lm, am)
    lm_sums = lm_probs.sum(dim=2, keepdim=True)  # (B, S+1, 1)
    unigram = torch.mean(lm_probs / lm_sums, dim=(0, 1)) + tiny  # (C,)
    amonly_norm = ((am_probs @ unigram).unsqueeze(2).log() + am_max).transpose(1, 2)  # (B, 1, T)
    lmonly_norm = lm_sums.log() + lm_max  # (B, S+1, 1)
    log_unigram = unigram.log()

    px_am = _gather_symbol_scores(am, symbols)  # (B, S, T)
    px_lm = torch.gather(lm[:, :S], 2, symbols.unsqueeze(-1))  # (B, S, 1)
    px = px_am + px_lm - normalizers[:, :S]
    px_amonly = px_am + log_unigram[symbols].unsqueeze(-1) - amonly_norm
    px_lmonly = px_lm - lmonly_norm[:, :S]

    py_am = am[:, :, termination_symbol].unsqueeze(1)  # (B, 1, T)
    py_lm = lm[:, :, termination_symbol].unsqueeze(2)  # (B, S+1, 1)
    py = py_am + py_lm - normalizers
    py_amonly = py_am + log_unigram[termination_symbol] - amonly_norm
    py_lmonly = py_lm - lmonly_norm

    combined_scale = 1.0 - lm_only_scale - am_only_scale
    px_i = px * combined_scale + px_lmonly * lm_only_scale + px_amonly * am_only_scale
    py_i = py * combined_scale + py_lmonly * lm_only_scale + py_amonly * am_only_scale
    return fix_for_boundary(_append_neg_inf_frame(px_i), boundary), py_i


def get_rnnt_logprobs_joint(
    logits: Tensor, symbols: Tensor, termination_symbol: int, boundary: Optional[Tensor] = None
) -> Tuple[Tensor, Tensor]:
    """px ``(B, S, T+1)``, py ``(B, S+1, T)`` from full joiner logits ``(B, T, S+1, C)``."""
    if logits.ndim != 4:
        raise ValueError(f"logits must be (B, T, S+1, C), got {tuple(logits.shape)}")
    B, T, S1, C = logits.shape
    S = S1 - 1
    if symbols.shape != (B, S):
        raise ValueError(f"symbols must be (B, S) = {(B, S)}, got {tuple(symbols.shape)}")
    normalizers = torch.logsumexp(logits, dim=3).transpose(1, 2)  # (B, S+1, T)
    px = torch.gather(logits, 3, symbols.view(B, 1, S, 1).expand(B, T, S, 1)).squeeze(3)  # (B, T, S)
    px = px.transpose(1, 2) - normalizers[:, :S]
    py = logits[:, :, :, termination_symbol].transpose(1, 2) - normalizers
    return fix_for_boundary(_append_neg_inf_frame(px), boundary), py


def _check_ranges(ranges: Tensor, B: int, T: int, s_range: int, S: int) -> None:
    if ranges.shape != (B, T, s_range):
        raise ValueError(f"ranges must be (B, T, s_range) = {(B, T, s_range)}, got {tuple(ranges.shape)}")
    if bool(((ranges < 0) | (ranges > S)).any()):
        raise ValueError(f"ranges must lie in [0, S={S}]")


def _scatter_window(vals: Tensor, ranges: Tensor, S1: int) -> Tensor:
    """Window values ``(B, T, s_range)`` at symbol positions ``ranges`` -> ``(B, S1, T)``, ``-inf`` elsewhere."""
    B, T, _ = vals.shape
    grid = vals.new_full((B, T, S1), NEG_INF).scatter(2, ranges, vals)
    return grid.transpose(1, 2)


def get_rnnt_logprobs_pruned(
    logits: Tensor, symbols: Tensor, ranges: Tensor, termination_symbol: int, boundary: Optional[Tensor] = None
) -> Tuple[Tensor, Tensor]:
    """px ``(B, S, T+1)``, py ``(B, S+1, T)`` from pruned logits ``(B, T, s_range, C)``.

    Arcs outside each frame's window ``ranges[b, t]`` get ``-inf``.
    """
    if logits.ndim != 4:
        raise ValueError(f"logits must be (B, T, s_range, C), got {tuple(logits.shape)}")
    B, T, s_range, C = logits.shape
    S = symbols.shape[1]
    if symbols.shape[0] != B:
        raise ValueError(f"symbols batch {symbols.shape[0]} != logits batch {B}")
    _check_ranges(ranges, B, T, s_range, S)
    normalizers = torch.logsumexp(logits, dim=3)  # (B, T, s_range)
    with_term = torch.cat((symbols, symbols.new_full((B, 1), termination_symbol)), dim=1)  # (B, S+1)
    pruned_symbols = torch.gather(with_term.unsqueeze(1).expand(B, T, S + 1), 2, ranges)  # (B, T, s_range)
    px = torch.gather(logits, 3, pruned_symbols.unsqueeze(3)).squeeze(3) - normalizers
    px = _scatter_window(px, ranges, S + 1)[:, :S]  # (B, S, T)
    py = _scatter_window(logits[..., termination_symbol] - normalizers, ranges, S + 1)  # (B, S+1, T)
    return fix_for_boundary(_append_neg_inf_frame(px), boundary), py


# ----------------------------------------------------------------------------------------------------
# losses
# ----------------------------------------------------------------------------------------------------
def _loss(px: Tensor, py: Tensor, boundary: Optional[Tensor], reduction: str, return_grad: bool) -> LossOut:
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    out = mutual_information_recursion(px, py, boundary, return_grad=return_grad)
    if return_grad:
        scores, grads = out
        return _reduce(scores, reduction), grads
    return _reduce(out, reduction)


def rnnt_loss_simple(
    lm: Tensor,
    am: Tensor,
    symbols: Tensor,
    termination_symbol: int,
    boundary: Optional[Tensor] = None,
    reduction: str = "mean",
    return_grad: bool = False,
) -> LossOut:
    """RNN-T loss with an additive joiner (logits = lm + am). See :mod:`speechkd.losses.rnnt`."""
    px, py = get_rnnt_logprobs(lm, am, symbols, termination_symbol, boundary)
    return _loss(px, py, boundary, reduction, return_grad)


def rnnt_loss_smoothed(
    lm: Tensor,
    am: Tensor,
    symbols: Tensor,
    termination_symbol: int,
    lm_only_scale: float = 0.1,
    am_only_scale: float = 0.1,
    boundary: Optional[Tensor] = None,
    reduction: str = "mean",
    return_grad: bool = False,
) -> LossOut:
    """Simple RNN-T loss smoothed with LM-only and AM-only scores. See :mod:`speechkd.losses.rnnt`."""
    px, py = get_rnnt_logprobs_smoothed(lm, am, symbols, termination_symbol, lm_only_scale, am_only_scale, boundary)
    return _loss(px, py, boundary, reduction, return_grad)


def rnnt_loss_pruned(
    logits: Tensor,
    symbols: Tensor,
    ranges: Tensor,
    termination_symbol: int,
    boundary: Optional[Tensor] = None,
    reduction: str = "mean",
) -> Tensor:
    """RNN-T loss on pruned joiner logits ``(B, T, s_range, C)``. See :mod:`speechkd.losses.rnnt`."""
    px, py = get_rnnt_logprobs_pruned(logits, symbols, ranges, termination_symbol, boundary)
    return _loss(px, py, boundary, reduction, False)


def rnnt_loss(
    logits: Tensor,
    symbols: Tensor,
    termination_symbol: int,
    boundary: Optional[Tensor] = None,
    reduction: str = "mean",
) -> Tensor:
    """RNN-T loss on full joiner logits ``(B, T, S+1, C)``. See :mod:`speechkd.losses.rnnt`."""
    px, py = get_rnnt_logprobs_joint(logits, symbols, termination_symbol, boundary)
    return _loss(px, py, boundary, reduction, False)


# ----------------------------------------------------------------------------------------------------
# pruning
# ----------------------------------------------------------------------------------------------------
def _monotonic_lower_bound(x: Tensor) -> Tensor:
    """Largest non-decreasing sequence below ``x`` along the last dim: ``y[i] = min(x[i:])``."""
    return torch.flip(torch.cummin(torch.flip(x, dims=(-1,)), dim=-1).values, dims=(-1,))


def _adjust_pruning_lower_bound(s_begin: Tensor, s_range: int) -> Tensor:
    """Make window starts ``s_begin (B, T)`` non-decreasing, 0 on frame 0, and step by < ``s_range``.

    The step bound holds iff ``(s_range - 1) * t - s_begin[t]`` is non-decreasing, so the same
    lower-bound operation is applied to that transformed sequence (clamped at 0 for the start).
    """
    T = s_begin.shape[1]
    slope = (s_range - 1) * torch.arange(T, device=s_begin.device)
    s_begin = _monotonic_lower_bound(s_begin)
    transformed = torch.clamp(_monotonic_lower_bound(slope - s_begin), min=0)
    return slope - transformed


def get_rnnt_prune_ranges(px_grad: Tensor, py_grad: Tensor, boundary: Optional[Tensor], s_range: int) -> Tensor:
    """Symbol windows ``(B, T, s_range)`` from the occupation grads of the simple loss, as in k2.

    For each frame the window start maximises (occupation of blank arcs inside the window) minus
    (occupation of the symbol arc entering the window from below on that frame). Starts are then forced
    to reach ``S_b - s_range + 1`` by the last frame, to be non-decreasing, to start at 0 and to never
    skip a symbol. ``s_range`` is raised to ``(S_b - 1) // T_b + 2`` when smaller (with a warning) and
    capped at ``S + 1``.

    Args:
        px_grad: ``(B, S, T+1)``. py_grad: ``(B, S+1, T)``. boundary: ``(B, 4)`` or None.
    """
    B, S, T1 = px_grad.shape
    T = py_grad.shape[2]
    if T1 != T + 1 or py_grad.shape != (B, S + 1, T):
        raise ValueError(
            f"need px_grad (B, S, T+1) and py_grad (B, S+1, T), got {tuple(px_grad.shape)}, {tuple(py_grad.shape)}"
        )
    if boundary is None:
        boundary = default_boundary(B, S, T, px_grad.device)
    s_ends, t_ends = boundary[:, 2], boundary[:, 3]
    s_range_min = int(torch.div(s_ends - 1, t_ends, rounding_mode="trunc").add(2).max())
    if s_range < s_range_min:
        LOG.warning(
            "get_rnnt_prune_ranges: s_range=%d too small for S=%s, T=%s; using %d",
            s_range, s_ends.tolist(), t_ends.tolist(), s_range_min,
        )
        s_range = s_range_min
    s_range = min(s_range, S + 1)
    if S >= 1 and s_range < 2:
        raise ValueError(f"s_range must be >= 2 for regular RNN-T (got {s_range})")
    blank_in_window = py_grad.unfold(1, s_range, 1).sum(dim=3)  # (B, S+2-s_range, T)
    entering = torch.cat((px_grad.new_zeros((B, 1, T)), px_grad[:, :, :T]), dim=1)  # px_grad[s0-1]
    s_begin = torch.argmax(blank_in_window - entering[:, : S + 2 - s_range], dim=1)  # (B, T)
    frames = torch.arange(T, device=px_grad.device).view(1, T)
    inside = frames < (t_ends - 1).view(B, 1)
    s_last = torch.clamp(s_ends - s_range + 1, min=0).view(B, 1)
    s_begin = _adjust_pruning_lower_bound(torch.where(inside, s_begin, s_last), s_range)
    return s_begin.unsqueeze(2) + torch.arange(s_range, device=px_grad.device)


def do_rnnt_pruning(am: Tensor, lm: Tensor, ranges: Tensor) -> Tuple[Tensor, Tensor]:
    """Pruned joiner inputs: ``am (B, T, C)``, ``lm (B, S+1, C)``, ``ranges (B, T, s_range)`` ->
    ``(am_pruned, lm_pruned)``, both ``(B, T, s_range, C)``.

    ``am_pruned`` is an expanded view (no copy); ``lm_pruned`` is a gather on ``(B, S+1, C)`` (its
    backward scatter-adds into ``(B, S+1, C)``).
    """
    B, T, s_range = ranges.shape
    C = lm.shape[2]
    if am.shape[:2] != (B, T) or lm.shape[0] != B or am.shape[2] != C:
        raise ValueError(f"shape mismatch: am {tuple(am.shape)}, lm {tuple(lm.shape)}, ranges {tuple(ranges.shape)}")
    am_pruned = am.unsqueeze(2).expand(B, T, s_range, C)
    index = ranges.reshape(B, T * s_range, 1).expand(B, T * s_range, C)
    lm_pruned = torch.gather(lm, 1, index).reshape(B, T, s_range, C)
    return am_pruned, lm_pruned
