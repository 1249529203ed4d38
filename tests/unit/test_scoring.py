import math
import random
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from speechkd.cli import main
from speechkd.decoding.scoring import (
    SUMMARY_FILE,
    compute_wer,
    pair_trn,
    read_recogs,
    read_summary,
    read_trn,
    sclite_safe_id,
    write_results,
)
from speechkd.errors import SpeechkdError

# Three utterances with errors counted by hand:
#   u1: THE CAT SAT ON THE MAT -> THE CAT SAT ON MAT   1 del (THE)            1/6, 5 correct
#   u2: A B C D -> A X C D E                          1 sub (B->X), 1 ins (E) 2/4, 3 correct
#   u3: A B C D E -> B C X E                          1 del (A), 1 sub (D->X) 2/5, 3 correct
# Set: 5 errors (2 sub, 2 del, 1 ins) / 15 ref words = 33.33%, 11 correct;
# the mean of per-utterance WERs would be (16.67 + 50 + 40) / 3 = 35.56%.
SET = [
    ("u1", "THE CAT SAT ON THE MAT", "THE CAT SAT ON MAT"),
    ("u2", "A B C D", "A X C D E"),
    ("u3", "A B C D E", "B C X E"),
]


def _stats_tuple(s):
    return (s.subs, s.dels, s.ins, s.ref_words, s.hits)


@pytest.mark.parametrize(
    "ref,hyp,expected,wer",
    [
        ("THE CAT SAT ON THE MAT", "THE CAT SAT ON MAT", (0, 1, 0, 6, 5), 100 / 6),
        ("A B C D", "A X C D E", (1, 0, 1, 4, 3), 50.0),
        ("A B C D E", "B C X E", (1, 1, 0, 5, 3), 40.0),
        ("A B C", "A B C", (0, 0, 0, 3, 3), 0.0),
        ("A B C", "", (0, 3, 0, 3, 0), 100.0),  # empty hypothesis: all deletions
        ("A B", "C D E F", (2, 0, 2, 2, 0), 200.0),  # 2 sub + 2 ins over 2 words
    ],
)
def test_single_utterance_counts(ref, hyp, expected, wer):
    s = compute_wer([ref], [hyp])
    assert _stats_tuple(s) == expected
    assert s.wer == pytest.approx(wer)
    assert s.errors == sum(expected[:3])


def test_set_wer_is_total_errors_over_total_words():
    s = compute_wer([r for _, r, _ in SET], [h for _, _, h in SET])
    assert _stats_tuple(s) == (2, 2, 1, 15, 11)
    assert s.wer == pytest.approx(100 * 5 / 15)
    per_utt_mean = sum(compute_wer([r], [h]).wer for _, r, h in SET) / len(SET)
    assert per_utt_mean == pytest.approx((100 / 6 + 50 + 40) / 3)
    assert s.wer != pytest.approx(per_utt_mean)


def test_word_lists_are_accepted():
    assert _stats_tuple(compute_wer([["A", "B"]], [["A", "C"]])) == (1, 0, 0, 2, 1)


def test_cer_counts_characters_with_spaces():
    # "AB CD" -> "AB CE": 1 substitution over 5 characters
    assert compute_wer(["AB CD"], ["AB CE"]).cer == pytest.approx(20.0)
    # "A B" -> "": 3 deletions (A, space, B) over 3 characters
    assert compute_wer(["A B"], [""]).cer == pytest.approx(100.0)


def test_empty_reference_counts_insertions_over_the_set():
    # u1 has no reference words: its 2 insertions count over the set's 2 reference words.
    s = compute_wer(["", "A B"], ["X Y", "A B"])
    assert _stats_tuple(s) == (0, 0, 2, 2, 2)
    assert s.wer == pytest.approx(100.0)


def test_set_without_reference_words():
    assert math.isinf(compute_wer([""], ["X"]).wer)
    assert compute_wer(["", ""], ["", ""]).wer == 0.0


def test_bad_input_is_an_error(tmp_path):
    with pytest.raises(SpeechkdError, match="2 references but 1 hypotheses"):
        compute_wer(["A", "B"], ["A"])
    with pytest.raises(SpeechkdError, match="no utterances"):
        compute_wer([], [])
    with pytest.raises(SpeechkdError, match="duplicate cut ids"):
        write_results([("u1", "A", "A"), ("u1", "B", "B")], tmp_path, "test-clean")
    with pytest.raises(SpeechkdError, match="no results"):
        write_results([], tmp_path, "test-clean")
    with pytest.raises(SpeechkdError, match="not a safe file-name"):
        write_results(SET, tmp_path, "test clean")
    with pytest.raises(SpeechkdError, match=r"collide.*ref-t\.trn"):
        write_results([("a b", "A", "A"), ("a_b", "A", "A")], tmp_path, "t")


