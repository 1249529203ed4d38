"""Teacher contract: SSL encoders from tiny random checkpoints, the Whisper encoder with sliced positions."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from speechkd.errors import SpeechkdError
from speechkd.teachers import load_teacher
from speechkd.teachers.hf_ssl import normalize_waveforms

sys.path.insert(0, str(Path(__file__).parent))
from test_ct2_convert import clip, converted_tiny_en  # noqa: E402,F401 - shared session fixture + helper

CONV_KERNELS = (10, 8, 16)
CONV_STRIDES = (5, 4, 16)  # 320 samples per frame = 0.02 s at 16 kHz
SMALL = dict(
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=64,
    conv_dim=(16, 16, 16),
    conv_stride=CONV_STRIDES,
    conv_kernel=CONV_KERNELS,
    num_conv_pos_embeddings=16,
    num_conv_pos_embedding_groups=2,
)
WAV_LENS = (8000, 5000, 3333)


def _frames(samples: int) -> int:
    """Brute-force conv output length (no padding): floor((L - k) / s) + 1 per layer."""
    for k, s in zip(CONV_KERNELS, CONV_STRIDES):
        samples = (samples - k) // s + 1
    return samples


def _save_ssl(kind: str, out: Path, seed: int = 0) -> Path:
    import transformers as tr

    torch.manual_seed(seed)
    if kind == "hubert-group":
        model = tr.HubertModel(tr.HubertConfig(**SMALL, feat_extract_norm="group"))
    elif kind == "wav2vec2-layer":
        model = tr.Wav2Vec2Model(tr.Wav2Vec2Config(**SMALL, feat_extract_norm="layer", do_stable_layer_norm=True))
    elif kind == "wavlm-layer":
        cfg = tr.WavLMConfig(**SMALL, feat_extract_norm="layer", do_stable_layer_norm=True, num_buckets=8)
        model = tr.WavLMModel(cfg)
    else:
        model = tr.Data2VecAudioModel(tr.Data2VecAudioConfig(**SMALL))
    model.save_pretrained(out)
    return out


def _batch(seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    wavs = torch.randn(len(WAV_LENS), max(WAV_LENS), generator=g)
    lens = torch.tensor(WAV_LENS)
    wavs[torch.arange(wavs.shape[1])[None, :] >= lens[:, None]] = 0.0
    return wavs, lens


@pytest.mark.parametrize("kind", ["hubert-group", "wav2vec2-layer", "wavlm-layer", "data2vec-audio"])
def test_ssl_teacher_padded_batch_equals_single_runs(kind: str, tmp_path: Path) -> None:
    teacher = load_teacher(str(_save_ssl(kind, tmp_path / kind)))
    assert teacher.kind == "ssl" and teacher.frame_shift == pytest.approx(0.02)
    assert (teacher.num_layers, teacher.hidden_size) == (2, 32)
    wavs, lens = _batch()
    out = teacher(wavs, lens)
    assert len(out.hidden_states) == teacher.num_layers + 1
    assert out.lens.tolist() == [_frames(n) for n in WAV_LENS] == [24, 15, 10]
    for i, n in enumerate(WAV_LENS):
        single = teacher(wavs[i : i + 1, :n])
        assert single.lens.tolist() == [out.lens[i]]
        t = int(out.lens[i])
        for h_batch, h_single in zip(out.hidden_states, single.hidden_states):
            assert h_batch.shape == (3, 24, 32)
            torch.testing.assert_close(h_batch[i, :t], h_single[0], atol=1e-4, rtol=1e-4)
            assert torch.count_nonzero(h_batch[i, t:]) == 0


def test_group_norm_pad_mode_differs_from_single_runs(tmp_path: Path) -> None:
    """The transformers recipe for group-norm models (pad, no mask) is batch dependent: why it is not the default."""
    path = str(_save_ssl("hubert-group", tmp_path / "h"))
    exact, padded = load_teacher(path), load_teacher(path, batching="pad")
    wavs, lens = _batch()
    a, b = exact(wavs, lens), padded(wavs, lens)
    torch.testing.assert_close(a.hidden_states[-1][0], b.hidden_states[-1][0])  # the longest row has no padding
    assert (a.hidden_states[-1][2, :10] - b.hidden_states[-1][2, :10]).abs().max() > 1e-3


def test_normalize_waveforms_matches_transformers() -> None:
    from transformers import Wav2Vec2FeatureExtractor

    wavs, lens = _batch()
    wavs = wavs * 3 + 0.5 * (wavs != 0)
    ours = normalize_waveforms(wavs, lens)
    rows = [wavs[i].numpy() for i in range(len(WAV_LENS))]
    mask = (torch.arange(wavs.shape[1])[None, :] < lens[:, None]).int().numpy()
    ref = Wav2Vec2FeatureExtractor.zero_mean_unit_var_norm(rows, mask)
    torch.testing.assert_close(ours, torch.from_numpy(np.stack(ref)), atol=1e-5, rtol=1e-5)


def test_fingerprint_stable_and_discriminating(tmp_path: Path) -> None:
    a = _save_ssl("wav2vec2-layer", tmp_path / "a", seed=0)
    t1, t2 = load_teacher(str(a)), load_teacher(str(a))
    t3 = load_teacher(str(_save_ssl("wav2vec2-layer", tmp_path / "b", seed=1)))
    assert t1.config_fingerprint() == t2.config_fingerprint()
    assert t1.config_fingerprint([1]) == t2.config_fingerprint([1]) != t1.config_fingerprint([2])
    assert t1.config_fingerprint() != t3.config_fingerprint()
    assert t1.config_fingerprint().startswith("ssl-")
    with pytest.raises(SpeechkdError, match="out of range"):
        t1.config_fingerprint([3])


def test_teacher_is_frozen(tmp_path: Path) -> None:
    teacher = load_teacher(str(_save_ssl("wav2vec2-layer", tmp_path / "w")))
    teacher.train()
    assert not teacher.model.training and not any(p.requires_grad for p in teacher.parameters())


def test_non_speech_checkpoint_and_bad_paths(tmp_path: Path) -> None:
    from transformers import BertConfig, BertModel

    bert = tmp_path / "bert"
    cfg = BertConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)
    BertModel(cfg).save_pretrained(bert)
    with pytest.raises(SpeechkdError, match=r"bert.*'bert'"):
        load_teacher(str(bert))
    with pytest.raises(SpeechkdError, match="not found"):
        load_teacher(str(tmp_path / "missing"))
    with pytest.raises(SpeechkdError, match="does not match"):
        load_teacher(str(_save_ssl("wav2vec2-layer", tmp_path / "w")), kind="whisper")


# --- Whisper encoder -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def random_whisper(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from transformers import WhisperConfig, WhisperModel

    torch.manual_seed(0)
    cfg = WhisperConfig(
        d_model=16, encoder_layers=2, decoder_layers=1, encoder_attention_heads=2, decoder_attention_heads=2,
        encoder_ffn_dim=32, decoder_ffn_dim=32, vocab_size=100, num_mel_bins=80, max_target_positions=16,
        pad_token_id=0, bos_token_id=1, eos_token_id=0, decoder_start_token_id=1,
    )
    out = tmp_path_factory.mktemp("whisper_random")
    WhisperModel(cfg).save_pretrained(out)
    return out


def test_whisper_sliced_equals_transformers_at_30s(random_whisper: Path) -> None:
    """At exactly 30 s the sliced path must reproduce transformers' own encoder, layer by layer."""
    from transformers import WhisperModel

    teacher = load_teacher(str(random_whisper))
    assert teacher.kind == "whisper" and teacher.frame_shift == pytest.approx(0.02)
    wav = torch.randn(1, teacher.max_samples, generator=torch.Generator().manual_seed(2)) * 0.1
    ours = teacher(wav)
    assert ours.lens.tolist() == [1500]
    hf = WhisperModel.from_pretrained(random_whisper).eval()
    mel = teacher.feature_extractor(wav[0].numpy(), sampling_rate=16000, return_tensors="pt").input_features
    with torch.no_grad():
        ref = hf.encoder(mel, output_hidden_states=True).hidden_states
    assert len(ours.hidden_states) == len(ref) == 3
    for a, b in zip(ours.hidden_states, ref):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    with pytest.raises(SpeechkdError, match="longer than"):
        teacher(torch.zeros(1, teacher.max_samples + 1))


