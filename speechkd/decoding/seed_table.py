"""WER over seeds: mean ± standard deviation per system, decoding and test set, with flagged runs left out.

A *system* is one configuration trained with several seeds; each seed is one experiment directory whose
``decode/wer-summary.tsv`` holds its per-seed numbers (they stay there: this module only reads them).
For every (system, decoding tag, test set) the table gives the mean and the sample standard deviation
(``n - 1`` in the denominator; undefined for one seed) of the per-seed WERs.

A run is *flagged* and left out of the mean (and named under the table) when

- its training ended on the blank plateau (``<exp_dir>/plateau.yaml`` says ``stuck``, see
  :mod:`speechkd.training.plateau`), or
- one of its decodings emitted fewer than ``min_emission`` hypothesis words per reference word
  (``(words - del + ins) / words`` of the summary row): a table of deletions, not a result.

With a ``baseline`` system, every other system's cell is marked ``†`` when its mean differs from the
baseline's by more than the larger of the two standard deviations (and both have at least two seeds):
the difference exceeds the seed spread.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence, Union

from speechkd.decoding.scoring import read_summary
from speechkd.errors import SpeechkdError

MIN_EMISSION = 0.3  # hypothesis words per reference word below which a decoding is flagged
EXCEEDS_MARK = "†"


@dataclass
class Run:
    """One seed of a system: its summary rows and why it is left out (None: it counts)."""

    name: str  # e.g. the experiment directory
    rows: list[dict[str, str]]
    plateau: Optional[str] = None  # reason from plateau.yaml, or None

    def flag(self, tag: str, test_set: str) -> Optional[str]:
        """Why this run's (tag, test_set) cell is left out, or None."""
        if self.plateau:
            return self.plateau
        row = self._row(tag, test_set)
        if row is not None:
            ratio = hyp_words_per_ref_word(row)
            if ratio is not None and ratio < MIN_EMISSION:
                return f"{test_set} {tag or '-'} emits {ratio:.2f} words per reference word"
        return None

    def wer(self, tag: str, test_set: str) -> Optional[float]:
        row = self._row(tag, test_set)
        return None if row is None else float(row["WER"])

    def _row(self, tag: str, test_set: str) -> Optional[dict[str, str]]:
        for r in self.rows:
            if r["tag"] == tag and r["test_set"] == test_set:
                return r
        return None


@dataclass
class Cell:
    values: list[float] = field(default_factory=list)  # WER of the counted seeds
    left_out: list[str] = field(default_factory=list)  # "<run>: <reason>"

    @property
    def mean(self) -> float:
        return statistics.fmean(self.values) if self.values else math.nan

    @property
    def std(self) -> float:
        """Sample standard deviation (n - 1); nan with fewer than two seeds."""
        return statistics.stdev(self.values) if len(self.values) >= 2 else math.nan


def hyp_words_per_ref_word(row: dict[str, str]) -> Optional[float]:
    """Hypothesis words per reference word of a summary row: ``(words - del + ins) / words``."""
    words = int(row["words"])
    if words <= 0:
        return None
    return (words - int(row["del"]) + int(row["ins"])) / words


def plateau_reason(exp_dir: Union[str, Path]) -> Optional[str]:
    """Why a run is not a result because it ended on the blank plateau (``<exp_dir>/plateau.yaml``), or None."""
    from speechkd.training.plateau import read_plateau_status

    exp_dir = Path(exp_dir)
    status = read_plateau_status(exp_dir)
    if status is None or status.get("status") != "stuck":
        return None
    what = {"valid": "validation transducer", "train": "training CTC"}.get(status.get("source") or "train", "")
    return (f"on the blank plateau ({what} emission ratio {status.get('emission_ratio')} "
            f"at step {status.get('step')}, {exp_dir / 'plateau.yaml'})")


def load_run(summary: Union[str, Path]) -> Run:
    """A run from ``<exp_dir>/decode/wer-summary.tsv`` (its plateau verdict from ``<exp_dir>/plateau.yaml``)."""
    summary = Path(summary)
    if not summary.is_file():
        raise SpeechkdError(f"WER summary not found: {summary}")
    exp_dir = summary.parent.parent
    return Run(name=str(exp_dir), rows=read_summary(summary), plateau=plateau_reason(exp_dir))


def aggregate(runs: Sequence[Run], tags: Sequence[str], sets: Sequence[str]) -> dict[tuple[str, str], Cell]:
    """``{(tag, set): Cell}`` over ``runs`` (seeds of one system)."""
    cells: dict[tuple[str, str], Cell] = {}
    for tag in tags:
        for s in sets:
            cell = Cell()
            for run in runs:
                wer = run.wer(tag, s)
                if wer is None:
                    continue
                reason = run.flag(tag, s)
                if reason:
                    cell.left_out.append(f"{run.name}: {reason}")
                else:
                    cell.values.append(wer)
            cells[(tag, s)] = cell
    return cells