def _section(text: str, header: str) -> list[str]:
    block = text.split("\n" + header, 1)[1].split("\n\n", 1)[0]
    return [ln for ln in block.splitlines()[1:] if ln]


def test_files_parse_back(tmp_path):
    results = [("u3", *SET[2][1:]), ("u1", *SET[0][1:]), ("u2", *SET[1][1:]), ("u4", "", ""), ("lib/x (1)", "DON'T GO", "")]
    s = write_results(results, tmp_path, "test-clean", tag="greedy")
    assert _stats_tuple(s) == (2, 4, 1, 17, 11) and s.num_utts == 5

    recogs = read_recogs(tmp_path / "recogs-test-clean-greedy.txt")
    assert recogs == sorted((c, r.split(), h.split()) for c, r, h in results)

    errs = (tmp_path / "errs-test-clean-greedy.txt").read_text()
    lines = errs.splitlines()
    assert lines[0] == f"%WER = {100 * 7 / 17:.2f}"
    assert lines[1] == "Errors: 1 insertions, 4 deletions, 2 substitutions, over 17 reference words (11 correct)"
    per_utt = _section(errs, "PER-UTT DETAILS:")
    assert "u2:\tA (B->X) C D (*->E)" in per_utt
    assert "u3:\t(A->*) B C (D->X) E" in per_utt
    assert "lib/x (1):\t(DON'T->*) (GO->*)" in per_utt
    assert _section(errs, "SUBSTITUTIONS:") == ["1   B -> X", "1   D -> X"]
    assert _section(errs, "DELETIONS:") == ["1   A", "1   DON'T", "1   GO", "1   THE"]
    assert _section(errs, "INSERTIONS:") == ["1   E"]
    word_stats = _section(errs, "PER-WORD STATS:")
    assert word_stats[0] == "X   0 2 0 2"  # the most errors first: hyp side of two substitutions
    assert "THE   1 1 2 1" in word_stats

    ref_trn = read_trn(tmp_path / "ref-test-clean-greedy.trn")
    assert list(ref_trn) == ["lib_x__1_", "u1", "u2", "u3", "u4"]
    assert ref_trn["lib_x__1_"] == ["DON'T", "GO"] and ref_trn["u4"] == []
    paired = pair_trn(tmp_path / "ref-test-clean-greedy.trn", tmp_path / "hyp-test-clean-greedy.trn")
    assert compute_wer([r for _, r, _ in paired], [h for _, _, h in paired]) == s


def test_summary_row_is_updated_in_place(tmp_path):
    write_results(SET, tmp_path, "test-clean", tag="greedy")
    write_results(SET[:1], tmp_path, "test-other", tag="greedy")
    write_results(SET, tmp_path, "test-clean", tag="beam")
    # re-score test-clean/greedy with a perfect hypothesis: its row changes, the order does not
    write_results([(c, r, r) for c, r, _ in SET], tmp_path, "test-clean", tag="greedy")
    rows = read_summary(tmp_path / SUMMARY_FILE)
    assert [(r["test_set"], r["tag"]) for r in rows] == [
        ("test-clean", "greedy"), ("test-other", "greedy"), ("test-clean", "beam")
    ]
    assert rows[0] == {"test_set": "test-clean", "tag": "greedy", "WER": "0.00", "CER": "0.00",
                       "ins": "0", "del": "0", "sub": "0", "words": "15", "utts": "3"}
    assert rows[2]["WER"] == "33.33" and rows[2]["sub"] == "2" and rows[2]["del"] == "2"
    assert rows[1]["WER"] == "16.67"
    (tmp_path / SUMMARY_FILE).write_text("something else\n")
    with pytest.raises(SpeechkdError, match="not a WER summary"):
        write_results(SET, tmp_path, "test-clean")


def test_normalize_option(tmp_path):
    res = [("u1", "MISTER SMITH PAID FIVE DOLLARS", "Mr. Smith paid $5.")]
    assert write_results(res, tmp_path, "t", normalize=True).wer == 0.0
    assert write_results(res, tmp_path, "t").wer == pytest.approx(100.0)  # 4 sub + 1 del over 5


