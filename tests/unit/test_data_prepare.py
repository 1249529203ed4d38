"""LibriSpeech-layout preparation and summaries on a generated fake corpus."""

from __future__ import annotations

import csv

import pytest
from lhotse import load_manifest

from speechkd.cli import main
from speechkd.data.prepare import (
    SkipReason,
    detect_parts,
    manifest_paths,
    prepare_librispeech,
    read_report,
    report_path,
)
from speechkd.data.summary import TOTAL, format_table, summarize_manifests
from speechkd.errors import SpeechkdError
from speechkd.testing.fake_librispeech import ALL_BAD_INPUTS, make_fake_librispeech

TRAIN, DEV = "train-clean-5", "dev-clean-2"
PARTS = {TRAIN: (3, 2, 3), DEV: (2, 1, 2)}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_fake_librispeech(tmp_path_factory.mktemp("corpus") / "LibriSpeech", PARTS, bad_inputs=ALL_BAD_INPUTS)


@pytest.fixture(scope="module")
def prepared(corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("manifests")
    return out, prepare_librispeech(corpus.root, out, num_jobs=2)


def test_generator_counts_follow_the_request(corpus):
    assert corpus.parts[TRAIN].num_utterances == 3 * 2 * 3
    assert corpus.parts[TRAIN].num_speakers == 3
    assert corpus.parts[DEV].num_utterances == 2 * 1 * 2
    assert not corpus.parts[TRAIN].speakers & corpus.parts[DEV].speakers
    durations = [u.duration for p in corpus.parts.values() for u in p.utterances.values()]
    assert all(0.5 <= d <= 2.0 for d in durations) and len(set(durations)) > 1


def test_manifests_match_the_corpus(corpus, prepared):
    out, reports = prepared
    assert set(reports) == set(PARTS)  # auto-detected
    for part, expected in corpus.parts.items():
        rep = reports[part]
        assert rep.num_utterances == expected.num_utterances
        assert rep.num_speakers == expected.num_speakers
        assert rep.duration_seconds == pytest.approx(expected.duration_seconds, rel=1e-9)
        rec_path, sup_path = manifest_paths(out, part)
        recs, sups = load_manifest(rec_path), load_manifest(sup_path)
        assert sorted(r.id for r in recs) == sorted(expected.utterances)
        for sup in sups:
            utt = expected.utterances[sup.id]
            assert (sup.text, sup.speaker, sup.recording_id) == (utt.text, utt.speaker, utt.utt_id)
            assert recs[sup.id].num_samples == utt.num_samples
            assert sup.duration == pytest.approx(utt.duration)


def test_each_bad_input_is_skipped_counted_and_named(corpus, prepared):
    out, reports = prepared
    assert reports[TRAIN].skipped_by_reason == {k.value: 1 for k in ALL_BAD_INPUTS}
    assert reports[DEV].skipped == []
    listed = read_report(report_path(out, TRAIN))
    assert len(listed) == len(corpus.planted) == len(ALL_BAD_INPUTS)
    for planted in corpus.planted:
        rows = [s for s in listed if s.reason == planted.reason]
        assert len(rows) == 1, planted.reason
        assert rows[0].utt_id == planted.utt_id
        assert rows[0].path.startswith(str(planted.path))  # "<file>" or "<trans.txt>:<line>"
    assert read_report(report_path(out, DEV)) == []


def test_missing_corpus_or_part_names_the_path(tmp_path, corpus):
    with pytest.raises(SpeechkdError, match="nowhere"):
        prepare_librispeech(tmp_path / "nowhere", tmp_path / "out")
    with pytest.raises(SpeechkdError, match="test-other"):
        prepare_librispeech(corpus.root, tmp_path / "out", parts=["test-other"])


def test_part_without_usable_utterance_is_an_error(tmp_path):
    info = make_fake_librispeech(tmp_path / "LS", {DEV: (1, 1, 2)}, sampling_rate=8000)
    with pytest.raises(SpeechkdError, match=f"{DEV}.*no usable utterance"):
        prepare_librispeech(info.root, tmp_path / "out", sampling_rate=16000)
    listed = read_report(report_path(tmp_path / "out", DEV))
    assert [s.reason for s in listed] == [SkipReason.WRONG_SAMPLE_RATE] * 2
    assert not manifest_paths(tmp_path / "out", DEV)[0].exists()


def test_rerun_reuses_existing_manifests_unless_overwrite(tmp_path, corpus):
    first = prepare_librispeech(corpus.root, tmp_path, parts=[DEV])[DEV]
    rec_path = manifest_paths(tmp_path, DEV)[0]
    mtime = rec_path.stat().st_mtime_ns
    again = prepare_librispeech(corpus.root, tmp_path, parts=[DEV])[DEV]
    assert again.reused and not first.reused
    assert rec_path.stat().st_mtime_ns == mtime
    assert (again.num_utterances, again.num_speakers) == (first.num_utterances, first.num_speakers)
    assert again.duration_seconds == pytest.approx(first.duration_seconds)
    forced = prepare_librispeech(corpus.root, tmp_path, parts=[DEV], overwrite=True)[DEV]
    assert not forced.reused


def test_detect_parts_ignores_other_entries(tmp_path):
    info = make_fake_librispeech(tmp_path / "LS", {DEV: (1, 1, 1)})
    (info.root / "README.TXT").write_text("not a part")
    (info.root / "empty-dir").mkdir()
    (info.root / "train-clean-5").mkdir()
    (info.root / "train-clean-5" / ".completed").touch()
    assert detect_parts(info.root) == [DEV]


def test_summary_matches_the_corpus(corpus, prepared, tmp_path):
    out, _ = prepared
    rows = {r.part: r for r in summarize_manifests(out)}
    assert set(rows) == {TRAIN, DEV, TOTAL}
    for part, expected in corpus.parts.items():
        assert rows[part].num_utterances == expected.num_utterances
        assert rows[part].num_speakers == expected.num_speakers
        assert rows[part].hours == pytest.approx(expected.duration_seconds / 3600)
    assert rows[TOTAL].num_utterances == 18 + 4
    assert rows[TOTAL].num_speakers == 3 + 2
    assert rows[TOTAL].duration_seconds == pytest.approx(sum(p.duration_seconds for p in corpus.parts.values()))
    table = format_table(list(rows.values())).splitlines()
    assert table[0].split() == ["part", "hours", "utterances", "speakers", "mean_duration_s", "max_duration_s"]
    assert len(table) == 4


def test_cli_prepare_and_summary(corpus, tmp_path, capsys):
    out = tmp_path / "manifests"
    rc = main(
        ["data", "prepare-librispeech", "--corpus-dir", str(corpus.root), "--output-dir", str(out), "--parts", DEV]
    )
    assert rc == 0
    assert all(p.is_file() for p in manifest_paths(out, DEV))
    assert "prepare-librispeech" in (out / "command.sh").read_text()
    assert "corpus_dir:" in (out / "config.yaml").read_text()

    tsv = tmp_path / "summary.tsv"
    assert main(["data", "summary", "--manifest-dir", str(out), "--output", str(tsv)]) == 0
    with open(tsv) as f:
        rows = {r["part"]: r for r in csv.DictReader(f, delimiter="\t")}
    assert int(rows[DEV]["utterances"]) == corpus.parts[DEV].num_utterances
    assert int(rows[DEV]["speakers"]) == corpus.parts[DEV].num_speakers
    assert float(rows[DEV]["hours"]) == pytest.approx(corpus.parts[DEV].duration_seconds / 3600, abs=1e-3)
    assert DEV in capsys.readouterr().out

    assert main(["data", "prepare-librispeech", "--corpus-dir", str(tmp_path / "missing")]) == 1


def _rewrite_transcripts(root, edit) -> list:
    """Apply ``edit(bytes) -> bytes`` to every trans.txt under ``root``; return the files."""
    files = sorted(root.rglob("*.trans.txt"))
    for f in files:
        f.write_bytes(edit(f.read_bytes()))
    return files


def test_lower_and_mixed_case_transcripts_are_upper_cased_and_counted(tmp_path, capsys):
    """A lower-case corpus used to pass unchanged: case-split BPE pieces, `ask` scored against `ASK`."""
    info = make_fake_librispeech(tmp_path / "LS", {DEV: (1, 2, 2)})
    files = _rewrite_transcripts(info.root, lambda b: b)
    lines = files[0].read_text().splitlines()
    first_id, first_text = lines[0].split(maxsplit=1)
    second_id, second_text = lines[1].split(maxsplit=1)
    lines[0] = f"{first_id} {first_text.lower()}"  # all lower case
    lines[1] = f"{second_id} {second_text.capitalize()}"  # mixed case
    files[0].write_text("\n".join(lines) + "\n")
    report = prepare_librispeech(info.root, tmp_path / "out")[DEV]
    texts = {s.id: s.text for s in load_manifest(manifest_paths(tmp_path / "out", DEV)[1])}
    assert texts == {u: utt.text for u, utt in info.parts[DEV].utterances.items()}  # the upper-case originals
    assert report.case_normalised == 2 and report.skipped == []
    assert main(["data", "prepare-librispeech", "--corpus-dir", str(info.root), "--output-dir",
                 str(tmp_path / "cli"), "--parts", DEV]) == 0
    assert "2 transcripts upper-cased" in capsys.readouterr().out


def test_non_utf8_line_is_skipped_naming_file_and_line(tmp_path):
    """A Latin-1 trans.txt used to stop preparation with a raw UnicodeDecodeError naming no file."""
    info = make_fake_librispeech(tmp_path / "LS", {DEV: (1, 1, 3)}, bad_inputs=[SkipReason.NOT_UTF8])
    planted = info.planted[0]
    report = prepare_librispeech(info.root, tmp_path / "out")[DEV]
    assert report.num_utterances == 3  # the good lines of the same file are kept
    assert [(s.reason, s.utt_id) for s in report.skipped] == [(SkipReason.NOT_UTF8, planted.utt_id)]
    skip = report.skipped[0]
    assert skip.path == f"{planted.path}:4"  # after the 3 good lines
    assert "c9" in skip.detail and "UTF-8" in skip.detail
    assert read_report(report_path(tmp_path / "out", DEV)) == report.skipped  # no second row for its audio


def test_byte_order_mark_at_file_start_is_dropped_and_named_inside_an_id(tmp_path):
    """A BOM at the start of trans.txt used to make the first id mismatch without a visible reason."""
    info = make_fake_librispeech(tmp_path / "LS", {DEV: (1, 2, 2)})
    files = _rewrite_transcripts(info.root, lambda b: b)
    files[0].write_bytes(b"\xef\xbb\xbf" + files[0].read_bytes())  # file-start BOM: harmless
    second = files[1].read_text().splitlines()
    bad_id = second[1].split()[0]
    second[1] = "\ufeff" + second[1]  # a BOM in the middle of a file: breaks that id
    files[1].write_text("\n".join(second) + "\n", encoding="utf-8")
    report = prepare_librispeech(info.root, tmp_path / "out")[DEV]
    assert report.num_utterances == 3
    assert [s.reason for s in report.skipped] == [SkipReason.BAD_UTTERANCE_ID]
    skip = report.skipped[0]
    assert skip.utt_id == "\ufeff" + bad_id and skip.path == f"{files[1]}:2"
    assert "U+FEFF (ZERO WIDTH NO-BREAK SPACE)" in skip.detail
