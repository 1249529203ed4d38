"""WER/CER scoring and result files (icefall-style recogs/errs, sclite trn, a summary table).

Definitions (documented because edge cases differ between tools):

* Words are whitespace-separated tokens; alignment is the minimum-edit-distance alignment with
  unit costs (via jiwer). Set-level WER = (sub + del + ins) / (reference words of the whole set),
  in percent -- not the mean of per-utterance WERs.
* An empty hypothesis makes every reference word a deletion; an empty reference makes every
  hypothesis word an insertion (it still counts towards the set's errors, over the set's
  reference words).
* A set whose reference words total 0 has WER ``inf`` when it has any insertion and ``0.0``
  when the hypotheses are empty too; a warning is logged. Scoring zero utterances is an error.
* CER is computed the same way over the characters of the space-joined words (spaces count as
  characters, as in ``jiwer.cer``).

Files written by :func:`write_results` into ``out_dir`` (``<sfx>`` = ``<set>`` or ``<set>-<tag>``):

* ``recogs-<sfx>.txt``: per cut, ``<cut_id>:\\tref=['A', 'B']`` then ``<cut_id>:\\thyp=[...]``.
* ``errs-<sfx>.txt``: the ``%WER`` line with counts, per-utterance alignments with errors
  marked ``(REF->HYP)`` (``*`` = nothing), then the most frequent substitutions, deletions,
  insertions and per-word statistics.
* ``ref-<sfx>.trn`` / ``hyp-<sfx>.trn``: sclite input, ``TEXT (utt-id)`` per line, with ids made
  sclite-safe by :func:`sclite_safe_id`; score with
  ``sclite -r ref-<sfx>.trn trn -h hyp-<sfx>.trn trn -i rm``. The tag is in both names so that
  several decoding methods can share one directory.
* ``wer-summary.tsv``: one row per (test_set, tag) with columns ``SUMMARY_COLUMNS``; re-scoring
  the same (test_set, tag) replaces its row.
"""

from __future__ import annotations

import ast
import contextlib
import dataclasses
import itertools
import logging
import math
import os
import re
import shutil
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, Optional, Sequence, TextIO, Union

from speechkd.errors import SpeechkdError

logger = logging.getLogger(__name__)

Text = Union[str, Sequence[str]]  # a sentence, or its list of words
Pair = tuple[Optional[str], Optional[str]]  # (ref word, hyp word); None = nothing
ERR_SYMBOL = "*"
SUMMARY_FILE = "wer-summary.tsv"
SUMMARY_COLUMNS = ("test_set", "tag", "WER", "CER", "ins", "del", "sub", "words", "utts")
RATE_DECIMALS = 2
# Utterances aligned at a time by write_results (bounds the word lists and alignments held in memory).
ALIGN_CHUNK = 2000
_SCLITE_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
_SAFE_NAME = re.compile(r"^[A-Za-z0-9._+=@-]+$")
_TRN_LINE = re.compile(r"^(.*?)\s*\(([^()\s]*)\)\s*$")


@dataclass(frozen=True)
class WerStats:
    """Error counts of one scored set. ``wer``/``cer`` are percentages (see module docstring)."""

    num_utts: int
    ref_words: int
    hyp_words: int
    hits: int
    subs: int
    dels: int
    ins: int
    ref_chars: int
    char_errors: int

    @property
    def errors(self) -> int:
        return self.subs + self.dels + self.ins

    @property
    def wer(self) -> float:
        return _rate(self.errors, self.ref_words)

    @property
    def cer(self) -> float:
        return _rate(self.char_errors, self.ref_chars)


def _rate(errors: int, total: int) -> float:
    if total == 0:
        return math.inf if errors else 0.0
    return 100.0 * errors / total


def _words(text: Text) -> list[str]:
    return text.split() if isinstance(text, str) else [w for t in text for w in t.split()]