def _fmt(cell: Cell, mark: str = "") -> str:
    if not cell.values:
        return "plateau" if cell.left_out else "-"
    out = f"{cell.mean:.2f}" if len(cell.values) < 2 else f"{cell.mean:.2f} ± {cell.std:.2f}"
    return out + mark


def exceeds_spread(a: Cell, b: Cell) -> bool:
    """|mean(a) - mean(b)| > max(std(a), std(b)), both cells with at least two seeds."""
    if len(a.values) < 2 or len(b.values) < 2:
        return False
    return abs(a.mean - b.mean) > max(a.std, b.std)


def seed_table(
    systems: Sequence[tuple[str, Sequence[Run]]],
    sets: Optional[Sequence[str]] = None,
    baseline: Optional[str] = None,
) -> str:
    """Markdown: one row per (system, decoding tag), one column per set, ``mean ± std`` over seeds.

    ``systems``: ``[(name, runs)]`` in row order. Runs left out are listed below the table.
    """
    names = [n for n, _ in systems]
    if baseline is not None and baseline not in names:
        raise SpeechkdError(f"baseline system {baseline!r} is not one of the systems {names}")
    all_rows = [r for _, runs in systems for run in runs for r in run.rows]
    if sets:
        all_rows = [r for r in all_rows if r["test_set"] in sets]
    if not all_rows:
        raise SpeechkdError(f"no WER rows to tabulate{f' for sets {list(sets)}' if sets else ''}")
    sets = list(sets) if sets else list(dict.fromkeys(r["test_set"] for r in all_rows))
    cells = {}
    tags_of = {}
    for name, runs in systems:
        tags = list(dict.fromkeys(r["tag"] for run in runs for r in run.rows if r["test_set"] in sets))
        tags_of[name] = tags
        cells[name] = aggregate(runs, tags, sets)
    lines = ["| system | decoding | seeds | " + " | ".join(sets) + " |", "|---|---|---|" + "---|" * len(sets)]
    notes: list[str] = []
    marked = False
    for name, runs in systems:
        for tag in tags_of[name]:
            row_cells = []
            for s in sets:
                cell = cells[name][(tag, s)]
                mark = ""
                if baseline and name != baseline and (tag, s) in cells[baseline]:
                    if exceeds_spread(cell, cells[baseline][(tag, s)]):
                        mark, marked = EXCEEDS_MARK, True
                row_cells.append(_fmt(cell, mark))
                notes.extend(f"{name} {tag or '-'} {s}: left out {x}" for x in cell.left_out)
            counted = max((len(cells[name][(tag, s)].values) for s in sets), default=0)
            lines.append(f"| {name} | {tag or '-'} | {counted} of {len(runs)} | " + " | ".join(row_cells) + " |")
    out = "\n".join(lines) + "\n"
    footer = ["", "WER in %: mean ± sample standard deviation over the counted seeds."]
    if baseline:
        footer.append(
            f"{EXCEEDS_MARK}: differs from {baseline} (same decoding and set) by more than the larger of the two "
            "standard deviations." if marked else
            f"No difference from {baseline} exceeds the larger of the two standard deviations."
        )
    if notes:
        footer.append("Left out (not results):")
        footer.extend(f"- {n}" for n in notes)
    return out + "\n".join(footer) + "\n"


def seed_tsv(systems: Sequence[tuple[str, Sequence[Run]]], sets: Sequence[str]) -> str:
    """Machine-readable companion of :func:`seed_table`: one line per (system, tag, set) with the per-seed
    values (``run=WER`` or ``run=left-out``), n, mean and std."""
    lines = ["system\ttag\ttest_set\tn\tmean\tstd\tper_seed"]
    for name, runs in systems:
        tags = list(dict.fromkeys(r["tag"] for run in runs for r in run.rows if r["test_set"] in sets))
        for tag in tags:
            for s in sets:
                per = []
                for run in runs:
                    wer = run.wer(tag, s)
                    if wer is not None:
                        per.append(f"{run.name}={'left-out' if run.flag(tag, s) else f'{wer:.2f}'}")
                cell = aggregate(runs, [tag], [s])[(tag, s)]
                lines.append(f"{name}\t{tag}\t{s}\t{len(cell.values)}\t{cell.mean:.4f}\t{cell.std:.4f}\t{' '.join(per)}")
    return "\n".join(lines) + "\n"
