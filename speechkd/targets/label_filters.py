"""Filters for teacher (Whisper) pseudo-labels: drop hallucinations, and say what was dropped and why.

Supervision convention (what the pseudo-labeller writes, what this module reads)
-------------------------------------------------------------------------------
For every cut, each supervision carries:

* ``text``: the teacher's transcript (the pseudo-label), normalised or not;
* ``custom["reference"]``: the original (ground-truth) transcript when the corpus has one; absent
  or ``None`` when it does not;
* ``custom["teacher"]``: the teacher's name (informational, copied to the report);
* ``custom["avg_logprob"]``: average log-probability per decoded token;
* ``custom["compression_ratio"]``: the teacher's own compression ratio (informational: the rule
  below recomputes it from the stored text, so the filter does not depend on how it was decoded);
* ``custom["no_speech_prob"]``: probability of the no-speech token.

A field that is missing or ``None`` makes the rule that needs it *not applicable* for that label
(counted in the report), never an error.

Rules, in the fixed order they are evaluated (a dropped label is attributed to the FIRST rule it
fails; the report also counts every rule it fails)
-----------------------------------------------------------------------------------------------
1. ``empty``: no words left after normalisation (``""``, ``"[BLANK_AUDIO]"``, ``"..."``) or no
   supervision at all.
2. ``no_speech``: ``no_speech_prob > max_no_speech_prob`` (off by default).
3. ``script``: fewer than ``min_script_fraction`` of the letters are in ``target_script``
   (a Cyrillic or CJK transcript of English audio) -- via :func:`speechkd.text.normalize.is_target_script`.
4. ``ngram_loop``: an n-gram (n = 1..``max_ngram_order``) of normalised words repeated back to back
   more than ``max_ngram_repeats`` times (``"I'M SORRY I'M SORRY I'M SORRY ..."``).
5. ``compression_ratio``: ``len(b) / len(zlib.compress(b))`` of the label's UTF-8 bytes ``b``
   (as Whisper computes it) above ``max_compression_ratio``: loops with a period longer than
   ``max_ngram_order`` words.
6. ``chars_per_sec``: characters of the normalised text (single spaces between words included)
   per second of the supervision outside ``[min_chars_per_sec, max_chars_per_sec]``.
7. ``avg_logprob``: ``avg_logprob < min_avg_logprob``.
8. ``wer``: WER (percent) of the label against ``custom["reference"]``, both normalised, above
   ``max_wer``. A reference with no words makes any non-empty label an infinite WER.

Rules 3-6 judge the label's content and are not applicable to an empty label (rule 1 covers it,
and with ``drop_empty=False`` an empty label is kept unless WER, no-speech or log-probability
evidence is against it). Texts are normalised with
:func:`speechkd.text.normalize.normalize_librispeech` for rules 1, 3, 4, 6 and 8 (``normalize=False``
only strips and collapses whitespace).

A cut with several supervisions is dropped when any of them fails; its rules are the union.
"""

from __future__ import annotations

import json
import logging
import math
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Optional, Union

from speechkd.errors import SpeechkdError

logger = logging.getLogger(__name__)

# Rule names in evaluation order (see the module docstring).
RULE_EMPTY = "empty"
RULE_NO_SPEECH = "no_speech"
RULE_SCRIPT = "script"
RULE_NGRAM_LOOP = "ngram_loop"
RULE_COMPRESSION = "compression_ratio"
RULE_CHARS_PER_SEC = "chars_per_sec"
RULE_AVG_LOGPROB = "avg_logprob"
RULE_WER = "wer"
RULES = (
    RULE_EMPTY,
    RULE_NO_SPEECH,
    RULE_SCRIPT,
    RULE_NGRAM_LOOP,
    RULE_COMPRESSION,
    RULE_CHARS_PER_SEC,
    RULE_AVG_LOGPROB,
    RULE_WER,
)
TOTAL_ROW = "TOTAL"

# Supervision custom-field names written by the pseudo-labeller.
REFERENCE_FIELD = "reference"
TEACHER_FIELD = "teacher"
AVG_LOGPROB_FIELD = "avg_logprob"
COMPRESSION_RATIO_FIELD = "compression_ratio"
NO_SPEECH_PROB_FIELD = "no_speech_prob"

