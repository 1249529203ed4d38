"""Transducer search for :class:`speechkd.models.asr.AsrModel` (stateless decoder + joiner).

* :func:`greedy_search`: batched; up to ``max_sym_per_frame`` symbols per encoder frame.
* :func:`modified_beam_search`: at most one symbol per frame (Kang et al., 2022, "modified beam
  search" of icefall); hypotheses of all utterances are scored in one decoder/joiner call per
  frame and hypotheses with equal token sequences are merged (log-add). Optional shallow fusion of
  a token LM (e.g. :class:`speechkd.decoding.ngram.TokenNgramLm`): a hypothesis is ranked by its
  transducer log-probability plus ``lm_weight`` x its LM log-probability plus ``insertion_bonus`` per
  token, as icefall's ``modified_beam_search_lm_shallow_fusion`` does with a neural LM.
* :func:`transducer_sequence_log_prob`: log P(tokens | frames) summed over all one-symbol-per-frame
  alignments, i.e. the quantity modified beam search maximises (used for checks and rescoring).

The greedy decoder state (:class:`GreedyState`) can be carried across calls, which is how
``speechkd.decoding.streaming`` decodes chunk by chunk.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional

import torch
from torch.nn.utils.rnn import pad_sequence

from speechkd.errors import SpeechkdError
from speechkd.models.asr import AsrModel


@dataclass
class GreedyState:
    """Decoder side of batched greedy search for N streams.

    hyps: emitted tokens per stream; contexts (N, context_size) int64: last tokens (blank-padded);
    decoder_out (N, J): joiner-projected decoder output for ``contexts``.
    """

    hyps: list[list[int]]
    contexts: torch.Tensor
    decoder_out: torch.Tensor


@dataclass
class Hypothesis:
    """One beam-search result: tokens (no blanks), transducer log-probability (summed over the alignments
    kept) and, with shallow fusion, the LM part of its score (``lm_weight`` x LM log-probability including
    the sentence end, plus ``insertion_bonus`` per token; 0 without an LM)."""

    tokens: list[int]
    log_prob: float
    lm_score: float = 0.0

    @property
    def score(self) -> float:
        """What the search ranks by: ``log_prob + lm_score``."""
        return self.log_prob + self.lm_score


def _projected_decoder_out(model: AsrModel, contexts: torch.Tensor) -> torch.Tensor:
    """contexts (H, context_size) -> joiner-projected decoder output (H, J)."""
    decoder, joiner = model.require_transducer()
    return joiner.decoder_proj(decoder(contexts, need_pad=False))[:, 0]


def _check_enc(enc_out: torch.Tensor, enc_lens: torch.Tensor) -> None:
    if enc_out.dim() != 3 or enc_lens.dim() != 1 or enc_lens.size(0) != enc_out.size(0):
        raise SpeechkdError(
            f"transducer search: expected enc_out (N, T, D) and enc_lens (N,), "
            f"got {tuple(enc_out.shape)} and {tuple(enc_lens.shape)}"
        )


@torch.no_grad()
def init_greedy_state(model: AsrModel, batch_size: int, device: Optional[torch.device] = None) -> GreedyState:
    """Fresh greedy state: empty hyps, all-blank contexts."""
    device = device or next(model.parameters()).device
    contexts = torch.full((batch_size, model.context_size), model.blank_id, dtype=torch.int64, device=device)
    return GreedyState([[] for _ in range(batch_size)], contexts, _projected_decoder_out(model, contexts))


@torch.no_grad()
def greedy_search_frames(
    model: AsrModel,
    enc_proj: torch.Tensor,
    enc_lens: torch.Tensor,
    state: GreedyState,
    max_sym_per_frame: int = 1,
) -> GreedyState:
    """Advance ``state`` (updated in place and returned) over frames of joiner-projected encoder
    output enc_proj (N, T, J); stream ``n`` uses its first ``enc_lens[n]`` frames."""
    if max_sym_per_frame < 1:
        raise SpeechkdError(f"max_sym_per_frame={max_sym_per_frame} must be >= 1")
    _, joiner = model.require_transducer()
    blank = model.blank_id
    frame = torch.arange(enc_proj.size(1), device=enc_proj.device)
    valid = frame[None, :] < enc_lens.to(enc_proj.device)[:, None]  # (N, T)
    for t in range(enc_proj.size(1)):
        emitting = valid[:, t]
        if not bool(emitting.any()):
            continue
        for _ in range(max_sym_per_frame):
            logits = joiner(enc_proj[:, t], state.decoder_out, project_input=False)  # (N, V)
            y = logits.argmax(dim=-1)
            emitting = emitting & (y != blank)
            idx = emitting.nonzero().squeeze(1)
            if idx.numel() == 0:
                break
            tokens = y[idx]
            for n, tok in zip(idx.tolist(), tokens.tolist()):
                state.hyps[n].append(tok)
            state.contexts[idx] = torch.cat([state.contexts[idx, 1:], tokens[:, None]], dim=1)
            state.decoder_out[idx] = _projected_decoder_out(model, state.contexts[idx])
    return state


@torch.no_grad()
def greedy_search(
    model: AsrModel, enc_out: torch.Tensor, enc_lens: torch.Tensor, max_sym_per_frame: int = 1
) -> list[list[int]]:
    """Batched greedy search. enc_out (N, T, D), enc_lens (N,) -> N token-id lists."""
    _check_enc(enc_out, enc_lens)
    _, joiner = model.require_transducer()
    state = init_greedy_state(model, enc_out.size(0), enc_out.device)
    greedy_search_frames(model, joiner.encoder_proj(enc_out), enc_lens, state, max_sym_per_frame)
    return state.hyps


def _context(tokens: tuple[int, ...], context_size: int, blank_id: int) -> list[int]:
    """Last ``context_size`` tokens, left-padded with blank."""
    padded = [blank_id] * context_size + list(tokens)
    return padded[len(padded) - context_size :]


def _log_add(a: float, b: float) -> float:
    if a == -math.inf:
        return b
    hi, lo = max(a, b), min(a, b)
    return hi + math.log1p(math.exp(lo - hi))


def _lm_row(lm: Any, context: tuple[int, ...], vocab: int, blank: int, weight: float, bonus: float) -> torch.Tensor:
    """(V,) float64: the fused score of appending each token to ``context``: ``weight * log P_lm(token |
    context) + bonus``, 0 for blank (a blank appends nothing). ``lm`` is not called when ``weight`` is 0."""
    row = torch.tensor([(weight * lm.log_prob(context, v) if weight else 0.0) + bonus for v in range(vocab)],
                       dtype=torch.float64)
    row[blank] = 0.0
    return row


@torch.no_grad()
def modified_beam_search_nbest(
    model: AsrModel,
    enc_out: torch.Tensor,
    enc_lens: torch.Tensor,
    beam: int = 4,
    lm: Optional[Any] = None,
    lm_weight: float = 0.0,
    insertion_bonus: float = 0.0,
) -> list[list[Hypothesis]]:
    """Modified beam search (one symbol per frame). enc_out (N, T, D), enc_lens (N,).

    ``lm``: anything with ``log_prob(context, token)`` over the model's token ids and ``eos_id`` (e.g.
    :class:`speechkd.decoding.ngram.TokenNgramLm` on the same BPE model). Each hypothesis is then ranked by
    transducer log-probability + ``lm_weight`` x LM log-probability + ``insertion_bonus`` per token; the
    sentence end's LM log-probability is added after the last frame. Without ``lm`` (or with weight and bonus 0)
    this is plain modified beam search.

    Returns, per utterance, at most ``beam`` hypotheses sorted by :attr:`Hypothesis.score` (best first).
    """
    _check_enc(enc_out, enc_lens)
    if beam < 1:
        raise SpeechkdError(f"beam={beam} must be >= 1")
    _, joiner = model.require_transducer()
    blank, ctx, vocab = model.blank_id, model.context_size, model.vocab_size
    if lm is None:
        lm_weight = 0.0
    fuse = lm_weight != 0.0 or insertion_bonus != 0.0
    enc_proj = joiner.encoder_proj(enc_out)  # (N, T, J)
    lens = enc_lens.tolist()
    beams: list[dict[tuple[int, ...], float]] = [{(): 0.0} for _ in lens]  # token sequence -> transducer log P
    fused: dict[tuple[int, ...], float] = {(): 0.0}  # token sequence -> its LM part (shared by utterances)
    rows_lm: dict[tuple[int, ...], torch.Tensor] = {}  # token sequence -> _lm_row (V,)
    for t in range(enc_out.size(1)):
        active = [n for n, length in enumerate(lens) if t < length]
        if not active:
            break
        rows = [(n, ys, score) for n in active for ys, score in beams[n].items()]
        contexts = torch.tensor([_context(ys, ctx, blank) for _, ys, _ in rows], device=enc_out.device)
        utt = torch.tensor([n for n, _, _ in rows], device=enc_out.device)
        logits = joiner(enc_proj[utt, t], _projected_decoder_out(model, contexts), project_input=False)
        scores = torch.tensor([s for _, _, s in rows], dtype=torch.float64, device=enc_out.device)
        am = logits.double().log_softmax(dim=-1) + scores[:, None]  # (H, V) transducer log P of each extension
        total = am
        if fuse:
            for _, ys, _ in rows:
                if ys not in rows_lm:
                    rows_lm[ys] = _lm_row(lm, ys, vocab, blank, lm_weight, insertion_bonus)
            lm_part = torch.stack([rows_lm[ys] + fused[ys] for _, ys, _ in rows]).to(am.device)  # (H, V)
            total = am + lm_part
        counts = [len(beams[n]) for n in active]
        padded = pad_sequence(list(total.split(counts)), batch_first=True, padding_value=-math.inf)  # (A, Hmax, V)
        k = min(beam, padded.size(1) * vocab)
        top_scores, top_idx = padded.flatten(1).topk(k, dim=1)
        offsets = [0] + list(torch.tensor(counts).cumsum(0).tolist())
        for a, n in enumerate(active):
            merged: dict[tuple[int, ...], float] = {}
            for score, flat in zip(top_scores[a].tolist(), top_idx[a].tolist()):
                if score == -math.inf:
                    continue
                h, tok = divmod(flat, vocab)
                row = offsets[a] + h
                ys = rows[row][1]
                new_ys = ys if tok == blank else ys + (tok,)
                if fuse and new_ys not in fused:
                    fused[new_ys] = fused[ys] + float(rows_lm[ys][tok])
                merged[new_ys] = _log_add(merged.get(new_ys, -math.inf), float(am[row, tok]))
            beams[n] = merged

    def hyp(ys: tuple[int, ...], log_prob: float) -> Hypothesis:
        if not fuse:
            return Hypothesis(list(ys), log_prob)
        end = lm_weight * lm.log_prob(ys, lm.eos_id) if lm_weight else 0.0
        return Hypothesis(list(ys), log_prob, fused[ys] + end)

    return [sorted((hyp(ys, s) for ys, s in b.items()), key=lambda h: h.score, reverse=True) for b in beams]


def length_normalised(hyp: Hypothesis, context_size: int) -> float:
    """score / length (the score: log P, plus the LM part with shallow fusion), the length counting the
    decoder's blank context as icefall's ``ys`` does (so an empty hypothesis divides by ``context_size``,
    never by 0)."""
    return hyp.score / (len(hyp.tokens) + max(context_size, 1))


def modified_beam_search(
    model: AsrModel,
    enc_out: torch.Tensor,
    enc_lens: torch.Tensor,
    beam: int = 4,
    length_norm: bool = True,
    lm: Optional[Any] = None,
    lm_weight: float = 0.0,
    insertion_bonus: float = 0.0,
) -> list[list[int]]:
    """Best hypothesis of :func:`modified_beam_search_nbest` per utterance: N token-id lists.

    ``length_norm``: pick the final hypothesis by :func:`length_normalised` score (icefall's
    default), which counters the sum of log-probabilities' preference for short outputs; otherwise by
    score. ``lm``, ``lm_weight``, ``insertion_bonus``: shallow fusion (see :func:`modified_beam_search_nbest`).
    """
    nbests = modified_beam_search_nbest(model, enc_out, enc_lens, beam, lm, lm_weight, insertion_bonus)
    if not length_norm:
        return [nbest[0].tokens for nbest in nbests]
    ctx = model.context_size
    return [max(nbest, key=lambda h: length_normalised(h, ctx)).tokens for nbest in nbests]


@torch.no_grad()
def transducer_sequence_log_prob(model: AsrModel, enc_out: torch.Tensor, tokens: list[int]) -> float:
    """log P(tokens | enc_out) over all alignments with at most one symbol per frame.

    enc_out (T, D) for one utterance (valid frames only). -inf when len(tokens) > T.
    """
    decoder, joiner = model.require_transducer()
    num_frames, num_tokens = enc_out.size(0), len(tokens)
    if num_tokens > num_frames:
        return -math.inf
    y = torch.tensor([[model.blank_id] + tokens], device=enc_out.device)
    dec_out = decoder(y, need_pad=True)  # (1, U+1, E)
    logp = joiner(enc_out[:, None, :], dec_out[0][None, :, :]).double().log_softmax(dim=-1)  # (T, U+1, V)
    blank_lp = logp[:, :, model.blank_id]  # (T, U+1)
    token_ids = torch.tensor(tokens, dtype=torch.int64, device=enc_out.device)
    token_lp = logp[:, torch.arange(num_tokens, device=enc_out.device), token_ids]  # (T, U)
    alpha = torch.full((num_tokens + 1,), -math.inf, dtype=torch.float64, device=enc_out.device)
    alpha[0] = 0.0
    for t in range(num_frames):
        stay = alpha + blank_lp[t]
        advance = torch.cat([alpha.new_full((1,), -math.inf), alpha[:-1] + token_lp[t]])
        alpha = torch.logaddexp(stay, advance)
    return float(alpha[num_tokens])
