"""SentencePiece tokenizer: id layout, files, round trips, errors, CLI."""

from __future__ import annotations

import hashlib
import re

import numpy as np
import pytest
import sentencepiece as spm
import yaml
from lhotse import SupervisionSegment, SupervisionSet

from speechkd.cli import main
from speechkd.errors import SpeechkdError
from speechkd.testing.fake_librispeech import WORDS
from speechkd.text.tokenizer import Tokenizer, texts_from_manifests, train_bpe

VOCAB = 40
WORD_BOUNDARY = "\u2581"  # sentencepiece's "▁"


def sentences(n: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=int(rng.integers(2, 9)))) for _ in range(n)]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("lang_bpe")
    texts = sentences(300, seed=0)
    return out, texts, train_bpe(texts + ["", "   "], out, VOCAB)


def test_special_ids_and_files(trained):
    out, texts, model = trained
    tok = Tokenizer(model)
    assert tok.vocab_size == VOCAB and tok.blank_id == 0
    assert [tok.id_to_piece(i) for i in range(3)] == ["<blk>", "<sos/eos>", "<unk>"]
    lines = (out / "tokens.txt").read_text().splitlines()
    assert lines == [f"{tok.id_to_piece(i)} {i}" for i in range(VOCAB)]
    meta = yaml.safe_load((out / "metadata.yaml").read_text())
    assert meta["vocab_size"] == VOCAB and meta["blank_id"] == 0 and meta["unk_id"] == 2
    assert meta["num_training_sentences"] == len(texts) and meta["num_skipped_empty"] == 2
    assert meta["model_sha256"] == hashlib.sha256(model.read_bytes()).hexdigest()


def test_round_trip_and_pieces(trained):
    _, texts, model = trained
    tok = Tokenizer(model)
    unseen = sentences(20, seed=1)
    ids = tok.encode(texts[:20] + unseen)
    assert tok.decode(ids) == texts[:20] + unseen
    for text, seq in zip(texts[:20] + unseen, ids):
        assert all(3 <= i < VOCAB for i in seq)  # never a special id for in-vocabulary characters
        pieces = "".join(tok.id_to_piece(i) for i in seq)
        assert pieces == WORD_BOUNDARY + text.replace(" ", WORD_BOUNDARY)
    # blank and sos/eos carry no text
    assert tok.decode([[0, *ids[0], 0, 1]]) == [texts[0]]
    # unseen characters map to <unk>
    assert 2 in tok.encode(["ZQX"])[0]
    with pytest.raises(TypeError):
        tok.encode("A STRING")


def test_too_large_vocab_names_the_largest_that_works(tmp_path):
    texts = sentences(50, seed=2)
    with pytest.raises(SpeechkdError, match=r"at most \d+") as err:
        train_bpe(texts, tmp_path / "big", 5000)
    largest = int(re.search(r"at most (\d+)", str(err.value)).group(1))
    assert VOCAB < largest < 5000
    assert Tokenizer(train_bpe(texts, tmp_path / "ok", largest)).vocab_size == largest


def test_empty_text_and_bad_models_are_clear_errors(tmp_path):
    with pytest.raises(SpeechkdError, match="no non-empty text"):
        train_bpe(["", " "], tmp_path / "empty", VOCAB)
    with pytest.raises(SpeechkdError, match="not found"):
        Tokenizer(tmp_path / "missing.model")
    # a model with sentencepiece's default layout (0=<unk>, 1=<s>, 2=</s>) is refused
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(sentences(100, seed=3)),
        model_prefix=str(tmp_path / "plain"),
        vocab_size=VOCAB,
        minloglevel=2,
    )
    with pytest.raises(SpeechkdError, match="expected"):
        Tokenizer(tmp_path / "plain.model")


def test_cli_bpe_from_supervisions_skips_speed_copies(tmp_path):
    texts = sentences(200, seed=4)
    segs = [SupervisionSegment(f"u{i}", f"u{i}", 0.0, 1.0, text=t) for i, t in enumerate(texts)]
    # a speed-perturbed copy with a text of its own: would add "Z" to the vocabulary if read
    segs.append(SupervisionSegment("u0_sp0.9", "u0_sp0.9", 0.0, 1.1, text="ZZZ ZZZ"))
    manifest = tmp_path / "sups.jsonl.gz"
    SupervisionSet.from_segments(segs).to_file(manifest)
    out = tmp_path / "lang_bpe_30"
    args = ["data", "bpe", "--cuts", str(manifest), "--output-dir", str(out), "--vocab-size", "30"]
    assert main(args) == 0
    tok = Tokenizer(out / "bpe.model")
    assert tok.vocab_size == 30
    assert tok.encode(["ZZZ"])[0].count(2) >= 1  # Z never seen
    assert tok.decode(tok.encode(texts)) == texts
    mtime = (out / "bpe.model").stat().st_mtime_ns
    assert main(args) == 0  # second run: skipped
    assert (out / "bpe.model").stat().st_mtime_ns == mtime
    assert "vocab_size: 30" in (out / "config.yaml").read_text()


def test_bpe_on_a_missing_manifest_names_the_file(tmp_path, capfd):
    """It used to say "no non-empty text": sentencepiece swallowed the error of the text source."""
    missing = tmp_path / "no_such_cuts.jsonl.gz"
    with pytest.raises(SpeechkdError, match=f"manifest not found: {re.escape(str(missing))}"):
        train_bpe(texts_from_manifests([missing]), tmp_path / "lang", VOCAB)
    args = ["data", "bpe", "--cuts", str(missing), "--output-dir", str(tmp_path / "lang"), "--vocab-size", "30"]
    capfd.readouterr()
    assert main(args) == 1
    err = capfd.readouterr().err
    assert str(missing) in err and "no non-empty text" not in err


def test_an_error_of_the_text_source_is_not_hidden_by_sentencepiece(tmp_path):
    def texts():
        raise SpeechkdError("cuts.jsonl.gz: line 1 is not JSON")  # before the first sentence
        yield ""

    with pytest.raises(SpeechkdError, match="line 1 is not JSON"):
        train_bpe(texts(), tmp_path / "lang", VOCAB)