def test_cli_recogs_and_trn(tmp_path, capsys):
    src = tmp_path / "in"
    write_results(SET, src, "test-clean", tag="greedy")
    out = tmp_path / "out"
    rc = main(["score", "wer", "--recogs", str(src / "recogs-test-clean-greedy.txt"), "--tag", "greedy",
               "--out-dir", str(out)])
    assert rc == 0
    assert read_summary(out / SUMMARY_FILE)[0]["test_set"] == "test-clean"
    assert read_summary(out / SUMMARY_FILE)[0]["WER"] == "33.33"
    assert "WER 33.33" in capsys.readouterr().out

    rc = main(["score", "wer", "--ref", str(src / "ref-test-clean-greedy.trn"), "--hyp",
               str(src / "hyp-test-clean-greedy.trn"), "--test-set", "dev", "--out-dir", str(out)])
    assert rc == 0
    assert [r["test_set"] for r in read_summary(out / SUMMARY_FILE)] == ["test-clean", "dev"]

    # a hyp trn missing an utterance: clear error, exit status 1
    (tmp_path / "h.trn").write_text("A B (u1)\n")
    rc = main(["score", "wer", "--ref", str(src / "ref-test-clean-greedy.trn"), "--hyp", str(tmp_path / "h.trn"),
               "--test-set", "dev", "--out-dir", str(out)])
    assert rc == 1


def test_recogs_without_hyp_is_an_error(tmp_path):
    p = tmp_path / "recogs-x.txt"
    p.write_text("u1:\tref=['A']\nu1:\thyp=['A']\nu2:\tref=['B']\n")
    with pytest.raises(SpeechkdError, match="without both"):
        read_recogs(p)
    p.write_text("u1 ref A\n")
    with pytest.raises(SpeechkdError, match=r"recogs-x.txt:1"):
        read_recogs(p)


def _sclite() -> str | None:
    found = shutil.which("sclite")
    debian = Path("/usr/lib/sctk/bin/sclite")
    return found or (str(debian) if debian.exists() else None)


@pytest.mark.skipif(_sclite() is None, reason="sclite (Debian sctk) not installed")
def test_totals_match_sclite(tmp_path):
    rng = random.Random(36)  # a seed whose sub/del/ins split differs from sclite's
    vocab = "THE A OF AND TO IN HE WAS THAT IT HIS HER YOU AS HAD WITH FOR SHE NOT AT".split()
    results = []
    for i in range(40):
        ref = [rng.choice(vocab) for _ in range(rng.randint(0, 12))]
        hyp = list(ref)
        for _ in range(rng.randint(0, 4)):
            op = rng.choice("sdi")
            if op == "i" or not hyp:
                hyp.insert(rng.randint(0, len(hyp)), rng.choice(vocab))
            elif op == "d":
                hyp.pop(rng.randrange(len(hyp)))
            else:
                hyp[rng.randrange(len(hyp))] = rng.choice(vocab)
        results.append((f"spk{i % 3}-utt{i}", " ".join(ref), " ".join(hyp)))
    s = write_results(results, tmp_path, "rand")
    out = subprocess.run(
        [_sclite(), "-r", str(tmp_path / "ref-rand.trn"), "trn", "-h", str(tmp_path / "hyp-rand.trn"), "trn",
         "-i", "rm", "-o", "dtl", "stdout"],
        capture_output=True, text=True, check=True,
    ).stdout

    def count(label: str) -> int:
        return int(re.search(re.escape(label) + r"\s*=.*\(\s*(\d+)\)", out).group(1))

    assert count("Ref. words") == s.ref_words
    assert count("Percent Total Error") == s.errors
    # sclite weighs sub 4 / ins 3 / del 3 and breaks ties its own way, so the split between
    # sub, del and ins of equally short alignments can differ; ins - del = hyp words - ref words cannot.
    assert count("Percent Insertions") - count("Percent Deletions") == s.ins - s.dels
    assert count("Hyp. words") == s.hyp_words


def test_summary_markdown_pivots_tags_by_set(tmp_path):
    from speechkd.cli import main
    from speechkd.decoding.scoring import compute_wer, read_summary, summary_markdown, update_summary

    summary = tmp_path / "wer-summary.tsv"
    # test-clean greedy: 1 sub in 4 words = 25.00; test-other greedy: 1 del in 2 words = 50.00
    update_summary(summary, "test-clean", "greedy", compute_wer(["A B C D"], ["A B X D"]))
    update_summary(summary, "test-other", "greedy", compute_wer(["A B"], ["A"]))
    update_summary(summary, "test-clean", "beam4", compute_wer(["A B"], ["A B"]))
    update_summary(summary, "train", "labels-all", compute_wer(["A B"], ["A"]))  # not a column: no row
    table = summary_markdown(read_summary(summary), ["test-clean", "test-other"])
    lines = table.strip().splitlines()
    assert len(lines) == 4 and "labels-all" not in table
    assert lines[0] == "| decoding | test-clean | test-other |"
    assert lines[2] == "| greedy | 25.00 | 50.00 |"
    assert lines[3] == "| beam4 | 0.00 | - |"
    out = tmp_path / "t.md"
    assert main(["score", "table", "--summary", str(summary), "--title", "ctc", "--output", str(out)]) == 0
    assert "| ctc greedy | 25.00 | 50.00 |" in out.read_text()