# --------------------------------------------------------------------------- scoring
def align_words(refs: Sequence[list[str]], hyps: Sequence[list[str]]) -> list[list[Pair]]:
    """Minimum-edit-distance word alignment of each (ref, hyp) pair, as lists of word pairs."""
    import jiwer

    if not refs:
        return []
    out = jiwer.process_words([" ".join(r) for r in refs], [" ".join(h) for h in hyps])
    aligned: list[list[Pair]] = []
    for ref, hyp, chunks in zip(refs, hyps, out.alignments):
        pairs: list[Pair] = []
        for c in chunks:
            r = ref[c.ref_start_idx : c.ref_end_idx]
            h = hyp[c.hyp_start_idx : c.hyp_end_idx]
            if c.type in ("equal", "substitute"):
                pairs += list(zip(r, h))
            elif c.type == "delete":
                pairs += [(w, None) for w in r]
            else:  # insert
                pairs += [(None, w) for w in h]
        aligned.append(pairs)
    return aligned


def _char_errors(refs: Sequence[list[str]], hyps: Sequence[list[str]]) -> int:
    import jiwer

    out = jiwer.process_characters([" ".join(r) for r in refs], [" ".join(h) for h in hyps])
    return out.substitutions + out.deletions + out.insertions


def _stats(refs: Sequence[list[str]], hyps: Sequence[list[str]], aligned: list[list[Pair]]) -> WerStats:
    pairs = [p for utt in aligned for p in utt]
    stats = WerStats(
        num_utts=len(refs),
        ref_words=sum(len(r) for r in refs),
        hyp_words=sum(len(h) for h in hyps),
        hits=sum(r == h for r, h in pairs),
        subs=sum(r is not None and h is not None and r != h for r, h in pairs),
        dels=sum(h is None for _, h in pairs),
        ins=sum(r is None for r, _ in pairs),
        ref_chars=sum(len(" ".join(r)) for r in refs),
        char_errors=_char_errors(refs, hyps) if refs else 0,
    )
    return stats


def _add_stats(a: WerStats, b: WerStats) -> WerStats:
    """Counts of two disjoint sets of utterances together (every field is a sum over utterances)."""
    return WerStats(**{f.name: getattr(a, f.name) + getattr(b, f.name) for f in dataclasses.fields(WerStats)})


def _warn_if_empty(stats: WerStats) -> WerStats:
    if stats.ref_words == 0:
        logger.warning("scored set has no reference words: WER reported as %s", stats.wer)
    return stats


def _check_pairs(refs: Sequence[Text], hyps: Sequence[Text]) -> None:
    if len(refs) != len(hyps):
        raise SpeechkdError(f"scoring: {len(refs)} references but {len(hyps)} hypotheses")
    if not refs:
        raise SpeechkdError("scoring: no utterances to score")


def compute_wer(refs: Sequence[Text], hyps: Sequence[Text]) -> WerStats:
    """Set-level word (and character) error counts of paired references and hypotheses.

    Each item is a sentence or a list of words. Raises SpeechkdError on a length mismatch or an
    empty set.
    """
    _check_pairs(refs, hyps)
    ref_w = [_words(r) for r in refs]
    hyp_w = [_words(h) for h in hyps]
    return _warn_if_empty(_stats(ref_w, hyp_w, align_words(ref_w, hyp_w)))


# --------------------------------------------------------------------------- ids and names
def sclite_safe_id(cut_id: str) -> str:
    """Map a cut id to an sclite-safe utterance id: characters outside ``[A-Za-z0-9._-]`` -> ``_``."""
    return _SCLITE_UNSAFE.sub("_", cut_id)


def result_suffix(test_set: str, tag: str = "") -> str:
    """``"test-clean"`` or ``"test-clean-<tag>"``; both parts must be safe file-name pieces."""
    for what, value in (("test set", test_set), ("tag", tag)):
        if value and not _SAFE_NAME.match(value):
            raise SpeechkdError(f"scoring: {what} {value!r} is not a safe file-name piece")
    if not test_set:
        raise SpeechkdError("scoring: empty test set name")
    return f"{test_set}-{tag}" if tag else test_set


