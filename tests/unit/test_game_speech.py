"""Game speech extraction: both archive formats, parsed from small synthetic archives the tests write."""

from __future__ import annotations

import gzip
import os
import struct
import subprocess
import sys

import pytest

from speechkd.data.game_speech import (
    QUEEN,
    SKY,
    GameDataUnavailable,
    GameSpeechConfig,
    extract_game_speech,
    find_package_root,
    is_mumble,
    parse_dog,
    parse_queen_table,
    parse_sky_index,
    queen_clips,
    queen_dialogue_lines,
    queen_speaker,
    report_path,
    sky_clips,
    sky_pcm,
    speech_segments,
)
from speechkd.errors import SpeechkdError

propack = pytest.importorskip("propack")
sf = pytest.importorskip("soundfile")
from speechkd.testing.game_data import (  # noqa: E402 - after the importorskips
    dog_file,
    queen_bundle,
    write_fake_queen,
    write_fake_sky,
)


# ------------------------------------------------------------------------------------------------ Queen
def test_queen_table_round_trip():
    data = queen_bundle([("ABC.SB", b"x" * 10), ("NAOMI2.DOG", b"y" * 3)], broken=("BAD.SB",))
    table = parse_queen_table(data)
    assert [e.name for e in table] == ["ABC.SB", "NAOMI2.DOG", "BAD.SB"]
    assert data[table[0].offset : table[0].offset + table[0].size] == b"x" * 10
    assert data[table[1].offset : table[1].offset + table[1].size] == b"y" * 3
    assert table[2].offset > len(data)


def test_queen_table_too_short_names_file():
    data = queen_bundle([("ABC.SB", b"x")])
    with pytest.raises(SpeechkdError, match="fake.1c"):
        parse_queen_table(data[:20], "fake.1c")


def test_speech_segments_numbering():
    # every command ends a segment and advances the number; grab commands speak nothing; XY carries 11 chars
    assert speech_segments("Hello.") == [(0, "Hello.")]
    assert speech_segments("One.*FRTwo.*15") == [(0, "One."), (1, "Two.")]
    assert speech_segments("*GDOkay.*XY00(237,112)Go.") == [(1, "Okay."), (2, "Go.")]


def test_parse_dog_names_and_texts():
    dog = dog_file(42, [(0, "Hi."), (0x2B, "A.*WTB.")], [(0x2B, "C.")], ("D.", "E."))
    lines = parse_dog(dog[20:], "NAOMI2.DOG")
    assert {n: ln.text for n, ln in lines.items()} == {
        "42SSSSJ1": "Hi.",
        "42002BJ1": "A.",
        "42002BJ2": "B.",
        "42002BP1": "C.",
        "42XXXXP1": "D.",
        "42XXXXJ1": "E.",
    }
    assert lines["42002BP1"].speaker == "queen-NAOMI" and lines["42002BJ2"].speaker == "queen-JOE"


def test_dialogue_conflicts_are_dropped():
    a = dog_file(5, [(1, "Same.")], [(1, "One text.")], ("", ""))
    b = dog_file(5, [(1, "Same.")], [(1, "Another text.")], ("", ""))
    data = queen_bundle([("A1.DOG", a), ("B1.DOG", b)])
    lines, conflicts = queen_dialogue_lines(data, parse_queen_table(data))
    assert conflicts == {"050001P1"}
    assert "050001P1" not in lines and lines["050001J1"].text == "Same."


def test_joe_description_lines():
    from speechkd.data.game_speech import queen_joe_lines
    from speechkd.testing.game_data import jas_files

    data = queen_bundle(jas_files(["Desc one.", "Desc two.*14Part two."], ["N"], ["R1", "R2"], {3: "Nope.*03"}))
    lines = {n: ln.text for n, ln in queen_joe_lines(data, parse_queen_table(data)).items()}
    assert lines == {"JOE00031": "Nope.", "JOE00411": "Desc one.", "JOE00421": "Desc two.", "JOE00422": "Part two."}


def test_queen_speaker_rules():
    keys = {7: "TESTER"}
    assert queen_speaker("070005P1", keys) == "queen-TESTER"
    assert queen_speaker("070005J1", keys) == "queen-JOE"
    assert queen_speaker("080005P1", keys) == "queen-DIALOGUE08"
    assert queen_speaker("JOE00841", keys) == "queen-JOE"
    assert queen_speaker("C100A032", keys) == "queen-CUTSCENE"
    assert queen_speaker("COMIC012", keys) == "queen-COMIC"
    assert queen_speaker("105ASSSS", keys) is None  # sound effect