REPORT_FILE = "filter-report.tsv"
DROPPED_FILE = "dropped.jsonl"
REPORT_COLUMNS = (
    "rule", "enabled", "threshold", "applicable", "not_applicable", "failed", "dropped", "kept", "examples",
)
EXAMPLE_SEPARATOR = " | "
ELLIPSIS = "..."


@dataclass
class FilterConfig:
    """Thresholds of the pseudo-label filters; ``None`` (or ``False``) disables a rule.

    Defaults:

    * ``max_wer=10.0``: Distil-Whisper's recommended WER threshold (percent) when a reference exists.
    * ``max_compression_ratio=2.4``: Whisper's own hallucination threshold (``compression_ratio_threshold``).
    * ``max_ngram_repeats=4`` over n-grams up to ``max_ngram_order=4``: five or more back-to-back
      copies of a 1-4 word phrase are a decoding loop; genuine read speech rarely repeats a word or
      phrase more than three or four times in a row ("very very very", "ha ha ha ha").
    * ``min_chars_per_sec=5``, ``max_chars_per_sec=25``: read English runs at 12-16 characters/s
      (normalised text with spaces; five LibriVox clips of pocketsphinx-testdata measured 12.0-16.2);
      362 professionally read Asterisk prompts longer than 1 s measured median 13.0, 99th percentile
      18.1, maximum 19.8, and 1st percentile 4.5 (single words padded with silence). Above 25 the
      text cannot have been spoken in the audio (Whisper invents text); below 5 most of the audio is
      untranscribed (a truncated or skipped transcript).
    * ``min_avg_logprob=-1.0``: Whisper's ``logprob_threshold`` for a failed decode.
    * ``max_no_speech_prob=None``: off; Whisper's own value is 0.6.
    * ``target_script="latin"`` with ``min_script_fraction=0.9`` of the letters.
    """

    drop_empty: bool = True
    max_no_speech_prob: Optional[float] = None
    target_script: Optional[str] = "latin"
    min_script_fraction: float = 0.9
    max_ngram_repeats: Optional[int] = 4
    max_ngram_order: int = 4
    max_compression_ratio: Optional[float] = 2.4
    min_chars_per_sec: Optional[float] = 5.0
    max_chars_per_sec: Optional[float] = 25.0
    min_avg_logprob: Optional[float] = -1.0
    max_wer: Optional[float] = 10.0
    normalize: bool = True
    report_examples: int = 3
    report_text_chars: int = 80

    def validate(self) -> None:
        """Raise SpeechkdError naming the first impossible value."""
        checks = [
            (self.max_no_speech_prob is None or 0.0 <= self.max_no_speech_prob <= 1.0,
             "max_no_speech_prob", "in [0, 1]"),
            (0.0 < self.min_script_fraction <= 1.0, "min_script_fraction", "in (0, 1]"),
            (self.max_ngram_repeats is None or self.max_ngram_repeats >= 1, "max_ngram_repeats", ">= 1"),
            (self.max_ngram_order >= 1, "max_ngram_order", ">= 1"),
            (self.max_compression_ratio is None or self.max_compression_ratio > 0, "max_compression_ratio", "> 0"),
            (self.min_chars_per_sec is None or self.min_chars_per_sec >= 0, "min_chars_per_sec", ">= 0"),
            (self.max_chars_per_sec is None or self.max_chars_per_sec > 0, "max_chars_per_sec", "> 0"),
            (self.max_wer is None or self.max_wer >= 0, "max_wer", ">= 0"),
            (self.report_examples >= 0, "report_examples", ">= 0"),
            (self.report_text_chars > len(ELLIPSIS), "report_text_chars", f"> {len(ELLIPSIS)}"),
        ]
        for ok, name, rule in checks:
            if not ok:
                raise SpeechkdError(f"filter config: {name}={getattr(self, name)!r} must be {rule}")
        lo, hi = self.min_chars_per_sec, self.max_chars_per_sec
        if lo is not None and hi is not None and lo >= hi:
            raise SpeechkdError(f"filter config: min_chars_per_sec={lo} must be below max_chars_per_sec={hi}")

    def rule_enabled(self, rule: str) -> bool:
        """Whether ``rule`` (a name from :data:`RULES`) is switched on."""
        return {
            RULE_EMPTY: self.drop_empty,
            RULE_NO_SPEECH: self.max_no_speech_prob is not None,
            RULE_SCRIPT: bool(self.target_script),
            RULE_NGRAM_LOOP: self.max_ngram_repeats is not None,
            RULE_COMPRESSION: self.max_compression_ratio is not None,
            RULE_CHARS_PER_SEC: self.min_chars_per_sec is not None or self.max_chars_per_sec is not None,
            RULE_AVG_LOGPROB: self.min_avg_logprob is not None,
            RULE_WER: self.max_wer is not None,
        }[rule]

    def threshold(self, rule: str) -> str:
        """Human-readable threshold of ``rule`` for the report."""
        return {
            RULE_EMPTY: "no words",
            RULE_NO_SPEECH: f"> {self.max_no_speech_prob}",
            RULE_SCRIPT: f"< {self.min_script_fraction} {self.target_script}",
            RULE_NGRAM_LOOP: f"> {self.max_ngram_repeats} repeats (n <= {self.max_ngram_order})",
            RULE_COMPRESSION: f"> {self.max_compression_ratio}",
            RULE_CHARS_PER_SEC: f"outside [{self.min_chars_per_sec}, {self.max_chars_per_sec}]",
            RULE_AVG_LOGPROB: f"< {self.min_avg_logprob}",
            RULE_WER: f"> {self.max_wer}%",
        }[rule]