def test_chunked_alignment_writes_the_same_files_as_one_chunk(tmp_path, monkeypatch):
    """write_results aligns ALIGN_CHUNK utterances at a time (bounded memory at LibriSpeech size): the
    counts, the per-utterance lines and the error tables must not depend on the chunk size."""
    import speechkd.decoding.scoring as scoring

    rows = [(f"u{i:03d}", "A B C D" if i % 3 else "THE CAT SAT", "A X C" if i % 2 else "THE CAT SAT ON")
            for i in range(7)]
    monkeypatch.setattr(scoring, "ALIGN_CHUNK", 10_000)
    whole = scoring.write_results(rows, tmp_path / "whole", "dev", tag="t")
    monkeypatch.setattr(scoring, "ALIGN_CHUNK", 2)
    chunked = scoring.write_results(rows, tmp_path / "chunked", "dev", tag="t")
    assert chunked == whole and whole.num_utts == 7 and whole.ins > 0 and whole.subs > 0
    for name in ("errs-dev-t.txt", "recogs-dev-t.txt", "wer-summary.tsv"):
        assert (tmp_path / "chunked" / name).read_text() == (tmp_path / "whole" / name).read_text(), name


def test_a_failure_mid_set_leaves_the_old_files_and_no_scratch(tmp_path, monkeypatch):
    """Output lines stream to temporary files chunk by chunk; an error in a later chunk must leave the
    previous result files as they were and no temporary file behind."""
    import speechkd.decoding.scoring as scoring

    rows = [(f"u{i}", "A B C", "A B" if i % 2 else "A B C") for i in range(5)]
    first = scoring.write_results(rows, tmp_path, "dev", tag="t")
    before = {p.name: p.read_text() for p in tmp_path.iterdir()}
    calls = {"n": 0}
    real_align = scoring.align_words

    def align_then_fail(refs, hyps):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("disk full")
        return real_align(refs, hyps)

    monkeypatch.setattr(scoring, "ALIGN_CHUNK", 2)
    monkeypatch.setattr(scoring, "align_words", align_then_fail)
    with pytest.raises(RuntimeError, match="disk full"):
        scoring.write_results([(i, r, "Z") for i, r, _ in rows], tmp_path, "dev", tag="t")
    assert calls["n"] == 2 and first.wer > 0
    assert {p.name: p.read_text() for p in tmp_path.iterdir()} == before


def test_unsorted_scoring_consumes_an_iterator_a_chunk_at_a_time(tmp_path, monkeypatch):
    """sort=False: rows are pulled ALIGN_CHUNK at a time (a lazily read manifest is never held whole),
    written in their own order, with the same totals as the sorted scoring; a duplicate id in a later
    chunk is still refused, and leaves no result file."""
    import speechkd.decoding.scoring as scoring

    rows = [(f"u{i:02d}", "A B C D", "A X C" if i % 2 else "A B C D E") for i in (5, 3, 9, 1, 7, 0, 2)]
    pulled, pulled_at_align = [0], []

    def lazy(items):
        for row in items:
            pulled[0] += 1
            yield row

    real_align = scoring.align_words
    monkeypatch.setattr(scoring, "align_words", lambda r, h: (pulled_at_align.append(pulled[0]), real_align(r, h))[1])
    monkeypatch.setattr(scoring, "ALIGN_CHUNK", 3)
    streamed = scoring.write_results(lazy(rows), tmp_path / "lazy", "dev", sort=False)
    assert pulled_at_align == [3, 6, 7]  # never more than one chunk ahead of the scoring
    whole = scoring.write_results(rows, tmp_path / "sorted", "dev")
    assert streamed == whole and whole.num_utts == 7
    assert [i for i, _, _ in read_recogs(tmp_path / "lazy" / "recogs-dev.txt")] == [r[0] for r in rows]
    assert [i for i, _, _ in read_recogs(tmp_path / "sorted" / "recogs-dev.txt")] == sorted(r[0] for r in rows)
    with pytest.raises(SpeechkdError, match=r"duplicate cut ids, e.g. \['u05'\]"):
        scoring.write_results(lazy(rows + [rows[0]]), tmp_path / "dup", "dev", sort=False)
    with pytest.raises(SpeechkdError, match=r"collide.*\['u_1'\].*ref-dev\.trn"):
        scoring.write_results(lazy(rows[:4] + [("u 1", "A", "A"), ("u+1", "A", "A")]), tmp_path / "dup", "dev",
                              sort=False)
    assert [p.name for p in (tmp_path / "dup").iterdir()] == []
    with pytest.raises(SpeechkdError, match="no results"):
        scoring.write_results(iter([]), tmp_path / "none", "dev", sort=False)
