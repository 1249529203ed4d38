"""LibriSpeech-layout corpus -> lhotse manifests, with every bad input counted and reported.

Input layout (one directory per split, e.g. ``train-clean-100``)::

    <corpus_dir>/<part>/<spk>/<chapter>/<spk>-<chapter>-<utt>.flac
    <corpus_dir>/<part>/<spk>/<chapter>/<spk>-<chapter>.trans.txt     # lines "UTT-ID TEXT"

Output (see docs/INTERFACES.md)::

    <output_dir>/librispeech_recordings_<part>.jsonl.gz    # lhotse RecordingSet
    <output_dir>/librispeech_supervisions_<part>.jsonl.gz  # lhotse SupervisionSet
    <output_dir>/prepare-report-<part>.tsv                 # every skipped input: reason, utt id, path, detail

Unlike lhotse's own recipe, a bad input never stops the run and is never dropped silently: a transcript
line without audio, audio without a transcript line, unreadable audio, an empty transcript, a wrong
sampling rate, a non-mono file, an empty file or a transcript line that is not UTF-8 is skipped,
logged with its file name, counted in the returned :class:`PrepareReport` and listed in the TSV. An
utterance id that does not match its transcript file is skipped with any invisible character in it
named (e.g. a byte-order mark, U+FEFF). A part with no usable utterance is an error.

Transcripts are LibriSpeech style (upper-case words): a line with lower-case letters is upper-cased,
not skipped, and counted (``PrepareReport.case_normalised``, logged and printed by the CLI), so that a
lower-case corpus trains the same tokens and scores the same as an upper-case one. A byte-order mark at
the start of a ``trans.txt`` is an encoding marker and is dropped.

Only audio headers are read (``lhotse.Recording.from_file``); a file whose header is fine but whose
body is truncated is found later, when features are computed (:mod:`speechkd.data.features`).
"""

from __future__ import annotations

import codecs
import concurrent.futures
import dataclasses
import enum
import logging
import os
import unicodedata
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Iterator, Optional, Sequence, Union

from speechkd.errors import SpeechkdError
from speechkd.utils.atomic import atomic_to_file

if TYPE_CHECKING:  # lhotse is imported lazily so that this module stays light to import
    from lhotse import Recording, RecordingSet, SupervisionSet

log = logging.getLogger(__name__)

Pathlike = Union[str, Path]

MANIFEST_PREFIX = "librispeech"
AUDIO_SUFFIX = ".flac"
TRANS_SUFFIX = ".trans.txt"
LANGUAGE = "English"
REPORT_COLUMNS = ("reason", "utt_id", "path", "detail")
MAX_DETAIL_CHARS = 500  # longest "detail" cell of the report (audio backends write long errors)


class SkipReason(str, enum.Enum):
    """Why an input was left out of the manifests (the ``reason`` column of the report TSV)."""

    MISSING_AUDIO = "missing_audio"  # transcript line, no audio file
    MISSING_TRANSCRIPT = "missing_transcript"  # audio file, no transcript line
    UNREADABLE_AUDIO = "unreadable_audio"  # header cannot be read (corrupt/garbage file)
    EMPTY_TRANSCRIPT = "empty_transcript"  # "UTT-ID" with no words
    WRONG_SAMPLE_RATE = "wrong_sample_rate"
    NOT_MONO = "not_mono"
    EMPTY_AUDIO = "empty_audio"  # zero samples
    BAD_UTTERANCE_ID = "bad_utterance_id"  # id not "<spk>-<chapter>-<n>" of its transcript file
    DUPLICATE_UTTERANCE = "duplicate_utterance"  # second line with the same id
    NOT_UTF8 = "not_utf8"  # transcript line that is not valid UTF-8
    NO_FEATURES = "no_features"  # fbank stage: lhotse could not load the audio (speechkd.data.features)


@dataclasses.dataclass(frozen=True)
class SkippedInput:
    """One input left out of the manifests."""

    reason: SkipReason
    utt_id: str
    path: str
    detail: str = ""


