"""The Whisper-layer student encoder (model.encoder_type: whisper): initialised from a teacher it computes what the
teacher computes, a layer subset copies the right layers, sizes that disagree fail naming both values, and
`speechkd asr train` / `decode` run it end to end while refusing what it cannot do (chunks, sherpa-onnx export)."""

from __future__ import annotations

import dataclasses

from pathlib import Path

import pytest
import torch
import yaml

from test_asr_experiment import PART, data  # noqa: F401  (the module's tiny corpus fixture)
from test_ct2_convert import _tiny_en_ct2_dir, converted_tiny_en

from speechkd.cli import main
from speechkd.errors import SpeechkdError
from speechkd.models.asr import AsrModel, AsrModelConfig
from speechkd.models.whisper_encoder import WhisperEncoderConfig, WhisperStudentEncoder
from speechkd.teachers.base import load_teacher, weights_digest
from speechkd.training.teacher_init import init_whisper_encoder

SIZES = {"d_model": 16, "num_heads": 2, "ff_dim": 32}


@pytest.fixture(scope="module")
def random_whisper(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random 3-layer Whisper checkpoint (transformers directory)."""
    from transformers import WhisperConfig, WhisperModel

    torch.manual_seed(0)
    cfg = WhisperConfig(
        d_model=16, encoder_layers=3, decoder_layers=1, encoder_attention_heads=2, decoder_attention_heads=2,
        encoder_ffn_dim=32, decoder_ffn_dim=32, vocab_size=100, num_mel_bins=80, max_target_positions=16,
        pad_token_id=0, bos_token_id=1, eos_token_id=0, decoder_start_token_id=1,
    )
    out = tmp_path_factory.mktemp("whisper_student_teacher")
    WhisperModel(cfg).save_pretrained(out)
    return out


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    lens = torch.tensor([16000, 9999, 4321])
    wavs = torch.randn(3, 16000, generator=torch.Generator().manual_seed(3)) * 0.1
    wavs[torch.arange(16000)[None, :] >= lens[:, None]] = 0.0
    return wavs, lens


def test_all_layers_from_the_teacher_compute_the_teachers_hidden_states(random_whisper: Path) -> None:
    student = WhisperStudentEncoder(WhisperEncoderConfig(layers=[0, 1, 2], **SIZES)).eval()
    before = weights_digest(student)
    info = init_whisper_encoder(student, str(random_whisper))
    assert info["init_weights_sha256"] == weights_digest(student) != before
    assert (info["teacher_layers"], info["teacher_encoder_layers"]) == ([0, 1, 2], 3)
    teacher = load_teacher(str(random_whisper))
    wavs, lens = _batch()
    with torch.no_grad():
        ours = student(wavs, lens)
        ref = teacher(wavs, lens)
    assert ours.out_lens.tolist() == ref.lens.tolist() == [50, 31, 14]
    assert len(ours.layer_outputs) == 3
    for a, b in zip(ours.layer_outputs, ref.hidden_states[1:]):
        for i, t in enumerate(ours.out_lens.tolist()):
            torch.testing.assert_close(a[i, :t], b[i, :t], atol=1e-5, rtol=1e-5)
    assert ours.out is ours.layer_outputs[-1]


def test_a_layer_subset_copies_those_layers_in_order(random_whisper: Path) -> None:
    from transformers import WhisperModel

    student = WhisperStudentEncoder(WhisperEncoderConfig(layers=[2, 0], **SIZES))
    init_whisper_encoder(student, str(random_whisper))
    teacher = WhisperModel.from_pretrained(random_whisper).get_encoder()
    for i, j in ((0, 2), (1, 0)):
        for (name, p), (tname, q) in zip(student.layers[i].named_parameters(), teacher.layers[j].named_parameters()):
            assert name == tname and torch.equal(p, q), name
    torch.testing.assert_close(student.embed_positions.weight, teacher.embed_positions.weight)
    assert student.subsampling_factor == 2 and student.output_dim == 16


def test_sizes_that_are_not_the_teachers_fail_naming_both(random_whisper: Path) -> None:
    student = WhisperStudentEncoder(WhisperEncoderConfig(layers=[0, 5], d_model=32, num_heads=2, ff_dim=32))
    with pytest.raises(SpeechkdError) as e:
        init_whisper_encoder(student, str(random_whisper))
    msg = str(e.value)
    assert "model.whisper.d_model=32 but the teacher has d_model=16" in msg
    assert "model.whisper.layers=[0, 5] but the teacher has 3 encoder layers" in msg
    with pytest.raises(SpeechkdError, match="distinct"):
        WhisperEncoderConfig(layers=[1, 1]).validate()
    with pytest.raises(SpeechkdError, match="encoder_type='lstm'"):
        AsrModel(AsrModelConfig(encoder_type="lstm"))


def test_packaged_tiny_en_read_directly_equals_the_converted_teacher(tmp_path_factory: pytest.TempPathFactory) -> None:
    """The CTranslate2 model read in memory (packaged:tiny.en) gives the weights the on-disk conversion gives."""
    _tiny_en_ct2_dir()  # skips without the package
    student = WhisperStudentEncoder(WhisperEncoderConfig()).eval()
    init_whisper_encoder(student, "packaged:tiny.en")
    teacher = load_teacher(str(converted_tiny_en(tmp_path_factory)))
    wavs, lens = _batch()
    with torch.no_grad():
        a, b = student(wavs, lens), teacher(wavs, lens)
    torch.testing.assert_close(a.out[0], b.hidden_states[-1][0], atol=1e-4, rtol=1e-4)


def test_train_and_decode_end_to_end_and_what_it_refuses(data, random_whisper: Path, tmp_path: Path, capfd) -> None:  # noqa: F811
    egs, bpe, _ = data
    exp = tmp_path / "exp"
    sets = ["model.encoder_type=whisper", f"model.whisper.init_from={random_whisper}", "model.whisper.layers=[0,2]",
            "model.whisper.d_model=16", "model.whisper.num_heads=2", "model.whisper.ff_dim=32",
            "model.use_transducer=false", "loss.transducer_weight=0.0", "loss.ctc_weight=1.0", "data.input=audio",
            "data.spec_augment.enabled=false", "trainer.max_steps=2", "trainer.progress_bar=false",
            "trainer.tensorboard=false", "data.num_workers=0", "data.num_buckets=2", "data.drop_last=false"]
    train = ["asr", "train", "--exp-dir", str(exp), "--cuts-dir", str(egs / "data" / "fbank"), "--train-parts", PART,
             "--bpe-model", str(bpe), *[a for kv in sets for a in ("--set", kv)]]
    assert main(train) == 0
    paths = yaml.safe_load((exp / "config.yaml").read_text())["paths"]
    assert paths["teacher_init"]["source"] == str(random_whisper)
    assert paths["teacher_init"]["teacher_layers"] == [0, 2]
    state = torch.load(exp / "checkpoint-2.pt", weights_only=False)["model"]
    from transformers import WhisperModel

    teacher = WhisperModel.from_pretrained(random_whisper).get_encoder().state_dict()
    assert not torch.equal(state["encoder.layers.1.fc1.weight"], teacher["layers.2.fc1.weight"])  # trained from there
    assert main(["asr", "average", "--exp-dir", str(exp), "--avg", "1", "--by", "step"]) == 0
    decode = ["asr", "decode", "--exp-dir", str(exp), "--parts", PART, "--methods", "ctc-greedy"]
    assert main(decode) == 0
    assert (exp / "decode" / "wer-summary.tsv").is_file()
    capfd.readouterr()
    assert main([*decode, "--chunk-sizes", "8"]) == 1
    assert "whisper encoder is full-context only" in capfd.readouterr().err
    assert main(["export", "onnx", "--exp-dir", str(exp), "--output-dir", str(tmp_path / "onnx"), "--kind", "ctc"]) == 1
    assert "only conformer students export" in capfd.readouterr().err
    # fbank input to a raw-audio encoder is refused before anything trains
    fbank = [*train, "--set", "data.input=fbank"]
    fbank[fbank.index("--exp-dir") + 1] = str(tmp_path / "exp_fbank")
    assert main(fbank) == 1
    assert "set data.input=audio" in capfd.readouterr().err
    # the encoder's layers frozen by name (a dotted prefix written as an override): the teacher's, unchanged
    frozen = [*train, "--set", "trainer.optimizer.lr_scales.encoder.layers=0"]
    frozen[frozen.index("--exp-dir") + 1] = str(tmp_path / "exp_frozen")
    assert main(frozen) == 0
    state = torch.load(tmp_path / "exp_frozen" / "checkpoint-2.pt", weights_only=False)["model"]
    for ours, theirs in (("layers.0", "layers.0"), ("layers.1", "layers.2")):
        for name in ("fc1.weight", "self_attn.q_proj.weight", "final_layer_norm.bias"):
            assert torch.equal(state[f"encoder.{ours}.{name}"], teacher[f"{theirs}.{name}"]), (ours, name)
    assert not torch.equal(state["encoder.conv1.weight"], teacher["conv1.weight"])  # not under encoder.layers


def test_the_minilibri_config_is_the_transducer_baseline_on_whisper_layers() -> None:
    from speechkd.training.asr_experiment import load_experiment_config

    conf = Path(__file__).resolve().parents[2] / "egs" / "minilibri" / "conf"
    base = load_experiment_config(conf / "asr_transducer.yaml")
    ours = load_experiment_config(conf / "asr_whisper_init.yaml")
    assert (ours.model.encoder_type, ours.model.whisper.init_from, ours.data.input) == ("whisper", "packaged:tiny.en", "audio")
    assert dataclasses.replace(ours.loss, ctc_only_lr_scale=base.loss.ctc_only_lr_scale) == base.loss
    assert ours.trainer.num_epochs == base.trainer.num_epochs
    assert ours.trainer.optimizer.lr_scales == {"encoder": 0.2}  # the teacher's layers at a fifth of the lr
    assert ours.model.use_transducer and ours.model.use_ctc and ours.data.max_duration == base.data.max_duration
    with pytest.raises(SpeechkdError, match="MVQ-KD.*needs the conformer"):
        load_experiment_config(conf / "asr_whisper_init.yaml", ["loss.codebook_loss_scale=0.1"])


def test_audio_longer_than_the_position_table_is_read_in_windows() -> None:
    """An utterance over max_samples is encoded as consecutive windows (each as if alone), frames concatenated;
    the other utterances of the batch are unchanged."""
    cfg = WhisperEncoderConfig(layers=[0], max_source_positions=25, **SIZES)  # 25 frames = 0.5 s = 8000 samples
    torch.manual_seed(0)
    enc = WhisperStudentEncoder(cfg).eval()
    assert enc.max_samples == 8000
    wavs = torch.randn(2, 20000, generator=torch.Generator().manual_seed(4)) * 0.1
    lens = torch.tensor([20000, 5000])
    with torch.no_grad():
        out = enc(wavs, lens)
        parts = [enc(wavs[:1, a:b], torch.tensor([b - a])) for a, b in ((0, 8000), (8000, 16000), (16000, 20000))]
        short = enc(wavs[1:, :5000], torch.tensor([5000]))
    assert out.out_lens.tolist() == [sum(int(p.out_lens[0]) for p in parts), int(short.out_lens[0])] == [63, 16]
    torch.testing.assert_close(out.out[0, :63], torch.cat([p.out[0] for p in parts]), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.out[1, :16], short.out[0], atol=1e-5, rtol=1e-5)