def test_whisper_batch_equals_single_runs(random_whisper: Path) -> None:
    teacher = load_teacher(str(random_whisper))
    lens = torch.tensor([16000, 9999, 4321])
    wavs = torch.randn(3, 16000, generator=torch.Generator().manual_seed(3)) * 0.1
    wavs[torch.arange(16000)[None, :] >= lens[:, None]] = 0.0
    out = teacher(wavs, lens)
    expected = [((n // 160) - 1) // 2 + 1 for n in lens.tolist()]  # mel frames, then conv2 (stride 2, pad 1)
    assert out.lens.tolist() == expected == [50, 31, 14]
    for i in range(3):
        single = teacher(wavs[i : i + 1, : int(lens[i])])
        t = expected[i]
        for a, b in zip(out.hidden_states, single.hidden_states):
            torch.testing.assert_close(a[i, :t], b[0], atol=1e-5, rtol=1e-5)
            assert torch.count_nonzero(a[i, t:]) == 0


def test_real_whisper_sliced_vs_padded_30s(tmp_path_factory: pytest.TempPathFactory, clip: np.ndarray) -> None:
    """tiny.en on a real LibriVox clip: per-layer cosine of sliced-position output to the padded-30 s output."""
    from transformers import WhisperModel

    path = converted_tiny_en(tmp_path_factory)
    teacher = load_teacher(str(path))
    out = teacher(torch.from_numpy(clip)[None])
    n_frames = int(out.lens[0])
    assert n_frames == ((len(clip) // 160) - 1) // 2 + 1
    hf = WhisperModel.from_pretrained(path).eval()
    mel = teacher.feature_extractor(clip, sampling_rate=16000, return_tensors="pt").input_features
    with torch.no_grad():
        ref = hf.encoder(mel, output_hidden_states=True).hidden_states
    cos = [
        float(torch.nn.functional.cosine_similarity(a[0, :n_frames], b[0], dim=-1).mean())
        for a, b in zip(ref, out.hidden_states)
    ]
    print("cosine(sliced, padded-30s) per layer:", " ".join(f"{c:.4f}" for c in cos))
    assert cos[0] > 0.999  # conv + positions: only the last frame's conv sees different padding
    assert min(cos) > 0.9 and cos[-1] > 0.9