@dataclasses.dataclass
class PrepareReport:
    """What :func:`prepare_librispeech` did for one part.

    ``reused`` is True when the manifests already existed and were not rebuilt; then ``skipped`` is
    empty (the earlier run's TSV still lists them) and the counts are read from the manifests.
    ``case_normalised`` counts the kept transcripts that had lower-case letters and were upper-cased.
    """

    part: str
    num_utterances: int
    num_speakers: int
    duration_seconds: float
    skipped: list[SkippedInput] = dataclasses.field(default_factory=list)
    case_normalised: int = 0
    reused: bool = False
    recordings_path: Optional[Path] = None
    supervisions_path: Optional[Path] = None
    report_path: Optional[Path] = None

    @property
    def skipped_by_reason(self) -> dict[str, int]:
        return dict(Counter(s.reason.value for s in self.skipped))

    @property
    def hours(self) -> float:
        return self.duration_seconds / 3600.0


def manifest_paths(output_dir: Pathlike, part: str) -> tuple[Path, Path]:
    """``(recordings, supervisions)`` manifest paths for ``part`` in ``output_dir``."""
    output_dir = Path(output_dir)
    return (
        output_dir / f"{MANIFEST_PREFIX}_recordings_{part}.jsonl.gz",
        output_dir / f"{MANIFEST_PREFIX}_supervisions_{part}.jsonl.gz",
    )


def report_path(output_dir: Pathlike, part: str) -> Path:
    return Path(output_dir) / f"prepare-report-{part}.tsv"


def detect_parts(corpus_dir: Pathlike) -> list[str]:
    """Split directories of ``corpus_dir``: sub-directories holding ``<spk>/<chapter>/*.trans.txt``."""
    corpus_dir = Path(corpus_dir)
    parts = []
    for sub in sorted(corpus_dir.iterdir()):
        if sub.is_dir() and not sub.name.startswith("."):
            if next(sub.glob(f"*/*/*{TRANS_SUFFIX}"), None) is not None:
                parts.append(sub.name)
    return parts


def prepare_librispeech(
    corpus_dir: Pathlike,
    output_dir: Pathlike,
    parts: Optional[Sequence[str]] = None,
    num_jobs: int = 1,
    sampling_rate: int = 16000,
    overwrite: bool = False,
) -> dict[str, PrepareReport]:
    """Write lhotse recording/supervision manifests for each part of a LibriSpeech-layout corpus.

    Args:
        corpus_dir: the directory holding the split directories (e.g. ``download/LibriSpeech``).
        output_dir: where manifests and ``prepare-report-<part>.tsv`` go (created if needed).
        parts: split names; None detects every split directory of ``corpus_dir``.
        num_jobs: threads reading audio headers.
        sampling_rate: the only accepted sampling rate; other files are skipped.
        overwrite: rebuild parts whose manifests already exist (otherwise they are reused).

    Returns:
        part -> :class:`PrepareReport`.

    Raises:
        SpeechkdError: missing corpus dir or part dir, no parts found, or a part with no usable
            utterance.
    """
    corpus_dir = Path(corpus_dir)
    if not corpus_dir.is_dir():
        raise SpeechkdError(f"corpus directory not found: {corpus_dir}")
    corpus_dir = Path(os.path.abspath(corpus_dir))  # absolute audio paths: the manifests work from any directory
    if num_jobs < 1:
        raise SpeechkdError(f"num_jobs must be >= 1, got {num_jobs}")
    if parts is None:
        parts = detect_parts(corpus_dir)
        if not parts:
            raise SpeechkdError(
                f"no LibriSpeech-layout split found in {corpus_dir} (expected <part>/<spk>/<chapter>/*{TRANS_SUFFIX})"
            )
        log.info("Detected parts in %s: %s", corpus_dir, " ".join(parts))
    missing = [p for p in parts if not (corpus_dir / p).is_dir()]
    if missing:
        raise SpeechkdError(f"part directory not found: {', '.join(str(corpus_dir / p) for p in missing)}")
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    reports = {}
    for part in parts:
        rec_path, sup_path = manifest_paths(output_dir, part)
        if rec_path.is_file() and sup_path.is_file() and not overwrite:
            log.info("Part %s already prepared (%s exists) - skipping", part, sup_path)
            reports[part] = _report_from_existing(part, rec_path, sup_path, report_path(output_dir, part))
            continue
        reports[part] = _prepare_part(corpus_dir / part, part, output_dir, num_jobs, sampling_rate)
    return reports