# --------------------------------------------------------------------------- writers
def write_results(
    results: Iterable[tuple[str, Text, Text]],
    out_dir: Union[str, Path],
    test_set: str,
    tag: str = "",
    normalize: bool = False,
    sort: bool = True,
) -> WerStats:
    """Score ``results`` = [(cut_id, ref, hyp), ...] and write the files listed in the module docstring.

    With ``normalize`` both sides go through :func:`speechkd.text.normalize.normalize_librispeech`
    first (off by default: LibriSpeech references are already normalised). The written recogs
    hold the scored (possibly normalised) words. Returns the set's :class:`WerStats`.

    With ``sort`` (the default) the files list the utterances in cut-id order. With ``sort=False`` they
    keep the order of ``results``, which may then be any iterable, e.g. rows read lazily from a
    manifest: it is consumed ALIGN_CHUNK rows at a time and never held whole. Only the ids seen are kept
    (to refuse duplicate ids, and ids that clash once made sclite-safe).
    """
    suffix = result_suffix(test_set, tag)
    out = Path(out_dir)
    ids = _IdCheck(test_set, out / f"ref-{suffix}.trn")
    rows = iter(sorted(results, key=lambda r: r[0]) if sort else results)
    norm = _normalizer(normalize)
    # Word lists, alignments and output lines are made ALIGN_CHUNK utterances at a time and written
    # straight to temporary files in ``out``, renamed into place once the set is scored (the errs
    # file needs the set's totals before its per-utterance part, so that part goes to a scratch file
    # first and is copied after them). A bad id or an empty set ends the scoring with no file written.
    tables = _ErrorTables()
    stats: Optional[WerStats] = None
    out.mkdir(parents=True, exist_ok=True)
    names = [out / f"{k}-{suffix}.{ext}" for k, ext in (("recogs", "txt"), ("errs", "txt"), ("ref", "trn"), ("hyp", "trn"))]
    with _TempFiles(out, names) as (recogs, errs, ref_trn, hyp_trn), \
            tempfile.TemporaryFile("w+", encoding="utf-8", dir=out) as utts:
        while chunk := list(itertools.islice(rows, ALIGN_CHUNK)):
            chunk_ids = [row[0] for row in chunk]
            ids.add(chunk_ids)
            r = [norm(row[1]) for row in chunk]
            h = [norm(row[2]) for row in chunk]
            del chunk
            aligned = align_words(r, h)
            part = _stats(r, h, aligned)
            stats = part if stats is None else _add_stats(stats, part)
            tables.add(aligned)
            for cut_id, ref, hyp, pairs in zip(chunk_ids, r, h, aligned):
                utts.write(_utt_line(cut_id, pairs) + "\n")
                recogs.write(f"{cut_id}:\tref={ref!r}\n{cut_id}:\thyp={hyp!r}\n")
                safe = sclite_safe_id(cut_id)
                ref_trn.write(f"{' '.join(ref)} ({safe})\n")
                hyp_trn.write(f"{' '.join(hyp)} ({safe})\n")
        if stats is None:
            raise SpeechkdError(f"scoring: no results for test set {test_set!r}")
        _warn_if_empty(stats)
        _write_errs(errs, utts, tables, stats)
    update_summary(out / SUMMARY_FILE, test_set, tag, stats)
    logger.info(
        "%s%s: WER %.2f%% (%d ins, %d del, %d sub / %d words), CER %.2f%%, %d utts -> %s",
        test_set, f" [{tag}]" if tag else "", stats.wer, stats.ins, stats.dels, stats.subs,
        stats.ref_words, stats.cer, stats.num_utts, out,
    )
    return stats


class _IdCheck:
    """Refuses a cut id seen before, and two ids that are equal once made sclite-safe (the .trn files
    could not tell them apart); fed ids a batch at a time."""

    def __init__(self, test_set: str, ref_path: Path) -> None:
        self.test_set, self.ref_path = test_set, ref_path
        self.ids: set[str] = set()
        self.safe: set[str] = set()

    def add(self, ids: Sequence[str]) -> None:
        dup = sorted({i for i, n in Counter(ids).items() if n > 1} | (set(ids) & self.ids))
        if dup:
            raise SpeechkdError(f"scoring {self.test_set}: duplicate cut ids, e.g. {dup[:3]}")
        safe = [sclite_safe_id(i) for i in ids]
        clash = sorted({s for s, n in Counter(safe).items() if n > 1} | (set(safe) & self.safe))
        if clash:
            raise SpeechkdError(f"scoring: cut ids collide once made sclite-safe, e.g. {clash[:3]} ({self.ref_path})")
        self.ids.update(ids)
        self.safe.update(safe)


