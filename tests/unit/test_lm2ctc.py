"""LM-to-CTC distillation: soft labels, their metadata checks, the decoders' term, decoding without decoders."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import yaml

from speechkd.errors import SpeechkdError
from speechkd.targets.lm_soft_labels import (
    FIELD_IDS,
    FIELD_PROBS,
    FIELD_TOKENS,
    check_soft_label_metadata,
    make_soft_labels,
    read_soft_label_metadata,
)
from speechkd.teachers.masked_lm import MaskedLmTeacher
from speechkd.testing.tiny_lm import make_tiny_masked_lm

TEXTS = ["IT IS A TRUTH UNIVERSALLY ACKNOWLEDGED", "THAT A SINGLE MAN IN POSSESSION OF A GOOD FORTUNE",
         "MUST BE IN WANT OF A WIFE", "HOWEVER LITTLE KNOWN THE FEELINGS OR VIEWS OF SUCH A MAN MAY BE"]


@pytest.fixture(scope="module")
def lm_dir(tmp_path_factory):
    return make_tiny_masked_lm(tmp_path_factory.mktemp("lm") / "lm", TEXTS, seed=0)


def _direct(model, tokenizer, ids, pos, temperature):
    """Full distribution at ``pos`` of one unpadded sequence with only ``pos`` masked."""
    seq = [tokenizer.cls_token_id, *ids, tokenizer.sep_token_id]
    seq[1 + pos] = tokenizer.mask_token_id
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([seq])).logits[0, 1 + pos]
    return (logits / temperature).softmax(-1)


def test_soft_labels_equal_a_direct_per_position_computation(lm_dir):
    teacher = MaskedLmTeacher.load(lm_dir, batch_size=3)  # batches cut across utterances, with padding
    utts = teacher.tokenize(["must be in want of a wife", "A SINGLE MAN", "it is a truth"])
    labels = teacher.soft_labels(utts, k=5, temperature=3.0)
    for u, sl in zip(utts, labels):
        assert sl.tokens.tolist() == u and sl.topk_ids.shape == (len(u), 5) and sl.topk_probs.dtype == np.float16
        for i in range(len(u)):
            p = _direct(teacher.model, teacher.tokenizer, u, i, 3.0)
            top = torch.topk(p, 5)
            assert set(sl.topk_ids[i].tolist()) == set(top.indices.tolist())
            want = p[torch.from_numpy(sl.topk_ids[i].astype(np.int64))]
            np.testing.assert_allclose(sl.topk_probs[i].astype(np.float32), (want / want.sum()).numpy(), atol=2e-3)
    # a temperature changes the labels (the test can see a wrong temperature)
    assert not np.allclose(teacher.soft_labels(utts[:1], 5, 1.0)[0].topk_probs, labels[0].topk_probs, atol=1e-3)


def test_soft_labels_project_to_the_vocabulary_at_masked_positions_only(lm_dir):
    teacher = MaskedLmTeacher.load(lm_dir, batch_size=4)
    utts = teacher.tokenize(TEXTS)
    seen = []
    hook = teacher.model.get_output_embeddings().register_forward_hook(lambda m, a, out: seen.append(out.shape))
    labels = teacher.soft_labels(utts, k=5, temperature=3.0)
    hook.remove()
    vocab = teacher.vocab_size
    assert teacher._gather_ok is True
    # after the first batch's check (one gathered and one full call), every call projects one position per row
    assert seen[0][1:] == (1, vocab) and seen[1][2] == vocab and seen[1][1] > 1
    assert all(shape[1:] == (1, vocab) for shape in seen[2:]) and len(seen) == 2 + math.ceil(sum(map(len, utts)) / 4)
    # an LM whose get_output_embeddings() is not the last layer of its head falls back to the full output
    other = MaskedLmTeacher.load(lm_dir, batch_size=4)
    other.model.get_output_embeddings = other.model.get_input_embeddings  # gathering ids changes the result
    fallback = other.soft_labels(utts, k=5, temperature=3.0)
    assert other._gather_ok is False
    for a, b in zip(labels, fallback):
        np.testing.assert_array_equal(a.topk_ids, b.topk_ids)
        np.testing.assert_allclose(a.topk_probs.astype(np.float32), b.topk_probs.astype(np.float32), atol=2e-3)


def test_soft_labels_in_bfloat16_stay_close_to_float32_and_a_bad_dtype_is_refused(lm_dir):
    fp32 = MaskedLmTeacher.load(lm_dir, batch_size=8)
    bf16 = MaskedLmTeacher.load(lm_dir, batch_size=8, dtype="bfloat16")
    utts = fp32.tokenize(TEXTS)
    dtypes = []
    hook = bf16.model.get_output_embeddings().register_forward_hook(lambda m, a, out: dtypes.append(out.dtype))
    a, b = fp32.soft_labels(utts, k=5, temperature=3.0), bf16.soft_labels(utts, k=5, temperature=3.0)
    hook.remove()
    assert dtypes[:2] == [torch.float32] * 2 and set(dtypes[2:]) == {torch.bfloat16}  # the check, then bf16
    same_top1 = sum(int(x.topk_ids[i, 0] == y.topk_ids[i, 0]) for x, y in zip(a, b) for i in range(len(x.tokens)))
    assert same_top1 >= 0.9 * sum(map(len, utts))
    for x, y in zip(a, b):
        assert y.topk_probs.dtype == np.float16 and np.allclose(y.topk_probs.astype(np.float32).sum(-1), 1.0, atol=5e-3)
        assert abs(float(x.topk_probs[:, 0].astype(np.float32).mean() - y.topk_probs[:, 0].astype(np.float32).mean())) < 0.02
    with pytest.raises(SpeechkdError, match="dtype 'int8'"):
        MaskedLmTeacher.load(lm_dir, dtype="int8")


def _cuts(tmp_path, texts):
    from lhotse import CutSet

    from speechkd.testing.toy import make_toy_cuts

    cuts = list(make_toy_cuts(tmp_path / "audio", num_cuts=len(texts)))
    for c, t in zip(cuts, texts):
        c.supervisions[0].text = t
    path = tmp_path / "in" / "librispeech_cuts_train.jsonl.gz"
    path.parent.mkdir()
    CutSet.from_cuts(cuts).to_file(path)
    return path


def test_sharded_soft_labels_on_cuts_skip_and_count_bad_transcripts(lm_dir, tmp_path):
    texts = [*TEXTS, "", " ".join("ABCDEFGHIJKLMNOPQRSTUVWXY")]  # one tokenises to nothing, one is too long
    src = _cuts(tmp_path, texts)
    teacher = MaskedLmTeacher.load(lm_dir, batch_size=7)
    out = make_soft_labels(src, tmp_path / "sl", "train", teacher, k=4, temperature=2.0, max_tokens=20, num_shards=2)
    from lhotse import CutSet

    cuts = list(CutSet.from_file(out))
    assert len(cuts) == 4
    meta = read_soft_label_metadata(tmp_path / "sl")
    assert meta["parts"]["train"]["skipped_by_reason"] == {"empty_lm_tokens": 1, "too_many_lm_tokens": 1}
    listed = (tmp_path / "sl" / "skipped-train.tsv").read_text().splitlines()[1:]
    assert sorted(r.split("\t")[0] for r in listed) == ["toy-004", "toy-005"]
    assert (meta["k"], meta["temperature"], meta["max_tokens"]) == (4, 2.0, 20)
    assert meta["lm_fingerprint"] == teacher.fingerprint() and meta["vocab_size"] == teacher.vocab_size
    direct = teacher.soft_labels(teacher.tokenize(TEXTS), 4, 2.0)
    for cut, want in zip(cuts, direct):
        np.testing.assert_array_equal(cut.load_custom(FIELD_TOKENS), want.tokens)
        np.testing.assert_array_equal(cut.load_custom(FIELD_IDS), want.topk_ids)
        np.testing.assert_array_equal(cut.load_custom(FIELD_PROBS), want.topk_probs)
    # collated per token (axis 0 of a plain Array), padded with -100 / 0
    from speechkd.data.collate import collate_targets

    batch = collate_targets(cuts[:2], [FIELD_TOKENS, FIELD_PROBS])
    assert batch[FIELD_TOKENS + "_lens"].tolist() == [len(d.tokens) for d in direct[:2]]
    assert batch[FIELD_PROBS].shape[-1] == 4
    # resuming with other settings into the same directory is refused, naming both values
    with pytest.raises(SpeechkdError, match="k: 4 there, 8 now"):
        make_soft_labels(src, tmp_path / "sl", "train", teacher, k=8, temperature=2.0, max_tokens=20, num_shards=2)
    assert "lm_dtype" not in meta  # float32: absent, as in soft labels made before the option existed
    # another compute dtype is recorded, and a part made in it cannot join float32 labels
    bf16 = MaskedLmTeacher.load(lm_dir, batch_size=7, dtype="bfloat16")
    make_soft_labels(src, tmp_path / "sl16", "train", bf16, k=4, temperature=2.0, max_tokens=20, num_shards=1)
    assert read_soft_label_metadata(tmp_path / "sl16")["lm_dtype"] == "bfloat16"
    with pytest.raises(SpeechkdError, match="lm_dtype: None there, 'bfloat16' now"):
        make_soft_labels(src, tmp_path / "sl", "dev", bf16, k=4, temperature=2.0, max_tokens=20, num_shards=1)


def test_metadata_mismatch_names_both_values():
    meta = {"lm": "a", "lm_fingerprint": "f1", "tokenizer_fingerprint": "t", "vocab_size": 10, "k": 8, "temperature": 3.0}
    check_soft_label_metadata(meta, {"k": 8, "temperature": 3.0, "lm_fingerprint": "f1"}, "x")
    with pytest.raises(SpeechkdError, match=r"k: 8 in the soft labels vs 4 in the training config"):
        check_soft_label_metadata(meta, {"k": 4, "temperature": 3.0}, "x")
    with pytest.raises(SpeechkdError, match=r"lm_fingerprint: 'f1' in the soft labels vs 'f2'"):
        check_soft_label_metadata(meta, {"lm_fingerprint": "f2"}, "x")


def test_decoder_term_handles_tokenizer_mismatch_and_long_utterances():
    """BPE tokens (CTC) and LM tokens (decoders) of different lengths in one batch; an over-long LM
    transcript is left out of the decoder term and counted; gradients reach decoders and encoder."""
    from speechkd.models.asr import AsrModel, AsrModelConfig
    from speechkd.tasks.asr import AsrLossConfig, AsrTask
    from speechkd.tasks.lm_kd import LmKdLossConfig

    cfg = AsrModelConfig(vocab_size=12, use_transducer=False)
    cfg.encoder.num_layers, cfg.encoder.d_model, cfg.encoder.ff_dim, cfg.encoder.input_dim = 3, 16, 16, 8
    cfg.encoder.num_heads, cfg.encoder.subsampling_channels = 2, 4
    cfg.attention_decoders.layers, cfg.attention_decoders.vocab_size = [1, 3], 30
    cfg.attention_decoders.d_model, cfg.attention_decoders.ff_dim, cfg.attention_decoders.num_heads = 8, 16, 2
    cfg.attention_decoders.max_tokens = 5
    torch.manual_seed(0)
    model = AsrModel(cfg)
    task = AsrTask(AsrLossConfig(ctc_weight=1.0, transducer_weight=0.0,
                                 lm_kd=LmKdLossConfig(weight=0.5, lm="tiny", k=3)))
    n, u = 3, 6
    lm_lens = torch.tensor([4, 2, 6])  # the third is longer than max_tokens=5
    batch = {
        "inputs": torch.randn(n, 80, 8), "input_lens": torch.tensor([80, 70, 60]), "cut_ids": ["a", "b", "c"],
        "tokens": [[1, 2, 3, 4, 5, 6, 7], [3], [4, 5]],  # BPE: other lengths than the LM's
        "targets": {
            FIELD_TOKENS: torch.randint(0, 30, (n, u)), FIELD_TOKENS + "_lens": lm_lens,
            FIELD_IDS: torch.randint(0, 30, (n, u, 3)), FIELD_IDS + "_lens": lm_lens,
            FIELD_PROBS: torch.full((n, u, 3), 1 / 3), FIELD_PROBS + "_lens": lm_lens,
        },
    }
    out = task.compute_loss(model, batch, training=True)
    assert out.info["lm_ce"] > 0 and out.info["lm_kl"] > 0
    assert task.aux_terms[0].num_left_out == 1
    out.loss.backward()
    for layer in ("1", "3"):
        assert model.attention_decoders[layer].out.weight.grad.abs().sum() > 0
    assert model.encoder.layers[0].norm_out.weight.grad.abs().sum() > 0
    # the third utterance changes nothing in the decoder term (it was left out)
    batch["targets"][FIELD_TOKENS][2] = (batch["targets"][FIELD_TOKENS][2] + 1) % 30
    model.eval()
    a = task.aux_terms[0](model, model.encode(batch["inputs"], batch["input_lens"]), batch)[0]
    batch["targets"][FIELD_TOKENS][2] = (batch["targets"][FIELD_TOKENS][2] + 1) % 30
    b = task.aux_terms[0](model, model.encode(batch["inputs"], batch["input_lens"]), batch)[0]
    assert torch.allclose(a, b)


@pytest.mark.parametrize("history", [True, False])
def test_a_decoder_without_history_predicts_from_the_audio_alone(history):
    """history=true: output u depends on the reference tokens before u (teacher forcing, causal) and not after;
    history=false: the tokens change nothing (position queries only), the memory still does."""
    from speechkd.models.attention_decoder import AttentionDecoder, AttentionDecodersConfig

    cfg = AttentionDecodersConfig(layers=[1], vocab_size=20, d_model=8, ff_dim=16, num_heads=2, max_tokens=6,
                                  dropout=0.0, history=history)
    torch.manual_seed(0)
    dec = AttentionDecoder(12, cfg).eval()
    memory, mem_lens = torch.randn(2, 9, 12), torch.tensor([9, 7])
    tokens, lens = torch.randint(0, 20, (2, 5)), torch.tensor([5, 3])
    base = dec(memory, mem_lens, tokens, lens)
    changed = tokens.clone()
    changed[:, 2] = (changed[:, 2] + 1) % 20  # token 3 (0-based 2) feeds output 3 onwards
    out = dec(memory, mem_lens, changed, lens)
    assert torch.allclose(out[:, :3], base[:, :3], atol=1e-6)  # outputs up to the changed token never see it
    assert torch.allclose(out[0, 3:], base[0, 3:], atol=1e-6) != history
    assert (dec.embed is None) != history
    assert not torch.allclose(dec(memory.flip(0), mem_lens.flip(0), tokens, lens)[0], base[0])


TINY_ASR = [
    "model.encoder.num_layers=2", "model.encoder.d_model=16", "model.encoder.ff_dim=16",
    "model.encoder.num_heads=2", "model.encoder.subsampling_channels=4", "model.use_transducer=false",
    "loss.ctc_weight=1.0", "loss.transducer_weight=0.0", "model.attention_decoders.layers=[1,2]",
    "model.attention_decoders.d_model=8", "model.attention_decoders.ff_dim=16", "model.attention_decoders.num_heads=2",
    "loss.lm_kd.weight=0.5", "loss.lm_kd.k=4", "loss.lm_kd.temperature=2.0",
    "trainer.progress_bar=false", "trainer.tensorboard=false", "trainer.save_every_n=1", "trainer.max_steps=2",
    "data.num_workers=0", "data.num_buckets=2", "data.drop_last=false",
]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, lm_dir):
    from speechkd.data.features import compute_fbank
    from speechkd.data.prepare import prepare_librispeech
    from speechkd.testing.fake_librispeech import make_fake_librispeech
    from speechkd.text.tokenizer import texts_from_manifests, train_bpe

    root = tmp_path_factory.mktemp("lm2ctc")
    make_fake_librispeech(root / "LS", {"train": (2, 1, 3)}, seed=5)
    prepare_librispeech(root / "LS", root / "manifests")
    compute_fbank(root / "manifests", root / "fbank", ["train"])
    cuts = root / "fbank" / "librispeech_cuts_train.jsonl.gz"
    bpe = train_bpe(list(texts_from_manifests([cuts])), root / "lang", 24)
    lm = make_tiny_masked_lm(root / "lm", list(texts_from_manifests([cuts])), seed=0, max_positions=130)
    teacher = MaskedLmTeacher.load(lm)
    make_soft_labels(cuts, root / "sl", "train", teacher, k=4, temperature=2.0)
    return root, bpe, lm


def _train(root, bpe, lm, exp, extra=()):
    from speechkd.cli import main

    sets = [arg for kv in [*TINY_ASR, f"loss.lm_kd.lm={lm}", *extra] for arg in ("--set", kv)]
    return main(["asr", "train", "--exp-dir", str(exp), "--cuts-dir", str(root / "sl"), "--train-parts", "train",
                 "--bpe-model", str(bpe), *sets])


def test_lm_kd_training_then_decoding_model_has_no_decoders(corpus, tmp_path):
    from speechkd.cli import main
    from speechkd.decoding.asr_decode import load_model_for_decoding

    root, bpe, lm = corpus
    exp = tmp_path / "exp"
    assert _train(root, bpe, lm, exp) == 0
    ckpt = torch.load(exp / "checkpoint-2.pt", weights_only=False)
    assert any(k.startswith("attention_decoders.2.") for k in ckpt["model"])  # trained with decoders
    assert main(["asr", "average", "--exp-dir", str(exp), "--avg", "1", "--by", "step"]) == 0
    avg = torch.load(exp / "averaged.pt", weights_only=False)["model"]
    assert avg and not any(k.startswith("attention_decoders") for k in avg)
    for checkpoint in (None, exp / "checkpoint-2.pt"):  # the averaged model, and a raw training checkpoint
        model, cfg, _ = load_model_for_decoding(exp, checkpoint)
        assert model.attention_decoders is None
        assert not any(n.startswith("attention_decoders") for n, _ in model.named_parameters())
        assert cfg.model.attention_decoders.layers == [1, 2]  # the experiment still says how it was trained
    cuts = str(root / "fbank" / "librispeech_cuts_train.jsonl.gz")
    ngram = tmp_path / "ngram.pt"
    assert main(["lm2ctc", "train-ngram", "--cuts", cuts, "--bpe-model", str(bpe), "--order", "3", "--out", str(ngram)]) == 0
    assert main(["asr", "decode", "--exp-dir", str(exp), "--parts", "train", "--methods", "ctc-greedy", "ctc-beam",
                 "--beam-size", "3", "--ngram-lm", str(ngram), "--lm-weight", "0.3", "--cuts-dir", str(root / "fbank")]) == 0
    summary = (exp / "decode" / "wer-summary.tsv").read_text()
    assert "ctc-greedy" in summary and "ctc-beam3-lm0.3" in summary
    # an LM given to methods that do not use it is refused before decoding
    assert main(["asr", "decode", "--exp-dir", str(exp), "--parts", "train", "--methods", "ctc-greedy",
                 "--ngram-lm", str(ngram), "--cuts-dir", str(root / "fbank")]) != 0
    assert main(["asr", "decode", "--exp-dir", str(exp), "--parts", "train", "--methods", "ctc-beam",
                 "--insertion-bonus", "1.0", "--cuts-dir", str(root / "fbank")]) != 0  # a bonus without an LM
    # the speed bench times decoding models: their parameter count excludes the decoders
    table = tmp_path / "rtf.md"
    assert main(["lm2ctc", "rtf", "--exp-dirs", str(exp), str(exp), "--names", "kd", "again", "--cuts-dir",
                 str(root / "fbank"), "--part", "train", "--repeats", "1", "--output", str(table)]) == 0
    trained = sum(v.numel() for v in ckpt["model"].values() if v.is_floating_point())
    decoding = sum(v.numel() for v in avg.values() if v.is_floating_point())
    assert decoding < trained and f"| kd | ctc-greedy | {model.num_params()} |" in table.read_text()


@pytest.mark.parametrize("extra, message", [
    (["loss.lm_kd.k=8"], "k: 4 in the soft labels vs 8 in the training config"),
    (["loss.lm_kd.temperature=3.0"], "temperature: 2.0 in the soft labels vs 3.0"),
])
def test_training_refuses_soft_labels_of_other_settings(corpus, tmp_path, capfd, extra, message):
    root, bpe, lm = corpus
    assert _train(root, bpe, lm, tmp_path / "exp", extra) == 1
    assert message in capfd.readouterr().err
    assert not (tmp_path / "exp" / "checkpoint-1.pt").exists()


def test_training_refuses_soft_labels_of_another_lm(corpus, tmp_path, capfd):
    from speechkd.text.tokenizer import texts_from_manifests

    root, bpe, lm = corpus
    texts = list(texts_from_manifests([root / "fbank" / "librispeech_cuts_train.jsonl.gz"]))
    other = make_tiny_masked_lm(tmp_path / "other", texts, seed=1, max_positions=130)  # same tokenizer, other weights
    made_with = read_soft_label_metadata(root / "sl")["lm_fingerprint"]
    assert _train(root, bpe, other, tmp_path / "exp") == 1
    err = capfd.readouterr().err
    assert "lm_fingerprint" in err and made_with in err and MaskedLmTeacher.load(other).fingerprint() in err


def _brute_force_best(lp, blank=0):
    """Most likely labelling of a small (T, V) log-prob matrix, summing over all alignments."""
    import itertools
    import math

    scores = {}
    t, v = lp.shape
    for path in itertools.product(range(v), repeat=t):
        lab = tuple(c for i, c in enumerate(path) if c != blank and (i == 0 or path[i - 1] != c))
        s = float(sum(lp[i, c] for i, c in enumerate(path)))
        scores[lab] = math.log(math.exp(scores[lab]) + math.exp(s)) if lab in scores else s
    return list(max(scores, key=scores.get))


def test_ctc_prefix_beam_search_finds_the_most_likely_labelling_and_fuses_the_lm():
    from speechkd.decoding.ctc import ctc_greedy_search, ctc_prefix_beam_search
    from speechkd.decoding.ngram import TokenNgramLm

    torch.manual_seed(3)
    found_differs = False
    for _ in range(5):
        lp = (torch.randn(1, 6, 3) * 1.5).log_softmax(-1)
        want = _brute_force_best(lp[0])
        assert ctc_prefix_beam_search(lp, torch.tensor([6]), beam=50) == [want]
        found_differs |= ctc_greedy_search(lp, torch.tensor([6]))[0] != want
    assert found_differs  # the cases above are not all easy for greedy search
    # an LM that only ever saw token 2 turns an acoustically slightly preferred 1 into 2
    lp = torch.log(torch.tensor([[[0.1, 0.48, 0.42]]]))
    lm = TokenNgramLm.train([[2], [2, 2], [2]], order=2, vocab_size=3)
    assert ctc_prefix_beam_search(lp, torch.tensor([1]), beam=4) == [[1]]
    assert ctc_prefix_beam_search(lp, torch.tensor([1]), beam=4, lm=lm, lm_weight=1.0) == [[2]]
    # the n-gram is a distribution over tokens + </s> in every context, seen or not
    for ctx in ([], [2], [1], [0, 1]):
        total = sum(math.exp(lm.log_prob(ctx, w)) for w in range(4))
        assert abs(total - 1) < 1e-9


def test_stand_in_lm_text_never_holds_dev_or_test_transcripts(tmp_path):
    from speechkd.cli import main

    src = _cuts(tmp_path, TEXTS[:2])  # "dev/test" transcripts
    text = tmp_path / "lm_text.txt"
    text.write_text("\n".join([TEXTS[0].lower() + "  ", *TEXTS[2:], TEXTS[1], "ANOTHER SENTENCE HERE"]) + "\n")
    out = tmp_path / "mlm"
    sets = ["steps=2", "batch_size=2", "vocab_size=120", "hidden_size=16", "num_layers=1", "num_heads=2",
            "intermediate_size=32", "heldout_fraction=0.3"]
    assert main(["lm2ctc", "train-lm", "--text-files", str(text), "--exclude-cuts", str(src), "--out-dir", str(out),
                 *[a for kv in sets for a in ("--set", kv)]]) == 0
    meta = yaml.safe_load((out / "metadata.yaml").read_text())
    assert meta["source"]["excluded_sentences"] == 2  # both, whatever their case and spacing
    assert meta["num_train_sentences"] + meta["num_heldout_sentences"] == 3
    assert MaskedLmTeacher.load(out).vocab_size == meta["vocab_size"]


@pytest.mark.parametrize("top", [0, 1])
def test_masked_lm_from_a_pretrained_encoder_keeps_its_weights_and_trains_a_tied_head(tmp_path, top):
    """init_encoder: the encoder's tokenizer and weights are used (frozen, except the top ``top`` layers),
    the new MLM head's output matrix is the word embedding matrix, and the result loads as a teacher."""
    from transformers import AutoTokenizer, BertModel

    from speechkd.training.mlm import MlmConfig, train_mlm

    lm = make_tiny_masked_lm(tmp_path / "bert", TEXTS, num_layers=2)
    enc_dir = tmp_path / "encoder"  # a BertModel without MLM head, as the packaged MiniLM ships
    BertModel.from_pretrained(lm).save_pretrained(enc_dir)
    AutoTokenizer.from_pretrained(lm).save_pretrained(enc_dir)
    before = {k: v.clone() for k, v in BertModel.from_pretrained(enc_dir, add_pooling_layer=False).state_dict().items()}
    cfg = MlmConfig(init_encoder=str(enc_dir), train_top_layers=top, steps=5, batch_size=4, lr=0.05,
                    heldout_fraction=0.3, warmup_steps=1)
    meta = train_mlm(TEXTS * 3, tmp_path / "mlm", cfg)
    assert meta["vocab_size"] == len(AutoTokenizer.from_pretrained(enc_dir)) and "pretrained encoder" in meta["kind"]
    # the metadata describes the encoder it used, not the from-scratch sizes the config would have built
    assert "hidden_size" not in meta["config"] and "vocab_size" not in meta["config"]
    enc = BertModel.from_pretrained(enc_dir, add_pooling_layer=False)
    assert meta["model"]["num_layers"] == 2 and meta["model"]["hidden_size"] == enc.config.hidden_size
    assert meta["model"]["vocab_size"] == meta["vocab_size"]
    assert meta["model"]["trained_parameters"] == sum(
        p.numel() for k, p in MaskedLmTeacher.load(tmp_path / "mlm").model.named_parameters()
        if (k.startswith("cls.") and "decoder.weight" not in k) or (top and k.startswith("bert.encoder.layer.1.")))
    teacher = MaskedLmTeacher.load(tmp_path / "mlm")
    after = teacher.model.bert.state_dict()
    changed = {k for k, v in before.items() if not torch.equal(v, after[k])}
    assert changed == ({k for k in before if k.startswith("encoder.layer.1.")} if top else set())
    assert teacher.model.cls.predictions.decoder.weight.data_ptr() == teacher.model.bert.embeddings.word_embeddings.weight.data_ptr()
    with pytest.raises(SpeechkdError, match="train_top_layers=3 but .* has 2 layers"):
        train_mlm(TEXTS * 3, tmp_path / "bad", MlmConfig(init_encoder=str(enc_dir), train_top_layers=3, steps=1))


