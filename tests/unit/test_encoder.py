"""Conformer encoder, subsampling, heads and presets (tiny models, CPU, a few seconds)."""

import math
import random

import pytest
import torch
import torch.nn.functional as F

from speechkd.errors import SpeechkdError
from speechkd.models import AsrModel, AsrModelConfig, EncoderConfig, load_preset
from speechkd.models.conformer import ConformerEncoder, chunk_attention_mask
from speechkd.models.subsampling import subsampled_lens

FEAT_DIM = 80
TOL = 1e-5


def tiny_encoder(causal: bool, seed: int = 0, **kw) -> ConformerEncoder:
    torch.manual_seed(seed)
    cfg = EncoderConfig(
        d_model=32, num_layers=2, num_heads=4, ff_dim=64, conv_kernel=5, subsampling_channels=8,
        dropout=0.0, causal=causal, **kw,
    )
    return ConformerEncoder(cfg).eval()


def feats(n: int, t: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, t, FEAT_DIM, generator=torch.Generator().manual_seed(seed))


def test_subsampling_length_formula_and_shapes():
    # ceil(ceil(T/2)/2), hand-computed
    expected = {1: 1, 2: 1, 3: 1, 4: 1, 5: 2, 7: 2, 8: 2, 9: 3, 13: 4, 16: 4, 17: 5}
    lens = torch.tensor(list(expected))
    assert subsampled_lens(lens).tolist() == list(expected.values())
    enc = tiny_encoder(causal=False)
    for t in (5, 16, 17):
        out = enc(feats(2, t), torch.tensor([t, t - 3]))
        assert out.out.shape == (2, expected[t], 32)
        assert out.out_lens.tolist() == [expected[t], int(subsampled_lens(torch.tensor(t - 3)))]
        assert len(out.layer_outputs) == 2
        assert all(h.shape == out.out.shape for h in out.layer_outputs)
        assert torch.equal(out.layer_outputs[-1], out.out)


def test_chunk_attention_mask_by_hand():
    m = chunk_attention_mask(torch.tensor([5]), 6, chunk_size=2, left_context=1)[0, 0].int()
    expected = torch.tensor(
        [  # keys 0..5 (5 is padding); chunks {0,1} {2,3} {4,5}; left context 1 frame before the chunk
            [1, 1, 0, 0, 0, 0],
            [1, 1, 0, 0, 0, 0],
            [0, 1, 1, 1, 0, 0],
            [0, 1, 1, 1, 0, 0],
            [0, 0, 0, 1, 1, 0],
            [0, 0, 0, 1, 1, 0],
        ]
    )
    assert torch.equal(m, expected)
    full = chunk_attention_mask(torch.tensor([3]), 4)[0, 0]
    assert full.shape == (1, 4) and full.tolist() == [[True, True, True, False]]


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("chunk,left", [(-1, -1), (2, 3)])
def test_padded_utterance_equals_alone(causal, chunk, left):
    enc = tiny_encoder(causal)
    x = feats(2, 45)
    x[1, 30:] = 7.0  # padding holds junk: it must not leak into valid frames
    batch = enc(x, torch.tensor([45, 30]), chunk, left)
    alone = enc(x[1:2, :30], torch.tensor([30]), chunk, left)
    n = int(alone.out_lens[0])
    assert n == int(batch.out_lens[1]) == 8
    for b, a in zip(batch.layer_outputs, alone.layer_outputs):
        torch.testing.assert_close(b[1, :n], a[0], atol=TOL, rtol=0)


@pytest.mark.parametrize("left", [-1, 3])
def test_causal_chunked_outputs_ignore_future(left):
    chunk, q = 2, 3  # change raw frames from the start of encoder chunk 3 on
    t0 = 4 * chunk * q
    x = feats(1, 60)
    y = x.clone()
    y[:, t0:] = torch.randn_like(y[:, t0:])
    lens = torch.tensor([60])
    enc = tiny_encoder(causal=True)
    a, b = enc(x, lens, chunk, left).out, enc(y, lens, chunk, left).out
    torch.testing.assert_close(a[:, : chunk * q], b[:, : chunk * q], atol=0, rtol=0)
    assert (a[:, chunk * q :] - b[:, chunk * q :]).abs().amax(-1).min() > 1e-3  # every later frame changed
    # the same check fails for a non-causal model (centred convolutions see the next chunk)
    enc_nc = tiny_encoder(causal=False)
    a, b = enc_nc(x, lens, chunk, left).out, enc_nc(y, lens, chunk, left).out
    assert (a[:, : chunk * q] - b[:, : chunk * q]).abs().max() > 1e-3


