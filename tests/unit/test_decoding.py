"""CTC and transducer search, streaming greedy decoding (tiny random models)."""

import itertools
import math

import pytest
import torch

from speechkd.decoding.ctc import ctc_greedy_search
from speechkd.decoding.streaming import StreamingGreedyDecoder, streaming_greedy_search
from speechkd.decoding.transducer import (
    greedy_search,
    modified_beam_search,
    modified_beam_search_nbest,
    transducer_sequence_log_prob,
)
from speechkd.models import AsrModel, AsrModelConfig, EncoderConfig

FEAT_DIM = 80
# Random joiners are dominated by the decoder context; sharpening the acoustic side makes the
# hypotheses depend on the frames (a mix of blanks and several tokens).
ENC_PROJ_GAIN = 4.0
OUTPUT_GAIN = 4.0


def tiny_model(vocab: int = 6, causal: bool = True, seed: int = 2, context_size: int = 2) -> AsrModel:
    torch.manual_seed(seed)
    cfg = AsrModelConfig(
        encoder=EncoderConfig(
            d_model=32, num_layers=2, num_heads=4, ff_dim=64, conv_kernel=5, subsampling_channels=8,
            dropout=0.0, causal=causal,
        ),
        vocab_size=vocab, decoder_dim=16, joiner_dim=16, decoder_context_size=context_size,
    )
    model = AsrModel(cfg).eval()
    with torch.no_grad():
        model.joiner.encoder_proj.weight.mul_(ENC_PROJ_GAIN)
        model.joiner.output_linear.weight.mul_(OUTPUT_GAIN)
    return model


def feats(n: int, t: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, t, FEAT_DIM, generator=torch.Generator().manual_seed(seed))


def one_hot_log_probs(paths: list[list[int]], vocab: int) -> torch.Tensor:
    """(N, T, V) log-probs whose argmax is ``paths``."""
    lp = torch.full((len(paths), len(paths[0]), vocab), -5.0)
    for n, path in enumerate(paths):
        for t, k in enumerate(path):
            lp[n, t, k] = -0.1
    return lp


def test_ctc_greedy_hand_made():
    lp = one_hot_log_probs([[0, 1, 1, 0, 1, 2, 2, 0, 3], [2, 2, 0, 0, 2, 1, 3, 3, 3]], vocab=4)
    assert ctc_greedy_search(lp, torch.tensor([9, 6])) == [[1, 1, 2, 3], [2, 2, 1]]
    assert ctc_greedy_search(lp, torch.tensor([0, 9])) == [[], [2, 2, 1, 3]]
    # another blank id: 2 is dropped, 0 kept
    assert ctc_greedy_search(lp[:1], torch.tensor([9]), blank_id=2) == [[0, 1, 0, 1, 0, 3]]


def reference_greedy(model: AsrModel, enc: torch.Tensor, max_sym: int) -> list[int]:
    """Unbatched greedy search written directly from the definition; enc (T, D)."""
    ctx = [model.blank_id] * model.context_size
    hyp: list[int] = []
    for t in range(enc.size(0)):
        for _ in range(max_sym):
            dec = model.decoder(torch.tensor([ctx[-model.context_size :]]), need_pad=False)[0, 0]
            tok = int(model.joiner(enc[t], dec).argmax())
            if tok == model.blank_id:
                break
            hyp.append(tok)
            ctx.append(tok)
    return hyp


@pytest.mark.parametrize("max_sym", [1, 3])
def test_batched_greedy_equals_reference(max_sym):
    model = tiny_model()
    x, lens = feats(3, 57), torch.tensor([57, 30, 45])
    with torch.no_grad():
        enc = model.encode(x, lens)
        hyps = greedy_search(model, enc.out, enc.out_lens, max_sym_per_frame=max_sym)
        refs = [reference_greedy(model, enc.out[n, :length], max_sym) for n, length in enumerate(enc.out_lens.tolist())]
    assert hyps == refs
    assert len({tok for h in hyps for tok in h}) >= 3  # the check is not vacuous
    assert all(0 < len(h) for h in hyps)


def test_beam_one_equals_greedy():
    model = tiny_model()
    x, lens = feats(3, 50, seed=5), torch.tensor([50, 21, 37])
    with torch.no_grad():
        enc = model.encode(x, lens)
    greedy = greedy_search(model, enc.out, enc.out_lens, max_sym_per_frame=1)
    assert modified_beam_search(model, enc.out, enc.out_lens, beam=1) == greedy
    assert any(len(h) > 0 for h in greedy)