# --------------------------------------------------------------------------------------------------
# One part


@dataclasses.dataclass(frozen=True)
class _Utterance:
    utt_id: str
    speaker: str
    text: str
    audio_path: Path
    case_normalised: bool = False


def _prepare_part(part_dir: Path, part: str, output_dir: Path, num_jobs: int, sampling_rate: int) -> PrepareReport:
    log.info("Preparing part %s from %s", part, part_dir)
    utterances, listed, skipped = _read_transcripts(part_dir)
    utterances, case_normalised = _upper_case(utterances)
    if case_normalised:
        log.warning(
            "%s: %d of %d transcripts had lower-case letters; upper-cased them (LibriSpeech style)",
            part,
            case_normalised,
            len(utterances),
        )
    skipped += _find_untranscribed_audio(part_dir, listed)
    recordings, header_skips = _read_headers(utterances, num_jobs, sampling_rate)
    skipped += header_skips
    tsv = report_path(output_dir, part)
    write_report(tsv, skipped)
    for s in skipped:
        log.warning("%s: skipped %s (%s) %s", part, s.path, s.reason.value, s.detail)
    kept = [u for u in utterances if u.utt_id in recordings]
    if not kept:
        raise SpeechkdError(
            f"part {part} ({part_dir}) has no usable utterance: {len(skipped)} input(s) skipped, see {tsv}"
        )
    rec_set, sup_set = _build_manifests(kept, recordings)
    rec_path, sup_path = manifest_paths(output_dir, part)
    atomic_to_file(sup_set, sup_path)
    atomic_to_file(rec_set, rec_path)  # written last: its presence marks the part done
    report = PrepareReport(
        part=part,
        num_utterances=len(sup_set),
        num_speakers=len({u.speaker for u in kept}),
        duration_seconds=sum(r.duration for r in rec_set),
        skipped=skipped,
        case_normalised=sum(u.case_normalised for u in kept),
        recordings_path=rec_path,
        supervisions_path=sup_path,
        report_path=tsv,
    )
    log.info(
        "Part %s: %d utterances, %d speakers, %.3f h; %d skipped %s (listed in %s)",
        part,
        report.num_utterances,
        report.num_speakers,
        report.hours,
        len(skipped),
        report.skipped_by_reason,
        tsv,
    )
    return report


def _read_transcripts(part_dir: Path) -> tuple[list[_Utterance], set[Path], list[SkippedInput]]:
    """Parse every ``*.trans.txt`` of the part.

    Returns the usable utterances, the audio paths named by any transcript line (usable or not, so
    that a file whose line was skipped is not reported twice), and the skipped lines: without audio,
    with no words, with an id not matching their file, repeated, or not valid UTF-8.
    """
    utterances: list[_Utterance] = []
    listed: set[Path] = set()
    skipped: list[SkippedInput] = []
    seen: set[str] = set()
    for trans in sorted(part_dir.glob(f"*/*/*{TRANS_SUFFIX}")):
        stem = trans.name[: -len(TRANS_SUFFIX)]  # "<spk>-<chapter>"
        for lineno, line, encoding_error in _transcript_lines(trans):
            fields = line.strip().split(maxsplit=1)
            if not fields:
                continue  # blank line: nothing to skip
            utt_id = fields[0]
            where = f"{trans}:{lineno}"
            audio = trans.parent / f"{utt_id}{AUDIO_SUFFIX}"
            listed.add(audio)
            if encoding_error:
                skipped.append(SkippedInput(SkipReason.NOT_UTF8, utt_id, where, encoding_error))
                continue
            if utt_id.rsplit("-", 1)[0] != stem:
                invisible = _invisible_characters(utt_id)
                # the audio of an id broken only by invisible characters is named by this line, too
                listed.add(trans.parent / f"{''.join(c for c in utt_id if c not in invisible)}{AUDIO_SUFFIX}")
                skipped.append(
                    SkippedInput(SkipReason.BAD_UTTERANCE_ID, utt_id, where, _bad_id_detail(stem, invisible))
                )
                continue
            if utt_id in seen:
                skipped.append(SkippedInput(SkipReason.DUPLICATE_UTTERANCE, utt_id, where))
                continue
            seen.add(utt_id)
            text = fields[1].strip() if len(fields) > 1 else ""
            if not text:
                skipped.append(SkippedInput(SkipReason.EMPTY_TRANSCRIPT, utt_id, where))
            elif not audio.is_file():
                skipped.append(SkippedInput(SkipReason.MISSING_AUDIO, utt_id, str(audio), f"listed in {where}"))
            else:
                utterances.append(_Utterance(utt_id, stem.split("-")[0], text, audio))
    return utterances, listed, skipped