def run_streaming(enc: ConformerEncoder, x: torch.Tensor, lens: torch.Tensor, chunk: int, left: int) -> torch.Tensor:
    """Feed x (N, T, C) chunk by chunk; returns concatenated outputs (N, T'', D)."""
    states = enc.init_states(x.size(0), left)
    step = 4 * chunk
    outs = []
    for i in range(math.ceil(x.size(1) / step)):
        xc = x[:, i * step : (i + 1) * step]
        xc = F.pad(xc, (0, 0, 0, step - xc.size(1)))
        out, out_lens, states = enc.streaming_forward(xc, (lens - i * step).clamp(0, step), states)
        assert out.shape[1] == chunk
        outs.append(out)
    assert states.processed_lens.tolist() == subsampled_lens(lens).tolist()
    if left >= 0:
        assert all(k.size(2) == left for k in states.keys)
    return torch.cat(outs, dim=1)


@pytest.mark.parametrize("chunk,left", [(2, -1), (2, 3), (3, -1), (3, 6)])
def test_streaming_forward_equals_chunk_masked_forward(chunk, left):
    enc = tiny_encoder(causal=True, seed=3)
    x, lens = feats(2, 61), torch.tensor([61, 38])
    ref = enc(x, lens, chunk, left)
    got = run_streaming(enc, x, lens, chunk, left)
    for n, length in enumerate(ref.out_lens.tolist()):
        torch.testing.assert_close(got[n, :length], ref.out[n, :length], atol=TOL, rtol=0)
    # and the chunk mask matters: full-context output differs
    full = enc(x, lens).out
    assert (full[0, : ref.out_lens[0]] - ref.out[0, : ref.out_lens[0]]).abs().max() > 1e-3


def test_streaming_errors():
    with pytest.raises(SpeechkdError, match="causal"):
        tiny_encoder(causal=False).init_states(1)
    enc = tiny_encoder(causal=True)
    with pytest.raises(SpeechkdError, match="multiple of 4"):
        enc.streaming_forward(feats(1, 6), torch.tensor([6]), enc.init_states(1))
    with pytest.raises(SpeechkdError, match="chunk_size"):
        enc(feats(1, 8), torch.tensor([8]), chunk_size=0)
    with pytest.raises(SpeechkdError, match="num_heads"):
        EncoderConfig(d_model=30, num_heads=4).validate()


def test_sample_training_chunk():
    rng = random.Random(0)
    assert {tiny_encoder(False).sample_training_chunk(rng) for _ in range(20)} == {(-1, -1)}
    enc = tiny_encoder(True, train_chunk_sizes=[4, 8], train_left_contexts=[2, -1], full_context_prob=0.0)
    draws = {enc.sample_training_chunk(rng) for _ in range(200)}
    assert draws == {(4, 2), (4, -1), (8, 2), (8, -1)}
    enc = tiny_encoder(True, full_context_prob=1.0)
    assert {enc.sample_training_chunk(rng) for _ in range(20)} == {(-1, -1)}


def test_decoder_context_and_joiner_projection():
    torch.manual_seed(0)
    cfg = AsrModelConfig(
        encoder=EncoderConfig(d_model=32, num_layers=1, num_heads=4, ff_dim=32, subsampling_channels=4),
        vocab_size=9, decoder_dim=16, joiner_dim=12, decoder_context_size=2,
    )
    model = AsrModel(cfg).eval()
    y = torch.tensor([[0, 3, 5, 2, 7]])  # blank (start) + tokens
    dec = model.decoder(y)  # (1, 5, 16)
    padded = [0, 0, 3, 5, 2, 7]
    for u in range(5):  # output u == decoder run on its own 2-token window
        window = model.decoder(torch.tensor([padded[u : u + 2]]), need_pad=False)
        torch.testing.assert_close(dec[:, u], window[:, 0])
    with pytest.raises(SpeechkdError, match="context"):
        model.decoder(torch.tensor([[1, 2, 3]]), need_pad=False)
    # pruned-loss style join on (N, T, s_range, J) == projecting inside
    enc = torch.randn(2, 6, 32)
    dec = torch.randn(2, 6, 3, 16)
    am, lm = model.joiner.encoder_proj(enc), model.joiner.decoder_proj(dec)
    logits = model.joiner(am[:, :, None, :].expand(-1, -1, 3, -1), lm, project_input=False)
    assert logits.shape == (2, 6, 3, 9)
    torch.testing.assert_close(logits, model.joiner(enc[:, :, None, :], dec))
    assert model(lambda m: (m, m.num_params())) == (model, model.num_params())  # forward(fn) = fn(self)
    lp = model.ctc_log_probs(torch.randn(2, 4, 32))
    torch.testing.assert_close(lp.exp().sum(-1), torch.ones(2, 4))


