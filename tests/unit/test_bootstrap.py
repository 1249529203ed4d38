"""Paired bootstrap of WER differences: equal to a direct per-sample computation, and its edge cases."""

import numpy as np
import pytest
import yaml

from speechkd.cli import main
from speechkd.decoding.bootstrap import SystemErrors, _wer_diff, load_system, paired_bootstrap
from speechkd.decoding.scoring import compute_wer
from speechkd.errors import SpeechkdError

REFS = {
    "u1": "the cat sat on the mat",
    "u2": "a dog barked",
    "u3": "she said nothing at all to him",
    "u4": "it was late",
    "u5": "they walked home together in the rain",
}


def _decode(tmp_path, name, hyps, refs=REFS, plateau=None, tag="greedy", test_set="dev"):
    """Writes <name>/decode/{ref,hyp}-<set>-<tag>.trn (and plateau.yaml); returns the decode dir."""
    d = tmp_path / name / "decode"
    d.mkdir(parents=True)
    (d / f"ref-{test_set}-{tag}.trn").write_text("".join(f"{t} ({u})\n" for u, t in refs.items()))
    (d / f"hyp-{test_set}-{tag}.trn").write_text("".join(f"{hyps.get(u, t)} ({u})\n" for u, t in refs.items()))
    if plateau:
        (tmp_path / name / "plateau.yaml").write_text(yaml.safe_dump({"status": plateau, "step": 9,
                                                                      "emission_ratio": 0.01}))
    return d


A0 = {"u1": "the cat sat on a mat", "u3": "she said nothing at al to him", "u5": "they walk home"}
A1 = {"u1": "the cat sat on the mat", "u2": "a dog", "u3": "she sad nothing at all to hem"}
B0 = {"u1": "the cat sat on the mat", "u3": "she said nothing at al to him", "u4": "it was lake"}
B1 = {"u2": "a dog barked", "u5": "they walked home together in rain"}


def test_the_statistic_equals_the_scorer_on_resampled_utterance_lists(tmp_path):
    a = load_system("a", [_decode(tmp_path, "a0", A0), _decode(tmp_path, "a1", A1)], "dev", "greedy")
    b = load_system("b", [_decode(tmp_path, "b0", B0), _decode(tmp_path, "b1", B1)], "dev", "greedy")
    ids = a.ids
    # whole-set WER of each system = mean of its seeds' WERs from the ordinary scorer
    for system, hyps in ((a, (A0, A1)), (b, (B0, B1))):
        seed_wers = [compute_wer([REFS[u] for u in ids], [h.get(u, REFS[u]) for u in ids]).wer for h in hyps]
        assert system.seed_wers == pytest.approx(seed_wers)
    res = paired_bootstrap(a, b, samples=300, seed=7)
    assert res.wer_a == pytest.approx(np.mean(a.seed_wers)) and res.diff == pytest.approx(res.wer_b - res.wer_a)
    # the vectorised statistic scipy resamples, against compute_wer on the same resampled utterance lists
    idx = np.random.default_rng(7).integers(0, len(ids), size=(50, len(ids)))  # (samples, U)
    vectorised = _wer_diff(a.mean_errors[idx], b.mean_errors[idx], a.words[idx])

    def wer(hyps, pick):
        return np.mean([compute_wer([REFS[u] for u in pick], [h.get(u, REFS[u]) for u in pick]).wer for h in hyps])
    direct = [wer((B0, B1), [ids[i] for i in row]) - wer((A0, A1), [ids[i] for i in row]) for row in idx]
    assert vectorised == pytest.approx(direct)


def _system(name, errors, words):
    u = len(words)
    return SystemErrors(name, "dev", [f"u{i}" for i in range(u)], [["w"] * int(n) for n in words],
                        np.asarray(words, dtype=float), np.asarray(errors, dtype=float), [name])


def test_interval_and_probability_match_a_direct_paired_bootstrap_not_an_unpaired_one():
    g = np.random.default_rng(0)
    words = g.integers(5, 25, size=80).astype(float)
    base = g.binomial(words.astype(int), 0.4).astype(float)
    a = _system("a", [base, base + g.integers(-1, 2, size=80).clip(-base)], words)
    b = _system("b", [np.clip(base + g.integers(-2, 2, size=80), 0, None)], words)
    res = paired_bootstrap(a, b, samples=4000, seed=1)
    # a direct paired bootstrap with another generator: the same distribution up to Monte-Carlo noise
    idx = np.random.default_rng(99).integers(0, 80, size=(4000, 80))
    paired = 100 * (b.mean_errors[idx].sum(1) - a.mean_errors[idx].sum(1)) / words[idx].sum(1)
    lo, hi = np.quantile(paired, [0.025, 0.975])
    assert res.low == pytest.approx(lo, abs=0.25) and res.high == pytest.approx(hi, abs=0.25)
    assert res.prob_b_better == pytest.approx((paired < 0).mean(), abs=0.03)
    # resampling the two systems independently would give a much wider interval: the test tells them apart
    idx2 = np.random.default_rng(98).integers(0, 80, size=(4000, 80))
    unpaired = 100 * b.mean_errors[idx2].sum(1) / words[idx2].sum(1) - 100 * a.mean_errors[idx].sum(1) / words[idx].sum(1)
    ulo, uhi = np.quantile(unpaired, [0.025, 0.975])
    assert (uhi - ulo) > (hi - lo) + 1.0
    one = 100 * a.errors[0][idx].sum(1) / words[idx].sum(1)
    assert res.sampling_std_a == pytest.approx(one.std(ddof=1), rel=0.1)


