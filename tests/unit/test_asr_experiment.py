"""`speechkd asr train` end to end on a tiny generated corpus: started from another directory than the
data stages, and refusing a resume with another BPE model of the same size."""

from __future__ import annotations

import pytest
import torch
import yaml

from speechkd.cli import main
from speechkd.data.features import compute_fbank
from speechkd.data.prepare import prepare_librispeech
from speechkd.testing.fake_librispeech import make_fake_librispeech
from speechkd.text.tokenizer import Tokenizer, texts_from_manifests, train_bpe

PART = "train"
VOCAB = 24
TINY = [
    "model.encoder.num_layers=1", "model.encoder.d_model=16", "model.encoder.ff_dim=16",
    "model.encoder.num_heads=2", "model.encoder.subsampling_channels=4", "model.decoder_dim=8",
    "model.joiner_dim=8", "trainer.progress_bar=false", "trainer.tensorboard=false", "trainer.save_every_n=1",
    "data.num_workers=0", "data.num_buckets=2", "data.drop_last=false",
]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Data stages run in ``<root>/egs`` with relative paths, as egs/*/run.sh runs them."""
    import os

    root = tmp_path_factory.mktemp("asr")
    egs = root / "egs"
    make_fake_librispeech(egs / "download" / "LS", {PART: (2, 1, 3)}, seed=5)
    cwd = os.getcwd()
    os.chdir(egs)
    try:
        prepare_librispeech("download/LS", "data/manifests")
        compute_fbank("data/manifests", "data/fbank", [PART])
    finally:
        os.chdir(cwd)
    cuts = egs / "data" / "fbank" / f"librispeech_cuts_{PART}.jsonl.gz"
    texts = list(texts_from_manifests([cuts]))
    bpe_a = train_bpe(texts, egs / "data" / "lang_a", VOCAB)
    bpe_b = train_bpe(texts[::-1] + [t[::-1] for t in texts], egs / "data" / "lang_b", VOCAB)
    return egs, bpe_a, bpe_b


def _train(egs, exp, bpe, max_steps):
    overrides = [arg for kv in [*TINY, f"trainer.max_steps={max_steps}"] for arg in ("--set", kv)]
    return main(["asr", "train", "--exp-dir", str(exp), "--cuts-dir", str(egs / "data" / "fbank"),
                 "--train-parts", PART, "--bpe-model", str(bpe), *overrides])


def test_train_from_another_directory_then_resume_with_another_bpe_is_refused(data, tmp_path, monkeypatch,
                                                                                 capfd):
    egs, bpe_a, bpe_b = data
    a, b = Tokenizer(bpe_a), Tokenizer(bpe_b)
    assert a.vocab_size == b.vocab_size and a.sha256 != b.sha256
    monkeypatch.chdir(tmp_path)  # not where the data stages ran
    exp = tmp_path / "exp"
    assert _train(egs, exp, bpe_a, max_steps=2) == 0
    ckpt = torch.load(exp / "checkpoint-2.pt", weights_only=False)
    assert ckpt["fingerprints"]["bpe_model"]["sha256"] == a.sha256
    capfd.readouterr()
    assert _train(egs, exp, bpe_b, max_steps=3) == 1
    err = capfd.readouterr().err
    assert "cannot resume" in err and a.sha256 in err and b.sha256 in err
    paths = yaml.safe_load((exp / "config.yaml").read_text())["paths"]
    assert (paths["bpe_model"], paths["bpe_model_sha256"]) == (str(bpe_a.resolve()), a.sha256)
    # the averaged model keeps the checksum: decoding with the training BPE works, with the other is refused
    assert main(["asr", "average", "--exp-dir", str(exp), "--avg", "1", "--by", "step"]) == 0
    decode = ["asr", "decode", "--exp-dir", str(exp), "--parts", PART, "--methods", "ctc-greedy"]
    assert main(decode) == 0
    assert (exp / "decode" / "wer-summary.tsv").is_file()
    capfd.readouterr()
    assert main([*decode, "--bpe-model", str(bpe_b)]) == 1
    assert "cannot decode" in capfd.readouterr().err


def test_average_and_decode_elsewhere_for_a_learning_curve(data, tmp_path):
    """`asr average --last N --output F` leaves averaged.pt alone; `asr decode --checkpoint F --out-dir D` writes
    only to D, and D's decode-log.tsv names the checkpoint (and what it averages) of each call."""
    egs, bpe_a, _ = data
    exp = tmp_path / "exp"
    assert _train(egs, exp, bpe_a, max_steps=3) == 0
    out = exp / "avg-step2-2.pt"
    avg = ["asr", "average", "--exp-dir", str(exp), "--avg", "2", "--by", "step", "--last", "2"]
    assert main([*avg, "--output", str(out)]) == 0
    assert not (exp / "averaged.pt").exists()
    assert torch.load(out, weights_only=False)["averaged_from"] == ["checkpoint-1.pt", "checkpoint-2.pt"]
    curve = tmp_path / "curve"
    decode = ["asr", "decode", "--exp-dir", str(exp), "--parts", PART, "--methods", "ctc-greedy", "--out-dir", str(curve)]
    assert main([*decode, "--checkpoint", str(out)]) == 0
    assert main([*decode, "--checkpoint", "checkpoint-3.pt"]) == 0  # a name inside the exp dir
    assert not (exp / "decode").exists()
    assert (curve / "wer-summary.tsv").is_file()
    rows = [line.split("\t") for line in (curve / "decode-log.tsv").read_text().splitlines()]
    assert rows[0] == ["time", "checkpoint", "averaged_from", "parts", "tags"]
    assert [r[1:] for r in rows[1:]] == [
        [str(out), "checkpoint-1.pt,checkpoint-2.pt", PART, "ctc-greedy"],
        [str(exp / "checkpoint-3.pt"), "-", PART, "ctc-greedy"],
    ]