def expected_param_count(cfg: AsrModelConfig) -> int:
    """Hand formula for AsrModel's parameter count."""
    e = cfg.encoder
    d, f, k, c = e.d_model, e.ff_dim, e.conv_kernel, e.subsampling_channels
    freq = ((e.input_dim - 3) // 2 + 1 - 3) // 2 + 1
    sub = (9 * c + c) + (9 * c * c + c) + (c * freq * d + d)
    ffn = 2 * (d * f + f + f * d + d)
    attn = 3 * d * d + 3 * d + d * d + d
    conv = (2 * d * d + 2 * d) + (d * k + d) + 2 * d + (d * d + d)
    norms = 5 * 2 * d
    total = sub + e.num_layers * (ffn + attn + conv + norms)
    v, dd, j = cfg.vocab_size, cfg.decoder_dim, cfg.joiner_dim
    if cfg.use_ctc:
        total += d * v + v
    if cfg.use_transducer:
        total += v * dd + dd * cfg.decoder_conv_group_size * cfg.decoder_context_size  # embedding + grouped conv
        total += (d * j + j) + (dd * j + j) + (j * v + v)  # joiner
        total += (d * v + v) + (dd * v + v)  # simple am/lm projections
    return total


@pytest.mark.parametrize("name,total,lo,hi", [("mini", 5_198_448, 4.5e6, 5.5e6), ("small", 23_517_264, 20e6, 25e6)])
def test_preset_param_counts(name, total, lo, hi):
    cfg = load_preset(name)
    model = AsrModel(cfg)
    assert model.num_params() == expected_param_count(cfg) == total
    assert lo <= total <= hi
    causal = AsrModel(load_preset(name, ["encoder.causal=true", "use_ctc=false"]))
    assert causal.encoder.cfg.causal and causal.ctc_output is None
    assert causal.num_params() == total - (cfg.encoder.d_model + 1) * cfg.vocab_size
    with pytest.raises(SpeechkdError, match="unknown model preset"):
        load_preset("nope")


def test_global_cmvn_normalises_the_input_in_every_mode():
    """An encoder with global CMVN equals the same weights without it on pre-normalised input,
    full-context and streaming; the statistics live in the state dict."""
    mean, std = torch.randn(FEAT_DIM) * 3, torch.rand(FEAT_DIM) * 4 + 0.5
    with_norm = tiny_encoder(causal=True, seed=5, global_cmvn=True)
    assert not with_norm.input_norm.ready
    with_norm.input_norm.set_stats(mean, std, num_cuts=7)
    plain = tiny_encoder(causal=True, seed=5)
    assert plain.input_norm is None
    state = {k: v for k, v in with_norm.state_dict().items() if not k.startswith("input_norm.")}
    plain.load_state_dict(state)
    x, lens = feats(2, 61) * std + mean, torch.tensor([61, 38])
    ref = plain((x - mean) / std, lens)
    got = with_norm(x, lens)
    torch.testing.assert_close(got.out, ref.out, atol=TOL, rtol=0)
    assert (with_norm(x, lens).out - plain(x, lens).out).abs().max() > 1e-2  # it is not a no-op
    streamed = run_streaming(with_norm, x, lens, 3, -1)
    masked = with_norm(x, lens, 3, -1)
    for n, length in enumerate(masked.out_lens.tolist()):
        torch.testing.assert_close(streamed[n, :length], masked.out[n, :length], atol=TOL, rtol=0)
    sd = with_norm.state_dict()
    assert sd["input_norm.num_cuts"].item() == 7
    torch.testing.assert_close(sd["input_norm.inv_std"], 1 / std)


def test_global_cmvn_rejects_bad_statistics():
    enc = tiny_encoder(causal=False, global_cmvn=True)
    with pytest.raises(SpeechkdError, match="input_dim=80"):
        enc.input_norm.set_stats(torch.zeros(40), torch.ones(40), num_cuts=3)
    with pytest.raises(SpeechkdError, match="non-finite"):
        enc.input_norm.set_stats(torch.full((FEAT_DIM,), float("nan")), torch.ones(FEAT_DIM), num_cuts=3)


def test_attention_equals_the_explicit_softmax_formula_with_fully_masked_rows():
    from speechkd.models.conformer import SelfAttention

    torch.manual_seed(0)
    att = SelfAttention(d_model=16, num_heads=2, dropout=0.0, rope_base=10000.0).eval()
    q, k, v = (torch.randn(2, 2, 5, 8) for _ in range(3))
    allowed = torch.rand(2, 1, 5, 5) > 0.4
    allowed[0, 0, 2] = False  # a row with nothing allowed (padding only): finite, uniform weights
    scores = (q @ k.transpose(-1, -2)) * 8**-0.5
    weights = scores.masked_fill(~allowed, torch.finfo(scores.dtype).min).softmax(-1)
    ref = att.out((weights @ v).transpose(1, 2).reshape(2, 5, 16))
    got = att._attend(q, k, v, allowed)
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-6)
    # the CUDA path (scaled_dot_product_attention with the additive mask) computes the same numbers
    bias = torch.zeros(allowed.shape).masked_fill(~allowed, torch.finfo(torch.float32).min)
    sdpa = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=bias)
    torch.testing.assert_close(att.out(sdpa.transpose(1, 2).reshape(2, 5, 16)), ref, rtol=1e-5, atol=1e-6)


