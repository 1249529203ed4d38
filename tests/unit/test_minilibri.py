"""MiniLibri builder: text selection, voice split, real-speech transcripts, and a tiny build checked for
exact LibriSpeech layout, resumability and option checks."""

from __future__ import annotations

import dataclasses
import re
import shutil
from collections import Counter
from pathlib import Path

import pytest
import soundfile as sf
import yaml

from speechkd.data import minilibri as ml
from speechkd.errors import SpeechkdError

UTT_RE = re.compile(r"^(\d+)-(\d+)-(\d{4})$")


def test_bible_sentences_whole_sentences_in_word_range() -> None:
    lines = [
        "Ge1:3 And God said, Let there be light: and there was light.",
        "Ge1:9 Short one. And God said, Let the waters under the heaven be gathered together unto one place!",
        "Ge34:20 And Hamor and Shechem his son came unto the gate of their city, and communed, saying,",
        "not a verse line",
    ]
    got = ml.bible_sentences(lines, min_words=5, max_words=12)
    # "Short one." is too short, the 16-word sentence too long, the verse ending in "saying," is incomplete.
    assert got == ["And God said, Let there be light: and there was light."]
    assert len(ml.bible_sentences(lines, min_words=2, max_words=16)) == 3


def test_unique_sentences_dedup_normalise_and_seeded_order() -> None:
    raw = ["And it was so.", "and it was so!", "The LORD is my shepherd.", "...", "Let there be light."]
    skipped: Counter = Counter()
    a = list(ml.unique_sentences(raw, seed=1, skipped=skipped))
    assert sorted(s.transcript for s in a) == ["AND IT WAS SO", "LET THERE BE LIGHT", "THE LORD IS MY SHEPHERD"]
    assert skipped == {"duplicate_sentence": 1, "text_normalises_to_empty": 1}
    b = list(ml.unique_sentences(raw, seed=1, skipped=Counter()))
    assert [s.text for s in a] == [s.text for s in b]


def test_plan_tts_splits_disjoint_and_sized() -> None:
    sents = iter([ml.Sentence(f"word {i} " * 5, f"W{i}") for i in range(1000)])  # 10 words each
    voices = {"train": [v for v in ml.VOICE_CATALOGUE if v.role == "train"][:2], "test": [ml.VOICE_CATALOGUE[-1]]}
    # words_per_second=1: each sentence is 10 s; 1 min -> 6 sentences, 0.5 min -> 3
    cfg = ml.MiniLibriConfig(train_minutes=1.0, dev_minutes=0.5, test_clean_minutes=0.5, words_per_second=1.0)
    utts = ml.plan_tts(cfg, sents, voices)
    by_split = {s: [u for u in utts if u.split == s] for s in ("train", "dev", "test-clean")}
    assert {s: len(u) for s, u in by_split.items()} == {"train": 6, "dev": 3, "test-clean": 3}
    texts = [u.transcript for u in utts]
    assert len(texts) == len(set(texts))  # no sentence in two splits
    assert {u.speaker_id for u in by_split["test-clean"]} == {ml.VOICE_CATALOGUE[-1].speaker_id}
    train_ids = [u.utt_id for u in by_split["train"]]
    s0, s1 = (v.speaker_id for v in voices["train"])
    assert train_ids[:3] == [f"{s0}-{s0}1-0001", f"{s1}-{s1}1-0001", f"{s0}-{s0}1-0002"]  # round robin


def test_catalogue_roles_disjoint_and_ids_unique() -> None:
    ids = [v.speaker_id for v in ml.VOICE_CATALOGUE]
    assert len(ids) == len(set(ids))
    assert ml.ASTERISK_SPEAKER not in ids and all(s not in ids for _, _, s in ml.POCKETSPHINX_SETS)
    names = Counter((v.engine, v.name, v.effects) for v in ml.VOICE_CATALOGUE)
    assert max(names.values()) == 1
    # a pitch/tempo variant is not a held-out speaker: no base voice serves both train and test-clean
    roles: dict = {}
    for v in ml.VOICE_CATALOGUE:
        roles.setdefault((v.engine, v.name), set()).add(v.role)
    assert all(len(r) == 1 for r in roles.values()), roles


def test_clear_voice_set_keeps_only_the_measured_clear_voices() -> None:
    clear = ml.select_voices(ml.VOICE_CATALOGUE, ml.MiniLibriConfig())
    assert {v.speaker_id for vs in clear.values() for v in vs} == ml.CLEAR_SPEAKERS
    assert all(v.engine != "espeak-ng" for vs in clear.values() for v in vs)
    every = ml.select_voices(ml.VOICE_CATALOGUE, ml.MiniLibriConfig(voice_set="all"))
    assert sum(map(len, every.values())) == len(ml.VOICE_CATALOGUE)
    with pytest.raises(SpeechkdError, match="unknown MiniLibri voice set 'loud'"):
        ml.select_voices(ml.VOICE_CATALOGUE, ml.MiniLibriConfig(voice_set="loud"))


