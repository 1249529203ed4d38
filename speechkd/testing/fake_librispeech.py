"""A tiny synthetic corpus in the exact LibriSpeech layout, for tests and smoke recipes.

Example::

    info = make_fake_librispeech(tmp_path / "LibriSpeech", {"train-clean-5": (3, 2, 4), "dev-clean-2": (2, 1, 2)},
                                 bad_inputs=ALL_BAD_INPUTS)
    info.parts["train-clean-5"].num_utterances   # 24 (planted bad inputs are extra, never counted)
    info.parts["train-clean-5"].duration_seconds # exact sum of the usable files' durations
    info.planted                                 # what a preparation step must skip, and why

Layout written (the same as the real corpus)::

    <root>/<part>/<spk>/<chapter>/<spk>-<chapter>-<utt:04d>.flac
    <root>/<part>/<spk>/<chapter>/<spk>-<chapter>.trans.txt        # "UTT-ID UPPER CASE TEXT" lines

Audio is a few random tones plus a little noise (no speech), 16-bit FLAC. Speaker and chapter ids are
unique over the whole corpus (as in LibriSpeech, where splits share no speaker). Everything is drawn
from ``numpy.random.default_rng(seed)``: the same arguments give the same files.

Planted bad inputs (``bad_inputs``, names = :class:`speechkd.data.prepare.SkipReason` values) are
*extra* items added to the first chapter of ``bad_part`` (default: the first part):

- ``missing_audio``: a transcript line whose flac file does not exist;
- ``missing_transcript``: a flac file with no transcript line;
- ``unreadable_audio``: a ``.flac`` file of random garbage bytes, with a transcript line;
- ``empty_transcript``: a flac file whose transcript line has the id only;
- ``wrong_sample_rate``: a flac file at ``bad_sampling_rate`` Hz (8 kHz), with a transcript line;
- ``not_utf8``: a flac file whose transcript line holds a Latin-1 byte (not valid UTF-8).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Iterable, Optional, Union

import numpy as np
import soundfile as sf

from speechkd.data.prepare import AUDIO_SUFFIX, TRANS_SUFFIX, SkipReason

# The bad inputs this generator can plant (a subset of SkipReason).
ALL_BAD_INPUTS: tuple[SkipReason, ...] = (
    SkipReason.MISSING_AUDIO,
    SkipReason.MISSING_TRANSCRIPT,
    SkipReason.UNREADABLE_AUDIO,
    SkipReason.EMPTY_TRANSCRIPT,
    SkipReason.WRONG_SAMPLE_RATE,
    SkipReason.NOT_UTF8,
)

# Small upper-case vocabulary (with apostrophes, as in LibriSpeech transcripts).
WORDS: tuple[str, ...] = tuple(
    "THE A AND OF TO IN HE SHE IT WAS HAD HIS HER THAT WITH MAN OLD HOUSE WATER LITTLE GREAT NIGHT DAY CAME "
    "SAID DON'T I'M MARY'S RIVER STONE LIGHT VOICE TOWARDS UPON NEVER AGAIN".split()
)

_NUM_TONES = (1, 4)  # tones per file, [low, high)
_TONE_HZ = (100.0, 3000.0)
_TONE_AMPLITUDE = (0.05, 0.2)
_NOISE_STD = 0.01
_GARBAGE_BYTES = 2048
_SPEAKER_ID_RANGE = (10, 10000)
_CHAPTER_ID_RANGE = (10000, 400000)


@dataclasses.dataclass(frozen=True)
class FakeUtterance:
    """One usable utterance of the fake corpus."""

    utt_id: str
    speaker: str
    chapter: str
    text: str
    path: Path
    num_samples: int
    sampling_rate: int

    @property
    def duration(self) -> float:
        return self.num_samples / self.sampling_rate


@dataclasses.dataclass
class FakePartInfo:
    """Expected content of one part after correct preparation (planted bad inputs excluded)."""

    name: str
    utterances: dict[str, FakeUtterance]

    @property
    def num_utterances(self) -> int:
        return len(self.utterances)

    @property
    def speakers(self) -> set[str]:
        return {u.speaker for u in self.utterances.values()}

    @property
    def num_speakers(self) -> int:
        return len(self.speakers)

    @property
    def duration_seconds(self) -> float:
        return sum(u.duration for u in self.utterances.values())


@dataclasses.dataclass(frozen=True)
class PlantedBadInput:
    """A bad input written on purpose: ``path`` is the file a report should name (the transcript
    file for ``empty_transcript``, the expected flac path for ``missing_audio``)."""

    reason: SkipReason
    part: str
    utt_id: str
    path: Path


@dataclasses.dataclass
class FakeCorpusInfo:
    root: Path
    sampling_rate: int
    parts: dict[str, FakePartInfo]
    planted: list[PlantedBadInput]


def make_fake_librispeech(
    root: Union[str, Path],
    parts: dict[str, tuple[int, int, int]],
    sampling_rate: int = 16000,
    seed: int = 0,
    min_duration: float = 0.5,
    max_duration: float = 2.0,
    words_per_utt: tuple[int, int] = (2, 8),
    bad_inputs: Iterable[Union[SkipReason, str]] = (),
    bad_part: Optional[str] = None,
    bad_sampling_rate: int = 8000,
) -> FakeCorpusInfo:
    """Write a LibriSpeech-layout tree under ``root`` and describe what it holds.

    Args:
        root: corpus directory (the one holding the part directories); created if needed.
        parts: part name -> ``(num_speakers, chapters_per_speaker, utts_per_chapter)``.
        sampling_rate: sampling rate of the usable files.
        seed: seed of every random choice (ids, durations, tones, texts).
        min_duration, max_duration: uniform range of utterance durations in seconds.
        words_per_utt: ``[low, high]`` number of words per transcript.
        bad_inputs: kinds of bad input to plant (see module docstring), one of each.
        bad_part: part that receives them (default: the first of ``parts``).
        bad_sampling_rate: sampling rate of the ``wrong_sample_rate`` file.

    Returns:
        :class:`FakeCorpusInfo` with the usable utterances per part and the planted bad inputs.
    """
    if not parts:
        raise ValueError("parts must name at least one part")
    if not 0 < min_duration <= max_duration:
        raise ValueError(f"need 0 < min_duration <= max_duration, got {min_duration}, {max_duration}")
    bad_inputs = [SkipReason(kind) for kind in dict.fromkeys(bad_inputs)]
    if SkipReason.WRONG_SAMPLE_RATE in bad_inputs and bad_sampling_rate == sampling_rate:
        raise ValueError(f"bad_sampling_rate must differ from sampling_rate ({sampling_rate})")
    bad_part = bad_part or next(iter(parts))
    if bad_part not in parts:
        raise ValueError(f"bad_part {bad_part!r} is not one of {list(parts)}")
    for part, counts in parts.items():
        if len(counts) != 3 or min(counts) < 1:
            raise ValueError(
                f"part {part!r}: need (num_speakers, chapters_per_speaker, utts_per_chapter) >= 1, got {counts}"
            )
    root = Path(root)
    rng = np.random.default_rng(seed)
    num_speakers = sum(p[0] for p in parts.values())
    num_chapters = sum(p[0] * p[1] for p in parts.values())
    speaker_ids = iter(rng.choice(np.arange(*_SPEAKER_ID_RANGE), size=num_speakers, replace=False))
    chapter_ids = iter(rng.choice(np.arange(*_CHAPTER_ID_RANGE), size=num_chapters, replace=False))
    gen = _Generator(rng, sampling_rate, min_duration, max_duration, words_per_utt)

    infos: dict[str, FakePartInfo] = {}
    first_chapter: dict[str, Path] = {}
    for part, (n_spk, n_chap, n_utt) in parts.items():
        utts: dict[str, FakeUtterance] = {}
        for _ in range(n_spk):
            spk = str(next(speaker_ids))
            for _ in range(n_chap):
                chap = str(next(chapter_ids))
                chapter_dir = root / part / spk / chap
                first_chapter.setdefault(part, chapter_dir)
                for u in gen.write_chapter(chapter_dir, spk, chap, n_utt):
                    utts[u.utt_id] = u
        infos[part] = FakePartInfo(part, utts)

    planted = [gen.plant(kind, bad_part, first_chapter[bad_part], bad_sampling_rate) for kind in bad_inputs]
    return FakeCorpusInfo(root=root, sampling_rate=sampling_rate, parts=infos, planted=planted)


class _Generator:
    """Random audio/text writer sharing one RNG."""

    def __init__(
        self,
        rng: np.random.Generator,
        sampling_rate: int,
        min_duration: float,
        max_duration: float,
        words_per_utt: tuple[int, int],
    ) -> None:
        self.rng = rng
        self.sampling_rate = sampling_rate
        self.min_duration = min_duration
        self.max_duration = max_duration
        self.words_per_utt = words_per_utt

    def text(self) -> str:
        n = int(self.rng.integers(self.words_per_utt[0], self.words_per_utt[1] + 1))
        return " ".join(self.rng.choice(WORDS, size=n))

    def audio(self, sampling_rate: int) -> np.ndarray:
        """Random tones + noise, shape (S,), float32 in [-1, 1]."""
        num_samples = int(round(self.rng.uniform(self.min_duration, self.max_duration) * sampling_rate))
        t = np.arange(num_samples) / sampling_rate
        wav = self.rng.normal(0.0, _NOISE_STD, num_samples)
        for _ in range(int(self.rng.integers(*_NUM_TONES))):
            freq = self.rng.uniform(*_TONE_HZ)
            wav += self.rng.uniform(*_TONE_AMPLITUDE) * np.sin(2 * np.pi * freq * t + self.rng.uniform(0, 2 * np.pi))
        return np.clip(wav, -1.0, 1.0).astype(np.float32)

    def write_flac(self, path: Path, sampling_rate: int) -> int:
        """Write a random file; return its number of samples."""
        wav = self.audio(sampling_rate)
        sf.write(path, wav, sampling_rate, format="FLAC", subtype="PCM_16")
        return len(wav)

    def write_chapter(self, chapter_dir: Path, spk: str, chap: str, n_utt: int) -> list[FakeUtterance]:
        chapter_dir.mkdir(parents=True, exist_ok=True)
        utts = []
        for i in range(n_utt):
            utt_id = f"{spk}-{chap}-{i:04d}"
            path = chapter_dir / f"{utt_id}{AUDIO_SUFFIX}"
            n = self.write_flac(path, self.sampling_rate)
            utts.append(FakeUtterance(utt_id, spk, chap, self.text(), path, n, self.sampling_rate))
        with open(chapter_dir / f"{spk}-{chap}{TRANS_SUFFIX}", "w", encoding="utf-8") as f:
            f.writelines(f"{u.utt_id} {u.text}\n" for u in utts)
        return utts

    def plant(self, kind: SkipReason, part: str, chapter_dir: Path, bad_sampling_rate: int) -> PlantedBadInput:
        """Add one bad item of ``kind`` to ``chapter_dir`` with a fresh utterance number."""
        spk, chap = chapter_dir.parent.name, chapter_dir.name
        trans = chapter_dir / f"{spk}-{chap}{TRANS_SUFFIX}"
        taken = {line.split()[0] for line in trans.read_text().splitlines() if line.strip()}
        taken |= {p.stem for p in chapter_dir.glob(f"*{AUDIO_SUFFIX}")}
        utt_id = next(f"{spk}-{chap}-{i:04d}" for i in range(len(taken) + 1) if f"{spk}-{chap}-{i:04d}" not in taken)
        audio = chapter_dir / f"{utt_id}{AUDIO_SUFFIX}"
        line = f"{utt_id} {self.text()}\n"
        if kind == SkipReason.MISSING_AUDIO:
            reported = audio
        elif kind == SkipReason.MISSING_TRANSCRIPT:
            self.write_flac(audio, self.sampling_rate)
            line, reported = "", audio
        elif kind == SkipReason.UNREADABLE_AUDIO:
            audio.write_bytes(self.rng.integers(0, 256, _GARBAGE_BYTES, dtype=np.uint8).tobytes())
            reported = audio
        elif kind == SkipReason.EMPTY_TRANSCRIPT:
            self.write_flac(audio, self.sampling_rate)
            line, reported = f"{utt_id}\n", trans
        elif kind == SkipReason.WRONG_SAMPLE_RATE:
            self.write_flac(audio, bad_sampling_rate)
            reported = audio
        elif kind == SkipReason.NOT_UTF8:  # a Latin-1 "É" (0xC9) in an otherwise fine line
            self.write_flac(audio, self.sampling_rate)
            with open(trans, "ab") as f:
                f.write(f"{utt_id} CAF".encode("ascii") + b"\xc9 " + self.text().encode("ascii") + b"\n")
            line, reported = "", trans
        else:
            raise ValueError(f"cannot plant bad input {kind.value!r}; choose from {[k.value for k in ALL_BAD_INPUTS]}")
        with open(trans, "a", encoding="utf-8") as f:
            f.write(line)
        return PlantedBadInput(kind, part, utt_id, reported)