def test_pad_tokens_builds_once_on_the_host():
    from speechkd.tasks.asr import pad_tokens

    out, lens = pad_tokens([[5, 6, 7], [], [8]], pad=-1, device=torch.device("cpu"))
    assert out.tolist() == [[5, 6, 7], [-1, -1, -1], [8, -1, -1]] and lens.tolist() == [3, 0, 1]
    out, lens = pad_tokens([[], []], pad=0, device=torch.device("cpu"))
    assert out.shape == (2, 0) and lens.tolist() == [0, 0]


def test_time_shared_dropout_draws_one_mask_per_utterance_and_channel():
    from speechkd.models.conformer import TimeSharedDropout

    torch.manual_seed(0)
    drop = TimeSharedDropout(0.25).train()
    x = torch.rand(6, 50, 64) + 0.5  # no zeros in the input
    y = drop(x)
    ratio = y / x  # (6, 50, 64): 0 where dropped, 1 / (1 - p) where kept
    assert torch.allclose(ratio, ratio[:, :1, :].expand_as(ratio))  # every frame has its utterance's mask
    kept = ratio[:, 0, :]
    assert torch.all((kept == 0) | torch.isclose(kept, torch.tensor(1 / 0.75)))
    assert 0.15 < (kept == 0).float().mean().item() < 0.35  # 384 draws at p = 0.25
    assert not torch.equal(kept[0], kept[1])  # utterances draw their own masks
    assert torch.equal(drop.eval()(x), x)
    assert torch.equal(TimeSharedDropout(0.0).train()(x), x)
    with pytest.raises(SpeechkdError, match="p=1.0"):
        TimeSharedDropout(1.0)


def test_ff_dropout_shared_time_switches_only_the_feed_forward_hidden_dropout():
    from speechkd.models.conformer import TimeSharedDropout

    base = EncoderConfig(d_model=32, num_layers=2, num_heads=2, ff_dim=64, subsampling_channels=8)
    shared = EncoderConfig(**{**base.__dict__, "ff_dropout_shared_time": True})
    enc_base, enc_shared = ConformerEncoder(base), ConformerEncoder(shared)
    kinds = [type(m).__name__ for m in enc_shared.modules() if isinstance(m, (torch.nn.Dropout, TimeSharedDropout))]
    assert kinds.count("TimeSharedDropout") == 2 * 2  # ff1 and ff2 hidden, per layer
    assert not any(isinstance(m, TimeSharedDropout) for m in enc_base.modules())
    for layer in enc_shared.layers:
        for ff in (layer.ff1, layer.ff2):
            assert isinstance(ff.net[2], TimeSharedDropout) and isinstance(ff.net[4], torch.nn.Dropout)
    # Same parameters and names: checkpoints load across the switch, and eval outputs are equal.
    enc_shared.load_state_dict(enc_base.state_dict())
    x, lens = torch.randn(2, 60, 80), torch.tensor([60, 45])
    enc_base.eval(), enc_shared.eval()
    assert torch.equal(enc_base(x, lens).out, enc_shared(x, lens).out)
    with pytest.raises(SpeechkdError, match="dropout=1.5"):
        EncoderConfig(dropout=1.5).validate()