@dataclass
class LabelVerdict:
    """Outcome of the rules on one label: the rules that applied, and those failed with a detail
    string (``"wer=45.00 > 10.0"``), both in rule order."""

    applicable: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)

    @property
    def kept(self) -> bool:
        return not self.failed

    def merge(self, other: "LabelVerdict") -> "LabelVerdict":
        """Union of two verdicts (several supervisions of one cut), kept in rule order."""
        applicable = [r for r in RULES if r in self.applicable or r in other.applicable]
        failed = {r: self.failed.get(r) or other.failed[r] for r in RULES if r in self.failed or r in other.failed}
        return LabelVerdict(applicable, failed)


# --------------------------------------------------------------------------- measurements
def compression_ratio(text: str) -> float:
    """Whisper's compression ratio: UTF-8 byte length over its zlib-compressed length."""
    data = text.encode("utf-8")
    return len(data) / len(zlib.compress(data))


def max_ngram_repeats(words: list[str], max_order: int) -> tuple[int, tuple[str, ...]]:
    """Largest number of back-to-back copies of any n-gram (1 <= n <= ``max_order``) in ``words``,
    and that n-gram (``(0, ())`` for no words).

    For period ``n``, a run of ``r`` consecutive positions with ``words[i] == words[i + n]`` spans
    ``r + n`` words, i.e. ``(r + n) // n`` whole copies of ``words[i:i + n]``.
    """
    best, best_gram = (1, (words[0],)) if words else (0, ())
    for n in range(1, max_order + 1):
        run = 0
        for i in range(len(words) - n):
            run = run + 1 if words[i] == words[i + n] else 0
            copies = (run + n) // n
            if copies > best:
                start = i + 1 - run
                best, best_gram = copies, tuple(words[start : start + n])
    return best, best_gram


def label_wer(reference: str, hypothesis: str) -> float:
    """WER in percent of one normalised hypothesis against one normalised reference; a reference
    with no words gives 0.0 for an empty hypothesis and ``inf`` otherwise."""
    from speechkd.decoding.scoring import compute_wer

    if not reference.split():
        return 0.0 if not hypothesis.split() else math.inf
    return compute_wer([reference], [hypothesis]).wer


def _normalise(text: str, cfg: FilterConfig) -> str:
    from speechkd.text.normalize import normalize_librispeech

    return normalize_librispeech(text) if cfg.normalize else " ".join(text.split())


def _field(fields: Mapping[str, Any], name: str) -> Optional[float]:
    value = fields.get(name)
    if value is None:
        return None
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise SpeechkdError(f"pseudo-label field {name}={value!r} is not a number") from None
    return None if math.isnan(value) else value


