"""Pseudo-label filters: planted hallucinations are dropped by the rule meant for them, good labels
kept, and the report (filter-report.tsv, dropped.jsonl) counts what happened."""

from __future__ import annotations

import gzip
import json
import random
from dataclasses import replace
from pathlib import Path
from typing import Any, Optional

import pytest
from lhotse import CutSet, MonoCut, Recording, SupervisionSegment
from lhotse.audio import AudioSource

from speechkd.cli import main
from speechkd.errors import SpeechkdError
from speechkd.targets.label_filters import (
    DROPPED_FILE,
    REPORT_FILE,
    RULES,
    TOTAL_ROW,
    FilterConfig,
    check_label,
    compression_ratio,
    evaluate_label,
    filter_cuts,
    max_ngram_repeats,
    read_report,
)

SR = 16000
GOOD_TEXT = "He hoped there would be stew for dinner, turnips and carrots."
GOOD_REF = "HE HOPED THERE WOULD BE STEW FOR DINNER TURNIPS AND CARROTS"  # 11 words, 59 characters
GOOD_DURATION = 4.0  # 59 / 4 = 14.75 characters per second
FAST_TEXT = "The birch canoe slid on the smooth planks and glued the sheet to the dark blue background."


def make_cut(
    cut_id: str,
    text: Optional[str],
    duration: float = GOOD_DURATION,
    ref: Optional[str] = None,
    **fields: Any,
) -> MonoCut:
    """A cut with one supervision holding ``text`` and custom fields; the audio is never loaded."""
    rec = Recording(
        id=cut_id,
        sources=[AudioSource(type="file", channels=[0], source=f"/nonexistent/{cut_id}.wav")],
        sampling_rate=SR,
        num_samples=round(duration * SR),
        duration=duration,
    )
    custom = {"teacher": "whisper-tiny.en", **fields}
    if ref is not None:
        custom["reference"] = ref
    sup = SupervisionSegment(id=cut_id, recording_id=cut_id, start=0.0, duration=duration, text=text, custom=custom)
    return MonoCut(id=cut_id, start=0.0, duration=duration, channel=0, recording=rec, supervisions=[sup])


def fast_duration(cps: float) -> float:
    """Duration at which FAST_TEXT (normalised: 89 characters) is spoken at ``cps`` characters/s."""
    return 89 / cps


# cut id -> (cut, expected failed rules in rule order); the first one is the rule meant for it.
def planted_and_good() -> dict[str, tuple[MonoCut, list[str]]]:
    one_sub = GOOD_TEXT.replace("stew", "soup")  # 1 substitution in 11 words: WER 9.09 <= 10
    cases = {
        "good-ref": (make_cut("good-ref", GOOD_TEXT, ref=GOOD_REF, avg_logprob=-0.2, no_speech_prob=0.01), []),
        "good-one-sub": (make_cut("good-one-sub", one_sub, ref=GOOD_REF, avg_logprob=-0.3), []),
        "good-noref": (make_cut("good-noref", GOOD_TEXT), []),
        "good-numbers": (
            make_cut("good-numbers", "In 1984 he paid $5.", 2.0, ref="IN NINETEEN EIGHTY FOUR HE PAID FIVE DOLLARS"), []
        ),
        # 6 back-to-back copies of "I'M SORRY" (max 4); the text also compresses 3.0x
        "loop": (make_cut("loop", "I'm sorry. " * 6, avg_logprob=-0.4), ["ngram_loop", "compression_ratio"]),
        # empty label; against its reference it is also 100% WER
        "empty": (make_cut("empty", "", ref=GOOD_REF, avg_logprob=-0.3), ["empty", "wer"]),
        "blank-audio": (make_cut("blank-audio", " [BLANK_AUDIO] "), ["empty"]),
        "silence": (make_cut("silence", "Thank you.", 1.5, no_speech_prob=0.9, avg_logprob=-0.5), ["no_speech"]),
        "cyrillic": (
            make_cut("cyrillic", "Он надеялся, что на ужин будет тушёное мясо.", ref=GOOD_REF), ["script", "wer"]
        ),
        "cjk": (make_cut("cjk", "他希望晚餐有炖菜，萝卜和胡萝卜。", 2.0), ["script"]),
        "too-fast": (make_cut("too-fast", FAST_TEXT, fast_duration(40.0), avg_logprob=-0.2), ["chars_per_sec"]),
        "too-slow": (make_cut("too-slow", "Yes.", 3.0), ["chars_per_sec"]),
        # a 7-word phrase x5: no loop of n <= 4, but compresses 3.97x (> 2.4)
        "compress": (make_cut("compress", "the cat sat on the red mat " * 5, 8.0), ["compression_ratio"]),
        "low-logprob": (make_cut("low-logprob", GOOD_TEXT, avg_logprob=-1.7), ["avg_logprob"]),
        "far-from-ref": (
            make_cut("far-from-ref", "Go to the shop and buy some bread today, please.", 3.5, ref=GOOD_REF), ["wer"]
        ),
    }
    return cases


