"""evaluate-upstream: probe model, probe training/decoding, report tables, the whole command on tiny models."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import pytest
import torch
import yaml

from speechkd.errors import SpeechkdError

TINY_TEACHER = dict(
    hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=64,
    conv_dim=(16, 16, 16), conv_kernel=(10, 3, 3), conv_stride=(5, 4, 2),
    num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2,
)
TINY_STUDENT = dict(hidden_size=32, num_heads=2, ffn_dim=64, pred_head_layers=[2, 4])
PARTS = {"train": 6, "dev": 2, "test": 2}


def test_weighted_sum_matches_hand_computation():
    from speechkd.models.probe import ProbeModelConfig, WeightedSumCtcProbe

    probe = WeightedSumCtcProbe(3, 2, 5, ProbeModelConfig(lstm_hidden=4, layer_norm=False))
    with torch.no_grad():
        probe.layer_logits.copy_(torch.log(torch.tensor([1.0, 2.0, 5.0])))  # softmax -> 1/8, 2/8, 5/8
    layers = torch.tensor([1.0, 2.0, 3.0]).view(3, 1, 1, 1).expand(3, 1, 1, 2)
    expected = (1 * 1 + 2 * 2 + 5 * 3) / 8.0
    torch.testing.assert_close(probe.weighted_sum(layers), torch.full((1, 1, 2), expected))
    log_probs, lens = probe(torch.randn(3, 2, 7, 2), torch.tensor([7, 4]))
    assert log_probs.shape == (2, 7, 5) and lens.tolist() == [7, 4]
    torch.testing.assert_close(log_probs.exp().sum(-1), torch.ones(2, 7))
    with pytest.raises(SpeechkdError, match="L=3"):
        probe.weighted_sum(torch.randn(2, 1, 1, 2))


def test_probe_learns_and_decodes_to_a_wer_file(tmp_path):
    from speechkd.data.datamodule import AsrDataModule, DataConfig
    from speechkd.decoding.scoring import write_results
    from speechkd.evaluation.upstream import FbankUpstream, ProbeConfig, decode_probe, train_probe
    from speechkd.models.probe import ProbeModelConfig
    from speechkd.testing.toy import ToyTokenizer, make_toy_cuts

    cuts = make_toy_cuts(tmp_path / "audio", num_cuts=2, min_duration=1.0, max_duration=1.0)
    tok = ToyTokenizer()
    dm = AsrDataModule(DataConfig(input="audio", max_duration=10.0, num_buckets=2, num_workers=0, drop_last=False,
                                  min_cut_duration=0.0, max_cut_duration=5.0), tokenizer=tok)
    cfg = ProbeConfig(model=ProbeModelConfig(lstm_hidden=32, lstm_layers=1, dropout=0.0), max_steps=25, lr=1e-2)
    up = FbankUpstream()
    probe, losses = train_probe(up, tok.vocab_size, dm.train_dataloader(cuts), cfg, torch.device("cpu"))
    assert len(losses) == 25
    assert losses[-1] < 0.5 * losses[0], losses
    results = decode_probe(up, probe, tok, dm.eval_dataloader(cuts), torch.device("cpu"))
    assert sorted(r[0] for r in results) == sorted(c.id for c in cuts)
    stats = write_results(results, tmp_path / "wer", test_set="toy", tag="fbank")
    assert (tmp_path / "wer" / "recogs-toy-fbank.txt").is_file()
    assert 0.0 <= stats.wer <= 100.0 * max(1, stats.hyp_words)


def test_layer_cache_runs_the_upstream_once_per_cut_and_matches_it(tmp_path):
    from speechkd.data.datamodule import AsrDataModule, DataConfig
    from speechkd.evaluation.upstream import FbankUpstream, LayerCache, probe_batches, probe_inputs
    from speechkd.testing.toy import ToyTokenizer, make_toy_cuts

    cuts = make_toy_cuts(tmp_path / "audio", num_cuts=4, min_duration=0.5, max_duration=1.5)
    dm = AsrDataModule(DataConfig(input="audio", max_duration=2.5, num_buckets=2, num_workers=0, drop_last=False,
                                  min_cut_duration=0.0, max_cut_duration=2.0, seed=3), tokenizer=ToyTokenizer())
    calls = []

    class Counting(FbankUpstream):
        def __call__(self, wavs, wav_lens):
            calls.append(len(wavs))
            return super().__call__(wavs, wav_lens)

    up = Counting()
    cache = LayerCache(up)
    cpu = torch.device("cpu")
    batches = list(probe_batches(dm.train_dataloader(cuts), 12))  # several epochs, reshuffled batches
    for batch in batches:
        layers, lens = cache.inputs(batch, cpu)
        ref_layers, ref_lens = probe_inputs(FbankUpstream(), batch, cpu)
        assert lens.tolist() == ref_lens.tolist()
        for i, n in enumerate(lens.tolist()):  # valid frames equal up to float16 storage, padding is zero
            torch.testing.assert_close(layers[:, i, :n], ref_layers[:, i, :n], atol=2e-2, rtol=2e-3)
            assert not layers[:, i, n:].any()
    assert sorted(cache.store) == sorted(c.id for c in cuts)
    assert sum(calls) <= len(cuts) + 2 and len(calls) < len(batches), calls  # one forward per unseen batch


def test_render_report_rows():
    from speechkd.evaluation.upstream import render_report

    report = {
        "student": "s", "teacher": "t", "dev_parts": ["dev"], "train_parts": ["train"], "test_parts": ["a", "b"],
        "probe_steps": 7, "cpu_threads": 2,
        "heads": {4: {"cos": 0.91234, "l1": 0.5}},
        "probe": {"fbank": {"wer": {"a": 50.0, "b": 12.345}, "final_loss": 1.5, "layer_weights": [1.0]}},
        "compression": {"student": {"parameters": 2_500_000, "memory_bytes": 10_000_000, "disk_bytes": 9_000_000,
                                    "rtf_cpu": 0.0123}},
    }
    md = render_report(report).splitlines()
    assert "| 4 | 0.9123 | 0.5000 |" in md
    assert "| fbank | 50.00 | 12.35 | 1.500 | 1.00 |" in md
    assert "| student | 2.50M | 10.0 | 9.0 | 0.0123 | - |" in md


def _save_tiny_hubert(out: Path) -> Path:
    from transformers import HubertConfig, HubertModel

    torch.manual_seed(0)
    HubertModel(HubertConfig(**TINY_TEACHER)).save_pretrained(out)
    return out


def test_evaluate_upstream_end_to_end(tmp_path):
    from speechkd.data.collate import cut_text
    from speechkd.evaluation.upstream import REPORT_MD, REPORT_YAML, evaluate_upstream
    from speechkd.testing.toy import make_toy_cuts
    from speechkd.text.tokenizer import train_bpe
    from speechkd.training.distill_experiment import train_distill

    teacher_dir = _save_tiny_hubert(tmp_path / "teacher")
    cuts_dir = tmp_path / "cuts"
    cuts_dir.mkdir()
    texts = []
    for seed, (part, n) in enumerate(PARTS.items()):
        cuts = make_toy_cuts(tmp_path / part, num_cuts=n, min_duration=1.0, max_duration=1.5, seed=seed)
        cuts.to_file(cuts_dir / f"librispeech_cuts_{part}.jsonl.gz")
        texts += [cut_text(c) for c in cuts]
    bpe = train_bpe(texts * 3, tmp_path / "lang", vocab_size=14)
    conf = tmp_path / "distill.yaml"
    conf.write_text(yaml.safe_dump({
        "teacher": {"path": str(teacher_dir)}, "student": TINY_STUDENT,
        "data": {"input": "audio", "max_duration": 10.0, "max_cut_duration": 5.0, "num_buckets": 2,
                 "num_workers": 0, "drop_last": False},
        "trainer": {"max_steps": 2, "tensorboard": False, "progress_bar": False, "valid_every_n": 0},
    }))
    exp = tmp_path / "exp"
    train_distill(conf, [], exp, cuts_dir, ["train"], [])
    sets = ["probe.max_steps=3", "probe.model.lstm_hidden=8", "probe.max_duration=10", "probe.max_cut_duration=5",
            "rtf_utterances=1", "rtf_warmup=0"]
    path = evaluate_upstream(exp, cuts_dir, bpe, ["train"], ["dev"], ["dev", "test"], overrides=sets, device="cpu")
    assert path == exp / "upstream" / REPORT_MD
    report = yaml.safe_load((exp / "upstream" / REPORT_YAML).read_text())
    assert set(report["heads"]) == {2, 4}
    for v in report["heads"].values():
        assert -1.0 <= v["cos"] <= 1.0 and v["l1"] > 0
    assert list(report["probe"]) == ["fbank", "teacher", "student"]
    assert [len(r["layer_weights"]) for r in report["probe"].values()] == [1, 5, 3]  # fbank, 4+1, 2+1 layers
    for name in ("fbank", "teacher", "student"):
        for part in ("dev", "test"):
            assert (exp / "upstream" / "probe" / f"recogs-{part}-{name}.txt").is_file()
    comp = report["compression"]
    assert comp["fbank"]["parameters"] == 0
    assert comp["teacher"]["parameters"] > comp["student"]["parameters"] > 0
    assert comp["student"]["disk_bytes"] == (exp / "upstream" / "student-hf" / "model.safetensors").stat().st_size
    assert all(math.isfinite(r["rtf_cpu"]) and r["rtf_cpu"] > 0 for r in comp.values())
    md = path.read_text()
    for row in ("| 2 |", "| 4 |", "| fbank |", "| teacher |", "| student |"):
        assert md.count(row) >= 1, row
    assert md.count("| teacher |") == 2 and md.count("| student |") == 2  # probe + compression tables


def test_bilstm_valid_frames_ignore_padding():
    from speechkd.models.probe import ProbeModelConfig, WeightedSumCtcProbe, reverse_padded

    x = torch.arange(6.0).view(1, 6, 1).expand(2, 6, 1)
    assert reverse_padded(x, torch.tensor([4, 6]))[:, :, 0].tolist() == [[3, 2, 1, 0, 4, 5], [5, 4, 3, 2, 1, 0]]
    torch.manual_seed(0)
    probe = WeightedSumCtcProbe(2, 3, 5, ProbeModelConfig(lstm_hidden=4, dropout=0.0)).eval()
    short = torch.randn(2, 1, 4, 3)
    padded = torch.cat([short, torch.randn(2, 1, 3, 3)], dim=2)  # garbage after frame 4
    alone, _ = probe(short, torch.tensor([4]))
    batched, _ = probe(padded, torch.tensor([4]))
    torch.testing.assert_close(batched[:, :4], alone)


def test_teacher_upstream_chunks_inputs_longer_than_its_limit(tmp_path):
    from speechkd.evaluation.upstream import TeacherUpstream
    from speechkd.teachers import load_teacher

    teacher = load_teacher(str(_save_tiny_hubert(tmp_path / "t")))
    wav = torch.randn(1, 4000)
    up = TeacherUpstream(teacher, str(tmp_path / "t"), max_samples=1600)  # chunks of 1600, 1600, 800 samples
    hidden, lens = up(wav, torch.tensor([4000]))
    pieces = [teacher(wav[:, a:b]) for a, b in ((0, 1600), (1600, 3200), (3200, 4000))]
    assert int(lens[0]) == sum(int(p.lens[0]) for p in pieces)
    assert len(hidden) == teacher.num_layers + 1
    torch.testing.assert_close(hidden[-1][0], torch.cat([p.hidden_states[-1][0] for p in pieces]))


def test_layer_cache_never_exceeds_its_cap_and_gives_the_same_layers(tmp_path, caplog):
    from speechkd.data.datamodule import AsrDataModule, DataConfig
    from speechkd.evaluation.upstream import FbankUpstream, LayerCache, ProbeConfig, probe_batches

    from speechkd.testing.toy import ToyTokenizer, make_toy_cuts

    assert ProbeConfig().cache_max_gb > 0  # bounded by default
    cuts = make_toy_cuts(tmp_path / "audio", num_cuts=6, min_duration=0.5, max_duration=1.5)
    dm = AsrDataModule(DataConfig(input="audio", max_duration=2.5, num_buckets=2, num_workers=0, drop_last=False,
                                  min_cut_duration=0.0, max_cut_duration=2.0, seed=3), tokenizer=ToyTokenizer())
    cpu = torch.device("cpu")
    batches = list(probe_batches(dm.train_dataloader(cuts), 10))
    unbounded = LayerCache(FbankUpstream())
    cap = 2 * 100 * 80 * 2 + 1  # about two cuts of ~1 s (100 frames x 80 bins, float16)
    bounded = LayerCache(FbankUpstream(), max_bytes=cap)
    with caplog.at_level(logging.WARNING):
        for batch in batches:
            a, a_lens = unbounded.inputs(batch, cpu)
            b, b_lens = bounded.inputs(batch, cpu)
            assert torch.equal(a_lens, b_lens) and torch.equal(a, b)
    assert 0 < bounded.num_bytes <= cap and len(bounded.store) < len(cuts) == len(unbounded.store)
    assert sum("layer cache full" in r.message for r in caplog.records) == 1