def test_queen_clips_from_fake_bundle(tmp_path):
    fake = write_fake_queen(tmp_path)
    clips, skipped = queen_clips(fake.path, rate=11840)
    by_name = {c.clip_id[len("queen-") :]: c for c in clips}
    assert set(by_name) == set(fake.durations)
    assert {n: c.speaker for n, c in by_name.items()} == fake.speakers
    assert {n: c.text for n, c in by_name.items() if c.text} == fake.texts
    assert {(s.reason, s.clip_id) for s in skipped} == {
        ("sound_effect", "queen-12SSSSSS"),
        ("bad_entry", "queen-07001FP1"),
    }


# ------------------------------------------------------------------------------------------------ Sky
def test_sky_index_offsets_and_flags(tmp_path):
    fake = write_fake_sky(tmp_path)
    index = {e.file_num: e for e in parse_sky_index(fake.dnr.read_bytes())}
    dsk = fake.dsk.read_bytes()
    assert set(index) == {100, 50000, 50001, 50002, 50003}
    assert index[50002].offset % 16 == 0  # decoded from the shifted (bit 23) form
    assert not index[50000].compressible and index[50001].compressible
    for num in (50000, 50002):  # the plain files' bodies are the PCM written
        e = index[num]
        assert dsk[e.offset + 22 : e.offset + e.size] == fake.pcm[num].tobytes()


def test_sky_clips_unpack_rnc(tmp_path):
    fake = write_fake_sky(tmp_path)
    clips, skipped = sky_clips(fake.dnr, fake.dsk, 11025)
    assert [c.clip_id for c in clips] == ["sky-50000", "sky-50001", "sky-50002"]  # 100 is not speech
    assert [c.compressed for c in clips] == [False, True, False]
    for c in clips:
        assert sky_pcm(c) == fake.pcm[int(c.clip_id[4:])].tobytes()
    assert [(s.reason, s.clip_id) for s in skipped] == [("bad_entry", "sky-50003")]


def test_sky_index_too_short():
    with pytest.raises(SpeechkdError, match="index of 3 entries"):
        parse_sky_index(struct.pack("<I", 3) + b"\0" * 8)


# ------------------------------------------------------------------------------------------------ driver
def _extract(tmp_path, **overrides):
    cfg = GameSpeechConfig(dev_speakers=(), test_speakers=("TESTER",), num_jobs=1, **overrides)
    return extract_game_speech(
        tmp_path / "cache", tmp_path / "audio", tmp_path / "manifests", cfg, download=False, system_root=tmp_path / "no"
    )


def test_extract_writes_pool_and_labelled_part(tmp_path):
    from lhotse import load_manifest

    fq = write_fake_queen(tmp_path / "cache")
    fs = write_fake_sky(tmp_path / "cache")
    report = _extract(tmp_path)
    m = tmp_path / "manifests"
    recs = load_manifest(m / "librispeech_recordings_train-real.jsonl.gz")
    sups = load_manifest(m / "librispeech_supervisions_train-real.jsonl.gz")
    pool = {s.id: s for s in sups}
    held = {n for n, spk in fq.speakers.items() if spk == "queen-TESTER"}
    expected_pool = {f"queen-{n}" for n in fq.durations if n not in held} | {f"sky-{n}" for n in fs.pcm}
    assert set(pool) == expected_pool
    assert all(s.text == "" for s in sups)  # the pool is unlabelled, even where a transcript exists
    assert pool["queen-070005J1"].speaker == "queen-JOE" and pool["sky-50001"].speaker == "sky"
    assert pool["queen-JOE00011"].custom["text_raw"] == "It doesn't seem to open"  # known, not trained on
    assert "text_raw" not in pool["queen-C1A__051"].custom
    for rec in recs:
        assert rec.sampling_rate == 16000
        audio, rate = sf.read(rec.sources[0].source)
        assert rate == 16000 and audio.ndim == 1 and len(audio) == rec.num_samples
        assert sf.info(rec.sources[0].source).subtype == "PCM_16"
    # durations follow the true source rates: Sky 11,025 Hz exactly; Queen's MP3 tones read at 11,840 Hz
    r = {rec.id: rec for rec in recs}
    for num, pcm in fs.pcm.items():
        assert r[f"sky-{num}"].duration == pytest.approx(len(pcm) / 11025, abs=1e-3)
    for n, seconds in fq.durations.items():
        if n not in held:
            assert r[f"queen-{n}"].duration == pytest.approx(seconds * 11025 / 11840, abs=0.08)
    test = {s.id: s for s in load_manifest(m / "librispeech_supervisions_test-real.jsonl.gz")}
    assert {i: s.text for i, s in test.items()} == {
        f"queen-{n}": fq.texts[n].upper().rstrip(".") for n in held
    }
    assert {s.speaker for s in test.values()} == {"queen-TESTER"}
    assert not {s.speaker for s in test.values()} & {s.speaker for s in sups}
    assert test["queen-070005P2"].custom["text_raw"] == "Okay then."
    assert report.clips == {"queen": len(expected_pool) - len(fs.pcm), "sky": len(fs.pcm)}
    tsv = report_path(m, "train-real").read_text().splitlines()
    assert tsv[0] == "reason\tclip_id\tgame\tdetail"
    assert {tuple(row.split("\t")[:2]) for row in tsv[1:]} == {
        ("sound_effect", "queen-12SSSSSS"),
        ("bad_entry", "queen-07001FP1"),
        ("bad_entry", "sky-50003"),
    }