def filter_config(**kw: Any) -> FilterConfig:
    return replace(FilterConfig(max_no_speech_prob=0.6), **kw)


# --------------------------------------------------------------------------- measurements
def brute_force_repeats(words: list[str], max_order: int) -> int:
    best = 1 if words else 0
    for n in range(1, max_order + 1):
        for i in range(len(words) - n + 1):
            copies = 1
            while words[i + copies * n : i + (copies + 1) * n] == words[i : i + n]:
                copies += 1
            best = max(best, copies)
    return best


def test_max_ngram_repeats_matches_brute_force() -> None:
    rng = random.Random(0)
    for _ in range(300):
        words = [rng.choice("ab") for _ in range(rng.randint(0, 14))]
        copies, gram = max_ngram_repeats(words, 3)
        assert copies == brute_force_repeats(words, 3), words
        if words:  # the returned n-gram really occurs `copies` times back to back
            text, pattern = " ".join(words), " ".join(gram * copies)
            assert pattern in text


def test_max_ngram_repeats_hand_values() -> None:
    assert max_ngram_repeats("A B C A B C A B C D".split(), 4) == (3, ("A", "B", "C"))
    assert max_ngram_repeats("A B A B A".split(), 4) == (2, ("A", "B"))
    assert max_ngram_repeats("A A A A B".split(), 1) == (4, ("A",))
    assert max_ngram_repeats("A B C D E A B C D E".split(), 4)[0] == 1  # period 5 is beyond order 4
    assert max_ngram_repeats([], 4) == (0, ())


def test_compression_ratio_separates_loops_from_speech() -> None:
    assert compression_ratio(GOOD_TEXT) < 1.0  # short natural text does not compress
    assert compression_ratio("the cat sat on the red mat " * 5) > 2.4
    assert compression_ratio("") == 0.0


# --------------------------------------------------------------------------- single labels
def test_wer_threshold_is_inclusive() -> None:
    cfg = FilterConfig()
    ten = "A B C D E F G H I J"
    assert evaluate_label("A B C D E F G H I X", 1.0, ten, {}, cfg) == []  # 1/10 = 10% is kept
    assert evaluate_label("A B C D E F G H X", 1.0, "A B C D E F G H I", {}, cfg) == ["wer"]  # 11.1%
    assert evaluate_label("A B", 0.2, "", {}, cfg) == ["wer"]  # words against an empty reference
    assert "inf" in check_label("A B", 0.2, "", {}, cfg).failed["wer"]


def test_ngram_loop_threshold() -> None:
    cfg = FilterConfig(max_ngram_repeats=4)
    assert evaluate_label("No, no, no, no.", 1.0, None, {}, cfg) == []  # 4 copies = the maximum
    assert evaluate_label("No, no, no, no, no.", 1.0, None, {}, cfg) == ["ngram_loop"]
    assert evaluate_label("A B C D A B C D A B C D A B C D", 2.0, None, {}, cfg) == []
    assert evaluate_label("A B C D A B C D A B C D A B C D A B C D", 2.0, None, {}, cfg) == ["ngram_loop"]


def test_chars_per_sec_bounds() -> None:
    cfg = FilterConfig(min_chars_per_sec=5.0, max_chars_per_sec=25.0, max_wer=None)
    assert evaluate_label("HELLO WORLD", 11 / 25, None, {}, cfg) == []  # exactly 25 chars/s
    assert evaluate_label("HELLO WORLD", 11 / 26, None, {}, cfg) == ["chars_per_sec"]
    assert evaluate_label("HELLO WORLD", 11 / 5, None, {}, cfg) == []
    assert evaluate_label("HELLO WORLD", 11 / 4, None, {}, cfg) == ["chars_per_sec"]
    assert evaluate_label("HELLO WORLD", 11 / 26, None, {}, replace(cfg, max_chars_per_sec=None)) == []


