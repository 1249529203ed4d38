"""Paired bootstrap over test utterances for the WER difference of two systems, each over seeds.

The seed table (:mod:`speechkd.decoding.seed_table`) asks whether a difference exceeds the spread over
seeds. On a small test set a good part of that spread is the test set itself: which utterances
happen to be in it. This module measures that part, as Kaldi's ``compute-wer-bootci`` does and
after Bisani and Ney ("Bootstrap estimates for confidence intervals in ASR performance evaluation",
ICASSP 2004):

* Every run (one seed of one system) is read from its decode directory's ``ref-<sfx>.trn`` and
  ``hyp-<sfx>.trn`` (``<sfx>`` = ``<set>-<tag>``) and aligned per utterance, giving errors
  ``E[r, u]`` (sub + del + ins) and reference words ``N[u]``.
* A system's per-utterance errors are the mean over its seeds, ``e[u] = mean_r E[r, u]``, so its
  WER on any set of utterances is the mean of its seeds' WERs on that set.
* One bootstrap sample draws ``U`` utterances with replacement (the same draw for both systems:
  *paired*) and computes ``WER_b - WER_a = 100 * sum(e_b - e_a) / sum(N)`` over the draw; the
  resampling and the percentile interval are ``scipy.stats.bootstrap``'s (``paired=True``).

Reported per test set: both systems' WER (the mean over seeds), the observed difference, its
percentile confidence interval, the probability that ``b`` is better (the fraction of samples with
a negative difference; Kaldi's "probability of improvement"), and the bootstrap standard deviation
of a single run's WER (``sampling std``: how much one seed's WER moves with the choice of
utterances alone). Runs that the seed table leaves out (blank plateau, mostly deletions) are left
out here too and named.

What it does not do: it treats the seeds as fixed, so the interval is about the test utterances,
not about training noise; read it beside the seed table, not instead of it.
"""

from __future__ import annotations

import inspect
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np

from speechkd.decoding.scoring import SUMMARY_FILE, align_decoding
from speechkd.decoding.seed_table import Cell, load_run, plateau_reason
from speechkd.errors import SpeechkdError

DEFAULT_SAMPLES = 10_000
SAMPLE_CHUNK = 500  # bootstrap samples scipy draws at a time (bounds its index array to SAMPLE_CHUNK x U)


class NoRunLeft(SpeechkdError):
    """Every run of a system was left out (blank plateau, mostly deletions): nothing to compare."""


@dataclass
class SystemErrors:
    """Per-utterance errors of one system's seeds on one test set.

    ids: utterance ids, (U,); words: reference words per utterance, (U,);
    errors: errors per run and utterance, (R, U); runs: the decode dirs read, (R,);
    left_out: "decode dir: reason" for each run not counted.
    """

    name: str
    test_set: str
    ids: list[str]
    refs: list[list[str]]
    words: np.ndarray
    errors: np.ndarray
    runs: list[str]
    left_out: list[str] = field(default_factory=list)

    @property
    def mean_errors(self) -> np.ndarray:
        """(U,) errors per utterance averaged over the seeds."""
        return self.errors.mean(axis=0)

    @property
    def seed_wers(self) -> list[float]:
        """Each run's WER in % on the whole set."""
        total = float(self.words.sum())
        return [100.0 * float(e.sum()) / total for e in self.errors]


def utterance_errors(decode_dir: Union[str, Path], test_set: str, tag: str = "") -> tuple[list, list, np.ndarray]:
    """(ids, ref words, errors per utterance (U,)) of one decoding, from its ref/hyp trn files."""
    pairs, aligned = align_decoding(decode_dir, test_set, tag)
    errors = np.array([sum(r != h for r, h in utt) for utt in aligned], dtype=np.float64)
    return [u for u, _, _ in pairs], [r for _, r, _ in pairs], errors


def _flag(decode_dir: Path, test_set: str, tag: str) -> Optional[str]:
    """Why the seed table would leave this run out (plateau, mostly deletions), or None."""
    summary = decode_dir / SUMMARY_FILE
    if summary.is_file():
        return load_run(summary).flag(tag, test_set)
    return plateau_reason(decode_dir.parent)


