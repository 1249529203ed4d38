"""WER over seeds: mean ± sample std against hand-computed values; plateau and deletion-only runs left out."""

import math

import pytest
import yaml

from speechkd.cli import main
from speechkd.decoding.scoring import SUMMARY_COLUMNS
from speechkd.decoding.seed_table import exceeds_spread, load_run, seed_table, Cell
from speechkd.errors import SpeechkdError


def _summary(exp, rows, plateau=None):
    """rows: (set, tag, WER, ins, del, sub, words); writes <exp>/decode/wer-summary.tsv (+ plateau.yaml)."""
    (exp / "decode").mkdir(parents=True)
    lines = ["\t".join(SUMMARY_COLUMNS)]
    for s, tag, wer, ins, dels, sub, words in rows:
        lines.append("\t".join(map(str, (s, tag, f"{wer:.2f}", "0.00", ins, dels, sub, words, 10))))
    (exp / "decode" / "wer-summary.tsv").write_text("\n".join(lines) + "\n")
    if plateau:
        (exp / "plateau.yaml").write_text(yaml.safe_dump({"status": plateau, "step": 1200, "emission_ratio": 0.02}))
    return exp / "decode" / "wer-summary.tsv"


def _seed(tmp_path, name, dev, clean, plateau=None):
    # dev: 100 words with `dev` errors as substitutions (an ordinary decoding)
    return _summary(tmp_path / name, [("dev", "greedy", dev, 0, 0, int(dev), 100),
                                      ("test-clean", "greedy", clean, 0, 0, int(clean), 100)], plateau)


def test_mean_and_sample_std_over_seeds_match_hand_computed_values(tmp_path):
    paths = [_seed(tmp_path, "s0", 20, 10), _seed(tmp_path, "s1", 22, 14), _seed(tmp_path, "s2", 27, 12)]
    table = seed_table([("transducer", [load_run(p) for p in paths])], ["dev", "test-clean"])
    row = [ln for ln in table.splitlines() if ln.startswith("| transducer")][0]
    # dev: mean 23, std sqrt(((-3)^2 + (-1)^2 + 4^2) / 2) = sqrt(13) = 3.606; test-clean: mean 12, std 2
    assert row == "| transducer | greedy | 3 of 3 | 23.00 ± 3.61 | 12.00 ± 2.00 |"


def test_a_run_on_the_blank_plateau_is_left_out_and_named(tmp_path):
    paths = [_seed(tmp_path, "s0", 20, 10), _seed(tmp_path, "s1", 22, 14),
             _seed(tmp_path, "s2", 100, 100, plateau="stuck")]
    table = seed_table([("ctc", [load_run(p) for p in paths])], ["dev", "test-clean"])
    assert "| ctc | greedy | 2 of 3 | 21.00 ± 1.41 | 12.00 ± 2.83 |" in table
    assert "s2: on the blank plateau (training CTC emission ratio 0.02" in table and "100.00" not in table
    # stuck by its transducer at validation (training/plateau.py): left out, and the reason says which
    (tmp_path / "s2" / "plateau.yaml").write_text(yaml.safe_dump(
        {"status": "stuck", "step": 1300, "emission_ratio": 0.04, "source": "valid"}))
    assert "s2: on the blank plateau (validation transducer emission ratio 0.04 at step 1300" in seed_table(
        [("ctc", [load_run(p) for p in paths])], ["dev"])
    # an escaped run counts
    (tmp_path / "s2" / "plateau.yaml").write_text(yaml.safe_dump({"status": "escaped"}))
    assert "3 of 3" in seed_table([("ctc", [load_run(p) for p in paths])], ["dev"])


def test_a_decoding_of_mostly_deletions_is_left_out_even_without_plateau_file(tmp_path):
    ok = _seed(tmp_path, "s0", 20, 10)
    # 100 reference words, 95 deleted, 1 inserted: 6 hypothesis words per 100 reference words
    bad = _summary(tmp_path / "s1", [("dev", "greedy", 96, 1, 95, 0, 100), ("test-clean", "greedy", 30, 0, 0, 30, 100)])
    table = seed_table([("pl", [load_run(ok), load_run(bad)])], ["dev", "test-clean"])
    assert "| pl | greedy | 2 of 2 | 20.00 | 20.00 ± 14.14 |" in table
    assert "emits 0.06 words per reference word" in table


def test_baseline_marks_only_differences_beyond_the_spread(tmp_path):
    base = [load_run(_seed(tmp_path, f"b{i}", w, c)) for i, (w, c) in enumerate([(30, 20), (32, 21)])]
    kd = [load_run(_seed(tmp_path, f"k{i}", w, c)) for i, (w, c) in enumerate([(25, 20), (26, 22)])]
    table = seed_table([("base", base), ("kd", kd)], ["dev", "test-clean"], baseline="base")
    kd_row = [ln for ln in table.splitlines() if ln.startswith("| kd")][0]
    # dev: |25.5 - 31| = 5.5 > max(1.41, 0.71); test-clean: |21 - 20.5| = 0.5 < max(0.71, 1.41)
    assert kd_row == "| kd | greedy | 2 of 2 | 25.50 ± 0.71† | 21.00 ± 1.41 |"
    assert exceeds_spread(Cell([25.0, 26.0]), Cell([30.0, 32.0]))
    assert not exceeds_spread(Cell([25.0]), Cell([30.0, 32.0]))  # one seed: no claim
    with pytest.raises(SpeechkdError, match="baseline system 'nope'"):
        seed_table([("base", base)], ["dev"], baseline="nope")


def test_score_table_cli_aggregates_repeated_titles_and_writes_per_seed_values(tmp_path):
    paths = [_seed(tmp_path, "s0", 20, 10), _seed(tmp_path, "s1", 22, 14), _seed(tmp_path, "s2", 50, 50, "stuck")]
    out, tsv = tmp_path / "t.md", tmp_path / "t.tsv"
    argv = ["score", "table", "--summary", *map(str, paths), "--title", "ctc", "ctc", "ctc", "--sets", "dev",
            "--output", str(out), "--output-tsv", str(tsv)]
    assert main(argv) == 0
    assert "| ctc | greedy | 2 of 3 | 21.00 ± 1.41 |" in out.read_text()
    line = tsv.read_text().splitlines()[1].split("\t")
    assert line[:4] == ["ctc", "greedy", "dev", "2"] and math.isclose(float(line[4]), 21.0)
    assert math.isclose(float(line[5]), math.sqrt(2), rel_tol=1e-3)
    assert line[6] == f"{tmp_path / 's0'}=20.00 {tmp_path / 's1'}=22.00 {tmp_path / 's2'}=left-out"


def test_single_run_table_refuses_to_show_a_plateau_wer(tmp_path):
    path = _seed(tmp_path, "s0", 97, 98, plateau="stuck")
    out = tmp_path / "t.md"
    assert main(["score", "table", "--summary", str(path), "--sets", "dev", "--output", str(out)]) == 0
    text = out.read_text()
    assert "| greedy | plateau |" in text and "97.00" not in text and "blank plateau" in text