def test_missing_fields_make_rules_not_applicable() -> None:
    verdict = check_label(GOOD_TEXT, GOOD_DURATION, None, {}, filter_config())
    assert verdict.kept
    assert verdict.applicable == ["empty", "script", "ngram_loop", "compression_ratio", "chars_per_sec"]
    with_fields = check_label(GOOD_TEXT, GOOD_DURATION, GOOD_REF, {"avg_logprob": -0.1, "no_speech_prob": 0.1},
                              filter_config())
    assert with_fields.applicable == list(RULES)


def test_empty_predictions() -> None:
    cfg = FilterConfig()
    for text in (None, "", "   ", "[BLANK_AUDIO]", "..."):
        verdict = check_label(text, 2.0, None, {"avg_logprob": -0.2}, cfg)
        assert list(verdict.failed) == ["empty"], text
        # content rules do not judge an empty label
        assert verdict.applicable == ["empty", "avg_logprob"], text
    keep_empty = replace(cfg, drop_empty=False)
    assert evaluate_label("", 2.0, None, {}, keep_empty) == []
    assert evaluate_label("", 2.0, "SOME WORDS", {}, keep_empty) == ["wer"]  # still 100% WER


def test_disabled_rules_and_bad_values() -> None:
    off = FilterConfig(drop_empty=False, target_script=None, max_ngram_repeats=None, max_compression_ratio=None,
                       min_chars_per_sec=None, max_chars_per_sec=None, min_avg_logprob=None, max_wer=None)
    for cut, _ in planted_and_good().values():
        sup = cut.supervisions[0]
        assert evaluate_label(sup.text, sup.duration, sup.custom.get("reference"), sup.custom, off) == []
    with pytest.raises(SpeechkdError, match="duration"):
        evaluate_label("A", 0.0, None, {}, FilterConfig())
    with pytest.raises(SpeechkdError, match="avg_logprob"):
        evaluate_label("A", 1.0, None, {"avg_logprob": "low"}, FilterConfig())
    with pytest.raises(SpeechkdError, match="min_chars_per_sec"):
        FilterConfig(min_chars_per_sec=30.0).validate()


# --------------------------------------------------------------------------- cut sets and report
def test_planted_hallucinations_are_dropped_by_their_rule(tmp_path: Path) -> None:
    cases = planted_and_good()
    cuts = CutSet.from_cuts(cut for cut, _ in cases.values())
    cfg = filter_config()
    kept, report = filter_cuts(cuts, cfg)

    good = {cid for cid, (_, failed) in cases.items() if not failed}
    assert set(kept.ids) == good
    dropped = {d["cut_id"]: d for d in report.dropped}
    assert set(dropped) == set(cases) - good
    for cid, (_, failed) in cases.items():
        if failed:
            assert dropped[cid]["rule"] == failed[0], cid
            assert dropped[cid]["failed"] == failed, cid

    report.write(tmp_path)
    table = read_report(tmp_path / REPORT_FILE)
    assert list(table) == [*RULES, TOTAL_ROW]
    n = len(cases)
    for rule in RULES:
        row = table[rule]
        first = sum(1 for _, f in cases.values() if f and f[0] == rule)
        anyf = sum(1 for _, f in cases.values() if rule in f)
        assert (int(row["dropped"]), int(row["failed"])) == (first, anyf), rule
        assert int(row["applicable"]) + int(row["not_applicable"]) == n
        assert int(row["kept"]) == int(row["applicable"]) - anyf
        if anyf:
            assert row["examples"], rule
    # hand-counted applicability: references on 6 cuts, log-probabilities on 7, no-speech on 2;
    # content rules apply to the 13 labels that have words
    assert [int(table[r]["applicable"]) for r in ("wer", "avg_logprob", "no_speech", "script")] == [6, 7, 2, 13]
    assert table["empty"]["dropped"] == "2" and table["wer"]["failed"] == "3"
    total = table[TOTAL_ROW]
    assert (int(total["kept"]), int(total["dropped"]), int(total["applicable"])) == (len(good), n - len(good), n)

    lines = (tmp_path / DROPPED_FILE).read_text(encoding="utf-8").splitlines()
    on_disk = {json.loads(ln)["cut_id"]: json.loads(ln) for ln in lines}
    assert set(on_disk) == set(dropped)
    assert on_disk["cyrillic"]["text"].startswith("Он")
    assert on_disk["empty"]["reference"] == GOOD_REF
    assert "40.0" in on_disk["too-fast"]["details"]["chars_per_sec"]