def test_sequence_probabilities_sum_to_one_and_large_beam_is_exact():
    """V=3, T=4 frames: every token sequence of length <= 4 (31 of them), brute force."""
    model = tiny_model(vocab=3, seed=4)
    x = feats(1, 16, seed=7)
    with torch.no_grad():
        enc = model.encode(x, torch.tensor([16]))
    frames = enc.out[0]
    assert frames.size(0) == 4
    seqs = [list(s) for u in range(5) for s in itertools.product([1, 2], repeat=u)]
    scores = {tuple(s): transducer_sequence_log_prob(model, frames, s) for s in seqs}
    assert math.fsum(math.exp(v) for v in scores.values()) == pytest.approx(1.0, abs=1e-9)
    assert transducer_sequence_log_prob(model, frames, [1] * 5) == -math.inf
    # beam >= hyps * V (before merging) at every frame: nothing is pruned, so the n-best list is
    # the exact ranking with exact merged scores
    nbest = modified_beam_search_nbest(model, enc.out, enc.out_lens, beam=len(seqs) * 3)[0]
    assert len(nbest) == len(seqs)
    ranked = sorted(scores.items(), key=lambda kv: kv[1], reverse=True)
    assert [h.tokens for h in nbest[:5]] == [list(s) for s, _ in ranked[:5]]
    for h in nbest:
        assert h.log_prob == pytest.approx(scores[tuple(h.tokens)], abs=1e-6)  # float32 joiner


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_beam_not_worse_than_greedy(seed):
    model = tiny_model(seed=seed)
    x, lens = feats(2, 40, seed=seed + 10), torch.tensor([40, 27])
    with torch.no_grad():
        enc = model.encode(x, lens)
    greedy = greedy_search(model, enc.out, enc.out_lens)
    nbest = modified_beam_search_nbest(model, enc.out, enc.out_lens, beam=4)
    for n, length in enumerate(enc.out_lens.tolist()):
        frames = enc.out[n, :length]
        best = nbest[n][0]
        # the beam score covers only alignments kept in the beam: a lower bound of the exact score
        assert best.log_prob <= transducer_sequence_log_prob(model, frames, best.tokens) + 1e-9
        assert transducer_sequence_log_prob(model, frames, best.tokens) >= transducer_sequence_log_prob(
            model, frames, greedy[n]
        ) - 1e-9


@pytest.mark.parametrize("chunk,left,max_sym", [(2, -1, 1), (3, 4, 2)])
def test_streaming_greedy_equals_chunked_full_utterance_greedy(chunk, left, max_sym):
    model = tiny_model()
    x, lens = feats(3, 70, seed=3), torch.tensor([70, 43, 9])
    with torch.no_grad():
        enc = model.encode(x, lens, chunk_size=chunk, left_context=left)
    full = greedy_search(model, enc.out, enc.out_lens, max_sym_per_frame=max_sym)
    stream = streaming_greedy_search(model, x, lens, chunk, left, max_sym_per_frame=max_sym)
    assert stream == full
    assert len({tok for h in full for tok in h}) >= 3 and sum(map(len, full)) >= 10


def test_streaming_decoder_short_last_chunk_and_partial_hyps():
    model = tiny_model()
    x = feats(1, 30, seed=9)
    dec = StreamingGreedyDecoder(model, batch_size=1, chunk_size=2)
    dec.accept_chunk(x[:, :8], torch.tensor([8]))
    first = list(dec.hyps[0])
    dec.accept_chunk(x[:, 8:16], torch.tensor([8]))
    dec.accept_chunk(x[:, 16:24], torch.tensor([8]))
    dec.accept_chunk(x[:, 24:30], torch.tensor([6]))  # short final chunk: padded inside
    with torch.no_grad():
        enc = model.encode(x, torch.tensor([30]), chunk_size=2)
    final = greedy_search(model, enc.out, enc.out_lens)[0]
    assert dec.hyps[0] == final
    assert final[: len(first)] == first


def test_beam_search_length_normalisation_picks_per_token_score(monkeypatch):
    """Summed log-probabilities favour the short hypothesis; per-token scores the long one."""
    import speechkd.decoding.transducer as tr

    short, long_ = tr.Hypothesis([5], -2.0), tr.Hypothesis([5, 6, 7, 8], -3.0)
    monkeypatch.setattr(tr, "modified_beam_search_nbest", lambda *a, **k: [[short, long_], [long_]])
    model = tiny_model()  # context size 2: -2/3 < -3/6
    assert tr.length_normalised(short, 2) == pytest.approx(-2 / 3)
    assert tr.modified_beam_search(model, None, None, beam=2, length_norm=False) == [[5], [5, 6, 7, 8]]
    assert tr.modified_beam_search(model, None, None, beam=2) == [[5, 6, 7, 8], [5, 6, 7, 8]]
    assert tr.length_normalised(tr.Hypothesis([], -1.0), 0) == -1.0  # empty and no context: no division by 0