def load_system(name: str, decode_dirs: Sequence[Union[str, Path]], test_set: str, tag: str = "") -> SystemErrors:
    """Read every run of one system; the runs must share utterance ids and reference words."""
    ids: Optional[list[str]] = None
    refs: list[list[str]] = []
    first = ""
    rows, runs, left_out = [], [], []
    dirs = [Path(d) for d in decode_dirs]
    repeated = sorted({str(d) for d in dirs if sum(x.resolve() == d.resolve() for x in dirs) > 1})
    if repeated:
        raise SpeechkdError(f"{name}: decode dir(s) given more than once (one per seed): {', '.join(repeated)}")
    for d in dirs:
        reason = _flag(d, test_set, tag)
        if reason:
            left_out.append(f"{d}: {reason}")
            continue
        run_ids, run_refs, errors = utterance_errors(d, test_set, tag)
        if ids is None:
            ids, refs, first = run_ids, run_refs, str(d)
        elif run_ids != ids or run_refs != refs:
            raise SpeechkdError(
                f"{name} {test_set}: {d} and {first} were scored against different references "
                f"({len(run_ids)} vs {len(ids)} utterances, ids equal: {run_ids == ids}): not the same test set"
            )
        rows.append(errors)
        runs.append(str(d))
    if not rows:
        raise NoRunLeft(f"{name} {test_set}: no run left to compare ({'; '.join(left_out) or 'no decode dirs'})")
    words = np.array([len(r) for r in refs], dtype=np.float64)
    if words.sum() == 0:
        raise SpeechkdError(f"{name} {test_set}: the references have no words")
    return SystemErrors(name, test_set, ids, refs, words, np.stack(rows), runs, left_out)


@dataclass(frozen=True)
class BootstrapResult:
    """One test set: system a against system b (WERs in %, differences b - a)."""

    test_set: str
    wer_a: float
    wer_b: float
    seeds_a: int
    seeds_b: int
    diff: float
    low: float
    high: float
    prob_b_better: float
    sampling_std_a: float
    sampling_std_b: float
    samples: int
    level: float


def _wer_diff(errors_a: np.ndarray, errors_b: np.ndarray, words: np.ndarray, axis: int = -1) -> np.ndarray:
    """``100 * (sum(errors_b) - sum(errors_a)) / sum(words)`` along ``axis`` (scipy's vectorised statistic)."""
    return 100.0 * (errors_b.sum(axis=axis) - errors_a.sum(axis=axis)) / words.sum(axis=axis)


def _wer(errors: np.ndarray, words: np.ndarray, axis: int = -1) -> np.ndarray:
    return 100.0 * errors.sum(axis=axis) / words.sum(axis=axis)


def _resample(data: tuple, statistic, samples: int, level: float, seed: int):
    """scipy.stats.bootstrap over paired utterance arrays (U,), percentile interval, seeded."""
    from scipy.stats import bootstrap

    gen = np.random.default_rng(seed)
    seeded = {"rng": gen} if "rng" in inspect.signature(bootstrap).parameters else {"random_state": gen}
    return bootstrap(data, statistic, n_resamples=samples, batch=SAMPLE_CHUNK, vectorized=True, paired=True,
                     confidence_level=level, method="percentile", **seeded)


