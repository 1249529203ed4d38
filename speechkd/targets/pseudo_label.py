"""Whisper pseudo-labelling of a lhotse CutSet: sharded, atomic per shard, resumable.

Output directory layout (``n`` = number of shards, ``k`` = 0 .. n-1)::

    shard-<k>-of-<n>.jsonl.gz   labelled cuts of shard k (written to a temporary name, then renamed)
    shard-<k>-of-<n>.done       JSON: the run settings and the shard's counts; written after the shard
    cuts.jsonl.gz               all shards concatenated in input order (written once every shard is done)
    metadata.yaml               teacher (name, path, backend, beam, weights sha256), counts, skip reasons
    skipped.tsv                 every skipped cut: cut_id, shard, reason, detail

Sharding is by contiguous ranges of the input order: shard k holds input cuts ``[k*N//n, (k+1)*N//n)``,
so concatenating the shards in order gives the input order back (minus skipped cuts). Which shards this
process labels: ``shard_id`` when given; else, under torchrun (``WORLD_SIZE``/``RANK`` set), the shards
``k`` with ``k % WORLD_SIZE == RANK``; else all of them. A shard whose ``.done`` marker and file exist is
not labelled again, so re-running after a crash resumes at the first unfinished shard; a crash leaves at
most a temporary file (overwritten by the next run), never a partial shard. The ``.done`` marker holds the
run settings (input path and size, number of shards, teacher identity, maximum duration); a re-run with
different settings into the same directory is an error instead of a silent mix of labels. Output files
are gzip streams with a fixed header (no time stamp), so a resumed run writes the same bytes as an
uninterrupted one.

Each labelled cut gets ONE supervision (the convention of :mod:`speechkd.targets.label_filters`):

* ``text``: the teacher's transcript normalised with
  :func:`speechkd.text.normalize.normalize_librispeech` (LibriSpeech style: upper-case words);
* ``custom["reference"]``: the cut's original transcript (kept from an earlier ``reference`` when the
  input was itself pseudo-labelled; ``None`` for unlabelled input; the space-joined texts when the cut
  had several supervisions, which are then replaced by one spanning the cut -- counted);
* ``custom["teacher"]``, ``custom["avg_logprob"]``, ``custom["compression_ratio"]``,
  ``custom["no_speech_prob"]``: see :mod:`speechkd.teachers.whisper_asr`; ``custom["teacher_text"]``
  keeps the teacher's raw (unnormalised) text. Any previous word alignment is dropped.

The whole cut is transcribed. Skipped (counted per reason, logged with the cut id, listed in
``skipped.tsv``): cuts longer than ``max_duration`` (Whisper's 30 s window; segmenting them is a possible
improvement), audio that cannot be read, empty audio, multi-channel audio.
"""

from __future__ import annotations

import gzip
import io
import itertools
import json
import logging
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Optional, Sequence, Union

import numpy as np

from speechkd.errors import SpeechkdError
from speechkd.teachers.whisper_asr import MAX_CLIP_SECONDS, SAMPLE_RATE, Transcript, WhisperTeacherASR
from speechkd.text.normalize import normalize_librispeech
from speechkd.utils.atomic import atomic_write_text, stale_temporaries, temporary_path

logger = logging.getLogger(__name__)

MERGED_FILE = "cuts.jsonl.gz"
# Default shard size: ~7 h of LibriSpeech audio, tens of MB of labelled cuts in memory; a crash loses at most
# one such shard per process.
MAX_CUTS_PER_SHARD = 2000
METADATA_FILE = "metadata.yaml"
SKIPPED_FILE = "skipped.tsv"
SHARD_GLOB = "shard-*-of-*.jsonl.gz"

SKIP_TOO_LONG = "too_long"
SKIP_UNREADABLE = "unreadable"
SKIP_EMPTY_AUDIO = "empty_audio"
SKIP_MULTI_CHANNEL = "multi_channel"
SKIP_REASONS = (SKIP_TOO_LONG, SKIP_UNREADABLE, SKIP_EMPTY_AUDIO, SKIP_MULTI_CHANNEL)

TEXT_NORMALIZER = "speechkd.text.normalize.normalize_librispeech"
SECONDS_PER_HOUR = 3600.0
# torchrun's environment variables
ENV_WORLD_SIZE = "WORLD_SIZE"
ENV_RANK = "RANK"
# Teacher settings that do not change the labels (left out of the resume check).
_VOLATILE_TEACHER_KEYS = ("weights_file",)


