"""The ASR task glue: weights, pruning, CTC feasibility handling, warm-up schedule."""

import pytest
import torch

from speechkd.errors import SpeechkdError
from speechkd.models.asr import AsrModel, AsrModelConfig
from speechkd.models.conformer import EncoderConfig
from speechkd.tasks.asr import AsrLossConfig, AsrTask, pad_tokens


def tiny_model(use_ctc: bool, use_transducer: bool, vocab: int = 7) -> AsrModel:
    torch.manual_seed(0)
    enc = EncoderConfig(input_dim=20, subsampling_channels=8, d_model=16, num_layers=1, num_heads=2,
                        ff_dim=32, conv_kernel=3, dropout=0.0)
    cfg = AsrModelConfig(encoder=enc, vocab_size=vocab, use_ctc=use_ctc, use_transducer=use_transducer,
                         decoder_dim=8, joiner_dim=8)
    return AsrModel(cfg).eval()


def batch(lens, tokens, cut_ids=None):
    torch.manual_seed(1)
    x = torch.randn(len(lens), max(lens), 20)
    return {"inputs": x, "input_lens": torch.tensor(lens), "tokens": tokens,
            "cut_ids": cut_ids or [f"c{i}" for i in range(len(lens))]}


def full_rnnt_loss(model, b):
    """Reference: the full (unpruned) RNN-T loss through the whole joiner, summed over the batch."""
    from speechkd.losses.rnnt import rnnt_loss

    enc = model.encode(b["inputs"], b["input_lens"])
    y, y_lens = pad_tokens(b["tokens"], 0, enc.out.device)
    sos, _ = pad_tokens([[0] + t for t in b["tokens"]], 0, enc.out.device)
    dec = model.decoder(sos)
    logits = model.joiner(enc.out.unsqueeze(2), dec.unsqueeze(1))  # (N, T, U+1, V)
    boundary = torch.zeros(len(b["tokens"]), 4, dtype=torch.int64)
    boundary[:, 2], boundary[:, 3] = y_lens, enc.out_lens
    return rnnt_loss(logits.float(), y, termination_symbol=0, boundary=boundary, reduction="sum",
                     backend="portable")