def _normalizer(normalize: bool) -> Callable[[Text], list[str]]:
    """Text -> scored words: split only, or LibriSpeech normalisation of the joined words."""
    if not normalize:
        return _words
    from speechkd.text.normalize import normalize_librispeech

    return lambda text: normalize_librispeech(" ".join(_words(text))).split()


class _TempFiles:
    """Open one temporary text file per destination in ``folder``; on a clean exit rename each onto its
    destination, on an error delete them all. Writers never leave a half-written result file behind."""

    def __init__(self, folder: Path, dests: Sequence[Path]) -> None:
        self.folder, self.dests = folder, list(dests)
        self.tmps: list[str] = []
        self.files: list = []

    def __enter__(self) -> list:
        for d in self.dests:
            fd, tmp = tempfile.mkstemp(dir=self.folder, prefix=f".{d.name}.")
            self.tmps.append(tmp)
            self.files.append(os.fdopen(fd, "w+", encoding="utf-8"))
        return self.files

    def __exit__(self, exc_type, exc, tb) -> None:
        for f in self.files:
            f.close()
        if exc_type is None:
            for tmp, dest in zip(self.tmps, self.dests):
                os.replace(tmp, dest)
            return
        for tmp in self.tmps:
            with contextlib.suppress(OSError):
                os.unlink(tmp)


def _write_text(path: Path, text: str) -> None:
    """Write atomically (temporary file in the same folder, then rename)."""
    with _TempFiles(path.parent, [path]) as (f,):
        f.write(text)


def _fmt_rate(rate: float) -> str:
    return "inf" if math.isinf(rate) else f"{rate:.{RATE_DECIMALS}f}"


def _utt_line(cut_id: str, pairs: list[Pair]) -> str:
    toks = [
        r if r == h else f"({r if r is not None else ERR_SYMBOL}->{h if h is not None else ERR_SYMBOL})"
        for r, h in pairs
    ]
    return f"{cut_id}:\t" + " ".join(toks)


class _ErrorTables:
    """Substitution/deletion/insertion counters and per-word [corr, ref_sub, hyp_sub, ins, del] counts,
    accumulated over chunks of aligned utterances."""

    def __init__(self) -> None:
        self.subs: Counter = Counter()
        self.dels: Counter = Counter()
        self.ins: Counter = Counter()
        self.per_word: dict[str, list[int]] = {}

    def _bump(self, word: str, slot: int) -> None:
        self.per_word.setdefault(word, [0, 0, 0, 0, 0])[slot] += 1

    def add(self, aligned: list[list[Pair]]) -> None:
        for pairs in aligned:
            for r, h in pairs:
                if r is None:
                    self.ins[h] += 1
                    self._bump(h, 3)
                elif h is None:
                    self.dels[r] += 1
                    self._bump(r, 4)
                elif r == h:
                    self._bump(r, 0)
                else:
                    self.subs[(r, h)] += 1
                    self._bump(r, 1)
                    self._bump(h, 2)


def _by_count(counter: Counter) -> list:
    return sorted(counter.items(), key=lambda kv: (-kv[1], kv[0]))


def _write_errs(f: TextIO, utt_lines: TextIO, tables: _ErrorTables, stats: WerStats) -> None:
    """Write the errs file to ``f``: totals, then the per-utterance lines copied from ``utt_lines``
    (a file written beforehand, read from its start), then the error tables."""
    subs, dels, ins, per_word = tables.subs, tables.dels, tables.ins, tables.per_word
    head = [
        f"%WER = {_fmt_rate(stats.wer)}",
        f"Errors: {stats.ins} insertions, {stats.dels} deletions, {stats.subs} substitutions, "
        f"over {stats.ref_words} reference words ({stats.hits} correct)",
        f"%CER = {_fmt_rate(stats.cer)} ({stats.char_errors} errors over {stats.ref_chars} reference characters)",
        f"Utterances: {stats.num_utts}",
        "Search below for sections starting with PER-UTT DETAILS:, SUBSTITUTIONS:, DELETIONS:, "
        "INSERTIONS:, PER-WORD STATS:",
        "",
        "PER-UTT DETAILS: corr or (ref->hyp)",
    ]
    f.write("\n".join(head) + "\n")
    utt_lines.seek(0)
    shutil.copyfileobj(utt_lines, f)
    lines = ["", "SUBSTITUTIONS: count ref -> hyp"]
    lines += [f"{n}   {r} -> {h}" for (r, h), n in _by_count(subs)]
    lines += ["", "DELETIONS: count ref"]
    lines += [f"{n}   {w}" for w, n in _by_count(dels)]
    lines += ["", "INSERTIONS: count hyp"]
    lines += [f"{n}   {w}" for w, n in _by_count(ins)]
    lines += ["", "PER-WORD STATS: word  corr tot_errs count_in_ref count_in_hyp"]
    word_rows = []
    for w, (corr, ref_sub, hyp_sub, n_ins, n_del) in per_word.items():
        tot = ref_sub + hyp_sub + n_ins + n_del
        word_rows.append((tot, w, f"{w}   {corr} {tot} {corr + ref_sub + n_del} {corr + hyp_sub + n_ins}"))
    lines += [row for _, _, row in sorted(word_rows, key=lambda t: (-t[0], t[1]))]
    f.write("\n".join(lines) + "\n")


