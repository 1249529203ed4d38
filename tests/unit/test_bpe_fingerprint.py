"""The BPE model's checksum travels with checkpoints and averaged models; decoding with another BPE model
of the same size is refused (token ids would silently change meaning)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from speechkd.config import to_dict
from speechkd.decoding.asr_decode import decode_asr, load_model_for_decoding
from speechkd.errors import SpeechkdError
from speechkd.models import AsrModel, AsrModelConfig, EncoderConfig
from speechkd.testing.fake_librispeech import WORDS
from speechkd.text.tokenizer import Tokenizer, train_bpe
from speechkd.training.asr_experiment import AsrExperimentConfig, average_asr
from speechkd.training.checkpoint import save_checkpoint_atomic
from speechkd.utils.runinfo import write_run_info

VOCAB = 30


def _texts(seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=int(rng.integers(2, 9)))) for _ in range(200)]


@pytest.fixture(scope="module")
def two_bpe_models(tmp_path_factory):
    """Two BPE models of the same size trained on different text: same vocab_size, other ids."""
    root = tmp_path_factory.mktemp("lang")
    a = Tokenizer(train_bpe(_texts(0), root / "a", VOCAB))
    b = Tokenizer(train_bpe(_texts(1), root / "b", VOCAB))
    assert a.vocab_size == b.vocab_size and a.sha256 != b.sha256
    return a, b


def _exp_dir(tmp_path, tok: Tokenizer, epochs=(1, 2), fingerprint=True):
    """A trained-looking ASR exp dir: config.yaml and epoch checkpoints of a tiny model."""
    cfg = AsrExperimentConfig(model=AsrModelConfig(
        encoder=EncoderConfig(d_model=16, num_layers=1, num_heads=2, ff_dim=16, subsampling_channels=4),
        vocab_size=tok.vocab_size, decoder_dim=8, joiner_dim=8))
    run_config = to_dict(cfg)
    run_config["paths"] = {"cuts_dir": str(tmp_path / "cuts"), "bpe_model": str(tok.model_path)}
    write_run_info(tmp_path, run_config, name="train")
    for e in epochs:
        ckpt = {"model": AsrModel(cfg.model).state_dict(), "step": e, "epoch": e + 1}
        if fingerprint:
            ckpt["fingerprints"] = {"bpe_model": tok.fingerprint()}
        save_checkpoint_atomic(ckpt, tmp_path / f"epoch-{e}.pt")
    return tmp_path


def test_averaged_model_keeps_the_fingerprint_and_decoding_refuses_another_bpe(two_bpe_models, tmp_path):
    a, b = two_bpe_models
    exp = _exp_dir(tmp_path, a)
    averaged = average_asr(exp, 2)
    assert torch.load(averaged, weights_only=False)["fingerprints"] == {"bpe_model": a.fingerprint()}
    load_model_for_decoding(exp, None, a)  # the model it was trained with
    with pytest.raises(SpeechkdError) as err:
        load_model_for_decoding(exp, None, b)
    msg = str(err.value)
    assert "averaged.pt" in msg and "cannot decode" in msg
    assert all(v in msg for v in (a.sha256, b.sha256, str(a.model_path.resolve()), str(b.model_path.resolve())))
    with pytest.raises(SpeechkdError, match="cannot decode"):  # `speechkd asr decode --bpe-model <b>`
        decode_asr(exp, ["dev"], bpe_model=b.model_path)


def test_averaging_checkpoints_of_different_bpe_models_is_refused(two_bpe_models, tmp_path):
    a, b = two_bpe_models
    exp = _exp_dir(tmp_path, a, epochs=(1,))
    _exp_dir(tmp_path, b, epochs=(2,))  # a BPE model swapped between epochs
    with pytest.raises(SpeechkdError, match=f"{a.sha256}.*{b.sha256}"):
        average_asr(exp, 2)


def test_old_checkpoint_without_fingerprint_decodes_with_a_warning(two_bpe_models, tmp_path, caplog):
    a, b = two_bpe_models
    exp = _exp_dir(tmp_path, a, fingerprint=False)
    model, _, _ = load_model_for_decoding(exp, "epoch-2.pt", b)
    assert isinstance(model, AsrModel)
    assert "has no bpe_model checksum" in caplog.text


def test_export_records_the_bpe_checksum_and_refuses_another_bpe(two_bpe_models, tmp_path):
    pytest.importorskip("onnx")
    import yaml

    from speechkd.export.onnx import export_experiment

    a, b = two_bpe_models
    exp = _exp_dir(tmp_path / "exp", a)
    out = export_experiment(exp, tmp_path / "ctc", "ctc", checkpoint="epoch-2.pt")
    assert yaml.safe_load((out / "export.yaml").read_text())["source"]["bpe_model_sha256"] == a.sha256
    with pytest.raises(SpeechkdError, match=b.sha256):
        export_experiment(exp, tmp_path / "ctc-b", "ctc", checkpoint="epoch-2.pt", bpe_model=b.model_path)


def test_average_leaves_out_checkpoints_of_the_untrained_transducer(two_bpe_models, tmp_path, caplog):
    """A run with a CTC-only phase: epoch checkpoints written in the phase, or within loss.warmup_steps after the
    transducer joined, are left out of the average (they pull it back to blanks), and the saved average names
    what it holds; when every checkpoint is that early (a smoke run) they are averaged anyway, with a warning."""
    a, _ = two_bpe_models
    exp = _exp_dir(tmp_path, a, epochs=(1, 2, 3, 4))
    warmup = AsrExperimentConfig().loss.warmup_steps
    # the transducer joined at step 320: epoch 1 (step 250) is in the phase, epoch 2 inside the warm-up
    steps = {1: 250, 2: 320 + warmup - 1, 3: 320 + warmup, 4: 320 + 2 * warmup}
    for e, step in steps.items():
        ckpt = torch.load(exp / f"epoch-{e}.pt", weights_only=False)
        ckpt.update(task={"transducer_start": None if e == 1 else 320}, train_state={"step": step})
        save_checkpoint_atomic(ckpt, exp / f"epoch-{e}.pt")
    out = average_asr(exp, 3, last=4)
    assert torch.load(out, weights_only=False)["averaged_from"] == ["epoch-3.pt", "epoch-4.pt"]
    assert "leaving epoch-2.pt out of the average" in caplog.text and "joined at step 320" in caplog.text
    out = average_asr(exp, 2, last=2, output=tmp_path / "early.pt")
    assert torch.load(out, weights_only=False)["averaged_from"] == ["epoch-1.pt", "epoch-2.pt"]
    assert "averaging them anyway" in caplog.text and "in the CTC-only phase" in caplog.text