def test_pruned_with_wide_range_equals_full_loss():
    model = tiny_model(False, True)
    b = batch([40, 33], [[1, 2, 3], [4, 5]])
    # prune_range >= U+1 keeps every symbol: the pruned loss must equal the full loss
    cfg = AsrLossConfig(ctc_weight=0.0, transducer_weight=1.0, prune_range=4, warmup_steps=0,
                        simple_loss_scale=0.0, rnnt_backend="portable")
    with torch.no_grad():
        out = AsrTask(cfg).compute_loss(model, b, training=False)
        ref = full_rnnt_loss(model, b)
    assert out.info["pruned"] == pytest.approx(float(ref), rel=1e-5)
    assert float(out.loss) == pytest.approx(float(ref), rel=1e-5)
    assert out.num_frames == float((torch.tensor([40, 33]) + 3) // 4 @ torch.ones(2, dtype=torch.long))


def test_warmup_scales():
    cfg = AsrLossConfig(simple_loss_scale=0.5, warmup_steps=100, pruned_warmup_start=0.1)
    assert cfg.scales(0) == (1.0, pytest.approx(0.1))
    assert cfg.scales(50) == (pytest.approx(0.75), pytest.approx(0.55))
    assert cfg.scales(100) == (0.5, 1.0)


def test_ctc_infeasible_utterance_left_out_and_counted(caplog):
    model = tiny_model(True, False)
    # 8 input frames -> 2 encoder frames: 3 tokens cannot fit; 40 frames -> 10 frames fit
    b = batch([40, 8], [[1, 2, 3], [1, 2, 3]], ["ok", "short"])
    cfg = AsrLossConfig(ctc_weight=1.0, transducer_weight=0.0)
    task = AsrTask(cfg)
    with torch.no_grad():
        out = task.compute_loss(model, b, training=True)
        only_ok = task.compute_loss(model, batch([40], [[1, 2, 3]], ["ok"]), training=True)
    assert task.num_ctc_infeasible == 1
    assert "short" in caplog.text
    assert float(out.loss) == pytest.approx(float(only_ok.loss), rel=1e-5)
    # a batch where nothing is feasible is skipped with a reason
    with torch.no_grad():
        skipped = task.compute_loss(model, batch([8], [[1, 2, 3]], ["short"]), training=True)
    assert skipped.skipped and "too short" in skipped.skip_reason


def test_loss_weights_must_match_heads():
    with pytest.raises(SpeechkdError, match="no ctc head"):
        AsrLossConfig(ctc_weight=0.5).check_model(use_ctc=False, use_transducer=True)
    with pytest.raises(SpeechkdError, match="never train"):
        AsrLossConfig(ctc_weight=0.0).check_model(use_ctc=True, use_transducer=True)
    with pytest.raises(SpeechkdError, match="not both 0"):
        AsrLossConfig(ctc_weight=0.0, transducer_weight=0.0).validate()


def test_builtin_experiment_defaults_are_consistent_and_vocab_comes_from_bpe():
    from speechkd.training.asr_experiment import load_experiment_config

    cfg = load_experiment_config(None, [], vocab_size=48)  # `speechkd asr train` without --config
    assert cfg.model.vocab_size == 48
    with pytest.raises(SpeechkdError, match="disagrees with the BPE model"):
        load_experiment_config(None, ["model.vocab_size=30"], vocab_size=48)


class _StatsDataModule:
    """Stands in for AsrDataModule.global_feature_stats and counts the estimations."""

    def __init__(self, mean: float, std: float) -> None:
        self.value = (torch.full((80,), mean), torch.full((80,), std), 5)
        self.calls = 0

    def global_feature_stats(self, cuts):
        self.calls += 1
        return self.value


def test_global_cmvn_is_estimated_once_per_source_and_put_in_the_model(tmp_path, caplog):
    from speechkd.training.asr_experiment import CMVN_NAME, set_global_cmvn
    from speechkd.training.checkpoint import load_checkpoint

    def model():
        return AsrModel(AsrModelConfig(
            encoder=EncoderConfig(d_model=32, num_layers=1, num_heads=4, ff_dim=32, subsampling_channels=4,
                                  global_cmvn=True),
            vocab_size=10, decoder_dim=16, joiner_dim=16,
        ))

    src = {"train_parts": ["train"], "data": {"features": "precomputed"}}
    dm = _StatsDataModule(-6.0, 4.0)
    first = model()
    set_global_cmvn(first, dm, None, tmp_path, source=src)
    norm = first.encoder.input_norm
    assert norm.ready and norm.num_cuts.item() == 5
    torch.testing.assert_close(norm.mean, torch.full((80,), -6.0))
    torch.testing.assert_close(norm.inv_std, torch.full((80,), 0.25))
    assert load_checkpoint(tmp_path / CMVN_NAME)["source"] == src
    # the same source again (a resumed run): the stored statistics, no new estimate
    set_global_cmvn(model(), _StatsDataModule(0.0, 1.0), None, tmp_path, source=src)
    again = model()
    dm2 = _StatsDataModule(1.0, 2.0)
    set_global_cmvn(again, dm2, None, tmp_path, source=src)
    assert dm2.calls == 0 and again.encoder.input_norm.mean[0].item() == -6.0
    # other training data: estimated again, and said so
    other = model()
    set_global_cmvn(other, dm2, None, tmp_path, source={**src, "train_parts": ["train-other"]})
    assert dm2.calls == 1 and other.encoder.input_norm.mean[0].item() == 1.0
    assert "estimating the statistics again" in caplog.text


def test_task_reports_greedy_ctc_emissions_for_the_plateau_check():
    from speechkd.decoding.ctc import ctc_greedy_search

    model = tiny_model(use_ctc=True, use_transducer=True)
    b = batch([40, 31], [[3, 4, 5], [6, 1]])
    out = AsrTask(AsrLossConfig(ctc_weight=0.3)).compute_loss(model, b, training=False)
    with torch.no_grad():
        enc = model.encode(b["inputs"], b["input_lens"])
        hyps = ctc_greedy_search(model.ctc_log_probs(enc.out), enc.out_lens, model.blank_id)
    assert out.counts == {"ctc_hyp_tokens": float(sum(map(len, hyps))), "ref_tokens": 5.0}
    # without a CTC head there is nothing to count
    out = AsrTask(AsrLossConfig(ctc_weight=0.0)).compute_loss(tiny_model(False, True), b, training=False)
    assert out.counts == {}


def test_task_reports_the_transducers_greedy_emissions_at_validation_once_it_has_trained():
    from speechkd.decoding.transducer import greedy_search

    model = tiny_model(use_ctc=True, use_transducer=True)
    b = batch([40, 31], [[3, 4, 5], [6, 1]])
    step = {"n": 5}
    task = AsrTask(AsrLossConfig(ctc_weight=0.3, ctc_only_steps=3), step_fn=lambda: step["n"])
    task.compute_loss(model, b, training=True)  # step 5 >= 3: the transducer joins
    with torch.no_grad():
        enc = model.encode(b["inputs"], b["input_lens"])
        want = float(sum(len(h) for h in greedy_search(model, enc.out, enc.out_lens)))
    step["n"] = 6
    out = task.compute_loss(model, b, training=False)
    assert out.counts["transducer_hyp_tokens"] == want and out.counts["ref_tokens"] == 5.0
    assert "transducer_hyp_tokens" not in task.compute_loss(model, b, training=True).counts  # validation only
    with torch.no_grad():  # a joiner that only says blank: nothing emitted, which the plateau check flags
        model.joiner.output_linear.weight.zero_()
        model.joiner.output_linear.bias.fill_(-10.0)
        model.joiner.output_linear.bias[model.blank_id] = 10.0
    assert task.compute_loss(model, b, training=False).counts["transducer_hyp_tokens"] == 0.0
    # during the CTC-only phase the transducer is untrained: not counted
    early = AsrTask(AsrLossConfig(ctc_weight=0.3, ctc_only_steps=10), step_fn=lambda: 2)
    early.compute_loss(model, b, training=True)
    assert "transducer_hyp_tokens" not in early.compute_loss(model, b, training=False).counts


def test_initial_weights_are_fixed_by_the_trainer_seed():
    from speechkd.training.asr_experiment import build_asr_model, load_experiment_config

    def weights(seed):
        cfg = load_experiment_config(None, [f"trainer.seed={seed}"], vocab_size=20)
        torch.manual_seed(1234 + seed)  # whatever the global RNG holds must not matter
        return torch.cat([p.detach().flatten() for p in build_asr_model(cfg).parameters()])

    assert torch.equal(weights(0), weights(0))
    assert not torch.equal(weights(0), weights(1))


def test_ctc_only_phase_leaves_the_transducer_out_then_warms_it_up():
    model = tiny_model(use_ctc=True, use_transducer=True)
    b = batch([40, 31], [[3, 4, 5], [6, 1]])
    step = {"n": 0}
    cfg = AsrLossConfig(ctc_weight=0.3, ctc_only_steps=10, warmup_steps=4)
    task = AsrTask(cfg, step_fn=lambda: step["n"])
    out = task.compute_loss(model, b, training=True)
    assert set(out.info) == {"ctc"}  # step 0 < 10: CTC only
    torch.testing.assert_close(out.loss, torch.as_tensor(out.info["ctc"]), rtol=1e-5, atol=1e-5)
    model.zero_grad()
    out.loss.backward()
    assert all(p.grad is None for p in model.decoder.parameters())  # the transducer did not train
    step["n"] = 10
    out = task.compute_loss(model, b, training=True)
    assert {"ctc", "simple", "pruned"} <= set(out.info)
    assert cfg.scales(10) == (1.0, cfg.pruned_warmup_start) and cfg.scales(14) == (cfg.simple_loss_scale, 1.0)
    # validation always reports every term
    assert "pruned" in AsrTask(cfg, step_fn=lambda: 0).compute_loss(model, b, training=False).info
    with pytest.raises(SpeechkdError, match="ctc_only_steps"):
        AsrLossConfig(ctc_weight=0.0, ctc_only_steps=5).validate()


def test_ctc_only_phase_can_last_until_the_encoder_emits_tokens():
    """``ctc_only_until_emission_ratio``: the transducer joins only once greedy CTC emits enough tokens per
    reference token over the window; the warm-up counts from that step, and the step survives a resume."""
    model = tiny_model(use_ctc=True, use_transducer=True)
    b = batch([40, 31], [[3, 4, 5], [6, 1]])
    step = {"n": 0}
    cfg = AsrLossConfig(ctc_weight=0.3, ctc_only_until_emission_ratio=0.3, ctc_only_window=2, warmup_steps=4,
                        ctc_only_min_steps=0)
    task = AsrTask(cfg, step_fn=lambda: step["n"])
    with torch.no_grad():  # a blank-only CTC head: the encoder is "on the plateau"
        model.ctc_output.weight.zero_()
        model.ctc_output.bias.fill_(-10.0)
        model.ctc_output.bias[model.blank_id] = 10.0
    for n in range(5):
        step["n"] = n
        out = task.compute_loss(model, b, training=True)
        assert set(out.info) == {"ctc"} and out.counts["ctc_hyp_tokens"] == 0
    assert task.transducer_start is None
    with torch.no_grad():  # token 3 on every frame: one token per utterance, 2 of 5 reference tokens
        model.ctc_output.bias.fill_(-10.0)
        model.ctc_output.bias[3] = 10.0
    step["n"] = 5
    out = task.compute_loss(model, b, training=True)
    assert set(out.info) == {"ctc"}  # window: (0 + 2) / (5 + 5) = 0.2 < 0.3
    step["n"] = 6
    out = task.compute_loss(model, b, training=True)  # window: (2 + 2) / 10 = 0.4 >= 0.3
    assert {"ctc", "simple", "pruned"} <= set(out.info) and task.transducer_start == 6
    assert cfg.scales(6, task.transducer_start) == (1.0, cfg.pruned_warmup_start)
    # a resumed task continues after the phase, whatever its fresh window says
    resumed = AsrTask(cfg, step_fn=lambda: 7)
    resumed.load_state_dict(task.state_dict())
    with torch.no_grad():
        model.ctc_output.bias.fill_(-10.0)
        model.ctc_output.bias[model.blank_id] = 10.0
    assert "pruned" in resumed.compute_loss(model, b, training=True).info
    # before ctc_only_min_steps the rule is not judged, however much the head emits
    early = AsrTask(AsrLossConfig(ctc_weight=0.3, ctc_only_until_emission_ratio=0.1, ctc_only_window=1,
                                  ctc_only_min_steps=100), step_fn=lambda: 50)
    with torch.no_grad():
        model.ctc_output.bias.fill_(-10.0)
        model.ctc_output.bias[3] = 10.0
    assert set(early.compute_loss(model, b, training=True).info) == {"ctc"} and early.transducer_start is None
    with pytest.raises(SpeechkdError, match="ctc_only_until_emission_ratio"):
        AsrLossConfig(ctc_weight=0.0, ctc_only_until_emission_ratio=0.5).validate()


def test_lr_scale_is_low_during_the_ctc_only_phase_and_ramps_to_one_after_it():
    model = tiny_model(use_ctc=True, use_transducer=True)
    b = batch([40, 31], [[3, 4, 5], [6, 1]])
    step = {"n": 0}
    cfg = AsrLossConfig(ctc_weight=0.3, ctc_only_steps=4, ctc_only_lr_scale=0.5, ctc_only_lr_ramp_steps=4)
    task = AsrTask(cfg, step_fn=lambda: step["n"])
    scales = []
    for n in range(10):
        step["n"] = n
        task.compute_loss(model, b, training=True)
        scales.append(task.lr_scale(n))
    assert task.transducer_start == 4
    assert scales == pytest.approx([0.5] * 4 + [0.5, 0.625, 0.75, 0.875, 1.0, 1.0])
    # before the task has decided (ratio rule, phase not over) the phase's scale holds
    undecided = AsrTask(AsrLossConfig(ctc_weight=0.3, ctc_only_until_emission_ratio=0.5, ctc_only_lr_scale=0.3))
    assert undecided.lr_scale(10_000) == 0.3
    # defaults: no scaling at all
    assert AsrTask(AsrLossConfig(ctc_weight=0.3)).lr_scale(0) == 1.0
    for bad in (dict(ctc_only_lr_scale=0.5),  # no phase to scale
                dict(ctc_only_steps=4, ctc_only_lr_scale=0.0),
                dict(ctc_only_steps=4, ctc_only_lr_ramp_steps=-1),
                dict(ctc_only_lr_ramp_steps=10)):
        with pytest.raises(SpeechkdError, match="ctc_only_lr"):
            AsrLossConfig(ctc_weight=0.3, **bad).validate()


def _count_host_reads(monkeypatch) -> dict:
    """Counts the tensor-to-Python conversions (each a device sync on CUDA) made while patched."""
    calls = {"n": 0}
    for name in ("item", "tolist", "__float__", "__int__", "__bool__"):
        real = getattr(torch.Tensor, name)

        def counted(self, *a, _real=real, **k):
            calls["n"] += 1
            return _real(self, *a, **k)

        monkeypatch.setattr(torch.Tensor, name, counted)
    return calls


def test_a_training_step_of_the_task_reads_back_only_what_it_needs(monkeypatch):
    """The logged losses and counts stay device tensors (the trainer reads them once per log interval):
    a CTC step reads back only what its checks need (before: 7 reads, one per logged value on top)."""
    from speechkd.training.trainer import _Meter

    model = tiny_model(use_ctc=True, use_transducer=False).train()
    b = batch([40, 31], [[3, 4, 5], [6, 1]])
    task = AsrTask(AsrLossConfig(ctc_weight=1.0, transducer_weight=0.0), step_fn=lambda: 0)
    calls = _count_host_reads(monkeypatch)
    out = task.compute_loss(model, b, training=True)
    meter = _Meter()
    meter.add(out, out.loss.detach(), 1.0)
    meter.add(out, out.loss.detach(), 1.0)
    # the input checks of the encoder and of the CTC loss (max length), and ctc_term's feasibility check
    assert calls["n"] == 3
    assert all(isinstance(v, torch.Tensor) for v in [out.num_frames, *out.info.values(), out.counts["ctc_hyp_tokens"]])
    monkeypatch.undo()
    per_frame = meter.per_frame()  # the interval's read-back: the sums over both steps
    frames = 2 * float(out.num_frames)
    assert per_frame["loss"] == pytest.approx(2 * float(out.loss) / frames)
    assert per_frame["ctc"] == pytest.approx(2 * float(out.info["ctc"]) / frames)
    assert meter.counts == {"ctc_hyp_tokens": 2 * float(out.counts["ctc_hyp_tokens"]), "ref_tokens": 10.0}


def _aux_energy(model, enc, b):
    """A stand-in transcript-free auxiliary term: the valid encoder frames' mean square, per row summed."""
    mask = torch.arange(enc.out.shape[1])[None, :] < enc.out_lens[:, None]  # (N, T)
    loss = (enc.out.pow(2).mean(-1) * mask).sum()
    return 0.1 * loss, {"codebook": loss.detach() * 0.1}


def test_untranscribed_rows_get_only_the_transcript_free_terms():
    """A row marked untranscribed (batch["transcribed"] False) adds its auxiliary loss and nothing else: the
    batch's loss is the CTC + transducer loss of its transcribed rows alone plus the auxiliary term of all
    rows; a batch of untranscribed rows alone gets the auxiliary term only; without one it is an error."""
    model = tiny_model(True, True)
    torch.manual_seed(3)
    x = torch.randn(3, 40, 20)
    lens, toks = torch.tensor([40, 40, 33]), [[1, 2, 3], [], [4, 5]]
    mixed = {"inputs": x, "input_lens": lens, "tokens": toks, "cut_ids": ["a", "pool", "c"],
             "transcribed": [True, False, True]}
    only = {"inputs": x[[0, 2]], "input_lens": lens[[0, 2]], "tokens": [toks[0], toks[2]], "cut_ids": ["a", "c"]}
    cfg = AsrLossConfig(ctc_weight=0.3, transducer_weight=1.0, prune_range=4, warmup_steps=0, rnnt_backend="portable")
    task, plain = AsrTask(cfg), AsrTask(cfg)
    task.aux_terms.append(_aux_energy)
    with torch.no_grad():
        got = task.compute_loss(model, mixed, training=False)
        asr = plain.compute_loss(model, only, training=False)
        aux, _ = _aux_energy(model, model.encode(x, lens), mixed)
        pool = {**mixed, "transcribed": [False, False, False], "tokens": [[], [], []]}
        alone = task.compute_loss(model, pool, training=False)
    assert float(got.loss) == pytest.approx(float(asr.loss) + float(aux), rel=1e-5)
    assert float(got.info["ctc"]) == pytest.approx(float(asr.info["ctc"]), rel=1e-5)
    assert got.counts["untranscribed_utts"] == 1.0 and got.counts["ref_tokens"] == 5.0
    assert float(alone.loss) == pytest.approx(float(aux), rel=1e-5) and set(alone.info) == {"codebook"}
    assert alone.counts == {"untranscribed_utts": 3.0}
    with pytest.raises(SpeechkdError, match=r"1 untranscribed utterance\(s\) in a batch \(e.g. pool\) but no transcript-free loss"):
        with torch.no_grad():
            plain.compute_loss(model, mixed, training=False)