# --------------------------------------------------------------------------- rules
# Each ``_check_*`` returns None when the rule does not apply to the label, "" when the label passes,
# and a non-empty detail string ("wer=45.00 > 10.0") when it fails.
def _check_no_speech(fields: Mapping[str, Any], cfg: FilterConfig) -> Optional[str]:
    prob = _field(fields, NO_SPEECH_PROB_FIELD)
    if prob is None:
        return None
    return f"no_speech_prob={prob:.3f} > {cfg.max_no_speech_prob}" if prob > cfg.max_no_speech_prob else ""


def _check_script(norm: str, cfg: FilterConfig) -> Optional[str]:
    from speechkd.text.normalize import is_target_script, script_fraction

    if is_target_script(norm, cfg.target_script, cfg.min_script_fraction):
        return ""
    frac = script_fraction(norm, cfg.target_script)
    return f"{cfg.target_script} letters={'none' if frac is None else f'{frac:.2f}'} < {cfg.min_script_fraction}"


def _check_ngram(norm: str, cfg: FilterConfig) -> Optional[str]:
    copies, gram = max_ngram_repeats(norm.split(), cfg.max_ngram_order)
    if copies > cfg.max_ngram_repeats:
        return f"{' '.join(gram)!r} x{copies} > {cfg.max_ngram_repeats}"
    return ""


def _check_compression(text: str, cfg: FilterConfig) -> Optional[str]:
    ratio = compression_ratio(text)
    return f"compression_ratio={ratio:.2f} > {cfg.max_compression_ratio}" if ratio > cfg.max_compression_ratio else ""


def _check_chars_per_sec(norm: str, duration: float, cfg: FilterConfig) -> Optional[str]:
    cps = len(norm) / duration
    lo, hi = cfg.min_chars_per_sec, cfg.max_chars_per_sec
    if (lo is not None and cps < lo) or (hi is not None and cps > hi):
        return f"chars_per_sec={cps:.1f} outside [{lo}, {hi}]"
    return ""


def _check_avg_logprob(fields: Mapping[str, Any], cfg: FilterConfig) -> Optional[str]:
    logprob = _field(fields, AVG_LOGPROB_FIELD)
    if logprob is None:
        return None
    return f"avg_logprob={logprob:.3f} < {cfg.min_avg_logprob}" if logprob < cfg.min_avg_logprob else ""


def _check_wer(norm: str, ref: Optional[str], cfg: FilterConfig) -> Optional[str]:
    if ref is None:
        return None
    wer = label_wer(_normalise(ref, cfg), norm)
    return f"wer={wer:.2f} > {cfg.max_wer}" if wer > cfg.max_wer else ""


def check_label(
    text: Optional[str],
    duration: float,
    ref: Optional[str],
    fields: Mapping[str, Any],
    cfg: FilterConfig,
) -> LabelVerdict:
    """Run every enabled rule on one label (see the module docstring for the order and meaning).

    ``text`` is the pseudo-label (``None`` = missing = empty), ``duration`` the seconds of audio it
    covers, ``ref`` the ground-truth transcript or ``None``, ``fields`` the supervision's custom
    fields (``avg_logprob``, ``no_speech_prob``, ...).
    """
    if not duration > 0:
        raise SpeechkdError(f"pseudo-label {text!r}: duration must be positive, got {duration!r}")
    text = text or ""
    norm = _normalise(text, cfg)
    has_words = bool(norm)
    results: dict[str, Optional[str]] = {
        RULE_EMPTY: "" if has_words else "no words",
        RULE_NO_SPEECH: _check_no_speech(fields, cfg) if cfg.rule_enabled(RULE_NO_SPEECH) else None,
    }
    content_rules = {
        RULE_SCRIPT: lambda: _check_script(norm, cfg),
        RULE_NGRAM_LOOP: lambda: _check_ngram(norm, cfg),
        RULE_COMPRESSION: lambda: _check_compression(text, cfg),
        RULE_CHARS_PER_SEC: lambda: _check_chars_per_sec(norm, duration, cfg),
    }
    for rule, check in content_rules.items():
        results[rule] = check() if has_words and cfg.rule_enabled(rule) else None
    results[RULE_AVG_LOGPROB] = _check_avg_logprob(fields, cfg) if cfg.rule_enabled(RULE_AVG_LOGPROB) else None
    results[RULE_WER] = _check_wer(norm, ref, cfg) if cfg.rule_enabled(RULE_WER) else None
    if not cfg.drop_empty:
        results[RULE_EMPTY] = None
    verdict = LabelVerdict()
    for rule in RULES:
        outcome = results[rule]
        if outcome is None:
            continue
        verdict.applicable.append(rule)
        if outcome:
            verdict.failed[rule] = outcome
    return verdict