def test_a_system_better_on_every_utterance_has_probability_one_and_an_interval_below_zero(tmp_path):
    worse = {u: "x " + t for u, t in REFS.items()}  # one insertion per utterance
    a = load_system("a", [_decode(tmp_path, "a0", worse)], "dev", "greedy")
    b = load_system("b", [_decode(tmp_path, "b0", {})], "dev", "greedy")
    res = paired_bootstrap(a, b, samples=500)
    assert res.wer_b == 0.0 and res.prob_b_better == 1.0 and res.high < 0
    same = paired_bootstrap(a, a, samples=500)
    assert same.diff == 0.0 and same.prob_b_better == 0.0 and same.low == same.high == 0.0


def test_the_same_seed_gives_the_same_interval():
    words = np.array([4.0, 2.0, 5.0, 3.0, 6.0, 1.0])
    a = _system("a", [[1, 0, 3, 2, 1, 0]], words)
    b = _system("b", [[0, 0, 2, 2, 3, 1]], words)
    r1, r2, r3 = (paired_bootstrap(a, b, samples=1200, seed=s) for s in (3, 3, 4))  # 1200 crosses SAMPLE_CHUNK
    assert (r1.low, r1.high, r1.prob_b_better) == (r2.low, r2.high, r2.prob_b_better)
    assert (r1.low, r1.high, r1.prob_b_better) != (r3.low, r3.high, r3.prob_b_better)


def test_runs_scored_on_other_references_are_refused_naming_both(tmp_path):
    other = dict(REFS, u4="it was early")
    d0, d1 = _decode(tmp_path, "s0", {}), _decode(tmp_path, "s1", {}, refs=other)
    with pytest.raises(SpeechkdError, match="s1/decode and .*s0/decode were scored against different references"):
        load_system("sys", [d0, d1], "dev", "greedy")
    with pytest.raises(SpeechkdError, match="given more than once"):
        load_system("sys", [d0, d0], "dev", "greedy")
    a = load_system("a", [d0], "dev", "greedy")
    b = load_system("b", [d1], "dev", "greedy")
    with pytest.raises(SpeechkdError, match="different references"):
        paired_bootstrap(a, b)


def test_a_plateau_run_is_left_out_and_named(tmp_path):
    d0 = _decode(tmp_path, "s0", A0)
    stuck = _decode(tmp_path, "s1", {u: "" for u in REFS}, plateau="stuck")
    sys_ = load_system("sys", [d0, stuck], "dev", "greedy")
    assert sys_.errors.shape == (1, 5) and "s1/decode: on the blank plateau" in sys_.left_out[0]
    with pytest.raises(SpeechkdError, match="no run left"):
        load_system("sys", [stuck], "dev", "greedy")


def test_cli_names_a_system_whose_every_run_is_on_the_plateau_instead_of_failing(tmp_path, capsys):
    ok = _decode(tmp_path, "s0", A0)
    stuck = _decode(tmp_path, "s1", {u: "" for u in REFS}, plateau="stuck")
    rc = main(["score", "bootstrap", "--a", str(ok), "--b", str(stuck), "--sets", "dev", "--tag", "greedy",
               "--samples", "100"])
    out = capsys.readouterr().out
    assert rc == 0 and "nothing compared" in out and "b dev: no run left to compare" in out
    assert "s1/decode: on the blank plateau" in out and "| dev |" not in out


def test_cli_prints_and_writes_the_table(tmp_path, capsys):
    a = [_decode(tmp_path, "a0", A0), _decode(tmp_path, "a1", A1)]
    b = [_decode(tmp_path, "b0", B0), _decode(tmp_path, "b1", B1)]
    out = tmp_path / "boot.md"
    rc = main(["score", "bootstrap", "--a", *map(str, a), "--b", *map(str, b), "--names", "base", "kd",
               "--sets", "dev", "--tag", "greedy", "--samples", "200", "--output", str(out)])
    assert rc == 0
    printed = capsys.readouterr().out
    assert printed == out.read_text()
    row = [ln for ln in printed.splitlines() if ln.startswith("| dev")][0]
    sa = load_system("a", a, "dev", "greedy")
    sb = load_system("b", b, "dev", "greedy")
    res = paired_bootstrap(sa, sb, samples=200)
    assert row.startswith(f"| dev | {res.wer_a:.2f} (2) | {res.wer_b:.2f} (2) | {res.diff:+.2f} | [{res.low:+.2f}, ")
    rc = main(["score", "bootstrap", "--a", str(a[0]), "--b", str(b[0]), "--sets", "dev", "--tag", "greedy",
               "--samples", "10"])
    assert rc == 1 and "--samples 10: use at least 100" in capsys.readouterr().err