def test_the_whisper_initialised_lm2ctc_configs_differ_from_their_bases_only_where_they_say() -> None:
    """conf/asr_whisper_init_ctc.yaml = the CTC baseline on Whisper layers (encoder, input, lr); and
    conf/lm2ctc_whisper_init.yaml = that plus conf/lm2ctc.yaml's decoders and LM-KD loss on Whisper layers 2 and 4."""
    import dataclasses
    from pathlib import Path

    from speechkd.training.asr_experiment import load_experiment_config

    conf = Path(__file__).resolve().parents[2] / "egs" / "minilibri" / "conf"
    ctc, wctc = load_experiment_config(conf / "asr_ctc.yaml"), load_experiment_config(conf / "asr_whisper_init_ctc.yaml")
    lm = ["loss.lm_kd.lm=some/lm"]  # the recipe sets it
    kd, wkd = (load_experiment_config(conf / name, lm) for name in ("lm2ctc.yaml", "lm2ctc_whisper_init.yaml"))
    assert (wctc.model.encoder_type, wctc.data.input, wctc.model.use_transducer) == ("whisper", "audio", False)
    assert wctc.loss == ctc.loss and wctc.trainer.num_epochs == ctc.trainer.num_epochs
    assert wctc.trainer.scheduler == ctc.trainer.scheduler and wctc.data.max_duration == ctc.data.max_duration
    assert wctc.trainer.optimizer.lr_scales == {"encoder": 0.2} and wctc.trainer.optimizer.lr == 0.001
    assert wkd.loss == kd.loss and wkd.trainer == wctc.trainer and wkd.data == wctc.data
    assert wkd.model.attention_decoders == dataclasses.replace(kd.model.attention_decoders, layers=[2, 4])
    assert dataclasses.replace(wkd.model, attention_decoders=wctc.model.attention_decoders) == wctc.model