def evaluate_label(
    text: Optional[str],
    duration: float,
    ref: Optional[str],
    fields: Mapping[str, Any],
    cfg: FilterConfig,
) -> list[str]:
    """Names of the rules ``text`` fails, in rule order (``[]`` = keep); see :func:`check_label`."""
    return list(check_label(text, duration, ref, fields, cfg).failed)


# --------------------------------------------------------------------------- report
def _one_line(text: str, max_chars: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= max_chars else text[: max_chars - len(ELLIPSIS)] + ELLIPSIS


@dataclass
class _RuleCounts:
    applicable: int = 0
    failed: int = 0
    dropped: int = 0
    examples: list[str] = field(default_factory=list)


class FilterReport:
    """Per-rule counts over a filtered CutSet, every dropped cut, and the files that record them."""

    def __init__(self, cfg: FilterConfig) -> None:
        self.cfg = cfg
        self.num_cuts = 0
        self.num_kept = 0
        self.rules: dict[str, _RuleCounts] = {r: _RuleCounts() for r in RULES}
        self.dropped: list[dict[str, Any]] = []

    @property
    def num_dropped(self) -> int:
        return self.num_cuts - self.num_kept

    def add(self, cut_id: str, verdict: LabelVerdict, text: str, ref: Optional[str], duration: float) -> None:
        """Count one cut's verdict (``text``/``ref``: its supervisions' texts, joined)."""
        self.num_cuts += 1
        for rule in verdict.applicable:
            self.rules[rule].applicable += 1
        for rule, detail in verdict.failed.items():
            counts = self.rules[rule]
            counts.failed += 1
            if len(counts.examples) < self.cfg.report_examples:
                counts.examples.append(f"{cut_id}: {_one_line(text, self.cfg.report_text_chars)!r} ({detail})")
        if verdict.kept:
            self.num_kept += 1
            return
        first = next(iter(verdict.failed))
        self.rules[first].dropped += 1
        self.dropped.append(
            {"cut_id": cut_id, "rule": first, "failed": list(verdict.failed), "details": dict(verdict.failed),
             "text": text, "reference": ref, "duration": duration}
        )

    def rows(self) -> list[dict[str, str]]:
        """The report table: one row per rule in rule order, then the TOTAL row (all as strings)."""
        out = [self._row(rule, c) for rule, c in self.rules.items()]
        total = dict.fromkeys(REPORT_COLUMNS, "")
        total.update(rule=TOTAL_ROW, applicable=str(self.num_cuts), not_applicable="0",
                     failed=str(self.num_dropped), dropped=str(self.num_dropped), kept=str(self.num_kept))
        out.append(total)
        return out

    def _row(self, rule: str, c: _RuleCounts) -> dict[str, str]:
        return {
            "rule": rule,
            "enabled": str(self.cfg.rule_enabled(rule)).lower(),
            "threshold": self.cfg.threshold(rule),
            "applicable": str(c.applicable),
            "not_applicable": str(self.num_cuts - c.applicable),
            "failed": str(c.failed),
            "dropped": str(c.dropped),
            "kept": str(c.applicable - c.failed),
            "examples": EXAMPLE_SEPARATOR.join(c.examples),
        }

    def write(self, out_dir: Union[str, Path]) -> None:
        """Write ``filter-report.tsv`` and ``dropped.jsonl`` into ``out_dir`` and log the table."""
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        lines = ["\t".join(REPORT_COLUMNS)]
        lines += ["\t".join(_tsv_cell(row[c]) for c in REPORT_COLUMNS) for row in self.rows()]
        (out_dir / REPORT_FILE).write_text("\n".join(lines) + "\n", encoding="utf-8")
        with open(out_dir / DROPPED_FILE, "w", encoding="utf-8") as f:
            for item in self.dropped:
                f.write(json.dumps(item, ensure_ascii=False) + "\n")
        self.log_summary()

    def log_summary(self) -> None:
        """Log the per-rule table (rule, applicable, failed, dropped) and the totals."""
        header = f"{'rule':<18}{'applicable':>11}{'failed':>8}{'dropped':>8}"
        table = [header] + [
            f"{r['rule']:<18}{r['applicable']:>11}{r['failed']:>8}{r['dropped']:>8}" for r in self.rows()
        ]
        logger.info("pseudo-label filter: kept %d of %d cuts, dropped %d\n%s",
                    self.num_kept, self.num_cuts, self.num_dropped, "\n".join(table))


def _tsv_cell(value: str) -> str:
    return " ".join(value.replace("\t", " ").split())


def read_report(path: Union[str, Path]) -> dict[str, dict[str, str]]:
    """Read a ``filter-report.tsv`` back into ``{rule: {column: value}}`` (TOTAL included)."""
    path = Path(path)
    if not path.is_file():
        raise SpeechkdError(f"filter report not found: {path}")
    lines = path.read_text(encoding="utf-8").splitlines()
    if not lines or tuple(lines[0].split("\t")) != REPORT_COLUMNS:
        raise SpeechkdError(f"{path}: not a filter report (expected header {' '.join(REPORT_COLUMNS)})")
    out = {}
    for n, line in enumerate(lines[1:], start=2):
        cells = line.split("\t")
        if len(cells) != len(REPORT_COLUMNS):
            raise SpeechkdError(f"{path}:{n}: expected {len(REPORT_COLUMNS)} columns, got {len(cells)}")
        out[cells[0]] = dict(zip(REPORT_COLUMNS, cells))
    return out


# --------------------------------------------------------------------------- cuts
def _supervision_text(sup: Any, text_field: str) -> Optional[str]:
    if text_field == "text":
        return sup.text
    return (sup.custom or {}).get(text_field)


def check_cut(
    cut: Any, cfg: FilterConfig, text_field: str = "text", reference_field: str = REFERENCE_FIELD
) -> tuple[LabelVerdict, str, Optional[str]]:
    """Verdict on one cut (union over its supervisions), its label text and reference (joined with
    spaces; reference ``None`` when no supervision has one). A cut without supervisions is an
    empty label."""
    if not cut.supervisions:
        return check_label(None, cut.duration, None, {}, cfg), "", None
    verdict, texts, refs = LabelVerdict(), [], []
    for sup in cut.supervisions:
        text = _supervision_text(sup, text_field)
        custom = sup.custom or {}
        ref = custom.get(reference_field)
        try:
            verdict = verdict.merge(check_label(text, sup.duration, ref, custom, cfg))
        except SpeechkdError as e:
            raise SpeechkdError(f"cut {cut.id}, supervision {sup.id}: {e}") from None
        texts.append(text or "")
        if ref is not None:
            refs.append(ref)
    return verdict, " ".join(texts), (" ".join(refs) if refs else None)


def iter_filtered(
    cuts: Iterable[Any],
    cfg: FilterConfig,
    report: FilterReport,
    text_field: str = "text",
    reference_field: str = REFERENCE_FIELD,
) -> Iterator[Any]:
    """Yield the cuts whose labels pass every rule, counting every cut in ``report`` (streams: a lazy
    CutSet is never loaded whole)."""
    for cut in cuts:
        verdict, text, ref = check_cut(cut, cfg, text_field, reference_field)
        report.add(cut.id, verdict, text, ref, cut.duration)
        if verdict.kept:
            yield cut


def filter_cuts(
    cuts: Any, cfg: FilterConfig, text_field: str = "text", reference_field: str = REFERENCE_FIELD
) -> tuple[Any, FilterReport]:
    """Filter a CutSet's pseudo-labels: ``(kept CutSet, FilterReport)``.

    ``text_field`` is ``"text"`` (the supervision's text) or the name of a custom field holding the
    label; ``reference_field`` the custom field holding the ground truth. Raises SpeechkdError on an
    empty CutSet.
    """
    from lhotse import CutSet

    report = FilterReport(cfg)
    kept = CutSet.from_cuts(list(iter_filtered(cuts, cfg, report, text_field, reference_field)))
    if report.num_cuts == 0:
        raise SpeechkdError("filter_cuts: the input CutSet has no cuts")
    return kept, report