def test_no_reference_anywhere(tmp_path: Path) -> None:
    cuts = CutSet.from_cuts([make_cut("a", GOOD_TEXT), make_cut("b", GOOD_TEXT.upper()), make_cut("c", "")])
    kept, report = filter_cuts(cuts, FilterConfig())
    assert sorted(kept.ids) == ["a", "b"]
    report.write(tmp_path)
    wer = read_report(tmp_path / REPORT_FILE)["wer"]
    assert (wer["applicable"], wer["not_applicable"], wer["failed"]) == ("0", "3", "0")


def test_cut_without_supervision_and_multi_supervision() -> None:
    bare = make_cut("bare", GOOD_TEXT)
    bare.supervisions = []
    two = make_cut("two", GOOD_TEXT)
    bad = SupervisionSegment(id="two-b", recording_id="two", start=0.0, duration=1.0, text="Привет мир")
    two.supervisions.append(bad)
    kept, report = filter_cuts(CutSet.from_cuts([bare, two, make_cut("ok", GOOD_TEXT)]), FilterConfig())
    assert list(kept.ids) == ["ok"]
    assert {d["cut_id"]: d["rule"] for d in report.dropped} == {"bare": "empty", "two": "script"}
    with pytest.raises(SpeechkdError, match="no cuts"):
        filter_cuts(CutSet.from_cuts([]), FilterConfig())


def test_custom_text_field() -> None:
    cut = make_cut("x", "ignored text", whisper_text="Он надеялся")
    kept, report = filter_cuts(CutSet.from_cuts([cut]), FilterConfig(), text_field="whisper_text")
    assert len(kept) == 0 and report.dropped[0]["rule"] == "script"


# --------------------------------------------------------------------------- CLI
def test_cli_filter_labels(tmp_path: Path) -> None:
    cases = planted_and_good()
    src = tmp_path / "cuts.jsonl.gz"
    CutSet.from_cuts(cut for cut, _ in cases.values()).to_file(src)
    out, rep = tmp_path / "out" / "kept.jsonl.gz", tmp_path / "report"
    # max_wer=5 also drops the one-substitution label (9.09%); no-speech rule left off (default)
    rc = main(["pseudo", "filter-labels", "--cuts", str(src), "--output-cuts", str(out), "--report-dir", str(rep),
               "--set", "max_wer=5"])
    assert rc == 0
    kept = {cut.id: cut for cut in CutSet.from_file(out)}
    assert sorted(kept) == ["good-noref", "good-numbers", "good-ref", "silence"]
    assert kept["good-ref"].supervisions[0].custom["avg_logprob"] == -0.2  # fields survive the round trip
    table = read_report(rep / REPORT_FILE)
    assert table["wer"]["dropped"] == "2" and table["no_speech"]["enabled"] == "false"
    assert table[TOTAL_ROW]["kept"] == "4"
    assert "max_wer: 5.0" in (rep / "config.yaml").read_text()
    assert "filter-labels" in (rep / "command.sh").read_text()
    assert len((rep / DROPPED_FILE).read_text().splitlines()) == len(cases) - 4
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".tmp")]


def test_cli_errors(tmp_path: Path) -> None:
    out, rep = tmp_path / "o.jsonl.gz", tmp_path / "r"
    args = ["--output-cuts", str(out), "--report-dir", str(rep)]
    assert main(["pseudo", "filter-labels", "--cuts", str(tmp_path / "missing.jsonl.gz"), *args]) == 1
    empty = tmp_path / "empty.jsonl.gz"
    with gzip.open(empty, "wt"):
        pass
    assert main(["pseudo", "filter-labels", "--cuts", str(empty), *args]) == 1
    good = tmp_path / "good.jsonl.gz"
    CutSet.from_cuts([make_cut("a", GOOD_TEXT)]).to_file(good)
    assert main(["pseudo", "filter-labels", "--cuts", str(good), *args, "--set", "max_werr=5"]) == 1
    assert not out.exists()