def test_tiny_voices_round_robin_fast_engines() -> None:
    vs = [v for v in ml.VOICE_CATALOGUE if v.role == "train"]
    got = ml._tiny_voices(vs, ("espeak-ng", "flite"), 3)
    assert [v.engine for v in got] == ["espeak-ng", "flite", "espeak-ng"]
    only_slow = [v for v in vs if v.engine == "piper"]
    assert ml._tiny_voices(only_slow, ("espeak-ng", "flite"), 3) == only_slow


def test_select_voices_errors_without_held_out_voice() -> None:
    train_only = [v for v in ml.VOICE_CATALOGUE if v.role == "train"]
    with pytest.raises(SpeechkdError, match="no installed TTS voice for the MiniLibri test speakers"):
        ml.select_voices(train_only, ml.MiniLibriConfig(voice_set="all"))


@pytest.mark.parametrize(
    "text, expected",
    [
        ("press * to toggle pause, press # to enter a new dictation filename",
         "PRESS STAR TO TOGGLE PAUSE PRESS POUND TO ENTER A NEW DICTATION FILENAME"),
        ("Use the 7 key for Q.", "USE THE SEVEN KEY FOR Q"),
        ("[ascending tones]", None),
        ("(10 seconds of silence)", None),
        ("H.323", None),
        ("dial extension 1234", None),
        ("3D audio enabled", None),
    ],
)
def test_clean_asterisk_text(text: str, expected: str | None) -> None:
    assert ml.clean_asterisk_text(text) == expected


TOOLS = ("sox", "bible", "espeak-ng")


@pytest.fixture(scope="module")
def tiny_corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:
        pytest.skip(f"MiniLibri tools not installed: {missing}")
    out = tmp_path_factory.mktemp("minilibri") / "MiniLibri"
    meta = ml.make_minilibri(out, ml.MiniLibriConfig(tiny=True, num_jobs=2))
    return out, meta


def read_split(root: Path, split: str) -> dict[str, tuple[int, str]]:
    """utt id -> (speaker id, transcript), checking the layout exactly on the way."""
    out: dict[str, tuple[int, str]] = {}
    for trans in sorted((root / split).glob("*/*/*.trans.txt")):
        spk, chap = trans.parent.parent.name, trans.parent.name
        assert trans.name == f"{spk}-{chap}.trans.txt"
        flacs = {p.stem for p in trans.parent.glob("*.flac")}
        assert set(trans.parent.iterdir()) == {trans, *(trans.parent / f"{u}.flac" for u in flacs)}
        lines = trans.read_text().splitlines()
        ids = [line.split(" ", 1)[0] for line in lines]
        assert set(ids) == flacs and ids == sorted(ids)
        for line in lines:
            utt, text = line.split(" ", 1)
            m = UTT_RE.match(utt)
            assert m and m.group(1) == spk and m.group(2) == chap, utt
            assert text.strip() and text == text.upper() and re.fullmatch(r"[A-Z' ]+", text), line
            out[utt] = (int(spk), text)
    return out


def test_tiny_build_layout_and_splits(tiny_corpus: tuple[Path, dict]) -> None:
    root, meta = tiny_corpus
    assert sorted(p.name for p in root.iterdir() if p.is_dir()) == sorted(ml.SPLITS)
    splits = {s: read_split(root, s) for s in ml.SPLITS}
    n = {s: len(u) for s, u in splits.items()}
    assert all(v > 0 for v in n.values()) and 20 <= sum(n.values()) <= 60, n
    assert {s: meta["splits"][s]["utterances"] for s in ml.SPLITS} == n
    spk = {s: {v[0] for v in u.values()} for s, u in splits.items()}
    assert spk["dev"] <= spk["train"]
    assert not spk["test-clean"] & spk["train"] and not spk["test-other"] & (spk["train"] | spk["test-clean"])
    train_texts = {v[1] for v in splits["train"].values()}
    assert not train_texts & {v[1] for v in splits["test-clean"].values()}
    assert not train_texts & {v[1] for v in splits["dev"].values()}
    # every flac: 16 kHz, mono, 16 bit, non-empty
    for flac in root.rglob("*.flac"):
        info = sf.info(str(flac))
        assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16") and info.frames > 0, flac
    # test-other is real recorded speech from the installed sources
    real = set(meta["real_speakers"])
    assert spk["test-other"] <= real
    if Path(ml.MiniLibriConfig().pocketsphinx_dir, "librivox").is_dir():
        assert "HE WAS NOT AN ILL DISPOSED YOUNG MAN" in {v[1] for v in splits["test-other"].values()}
    assert (root / ml.COMPLETE_MARKER).is_file()
    assert yaml.safe_load((root / ml.METADATA_FILE).read_text())["seed"] == 0