def _transcript_lines(trans: Path) -> Iterator[tuple[int, str, str]]:
    """``(line number, text, encoding error)`` of each line of a ``trans.txt``.

    A line that is not valid UTF-8 comes back decoded with replacement characters (so that its
    utterance id can still be named) and a one-line description of the first bad byte; the other
    lines are unaffected. A UTF-8 byte-order mark at the start of the file is dropped.
    """
    data = trans.read_bytes()
    if data.startswith(codecs.BOM_UTF8):
        log.info("%s starts with a UTF-8 byte-order mark; ignoring it", trans)
        data = data[len(codecs.BOM_UTF8) :]
    for lineno, raw in enumerate(data.splitlines(), start=1):
        try:
            yield lineno, raw.decode("utf-8"), ""
        except UnicodeDecodeError as e:
            bad = raw[e.start : e.end].hex(" ")
            error = f"not UTF-8: byte(s) {bad} at column {e.start + 1} (re-encode the file as UTF-8)"
            yield lineno, raw.decode("utf-8", errors="replace"), error


def _invisible_characters(text: str) -> list[str]:
    """The distinct format/control/unassigned/space characters of ``text`` (BOM, zero-width space, ...)."""
    return [c for c in dict.fromkeys(text) if unicodedata.category(c) in ("Cf", "Cc", "Co", "Cn", "Zs")]


def _bad_id_detail(stem: str, invisible: list[str]) -> str:
    """``expected <stem>-<n>``, naming the invisible characters found in the id."""
    detail = f"expected {stem}-<n>"
    if invisible:
        named = ", ".join(f"U+{ord(c):04X} ({unicodedata.name(c, 'unnamed')})" for c in invisible)
        detail += f"; the id contains invisible character(s) {named}"
    return detail


def _upper_case(utterances: list[_Utterance]) -> tuple[list[_Utterance], int]:
    """Upper-case transcripts that have lower-case letters; return them and how many changed."""
    out = []
    for u in utterances:
        upper = u.text.upper()
        out.append(u if upper == u.text else dataclasses.replace(u, text=upper, case_normalised=True))
    return out, sum(u.case_normalised for u in out)


def _find_untranscribed_audio(part_dir: Path, listed: set[Path]) -> list[SkippedInput]:
    """Audio files that no transcript line names."""
    return [
        SkippedInput(SkipReason.MISSING_TRANSCRIPT, audio.stem, str(audio))
        for audio in sorted(part_dir.glob(f"*/*/*{AUDIO_SUFFIX}"))
        if audio not in listed
    ]


def _read_headers(
    utterances: list[_Utterance], num_jobs: int, sampling_rate: int
) -> tuple[dict[str, "Recording"], list[SkippedInput]]:
    """Read audio headers in ``num_jobs`` threads; return usable recordings by utt id and skips."""
    from tqdm.auto import tqdm

    recordings: dict[str, "Recording"] = {}
    skipped: list[SkippedInput] = []
    with concurrent.futures.ThreadPoolExecutor(num_jobs) as ex:
        results = ex.map(lambda u: _read_one_header(u, sampling_rate), utterances)
        for utt, res in tqdm(zip(utterances, results), total=len(utterances), desc="Reading audio headers"):
            if isinstance(res, SkippedInput):
                skipped.append(res)
            else:
                recordings[utt.utt_id] = res
    return recordings, skipped


