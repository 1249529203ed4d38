"""Hours, utterances and speakers per part, from the supervision manifests.

``summarize_manifests(manifest_dir)`` reads ``librispeech_supervisions_<part>.jsonl.gz`` lazily (one
pass, constant memory), :func:`write_summary_tsv` writes one row per part plus a ``TOTAL`` row, and
:func:`format_table` gives the same as an aligned text table for logs and RESULTS.md.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Optional, Sequence, Union

from speechkd.data.prepare import MANIFEST_PREFIX, manifest_paths
from speechkd.errors import SpeechkdError

Pathlike = Union[str, Path]

SECONDS_PER_HOUR = 3600.0
TOTAL = "TOTAL"
COLUMNS = ("part", "hours", "utterances", "speakers", "mean_duration_s", "max_duration_s")
HOURS_DECIMALS = 3
SECONDS_DECIMALS = 2


@dataclasses.dataclass
class PartSummary:
    part: str
    duration_seconds: float
    num_utterances: int
    speakers: set[str]
    max_duration_seconds: float

    @property
    def hours(self) -> float:
        return self.duration_seconds / SECONDS_PER_HOUR

    @property
    def num_speakers(self) -> int:
        return len(self.speakers)

    @property
    def mean_duration_seconds(self) -> float:
        return self.duration_seconds / self.num_utterances if self.num_utterances else 0.0

    def row(self) -> tuple[str, ...]:
        return (
            self.part,
            f"{self.hours:.{HOURS_DECIMALS}f}",
            str(self.num_utterances),
            str(self.num_speakers),
            f"{self.mean_duration_seconds:.{SECONDS_DECIMALS}f}",
            f"{self.max_duration_seconds:.{SECONDS_DECIMALS}f}",
        )


def summarized_parts(manifest_dir: Pathlike) -> list[str]:
    """Parts with a supervisions manifest in ``manifest_dir``."""
    prefix, suffix = f"{MANIFEST_PREFIX}_supervisions_", ".jsonl.gz"
    return [p.name[len(prefix) : -len(suffix)] for p in sorted(Path(manifest_dir).glob(f"{prefix}*{suffix}"))]


def summarize_part(manifest_dir: Pathlike, part: str) -> PartSummary:
    from lhotse import load_manifest_lazy

    path = manifest_paths(manifest_dir, part)[1]
    if not path.is_file():
        raise SpeechkdError(f"supervisions manifest not found for part {part}: {path}")
    summary = PartSummary(part, 0.0, 0, set(), 0.0)
    for sup in load_manifest_lazy(path):
        summary.duration_seconds += sup.duration
        summary.num_utterances += 1
        summary.max_duration_seconds = max(summary.max_duration_seconds, sup.duration)
        if sup.speaker is not None:
            summary.speakers.add(sup.speaker)
    return summary


def summarize_manifests(manifest_dir: Pathlike, parts: Optional[Sequence[str]] = None) -> list[PartSummary]:
    """One :class:`PartSummary` per part (all parts found when ``parts`` is None), then the total."""
    manifest_dir = Path(manifest_dir)
    if not manifest_dir.is_dir():
        raise SpeechkdError(f"manifest directory not found: {manifest_dir}")
    parts = list(parts) if parts is not None else summarized_parts(manifest_dir)
    if not parts:
        raise SpeechkdError(f"no {MANIFEST_PREFIX}_supervisions_<part>.jsonl.gz in {manifest_dir}")
    rows = [summarize_part(manifest_dir, p) for p in parts]
    return rows + [total(rows)]


def total(rows: Sequence[PartSummary]) -> PartSummary:
    """Sum of ``rows`` (speakers are united, so a speaker in two parts counts once)."""
    return PartSummary(
        TOTAL,
        sum(r.duration_seconds for r in rows),
        sum(r.num_utterances for r in rows),
        set().union(*(r.speakers for r in rows)),
        max((r.max_duration_seconds for r in rows), default=0.0),
    )


def write_summary_tsv(rows: Sequence[PartSummary], path: Pathlike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write("\t".join(COLUMNS) + "\n")
        for r in rows:
            f.write("\t".join(r.row()) + "\n")
    return path


def format_table(rows: Sequence[PartSummary]) -> str:
    """Aligned plain-text table: part left-aligned, numbers right-aligned."""
    table = [COLUMNS] + [r.row() for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(COLUMNS))]
    lines = []
    for row in table:
        cells = [row[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(row[1:], widths[1:])]
        lines.append("  ".join(cells))
    return "\n".join(lines)