def test_tiny_build_resumes_and_checks_options(tiny_corpus: tuple[Path, dict], tmp_path: Path) -> None:
    root, meta = tiny_corpus
    work = tmp_path / "copy"
    shutil.copytree(root, work)
    cfg = ml.MiniLibriConfig(tiny=True, num_jobs=1)
    # complete + same options: nothing is rebuilt
    flac = next(work.glob("train/*/*/*.flac"))
    mtime = flac.stat().st_mtime_ns
    assert ml.make_minilibri(work, cfg)["splits"] == meta["splits"]
    assert flac.stat().st_mtime_ns == mtime
    # interrupted build: only the missing utterance is made again, with the same audio
    audio, _ = sf.read(str(flac))
    (work / ml.COMPLETE_MARKER).unlink()
    flac.unlink()
    again = ml.make_minilibri(work, cfg)
    assert again["resumed_utterances"] == sum(s["utterances"] for s in meta["splits"].values()) - 1
    assert (sf.read(str(flac))[0] == audio).all()
    # other options in the same directory are refused
    with pytest.raises(SpeechkdError, match="other options"):
        ml.make_minilibri(work, ml.MiniLibriConfig(tiny=True, seed=7))


def test_real_speech_sources_count_every_skip(tmp_path: Path) -> None:
    import gzip

    import numpy as np

    sounds = tmp_path / "sounds"
    sounds.mkdir()
    sr = 8000
    sf.write(str(sounds / "hello.wav"), np.zeros(sr * 2, np.int16), sr)  # 2 s
    sf.write(str(sounds / "press.wav"), np.zeros(sr * 3, np.int16), sr)  # 3 s
    (sounds / "broken.wav").write_bytes(b"RIFF garbage")
    sf.write(str(sounds / "beep.wav"), np.zeros(sr, np.int16), sr)
    tr = tmp_path / "core-sounds-en.txt.gz"
    with gzip.open(tr, "wt") as f:
        f.write("; header\n\nhello: Hello there.\npress: Press * now.\nbroken: It is broken.\n"
                "beep: [a beep]\nmissing: No audio for me.\n")
    ps = tmp_path / "ps" / "librivox"
    ps.mkdir(parents=True)
    sf.write(str(ps / "clip-1.wav"), np.zeros(16000, np.int16), 16000)
    (ps / "transcription").write_text(
        "<s> he was not an ill disposed young man </s> (clip-1)\n<s> lost </s> (clip-2)\n"
    )
    cfg = ml.MiniLibriConfig(asterisk_sounds_dir=str(sounds), asterisk_transcripts=str(tr),
                             pocketsphinx_dir=str(tmp_path / "ps"), test_other_minutes=10.0)
    skipped: Counter = Counter()
    utts = ml.plan_test_other(cfg, skipped)
    got = sorted((u.speaker_id, u.transcript) for u in utts)
    assert got == [(ml.ASTERISK_SPEAKER, "HELLO THERE"), (ml.ASTERISK_SPEAKER, "PRESS STAR NOW"),
                   (3002, "HE WAS NOT AN ILL DISPOSED YOUNG MAN")]
    assert skipped == {"asterisk_audio_missing": 1, "asterisk_no_usable_transcript": 1,
                       "asterisk_unreadable_audio": 1, "pocketsphinx_audio_missing": 1,
                       "pocketsphinx_not_installed": 1}  # the "cards" set is absent here
    # the cap on Asterisk minutes is honoured: 2.5 s allows only the 2 s prompt
    capped = ml.plan_test_other(dataclasses.replace(cfg, test_other_minutes=2.5 / 60), Counter())
    assert sum(u.speaker_id == ml.ASTERISK_SPEAKER for u in capped) == 1


@pytest.mark.skipif(shutil.which("sox") is None, reason="sox missing")
def test_voice_effects_are_applied_on_conversion(tmp_path) -> None:
    import numpy as np
    import soundfile as sf

    src = tmp_path / "a.wav"
    sf.write(src, (0.1 * np.sin(np.arange(22050) * 0.05)).astype(np.float32), 22050)  # 1 s at 22.05 kHz
    ml.to_flac(src, tmp_path / "plain.flac", 16000)
    ml.to_flac(src, tmp_path / "fast.flac", 16000, ("tempo", "2.0"))
    plain, fast = sf.info(str(tmp_path / "plain.flac")), sf.info(str(tmp_path / "fast.flac"))
    assert plain.samplerate == fast.samplerate == 16000
    assert plain.frames == 16000 and abs(fast.frames - 8000) < 400