# --------------------------------------------------------------------------- summary table
@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """Exclusive lock on ``folder`` (parallel decode jobs share one summary); no lock file is left."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no locking
        yield
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def read_summary(path: Union[str, Path]) -> list[dict[str, str]]:
    """Rows of a ``wer-summary.tsv`` as dicts keyed by ``SUMMARY_COLUMNS``; [] when missing."""
    path = Path(path)
    if not path.exists():
        return []
    lines = [ln for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
    if not lines or tuple(lines[0].split("\t")) != SUMMARY_COLUMNS:
        raise SpeechkdError(f"{path}: not a WER summary (expected header {' '.join(SUMMARY_COLUMNS)})")
    rows = []
    for n, ln in enumerate(lines[1:], start=2):
        cells = ln.split("\t")
        if len(cells) != len(SUMMARY_COLUMNS):
            raise SpeechkdError(f"{path}:{n}: expected {len(SUMMARY_COLUMNS)} columns, got {len(cells)}")
        rows.append(dict(zip(SUMMARY_COLUMNS, cells)))
    return rows


def summary_markdown(rows: Sequence[dict[str, str]], sets: Optional[Sequence[str]] = None) -> str:
    """A markdown WER table from ``wer-summary.tsv`` rows: one row per tag, one column per set.

    ``sets`` fixes the columns (default: order of first appearance); a missing cell is ``-``, and a tag with
    no result in any of ``sets`` (e.g. train-label scores in a test table) gets no row.
    """
    if sets:
        rows = [r for r in rows if r["test_set"] in sets]
    if not rows:
        raise SpeechkdError(f"no WER rows to tabulate{f' for sets {list(sets)}' if sets else ''}")
    sets = list(sets) if sets else list(dict.fromkeys(r["test_set"] for r in rows))
    tags = list(dict.fromkeys(r["tag"] for r in rows))
    wer = {(r["tag"], r["test_set"]): r["WER"] for r in rows}
    lines = ["| decoding | " + " | ".join(sets) + " |", "|---|" + "---|" * len(sets)]
    for tag in tags:
        lines.append(f"| {tag or '-'} | " + " | ".join(wer.get((tag, s), "-") for s in sets) + " |")
    return "\n".join(lines) + "\n"


def update_summary(path: Union[str, Path], test_set: str, tag: str, stats: WerStats) -> None:
    """Add or replace the (test_set, tag) row of the summary table at ``path``."""
    path = Path(path)
    new = dict(
        zip(
            SUMMARY_COLUMNS,
            (test_set, tag, _fmt_rate(stats.wer), _fmt_rate(stats.cer), str(stats.ins), str(stats.dels),
             str(stats.subs), str(stats.ref_words), str(stats.num_utts)),
        )
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    with _locked(path.parent):
        rows = read_summary(path)
        keys = [(r["test_set"], r["tag"]) for r in rows]
        if (test_set, tag) in keys:
            rows[keys.index((test_set, tag))] = new
        else:
            rows.append(new)
        body = ["\t".join(SUMMARY_COLUMNS)] + ["\t".join(r[c] for c in SUMMARY_COLUMNS) for r in rows]
        _write_text(path, "\n".join(body) + "\n")


# --------------------------------------------------------------------------- readers
def _parse_words(value: str, where: str) -> list[str]:
    value = value.strip()
    if not value.startswith("["):
        return value.split()
    try:
        words = ast.literal_eval(value)
    except (ValueError, SyntaxError) as e:
        raise SpeechkdError(f"{where}: cannot parse word list {value[:60]!r}: {e}") from None
    if not isinstance(words, list) or not all(isinstance(w, str) for w in words):
        raise SpeechkdError(f"{where}: expected a list of words, got {value[:60]!r}")
    return _words(words)


def read_recogs(path: Union[str, Path]) -> list[tuple[str, list[str], list[str]]]:
    """Read a ``recogs-*.txt`` file (``cut_id:\\tref=[...]`` / ``cut_id:\\thyp=[...]`` lines).

    Returns [(cut_id, ref_words, hyp_words)] in file order. Every cut needs exactly one ref and
    one hyp line; anything else is a SpeechkdError naming the file and line.
    """
    path = Path(path)
    if not path.is_file():
        raise SpeechkdError(f"recogs file not found: {path}")
    found: dict[str, dict[str, list[str]]] = {}
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        cut_id, sep, rest = line.partition(":\t")
        side, eq, value = rest.partition("=")
        where = f"{path}:{n}"
        if not sep or not eq or side not in ("ref", "hyp"):
            raise SpeechkdError(f"{where}: expected '<cut_id>:\\tref=[...]' or '<cut_id>:\\thyp=[...]'")
        entry = found.setdefault(cut_id, {})
        if side in entry:
            raise SpeechkdError(f"{where}: second {side} line for cut {cut_id!r}")
        entry[side] = _parse_words(value, where)
    missing = [c for c, e in found.items() if len(e) != 2]
    if missing:
        raise SpeechkdError(f"{path}: cuts without both a ref and a hyp line, e.g. {missing[:3]}")
    if not found:
        raise SpeechkdError(f"{path}: no recognition results")
    return [(c, e["ref"], e["hyp"]) for c, e in found.items()]


def read_trn(path: Union[str, Path]) -> dict[str, list[str]]:
    """Read an sclite trn file (``TEXT (utt-id)`` per line) into {utt_id: words}."""
    path = Path(path)
    if not path.is_file():
        raise SpeechkdError(f"trn file not found: {path}")
    out: dict[str, list[str]] = {}
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        m = _TRN_LINE.match(line)
        if not m or not m.group(2):
            raise SpeechkdError(f"{path}:{n}: expected 'TEXT (utt-id)'")
        if m.group(2) in out:
            raise SpeechkdError(f"{path}:{n}: duplicate utterance id {m.group(2)!r}")
        out[m.group(2)] = m.group(1).split()
    return out


def pair_trn(ref_path: Union[str, Path], hyp_path: Union[str, Path]) -> list[tuple[str, list[str], list[str]]]:
    """Join a ref and a hyp trn file on utterance id; ids present on one side only are an error."""
    refs, hyps = read_trn(ref_path), read_trn(hyp_path)
    only_ref = sorted(set(refs) - set(hyps))
    only_hyp = sorted(set(hyps) - set(refs))
    if only_ref or only_hyp:
        raise SpeechkdError(
            f"utterance ids differ between {ref_path} and {hyp_path}: "
            f"{len(only_ref)} only in ref (e.g. {only_ref[:3]}), {len(only_hyp)} only in hyp (e.g. {only_hyp[:3]})"
        )
    return [(u, refs[u], hyps[u]) for u in refs]


def align_decoding(
    decode_dir: Union[str, Path], test_set: str, tag: str = ""
) -> tuple[list[tuple[str, list[str], list[str]]], list[list[Pair]]]:
    """A decode dir's ``ref-/hyp-<set>[-<tag>].trn`` joined on utterance id (sorted) and word-aligned.

    Returns ([(utt_id, ref words, hyp words)], [the alignment of each utterance as (ref, hyp) word pairs]).
    """
    decode_dir = Path(decode_dir)
    sfx = result_suffix(test_set, tag)
    pairs = sorted(pair_trn(decode_dir / f"ref-{sfx}.trn", decode_dir / f"hyp-{sfx}.trn"))
    return pairs, align_words([r for _, r, _ in pairs], [h for _, _, h in pairs])