# --------------------------------------------------------------------------------------- sharding
def shard_range(num_items: int, num_shards: int, shard_id: int) -> range:
    """Input indexes of shard ``shard_id``: ``[k*N//n, (k+1)*N//n)`` (contiguous, sizes differ by <= 1)."""
    if num_shards < 1 or not 0 <= shard_id < num_shards:
        raise SpeechkdError(f"shard id {shard_id} is not in [0, {num_shards}) (num_shards={num_shards})")
    return range(shard_id * num_items // num_shards, (shard_id + 1) * num_items // num_shards)


def shards_to_run(
    num_shards: int, shard_id: Optional[int] = None, env: Optional[Mapping[str, str]] = None
) -> list[int]:
    """The shards this process labels: ``[shard_id]``, the torchrun rank's share, or all of them."""
    env = os.environ if env is None else env
    if shard_id is not None:
        shard_range(0, num_shards, shard_id)  # validates
        return [shard_id]
    world = int(env.get(ENV_WORLD_SIZE, "1"))
    rank = int(env.get(ENV_RANK, "0"))
    if world < 1 or not 0 <= rank < world:
        raise SpeechkdError(f"bad torchrun environment: {ENV_RANK}={rank}, {ENV_WORLD_SIZE}={world}")
    if world > num_shards:
        logger.warning("%d processes for %d shards: rank %d may have nothing to do", world, num_shards, rank)
    return [k for k in range(num_shards) if k % world == rank]


def default_num_shards(env: Optional[Mapping[str, str]] = None, num_cuts: int = 0) -> int:
    """Shards of at most :data:`MAX_CUTS_PER_SHARD` cuts (the unit held in memory and lost by a crash),
    at least one per torchrun process (``WORLD_SIZE``), rounded up to a multiple of ``WORLD_SIZE``."""
    env = os.environ if env is None else env
    world = max(1, int(env.get(ENV_WORLD_SIZE, "1")))
    by_size = max(1, -(-num_cuts // MAX_CUTS_PER_SHARD))
    return -(-max(by_size, world) // world) * world


def shard_path(output_dir: Union[str, Path], shard_id: int, num_shards: int) -> Path:
    return Path(output_dir) / f"shard-{shard_id}-of-{num_shards}.jsonl.gz"


def done_path(output_dir: Union[str, Path], shard_id: int, num_shards: int) -> Path:
    return Path(output_dir) / f"shard-{shard_id}-of-{num_shards}.done"


# --------------------------------------------------------------------------------------- files
def write_jsonl_gz_atomic(path: Union[str, Path], lines: Iterable[str]) -> int:
    """Write ``lines`` (JSON strings, no newline) to ``path`` as gzip with a fixed header; atomic rename.

    Returns the number of lines. (lhotse's writer stamps the gzip header with the time; this one writes
    the same bytes for the same content, which makes resumed and uninterrupted runs comparable.)
    """
    path = Path(path)
    tmp = temporary_path(path)
    count = 0
    try:
        with open(tmp, "wb") as raw:
            with gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz:
                with io.TextIOWrapper(gz, encoding="utf-8", newline="\n") as text:
                    for line in lines:
                        text.write(line + "\n")
                        count += 1
            raw.flush()
            os.fsync(raw.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return count


def write_skipped_tsv(path: Union[str, Path], skipped: Sequence[Mapping[str, str]]) -> None:
    """``cut_id, shard, reason, detail`` per skipped cut (tabs/newlines in values become spaces); atomic."""
    rows = ["cut_id\tshard\treason\tdetail"] + [
        "\t".join(str(s[c]).replace("\t", " ").replace("\n", " ") for c in ("cut_id", "shard", "reason", "detail"))
        for s in skipped
    ]
    atomic_write_text(path, "\n".join(rows) + "\n")


def _read_lines_gz(path: Path) -> Iterator[str]:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        for line in f:
            line = line.rstrip("\n")
            if line:
                yield line


def open_cuts(path: Union[str, Path]) -> Any:
    """A lhotse CutSet from ``path`` (lazy for JSONL manifests); SpeechkdError naming a bad file."""
    from lhotse import CutSet, load_manifest_lazy

    path = Path(path)
    if not path.is_file():
        raise SpeechkdError(f"input CutSet not found: {path}")
    try:
        cuts = load_manifest_lazy(path) or CutSet.from_file(path)
    except Exception as e:  # noqa: BLE001 - lhotse raises many types for a bad manifest
        raise SpeechkdError(f"{path}: cannot read it as a lhotse manifest ({type(e).__name__}: {e})") from None
    if cuts is None:  # lhotse's answer for a manifest without items
        raise SpeechkdError(f"input CutSet {path} is empty")
    if not isinstance(cuts, CutSet):
        raise SpeechkdError(f"{path}: is a {type(cuts).__name__}, not a CutSet")
    return cuts


# --------------------------------------------------------------------------------------- labels
def labelled_cut(cut: Any, transcript: Transcript, teacher_name: str) -> tuple[Any, bool]:
    """``cut`` with one supervision carrying the pseudo-label (module docstring); and whether it merged several."""
    from lhotse import SupervisionSegment
    from lhotse.utils import fastcopy

    sups = sorted(cut.supervisions, key=lambda s: s.start)
    custom: dict[str, Any] = dict(sups[0].custom or {}) if len(sups) == 1 else {}
    # An empty text is no reference: unlabelled audio (e.g. the real-speech pool) gets reference None.
    if len(sups) == 1:
        reference = custom["reference"] if "reference" in custom else (sups[0].text or None)
    elif sups:
        reference = " ".join(s.text for s in sups if s.text) or None
    else:
        reference = None
    custom.update(
        reference=reference,
        teacher=teacher_name,
        teacher_text=transcript.text_raw,
        avg_logprob=transcript.avg_logprob,
        compression_ratio=transcript.compression_ratio,
        no_speech_prob=transcript.no_speech_prob,
    )
    text = normalize_librispeech(transcript.text_raw)
    if len(sups) == 1:
        sup = fastcopy(sups[0], text=text, custom=custom, alignment=None)
    else:
        first = sups[0] if sups else None
        sup = SupervisionSegment(
            id=cut.id,
            recording_id=cut.recording_id,
            start=0.0,
            duration=cut.duration,
            channel=first.channel if first else cut.channel,
            text=text,
            language=first.language if first else None,
            speaker=first.speaker if first else None,
            gender=first.gender if first else None,
            custom=custom,
        )
    return fastcopy(cut, supervisions=[sup]), len(sups) > 1


def load_audio_16k(cut: Any, max_duration: float) -> tuple[Optional[np.ndarray], Optional[str], str]:
    """``(waveform (S,) float32 at 16 kHz, None, "")`` or ``(None, skip reason, detail)``."""
    if cut.duration > max_duration:
        return None, SKIP_TOO_LONG, f"{cut.duration:.2f} s > {max_duration:g} s"
    try:
        if cut.sampling_rate != SAMPLE_RATE:
            cut = cut.resample(SAMPLE_RATE)
        audio = np.asarray(cut.load_audio(), dtype=np.float32)
    except Exception as e:  # noqa: BLE001 - decoders raise many types; each failure is counted and logged
        return None, SKIP_UNREADABLE, f"{type(e).__name__}: {e}"
    if audio.ndim == 2 and audio.shape[0] != 1:
        return None, SKIP_MULTI_CHANNEL, f"{audio.shape[0]} channels"
    audio = audio.reshape(-1)
    if audio.size == 0:
        return None, SKIP_EMPTY_AUDIO, "0 samples"
    if audio.size > int(round(max_duration * SAMPLE_RATE)):
        return None, SKIP_TOO_LONG, f"{audio.size / SAMPLE_RATE:.2f} s of samples > {max_duration:g} s"
    return audio, None, ""


# --------------------------------------------------------------------------------------- shards
@dataclass
class ShardStats:
    """Counts of one shard (stored in its ``.done`` marker)."""

    shard_id: int
    num_shards: int
    num_input: int = 0
    num_labelled: int = 0
    input_seconds: float = 0.0
    labelled_seconds: float = 0.0
    merged_supervisions: int = 0
    elapsed_seconds: float = 0.0
    skipped: list[dict[str, str]] = field(default_factory=list)  # {"cut_id", "reason", "detail"}

    def skip_counts(self) -> dict[str, int]:
        return dict(Counter(s["reason"] for s in self.skipped))


class _Progress:
    """tqdm bar over audio hours with the labelling speed in audio-hours per hour (= x real time)."""

    def __init__(self, total_seconds: float, desc: str, enabled: bool) -> None:
        from tqdm import tqdm

        self.bar = tqdm(total=round(total_seconds / SECONDS_PER_HOUR, 4), unit="audio-h", desc=desc,
                        disable=not enabled, bar_format="{l_bar}{bar}| {n:.3f}/{total:.3f} audio-h [{elapsed}{postfix}]")
        self.start = time.monotonic()
        self.done_seconds = 0.0

    def update(self, seconds: float) -> None:
        self.done_seconds += seconds
        self.bar.update(seconds / SECONDS_PER_HOUR)
        elapsed = max(time.monotonic() - self.start, 1e-9)
        self.bar.set_postfix_str(f"{self.done_seconds / elapsed:.2f} audio-h/h")

    def close(self) -> None:
        self.bar.close()


def _batches(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def label_cuts(
    cuts: Sequence[Any],
    teacher: WhisperTeacherASR,
    stats: ShardStats,
    batch_size: int,
    max_duration: float,
    progress: bool = True,
) -> list[Any]:
    """Label ``cuts`` in batches of ``batch_size`` (after skipping bad ones); fills ``stats``."""
    out: list[Any] = []
    bar = _Progress(sum(c.duration for c in cuts), f"shard {stats.shard_id}/{stats.num_shards}", progress)
    try:
        for batch in _batches(cuts, batch_size):
            kept, audios = [], []
            for cut in batch:
                audio, reason, detail = load_audio_16k(cut, max_duration)
                if reason is not None:
                    logger.warning("skipping cut %s (%s: %s)", cut.id, reason, detail)
                    stats.skipped.append({"cut_id": cut.id, "reason": reason, "detail": detail})
                    continue
                kept.append(cut)
                audios.append(audio)
            transcripts = teacher.transcribe(audios) if audios else []
            if len(transcripts) != len(kept):
                raise SpeechkdError(f"teacher {teacher.name} returned {len(transcripts)} transcripts for {len(kept)} clips")
            for cut, tr in zip(kept, transcripts):
                new_cut, merged = labelled_cut(cut, tr, teacher.name)
                stats.merged_supervisions += int(merged)
                stats.labelled_seconds += cut.duration
                out.append(new_cut)
            bar.update(sum(c.duration for c in batch))
    finally:
        bar.close()
    stats.num_labelled = len(out)
    return out


def _read_done(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise SpeechkdError(f"{path}: unreadable shard marker ({e}); delete it to label that shard again") from None


def _check_settings(path: Path, found: Mapping[str, Any], expected: Mapping[str, Any]) -> None:
    diff = sorted(k for k in set(found) | set(expected) if found.get(k) != expected.get(k))
    if diff:
        details = "; ".join(f"{k}: {found.get(k)!r} there, {expected.get(k)!r} now" for k in diff)
        raise SpeechkdError(
            f"{path} was made with other settings ({details}); use a new output directory or delete the old shards"
        )


def shard_is_done(output_dir: Path, shard_id: int, num_shards: int, settings: Mapping[str, Any]) -> bool:
    """True when shard ``shard_id``'s file and ``.done`` marker exist and match ``settings``."""
    marker = done_path(output_dir, shard_id, num_shards)
    if not (marker.is_file() and shard_path(output_dir, shard_id, num_shards).is_file()):
        return False
    _check_settings(marker, _read_done(marker).get("settings", {}), settings)
    return True


def run_shard(
    cuts: Sequence[Any],
    teacher: WhisperTeacherASR,
    output_dir: Path,
    shard_id: int,
    num_shards: int,
    settings: Mapping[str, Any],
    batch_size: int,
    max_duration: float,
    progress: bool = True,
) -> ShardStats:
    """Label one shard's cuts; write the shard file, then its ``.done`` marker (both atomically)."""
    start = time.monotonic()
    target = shard_path(output_dir, shard_id, num_shards)
    for stale in stale_temporaries(target):  # left by a process killed while writing
        logger.info("removing %s (an interrupted earlier write)", stale)
        stale.unlink(missing_ok=True)
    stats = ShardStats(shard_id=shard_id, num_shards=num_shards, num_input=len(cuts))
    stats.input_seconds = float(sum(c.duration for c in cuts))
    if not cuts:
        logger.warning("shard %d of %d is empty (more shards than cuts?): writing an empty shard", shard_id, num_shards)
    labelled = label_cuts(cuts, teacher, stats, batch_size, max_duration, progress)
    write_jsonl_gz_atomic(target, (json.dumps(c.to_dict()) for c in labelled))
    stats.elapsed_seconds = time.monotonic() - start
    marker = {"settings": dict(settings), "stats": stats.__dict__}
    atomic_write_text(done_path(output_dir, shard_id, num_shards), json.dumps(marker, indent=1) + "\n")
    speed = stats.input_seconds / max(stats.elapsed_seconds, 1e-9)
    logger.info(
        "shard %d/%d: %d of %d cuts labelled, skipped %s, %.1f s of audio per second",
        shard_id, num_shards, stats.num_labelled, stats.num_input, stats.skip_counts() or "none", speed,
    )
    return stats


# --------------------------------------------------------------------------------------- merge
def merge_shards(output_dir: Union[str, Path], num_shards: int) -> Path:
    """Concatenate the finished shards in order into ``cuts.jsonl.gz``; write ``metadata.yaml`` and
    ``skipped.tsv``. SpeechkdError when a shard is missing or made with other settings."""
    import yaml

    output_dir = Path(output_dir)
    markers = []
    for k in range(num_shards):
        marker = done_path(output_dir, k, num_shards)
        if not marker.is_file() or not shard_path(output_dir, k, num_shards).is_file():
            raise SpeechkdError(f"cannot merge: shard {k} of {num_shards} in {output_dir} is not finished")
        markers.append(_read_done(marker))
    settings = markers[0]["settings"]
    for k, m in enumerate(markers):
        _check_settings(done_path(output_dir, k, num_shards), m["settings"], settings)
    lines = (line for k in range(num_shards) for line in _read_lines_gz(shard_path(output_dir, k, num_shards)))
    num_cuts = write_jsonl_gz_atomic(output_dir / MERGED_FILE, lines)
    stats = [m["stats"] for m in markers]
    skipped = [dict(s, shard=str(st["shard_id"])) for st in stats for s in st["skipped"]]
    write_skipped_tsv(output_dir / SKIPPED_FILE, skipped)
    meta = {
        "teacher": settings["teacher"],
        "input_cuts": settings["input"],
        "num_input_cuts": settings["num_input_cuts"],
        "num_shards": num_shards,
        "max_duration": settings["max_duration"],
        "num_labelled_cuts": num_cuts,
        "num_skipped_cuts": len(skipped),
        "skipped_by_reason": dict(Counter(s["reason"] for s in skipped)),
        "merged_supervisions": sum(st["merged_supervisions"] for st in stats),
        "input_hours": round(sum(st["input_seconds"] for st in stats) / SECONDS_PER_HOUR, 4),
        "labelled_hours": round(sum(st["labelled_seconds"] for st in stats) / SECONDS_PER_HOUR, 4),
        "labelling_seconds": round(sum(st["elapsed_seconds"] for st in stats), 1),
        "text_normalizer": TEXT_NORMALIZER,
        "fields": {
            "text": "pseudo-label, normalised",
            "custom": ["reference", "teacher", "teacher_text", "avg_logprob", "compression_ratio", "no_speech_prob"],
        },
    }
    atomic_write_text(output_dir / METADATA_FILE, yaml.safe_dump(meta, sort_keys=False))
    logger.info("merged %d shards into %s: %d cuts (%d skipped)", num_shards, output_dir / MERGED_FILE, num_cuts, len(skipped))
    return output_dir / MERGED_FILE


# --------------------------------------------------------------------------------------- driver
@dataclass
class PseudoLabelResult:
    """What one :func:`pseudo_label` call did."""

    shards_labelled: list[int]
    shards_already_done: list[int]
    merged: Optional[Path]
    stats: list[ShardStats]


def run_settings(
    cuts_path: Union[str, Path], num_cuts: int, num_shards: int, teacher: WhisperTeacherASR, max_duration: float
) -> dict[str, Any]:
    """Everything that changes the labels of a run (checked against the ``.done`` markers on resume)."""
    desc = {k: v for k, v in teacher.describe().items() if k not in _VOLATILE_TEACHER_KEYS}
    return {
        "input": str(Path(cuts_path).resolve()),
        "num_input_cuts": num_cuts,
        "num_shards": num_shards,
        "max_duration": max_duration,
        "teacher": desc,
    }


def _shards_in_one_pass(
    cuts: Iterable[Any], num_cuts: int, num_shards: int, wanted: Sequence[int]
) -> Iterator[tuple[int, list[Any]]]:
    """``(k, cuts of shard k)`` for the ``wanted`` shards in increasing order, from ONE pass over ``cuts``
    (cuts of other shards are skipped unparsed by the consumer's pace); only one shard is in memory."""
    it = iter(cuts)
    pos = 0
    for k in sorted(set(wanted)):
        rng = shard_range(num_cuts, num_shards, k)
        for _ in itertools.islice(it, rng.start - pos):
            pass
        yield k, list(itertools.islice(it, len(rng)))
        pos = rng.stop


def pseudo_label(
    cuts_path: Union[str, Path],
    output_dir: Union[str, Path],
    teacher: WhisperTeacherASR,
    batch_size: int = 8,
    num_shards: Optional[int] = None,
    shard_id: Optional[int] = None,
    max_duration: float = MAX_CLIP_SECONDS,
    merge: bool = True,
    progress: bool = True,
    speed_perturbed: bool = False,
) -> PseudoLabelResult:
    """Label the cuts of ``cuts_path`` with ``teacher`` into ``output_dir`` (see the module docstring).

    Args:
        num_shards: total number of shards (default: :func:`default_num_shards`, shards of at most
            ``MAX_CUTS_PER_SHARD`` cuts, a multiple of ``WORLD_SIZE``).
        speed_perturbed: also label the ``_sp<factor>`` copies (default: left out, lazily).
        shard_id: label only this shard (default: this torchrun rank's shards, or all).
        max_duration: longer cuts are skipped and counted (at most Whisper's 30 s).
        merge: write ``cuts.jsonl.gz`` + ``metadata.yaml`` once every shard is done.
    """
    if batch_size < 1:
        raise SpeechkdError(f"batch_size must be >= 1, got {batch_size}")
    if not 0 < max_duration <= MAX_CLIP_SECONDS:
        raise SpeechkdError(f"max_duration must be in (0, {MAX_CLIP_SECONDS:g}] s, got {max_duration}")
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    cuts = open_cuts(cuts_path)
    if not speed_perturbed:
        from speechkd.data.cutsets import drop_speed_perturbed

        cuts = drop_speed_perturbed(cuts)  # Whisper labels the original audio; copies share its transcript
    num_cuts = sum(1 for _ in cuts)
    if num_cuts == 0:
        raise SpeechkdError(f"input CutSet {cuts_path} is empty" + ("" if speed_perturbed else
                                                                     " (after leaving out speed-perturbed copies)"))
    num_shards = default_num_shards(num_cuts=num_cuts) if num_shards is None else num_shards
    todo = shards_to_run(num_shards, shard_id)
    settings = run_settings(cuts_path, num_cuts, num_shards, teacher, max_duration)
    result = PseudoLabelResult([], [], None, [])
    pending_here = []
    for k in todo:
        if shard_is_done(output_dir, k, num_shards, settings):
            logger.info("shard %d of %d already done: skipped", k, num_shards)
            result.shards_already_done.append(k)
        else:
            pending_here.append(k)
    for k, shard_cuts in _shards_in_one_pass(cuts, num_cuts, num_shards, pending_here):
        result.stats.append(
            run_shard(shard_cuts, teacher, output_dir, k, num_shards, settings, batch_size, max_duration, progress)
        )
        result.shards_labelled.append(k)
    pending = [k for k in range(num_shards) if not shard_is_done(output_dir, k, num_shards, settings)]
    if merge and not pending:
        result.merged = merge_shards(output_dir, num_shards)
    elif merge:
        logger.info("%d of %d shards still to do (%s): not merging yet", len(pending), num_shards, pending[:10])
    return result


def score_labels(cuts_path: Union[str, Path], out_dir: Union[str, Path], test_set: str, tag: str = "teacher") -> Any:
    """Score the pseudo-labels (``sup.text``) of ``cuts_path`` against ``custom['reference']``.

    Writes the usual result files (see :func:`speechkd.decoding.scoring.write_results`), in manifest
    order; a cut without a reference is an error naming it (scoring a subset silently would flatter the
    teacher). The manifest is read lazily and scored a chunk at a time: nothing per cut is held but its id.
    """
    from speechkd.decoding.scoring import write_results

    def rows() -> Iterator[tuple[str, str, str]]:
        for cut in open_cuts(cuts_path):
            for sup in cut.supervisions:
                ref = (sup.custom or {}).get("reference")
                if ref is None:
                    raise SpeechkdError(f"{cuts_path}: cut {cut.id} has no custom['reference'] to score against")
                yield cut.id, ref, sup.text or ""

    return write_results(rows(), out_dir, test_set, tag=tag, sort=False)