class _TableLm:
    """A toy token LM: log P(token | last token) from a table, ``eos_id`` = vocab."""

    def __init__(self, table: torch.Tensor) -> None:
        self.table = table.log_softmax(dim=-1)  # (V + 1 contexts: -1 = <s> at row V, V + 1 next tokens incl. </s>)
        self.eos_id = table.size(1) - 1
        self.calls = 0

    def log_prob(self, context, token) -> float:
        self.calls += 1
        last = context[-1] if len(context) else self.table.size(0) - 1
        return float(self.table[last, token])

    def sequence(self, tokens) -> float:
        return sum(self.log_prob(tokens[:i], t) for i, t in enumerate(tokens)) + self.log_prob(tokens, self.eos_id)


@pytest.mark.parametrize("weight,bonus", [(0.7, 0.0), (1.5, 0.4)])
def test_shallow_fusion_large_beam_is_exact(weight, bonus):
    """V=3, T=4: with nothing pruned, the fused n-best is the brute-force ranking of transducer log P +
    weight x LM log P (with </s>) + bonus x length, with exactly those scores."""
    model = tiny_model(vocab=3, seed=4)
    x = feats(1, 16, seed=7)
    with torch.no_grad():
        enc = model.encode(x, torch.tensor([16]))
    lm = _TableLm(torch.randn(4, 4, generator=torch.Generator().manual_seed(3)) * 3)
    seqs = [tuple(s) for u in range(5) for s in itertools.product([1, 2], repeat=u)]
    fused = {s: transducer_sequence_log_prob(model, enc.out[0], list(s)) + weight * lm.sequence(s) + bonus * len(s)
             for s in seqs}
    nbest = modified_beam_search_nbest(model, enc.out, enc.out_lens, beam=len(seqs) * 3, lm=lm, lm_weight=weight,
                                       insertion_bonus=bonus)[0]
    assert len(nbest) == len(seqs)
    ranked = sorted(fused.items(), key=lambda kv: kv[1], reverse=True)
    assert [tuple(h.tokens) for h in nbest] == [s for s, _ in ranked]
    for h in nbest:
        assert h.score == pytest.approx(fused[tuple(h.tokens)], abs=1e-6)
        assert h.lm_score == pytest.approx(weight * lm.sequence(tuple(h.tokens)) + bonus * len(h.tokens), abs=1e-9)
    plain = modified_beam_search_nbest(model, enc.out, enc.out_lens, beam=len(seqs) * 3)[0]
    assert [h.tokens for h in plain] != [h.tokens for h in nbest]  # the LM changed the ranking


def test_shallow_fusion_weight_zero_is_plain_search_and_a_strong_lm_wins():
    model = tiny_model(seed=1)
    x, lens = feats(2, 40, seed=11), torch.tensor([40, 27])
    with torch.no_grad():
        enc = model.encode(x, lens)
    table = torch.zeros(7, 7)
    lm = _TableLm(table)
    plain = modified_beam_search(model, enc.out, enc.out_lens, beam=4)
    assert modified_beam_search(model, enc.out, enc.out_lens, beam=4, lm=lm, lm_weight=0.0) == plain
    assert lm.calls == 0  # weight 0: the LM is not consulted
    # an LM that only believes in token 3 after anything (and in </s> after 3) turns the output into 3s
    table[:, 3] = 30.0
    strong = _TableLm(table)
    out = modified_beam_search(model, enc.out, enc.out_lens, beam=4, lm=strong, lm_weight=5.0)
    assert out != plain and all(set(h) == {3} for h in out)


def test_decode_tags_name_the_fusion():
    from speechkd.decoding.asr_decode import FusionLm, decode_tag

    assert decode_tag("beam", 4, -1, -1) == "beam4"
    assert decode_tag("beam", 4, -1, -1, fusion=FusionLm(None, 0.3)) == "beam4-lm0.3"
    assert decode_tag("beam", 8, -1, -1, fusion=FusionLm(None, 0.3, 1.5)) == "beam8-lm0.3-bonus1.5"
    assert decode_tag("ctc-beam", 8, -1, -1, fusion=FusionLm(None, 0.5)) == "ctc-beam8-lm0.5"
    assert decode_tag("greedy", 4, -1, -1, fusion=FusionLm(None, 0.5)) == "greedy"