def paired_bootstrap(
    a: SystemErrors, b: SystemErrors, samples: int = DEFAULT_SAMPLES, level: float = 0.95, seed: int = 0
) -> BootstrapResult:
    """Paired bootstrap of ``WER(b) - WER(a)`` over the utterances both systems were scored on.

    Resampling is scipy.stats.bootstrap's (``paired=True``: one draw of utterances for both systems).
    """
    if a.test_set != b.test_set or a.ids != b.ids or a.refs != b.refs:
        raise SpeechkdError(
            f"{a.name} ({a.runs[0]}) and {b.name} ({b.runs[0]}) were scored against different references: "
            "not the same test set"
        )
    if samples < 100:
        raise SpeechkdError(f"--samples {samples}: use at least 100 bootstrap samples")
    if not 0.5 <= level < 1.0:
        raise SpeechkdError(f"--level {level}: a confidence level in [0.5, 1)")
    with warnings.catch_warnings():  # identical systems: a degenerate (all-zero) distribution is an answer here
        warnings.simplefilter("ignore", RuntimeWarning)
        diff = _resample((a.mean_errors, b.mean_errors, a.words), _wer_diff, samples, level, seed)
        one_a = _resample((a.errors[0], a.words), _wer, samples, level, seed)
        one_b = _resample((b.errors[0], b.words), _wer, samples, level, seed)
    total = float(a.words.sum())
    wer_a = 100.0 * float(a.mean_errors.sum()) / total
    wer_b = 100.0 * float(b.mean_errors.sum()) / total
    return BootstrapResult(
        test_set=a.test_set,
        wer_a=wer_a,
        wer_b=wer_b,
        seeds_a=a.errors.shape[0],
        seeds_b=b.errors.shape[0],
        diff=wer_b - wer_a,
        low=float(diff.confidence_interval.low),
        high=float(diff.confidence_interval.high),
        prob_b_better=float((diff.bootstrap_distribution < 0).mean()),
        sampling_std_a=float(one_a.standard_error),
        sampling_std_b=float(one_b.standard_error),
        samples=samples,
        level=level,
    )


def _seed_std(values: Sequence[float]) -> str:
    """The seed table's sample std of per-seed WERs, or "-" for one seed."""
    return f"{Cell(list(values)).std:.2f}" if len(values) >= 2 else "-"


def bootstrap_markdown(
    name_a: str,
    name_b: str,
    results: Sequence[tuple[BootstrapResult, SystemErrors, SystemErrors]],
    tag: str = "",
    not_compared: Sequence[str] = (),
) -> str:
    """A markdown table of :func:`paired_bootstrap` results, one row per test set, and notes.

    ``not_compared``: "reason" lines of test sets left out because a system had no counted run.
    """
    if not results:
        return f"{name_b} against {name_a}: nothing compared.\n" + "".join(f"- {why}\n" for why in not_compared)
    level = results[0][0].level
    pct = f"{100 * level:g} %"
    lines = [
        f"| test set | {name_a} WER (seeds) | {name_b} WER (seeds) | {name_b} - {name_a} | {pct} interval "
        f"| P({name_b} better) | seed std {name_a} / {name_b} | sampling std of one run {name_a} / {name_b} |",
        "|---|---|---|---|---|---|---|---|",
    ]
    notes = []
    for r, a, b in results:
        lines.append(
            f"| {r.test_set} | {r.wer_a:.2f} ({r.seeds_a}) | {r.wer_b:.2f} ({r.seeds_b}) | {r.diff:+.2f} "
            f"| [{r.low:+.2f}, {r.high:+.2f}] | {r.prob_b_better:.3f} | {_seed_std(a.seed_wers)} / "
            f"{_seed_std(b.seed_wers)} | {r.sampling_std_a:.2f} / {r.sampling_std_b:.2f} |"
        )
        notes += [f"- left out of {s.name} {r.test_set}: {why}" for s in (a, b) for why in s.left_out]
    r0 = results[0][0]
    out = "\n".join(lines) + "\n\n"
    out += (
        f"WER in %{' (' + tag + ')' if tag else ''}: each system's per-utterance errors averaged over its seeds. "
        f"Paired bootstrap over utterances, {r0.samples} samples: the interval is the {pct} percentile "
        f"interval of {name_b} - {name_a}; P({name_b} better) the fraction of samples where it is negative. "
        "Sampling std: the bootstrap standard deviation of the first seed's WER, what the choice of test "
        "utterances alone moves one run by.\n"
    )
    notes += [f"- not compared: {why}" for why in not_compared]
    if notes:
        out += "Not counted:\n" + "\n".join(notes) + "\n"
    return out