def test_extract_is_resumable_and_deterministic(tmp_path):
    write_fake_queen(tmp_path / "cache")
    write_fake_sky(tmp_path / "cache")
    first = _extract(tmp_path)
    assert sum(first.reused.values()) == 0
    manifest = tmp_path / "manifests" / "librispeech_recordings_train-real.jsonl.gz"
    before = gzip.decompress(manifest.read_bytes())  # the gzip header holds a time stamp
    one = next((tmp_path / "audio" / "sky").glob("*.flac"))
    stamp = one.stat().st_mtime_ns
    second = _extract(tmp_path)
    assert second.reused == {"queen": 11, "sky": 3}  # every clip's FLAC found: nothing redone
    assert one.stat().st_mtime_ns == stamp
    assert gzip.decompress(manifest.read_bytes()) == before


def test_transcripts_off_keeps_everything_in_pool(tmp_path):
    fq = write_fake_queen(tmp_path / "cache")
    write_fake_sky(tmp_path / "cache")
    report = _extract(tmp_path, transcripts=False)
    assert report.clips["queen"] == len(fq.durations)
    assert not (tmp_path / "manifests" / "librispeech_recordings_test-real.jsonl.gz").exists()


def test_held_out_joe_is_refused(tmp_path):
    write_fake_queen(tmp_path / "cache")
    with pytest.raises(SpeechkdError, match="Joe"):
        extract_game_speech(
            tmp_path / "cache", tmp_path / "a", tmp_path / "m",
            GameSpeechConfig(games=("queen",), dev_speakers=("JOE",), test_speakers=()),
            download=False, system_root=tmp_path / "no",
        )


def test_mumbles():
    assert is_mumble("MMMMRFT GRRBLT") and is_mumble("UMMMM") and is_mumble("H")
    assert not is_mumble("NO WEDGEWOOD IS") and not is_mumble("WHY") and not is_mumble("I'LL SEE")


def test_unavailable_package(tmp_path):
    with pytest.raises(GameDataUnavailable, match=QUEEN.deb):
        find_package_root(QUEEN, tmp_path, download=False, system_root=tmp_path / "no")


def test_cli_skips_when_unavailable(tmp_path):
    env_cmd = [
        sys.executable, "-m", "speechkd", "data", "extract-game-speech", "--cache-dir", str(tmp_path / "c"),
        "--audio-dir", str(tmp_path / "a"), "--manifest-dir", str(tmp_path / "m"), "--download", "false",
        "--games", "sky", "--skip-unavailable",
    ]
    if all(os.path.isfile(os.path.join("/", f)) for f in SKY.files):
        pytest.skip("beneath-a-steel-sky is installed here: nothing to skip")
    res = subprocess.run(env_cmd, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert "SKIPPED" in res.stdout and SKY.deb in res.stdout
    assert not (tmp_path / "m" / "librispeech_recordings_train-real.jsonl.gz").exists()