def _read_one_header(utt: _Utterance, sampling_rate: int) -> Union["Recording", SkippedInput]:
    from lhotse import Recording

    path = str(utt.audio_path)
    try:
        rec = Recording.from_file(utt.audio_path, recording_id=utt.utt_id)
    except Exception as e:  # noqa: BLE001 - audio backends raise many types for corrupt files
        return SkippedInput(SkipReason.UNREADABLE_AUDIO, utt.utt_id, path, _one_line(f"{type(e).__name__}: {e}"))
    if rec.sampling_rate != sampling_rate:
        return SkippedInput(
            SkipReason.WRONG_SAMPLE_RATE, utt.utt_id, path, f"{rec.sampling_rate} Hz, expected {sampling_rate} Hz"
        )
    if rec.num_channels != 1:
        return SkippedInput(SkipReason.NOT_MONO, utt.utt_id, path, f"{rec.num_channels} channels")
    if rec.num_samples == 0:
        return SkippedInput(SkipReason.EMPTY_AUDIO, utt.utt_id, path)
    return rec


def _one_line(message: str) -> str:
    """A multi-line backend error as one TSV-safe line, at most MAX_DETAIL_CHARS long."""
    text = " | ".join(line.strip() for line in message.splitlines() if line.strip())
    return text if len(text) <= MAX_DETAIL_CHARS else text[: MAX_DETAIL_CHARS - 3] + "..."


def _build_manifests(
    utterances: list[_Utterance], recordings: dict[str, "Recording"]
) -> tuple["RecordingSet", "SupervisionSet"]:
    from lhotse import RecordingSet, SupervisionSegment, SupervisionSet
    from lhotse.qa import validate_recordings_and_supervisions

    segments = []
    for u in utterances:
        rec = recordings[u.utt_id]
        segments.append(
            SupervisionSegment(
                id=u.utt_id,
                recording_id=u.utt_id,
                start=0.0,
                duration=rec.duration,
                channel=0,
                text=u.text,
                language=LANGUAGE,
                speaker=u.speaker,
            )
        )
    rec_set = RecordingSet.from_recordings(recordings[u.utt_id] for u in utterances)
    sup_set = SupervisionSet.from_segments(segments)
    try:
        validate_recordings_and_supervisions(rec_set, sup_set)
    except AssertionError as e:  # lhotse's validators assert
        raise SpeechkdError(
            f"lhotse rejected the manifests built from {utterances[0].audio_path.parents[2]}: {e}"
        ) from e
    return rec_set, sup_set


def write_report(path: Path, skipped: Iterable[SkippedInput]) -> None:
    """Write a report TSV (``REPORT_COLUMNS``, one row per skipped input); :func:`read_report` reads it."""
    with open(path, "w", encoding="utf-8") as f:
        f.write("\t".join(REPORT_COLUMNS) + "\n")
        for s in skipped:
            row = (s.reason.value, s.utt_id, s.path, s.detail)
            f.write("\t".join(x.replace("\t", " ").replace("\n", " ") for x in row) + "\n")


def read_report(path: Pathlike) -> list[SkippedInput]:
    """Read a ``prepare-report-<part>.tsv`` back."""
    path = Path(path)
    if not path.is_file():
        raise SpeechkdError(f"preparation report not found: {path}")
    out = []
    with open(path, encoding="utf-8") as f:
        header = f.readline().rstrip("\n").split("\t")
        if tuple(header) != REPORT_COLUMNS:
            raise SpeechkdError(f"{path} is not a preparation report (header {header})")
        for line in f:
            reason, utt_id, p, detail = line.rstrip("\n").split("\t")
            out.append(SkippedInput(SkipReason(reason), utt_id, p, detail))
    return out


def _report_from_existing(part: str, rec_path: Path, sup_path: Path, tsv: Path) -> PrepareReport:
    from lhotse import load_manifest_lazy

    speakers: set[str] = set()
    num_utts = 0
    duration = 0.0
    for sup in load_manifest_lazy(sup_path):
        speakers.add(sup.speaker)
        num_utts += 1
        duration += sup.duration
    return PrepareReport(
        part=part,
        num_utterances=num_utts,
        num_speakers=len(speakers),
        duration_seconds=duration,
        reused=True,
        recordings_path=rec_path,
        supervisions_path=sup_path,
        report_path=tsv if tsv.is_file() else None,
    )
